import {
  API_VERSION,
  CHAIN_LABEL,
  ConditionType,
  formatParseError,
  formatTime,
  NODE_LABEL,
  nodesSummary,
  PROMOTE_ANNOTATION,
  Reason,
  applyConditions,
  type ChainPlan,
  type Condition,
  type ConditionSet,
  type GitSource,
  type NetworkFunction,
  type NodeChain,
  type NodeChainSpec,
  type ServiceChain,
  type ServiceChainStatus,
} from "../../../common/api/index.ts";
import { failureConditions, InvalidObjectError } from "../../../common/errors.ts";
import type { WriteCoalescer } from "../../../common/kube/coalesce.ts";
import { CONTINUE, runSteps, type Step, type StepResult } from "../../../common/kube/controller.ts";
import type { Logger } from "../../../common/log.ts";
import { SOURCE_LABEL } from "../gitsource/reconciler.ts";
import {
  statusPatch,
  type Store,
  type StoreEvent,
  type StoreInput,
  type StoreObject,
} from "../../../common/store.ts";
import {
  canonicalJson,
  nodeChainName,
  nodeLabelValue,
  resolvePlan,
  sameJson,
  selectNodes,
  type NodeInfo,
} from "./plan.ts";
import { usesOverlay } from "./overlay.ts";
import { sourceDirOf, sourceTreeKey } from "./source-tree.ts";
import { decideRollout, type NodeChainState, type RolloutDecision } from "./rollout.ts";

/** What the ServiceChain reconciler needs from its surroundings. */
export interface ServiceChainDeps {
  /** Where ServiceChains, NetworkFunctions, GitSources, Nodes and NodeChains live. */
  store: Store;
  /** Logs and records an event on the object. */
  event: (obj: StoreObject, type: "Normal" | "Warning", reason: string, message: string) => void;
  /** The clock (minReadySeconds, progressDeadlineSeconds, condition times). */
  now: () => Date;
  /**
   * Whether GitSource `namespace/name` is applying a revision right now. If so, the chain waits
   * and is queued again (by whoever answers true) once the GitSource has finished: a source
   * applies its objects one by one and records its new artifact last, so a plan made meanwhile
   * would mix two commits (new manifests with the old C source, or half of the new functions).
   * Absent: sources are never waited for.
   */
  sourceApplying?: (namespace: string, name: string, chainKey: string) => boolean;
  /**
   * The artifact GitSource `namespace/name` last wrote into its status, for a few seconds after
   * the write. The write returns before the watch brings it into the cache the chain reads, while
   * the objects applied before it may be there already: a chain whose cached GitSource still
   * shows another artifact waits (and is tried again shortly), or its plan would mix the new
   * objects with the old artifact, a revision no commit has. Absent: never waited for.
   */
  artifactWritten?: (namespace: string, name: string) => string | undefined;
  /**
   * The digest of the tree a `path` function is compiled from: the files under `dir` in the
   * artifact `digest` of GitSource `namespace/name` (see `sourceTreeDigest`); undefined when that
   * artifact cannot be read now (the chain waits and is tried again). The revision hashes it
   * instead of the artifact digest. Absent: the artifact digest stands for its files.
   */
  sourceTree?: (namespace: string, name: string, digest: string, dir: string) => Promise<string | undefined>;
  /**
   * Whether the operator can still serve the artifact at `url` (it holds the file). A plan of the
   * current revision already written is kept only while its artifacts can be served; otherwise
   * (a new operator without the old files) it is written again with the current artifact.
   * Absent: always.
   */
  artifactAvailable?: (url: string, digest: string) => Promise<boolean>;
  /**
   * Spaces the status writes of a chain whose rollout is under way (keyed "namespace/name");
   * a new verdict (conditions, revision, halt, completion) is written at once. Absent: every
   * change is written at once.
   */
  statusWrites?: WriteCoalescer;
  /**
   * Most NodeChain writes one reconcile makes (default {@link MAX_WRITES_PER_PASS}); a rollout
   * that needs more goes on in the next reconcile, queued behind the other chains' keys.
   */
  maxWritesPerPass?: number;
}

/** How long a chain waits for an artifact the operator cannot read yet (it is being rebuilt). */
const SOURCE_TREE_RETRY_MS = 2_000;

/**
 * NodeChain writes in one reconcile of one chain: enough for a step of a large rollout, few
 * enough (a second or so of API calls) that a thousand-node chain holds a worker only briefly.
 */
export const MAX_WRITES_PER_PASS = 100;

/** NodeChain writes of one reconcile in flight at once. */
const WRITE_CONCURRENCY = 8;

/** Where a reconcile stands while its steps run; status is written from it once, at the end. */
interface Run {
  chain: ServiceChain;
  log: Logger;
  /** The status as read. */
  previous: ServiceChainStatus;
  /** The status being built. */
  status: ServiceChainStatus;
  conditions: Condition[];
  plan?: ChainPlan;
  selected?: string[];
  /** Whether the rollout is under way (its status writes may be spaced out). */
  rollingOut?: boolean;
}

/**
 * Reconciles one ServiceChain: resolve its functions into a plan, select the nodes, and move
 * nodes to the plan's revision as the rollout strategy allows, writing one NodeChain per
 * (chain, node). Steps run in order; the first that cannot go on ends the list, and status is
 * written once at the end, only when it changed. Everything is derived from the store, so a
 * repeated reconcile writes nothing.
 */
export async function reconcileServiceChain(
  deps: ServiceChainDeps,
  namespace: string,
  name: string,
  parentLog: Logger,
): Promise<{ requeueAfterMs?: number }> {
  let chain: ServiceChain | undefined;
  try {
    chain = await deps.store.get("ServiceChain", namespace, name);
  } catch (err) {
    if (!(err instanceof InvalidObjectError)) throw err;
    // The apiserver validated it already; this only happens with a hand-made store object.
    parentLog.error({ issues: err.issues }, "ServiceChain does not parse");
    return {};
  }
  if (!chain) {
    deps.statusWrites?.forget(`${namespace}/${name}`);
    // Owner references take the NodeChains away where a garbage collector runs; do it here too
    // so that no node keeps a chain whose ServiceChain is gone.
    for (const nc of await deps.store.list("NodeChain", namespace, { [CHAIN_LABEL]: name })) {
      await deps.store.delete("NodeChain", namespace, nc.metadata.name);
    }
    return {};
  }
  const run: Run = {
    chain,
    log: parentLog.child({ kind: "ServiceChain", namespace, name, revision: chain.status.revision }),
    previous: chain.status,
    status: { ...chain.status },
    conditions: chain.status.conditions ?? [],
  };
  const result = await runSteps(steps, run, deps);
  const heldBackMs = await writeStatus(run, deps);
  const requeue = result.next ? undefined : result.requeueAfterMs;
  const requeueAfterMs = heldBackMs === undefined ? requeue : Math.min(requeue ?? Infinity, heldBackMs);
  return requeueAfterMs === undefined ? {} : { requeueAfterMs };
}

const steps: Step<Run, ServiceChainDeps>[] = [reconcilePlan, reconcileNodes, reconcileRollout];

/** Resolves the chain's functions into a plan; a chain that cannot be planned writes nothing. */
async function reconcilePlan(run: Run, deps: ServiceChainDeps): Promise<StepResult> {
  const { chain } = run;
  const ns = chain.metadata.namespace ?? "default";
  const functions = new Map<string, NetworkFunction | { invalid: string }>();
  const sources = new Map<string, GitSource>();
  for (const ref of chain.spec.functions) {
    if (functions.has(ref.name)) continue;
    let nf: NetworkFunction | undefined;
    try {
      nf = await deps.store.get("NetworkFunction", ns, ref.name);
    } catch (err) {
      if (!(err instanceof InvalidObjectError)) throw err;
      functions.set(ref.name, { invalid: formatParseError({ issues: [...err.issues] }) });
      continue;
    }
    if (!nf) continue;
    functions.set(ref.name, nf);
    const src = nf.spec.source;
    if ("sourceRef" in src && !sources.has(src.sourceRef.name)) {
      const gs = await deps.store.get("GitSource", ns, src.sourceRef.name).catch((err: unknown) => {
        if (err instanceof InvalidObjectError) return undefined;
        throw err;
      });
      if (gs) sources.set(src.sourceRef.name, gs);
    }
  }
  // One commit is one revision: no plan while a source of the chain, of its functions or of
  // their C files is half-way through applying.
  const busy = applyingSource(run, deps, [...functions.values()], sources);
  if (busy) {
    run.log.debug({ source: busy }, "waiting for the GitSource to finish applying its revision");
    return { next: false, requeueAfterMs: SOURCE_TREE_RETRY_MS };
  }
  const sourceTrees = await readSourceTrees(deps, ns, [...functions.values()], sources);
  if (!sourceTrees.ok) {
    run.log.debug({ source: sourceTrees.missing }, "waiting for the artifact to be readable");
    return { next: false, requeueAfterMs: SOURCE_TREE_RETRY_MS };
  }
  // An overlay's segment table comes from the Nodes the chain selects.
  const nodes = usesOverlay(functions.values()) ? await deps.store.list("Node") : undefined;
  const result = resolvePlan({ chain, functions, sources, sourceTrees: sourceTrees.value, nodes });
  if (!result.ok) {
    const changed = !sameCondition(run.conditions, ConditionType.Ready, result.reason, result.message);
    // A spec to fix stalls; a function or source that is not there yet is waited for (its
    // arrival queues the chain again).
    setConditions(
      run,
      deps,
      failureConditions({
        reason: result.reason,
        message: result.message,
        retry: result.stalled ? "stall" : "wait",
      }),
    );
    if (changed) deps.event(run.chain, "Warning", result.reason, result.message);
    return { next: false };
  }
  run.plan = result.plan;
  run.log = run.log.child({ revision: result.plan.revision });
  return CONTINUE;
}

/**
 * The digests of the source trees of the chain's `path` functions, by `sourceTreeKey`; a source
 * whose artifact cannot be read is `missing`.
 */
async function readSourceTrees(
  deps: ServiceChainDeps,
  ns: string,
  functions: readonly (NetworkFunction | { invalid: string })[],
  sources: ReadonlyMap<string, GitSource>,
): Promise<{ ok: true; value?: Map<string, string> } | { ok: false; missing: string }> {
  if (!deps.sourceTree) return { ok: true };
  const trees = new Map<string, string>();
  for (const nf of functions) {
    if ("invalid" in nf || !("sourceRef" in nf.spec.source)) continue;
    const { sourceRef, path } = nf.spec.source;
    const digest = sources.get(sourceRef.name)?.status.artifact?.digest;
    if (!digest) continue; // planning reports the missing artifact
    const key = sourceTreeKey(digest, path);
    if (trees.has(key)) continue;
    const tree = await deps.sourceTree(ns, sourceRef.name, digest, sourceDirOf(path));
    if (tree === undefined) return { ok: false, missing: `${ns}/${sourceRef.name}` };
    trees.set(key, tree);
  }
  return { ok: true, value: trees };
}

/**
 * The first GitSource ("namespace/name") that the chain or its functions were applied from, or
 * that their C files come from, and that is applying a revision now; undefined when none is.
 */
function applyingSource(
  run: Run,
  deps: ServiceChainDeps,
  functions: readonly (NetworkFunction | { invalid: string })[],
  sources: ReadonlyMap<string, GitSource>,
): string | undefined {
  if (!deps.sourceApplying) return undefined;
  const { chain } = run;
  const ns = chain.metadata.namespace ?? "default";
  const candidates = new Set<string>();
  // SOURCE_LABEL is "<namespace>.<name>"; namespaces have no '.', so the first dot splits them.
  const fromLabel = (labels: Record<string, string> | undefined) => {
    const value = labels?.[SOURCE_LABEL];
    const dot = value?.indexOf(".") ?? -1;
    if (value && dot > 0) candidates.add(`${value.slice(0, dot)}/${value.slice(dot + 1)}`);
  };
  fromLabel(chain.metadata.labels);
  for (const nf of functions) if (!("invalid" in nf)) fromLabel(nf.metadata.labels);
  for (const name of sources.keys()) candidates.add(`${ns}/${name}`);
  const chainKey = `${ns}/${chain.metadata.name}`;
  for (const key of candidates) {
    const slash = key.indexOf("/");
    if (deps.sourceApplying(key.slice(0, slash), key.slice(slash + 1), chainKey)) return key;
  }
  for (const [name, gs] of sources) {
    const written = deps.artifactWritten?.(ns, name);
    if (written !== undefined && gs.status.artifact?.digest !== written) return `${ns}/${name}`;
  }
  return undefined;
}

/** Picks the nodes the chain runs on. */
async function reconcileNodes(run: Run, deps: ServiceChainDeps): Promise<StepResult> {
  const nodes: NodeInfo[] = (await deps.store.list("Node")).map((n) => ({
    name: n.metadata.name,
    labels: n.metadata.labels ?? {},
    deleting: n.metadata.deletionTimestamp !== undefined,
  }));
  run.selected = selectNodes(run.chain.spec.nodeSelector, nodes);
  return CONTINUE;
}

/** Moves nodes towards the plan (or back to the last good one) and sums up where they are. */
async function reconcileRollout(run: Run, deps: ServiceChainDeps): Promise<StepResult> {
  const { chain, previous } = run;
  const ns = chain.metadata.namespace ?? "default";
  const now = deps.now();

  // This chain's NodeChains by node; a second one for the same node is a leftover.
  const byNode = new Map<string, NodeChain>();
  const leftovers: NodeChain[] = [];
  for (const nc of await deps.store.list("NodeChain", ns, { [CHAIN_LABEL]: chain.metadata.name })) {
    if (byNode.has(nc.spec.nodeName)) leftovers.push(nc);
    else byNode.set(nc.spec.nodeName, nc);
  }
  const states = new Map<string, NodeChainState>();
  for (const [node, nc] of byNode) {
    states.set(node, { revision: nc.spec.revision, generation: nc.metadata.generation, status: nc.status });
  }

  // A plan of this revision already written keeps its artifact references: the revision says
  // the files the nodes use are the same, so a newer artifact is no reason to write a NodeChain.
  let plan = stablePlan(run.plan!, previous.lastGoodPlan, byNode.values());
  // Its artifacts gone (a new operator without the old files): nodes on this revision get the
  // current artifact, the same content at an address that works.
  const refresh = plan !== run.plan && !(await artifactsAvailable(plan, deps));
  if (refresh) plan = run.plan!;
  run.plan = plan;

  const progressing = findReason(previous.conditions, ConditionType.Progressing);
  const sameRevision = previous.revision === plan.revision;
  const decision = decideRollout({
    target: plan,
    lastGood: previous.lastGoodPlan,
    previous: {
      revision: previous.revision,
      ready: sameRevision ? previous.nodes?.ready : undefined,
      gated: sameRevision && (progressing === Reason.RolloutPaused || progressing === Reason.CanaryPaused),
      lastProgressTime: previous.lastProgressTime ? new Date(previous.lastProgressTime) : undefined,
      failedRevision: previous.failedRevision,
      failedNodes: previous.failedNodes,
    },
    selected: run.selected!,
    nodeChains: states,
    strategy: chain.spec.rollout,
    promoted: chain.metadata.annotations?.[PROMOTE_ANNOTATION] === plan.revision,
    now,
    maxWrites: deps.maxWritesPerPass ?? MAX_WRITES_PER_PASS,
  });

  const writes: Array<() => Promise<unknown>> = [];
  for (const nc of leftovers) writes.push(() => deps.store.delete("NodeChain", ns, nc.metadata.name));
  for (const node of decision.removed)
    writes.push(() => deps.store.delete("NodeChain", ns, byNode.get(node)!.metadata.name));
  for (const node of run.selected!) {
    const existing = byNode.get(node);
    const next =
      decision.writes.get(node) ?? (refresh && existing?.spec.revision === plan.revision ? plan : undefined);
    const desired = nodeChainObject(chain, node, existing?.metadata.name, next ?? existing?.spec);
    if (desired && (!existing || differs(existing, desired))) writes.push(() => deps.store.apply(desired));
  }
  await runLimited(writes, WRITE_CONCURRENCY);

  recordDecision(run, deps, decision);
  // The last step: it ends the reconcile, asking to be run again when the rollout waits on time.
  return { next: false, requeueAfterMs: decision.requeueAfterMs };
}

/**
 * The plan to roll out: `planned`, or the plan of the same revision already on record (the last
 * good plan, or a NodeChain's). Equal revisions mean equal node-relevant content; only artifact
 * URLs and digests can differ, and the written ones stay served while a NodeChain or the last
 * good plan names them (the operator pins them: see `ArtifactReferences`). So the artifact a
 * NodeChain names moves only when its revision does.
 */
export function stablePlan(
  planned: ChainPlan,
  lastGood: ChainPlan | undefined,
  nodeChains: Iterable<NodeChain>,
): ChainPlan {
  if (lastGood?.revision === planned.revision) return lastGood;
  for (const nc of nodeChains) {
    if (nc.spec.revision !== planned.revision) continue;
    const { nodeName: _node, chain: _chain, ...plan } = nc.spec;
    return plan;
  }
  return planned;
}

async function artifactsAvailable(plan: ChainPlan, deps: ServiceChainDeps): Promise<boolean> {
  if (!deps.artifactAvailable) return true;
  for (const fn of plan.functions) {
    if (!("artifact" in fn.source)) continue;
    const { url, digest } = fn.source.artifact;
    if (!(await deps.artifactAvailable(url, digest))) return false;
  }
  return true;
}

/** Puts the decision into status, conditions and events. */
function recordDecision(run: Run, deps: ServiceChainDeps, d: RolloutDecision): void {
  const { previous } = run;
  const plan = run.plan!;
  const R = plan.revision;
  const G = d.lastGood?.revision;
  run.status = {
    ...run.status,
    revision: R,
    ...(d.lastGood && { lastGoodRevision: G, lastGoodPlan: d.lastGood }),
    nodes: { ...d.counts, summary: nodesSummary(d.counts) },
    revisions: d.revisions,
    failedNodes: d.failedNodes,
    failedRevision: d.failedRevision,
    lastProgressTime: formatTime(d.lastProgressTime),
  };

  run.rollingOut = d.phase === "RollingOut";
  const event = (type: "Normal" | "Warning", reason: string, message: string) =>
    deps.event(run.chain, type, reason, message);
  // The first few failures by name, and how many more there are (nodes.failed counts them all).
  const more = d.counts.failed - d.failedNodes.length;
  const andMore = more > 0 ? `; and ${more} more failed node${more === 1 ? "" : "s"}` : "";
  if (previous.revision !== R)
    event(
      "Normal",
      "RevisionPlanned",
      `planned revision ${R}${previous.revision ? ` (was ${previous.revision})` : ""}`,
    );
  if (d.removed.length > 0)
    event("Normal", "NodesRemoved", `removed the chain from ${list(d.removed)}: no longer selected`);
  if (d.moved.length > 0) event("Normal", Reason.RollingOut, `moving ${list(d.moved)} to revision ${R}`);

  const ready = `${d.counts.ready}/${d.counts.desired} nodes Ready on revision ${R}`;
  switch (d.phase) {
    case "NoNodes": {
      const message = "nodeSelector matches no node";
      setConditions(run, deps, {
        ready: ["False", Reason.NoNodesSelected, message],
        progressing: ["False", Reason.NoNodesSelected, message],
        degraded: ["False", Reason.NoNodesSelected, message],
      });
      break;
    }
    case "Complete": {
      const message = `revision ${R} is Ready on ${d.counts.ready}/${d.counts.desired} nodes`;
      setConditions(run, deps, {
        ready: ["True", Reason.RolloutComplete, message],
        progressing: ["False", Reason.RolloutComplete, message],
        degraded: ["False", Reason.RolloutComplete, message],
      });
      if (previous.lastGoodRevision !== R) event("Normal", Reason.RolloutComplete, message);
      break;
    }
    case "Halted": {
      const cause =
        d.haltReason === Reason.ProgressDeadlineExceeded
          ? `rollout of revision ${R} made no progress within ${run.chain.spec.rollout.progressDeadlineSeconds}s (${list(d.failedNodes.map((f) => f.node))} not Ready)`
          : d.failedNodes
              .map((f) => `node ${f.node} failed revision ${R}: ${f.reason}: ${brief(f.message)}`)
              .join("; ") + andMore;
      const outcome = d.rollingBack
        ? `; nodes returned to revision ${G}`
        : G
          ? `; rollout halted, no further node is moved`
          : `; rollout halted, there is no earlier good revision to return to`;
      const reason = d.rollingBack ? Reason.RolledBack : d.haltReason!;
      const message = `${cause}${outcome}`;
      setConditions(run, deps, {
        ready: ["False", reason, message],
        progressing: ["False", reason, message],
        degraded: ["True", reason, message],
        stalled: [reason, message],
      });
      if (d.newlyHalted) event("Warning", d.haltReason!, cause);
      if (d.rolledBack.length > 0)
        event("Warning", Reason.RolledBack, `returned ${list(d.rolledBack)} to revision ${G}`);
      break;
    }
    case "Paused": {
      const message = `rollout of revision ${R} is paused: ${ready}`;
      setConditions(run, deps, {
        ready: ["False", Reason.RolloutPaused, message],
        progressing: ["False", Reason.RolloutPaused, message],
        degraded: ["False", Reason.RolloutPaused, message],
        reconciling: [Reason.RolloutPaused, message],
      });
      break;
    }
    case "CanaryPaused": {
      const rest = d.counts.desired - d.onTarget.length;
      const message = `canary ${list(d.onTarget)} runs revision ${R}; set annotation ${PROMOTE_ANNOTATION}=${R} to roll out to the other ${rest} node${rest === 1 ? "" : "s"}`;
      setConditions(run, deps, {
        ready: ["False", Reason.CanaryPaused, message],
        progressing: ["False", Reason.CanaryPaused, message],
        degraded: ["False", Reason.CanaryPaused, message],
        reconciling: [Reason.CanaryPaused, message],
      });
      if (findReason(previous.conditions, ConditionType.Progressing) !== Reason.CanaryPaused)
        event("Normal", Reason.CanaryPaused, message);
      break;
    }
    case "RollingOut": {
      const waiting = d.inTransition.length > 0 ? `; in transition: ${list(d.inTransition)}` : "";
      const message = `rolling out: ${ready}${waiting}`;
      if (d.failedNodes.length > 0) {
        // Nodes failing a revision that ran everywhere before: those nodes need attention.
        const failures =
          d.failedNodes.map((f) => `node ${f.node}: ${f.reason}: ${brief(f.message)}`).join("; ") + andMore;
        setConditions(run, deps, {
          ready: ["False", Reason.NodesFailed, failures],
          progressing: ["True", Reason.RollingOut, message],
          degraded: ["True", Reason.NodesFailed, failures],
          reconciling: [Reason.RollingOut, message],
        });
        if (!sameCondition(previous.conditions, ConditionType.Degraded, Reason.NodesFailed, failures))
          event("Warning", Reason.NodesFailed, failures);
      } else {
        setConditions(run, deps, {
          ready: ["False", Reason.RollingOut, message],
          progressing: ["True", Reason.RollingOut, message],
          degraded: ["False", Reason.RollingOut, message],
          reconciling: [Reason.RollingOut, message],
        });
      }
      break;
    }
  }
  run.log.debug(
    { phase: d.phase, moved: d.moved, rolledBack: d.rolledBack, counts: d.counts },
    "rollout step",
  );
}

/** Sets the conditions of this reconcile for the current generation (see {@link applyConditions}). */
function setConditions(run: Run, deps: ServiceChainDeps, set: ConditionSet): void {
  run.conditions = applyConditions(run.conditions, set, run.chain.metadata.generation, deps.now());
}

function findReason(list: readonly Condition[] | undefined, type: string): string | undefined {
  return list?.find((c) => c.type === type)?.reason;
}

function sameCondition(
  list: readonly Condition[] | undefined,
  type: string,
  reason: string,
  message: string,
): boolean {
  const c = list?.find((x) => x.type === type);
  return c?.reason === reason && c.message === message;
}

/**
 * A failed node's message as a condition repeats it: its first line, at most 200 characters
 * (status.failedNodes has more, the node's NodeChain all of it).
 */
function brief(message: string | undefined): string {
  const line = (message ?? "").split("\n")[0]!;
  return line.length > 200 ? `${line.slice(0, 199)}…` : line;
}

/** "a, b, c" (at most 5 names, then "and N more"). */
function list(names: readonly string[]): string {
  const shown = names.slice(0, 5).join(", ");
  return names.length > 5 ? `${shown} and ${names.length - 5} more` : shown;
}

/**
 * The NodeChain of `chain` on `node` with the given spec (a plan, or the spec it already has),
 * labelled with chain and node and owned by the ServiceChain. An existing NodeChain keeps its name.
 */
function nodeChainObject(
  chain: ServiceChain,
  node: string,
  existingName: string | undefined,
  spec: ChainPlan | NodeChainSpec | undefined,
): StoreInput<"NodeChain"> | undefined {
  if (!spec) return undefined;
  const chainName = chain.metadata.name;
  const uid = chain.metadata.uid;
  return {
    apiVersion: API_VERSION,
    kind: "NodeChain",
    metadata: {
      name: existingName ?? nodeChainName(chainName, node),
      namespace: chain.metadata.namespace,
      labels: { [CHAIN_LABEL]: chainName, [NODE_LABEL]: nodeLabelValue(node) },
      ...(uid && {
        ownerReferences: [
          {
            apiVersion: API_VERSION,
            kind: "ServiceChain",
            name: chainName,
            uid,
            controller: true,
            blockOwnerDeletion: true,
          },
        ],
      }),
    },
    spec: { ...spec, nodeName: node, chain: chainName },
  };
}

/** Whether applying `desired` would change `existing`: its spec, our labels, or its owner. */
function differs(existing: NodeChain, desired: StoreInput<"NodeChain">): boolean {
  if (!sameJson(existing.spec, desired.spec)) return true;
  for (const [k, v] of Object.entries(desired.metadata.labels ?? {}))
    if (existing.metadata.labels?.[k] !== v) return true;
  const owner = desired.metadata.ownerReferences?.[0];
  return (
    owner !== undefined &&
    !existing.metadata.ownerReferences?.some((o) => o.uid === owner.uid && o.controller)
  );
}

/**
 * Writes the status when it changed; a field the new status leaves out is removed. While the
 * rollout is under way, a change of counts alone is written at most once per the coalescer's
 * interval: then the milliseconds until it may go are returned (reconcile again by then).
 */
async function writeStatus(run: Run, deps: ServiceChainDeps): Promise<number | undefined> {
  const { metadata } = run.chain;
  const status: ServiceChainStatus = {
    ...run.status,
    conditions: run.conditions,
    observedGeneration: metadata.generation ?? run.status.observedGeneration,
  };
  if (canonicalJson(status) === canonicalJson(run.chain.status)) return undefined;
  const key = `${metadata.namespace ?? "default"}/${metadata.name}`;
  const urgent =
    !run.rollingOut || canonicalJson(verdict(status)) !== canonicalJson(verdict(run.chain.status));
  const admitted = deps.statusWrites?.admit(key, urgent) ?? { write: true };
  if (!admitted.write) {
    run.log.debug({ retryInMs: admitted.retryInMs }, "status write held back");
    return admitted.retryInMs;
  }
  await deps.store.patchStatus(
    "ServiceChain",
    metadata.namespace,
    metadata.name,
    statusPatch<"ServiceChain">(run.chain.status, status),
  );
  deps.statusWrites?.wrote(key);
  return undefined;
}

/**
 * What in a status is a verdict rather than progress: a change here is written at once, also in
 * the middle of a rollout (events are derived from it, and a reader waits for it).
 */
function verdict(status: ServiceChainStatus): unknown {
  return {
    observedGeneration: status.observedGeneration,
    revision: status.revision,
    lastGoodRevision: status.lastGoodRevision,
    failedRevision: status.failedRevision ?? "",
    failedNodes: (status.failedNodes ?? []).map((f) => [f.node, f.reason]),
    conditions: (status.conditions ?? []).map((c) => [
      c.type,
      c.status,
      c.reason,
      // Which nodes fail and why (a message that names them), not how far the rollout is.
      c.type === ConditionType.Degraded && c.status === "True" ? c.message : "",
    ]),
  };
}

/** Runs `tasks` with at most `limit` in flight; fails with the first error once all settled. */
async function runLimited(tasks: ReadonlyArray<() => Promise<unknown>>, limit: number): Promise<void> {
  let next = 0;
  let failure: { err: unknown } | undefined;
  const worker = async () => {
    while (next < tasks.length) {
      const task = tasks[next++]!;
      try {
        await task();
      } catch (err) {
        failure ??= { err };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, tasks.length) }, worker));
  if (failure) throw failure.err;
}

/**
 * Keys ("namespace/name") of the ServiceChains to reconcile when `event` happened: the chain
 * itself; the owner of a NodeChain; the chains using a NetworkFunction; the chains using a
 * NetworkFunction whose source is a GitSource; for a Node, every chain whose selector matches
 * it now or that has a NodeChain on it.
 */
export async function serviceChainKeysFor(event: StoreEvent, store: Store): Promise<string[]> {
  const obj = event.object;
  const ns = obj.metadata.namespace ?? "default";
  const keys = new Set<string>();
  const key = (namespace: string | undefined, name: string) => keys.add(`${namespace ?? "default"}/${name}`);
  switch (obj.kind) {
    case "ServiceChain":
      key(ns, obj.metadata.name);
      break;
    case "NodeChain": {
      const chain = obj.metadata.labels?.[CHAIN_LABEL] ?? obj.spec.chain;
      if (chain) key(ns, chain);
      break;
    }
    case "NetworkFunction":
      for (const sc of await chainsUsing(store, ns, new Set([obj.metadata.name]))) key(ns, sc);
      break;
    case "GitSource": {
      const functions = new Set<string>();
      for (const nf of await store.list("NetworkFunction", ns)) {
        const src = nf.spec.source;
        if ("sourceRef" in src && src.sourceRef.name === obj.metadata.name) functions.add(nf.metadata.name);
      }
      if (functions.size > 0) for (const sc of await chainsUsing(store, ns, functions)) key(ns, sc);
      break;
    }
    case "Node": {
      const labels = obj.metadata.labels ?? {};
      for (const sc of await store.list("ServiceChain")) {
        if (
          event.type === "changed" &&
          selectNodes(sc.spec.nodeSelector, [{ name: obj.metadata.name, labels }]).length > 0
        ) {
          key(sc.metadata.namespace, sc.metadata.name);
        }
      }
      for (const nc of await store.list("NodeChain", undefined, {
        [NODE_LABEL]: nodeLabelValue(obj.metadata.name),
      })) {
        const chain = nc.metadata.labels?.[CHAIN_LABEL];
        if (chain) key(nc.metadata.namespace, chain);
      }
      break;
    }
  }
  return [...keys];
}

async function chainsUsing(
  store: Store,
  namespace: string,
  functions: ReadonlySet<string>,
): Promise<string[]> {
  const out: string[] = [];
  for (const sc of await store.list("ServiceChain", namespace)) {
    if (sc.spec.functions.some((f) => functions.has(f.name))) out.push(sc.metadata.name);
  }
  return out;
}
