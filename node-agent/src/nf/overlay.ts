import {
  OVERLAY_MAX_NODES,
  OVERLAY_MAX_SEGMENTS,
  type OverlayParams,
  type OverlayTables,
} from "../../../common/api/builtins/index.ts";
import { ipv4Bytes, parseCidr } from "../../../common/net/ip.ts";
import type { StructLayout } from "./structs.ts";
import {
  BPF_F_NO_PREALLOC,
  BpfMapType,
  type BuiltinNf,
  type MapContents,
  type MapEntry,
  type RodataSetting,
} from "./types.ts";

/** `BPF_MAP_TYPE_LPM_TRIE`. */
const LPM_TRIE = 11;

/** `struct overlay_segment_key` of `bpf/nf/overlay/overlay_types.h`. */
export const OVERLAY_SEGMENT_KEY_LAYOUT: StructLayout = {
  name: "struct overlay_segment_key",
  size: 20,
  offsets: { prefixlen: 0, addr: 4 },
};

/** `struct overlay_remote`. */
export const OVERLAY_REMOTE_LAYOUT: StructLayout = {
  name: "struct overlay_remote",
  size: 8,
  offsets: { node: 0, pad: 4 },
};

/** `enum overlay_counter`: the keys of `overlay_counters`. */
export const OverlayCounter = {
  ENCAPSULATED: 0,
  DECAPSULATED: 1,
  TOO_BIG: 2,
  NO_NEIGH: 3,
  NO_ROUTE: 4,
  FOREIGN: 5,
} as const;
/** `OVERLAY_COUNTERS`: entries of `overlay_counters`. */
export const OVERLAY_COUNTERS = 6;

/** What the overlay counted on one node, summed over CPUs. */
export interface OverlayCounters {
  /** Packets wrapped in VXLAN and sent to the node that hosts their segment. */
  encapsulated: number;
  /** VXLAN packets from a known node with the overlay's VNI, unwrapped. */
  decapsulated: number;
  /** Packets for a remote segment that would exceed the egress MTU once wrapped: dropped. */
  tooBig: number;
  /**
   * Packets for a remote node whose MAC was not resolved yet: tc hands them, wrapped, to the
   * kernel's neighbour resolution (sent once resolved); XDP drops them.
   */
  noNeighbour: number;
  /** Packets for a remote segment with no route to its node: left alone. */
  noRoute: number;
  /** VXLAN packets to the overlay's port from an unknown node or with another VNI: left alone. */
  foreign: number;
}

/**
 * Sums the entries of `overlay_counters` as a map read returns them: the key, and the per-CPU
 * values (one u64 per CPU) side by side.
 */
export function decodeOverlayCounters(entries: Iterable<MapEntry>): OverlayCounters {
  const totals: number[] = Array<number>(OVERLAY_COUNTERS).fill(0);
  for (const { key, value } of entries) {
    const counter = key.readUInt32LE(0);
    if (counter >= OVERLAY_COUNTERS) continue;
    let total = 0n;
    for (let offset = 0; offset + 8 <= value.length; offset += 8) total += value.readBigUInt64LE(offset);
    totals[counter] = Number(total);
  }
  const at = (counter: number) => totals[counter] ?? 0;
  return {
    encapsulated: at(OverlayCounter.ENCAPSULATED),
    decapsulated: at(OverlayCounter.DECAPSULATED),
    tooBig: at(OverlayCounter.TOO_BIG),
    noNeighbour: at(OverlayCounter.NO_NEIGH),
    noRoute: at(OverlayCounter.NO_ROUTE),
    foreign: at(OverlayCounter.FOREIGN),
  };
}

/** The `overlay_segments` key of a validated prefix: its length in the 128-bit space, then the network. */
export function encodeSegmentKey(prefix: string): Buffer {
  const cidr = parseCidr(prefix);
  const key = Buffer.alloc(OVERLAY_SEGMENT_KEY_LAYOUT.size);
  key.writeUInt32LE(cidr.family === 4 ? 96 + cidr.prefixLength : cidr.prefixLength, 0);
  cidr.network.copy(key, OVERLAY_SEGMENT_KEY_LAYOUT.offsets.addr);
  return key;
}

/** `struct overlay_remote` for a node's IPv4 address (network order). */
function encodeRemote(node: string): Buffer {
  const value = Buffer.alloc(OVERLAY_REMOTE_LAYOUT.size);
  ipv4Bytes(node).copy(value, OVERLAY_REMOTE_LAYOUT.offsets.node);
  return value;
}

const PRESENT = Buffer.from([1, 0, 0, 0]);

/** The built-in `overlay`: VXLAN between the nodes that host the segments of one L3 network. */
export const overlay: BuiltinNf<OverlayParams, OverlayTables> = {
  name: "overlay",
  entry: "nf/overlay/overlay.bpf.c",
  sourceDir: "nf/overlay",
  programs: { xdp: "overlay_xdp", tc: "overlay_tc" },
  rodata(params): RodataSetting[] {
    return [
      { variable: "overlay_vni", type: "u32", value: BigInt(params.vni) },
      { variable: "overlay_port", type: "u32", value: BigInt(params.port) },
      { variable: "overlay_ttl", type: "u32", value: BigInt(params.ttl) },
    ];
  },
  encodeTables(tables): MapContents {
    const segments: MapEntry[] = tables.segments.map((s) => ({
      key: encodeSegmentKey(s.prefix),
      value: encodeRemote(s.node),
    }));
    // Only these nodes' VXLAN packets are unwrapped.
    const nodes = [...new Set(tables.segments.map((s) => s.node))].map((node) => ({
      key: ipv4Bytes(node),
      value: PRESENT,
    }));
    return { overlay_segments: segments, overlay_nodes: nodes };
  },
  tableMaps: ["overlay_segments", "overlay_nodes"],
  maps: {
    overlay_segments: {
      type: LPM_TRIE,
      keySize: OVERLAY_SEGMENT_KEY_LAYOUT.size,
      valueSize: OVERLAY_REMOTE_LAYOUT.size,
      maxEntries: OVERLAY_MAX_SEGMENTS,
      flags: BPF_F_NO_PREALLOC,
    },
    overlay_nodes: {
      type: BpfMapType.HASH,
      keySize: 4,
      valueSize: 4,
      maxEntries: OVERLAY_MAX_NODES,
      flags: 0,
    },
    overlay_counters: {
      type: BpfMapType.PERCPU_ARRAY,
      keySize: 4,
      valueSize: 8,
      maxEntries: OVERLAY_COUNTERS,
      flags: 0,
    },
  },
};
