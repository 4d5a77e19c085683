/**
 * What a node shows in the live view: its chains read from the chain manager (counters each
 * second; kernel run time and map fill while a page is open), joined with the NodeChain and
 * ServiceChain status from the store, and markers for what changed between two readings (a
 * revision switched in or failed, a rollout started, halted or rolled back).
 */
import { ConditionType, findCondition, NODE_LABEL, Reason } from "../../../common/api/index.ts";
import type { ChainReading, CommitInfo, LiveMarker } from "../../../common/liveview/index.ts";
import type { Store } from "../../../common/store.ts";
import type { ChainStatus } from "../chain/index.ts";
import { pinName } from "./agent.ts";
import { readKernelFigures, type BpfStatsSession } from "./kstats.ts";

/** Options of {@link agentLiveReader}. */
export interface AgentLiveReaderOptions {
  node: string;
  list: () => ChainStatus[];
  store: Store;
  /** bpffs directory of the chains (for run time and map fill). */
  bpffsRoot: string;
  stats: BpfStatsSession;
  /** Records a marker (the history's `mark`). */
  mark: (marker: LiveMarker) => void;
  /** The commit of a revision (`<ref>@sha1:<sha>`), when it can be looked up. */
  commitOf?: (revision: string) => Promise<CommitInfo | undefined>;
  /** When each chain's revision was last switched in. */
  lastSwitch?: (chain: string) => string | undefined;
  /**
   * Mark rollouts (started, halted, rolled back) from the ServiceChains in the store; default
   * true. Off for an agent in a cluster: its store does not cache ServiceChains (each read would
   * be a LIST on the API server, every second) and its role may not read them; the operator's
   * cluster view marks rollouts.
   */
  rolloutMarkers?: boolean;
}

const HALTED_REASONS = new Set<string>([Reason.NodesFailed, Reason.ProgressDeadlineExceeded]);

/** A reader for {@link import("../../../common/liveview/index.ts").LiveView}'s `read`. */
export function agentLiveReader(
  options: AgentLiveReaderOptions,
): (watched: boolean) => Promise<ChainReading[]> {
  const revisions = new Map<string, string>();
  const failures = new Map<string, string>();
  const rollouts = new Map<string, string>();
  const commits = new Map<string, CommitInfo | null>();
  let mapsReadAt = 0;
  let maps = new Map<string, ChainReading["maps"]>();

  const commitOf = async (revision: string): Promise<CommitInfo | undefined> => {
    if (!options.commitOf || !revision) return undefined;
    if (!commits.has(revision))
      commits.set(revision, (await options.commitOf(revision).catch(() => undefined)) ?? null);
    return commits.get(revision) ?? undefined;
  };
  const commitText = async (revision: string) => (await commitOf(revision))?.message ?? revision;

  return async (watched) => {
    const chains = options.list();
    // This node's only, by its label: before the agent's own label-selected watch is up (the
    // view samples from the start), a plain list asked the API server for every NodeChain of
    // the cluster, each second, several MB at 1,000 nodes; and a chain's NodeChain found by
    // name alone could be another node's.
    const nodeChains = await options.store.list("NodeChain", undefined, { [NODE_LABEL]: options.node });
    const serviceChains = options.rolloutMarkers === false ? [] : await options.store.list("ServiceChain");
    const nowT = Math.round(Date.now() / 1000);

    // Run time only while a page looks (counting costs every packet a little); maps every 5 s.
    const state = watched ? options.stats.want() : undefined;
    const figures =
      watched || Date.now() - mapsReadAt > 5_000 ? readKernelFigures(options.bpffsRoot, chains) : [];
    if (figures.length > 0 || chains.length === 0) {
      mapsReadAt = Date.now();
      maps = new Map(figures.map((f) => [f.chain, f.maps]));
    }

    // Rollouts: a new target revision, a halt, a rollback.
    for (const sc of serviceChains) {
      const chain = pinName(sc);
      const ready = findCondition(sc.status?.conditions, ConditionType.Ready);
      const revision = sc.status?.revision ?? "";
      const reason = ready?.reason ?? "";
      const seen = rollouts.get(chain);
      const now = `${revision}|${reason}`;
      if (seen === now) continue;
      rollouts.set(chain, now);
      const [seenRevision, seenReason] = (seen ?? "|").split("|");
      if (seen !== undefined && revision && revision !== seenRevision)
        options.mark({
          t: nowT,
          chain,
          kind: "rollout-started",
          revision,
          message: await commitText(revision),
        });
      if (reason !== seenReason && reason === Reason.RolledBack)
        options.mark({ t: nowT, chain, kind: "rolled-back", revision, message: ready?.message ?? "" });
      else if (reason !== seenReason && HALTED_REASONS.has(reason))
        options.mark({ t: nowT, chain, kind: "rollout-halted", revision, message: ready?.message ?? reason });
    }

    const readings: ChainReading[] = [];
    for (const c of chains) {
      const nc = nodeChains.find((o) => pinName(o) === c.name);
      const status = nc?.status;
      const before = revisions.get(c.name);
      revisions.set(c.name, c.revision);
      if (before !== undefined && before !== c.revision)
        options.mark({
          t: nowT,
          chain: c.name,
          kind: "switch",
          revision: c.revision,
          message: await commitText(c.revision),
        });
      const error = status?.phase === "Failed" ? status.lastError : undefined;
      const failure = error ? `${error.reason}|${error.message}` : "";
      if (error && failures.get(c.name) !== failure)
        options.mark({
          t: nowT,
          chain: c.name,
          kind: "switch-failed",
          revision: nc?.spec.revision ?? "",
          message: `${error.reason}: ${error.message.split("\n")[0]}`,
        });
      failures.set(c.name, failure);
      const kernel = figures.find((f) => f.chain === c.name);
      const commit = await commitOf(c.revision);
      const lastSwitch = options.lastSwitch?.(c.name);
      readings.push({
        node: options.node,
        chain: c.name,
        ...(nc ? { ref: `${nc.metadata.namespace ?? "default"}/${nc.spec.chain}` } : {}),
        hook: c.hook,
        revision: c.revision,
        phase: status?.phase ?? "Running",
        ...(lastSwitch ? { lastSwitch } : {}),
        ...(commit ? { commit } : {}),
        functions: c.nfs.map((nf) => ({
          name: nf.name,
          packets: nf.counters.packets,
          drops: nf.counters.drops,
          passes: nf.counters.passes,
          errors: nf.counters.errors,
          ...(nf.time ? { timeNs: nf.time.ns, timeSamples: nf.time.samples } : {}),
        })),
        rootMisses: c.rootMisses.packets,
        ...(state?.counting && kernel?.root
          ? { runs: kernel.root.runCount, runTimeNs: kernel.root.runTimeNs }
          : {}),
        ...(state && !state.counting ? { runTimeAbsent: state.reason } : {}),
        maps: maps.get(c.name) ?? [],
        ...(error ? { lastError: { reason: error.reason, message: error.message } } : {}),
      });
    }
    return readings;
  };
}
