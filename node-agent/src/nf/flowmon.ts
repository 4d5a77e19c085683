import type { FlowmonParams, FlowmonTables } from "../../../common/api/builtins/index.ts";
import {
  FLOWMON_COUNTERS_LAYOUT,
  FLOWMON_MAX_FLOWS,
  FLOW_KEY_LAYOUT,
  decodeFlowCounters,
  decodeFlowKey,
  type FlowKey,
} from "./structs.ts";
import { BpfMapType, type BuiltinNf, type MapEntry } from "./types.ts";

/**
 * One flow with its counters. Counts are numbers (exact up to 2^53: 9 PB of bytes per flow)
 * so that records go into JSON status and the web view as they are.
 */
export interface FlowRecord extends FlowKey {
  packets: number;
  bytes: number;
  /** Kernel monotonic clock (ns) of the first and the last packet. */
  firstSeenNs: bigint;
  lastSeenNs: bigint;
}

/** Decode one `flowmon_flows` entry (key `struct sluice_flow_key`, value `struct flowmon_counters`). */
export function decodeFlowEntry(key: Buffer, value: Buffer): FlowRecord {
  const counters = decodeFlowCounters(value);
  return {
    ...decodeFlowKey(key),
    packets: Number(counters.packets),
    bytes: Number(counters.bytes),
    firstSeenNs: counters.firstSeenNs,
    lastSeenNs: counters.lastSeenNs,
  };
}

/** The `limit` flows with the most bytes (or packets), largest first. */
export function topTalkers(
  entries: Iterable<MapEntry>,
  options: { limit?: number; by?: "bytes" | "packets" } = {},
): FlowRecord[] {
  const by = options.by ?? "bytes";
  const flows = [...entries].map(({ key, value }) => decodeFlowEntry(key, value));
  flows.sort((a, b) => b[by] - a[by] || b.packets - a.packets || b.bytes - a.bytes);
  return flows.slice(0, options.limit ?? 10);
}

/** The built-in `flowmon`. */
export const flowmon: BuiltinNf<FlowmonParams, FlowmonTables> = {
  name: "flowmon",
  entry: "nf/flowmon/flowmon.bpf.c",
  sourceDir: "nf/flowmon",
  programs: { xdp: "flowmon_xdp", tc: "flowmon_tc" },
  rodata: () => [],
  encodeTables: () => ({}),
  tableMaps: [],
  maps: {
    flowmon_flows: {
      type: BpfMapType.LRU_HASH,
      keySize: FLOW_KEY_LAYOUT.size,
      valueSize: FLOWMON_COUNTERS_LAYOUT.size,
      maxEntries: FLOWMON_MAX_FLOWS,
      flags: 0,
    },
  },
};
