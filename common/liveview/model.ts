/**
 * What the live view shows, as plain data: the server samples chains once a second into a
 * {@link import("./history.ts").LiveHistory}, and the page reads the same shapes as JSON.
 * Nothing here knows where the figures come from (an agent's chain manager, or every agent's
 * reports in the operator).
 */

/** Cumulative counters of one network function, as read now. */
export interface FunctionReading {
  name: string;
  packets: bigint;
  drops: bigint;
  passes: bigint;
  errors: bigint;
  /**
   * Per-function time of sampled packets, where the chain was loaded with it on (`sluice run
   * --time-functions`): their summed ns in this function and how many there were.
   */
  timeNs?: bigint;
  timeSamples?: bigint;
}

/** A hash map's fill level. */
export interface MapFillReading {
  nf: string;
  map: string;
  entries: number;
  maxEntries: number;
}

/** One chain on one node, as read now. */
export interface ChainReading {
  node: string;
  chain: string;
  hook: string;
  revision: string;
  /** NodeChain phase (Ready, Failed, Pending, ...) or "Running" where there is no NodeChain. */
  phase: string;
  /** When the live revision was switched in (ISO time), when known. */
  lastSwitch?: string;
  /** The Git commit behind the revision, when known. */
  commit?: CommitInfo;
  /** Functions in chain order. */
  functions: FunctionReading[];
  /** Packets whose tail call from the root found no revision. */
  rootMisses: bigint;
  /** Kernel run-time figures of the whole chain, while BPF statistics count. */
  runs?: bigint;
  runTimeNs?: bigint;
  /** Why there are no run-time figures. */
  runTimeAbsent?: string;
  maps?: MapFillReading[];
  /** The last failure to switch a revision in, if the node reports one. */
  lastError?: { reason: string; message: string };
  /**
   * No counters here (the operator's cluster view: rates stay on each node's agent); the
   * functions' counters are then ignored and the page draws no graphs for the chain.
   */
  noCounters?: boolean;
  /** Why there are no counters (shown where the graphs would be), with {@link noCounters}. */
  countersAbsent?: string;
  /**
   * When the counters were read, where another process read them (the operator's cluster view:
   * the node's agent). Rates are then taken over the agent's own sampling times, and a reading
   * whose sample did not change since the last one holds the rates it gave for a while (the
   * agent is asked less often than once a second while no page is open).
   */
  sampledAtMs?: number;
  /** The node's agent has not answered for this long (the cluster view): a problem. */
  silent?: { seconds: number; error?: string };
  /** `<namespace>/<ServiceChain>` of the chain, where the chain's own name is another (a pin name). */
  ref?: string;
}

/** One ServiceChain's rollout: the target revision and where every node is. */
export interface RolloutView {
  /** `<namespace>/<name>`. */
  chain: string;
  revision: string;
  /** Ready condition's reason and message (RolloutComplete, RollingOut, NodesFailed, ...). */
  reason: string;
  message: string;
  nodes: Array<{ node: string; revision: string; phase: string; message?: string }>;
}

/** A Git commit, as the page shows it. */
export interface CommitInfo {
  sha: string;
  /** Subject line of the commit message. */
  message: string;
  /** Committer time, ms since the epoch. */
  timeMs?: number;
}

/** Something that happened to a chain, drawn as a marker on its graphs. */
export interface LiveMarker {
  /** Seconds since the epoch (the graphs' x axis). */
  t: number;
  /** Milliseconds since the epoch, where known more precisely than `t` (ordering within a second). */
  atMs?: number;
  node?: string;
  chain: string;
  kind: "switch" | "switch-failed" | "rollout-started" | "rollout-halted" | "rolled-back";
  revision: string;
  /** The commit message, or the failure's reason and message. */
  message: string;
}

/** A problem the page puts above the graphs. */
export interface LiveProblem {
  kind:
    | "tail-call-misses"
    | "drop-rate-jump"
    | "counters-stopped"
    | "map-near-full"
    | "switch-failed"
    | "node-silent";
  node?: string;
  chain: string;
  nf?: string;
  message: string;
}

/** What the page draws for one chain (everything but the time series). */
export interface ChainView {
  key: string;
  node: string;
  chain: string;
  hook: string;
  revision: string;
  phase: string;
  lastSwitch?: string;
  commit?: CommitInfo;
  functions: string[];
  runTimeAbsent?: string;
  maps: MapFillReading[];
  lastError?: { reason: string; message: string };
  noCounters?: boolean;
  countersAbsent?: string;
}

/** Rates of one function at one second: packets, drops, passes, errors per second. */
export type FunctionRates = [number, number, number, number];

/** One second of the history as the page receives it. */
export interface LivePoint {
  t: number;
  /** `<node>/<chain>/<nf>` -> rates. */
  functions: Record<string, FunctionRates>;
  /**
   * `<node>/<chain>` -> mean ns per packet of the whole chain over the second (absent without
   * run-time figures); `<node>/<chain>/<nf>` -> mean ns per sampled packet in that function
   * (only where the chain was loaded with per-function time).
   */
  nsPerPacket: Record<string, number>;
}

/** What the page loads first, and each event after. */
export interface LiveSnapshot {
  title: string;
  chains: ChainView[];
  points: LivePoint[];
  markers: LiveMarker[];
  problems: LiveProblem[];
  rollouts?: RolloutView[];
}
