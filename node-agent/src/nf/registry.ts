import { z } from "zod";
import { firewall } from "./firewall.ts";
import { flowmon } from "./flowmon.ts";
import { noop } from "./noop.ts";
import { ratelimit } from "./ratelimit.ts";
import type { BuiltinNf, MapContents, RodataSetting } from "./types.ts";

/** Every built-in NF by name. */
export const BUILTIN_NFS = { firewall, ratelimit, flowmon, noop } as const;

/** Name of a built-in NF (`source: { builtin: <name> }`). */
export const BuiltinNfName = z.enum(["firewall", "ratelimit", "flowmon", "noop"]);
export type BuiltinNfName = z.infer<typeof BuiltinNfName>;

/** The built-in NF of that name, or undefined. */
export function getBuiltinNf(name: string): BuiltinNf | undefined {
  const parsed = BuiltinNfName.safeParse(name);
  return parsed.success ? BUILTIN_NFS[parsed.data] : undefined;
}

/** One problem in an NF's configuration, located by its field. */
export interface NfConfigIssue {
  /** Path inside `parameters` or `tables`, as zod reports it: `["rules", 2, "src"]`. */
  path: (string | number)[];
  /** The same path for people: `rules[2].src` (empty for the object itself). */
  field: string;
  message: string;
}

/** Which part of an NF's configuration was wrong. */
export type NfConfigPart = "name" | "parameters" | "tables";

/**
 * An NF configuration that cannot be used. The message names the NF, the part and each field,
 * e.g. `firewall tables: rules[2].src: "10.0.0.1/8" has host bits set; did you mean 10.0.0.0/8?`.
 */
export class NfConfigError extends Error {
  override name = "NfConfigError";
  constructor(
    readonly nf: string,
    readonly part: NfConfigPart,
    readonly issues: NfConfigIssue[],
  ) {
    super(
      `${nf} ${part}: ${issues.map((i) => (i.field ? `${i.field}: ${i.message}` : i.message)).join("; ")}`,
    );
  }
}

/** A built-in NF with validated parameters and tables, ready for the loader. */
export interface ConfiguredBuiltinNf {
  nf: BuiltinNf;
  /** Parameters with defaults applied. */
  params: unknown;
  /** `.rodata` settings from the parameters (besides the chain's own sluice_* settings). */
  rodata: RodataSetting[];
  /** Desired contents of the NF's table maps. */
  mapContents: MapContents;
}

/** Result of {@link configureBuiltinNf}. */
export type ConfigureResult = { ok: true; value: ConfiguredBuiltinNf } | { ok: false; error: NfConfigError };

/**
 * Validate the parameters and runtime tables of a built-in NF and turn them into `.rodata`
 * settings and map entries. Missing parameters and tables take their defaults.
 */
export function configureBuiltinNf(
  name: string,
  config: { parameters?: unknown; tables?: unknown } = {},
): ConfigureResult {
  const nf = getBuiltinNf(name);
  if (!nf) {
    const known = BuiltinNfName.options.join(", ");
    const issue = { path: [], field: "", message: `no built-in NF "${name}" (built-ins: ${known})` };
    return { ok: false, error: new NfConfigError(name, "name", [issue]) };
  }
  const params = nf.params.safeParse(config.parameters ?? {});
  if (!params.success)
    return { ok: false, error: new NfConfigError(name, "parameters", toIssues(params.error)) };
  const tables = nf.tables.safeParse(config.tables ?? {});
  if (!tables.success) return { ok: false, error: new NfConfigError(name, "tables", toIssues(tables.error)) };
  return {
    ok: true,
    value: {
      nf,
      params: params.data,
      rodata: nf.rodata(params.data),
      mapContents: nf.encodeTables(tables.data),
    },
  };
}

function toIssues(error: z.ZodError): NfConfigIssue[] {
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
