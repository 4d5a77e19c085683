import {
  findCondition,
  ConditionType,
  FAILED_NODE_MESSAGE_MAX,
  FAILED_NODES_SHOWN,
  MAX_REVISION_COUNTS,
  Reason,
  type ChainPlan,
  type FailedNode,
  type IntOrPercent,
  type NodeChainStatus,
  type RevisionCount,
  type Rollout,
} from "../../../common/api/index.ts";

/**
 * Progressive rollout: given the plan, the last good plan, the selected nodes and what their
 * NodeChains report, decide which node gets which plan now and what the ServiceChain's status
 * says. Pure: no store, no clock but `now`, so every rule here is tested on plain data.
 *
 * A node is *available* on a revision when its agent reports that revision live and Ready with
 * its self-test passed, for the current generation, for `minReadySeconds`. A node is *in
 * transition* when it is not available on the revision its NodeChain asks for, and that revision
 * is the target (a first NodeChain for a new node included) or any other but the last good one
 * (a revision superseded mid-rollout). At most `maxUnavailable` nodes are in transition. Nodes
 * on the last good revision do not count: a node whose agent is down must not block a rollout.
 */

/** What the rollout needs to know about one node's NodeChain. */
export interface NodeChainState {
  /** `spec.revision`: what the operator asked for. */
  revision: string;
  /** `metadata.generation`. */
  generation?: number;
  /** What the agent reported; absent until it wrote anything. */
  status?: NodeChainStatus;
}

/** How a node stands with the revision its NodeChain asks for. */
export type NodeHealth =
  | { kind: "available" }
  /** Live and Ready, waiting out `minReadySeconds` until `availableAt`. */
  | { kind: "warming"; availableAt: Date }
  | { kind: "failed"; reason: string; message: string }
  /** The agent has not reported on this revision yet, or is still at work. */
  | { kind: "pending" };

/** Where a node stands with its NodeChain's revision; see the module comment. */
export function nodeHealth(state: NodeChainState, minReadySeconds: number, now: Date): NodeHealth {
  const status = state.status;
  if (!status || state.generation === undefined || status.observedGeneration !== state.generation)
    return { kind: "pending" };
  if (status.phase === "Failed") {
    return {
      kind: "failed",
      reason: status.lastError?.reason ?? Reason.NodesFailed,
      message: status.lastError?.message ?? "the agent reported phase Failed",
    };
  }
  const ready = findCondition(status.conditions, ConditionType.Ready);
  const live =
    status.revision === state.revision &&
    status.phase === "Ready" &&
    ready?.status === "True" &&
    (status.selfTest?.failed ?? 0) === 0;
  if (!live) return { kind: "pending" };
  if (minReadySeconds <= 0) return { kind: "available" };
  const since = Date.parse(ready.lastTransitionTime);
  const availableAt = new Date((Number.isNaN(since) ? now.getTime() : since) + minReadySeconds * 1000);
  return availableAt.getTime() <= now.getTime() ? { kind: "available" } : { kind: "warming", availableAt };
}

/** Nodes allowed in transition at once: a count, or a percentage of `desired` rounded down, at least 1. */
export function resolveMaxUnavailable(value: IntOrPercent, desired: number): number {
  if (typeof value === "number") return value;
  const percent = Number.parseInt(value, 10);
  return Math.max(1, Math.floor((desired * percent) / 100));
}

/** What the ServiceChain's status said after the previous reconcile. */
export interface PreviousRollout {
  revision?: string;
  /** `status.nodes.ready` for `revision`. */
  ready?: number;
  /** Whether the rollout was waiting on `paused` or a canary promotion. */
  gated: boolean;
  lastProgressTime?: Date;
  /** `status.failedRevision` ("" or absent: none). */
  failedRevision?: string;
  failedNodes?: readonly FailedNode[];
}

/** Everything a rollout decision depends on. */
export interface RolloutInput {
  /** The plan of the current specs. */
  target: ChainPlan;
  /** The plan that last ran Ready on every selected node. */
  lastGood?: ChainPlan;
  previous: PreviousRollout;
  /** Selected node names, sorted: the order in which nodes are moved. */
  selected: readonly string[];
  /** This chain's NodeChains by node name, selected or not. */
  nodeChains: ReadonlyMap<string, NodeChainState>;
  strategy: Rollout;
  /** Whether the promote annotation names the target revision. */
  promoted: boolean;
  now: Date;
  /**
   * Most NodeChain writes (plans and removals, each counted) this decision makes; the rest
   * wait for the next decision, which comes at once (`partial`). Keeps one reconcile of a
   * thousand-node chain short, so that other chains get their turn. Absent: no limit.
   */
  maxWrites?: number;
}

/** Where the rollout stands after this decision. */
export type RolloutPhase =
  /** No node is selected. */
  | "NoNodes"
  /** Every selected node is available on the target revision. */
  | "Complete"
  /** Nodes are being moved (or the rollout waits for nodes in transition). */
  | "RollingOut"
  /** `spec.rollout.paused`. */
  | "Paused"
  /** The canary nodes are available; the rest wait for the promote annotation. */
  | "CanaryPaused"
  /** A node failed the target revision or the deadline passed; nothing more is moved until the plan changes. */
  | "Halted";

/** What to do now, and what the status says. */
export interface RolloutDecision {
  phase: RolloutPhase;
  /** Why a halted rollout halted. */
  haltReason?: typeof Reason.NodesFailed | typeof Reason.ProgressDeadlineExceeded;
  /** Whether the nodes of a halted rollout are being returned to `lastGood`. */
  rollingBack: boolean;
  /** Plans to write, by node; only nodes whose NodeChain asks for another revision (or has none). */
  writes: Map<string, ChainPlan>;
  /** Nodes given the target revision by this decision. */
  moved: string[];
  /** Nodes returned to the last good revision by this decision. */
  rolledBack: string[];
  /** Nodes whose NodeChain goes (no longer selected). */
  removed: string[];
  /** Nodes in transition (after the writes of this decision). */
  inTransition: string[];
  /** Nodes whose NodeChain asks for the target revision (after the writes of this decision). */
  onTarget: string[];
  counts: { desired: number; updated: number; ready: number; failed: number };
  /** Selected nodes by the revision their NodeChain asks for (after this decision) and phase. */
  revisions: RevisionCount[];
  /** Whether `maxWrites` held back writes this decision would have made (decide again at once). */
  partial: boolean;
  /** The first few failed nodes, messages trimmed. */
  failedNodes: FailedNode[];
  /** The halted revision, or "" (kept as a value rather than removed: see the reconciler's status write). */
  failedRevision: string;
  /** Whether this decision is the one that halted the rollout. */
  newlyHalted: boolean;
  lastGood?: ChainPlan;
  lastProgressTime: Date;
  /** When something time-based (minReadySeconds, the progress deadline) next needs a look. */
  requeueAfterMs?: number;
}

/** Smallest requeue delay, so that a deadline just passed is looked at promptly but not in a spin. */
const MIN_REQUEUE_MS = 500;

/** Decides the next step of the rollout; see the module comment for the rules. */
export function decideRollout(input: RolloutInput): RolloutDecision {
  const { target, lastGood, previous, selected, nodeChains, strategy, now } = input;
  const R = target.revision;
  const G = lastGood?.revision;
  const selectedSet = new Set(selected);
  const removed = [...nodeChains.keys()].filter((n) => !selectedSet.has(n)).sort();
  const health = new Map<string, NodeHealth>();
  for (const node of selected) {
    const nc = nodeChains.get(node);
    if (nc) health.set(node, nodeHealth(nc, strategy.minReadySeconds, now));
  }
  const atTarget = selected.filter((n) => nodeChains.get(n)?.revision === R);
  const kindOf = (n: string) => health.get(n)?.kind;
  const available = atTarget.filter((n) => kindOf(n) === "available");
  const liveReady = atTarget.filter((n) => kindOf(n) === "available" || kindOf(n) === "warming");
  const failedNow: FailedNode[] = atTarget.flatMap((n) => {
    const h = health.get(n);
    return h?.kind === "failed" ? [{ node: n, reason: h.reason, message: h.message }] : [];
  });
  const transitional = (revision: string | undefined) =>
    revision !== undefined && (revision === R || revision !== G);
  const inTransition = selected.filter(
    (n) => transitional(nodeChains.get(n)?.revision) && kindOf(n) !== "available",
  );

  const writes = new Map<string, ChainPlan>();
  const moved: string[] = [];
  const rolledBack: string[] = [];
  const steady = G === R;
  // Progress seen in the nodes' reports (moves made below count too).
  const observedProgress =
    previous.revision !== R ||
    (previous.ready !== undefined && liveReady.length > previous.ready) ||
    (previous.gated && !isGated(input, atTarget.length, inTransition.length));
  let lastProgressTime = observedProgress || !previous.lastProgressTime ? now : previous.lastProgressTime;

  const base = {
    writes,
    moved,
    rolledBack,
    removed,
    lastGood,
    rollingBack: false,
    newlyHalted: false,
    failedRevision: "",
  };
  const finish = (
    d: Omit<
      RolloutDecision,
      "inTransition" | "onTarget" | "requeueAfterMs" | "lastProgressTime" | "counts" | "revisions" | "partial"
    >,
  ): RolloutDecision => {
    const partial = limitWrites(d, input.maxWrites);
    const onTarget = selected.filter((n) => (writes.get(n) ?? nodeChains.get(n))?.revision === R);
    const transition =
      d.phase === "Halted"
        ? []
        : selected.filter(
            (n) =>
              transitional((writes.get(n) ?? nodeChains.get(n))?.revision) &&
              (writes.has(n) || kindOf(n) !== "available"),
          );
    // The deadline only runs while nodes move to a revision that has not run everywhere yet.
    const deadline =
      d.phase === "RollingOut" && !steady && transition.length > 0
        ? lastProgressTime.getTime() + strategy.progressDeadlineSeconds * 1000
        : undefined;
    return {
      ...d,
      counts: {
        desired: selected.length,
        updated: onTarget.length,
        ready: liveReady.filter((n) => !writes.has(n)).length,
        failed: new Set([...failedNow, ...d.failedNodes].map((f) => f.node)).size,
      },
      revisions: revisionCounts(input, writes),
      partial,
      inTransition: transition,
      onTarget,
      lastProgressTime,
      requeueAfterMs: partial ? 0 : d.phase === "Halted" ? undefined : requeueAfter(health, deadline, now),
    };
  };

  if (selected.length === 0) return finish({ ...base, phase: "NoNodes", failedNodes: [] });

  if (available.length === selected.length) {
    // Everything runs the target: it is the good plan from now on (also after a failed node
    // recovered on its own).
    return finish({ ...base, phase: "Complete", lastGood: target, failedNodes: [] });
  }

  if (steady) {
    // The target already ran everywhere: nodes that joined get it, maxUnavailable at a time.
    // A node failing here is that node's problem, not the revision's: report it, halt nothing.
    moveNodes(input, inTransition, Infinity, writes, moved);
    if (moved.length > 0) lastProgressTime = now;
    return finish({ ...base, phase: "RollingOut", failedNodes: bound(failedNow) });
  }

  const gate = gateOf(input, atTarget.length, inTransition.length);
  // Halted earlier, halting now on a failure, or halting now on the deadline.
  let haltReason: RolloutDecision["haltReason"];
  let failedNodes: FailedNode[] = [];
  let newlyHalted = false;
  if (previous.failedRevision === R) {
    haltReason = previous.failedNodes?.some((f) => f.reason === Reason.ProgressDeadlineExceeded)
      ? Reason.ProgressDeadlineExceeded
      : Reason.NodesFailed;
    const recorded = new Set((previous.failedNodes ?? []).map((f) => f.node));
    failedNodes = [...(previous.failedNodes ?? []), ...failedNow.filter((f) => !recorded.has(f.node))];
  } else if (failedNow.length > 0) {
    haltReason = Reason.NodesFailed;
    failedNodes = failedNow;
    newlyHalted = true;
  } else if (
    gate.kind === "open" &&
    !observedProgress &&
    inTransition.length > 0 &&
    now.getTime() - lastProgressTime.getTime() >= strategy.progressDeadlineSeconds * 1000
  ) {
    haltReason = Reason.ProgressDeadlineExceeded;
    failedNodes = inTransition.map((n) => ({
      node: n,
      reason: Reason.ProgressDeadlineExceeded,
      message: `not Ready on revision ${nodeChains.get(n)!.revision} within ${strategy.progressDeadlineSeconds}s`,
    }));
    newlyHalted = true;
  }

  if (haltReason) {
    const rollingBack = strategy.autoRollback && lastGood !== undefined;
    for (const node of selected) {
      const nc = nodeChains.get(node);
      // Nodes without a chain get the good plan if there is one; with autoRollback so does
      // every node that was moved off it.
      if (lastGood && (!nc || (rollingBack && nc.revision !== G))) {
        writes.set(node, lastGood);
        if (nc) rolledBack.push(node);
      }
    }
    return finish({
      ...base,
      phase: "Halted",
      haltReason,
      rollingBack,
      newlyHalted,
      failedRevision: R,
      failedNodes: bound(failedNodes),
    });
  }

  if (gate.kind !== "open") {
    // Waiting for the user: nodes that joined meanwhile get the good plan, if there is one.
    if (lastGood) {
      for (const node of selected) if (!nodeChains.has(node)) writes.set(node, lastGood);
    }
    return finish({ ...base, phase: gate.kind, failedNodes: [] });
  }
  moveNodes(input, inTransition, gate.cap, writes, moved);
  if (moved.length > 0) lastProgressTime = now;
  return finish({ ...base, phase: "RollingOut", failedNodes: [] });
}

type Gate = { kind: "open"; cap: number } | { kind: "Paused" } | { kind: "CanaryPaused" };

/**
 * What holds the rollout back: `paused`, or the canary. The canary is the first `nodes` nodes
 * moved; until they are all available nothing else moves, and with `pause` nothing else moves
 * until the promote annotation names the target revision. Once more nodes than the canary run
 * the target, the canary is over (removing the annotation later does not pause again).
 */
function gateOf(input: RolloutInput, atTarget: number, inTransition: number): Gate {
  // `inTransition` counts every node in transition, not only the canary's: the canary's verdict
  // waits until nothing else is moving either.
  const { strategy, selected, promoted } = input;
  if (strategy.paused) return { kind: "Paused" };
  const canary = strategy.canary;
  if (!canary || atTarget > canary.nodes || atTarget >= selected.length)
    return { kind: "open", cap: Infinity };
  if (atTarget < canary.nodes) return { kind: "open", cap: canary.nodes - atTarget };
  if (inTransition > 0) return { kind: "open", cap: 0 };
  if (canary.pause && !promoted) return { kind: "CanaryPaused" };
  return { kind: "open", cap: Infinity };
}

function isGated(input: RolloutInput, atTarget: number, inTransition: number): boolean {
  if (input.lastGood?.revision === input.target.revision) return false;
  return gateOf(input, atTarget, inTransition).kind !== "open";
}

/**
 * Gives the target to the next nodes as far as maxUnavailable and `cap` allow. Nodes still in
 * transition to a superseded revision go first and cost nothing (they are unavailable already);
 * then the others in name order.
 */
function moveNodes(
  input: RolloutInput,
  inTransition: readonly string[],
  cap: number,
  writes: Map<string, ChainPlan>,
  moved: string[],
): void {
  const { target, selected, nodeChains, strategy } = input;
  const elsewhere = (n: string) => nodeChains.get(n)?.revision !== target.revision;
  const superseded = inTransition.filter(elsewhere);
  let budget = resolveMaxUnavailable(strategy.maxUnavailable, selected.length) - inTransition.length;
  const move = (node: string) => {
    writes.set(node, target);
    moved.push(node);
  };
  for (const node of superseded) if (moved.length < cap) move(node);
  for (const node of selected) {
    if (moved.length >= cap || budget <= 0) break;
    if (!elsewhere(node) || writes.has(node)) continue;
    move(node);
    budget--;
  }
}

/** The first few failed nodes, with messages short enough for a status read by a thousand-node fleet. */
function bound(list: FailedNode[]): FailedNode[] {
  return list
    .slice(0, FAILED_NODES_SHOWN)
    .map((f) =>
      f.message !== undefined && f.message.length > FAILED_NODE_MESSAGE_MAX
        ? { ...f, message: `${f.message.slice(0, FAILED_NODE_MESSAGE_MAX - 1)}…` }
        : f,
    );
}

/**
 * Drops the writes and removals beyond `maxWrites` (in the order they were decided: superseded
 * nodes, then by name), and the nodes they would have moved or rolled back; true when any went.
 */
function limitWrites(
  d: Pick<RolloutDecision, "writes" | "moved" | "rolledBack" | "removed">,
  maxWrites: number | undefined,
): boolean {
  if (maxWrites === undefined) return false;
  let partial = false;
  if (d.removed.length > maxWrites) {
    d.removed.splice(maxWrites);
    partial = true;
  }
  const budget = Math.max(0, maxWrites - d.removed.length);
  if (d.writes.size > budget) {
    for (const node of [...d.writes.keys()].slice(budget)) d.writes.delete(node);
    const kept = (list: string[]) => list.splice(0, list.length, ...list.filter((n) => d.writes.has(n)));
    kept(d.moved);
    kept(d.rolledBack);
    partial = true;
  }
  return partial;
}

/**
 * Selected nodes counted by the revision their NodeChain asks for once `writes` are made, and
 * the phase their agent reports for it: a node just written, or whose agent has not reported on
 * the NodeChain's generation, is pending. The target first, then the last good revision, then
 * the others by size; at most {@link MAX_REVISION_COUNTS}.
 */
export function revisionCounts(
  input: Pick<RolloutInput, "selected" | "nodeChains" | "target" | "lastGood">,
  writes: ReadonlyMap<string, ChainPlan>,
): RevisionCount[] {
  const byRevision = new Map<string, RevisionCount>();
  for (const node of input.selected) {
    const nc = input.nodeChains.get(node);
    const revision = writes.get(node)?.revision ?? nc?.revision;
    if (revision === undefined) continue;
    let count = byRevision.get(revision);
    if (!count) {
      count = { revision, nodes: 0, ready: 0, failed: 0, inProgress: 0, pending: 0 };
      byRevision.set(revision, count);
    }
    count.nodes++;
    const status = nc?.status;
    if (
      writes.has(node) ||
      !status ||
      nc?.generation === undefined ||
      status.observedGeneration !== nc.generation
    )
      count.pending++;
    else if (status.phase === "Failed") count.failed++;
    else if (status.phase === "Ready" && status.revision === revision) {
      count.ready++;
      if (status.mode === "fused") count.fused = (count.fused ?? 0) + 1;
      else if (status.modeReason && count.linkedReason === undefined) count.linkedReason = status.modeReason;
    } else if (status.phase === "Compiling" || status.phase === "Loading" || status.phase === "Testing")
      count.inProgress++;
    else count.pending++;
  }
  const rank = (c: RevisionCount) =>
    c.revision === input.target.revision ? 0 : c.revision === input.lastGood?.revision ? 1 : 2;
  return [...byRevision.values()]
    .sort((a, b) => rank(a) - rank(b) || b.nodes - a.nodes || a.revision.localeCompare(b.revision))
    .slice(0, MAX_REVISION_COUNTS);
}

/** Milliseconds until the next node finishes warming up or the deadline passes, if either is ahead. */
function requeueAfter(
  health: ReadonlyMap<string, NodeHealth>,
  deadline: number | undefined,
  now: Date,
): number | undefined {
  const times: number[] = [];
  for (const h of health.values()) if (h.kind === "warming") times.push(h.availableAt.getTime());
  if (deadline !== undefined) times.push(deadline);
  if (times.length === 0) return undefined;
  return Math.max(MIN_REQUEUE_MS, Math.min(...times) - now.getTime());
}
