import {
  ConditionType,
  NODE_LABEL,
  NodeChain,
  Reason,
  setCondition,
  type Condition,
  type LastError,
  type NodeChainStatus,
  type SelfTest,
} from "../../../common/api/index.ts";
import type { Logger } from "../../../common/log.ts";
import type { Store, StoredObject } from "../../../common/store.ts";
import type { ChainSpec } from "../chain/spec.ts";
import { BuildError, buildChainSpec } from "./build.ts";

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
}

/** Errors the agent turns into NodeChain status: reason, message, log, self-test results. */
interface Failure {
  reason: string;
  message: string;
  log?: string;
  selfTest?: SelfTest;
  /** Worth retrying without a spec change (a download that failed, say). */
  transient: boolean;
  /**
   * Nothing is wrong with the revision: something it needs is out of reach for now (the
   * operator's artifact server during an operator restart). Reported as phase Pending, not
   * Failed, so that the rollout waits for this node (its progress deadline still bounds the
   * wait) instead of halting and rolling back a revision that is fine.
   */
  waiting?: boolean;
}

/**
 * The node agent: makes the NodeChains of one node true on that node. It watches only its own
 * NodeChains (label `sluice.dev/node=<node>`), builds each plan (fetch, compile), hands it to the
 * data plane (load, self-test, atomic switch) and writes the outcome to the NodeChain's status.
 * On start it adopts what an earlier agent pinned, so a restart never touches traffic.
 */
export class NodeAgent {
  private readonly live = new Map<string, string>(); // chain pin name -> live revision
  private readonly queue = new Map<string, Promise<void>>();
  private readonly pending = new Set<string>();
  private readonly retries = new Map<string, NodeJS.Timeout>();
  /** NodeChains to try again although their generation already failed (transient errors). */
  private readonly retryNow = new Set<string>();
  private unwatch: (() => void) | undefined;
  private stopped = false;

  constructor(private readonly options: AgentOptions) {}

  /** Adopts pinned chains, reconciles every NodeChain of the node, then follows changes. */
  async start(): Promise<void> {
    const { store, nodeName, log } = this.options;
    for (const chain of await this.options.dataPlane.adopt()) {
      if (chain.outcome === "removed") continue;
      this.live.set(chain.name, chain.revision);
      log.info({ chain: chain.name, revision: chain.revision }, "adopted pinned chain");
    }
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
    for (const t of this.retries.values()) clearTimeout(t);
    await Promise.allSettled([...this.queue.values()]);
  }

  /** Waits until no reconcile is running or queued (tests use it). */
  async idle(): Promise<void> {
    while (this.queue.size > 0) await Promise.allSettled([...this.queue.values()]);
  }

  private enqueue(obj: StoredObject, deleted: boolean): void {
    if (this.stopped) return;
    const key = `${obj.metadata.namespace ?? ""}/${obj.metadata.name}`;
    const run = async () => {
      this.pending.delete(key);
      await this.reconcile(obj.metadata.namespace, obj.metadata.name, deleted ? pinName(obj) : undefined);
    };
    // One reconcile per NodeChain at a time; changes during a reconcile fold into one more run.
    const previous = this.queue.get(key);
    if (previous) {
      if (this.pending.has(key)) return;
      this.pending.add(key);
      const chained = previous.then(run, run).finally(() => {
        if (this.queue.get(key) === chained) this.queue.delete(key);
      });
      this.queue.set(key, chained);
      return;
    }
    const first = run().finally(() => {
      if (this.queue.get(key) === first) this.queue.delete(key);
    });
    this.queue.set(key, first);
  }

  private async reconcile(
    namespace: string | undefined,
    name: string,
    deletedPinName?: string,
  ): Promise<void> {
    const { store, dataPlane, log: rootLog } = this.options;
    const stored = await store.get("NodeChain", namespace, name);
    if (!stored) {
      const pin = deletedPinName;
      if (pin && this.live.has(pin)) {
        await dataPlane.remove(pin);
        this.live.delete(pin);
        rootLog.info({ chain: pin }, "NodeChain deleted: chain detached and unpinned");
      }
      return;
    }
    const parsed = NodeChain.safeParse(stored);
    if (!parsed.success) {
      rootLog.error({ name, issues: parsed.error.issues.slice(0, 5) }, "NodeChain does not parse");
      return;
    }
    const nc = parsed.data;
    const chain = pinName(stored);
    const log = rootLog.child({ node: this.options.nodeName, chain, revision: nc.spec.revision });
    const generation = nc.metadata.generation ?? 0;
    const status = nc.status;
    const live = this.live.get(chain);
    if (live === nc.spec.revision && status.phase === "Ready" && status.observedGeneration === generation)
      return;
    const forced = this.retryNow.delete(chain);
    // A retry of this generation is already scheduled; our own status write must not start
    // another attempt at once (a busy loop against an unreachable artifact server).
    if (!forced && this.retries.has(chain) && status.observedGeneration === generation) return;
    if (
      !forced &&
      status.phase === "Failed" &&
      status.observedGeneration === generation &&
      status.revision === live
    ) {
      // This generation already failed; the spec must change before it is tried again.
      return;
    }
    const timer = this.retries.get(chain);
    if (timer) clearTimeout(timer);
    this.retries.delete(chain);

    await this.writeStatus(nc.metadata.namespace, name, {
      ...status,
      phase: "Loading",
      observedGeneration: generation,
      conditions: setCondition(
        status.conditions,
        {
          type: ConditionType.Ready,
          status: "False",
          reason: Reason.Progressing,
          message: `switching to revision ${nc.spec.revision}`,
          observedGeneration: generation,
        },
        new Date(),
      ),
    });
    try {
      const built = await buildChainSpec(nc.spec, {
        cacheDir: this.options.cacheDir,
        netns: this.options.netns,
        chainName: chain,
      });
      const result = await dataPlane.apply(built.spec);
      this.live.set(chain, result.revision);
      this.options.onSwitch?.({ ok: true });
      log.info(
        { compiled: built.compiled, cached: built.cached, programs: result.programIds.length },
        "chain is live",
      );
      await this.writeStatus(nc.metadata.namespace, name, {
        observedGeneration: generation,
        phase: "Ready",
        revision: result.revision,
        programIds: result.programIds,
        attachedInterfaces: result.attachedInterfaces,
        // null removes the field (JSON merge patch): a self-test left from an earlier attempt
        // that failed would otherwise stay, and keep the node from counting as available.
        selfTest: result.selfTest ?? (null as unknown as undefined),
        lastError: null as unknown as undefined,
        conditions: setCondition(
          status.conditions,
          {
            type: ConditionType.Ready,
            status: "True",
            reason: Reason.Succeeded,
            message: `revision ${result.revision} is live on ${result.attachedInterfaces.join(", ")}`,
            observedGeneration: generation,
          },
          new Date(),
        ),
      });
    } catch (err) {
      const failure = describeFailure(err);
      this.options.onSwitch?.({ ok: false, reason: failure.reason });
      log.error({ err, reason: failure.reason }, failure.message);
      const lastError: LastError = {
        reason: failure.reason,
        message: failure.message.slice(0, 4096),
        ...(failure.log ? { log: failure.log.slice(-16_000) } : {}),
      };
      await this.writeStatus(nc.metadata.namespace, name, {
        observedGeneration: generation,
        phase: failure.waiting ? "Pending" : "Failed",
        revision: this.live.get(chain),
        lastError,
        selfTest: failure.selfTest ?? (null as unknown as undefined),
        conditions: setCondition(
          status.conditions,
          {
            type: ConditionType.Ready,
            status: "False",
            reason: failure.reason,
            message: failure.message.slice(0, 4096),
            observedGeneration: generation,
          },
          new Date(),
        ),
      });
      if (failure.transient && !this.stopped) {
        const retry = setTimeout(() => {
          this.retries.delete(chain);
          this.retryNow.add(chain);
          void store.get("NodeChain", namespace, name).then((o) => o && this.enqueue(o, false));
        }, 5_000);
        retry.unref();
        this.retries.set(chain, retry);
      }
    }
  }

  private async writeStatus(
    namespace: string | undefined,
    name: string,
    status: NodeChainStatus,
  ): Promise<void> {
    this.options.onStatus?.(name, status);
    try {
      await this.options.store.patchStatus("NodeChain", namespace, name, status);
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
export function pinName(obj: StoredObject): string {
  const spec = obj.spec as { chain?: string } | undefined;
  return `${obj.metadata.namespace ?? "default"}_${(spec?.chain ?? obj.metadata.name).replaceAll(".", "_")}`;
}

/** Maps whatever went wrong to a NodeChain reason; unknown errors are load failures. */
export function describeFailure(err: unknown): Failure {
  if (err instanceof BuildError) {
    const transient = err.reason === Reason.ArtifactFetchFailed;
    return { reason: err.reason, message: err.message, log: err.log, transient, waiting: transient };
  }
  const e = err as Error & {
    log?: string;
    results?: Array<{ vector: string; passed: boolean; expected: string; got: string }>;
  };
  switch (e?.name) {
    case "VerifierError":
      return { reason: Reason.VerifierRejected, message: e.message, log: e.log, transient: false };
    case "SelfTestError": {
      const results = e.results ?? [];
      const passed = results.filter((r) => r.passed).length;
      return {
        reason: Reason.SelfTestFailed,
        message: e.message,
        selfTest: { passed, failed: results.length - passed, results: results.slice(0, 256) },
        transient: false,
      };
    }
    case "NotSupportedError":
      return { reason: Reason.NotSupported, message: e.message, transient: false };
    case "ChainSpecError":
      return { reason: Reason.InvalidSpec, message: e.message, transient: false };
    case "NetnsError":
      return { reason: Reason.InterfaceNotFound, message: e.message, transient: true };
    case "AttachError":
      return { reason: Reason.AttachFailed, message: e.message, transient: true };
    default:
      return {
        reason: Reason.LoadFailed,
        message: e instanceof Error ? e.message : String(err),
        transient: true,
      };
  }
}

/** Conditions helper re-exported for tests that read agent status. */
export type { Condition };
