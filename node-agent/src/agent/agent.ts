import {
  applyConditions,
  NODE_LABEL,
  Reason,
  type Condition,
  type LastError,
  type NodeChain,
  type NodeChainStatus,
  type SelfTest,
} from "../../../common/api/index.ts";
import { Controller, objectKey, splitKey } from "../../../common/kube/controller.ts";
import type { Logger } from "../../../common/log.ts";
import {
  failureConditions,
  failureOf,
  InvalidObjectError,
  SluiceError,
  type RetryClass,
} from "../../../common/errors.ts";
import { statusPatch, type Store } from "../../../common/store.ts";
import type { ChainSpec } from "../chain/spec.ts";
import { SelfTestError } from "../selftest/selftest.ts";
import { buildChainSpec } from "./build.ts";

/** What the agent asks of the data plane; the chain manager provides it (or a simulation does). */
export interface DataPlane {
  /** Converges a chain to the spec: build next to the live one, self-test, switch atomically. */
  apply(spec: ChainSpec): Promise<DataPlaneResult>;
  /** Takes over pinned chains left by an earlier process, without touching traffic. */
  adopt(): Promise<Array<{ name: string; revision: string; outcome?: "adopted" | "removed" }>>;
  /** Detaches and unpins a chain. */
  remove(name: string): Promise<void>;
}

/** What the data plane reports after applying a chain. */
export interface DataPlaneResult {
  revision: string;
  programIds: number[];
  attachedInterfaces: string[];
  selfTest?: SelfTest;
  /** How the live chain runs, and why a chain asking for auto runs linked. */
  mode?: "linked" | "fused";
  modeReason?: string;
  /** NF maps that could not carry over from the previous revision: they started empty. */
  recreatedMaps?: Array<{ nf: string; map: string; reason: string }>;
  /** Set when the chain moved to another hook. */
  hookChange?: { from: string; to: string };
}

/**
 * The Ready message of a live revision: where it runs, and which NF state did not carry over
 * (a user must know that counters or flow tables started again) and why.
 */
export function liveMessage(result: DataPlaneResult): string {
  const parts = [`revision ${result.revision} is live on ${result.attachedInterfaces.join(", ")}`];
  if (result.mode === "linked" && result.modeReason) parts.push(`runs linked: ${result.modeReason}`);
  if (result.hookChange) parts.push(`moved from hook ${result.hookChange.from} to ${result.hookChange.to}`);
  const recreated = result.recreatedMaps ?? [];
  if (recreated.length > 0) {
    const maps = recreated.map((m) => `${m.nf}/${m.map} (${m.reason})`).join(", ");
    parts.push(`state not carried over, these maps started empty: ${maps}`);
  }
  return parts.join("; ");
}

/** How the agent runs. */
export interface AgentOptions {
  nodeName: string;
  store: Store;
  dataPlane: DataPlane;
  /** Compile and artifact cache. */
  cacheDir: string;
  /** Network namespace of the node's interfaces (several agents on one machine in tests). */
  netns?: string;
  log: Logger;
  /** Called with every status the agent writes (tests record transitions with it). */
  onStatus?: (name: string, status: NodeChainStatus) => void;
  /** Called after every attempt to make a revision live (metrics count switches with it). */
  onSwitch?: (outcome: { ok: true } | { ok: false; reason: string }) => void;
  /**
   * Retries of a NodeChain whose attempt failed for a reason that may pass (an artifact out of
   * reach, an interface not there yet): the first after `baseMs`, each next one twice as late, at
   * most `maxMs` apart (default {@link DEFAULT_RETRY_BACKOFF}).
   */
  retryBackoff?: { baseMs: number; maxMs: number };
}

/**
 * Retry delays of transient failures: soon at first (an operator restart takes seconds), at most
 * a minute apart, so a node recovers within a minute of its dependency coming back.
 */
export const DEFAULT_RETRY_BACKOFF = { baseMs: 1_000, maxMs: 60_000 } as const;

/** A switch that takes longer than this is reported as phase Loading while it runs. */
export const LOADING_REPORT_DELAY_MS = 1_000;

/** NodeChains reconciled at once: each may compile with clang, and nodes have few chains. */
const CONCURRENCY = 4;

/** Errors the agent turns into NodeChain status: reason, message, log, self-test results. */
interface Failure {
  reason: Reason;
  message: string;
  log?: string;
  selfTest?: SelfTest;
  /**
   * `stall`: the revision fails the same way until the spec changes; not retried.
   * `backoff`: worth retrying without a spec change (an interface that is not there yet, say).
   * `wait`: nothing is wrong with the revision: something it needs is out of reach for now (the
   * operator's artifact server during an operator restart). Retried too, and reported as phase
   * Pending, not Failed, so that the rollout waits for this node (its progress deadline still
   * bounds the wait) instead of halting and rolling back a revision that is fine.
   */
  retry: RetryClass;
}

/**
 * The node agent: makes the NodeChains of one node true on that node. It watches only its own
 * NodeChains (label `sluice.dev/node=<node>`), builds each plan (fetch, compile), hands it to the
 * data plane (load, self-test, atomic switch) and writes the outcome to the NodeChain's status.
 * On start it adopts what an earlier agent pinned, so a restart never touches traffic.
 */
export class NodeAgent {
  private readonly live = new Map<string, string>(); // chain pin name -> live revision
  /**
   * One reconcile per NodeChain at a time; changes during a reconcile fold into one more run;
   * transient failures are retried with growing delay (the work queue the operator uses).
   */
  private readonly controller: Controller;
  /**
   * NodeChain key -> generation whose transient failure waits for its retry. Events of that
   * generation (the agent's own status writes) do not start another attempt before the retry is
   * due; a new generation or a deletion does, at once.
   */
  private readonly backingOff = new Map<string, number>();
  /**
   * NodeChain key -> generation being reconciled now. Its events (the agent's own status writes)
   * must not queue the NodeChain again: a run right after a failure would skip the backoff.
   */
  private readonly reconciling = new Map<string, number>();
  /** NodeChain key -> pin name of a NodeChain seen deleted, for the reconcile that unpins it. */
  private readonly deleted = new Map<string, string>();
  /** Reconciles running now (see {@link idle}). */
  private running = 0;
  private unwatch: (() => void) | undefined;
  private stopped = false;

  constructor(private readonly options: AgentOptions) {
    this.controller = new Controller(
      "nodechain",
      (key) => this.reconcileKey(key),
      options.log,
      CONCURRENCY,
      options.retryBackoff ?? DEFAULT_RETRY_BACKOFF,
    );
  }

  /** Adopts pinned chains, reconciles every NodeChain of the node, then follows changes. */
  async start(): Promise<void> {
    const { store, nodeName, log } = this.options;
    for (const chain of await this.options.dataPlane.adopt()) {
      if (chain.outcome === "removed") continue;
      this.live.set(chain.name, chain.revision);
      log.info({ chain: chain.name, revision: chain.revision }, "adopted pinned chain");
    }
    this.controller.start();
    this.unwatch = store.watch("NodeChain", (event) => {
      if (event.object.metadata.labels?.[NODE_LABEL] !== nodeName) return;
      this.enqueue(event.object, event.type === "deleted");
    });
    const mine = await store.list("NodeChain", undefined, { [NODE_LABEL]: nodeName });
    const wanted = new Set(mine.map((o) => pinName(o)));
    for (const obj of mine) this.enqueue(obj, false);
    // Chains pinned by an earlier agent whose NodeChain is gone: nobody wants them any more.
    for (const name of this.live.keys()) {
      if (!wanted.has(name)) {
        log.info({ chain: name }, "removing adopted chain without a NodeChain");
        await this.options.dataPlane.remove(name);
        this.live.delete(name);
      }
    }
  }

  /** Stops following changes; chains stay as they are (pinned, forwarding). */
  async stop(): Promise<void> {
    this.stopped = true;
    this.unwatch?.();
    await this.controller.stop();
  }

  /** Waits until no reconcile is running or queued; retries not yet due do not count (tests use it). */
  async idle(): Promise<void> {
    while (this.running > 0 || this.controller.queue.length > 0) {
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  }

  private enqueue(obj: NodeChain, deleted: boolean): void {
    if (this.stopped) return;
    const key = objectKey(obj);
    if (deleted) this.deleted.set(key, pinName(obj));
    else this.deleted.delete(key);
    const generation = obj.metadata.generation ?? 0;
    if (!deleted && this.reconciling.get(key) === generation) return;
    const failedGeneration = this.backingOff.get(key);
    if (failedGeneration !== undefined) {
      if (!deleted && generation === failedGeneration) return;
      // The spec changed (or the NodeChain is gone): the pending retry gives way to a reconcile now.
      this.backingOff.delete(key);
      this.controller.queue.forget(key);
    }
    this.controller.enqueue(key);
  }

  private async reconcileKey(key: string): Promise<void> {
    this.running++;
    try {
      await this.reconcile(key);
    } finally {
      this.reconciling.delete(key);
      this.running--;
    }
  }

  private async reconcile(key: string): Promise<void> {
    const { store, dataPlane, log: rootLog } = this.options;
    const { namespace, name } = splitKey(key);
    let nc: NodeChain | undefined;
    try {
      nc = await store.get("NodeChain", namespace, name);
    } catch (err) {
      if (!(err instanceof InvalidObjectError)) throw err;
      rootLog.error({ name, issues: err.issues.slice(0, 5) }, "NodeChain does not parse");
      return;
    }
    if (!nc) {
      const pin = this.deleted.get(key);
      this.deleted.delete(key);
      this.backingOff.delete(key);
      if (pin && this.live.has(pin)) {
        await dataPlane.remove(pin);
        this.live.delete(pin);
        rootLog.info({ chain: pin }, "NodeChain deleted: chain detached and unpinned");
      }
      return;
    }
    const chain = pinName(nc);
    const log = rootLog.child({ node: this.options.nodeName, chain, revision: nc.spec.revision });
    const generation = nc.metadata.generation ?? 0;
    this.reconciling.set(key, generation);
    const status = nc.status;
    const live = this.live.get(chain);
    if (live === nc.spec.revision && status.phase === "Ready" && status.observedGeneration === generation)
      return;
    // Only the controller's retry reconciles a generation that is backing off (events of it are
    // not queued), and a retry tries again although the generation failed.
    const forced = this.backingOff.get(key) === generation;
    if (
      !forced &&
      status.phase === "Failed" &&
      status.observedGeneration === generation &&
      status.revision === live
    ) {
      // This generation already failed; the spec must change before it is tried again.
      return;
    }

    const loading: NodeChainStatus = {
      ...status,
      phase: "Loading",
      observedGeneration: generation,
      conditions: applyConditions(
        status.conditions,
        {
          ready: ["False", Reason.Progressing, `switching to revision ${nc.spec.revision}`],
          reconciling: [Reason.Progressing, `switching to revision ${nc.spec.revision}`],
        },
        generation,
        new Date(),
      ),
    };
    // "Loading" is worth a write only when the switch takes a while (a compile): a fleet whose
    // nodes switch in milliseconds would otherwise double its status writes for nothing.
    let loadingWrite: Promise<void> | undefined;
    const loadingTimer = setTimeout(() => {
      loadingWrite = this.writeStatus(nc.metadata.namespace, name, status, loading);
    }, LOADING_REPORT_DELAY_MS);
    const loadingSettled = async (): Promise<void> => {
      clearTimeout(loadingTimer);
      await loadingWrite;
    };
    try {
      const built = await buildChainSpec(nc.spec, {
        cacheDir: this.options.cacheDir,
        netns: this.options.netns,
        chainName: chain,
      });
      const result = await dataPlane.apply(built.spec);
      this.backingOff.delete(key);
      this.live.set(chain, result.revision);
      this.options.onSwitch?.({ ok: true });
      log.info(
        { compiled: built.compiled, cached: built.cached, programs: result.programIds.length },
        "chain is live",
      );
      // No lastError, and no self-test left from an earlier attempt that failed: it would keep
      // the node from counting as available.
      await loadingSettled();
      await this.writeStatus(nc.metadata.namespace, name, status, {
        observedGeneration: generation,
        phase: "Ready",
        revision: result.revision,
        programIds: result.programIds,
        attachedInterfaces: result.attachedInterfaces,
        ...(result.mode && { mode: result.mode }),
        ...(result.modeReason && { modeReason: result.modeReason.slice(0, 1024) }),
        ...(result.selfTest && { selfTest: result.selfTest }),
        conditions: applyConditions(
          status.conditions,
          { ready: ["True", Reason.Succeeded, liveMessage(result).slice(0, 4096)] },
          generation,
          new Date(),
        ),
      });
    } catch (err) {
      const failure = describeFailure(err);
      this.options.onSwitch?.({ ok: false, reason: failure.reason });
      const retry = failure.retry !== "stall" && !this.stopped;
      // Set before the status write: its watch event must not start another attempt at once.
      if (retry) this.backingOff.set(key, generation);
      else {
        this.backingOff.delete(key);
        log.error({ err, reason: failure.reason }, failure.message);
      }
      const lastError: LastError = {
        reason: failure.reason,
        message: failure.message.slice(0, 4096),
        ...(failure.log ? { log: failure.log.slice(-16_000) } : {}),
      };
      // The live chain (its programs and interfaces) stays; the self-test is this attempt's.
      const { selfTest: _earlier, ...kept } = status;
      await loadingSettled();
      await this.writeStatus(nc.metadata.namespace, name, status, {
        ...kept,
        observedGeneration: generation,
        phase: failure.retry === "wait" ? "Pending" : "Failed",
        revision: this.live.get(chain),
        lastError,
        ...(failure.selfTest && { selfTest: failure.selfTest }),
        conditions: applyConditions(
          status.conditions,
          // A stall also sets Stalled (not retried until the spec changes), a wait Reconciling.
          failureConditions({ ...failure, message: failure.message.slice(0, 4096) }),
          generation,
          new Date(),
        ),
      });
      // The controller logs it with the delay of the next attempt.
      // Waiting for an artifact is retried with back-off too: the operator may take a while.
      if (retry) throw new SluiceError(failure.reason, failure.message, { retry: "backoff", cause: err });
    }
  }

  /** Writes `status` in place of `previous`: fields it leaves out are removed. */
  private async writeStatus(
    namespace: string | undefined,
    name: string,
    previous: NodeChainStatus,
    status: NodeChainStatus,
  ): Promise<void> {
    this.options.onStatus?.(name, status);
    try {
      await this.options.store.patchStatus(
        "NodeChain",
        namespace,
        name,
        statusPatch<"NodeChain">(previous, status),
      );
    } catch (err) {
      this.options.log.warn({ err, name }, "could not write NodeChain status");
    }
  }
}

/**
 * The chain's pin directory name on the node: `<namespace>_<chain>`. bpffs refuses names with a
 * dot (EPERM), so dots of the chain name become `_`; Kubernetes names have no `_`, so distinct
 * chains keep distinct names.
 */
export function pinName(obj: { metadata: { name: string; namespace?: string }; spec: object }): string {
  // A NodeChain names its chain; a ServiceChain is the chain.
  const chain =
    "chain" in obj.spec && typeof obj.spec.chain === "string" ? obj.spec.chain : obj.metadata.name;
  return `${obj.metadata.namespace ?? "default"}_${chain.replaceAll(".", "_")}`;
}

/**
 * What the NodeChain's status says about an error: its reason and retry class (every error of
 * the build and the data plane carries them; anything else is a load failure, retried), and the
 * vectors of a failed self-test.
 */
export function describeFailure(err: unknown): Failure {
  const failure = failureOf(err, Reason.LoadFailed);
  const out: Failure = {
    reason: failure.reason,
    message: failure.message,
    retry: failure.retry,
    ...(failure.log !== undefined && { log: failure.log }),
  };
  if (err instanceof SelfTestError) {
    const passed = err.results.filter((r) => r.passed).length;
    out.selfTest = { passed, failed: err.results.length - passed, results: err.results.slice(0, 256) };
  }
  return out;
}

/** Conditions helper re-exported for tests that read agent status. */
export type { Condition };
