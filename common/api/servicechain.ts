import { z } from "zod";
import { Conditions } from "./conditions.ts";
import {
  API_VERSION,
  Dns1123Label,
  Hook,
  kube,
  LabelSelector,
  nameIsLabelRule,
  objectMeta,
  ObservedGeneration,
  RelativePath,
  Sha256Digest,
  stringSet,
  Timestamp,
} from "./meta.ts";
import { BuiltinName, MAX_INLINE_SOURCE, Parameters, Tables, TestVectors } from "./networkfunction.ts";

/**
 * ServiceChain: an ordered chain of NetworkFunctions attached to interfaces on the selected
 * nodes, with the rollout strategy the operator follows when the chain changes.
 */

/**
 * Most functions in one chain. The kernel follows at most 33 tail calls per packet; the root
 * program's call into slot 0 and 31 calls between 32 functions stay within it, with one to spare.
 */
export const MAX_CHAIN_LENGTH = 32;

/** One function in the chain. */
export const ChainFunction = z.strictObject({
  name: Dns1123Label.describe("Name of a NetworkFunction in the same namespace."),
  alias: Dns1123Label.optional().describe(
    "Name of this position in the chain, for counters, test vectors and status; defaults to name. Needed to use one NetworkFunction twice.",
  ),
});
export type ChainFunction = z.infer<typeof ChainFunction>;

/** The name a function goes by inside its chain: its alias, or the NetworkFunction's name. */
export function chainFunctionName(f: ChainFunction): string {
  return f.alias ?? f.name;
}

/** A network interface name (at most 15 characters) or a glob pattern over names (`*`, `?`, `[...]`). */
export const InterfacePattern = z
  .string()
  .min(1)
  .max(64)
  .regex(/^[^/:\s]+$/, "must be an interface name or glob pattern without '/', ':' or spaces")
  .refine((p) => /[*?[]/.test(p) || p.length <= 15, "an interface name has at most 15 characters")
  .register(kube, {
    validations: [
      {
        rule: "self.matches('[*?\\\\[]') || size(self) <= 15",
        message: "an interface name has at most 15 characters",
      },
    ],
  });

/** Where the chain runs on each node. */
export const Attachment = z.strictObject({
  interfaces: stringSet(InterfacePattern, "interface")
    .min(1, "must list at least one interface")
    .max(64)
    .describe("Interface names or glob patterns (e.g. eth0, veth*); matched by the agent on each node."),
  hook: Hook.describe("Hook the chain is attached to: xdp, tc-ingress or tc-egress."),
});
export type Attachment = z.infer<typeof Attachment>;

/** A positive node count, or a percentage of the selected nodes (rounded down, at least 1). */
const intOrPercentMessage = "must be a whole number of nodes (at least 1) or a percentage from 1% to 100%";
export const IntOrPercent = z
  .union(
    [
      z.number().int().min(1, "must be at least 1"),
      z.string().regex(/^([1-9][0-9]?|100)%$/, intOrPercentMessage),
    ],
    {
      error: intOrPercentMessage,
    },
  )
  .register(kube, {
    validations: [
      {
        rule: "type(self) == int ? self >= 1 : self.matches('^([1-9][0-9]?|100)%$')",
        message: intOrPercentMessage,
      },
    ],
  });
export type IntOrPercent = z.infer<typeof IntOrPercent>;

/** The first step of a rollout: a few nodes get the new revision before the rest. */
export const Canary = z.strictObject({
  nodes: z.number().int().min(1).default(1).describe("How many nodes get the new revision first."),
  pause: z
    .boolean()
    .default(false)
    .describe(
      "Wait after the canary nodes are ready, until the sluice.dev/promote annotation is set to the new revision; otherwise continue after minReadySeconds.",
    ),
});
export type Canary = z.infer<typeof Canary>;

/** How a new revision reaches the nodes. */
export const Rollout = z.strictObject({
  maxUnavailable: IntOrPercent.default(1).describe(
    "Nodes switching at the same time: a count or a percentage of the selected nodes.",
  ),
  canary: Canary.optional().describe("Roll out to a few nodes first, optionally pausing for promotion."),
  paused: z
    .boolean()
    .default(false)
    .describe("Move no further node to the new revision; nodes already moved keep it."),
  minReadySeconds: z
    .number()
    .int()
    .min(0)
    .max(3600)
    .default(0)
    .describe("Seconds a node must stay Ready on the new revision before it counts as updated."),
  progressDeadlineSeconds: z
    .number()
    .int()
    .min(1)
    .max(86_400)
    .default(600)
    .describe("Seconds without progress after which the rollout is reported as failed."),
  autoRollback: z
    .boolean()
    .default(true)
    .describe("Return failed nodes to lastGoodRevision when a node fails or the deadline passes."),
});
export type Rollout = z.infer<typeof Rollout>;

/** The chain's functions, in order, with unique names in the chain. */
export const ChainFunctions = z
  .array(ChainFunction)
  .min(1, "a chain needs at least one function")
  .max(
    MAX_CHAIN_LENGTH,
    `a chain has at most ${MAX_CHAIN_LENGTH} functions (the kernel follows at most 33 tail calls per packet)`,
  )
  .superRefine((list, ctx) => {
    const seen = new Set<string>();
    list.forEach((f, i) => {
      const name = chainFunctionName(f);
      if (seen.has(name)) {
        ctx.addIssue({
          code: "custom",
          path: [i, f.alias === undefined ? "name" : "alias"],
          message: `"${name}" is already used in this chain; give one of them an alias`,
        });
      }
      seen.add(name);
    });
  })
  .register(kube, {
    validations: [
      {
        rule: "self.all(f, self.exists_one(g, (has(g.alias) ? g.alias : g.name) == (has(f.alias) ? f.alias : f.name)))",
        message:
          "names in the chain (alias, or name when there is no alias) must be unique; give repeated functions an alias",
      },
    ],
  });

/**
 * How a chain runs on a node: `linked`, one program per function joined by tail calls; `fused`,
 * one program generated from the functions' inline code (one parse, no hop cost); `auto`, fused
 * where that program builds and verifies, else linked with the reason in status.
 */
export const ChainMode = z.enum(["linked", "fused", "auto"]);
export type ChainMode = z.infer<typeof ChainMode>;

/** Desired state of a ServiceChain. */
export const ServiceChainSpec = z.strictObject({
  functions: ChainFunctions.describe(
    "NetworkFunctions in packet order; each passes the packet on to the next.",
  ),
  attachment: Attachment,
  nodeSelector: LabelSelector.optional().describe("Nodes that run the chain; all nodes when omitted."),
  rollout: Rollout.prefault({}).describe("How a new revision reaches the nodes."),
  mode: ChainMode.default("auto").describe(
    "linked: one program per function, joined by tail calls. fused: one program generated from every function's inline process function (one parse of the packet, no per-function hop); a chain that cannot be fused fails. auto: fused where it builds and verifies, else linked, with the reason in the NodeChain's status.",
  ),
  tests: TestVectors.optional().describe(
    "Packets the whole chain must handle as stated, run on each node before every switch.",
  ),
});
export type ServiceChainSpec = z.infer<typeof ServiceChainSpec>;

/*
 * The plan: a ServiceChain with every reference resolved (NetworkFunctions, GitSource artifacts),
 * independent of the node. The operator writes it into each NodeChain, and keeps the plan of the
 * last good revision in the ServiceChain's status so that nodes can return to it after Git moved on.
 */

/** A file inside a GitSource artifact, pinned by digest. */
export const ArtifactFile = z.strictObject({
  url: z.string().min(1).max(2048).describe("HTTP URL of the artifact (tar.gz)."),
  digest: Sha256Digest.describe("sha256 of the artifact; the agent refuses a download that does not match."),
  path: RelativePath.describe("C entry file inside the artifact."),
});
export type ArtifactFile = z.infer<typeof ArtifactFile>;

/** The resolved C source of one function: exactly one of `builtin`, `artifact` or `inline`. */
export const ResolvedSource = z
  .xor(
    [
      z.strictObject({ builtin: BuiltinName.describe("Name of a built-in network function.") }),
      z.strictObject({ artifact: ArtifactFile.describe("Entry file inside a GitSource artifact.") }),
      z.strictObject({ inline: z.string().min(1).max(MAX_INLINE_SOURCE).describe("C source text.") }),
    ],
    { error: "source needs exactly one of builtin, artifact or inline" },
  )
  .describe("Resolved C source: exactly one of builtin, artifact or inline.")
  .register(kube, {
    validations: [
      {
        rule: "[has(self.builtin), has(self.artifact), has(self.inline)].exists_one(x, x)",
        message: "source needs exactly one of builtin, artifact or inline",
      },
    ],
  });
export type ResolvedSource = z.infer<typeof ResolvedSource>;

/** One function of the plan, at its position in the chain. */
export const ResolvedFunction = z.strictObject({
  name: Dns1123Label.describe(
    "Name of this position in the chain (the alias, or the NetworkFunction's name).",
  ),
  networkFunction: Dns1123Label.describe("Name of the NetworkFunction it was resolved from."),
  source: ResolvedSource,
  parameters: Parameters.optional().describe("Compile-time parameters."),
  tables: Tables.optional().describe("Runtime map entries by table name."),
  tests: TestVectors.optional().describe("The function's own test vectors."),
});
export type ResolvedFunction = z.infer<typeof ResolvedFunction>;

/** The resolved chain, the same for every node; its revision is a hash of the other fields. */
export const ChainPlan = z.strictObject({
  revision: z
    .string()
    .min(1)
    .max(128)
    .regex(/^[A-Za-z0-9._:-]+$/, "must be letters, digits, '.', '_', ':' or '-'")
    .describe(
      "Revision of the plan: a hash of what the nodes run (the fields below, a path source counted by the files of its directory, not the whole artifact); the agent reports it once live.",
    ),
  interfaces: stringSet(InterfacePattern, "interface")
    .min(1)
    .max(64)
    .describe("Interface names or glob patterns, matched on the node."),
  hook: Hook.describe("Hook the chain is attached to."),
  functions: z
    .array(ResolvedFunction)
    .min(1)
    .max(MAX_CHAIN_LENGTH)
    .describe("Functions in packet order, fully resolved."),
  tests: TestVectors.optional().describe("The chain's own test vectors."),
  mode: ChainMode.optional().describe("linked, fused or auto (the default when absent)."),
});
export type ChainPlan = z.infer<typeof ChainPlan>;

/** Node counts of the current revision. */
export const NodeCounts = z.object({
  desired: z.number().int().min(0).default(0).describe("Nodes selected by nodeSelector."),
  updated: z.number().int().min(0).default(0).describe("Nodes whose plan is the current revision."),
  ready: z.number().int().min(0).default(0).describe("Nodes that run the current revision and are Ready."),
  failed: z.number().int().min(0).default(0).describe("Nodes that failed the current revision."),
  summary: z.string().max(32).optional().describe("ready/desired, e.g. 3/3, for kubectl get."),
});
export type NodeCounts = z.infer<typeof NodeCounts>;

/** `ready/desired`, the form of {@link NodeCounts.summary}. */
export function nodesSummary(counts: Pick<NodeCounts, "ready" | "desired">): string {
  return `${counts.ready}/${counts.desired}`;
}

/**
 * Most entries the schema accepts in `status.failedNodes` (an upper bound kept for status written
 * by earlier operators); the operator lists {@link FAILED_NODES_SHOWN}.
 */
export const MAX_FAILED_NODES = 32;

/**
 * Failed nodes the operator names in `status.failedNodes` and in conditions: the first few, so
 * that status stays small on a thousand nodes; `nodes.failed` counts them all, and every node's
 * own detail is in its NodeChain.
 */
export const FAILED_NODES_SHOWN = 5;

/** Longest message of a failed node in ServiceChain status; the NodeChain keeps the whole log. */
export const FAILED_NODE_MESSAGE_MAX = 512;

/** Most entries in `status.revisions`. */
export const MAX_REVISION_COUNTS = 8;

/**
 * How many selected nodes ask for one revision, by the phase their agent reports for it
 * (`pending` until the agent reported on the NodeChain's current generation).
 */
export const RevisionCount = z.object({
  revision: z.string().max(128).describe("Revision the nodes' NodeChains ask for."),
  nodes: z.number().int().min(0).describe("Selected nodes whose NodeChain asks for this revision."),
  ready: z.number().int().min(0).default(0).describe("Of these, nodes that report it Ready."),
  failed: z.number().int().min(0).default(0).describe("Of these, nodes that report it Failed."),
  inProgress: z
    .number()
    .int()
    .min(0)
    .default(0)
    .describe("Of these, nodes compiling, loading or testing it."),
  pending: z
    .number()
    .int()
    .min(0)
    .default(0)
    .describe("Of these, nodes whose agent has not reported on it yet."),
  fused: z
    .number()
    .int()
    .min(0)
    .optional()
    .describe(
      "Of the Ready nodes, those that run it fused (one program for the chain); the others run it linked.",
    ),
  linkedReason: z
    .string()
    .max(1024)
    .optional()
    .describe("Why a Ready node runs it linked although the chain's mode is auto (one node's reason)."),
});
export type RevisionCount = z.infer<typeof RevisionCount>;

/** A node that failed the current revision, and why. */
export const FailedNode = z.object({
  node: z.string().min(1).max(253),
  reason: z
    .string()
    .min(1)
    .max(1024)
    .describe("CamelCase reason from the node's NodeChain, e.g. VerifierRejected."),
  message: z.string().max(4096).optional(),
});
export type FailedNode = z.infer<typeof FailedNode>;

/** Observed state of a ServiceChain, written by the operator. */
export const ServiceChainStatus = z.object({
  observedGeneration: ObservedGeneration,
  revision: z
    .string()
    .max(128)
    .optional()
    .describe("Revision of the current plan (a hash of the resolved chain)."),
  lastGoodRevision: z
    .string()
    .max(128)
    .optional()
    .describe("Last revision that was Ready on every selected node."),
  nodes: NodeCounts.optional(),
  revisions: z
    .array(RevisionCount)
    .max(MAX_REVISION_COUNTS)
    .optional()
    .describe(
      "Selected nodes counted by the revision their NodeChain asks for and the phase they report: the current revision first, then the last good one, then others by size. Per-node detail is in the NodeChains.",
    ),
  failedNodes: z
    .array(FailedNode)
    .max(MAX_FAILED_NODES)
    .optional()
    .describe(
      `The first ${FAILED_NODES_SHOWN} nodes that failed the current revision, with reasons; nodes.failed counts them all.`,
    ),
  lastGoodPlan: ChainPlan.optional().describe(
    "Plan of lastGoodRevision, kept so that nodes can return to it when a later revision fails.",
  ),
  failedRevision: z
    .string()
    .max(128)
    .optional()
    .describe(
      "Revision whose rollout was halted (a node failed it or the progress deadline passed); it is not rolled out further until the plan changes. Empty when no rollout is halted.",
    ),
  lastProgressTime: Timestamp.optional().describe(
    "When the rollout last made progress (a node was moved or became Ready); progressDeadlineSeconds counts from here.",
  ),
  conditions: Conditions.optional().describe("Ready, Progressing, Degraded, Reconciling and Stalled."),
});
export type ServiceChainStatus = z.infer<typeof ServiceChainStatus>;

/** A whole ServiceChain object. Its name must be a DNS-1123 label: NodeChains carry it as a label value. */
export const ServiceChain = z
  .strictObject({
    apiVersion: z.literal(API_VERSION),
    kind: z.literal("ServiceChain"),
    metadata: objectMeta(Dns1123Label),
    spec: ServiceChainSpec,
    status: ServiceChainStatus.default({ observedGeneration: -1 }),
  })
  .describe(
    "An ordered chain of NetworkFunctions attached to interfaces on selected nodes, with its rollout strategy.",
  )
  .register(kube, { validations: [nameIsLabelRule] });
export type ServiceChain = z.infer<typeof ServiceChain>;
