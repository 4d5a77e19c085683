import {
  BuiltinNfName,
  checkBuiltinConfig,
  type BuiltinConfigError,
} from "../../../common/api/builtins/index.ts";
import { firewall } from "./firewall.ts";
import { flowmon } from "./flowmon.ts";
import { ips } from "./ips.ts";
import { l4lb } from "./l4lb.ts";
import { noop } from "./noop.ts";
import { overlay } from "./overlay.ts";
import { ratelimit } from "./ratelimit.ts";
import { router } from "./router.ts";
import type { BuiltinNf, MapContents, RodataSetting } from "./types.ts";

/** Every built-in NF by name: one per name the API knows (`common/api/builtins`). */
export const BUILTIN_NFS = {
  firewall,
  ratelimit,
  flowmon,
  noop,
  ips,
  router,
  l4lb,
  overlay,
} as const satisfies Record<BuiltinNfName, BuiltinNf>;

/** The built-in NF of that name, or undefined. */
export function getBuiltinNf(name: string): BuiltinNf | undefined {
  const parsed = BuiltinNfName.safeParse(name);
  return parsed.success ? BUILTIN_NFS[parsed.data] : undefined;
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
export type ConfigureResult =
  { ok: true; value: ConfiguredBuiltinNf } | { ok: false; error: BuiltinConfigError };

/**
 * Validate the parameters and runtime tables of a built-in NF with the API's schemas (the checks
 * the operator and `sluice validate` make) and turn them into `.rodata` settings and map entries.
 * Missing parameters and tables take their defaults; an unknown name fails with the reason
 * `BuiltinNotFound`.
 */
export function configureBuiltinNf(
  name: string,
  config: { parameters?: unknown; tables?: unknown } = {},
): ConfigureResult {
  const checked = checkBuiltinConfig(name, config);
  if (!checked.ok) return checked;
  const nf: BuiltinNf = BUILTIN_NFS[checked.value.name];
  return {
    ok: true,
    value: {
      nf,
      params: checked.value.params,
      rodata: nf.rodata(checked.value.params),
      mapContents: nf.encodeTables(checked.value.tables),
    },
  };
}
