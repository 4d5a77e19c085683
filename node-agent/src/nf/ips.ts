import {
  contentBytes,
  portRangeBounds,
  protocolNumber,
  type IpsParams,
  type IpsSignature,
  type IpsTables,
} from "../../../common/api/builtins/index.ts";
import {
  IPS_MAX_HIT_KEYS,
  IPS_MAX_SOURCES,
  IPS_SCRATCH_LAYOUT,
  IPS_SOURCE_LAYOUT,
  IPS_TABLE_LAYOUT,
  IpsAction,
  IpsHitKey,
  IpsSigFlag,
  encodeIpsTable,
  foldAscii,
  type IpsSignatureRecord,
} from "./structs.ts";
import {
  BPF_F_NO_PREALLOC,
  BpfMapType,
  type BuiltinNf,
  type MapContents,
  type MapEntry,
  type RodataSetting,
} from "./types.ts";

/** Encode one validated signature into the binary form of `struct ips_signature`. */
export function encodeIpsSignature(sig: IpsSignature): IpsSignatureRecord {
  const bytes = contentBytes(sig.content);
  const content = sig.nocase ? Buffer.from(bytes.map(foldAscii)) : bytes;
  let flags = sig.nocase ? IpsSigFlag.NOCASE : 0;
  const record: IpsSignatureRecord = {
    id: sig.id,
    content,
    offset: sig.offset,
    depth: sig.depth ?? 0,
    sportMin: 0,
    sportMax: 65535,
    dportMin: 0,
    dportMax: 65535,
    proto: 0,
    flags: 0,
    action: sig.action === "drop" ? IpsAction.DROP : IpsAction.ALERT,
  };
  if (sig.proto !== undefined) {
    record.proto = protocolNumber(sig.proto);
    flags |= IpsSigFlag.PROTO;
  }
  if (sig.srcPort !== undefined || sig.dstPort !== undefined) {
    flags |= IpsSigFlag.PORTS;
    if (sig.srcPort !== undefined)
      ({ min: record.sportMin, max: record.sportMax } = portRangeBounds(sig.srcPort));
    if (sig.dstPort !== undefined)
      ({ min: record.dportMin, max: record.dportMax } = portRangeBounds(sig.dstPort));
  }
  record.flags = flags;
  return record;
}

/** Matches counted by the NF: per signature id, and per stateful rule. */
export interface IpsHits {
  /** Packets each signature matched (at most once per packet), by signature id. */
  signatures: Record<number, number>;
  /** SYNs over the per-second threshold. */
  synFlood: number;
  /** Probes from sources that reached the port-scan limit. */
  portScan: number;
  /** Packets whose scan used the whole `scanBudget`. */
  scanBudget: number;
}

/** Decode the entries of `ips_hits` (key: `__u32` id, value: `__u64` count). */
export function decodeIpsHits(entries: Iterable<MapEntry>): IpsHits {
  const hits: IpsHits = { signatures: {}, synFlood: 0, portScan: 0, scanBudget: 0 };
  for (const { key, value } of entries) {
    const id = key.readUInt32LE(0);
    const count = Number(value.readBigUInt64LE(0));
    if (id === IpsHitKey.SYN_FLOOD) hits.synFlood = count;
    else if (id === IpsHitKey.PORT_SCAN) hits.portScan = count;
    else if (id === IpsHitKey.SCAN_BUDGET) hits.scanBudget = count;
    else hits.signatures[id] = count;
  }
  return hits;
}

/** Key of the one entry of `ips_signatures`. */
const TABLE_KEY = Buffer.alloc(4);

/** The built-in `ips`. */
export const ips: BuiltinNf<IpsParams, IpsTables> = {
  name: "ips",
  entry: "nf/ips/ips.bpf.c",
  sourceDir: "nf/ips",
  programs: { xdp: "ips_xdp", tc: "ips_tc" },
  rodata(params): RodataSetting[] {
    return [
      { variable: "ips_detect_only", type: "u32", value: params.mode === "detect" ? 1n : 0n },
      { variable: "ips_syn_threshold", type: "u32", value: BigInt(params.synFloodThreshold) },
      { variable: "ips_scan_ports", type: "u32", value: BigInt(params.portScanPorts) },
      { variable: "ips_scan_window_ns", type: "u64", value: BigInt(params.portScanSeconds) * 1_000_000_000n },
      { variable: "ips_scan_budget", type: "u32", value: BigInt(params.scanBudget) },
      { variable: "ips_budget_drop", type: "u32", value: params.onScanBudget === "drop" ? 1n : 0n },
    ];
  },
  encodeTables(tables): MapContents {
    // Always one entry, even for no signatures: replacing the whole table is one atomic update.
    return {
      ips_signatures: [{ key: TABLE_KEY, value: encodeIpsTable(tables.signatures.map(encodeIpsSignature)) }],
    };
  },
  tableMaps: ["ips_signatures"],
  maps: {
    ips_signatures: {
      type: BpfMapType.HASH,
      keySize: 4,
      valueSize: IPS_TABLE_LAYOUT.size,
      maxEntries: 1,
      flags: BPF_F_NO_PREALLOC,
    },
    ips_hits: { type: BpfMapType.LRU_HASH, keySize: 4, valueSize: 8, maxEntries: IPS_MAX_HIT_KEYS, flags: 0 },
    ips_sources: {
      type: BpfMapType.LRU_HASH,
      keySize: 16,
      valueSize: IPS_SOURCE_LAYOUT.size,
      maxEntries: IPS_MAX_SOURCES,
      flags: 0,
    },
    ips_scratch: {
      type: BpfMapType.PERCPU_ARRAY,
      keySize: 4,
      valueSize: IPS_SCRATCH_LAYOUT.size,
      maxEntries: 1,
      flags: 0,
    },
  },
};
