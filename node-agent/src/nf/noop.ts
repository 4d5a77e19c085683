import { z } from "zod";
import type { BuiltinNf } from "./types.ts";

/** `noop` has no parameters. */
export const NoopParams = z.strictObject({});
export type NoopParams = z.infer<typeof NoopParams>;

/** `noop` has no runtime tables. */
export const NoopTables = z.strictObject({});
export type NoopTables = z.infer<typeof NoopTables>;

/** The built-in `noop`: continues every packet; measures what one chain hop costs. */
export const noop: BuiltinNf<NoopParams, NoopTables> = {
  name: "noop",
  summary: "Hands every packet to the next NF without looking at it (hop-cost baseline).",
  entry: "nf/noop/noop.bpf.c",
  sourceDir: "nf/noop",
  programs: { xdp: "noop_xdp", tc: "noop_tc" },
  params: NoopParams,
  rodata: () => [],
  tables: NoopTables,
  encodeTables: () => ({}),
  tableMaps: [],
  maps: {},
};
