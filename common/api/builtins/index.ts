/**
 * Parameters and runtime tables of the built-in network functions, as zod schemas. They live in
 * the API package so that the operator (when it loads a revision), `sluice validate` and the
 * agent (before it compiles) check exactly the same rules; the agent adds what only it needs:
 * where the C is, `.rodata` settings and the binary form of each table.
 */
import { z } from "zod";
import { Reason } from "../conditions.ts";
import { FirewallParams, FirewallTables } from "./firewall.ts";
import { FlowmonParams, FlowmonTables } from "./flowmon.ts";
import { IpsParams, IpsTables } from "./ips.ts";
import { L4lbParams, L4lbTables } from "./l4lb.ts";
import { NoopParams, NoopTables } from "./noop.ts";
import { OverlayParams, OverlayTables } from "./overlay.ts";
import { RatelimitParams, RatelimitTables } from "./ratelimit.ts";
import { RouterParams, RouterTables } from "./router.ts";

export * from "./firewall.ts";
export * from "./flowmon.ts";
export * from "./ips.ts";
export * from "./l4lb.ts";
export * from "./noop.ts";
export * from "./overlay.ts";
export * from "./ratelimit.ts";
export * from "./router.ts";

/** What the API knows of one built-in: a line for listings and its two schemas. */
export interface BuiltinSchema {
  /** One line for docs and listings. */
  readonly summary: string;
  /** `spec.parameters`, with defaults; `.describe()` on each field documents it. */
  readonly params: z.ZodType;
  /** `spec.tables`, with defaults. */
  readonly tables: z.ZodType;
}

/** Every built-in network function by name (`source: { builtin: <name> }`). */
export const BUILTIN_SCHEMAS = {
  firewall: {
    summary: "Ordered allow/deny rules on IPv4/IPv6 CIDR, protocol and port ranges; first match wins.",
    params: FirewallParams,
    tables: FirewallTables,
  },
  ratelimit: {
    summary: "Token bucket per source address (IPv4 and IPv6); packets over the limit are dropped.",
    params: RatelimitParams,
    tables: RatelimitTables,
  },
  flowmon: {
    summary: "Packet and byte counters per 5-tuple flow; never changes a packet's fate.",
    params: FlowmonParams,
    tables: FlowmonTables,
  },
  noop: {
    summary: "Hands every packet to the next NF without looking at it (hop-cost baseline).",
    params: NoopParams,
    tables: NoopTables,
  },
  ips: {
    summary:
      "Intrusion prevention: drops (or counts) packets whose payload matches content signatures, SYN floods and port scans.",
    params: IpsParams,
    tables: IpsTables,
  },
  router: {
    summary:
      "L3 forwarding of IPv4/IPv6 from the kernel's routes and neighbours (TTL decremented); what it cannot forward goes to the stack.",
    params: RouterParams,
    tables: RouterTables,
  },
  l4lb: {
    summary:
      "Layer-4 load balancer: TCP/UDP to a virtual IP and port goes to a backend by Maglev consistent hashing (DNAT, replies translated back), with connection affinity and backend health.",
    params: L4lbParams,
    tables: L4lbTables,
  },
  overlay: {
    summary:
      "One L3 network across the chain's nodes: packets for segments behind other nodes go there in VXLAN, and arrive unwrapped.",
    params: OverlayParams,
    tables: OverlayTables,
  },
} as const satisfies Record<string, BuiltinSchema>;

/** Name of a built-in NF (`source: { builtin: <name> }`). */
export const BuiltinNfName = z.enum(Object.keys(BUILTIN_SCHEMAS) as [keyof typeof BUILTIN_SCHEMAS]);
export type BuiltinNfName = z.infer<typeof BuiltinNfName>;

/** One problem in a built-in's configuration, located by its field. */
export interface BuiltinIssue {
  /** Path inside `parameters` or `tables`, as zod reports it: `["rules", 2, "src"]`. */
  path: (string | number)[];
  /** The same path for people: `rules[2].src` (empty for the part itself). */
  field: string;
  message: string;
}

/** Which part of a built-in's configuration was wrong: its name, `parameters` or `tables`. */
export type BuiltinConfigPart = "name" | "parameters" | "tables";

/**
 * A built-in NF configuration that cannot be used. `reason` is `BuiltinNotFound` for an unknown
 * name and `InvalidSpec` for parameters or tables its schema refuses. The message names the NF,
 * the part and each field, e.g. `firewall tables: rules[2].src: "10.0.0.1/8" has host bits set`,
 * or says that no built-in has the name.
 */
export class BuiltinConfigError extends Error {
  override name = "BuiltinConfigError";
  readonly reason: typeof Reason.BuiltinNotFound | typeof Reason.InvalidSpec;
  constructor(
    readonly nf: string,
    readonly part: BuiltinConfigPart,
    readonly issues: BuiltinIssue[],
  ) {
    const listed = issues.map((i) => (i.field ? `${i.field}: ${i.message}` : i.message)).join("; ");
    super(part === "name" ? listed : `${nf} ${part}: ${listed}`);
    this.reason = part === "name" ? Reason.BuiltinNotFound : Reason.InvalidSpec;
  }

  /** Where an issue sits in a NetworkFunction: `spec.source.builtin`, `spec.tables.rules[2].src`. */
  static specPath(part: BuiltinConfigPart, issue: BuiltinIssue): string {
    const base = part === "name" ? "spec.source.builtin" : `spec.${part}`;
    if (!issue.field) return base;
    return issue.field.startsWith("[") ? `${base}${issue.field}` : `${base}.${issue.field}`;
  }
}

/** A built-in's parameters and tables after parsing, defaults applied. */
export interface CheckedBuiltinConfig {
  name: BuiltinNfName;
  params: unknown;
  tables: unknown;
}

/** Outcome of {@link checkBuiltinConfig}. */
export type CheckBuiltinResult =
  { ok: true; value: CheckedBuiltinConfig } | { ok: false; error: BuiltinConfigError };

/**
 * Checks a built-in's name, parameters and tables against its schemas. Missing parameters and
 * tables take their defaults.
 */
export function checkBuiltinConfig(
  name: string,
  config: { parameters?: unknown; tables?: unknown } = {},
): CheckBuiltinResult {
  const known = BuiltinNfName.safeParse(name);
  if (!known.success) {
    const list = BuiltinNfName.options.join(", ");
    const issue = {
      path: [],
      field: "",
      message: `no built-in network function "${name}" (built-ins: ${list})`,
    };
    return { ok: false, error: new BuiltinConfigError(name, "name", [issue]) };
  }
  const schema: BuiltinSchema = BUILTIN_SCHEMAS[known.data];
  const params = schema.params.safeParse(config.parameters ?? {});
  if (!params.success)
    return { ok: false, error: new BuiltinConfigError(name, "parameters", toIssues(params.error)) };
  const tables = schema.tables.safeParse(config.tables ?? {});
  if (!tables.success)
    return { ok: false, error: new BuiltinConfigError(name, "tables", toIssues(tables.error)) };
  return { ok: true, value: { name: known.data, params: params.data, tables: tables.data } };
}

function toIssues(error: z.ZodError): BuiltinIssue[] {
  return error.issues.map((issue) => {
    const path = issue.path.map((p) => (typeof p === "symbol" ? String(p) : p));
    return { path, field: formatPath(path), message: issue.message };
  });
}

/** `["rules", 2, "src"]` -> `rules[2].src`. */
export function formatPath(path: readonly (string | number)[]): string {
  return path.reduce<string>((text, part) => {
    if (typeof part === "number") return `${text}[${part}]`;
    return text ? `${text}.${part}` : part;
  }, "");
}
