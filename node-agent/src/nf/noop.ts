import type { NoopParams, NoopTables } from "../../../common/api/builtins/index.ts";
import type { BuiltinNf } from "./types.ts";

/** The built-in `noop`: continues every packet; measures what one chain hop costs. */
export const noop: BuiltinNf<NoopParams, NoopTables> = {
  name: "noop",
  entry: "nf/noop/noop.bpf.c",
  sourceDir: "nf/noop",
  programs: { xdp: "noop_xdp", tc: "noop_tc" },
  rodata: () => [],
  encodeTables: () => ({}),
  tableMaps: [],
  maps: {},
};
