import { hostname } from "node:os";
import { randomUUID } from "node:crypto";
import type { Logger } from "../log.ts";
import { CoreResources, isConflict, type KubeClient, type KubeObject } from "./client.ts";

/** Settings of {@link LeaderElector}; the defaults are client-go's. */
export interface LeaderElectionConfig {
  /** Namespace of the Lease: the operator's own. */
  namespace: string;
  /** Name of the Lease; every replica of one operator uses the same. */
  leaseName: string;
  /** This replica's identity, shown as the Lease holder; default `<hostname>_<uuid>`. */
  identity?: string;
  /**
   * How long a Lease stays valid after the holder last renewed it (default 15 s). A follower
   * takes over a crashed leader's Lease this long after it last saw the Lease change.
   */
  leaseDurationMs?: number;
  /** A leader that could not renew for this long steps down (default 10 s; below leaseDurationMs). */
  renewDeadlineMs?: number;
  /** Time between two attempts to acquire or renew (default 2 s). */
  retryPeriodMs?: number;
}

/** What the elector calls when leadership changes. */
export interface LeaderCallbacks {
  /** This replica now holds the Lease: start the controllers. Not awaited by the elector. */
  onStartedLeading(): void | Promise<void>;
  /** This replica lost the Lease (could not renew in time): stop the controllers now. */
  onStoppedLeading(): void | Promise<void>;
}

/** A leader election setting that cannot work (for example a renew deadline past the lease). */
export class LeaderElectionConfigError extends Error {
  override name = "LeaderElectionConfigError";
}

/** The fields of `coordination.k8s.io/v1` LeaseSpec the election uses. */
interface LeaseSpec {
  holderIdentity?: string;
  leaseDurationSeconds?: number;
  acquireTime?: string;
  renewTime?: string;
  leaseTransitions?: number;
}

type Lease = KubeObject & { spec?: LeaseSpec };

/**
 * Lease-based leader election (`coordination.k8s.io/v1`), the same protocol as client-go's
 * leaderelection package, so that only one operator replica runs the controllers while the
 * others stand by with warm caches.
 *
 * A follower never trusts the holder's clock: it takes over only when the Lease has not changed
 * for `leaseDurationSeconds` as measured by its own clock since it last saw a change. Writes are
 * optimistic (`resourceVersion`), so two followers racing for an expired Lease cannot both win.
 * The leader steps down if it cannot renew within `renewDeadlineMs`, which is shorter than the
 * lease, so it stops acting before anyone else may start. On a clean stop the leader releases
 * the Lease (empty holder), and a follower takes over at its next attempt instead of waiting
 * for the lease to expire.
 */
export class LeaderElector {
  /** This replica's identity as written to the Lease. */
  readonly identity: string;
  private readonly leaseDurationMs: number;
  private readonly renewDeadlineMs: number;
  private readonly retryPeriodMs: number;
  private leading = false;
  private stopped = false;
  private loop: Promise<void> | undefined;
  private wake: (() => void) | undefined;
  /** The Lease spec last seen, and when (this process's monotonic clock) it was seen to change. */
  private observed: { key: string; atMs: number } | undefined;
  private lastRenewMs = 0;

  constructor(
    private readonly client: KubeClient,
    private readonly config: LeaderElectionConfig,
    private readonly log: Logger,
  ) {
    this.identity = config.identity ?? `${hostname()}_${randomUUID()}`;
    this.leaseDurationMs = config.leaseDurationMs ?? 15_000;
    this.renewDeadlineMs = config.renewDeadlineMs ?? 10_000;
    this.retryPeriodMs = config.retryPeriodMs ?? 2_000;
    if (!(this.leaseDurationMs >= 1_000 && this.leaseDurationMs % 1_000 === 0)) {
      throw new LeaderElectionConfigError(
        `lease duration ${this.leaseDurationMs} ms: must be whole seconds, at least 1 s`,
      );
    }
    if (!(this.renewDeadlineMs > 0 && this.renewDeadlineMs < this.leaseDurationMs)) {
      throw new LeaderElectionConfigError(
        `renew deadline ${this.renewDeadlineMs} ms must be shorter than the lease (${this.leaseDurationMs} ms)`,
      );
    }
    if (!(this.retryPeriodMs > 0 && this.retryPeriodMs < this.renewDeadlineMs)) {
      throw new LeaderElectionConfigError(
        `retry period ${this.retryPeriodMs} ms must be shorter than the renew deadline (${this.renewDeadlineMs} ms)`,
      );
    }
  }

  /** True while this replica holds the Lease. */
  get isLeader(): boolean {
    return this.leading;
  }

  /** Campaigns until {@link stop}: acquires, renews, and reports every change to `callbacks`. */
  run(callbacks: LeaderCallbacks): void {
    if (this.loop) throw new Error("leader election is already running");
    this.log.info(
      { lease: `${this.config.namespace}/${this.config.leaseName}`, identity: this.identity },
      "waiting for leadership",
    );
    this.loop = this.campaign(callbacks);
  }

  /**
   * Stops campaigning. Call it after the controllers have stopped: a held Lease is released
   * so that a follower takes over at once, and nothing of this replica runs any more by then.
   */
  async stop(): Promise<void> {
    this.stopped = true;
    this.wake?.();
    await this.loop;
    if (!this.leading) return;
    this.leading = false;
    try {
      await this.release();
      this.log.info({ identity: this.identity }, "released leadership");
    } catch (err) {
      // The Lease then simply expires.
      this.log.warn({ err }, "could not release the leader lease");
    }
  }

  private async campaign(callbacks: LeaderCallbacks): Promise<void> {
    while (!this.stopped) {
      const started = performance.now();
      let held = false;
      try {
        held = await this.withDeadline(this.tryAcquireOrRenew());
      } catch (err) {
        this.log.warn({ err, identity: this.identity }, "leader lease: acquire or renew failed");
      }
      if (this.stopped) {
        // Won (or renewed) just as stop() came: mark it held so that stop() releases it.
        if (held) this.leading = true;
        return;
      }
      if (held) {
        this.lastRenewMs = started;
        if (!this.leading) {
          this.leading = true;
          this.log.info({ identity: this.identity }, "became leader");
          void Promise.resolve()
            .then(() => callbacks.onStartedLeading())
            .catch((err) => this.log.error({ err }, "starting as leader failed"));
        }
      } else if (this.leading && performance.now() - this.lastRenewMs >= this.renewDeadlineMs) {
        this.leading = false;
        this.log.error(
          { identity: this.identity, renewDeadlineMs: this.renewDeadlineMs },
          "lost leadership: could not renew the lease in time",
        );
        try {
          await callbacks.onStoppedLeading();
        } catch (err) {
          this.log.error({ err }, "stepping down as leader failed");
        }
      }
      await this.sleep(this.retryPeriodMs);
    }
  }

  /**
   * Bounds one attempt: a request hanging on a half-open connection must not keep a leader
   * that can no longer renew from stepping down in time.
   */
  private withDeadline(attempt: Promise<boolean>): Promise<boolean> {
    const budget = this.leading
      ? Math.max(this.retryPeriodMs, this.renewDeadlineMs - (performance.now() - this.lastRenewMs))
      : this.renewDeadlineMs;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<boolean>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`no answer from the API server within ${budget} ms`)),
        budget,
      );
    });
    attempt.catch(() => undefined); // a late failure after the timeout is not unhandled
    return Promise.race([attempt, timeout]).finally(() => clearTimeout(timer));
  }

  /** One round of the protocol; true when this replica holds the Lease afterwards. */
  private async tryAcquireOrRenew(): Promise<boolean> {
    const { namespace, leaseName } = this.config;
    const now = microTime(new Date());
    const current = await this.client.get<Lease>(CoreResources.Lease, namespace, leaseName);
    // Measured after the read: a change is dated no earlier than when this replica saw it.
    const nowMs = performance.now();
    const mine: LeaseSpec = {
      holderIdentity: this.identity,
      leaseDurationSeconds: this.leaseDurationMs / 1_000,
      acquireTime: now,
      renewTime: now,
      leaseTransitions: 0,
    };
    if (!current) {
      try {
        await this.client.create(CoreResources.Lease, {
          apiVersion: "coordination.k8s.io/v1",
          kind: "Lease",
          metadata: { name: leaseName, namespace },
          spec: mine,
        });
      } catch (err) {
        if (isConflict(err)) return false; // another replica created it first
        throw err;
      }
      this.observe(mine, nowMs);
      return true;
    }
    const spec = current.spec ?? {};
    this.observe(spec, nowMs);
    const holder = spec.holderIdentity ?? "";
    const heldByOther = holder !== "" && holder !== this.identity;
    const validMs = (spec.leaseDurationSeconds ?? 0) * 1_000;
    if (heldByOther && this.observed!.atMs + validMs > nowMs) return false;
    if (holder === this.identity) {
      mine.acquireTime = spec.acquireTime ?? now;
      mine.leaseTransitions = spec.leaseTransitions ?? 0;
    } else {
      mine.leaseTransitions = (spec.leaseTransitions ?? 0) + 1;
    }
    try {
      await this.replace(current, mine);
    } catch (err) {
      if (isConflict(err)) return false; // someone else wrote it since our read
      throw err;
    }
    this.observe(mine, nowMs);
    return true;
  }

  /** Empties the holder so that a follower need not wait for the lease to expire. */
  private async release(): Promise<void> {
    const { namespace, leaseName } = this.config;
    const current = await this.client.get<Lease>(CoreResources.Lease, namespace, leaseName);
    if (!current || current.spec?.holderIdentity !== this.identity) return;
    const now = microTime(new Date());
    await this.replace(current, {
      holderIdentity: "",
      leaseDurationSeconds: 1,
      acquireTime: now,
      renewTime: now,
      leaseTransitions: current.spec.leaseTransitions ?? 0,
    });
  }

  /** PUT with the resourceVersion that was read: fails with a conflict if the Lease moved on. */
  private async replace(current: Lease, spec: LeaseSpec): Promise<void> {
    const { namespace, leaseName } = this.config;
    await this.client.replace(CoreResources.Lease, {
      apiVersion: "coordination.k8s.io/v1",
      kind: "Lease",
      metadata: { ...current.metadata, name: leaseName, namespace },
      spec,
    });
  }

  private observe(spec: LeaseSpec, nowMs: number): void {
    const key = JSON.stringify([spec.holderIdentity, spec.renewTime, spec.leaseTransitions]);
    if (this.observed?.key !== key) this.observed = { key, atMs: nowMs };
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done(): void {
        clearTimeout(timer);
        resolve();
      }
      this.wake = done;
    });
  }
}

/** A Kubernetes MicroTime: RFC 3339 with exactly six fraction digits. */
function microTime(date: Date): string {
  return date.toISOString().replace(/\.(\d{3})Z$/, ".$1000Z");
}

/**
 * The three timings from one lease duration, in client-go's proportions (15 s lease, 10 s renew
 * deadline, 2 s retry period), so a command line needs one flag. The lease is rounded to whole
 * seconds, as the Lease object stores it.
 */
export function leaderTimings(
  leaseDurationMs: number,
): Required<Pick<LeaderElectionConfig, "leaseDurationMs" | "renewDeadlineMs" | "retryPeriodMs">> {
  const lease = Math.max(1_000, Math.round(leaseDurationMs / 1_000) * 1_000);
  return { leaseDurationMs: lease, renewDeadlineMs: (lease * 2) / 3, retryPeriodMs: (lease * 2) / 15 };
}
