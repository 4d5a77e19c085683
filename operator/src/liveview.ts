/**
 * The operator's cluster-wide live view: every chain on every node from the NodeChains' status
 * (revision, phase, the error that kept a revision out), the rollout of each ServiceChain (which
 * node runs which revision, which failed and why), and markers where a node switched revision or
 * a rollout started, halted or rolled back. Everything but the rates comes from the informers'
 * caches (no API call); each node's rates come from its agent (see noderates.ts), and a node whose
 * agent stopped answering is a problem on the page.
 */
import { ConditionType, findCondition, Reason } from "../../common/api/index.ts";
import type { ChainReading, CommitInfo, LiveMarker, RolloutView } from "../../common/liveview/index.ts";
import type { Store, StoreObject } from "../../common/store.ts";
import type { NodeRates } from "./noderates.ts";

/** What the cluster view reads of {@link NodeRates}: each node's last report, and its silence. */
export type NodeRateSource = Pick<NodeRates, "report" | "silentFor">;

const HALTED = new Set<string>([Reason.NodesFailed, Reason.ProgressDeadlineExceeded]);

/** Readers of chains and rollouts for {@link import("../../common/liveview/index.ts").LiveView}. */
export function clusterLiveReaders(options: {
  store: Store;
  mark: (marker: LiveMarker) => void;
  /** Where the nodes' counters come from; without it the page says why it has no rates. */
  rates?: NodeRateSource;
  /** The commit of a GitSource's artifact revision (`<ref>@sha1:<sha>`), from its work directory. */
  commitOf?: (
    source: { namespace: string; name: string },
    revision: string,
  ) => Promise<CommitInfo | undefined>;
}): {
  read: () => Promise<ChainReading[]>;
  rollouts: () => Promise<RolloutView[]>;
  /** Stops following NodeChain changes. */
  stop: () => void;
} {
  const { store } = options;
  const nodeRevisions = new Map<string, string>();
  const nodeFailures = new Map<string, string>();
  const rolloutStates = new Map<string, string>();
  const nowT = () => Math.round(Date.now() / 1000);
  /**
   * `<namespace>/<chain>@<plan revision>` -> the commit of the GitSource artifact the plan was
   * first seen with: a node still on an older plan keeps showing the commit behind it.
   */
  const planCommits = new Map<string, CommitInfo | null>();
  const commits = new Map<string, Promise<CommitInfo | undefined>>();

  /** Notes the commit behind each ServiceChain's current plan (first seen wins). */
  const notePlanCommits = async (): Promise<void> => {
    if (!options.commitOf) return;
    const planOf = new Map<string, string>();
    for (const sc of await store.list("ServiceChain"))
      if (sc.status?.revision)
        planOf.set(`${sc.metadata.namespace ?? "default"}/${sc.metadata.name}`, sc.status.revision);
    for (const gs of await store.list("GitSource")) {
      const namespace = gs.metadata.namespace ?? "default";
      const artifact = gs.status?.artifact?.revision;
      if (!artifact) continue;
      for (const entry of gs.status?.inventory ?? []) {
        if (entry.kind !== "ServiceChain") continue;
        const chain = `${entry.namespace ?? namespace}/${entry.name}`;
        const plan = planOf.get(chain);
        if (!plan || planCommits.has(`${chain}@${plan}`)) continue;
        if (!commits.has(artifact))
          commits.set(artifact, options.commitOf({ namespace, name: gs.metadata.name }, artifact));
        planCommits.set(`${chain}@${plan}`, (await commits.get(artifact)) ?? null);
      }
    }
  };

  /** Marks what changed on a node since its NodeChain was last seen: a switch, a refusal. */
  const noteNodeChain = (nc: StoreObject<"NodeChain">): void => {
    const chain = `${nc.metadata.namespace ?? "default"}/${nc.spec.chain}`;
    const node = nc.spec.nodeName;
    const key = `${node}/${chain}`;
    const status = nc.status;
    const live = status?.revision ?? "";
    const before = nodeRevisions.get(key);
    nodeRevisions.set(key, live);
    const atMs = Date.now();
    const t = Math.round(atMs / 1000);
    if (before !== undefined && live && before !== live)
      options.mark({
        t,
        atMs,
        node,
        chain,
        kind: "switch",
        revision: live,
        message: `from ${before || "nothing"}`,
      });
    const error = status?.phase === "Failed" ? status.lastError : undefined;
    const failure = error ? `${error.reason}|${error.message}` : "";
    if (error && nodeFailures.get(key) !== failure)
      options.mark({
        t,
        atMs,
        node,
        chain,
        kind: "switch-failed",
        revision: nc.spec.revision,
        message: `${error.reason}: ${error.message.split("\n")[0]}`,
      });
    nodeFailures.set(key, failure);
  };
  // A node's switch is marked when its status changes, not at the next sample: a rollout over
  // three nodes can take less than a second.
  const unwatch = store.watch("NodeChain", (event) => {
    if (event.type === "changed") noteNodeChain(event.object);
  });

  const read = async (): Promise<ChainReading[]> => {
    const readings: ChainReading[] = [];
    const now = Date.now();
    await notePlanCommits();
    for (const nc of await store.list("NodeChain")) {
      noteNodeChain(nc);
      const status = nc.status;
      const error = status?.phase === "Failed" ? status.lastError : undefined;
      const node = nc.spec.nodeName;
      const chain = `${nc.metadata.namespace ?? "default"}/${nc.spec.chain}`;
      const report = options.rates?.report(node);
      const silentSeconds = options.rates?.silentFor(node, now);
      const counted = report?.sample?.readings.find((r) => r.ref === chain);
      const revision = status?.revision || nc.spec.revision;
      const commit = planCommits.get(`${chain}@${revision}`);
      const base = {
        node,
        chain,
        hook: nc.spec.hook,
        revision,
        ...(commit ? { commit } : {}),
        phase: status?.phase ?? "Pending",
        ...(error ? { lastError: { reason: error.reason, message: error.message } } : {}),
        ...(silentSeconds !== undefined
          ? { silent: { seconds: silentSeconds, ...(report?.error ? { error: report.error } : {}) } }
          : {}),
      };
      if (counted && report?.sample) {
        readings.push({
          ...base,
          functions: counted.functions,
          rootMisses: counted.rootMisses,
          sampledAtMs: report.sample.atMs,
          ...(counted.lastSwitch ? { lastSwitch: counted.lastSwitch } : {}),
          ...(counted.runs !== undefined && counted.runTimeNs !== undefined
            ? { runs: counted.runs, runTimeNs: counted.runTimeNs }
            : {}),
          ...(counted.runTimeAbsent ? { runTimeAbsent: counted.runTimeAbsent } : {}),
          ...(counted.maps ? { maps: counted.maps } : {}),
        });
        continue;
      }
      readings.push({
        ...base,
        functions: nc.spec.functions.map((f) => ({
          name: f.name,
          packets: 0n,
          drops: 0n,
          passes: 0n,
          errors: 0n,
        })),
        rootMisses: 0n,
        noCounters: true,
        countersAbsent: !options.rates
          ? "the operator asks no agent for rates (--agent-metrics-port not set): see each node's own live view and /metrics"
          : report?.error
            ? `the node's agent did not answer: ${report.error}`
            : "not reported by the node's agent yet",
      });
    }
    return readings;
  };

  const rollouts = async (): Promise<RolloutView[]> => {
    const nodeChains = await store.list("NodeChain");
    const views: RolloutView[] = [];
    for (const sc of await store.list("ServiceChain")) {
      const chain = `${sc.metadata.namespace ?? "default"}/${sc.metadata.name}`;
      const ready = findCondition(sc.status?.conditions, ConditionType.Ready);
      const revision = sc.status?.revision ?? "";
      const reason = ready?.reason ?? "";
      const state = `${revision}|${reason}`;
      const seen = rolloutStates.get(chain);
      rolloutStates.set(chain, state);
      if (seen !== state) {
        const [seenRevision, seenReason] = (seen ?? "|").split("|");
        if (seen !== undefined && revision && revision !== seenRevision)
          options.mark({
            t: nowT(),
            chain,
            kind: "rollout-started",
            revision,
            message: ready?.message ?? "",
          });
        if (reason !== seenReason && reason === Reason.RolledBack)
          options.mark({ t: nowT(), chain, kind: "rolled-back", revision, message: ready?.message ?? "" });
        else if (reason !== seenReason && HALTED.has(reason))
          options.mark({
            t: nowT(),
            chain,
            kind: "rollout-halted",
            revision,
            message: ready?.message ?? reason,
          });
      }
      views.push({
        chain,
        revision,
        reason,
        message: ready?.message ?? "",
        nodes: nodeChains
          .filter(
            (nc) => nc.metadata.namespace === sc.metadata.namespace && nc.spec.chain === sc.metadata.name,
          )
          .map((nc) => ({
            node: nc.spec.nodeName,
            revision: nc.status?.revision ?? "",
            phase: nc.status?.phase ?? "Pending",
            ...(nc.status?.lastError
              ? { message: `${nc.status.lastError.reason}: ${nc.status.lastError.message.split("\n")[0]}` }
              : {}),
          }))
          .sort((a, b) => a.node.localeCompare(b.node)),
      });
    }
    return views;
  };

  return { read, rollouts, stop: unwatch };
}
