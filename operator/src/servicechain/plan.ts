import { createHash } from "node:crypto";
import { checkBuiltinConfig } from "../../../common/api/builtins/index.ts";
import {
  chainFunctionName,
  matchesLabelSelector,
  Reason,
  type ChainPlan,
  type GitSource,
  type LabelSelector,
  type NetworkFunction,
  type ResolvedFunction,
  type ResolvedSource,
  type ServiceChain,
} from "../../../common/api/index.ts";
import type { KubeNode } from "../../../common/store.ts";
import { addClusterSegments } from "./overlay.ts";
import { sourceTreeKey } from "./source-tree.ts";

/**
 * Planning: a ServiceChain plus the objects it refers to (NetworkFunctions, GitSource artifacts)
 * become one node-independent {@link ChainPlan} whose revision is a hash of its content. Pure
 * functions over plain data: the reconciler fetches the objects, this file decides.
 */

/** Hex digits of a plan revision: short enough for `kubectl get`, long enough to never collide in practice. */
export const REVISION_LENGTH = 16;

/** Why a chain cannot be planned; the reason becomes the Ready condition's reason. */
export type PlanFailureReason =
  | typeof Reason.FunctionNotFound
  | typeof Reason.SourceNotReady
  | typeof Reason.HookNotSupported
  | typeof Reason.BuiltinNotFound
  | typeof Reason.InvalidSpec;

/** One reason a chain cannot be planned, about one entry of `spec.functions`. */
export interface PlanProblem {
  reason: PlanFailureReason;
  message: string;
  /** Field of the ServiceChain the problem is about: `spec.functions[2].name`. */
  path: string;
}

/**
 * Outcome of {@link resolvePlan}. `problems` lists every problem in chain order; `reason` is the
 * first one's and `message` all of them in one line (for the Ready condition). `stalled`
 * failures need a spec change; the others wait for an object to appear.
 */
export type PlanResult =
  | { ok: true; plan: ChainPlan }
  | { ok: false; reason: PlanFailureReason; message: string; stalled: boolean; problems: PlanProblem[] };

/** What a plan is made from, keyed by object name (all in the chain's namespace). */
export interface PlanInputs {
  chain: ServiceChain;
  /** NetworkFunctions by name; a name that does not parse maps to its issues as text. */
  functions: ReadonlyMap<string, NetworkFunction | { invalid: string }>;
  /** GitSources by name. */
  sources: ReadonlyMap<string, GitSource>;
  /**
   * An artifact that stands for every GitSource: when a directory is checked outside a cluster
   * (`sluice validate <dir>`), `path` sources are files of that directory, whatever source they name.
   */
  localArtifact?: { url: string; digest: string };
  /**
   * Digests of the source trees `path` functions use, by {@link sourceTreeKey} (artifact digest
   * and the entry's directory). The revision hashes these instead of the artifact digest, so that
   * a commit that changes no file a function uses keeps the revision. A tree not in the map
   * counts as the whole artifact (its digest).
   */
  sourceTrees?: ReadonlyMap<string, string>;
  /**
   * The cluster's Nodes, when the chain has an `overlay`: the segments of those it selects go
   * into the overlay's table (see `./overlay.ts`).
   */
  nodes?: readonly KubeNode[];
}

type Problem = Omit<PlanProblem, "path">;

/** Reasons only an edit of a spec can clear (the others may pass when an object arrives). */
const STALLING: ReadonlySet<PlanFailureReason> = new Set([
  Reason.HookNotSupported,
  Reason.BuiltinNotFound,
  Reason.InvalidSpec,
]);

/**
 * Resolves every function of the chain. All problems are reported at once (a user fixing a chain
 * wants the whole list); the reason is that of the first, in chain order.
 */
export function resolvePlan({
  chain,
  functions,
  sources,
  localArtifact,
  sourceTrees,
  nodes,
}: PlanInputs): PlanResult {
  const hook = chain.spec.attachment.hook;
  const problems: PlanProblem[] = [];
  const resolved: ResolvedFunction[] = [];
  for (const [index, ref] of chain.spec.functions.entries()) {
    const path = `spec.functions[${index}].name`;
    const nf = functions.get(ref.name);
    if (!nf) {
      problems.push({
        reason: Reason.FunctionNotFound,
        message: `NetworkFunction ${ref.name} not found`,
        path,
      });
      continue;
    }
    if ("invalid" in nf) {
      problems.push({
        reason: Reason.InvalidSpec,
        message: `NetworkFunction ${ref.name} is invalid: ${nf.invalid}`,
        path,
      });
      continue;
    }
    if (!nf.spec.hooks.includes(hook)) {
      problems.push({
        reason: Reason.HookNotSupported,
        message: `NetworkFunction ${ref.name} supports ${nf.spec.hooks.join(", ")}, not the chain's hook ${hook}`,
        path,
      });
      continue;
    }
    const source = resolveSource(nf, sources, localArtifact);
    if ("reason" in source) {
      problems.push({ ...source, path });
      continue;
    }
    const { parameters, tables, tests } = nf.spec;
    resolved.push({
      name: chainFunctionName(ref),
      networkFunction: ref.name,
      source,
      ...(parameters !== undefined && { parameters }),
      ...(tables !== undefined && { tables }),
      ...(tests !== undefined && { tests }),
    });
  }
  // Positions match spec.functions only when every function resolved; else the others are reported first.
  if (problems.length === 0) problems.push(...addClusterSegments(resolved, nodes, chain.spec.nodeSelector));
  const first = problems[0];
  if (first) {
    return {
      ok: false,
      reason: first.reason,
      message: problems.map((p) => p.message).join("; "),
      // A hook mismatch, an unknown built-in or an invalid function needs someone to edit a
      // spec; a missing function or source may simply not have arrived yet.
      stalled: problems.some((p) => STALLING.has(p.reason)),
      problems,
    };
  }
  // `tests` is always present (possibly empty) so that a plan never loses a field between two
  // writes: a JSON merge patch of the status would otherwise keep the old one.
  const body = {
    interfaces: chain.spec.attachment.interfaces,
    hook,
    functions: resolved,
    tests: chain.spec.tests ?? [],
    mode: chain.spec.mode ?? "auto",
  };
  return { ok: true, plan: { revision: planRevision(body, sourceTrees), ...body } };
}

function resolveSource(
  nf: NetworkFunction,
  sources: PlanInputs["sources"],
  localArtifact: PlanInputs["localArtifact"],
): ResolvedSource | Problem {
  const src = nf.spec.source;
  if ("builtin" in src) {
    // A NetworkFunction applied with kubectl skipped the revision check: the same schemas here.
    const { parameters, tables } = nf.spec;
    const checked = checkBuiltinConfig(src.builtin, { parameters, tables });
    if (!checked.ok) {
      const { reason, message } = checked.error;
      return { reason, message: `NetworkFunction ${nf.metadata.name}: ${message}` };
    }
    return { builtin: src.builtin };
  }
  if ("inline" in src) return { inline: src.inline };
  if (localArtifact)
    return { artifact: { url: localArtifact.url, digest: localArtifact.digest, path: src.path } };
  const name = nf.metadata.name;
  const gitSource = sources.get(src.sourceRef.name);
  if (!gitSource) {
    return {
      reason: Reason.SourceNotReady,
      message: `GitSource ${src.sourceRef.name} of NetworkFunction ${name} not found`,
    };
  }
  const artifact = gitSource.status.artifact;
  if (!artifact) {
    return {
      reason: Reason.SourceNotReady,
      message: `GitSource ${src.sourceRef.name} of NetworkFunction ${name} has no artifact yet`,
    };
  }
  return { artifact: { url: artifact.url, digest: artifact.digest, path: src.path } };
}

/**
 * The revision of a plan body: the first {@link REVISION_LENGTH} hex digits of the sha256 of its
 * canonical JSON, where an artifact source counts as its entry path and the digest of the tree
 * the agent compiles it from (`sourceTreeDigest`), not as the artifact: a commit that
 * changes only files no function uses (a README, another function's directory, the rollout
 * settings) keeps the revision, and no node is rolled. Artifact URLs are left out too: the
 * address the operator serves from (which moves with a restart or a new Service) is not a change.
 * Without `sourceTrees` an artifact source counts as the artifact's digest.
 */
export function planRevision(
  body: Omit<ChainPlan, "revision">,
  sourceTrees?: ReadonlyMap<string, string>,
): string {
  const content = {
    ...body,
    // auto, the default, hashes as a plan without a mode did, so that no revision moves for it.
    mode: body.mode === "auto" ? undefined : body.mode,
    functions: body.functions.map((f) => {
      if (!("artifact" in f.source)) return f;
      const { digest, path } = f.source.artifact;
      const tree = sourceTrees?.get(sourceTreeKey(digest, path)) ?? digest;
      return { ...f, source: { artifact: { path, tree } } };
    }),
  };
  return createHash("sha256").update(canonicalJson(content)).digest("hex").slice(0, REVISION_LENGTH);
}

/**
 * JSON with object keys sorted at every level and undefined members dropped, so that equal
 * content always gives equal text (the apiserver does not keep key order).
 */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(sortKeys(value));
}

/**
 * Whether `a` and `b` give the same {@link canonicalJson}, found without building either text:
 * a rollout pass compares each selected node's NodeChain with the spec it should have, and two
 * key-sorted copies and their JSON per node and pass were a quarter of everything a 300-node
 * rollout allocated (bench/README.md). For JSON data (what the schemas parse); where the text
 * would be equal for other reasons (NaN and null, undefined and null inside an array) it may
 * answer false, which costs a write, never a missed one.
 */
export function sameJson(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== "object" || typeof b !== "object" || a === null || b === null) return false;
  if (Array.isArray(a)) {
    if (!Array.isArray(b) || a.length !== b.length) return false;
    for (let i = 0; i < a.length; i++) if (!sameJson(a[i], b[i])) return false;
    return true;
  }
  if (Array.isArray(b)) return false;
  const x = a as Record<string, unknown>;
  const y = b as Record<string, unknown>;
  let defined = 0;
  for (const key in x) {
    if (!Object.hasOwn(x, key) || x[key] === undefined) continue;
    defined++;
    if (!Object.hasOwn(y, key) || !sameJson(x[key], y[key])) return false;
  }
  for (const key in y) if (Object.hasOwn(y, key) && y[key] !== undefined) defined--;
  return defined === 0;
}

function sortKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (value !== null && typeof value === "object") {
    const out: Record<string, unknown> = {};
    for (const key of Object.keys(value).sort()) {
      const v = (value as Record<string, unknown>)[key];
      if (v !== undefined) out[key] = sortKeys(v);
    }
    return out;
  }
  return value;
}

/** Longest Kubernetes object name (DNS-1123 subdomain). */
const MAX_NAME = 253;
/** Longest label value. */
const MAX_LABEL_VALUE = 63;
const HASH_LENGTH = 10;

function shortHash(text: string): string {
  return createHash("sha256").update(text).digest("hex").slice(0, HASH_LENGTH);
}

/** `text` cut to `max` characters, then trimmed back to end on a letter or digit. */
function cut(text: string, max: number): string {
  return text.slice(0, max).replace(/[^A-Za-z0-9]+$/, "");
}

/**
 * Name of the NodeChain of `chain` on `node`: `<chain>.<node>`. A chain name has no '.', so the
 * first dot splits the two and no pair of names can collide. When that is too long for an object
 * name, the node part is cut short and a hash of the full node name follows as its own label.
 */
export function nodeChainName(chain: string, node: string): string {
  const full = `${chain}.${node}`;
  if (full.length <= MAX_NAME) return full;
  const room = MAX_NAME - chain.length - 2 - HASH_LENGTH;
  return `${chain}.${cut(node, room)}.${shortHash(node)}`;
}

/**
 * The value of the node label on a NodeChain. Node names may be longer than a label value
 * allows; those get a shortened form with a hash (agents select by `spec.nodeName` anyway).
 */
export function nodeLabelValue(node: string): string {
  if (node.length <= MAX_LABEL_VALUE) return node;
  return `${cut(node, MAX_LABEL_VALUE - HASH_LENGTH - 1)}-${shortHash(node)}`;
}

/** A node as planning sees it: its name, labels, and whether it is going away. */
export interface NodeInfo {
  name: string;
  labels: Record<string, string>;
  deleting?: boolean;
}

/** Names of the nodes `selector` picks (all when it is absent), sorted; nodes being deleted are left out. */
export function selectNodes(selector: LabelSelector | undefined, nodes: readonly NodeInfo[]): string[] {
  return nodes
    .filter((n) => !n.deleting && matchesLabelSelector(selector, n.labels))
    .map((n) => n.name)
    .sort();
}
