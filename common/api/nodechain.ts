import { z } from "zod";
import { Conditions } from "./conditions.ts";
import { API_VERSION, Dns1123Label, Dns1123Subdomain, ObjectMeta, ObservedGeneration } from "./meta.ts";
import { ChainPlan, MAX_CHAIN_LENGTH } from "./servicechain.ts";

/**
 * NodeChain: the fully resolved plan of one ServiceChain on one node. The operator writes the
 * spec (everything the agent needs, with no further lookups); the agent on `nodeName` writes the
 * status. The agent watches only its own NodeChains (field selector `spec.nodeName=<node>`).
 */

/** Desired state of a NodeChain, written by the operator: the node, the chain, and the chain's plan. */
export const NodeChainSpec = z.strictObject({
  nodeName: Dns1123Subdomain.describe("Node whose agent runs this plan."),
  chain: Dns1123Label.describe("Name of the ServiceChain this plan comes from."),
  ...ChainPlan.shape,
});
export type NodeChainSpec = z.infer<typeof NodeChainSpec>;

/** Where the agent is with the plan. */
export const NodeChainPhase = z.enum(["Pending", "Compiling", "Loading", "Testing", "Ready", "Failed"]);
export type NodeChainPhase = z.infer<typeof NodeChainPhase>;

/** Most characters of compiler or verifier output kept in `lastError.log` (the tail is kept). */
export const MAX_ERROR_LOG_LENGTH = 16_384;
/** Most entries in `selfTest.results`. */
export const MAX_SELF_TEST_RESULTS = 256;

/** The outcome of one test vector. */
export const TestResult = z.object({
  vector: z
    .string()
    .min(1)
    .max(256)
    .describe("Vector name; '<function>/<vector>' for a function's own vectors."),
  passed: z.boolean(),
  expected: z.string().max(1024).describe("What the vector expects, e.g. 'drop' or 'drop, dropped=3'."),
  got: z.string().max(1024).describe("What the chain did."),
});
export type TestResult = z.infer<typeof TestResult>;

/** The self-test of the last revision the agent tried. */
export const SelfTest = z.object({
  passed: z.number().int().min(0),
  failed: z.number().int().min(0),
  results: z
    .array(TestResult)
    .max(MAX_SELF_TEST_RESULTS)
    .optional()
    .describe("Per-vector outcomes, failures first (bounded)."),
});
export type SelfTest = z.infer<typeof SelfTest>;

/** Why the last attempt failed. */
export const LastError = z.object({
  reason: z.string().min(1).max(1024).describe("CamelCase reason, e.g. CompileFailed or VerifierRejected."),
  message: z.string().max(4096),
  log: z.string().max(MAX_ERROR_LOG_LENGTH).optional().describe("Tail of the compiler or verifier output."),
});
export type LastError = z.infer<typeof LastError>;

/** Observed state of a NodeChain, written by the node's agent. */
export const NodeChainStatus = z.object({
  observedGeneration: ObservedGeneration,
  phase: NodeChainPhase.default("Pending").describe("Pending, Compiling, Loading, Testing, Ready or Failed."),
  revision: z
    .string()
    .max(128)
    .optional()
    .describe("Revision live on the node; it stays the old one while a new one fails."),
  programIds: z
    .array(z.number().int().min(0))
    .max(MAX_CHAIN_LENGTH + 1)
    .optional()
    .describe("Kernel program IDs of the live chain: the root program, then each function in order."),
  attachedInterfaces: z
    .array(z.string().max(15))
    .max(1024)
    .optional()
    .describe("Interfaces the live chain is attached to."),
  mode: z
    .enum(["linked", "fused"])
    .optional()
    .describe(
      "How the live chain runs: fused (one program for every function) or linked (one per function).",
    ),
  modeReason: z
    .string()
    .max(1024)
    .optional()
    .describe(
      "Why a chain that asked for auto runs linked (the fused program did not build, verify or pass).",
    ),
  selfTest: SelfTest.optional(),
  lastError: LastError.optional(),
  conditions: Conditions.optional().describe(
    "Ready: the spec's revision is live on every matched interface. Reconciling: the agent is switching to it, or waits for something it needs. Stalled: it failed in a way that a retry would repeat (lastError says why); the agent tries again when the spec changes.",
  ),
});
export type NodeChainStatus = z.infer<typeof NodeChainStatus>;

/** A whole NodeChain object. */
export const NodeChain = z
  .strictObject({
    apiVersion: z.literal(API_VERSION),
    kind: z.literal("NodeChain"),
    metadata: ObjectMeta,
    spec: NodeChainSpec,
    status: NodeChainStatus.default({ observedGeneration: -1, phase: "Pending" }),
  })
  .describe("The resolved plan of one ServiceChain on one node, and its state on that node.");
export type NodeChain = z.infer<typeof NodeChain>;
