import { z } from "zod";
import { Conditions } from "./conditions.ts";
import {
  API_VERSION,
  boundedRecord,
  CIdentifier,
  Dns1123Label,
  Hook,
  kube,
  nameIsLabelRule,
  objectMeta,
  ObservedGeneration,
  RelativePath,
  stringSet,
} from "./meta.ts";
import { PacketSpec, TestVector } from "./testvector.ts";

/**
 * NetworkFunction: one VNF. Its C source is a built-in of sluice, a file in a GitSource's
 * artifact, or inline text; `parameters` are fixed at compile time, `tables` are map entries
 * that change at run time without a recompile, and `tests` are packets it must handle as stated.
 *
 * `hooks` is a list: one C file may hold programs for several hooks (`SEC("xdp")` and
 * `SEC("tc")`), and one NetworkFunction (with one set of tables) can then serve chains on any of
 * them. A chain may only use the function if its attachment hook is in this list.
 */

/** Name of a built-in network function (a C file shipped with sluice). */
export const BuiltinName = Dns1123Label;

/** Reference to a GitSource in the same namespace. */
export const GitSourceReference = z.strictObject({
  kind: z.literal("GitSource").default("GitSource").describe("Kind of the source; only GitSource."),
  name: Dns1123Label.describe("Name of the GitSource in the same namespace."),
});
export type GitSourceReference = z.infer<typeof GitSourceReference>;

/** Largest inline C source, in characters. */
export const MAX_INLINE_SOURCE = 262_144;

/** Where the C source comes from: exactly one of `builtin`, `path` (with `sourceRef`) or `inline`. */
export const NetworkFunctionSource = z
  .xor(
    [
      z.strictObject({
        builtin: BuiltinName.describe("Name of a built-in network function, e.g. firewall."),
      }),
      z.strictObject({
        path: RelativePath.refine((p) => p.endsWith(".c"), "must name a C file (ending in .c)")
          .register(kube, {
            validations: [{ rule: "self.endsWith('.c')", message: "must name a C file (ending in .c)" }],
          })
          .describe(
            "C entry file, relative to the root of the GitSource's artifact (its spec.path in the repository).",
          ),
        sourceRef: GitSourceReference.describe("GitSource whose artifact holds the file."),
      }),
      z.strictObject({
        inline: z.string().min(1).max(MAX_INLINE_SOURCE).describe("C source text of the network function."),
      }),
    ],
    { error: "source needs exactly one of builtin, path (with sourceRef) or inline" },
  )
  .describe("C source: exactly one of builtin, path (with sourceRef) or inline.")
  .register(kube, {
    validations: [
      {
        rule: "[has(self.builtin), has(self.path), has(self.inline)].exists_one(x, x)",
        message: "source needs exactly one of builtin, path (with sourceRef) or inline",
      },
      {
        rule: "has(self.path) == has(self.sourceRef)",
        message: "sourceRef goes with path, and only with path",
      },
    ],
  });
export type NetworkFunctionSource = z.infer<typeof NetworkFunctionSource>;

/** A compile-time parameter value; it becomes a `const volatile` global or a `-D` definition. */
export const ParameterValue = z
  .union([z.string().max(4096), z.number(), z.boolean()], { error: "must be a string, number or boolean" })
  .register(kube, { preserveUnknownFields: true });
export type ParameterValue = z.infer<typeof ParameterValue>;

/** Compile-time parameters by C identifier. */
export const Parameters = boundedRecord(CIdentifier, ParameterValue, 64, "C identifiers");
export type Parameters = z.infer<typeof Parameters>;

/** One runtime map entry; its fields are checked against the network function's own table schema. */
export const TableEntry = z.record(z.string(), z.unknown()).register(kube, { preserveUnknownFields: true });
export type TableEntry = z.infer<typeof TableEntry>;

/** Runtime tables: table name (C identifier) to its entries. Changing them does not recompile. */
export const Tables = boundedRecord(CIdentifier, z.array(TableEntry).max(65_536), 32, "C identifiers");
export type Tables = z.infer<typeof Tables>;

/** Test vectors with unique names (the results refer to vectors by name). */
export const TestVectors = z
  .array(TestVector)
  .max(256)
  .superRefine((list, ctx) => {
    const seen = new Set<string>();
    list.forEach((v, i) => {
      if (seen.has(v.name))
        ctx.addIssue({
          code: "custom",
          path: [i, "name"],
          message: `duplicate test vector name "${v.name}"`,
        });
      seen.add(v.name);
    });
  })
  .register(kube, { listType: "map", listMapKeys: ["name"] });

/** Desired state of a NetworkFunction. */
export const NetworkFunctionSpec = z.strictObject({
  hooks: stringSet(Hook, "hook")
    .min(1, "must list at least one hook")
    .max(3)
    .describe(
      "Hooks the C source has programs for: xdp, tc-ingress, tc-egress. A chain may use this function only on one of them.",
    ),
  source: NetworkFunctionSource,
  parameters: Parameters.optional().describe(
    "Compile-time parameters by C identifier: string, number or boolean values.",
  ),
  tables: Tables.optional().describe("Runtime map entries by table name; changed without recompiling."),
  tests: TestVectors.optional().describe(
    "Packets this function must handle as stated, run before every switch.",
  ),
});
export type NetworkFunctionSpec = z.infer<typeof NetworkFunctionSpec>;

/** Observed state of a NetworkFunction, written by the operator (whether its source resolves). */
export const NetworkFunctionStatus = z.object({
  observedGeneration: ObservedGeneration,
  conditions: Conditions.optional().describe(
    "Ready: the source resolves (GitSource artifact present, or a known built-in).",
  ),
});
export type NetworkFunctionStatus = z.infer<typeof NetworkFunctionStatus>;

/** A whole NetworkFunction object. */
export const NetworkFunction = z
  .strictObject({
    apiVersion: z.literal(API_VERSION),
    kind: z.literal("NetworkFunction"),
    // A label, not a subdomain: the name keys the function's pinned maps on every node, and
    // bpffs refuses names with dots.
    metadata: objectMeta(Dns1123Label),
    spec: NetworkFunctionSpec,
    status: NetworkFunctionStatus.default({ observedGeneration: -1 }),
  })
  .describe(
    "One eBPF network function: its C source, compile-time parameters, runtime tables and test vectors.",
  )
  .register(kube, { validations: [nameIsLabelRule] });
export type NetworkFunction = z.infer<typeof NetworkFunction>;

// The packet rules of testvector.ts (zod refinements there) for the apiserver. Registering
// details of a schema does not change it; only the CRD generator reads this registry.
kube.add(PacketSpec, {
  validations: [
    {
      rule: "[has(self.ipv4), has(self.ipv6)].exists_one(x, x)",
      message: "a packet needs exactly one of ipv4 or ipv6",
    },
    {
      rule: "(has(self.tcp) ? 1 : 0) + (has(self.udp) ? 1 : 0) + (has(self.icmp) ? 1 : 0) <= 1",
      message: "a packet has at most one of tcp, udp or icmp",
    },
  ],
});
