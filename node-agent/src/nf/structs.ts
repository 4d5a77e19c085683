/**
 * Mirror of the C structures that user space reads or writes in BPF maps:
 * `bpf/include/sluice_types.h` and each built-in NF's `<name>_types.h`.
 *
 * Each struct has a layout constant (size and field offsets, the numbers in the C comments) and
 * an encoder and/or decoder. All multi-byte integers are little-endian (the host order of the
 * machines we run on: x86-64 and arm64) unless the C type is `__be*`.
 */
import {
  FIREWALL_MAX_RULES,
  IPS_MAX_CONTENT,
  IPS_MAX_SIGNATURES,
  IPS_MIN_CONTENT,
  IPS_SCAN_MAX,
} from "../../../common/api/builtins/index.ts";
import { formatAddress, type IpFamily } from "../../../common/net/ip.ts";

/** Size and field offsets of one C struct, checked against the BTF of the compiled object. */
export interface StructLayout {
  /** The C name, e.g. `struct sluice_nf_stats`. */
  name: string;
  size: number;
  offsets: Record<string, number>;
}

// ---------------------------------------------------------------------------------------------
// sluice_types.h

/** `SLUICE_MAX_NFS`: most NFs in one chain. */
export const SLUICE_MAX_NFS = 32;
/** `SLUICE_PROGS_ENTRIES`: max_entries of `sluice_progs`. */
export const SLUICE_PROGS_ENTRIES = SLUICE_MAX_NFS + 1;
/** `SLUICE_STATS_ENTRIES`: max_entries of `sluice_stats` (stable NF indexes per chain). */
export const SLUICE_STATS_ENTRIES = 64;

/** `struct sluice_nf_stats`. */
export const NF_STATS_LAYOUT: StructLayout = {
  name: "struct sluice_nf_stats",
  size: 40,
  offsets: { packets: 0, bytes: 8, drops: 16, passes: 24, errors: 32 },
};

/** Counters of one NF (or of the root's misses), summed over CPUs. */
export interface NfStats {
  /** Packets whose walk through the chain ended in this NF. */
  packets: bigint;
  bytes: bigint;
  drops: bigint;
  /** Ended with pass, tx or redirect, including the chain's final pass at the last NF. */
  passes: bigint;
  /** Ended with aborted, or a tail call that found an empty slot (the packet was passed). */
  errors: bigint;
}

/** Zeroed counters. */
export function emptyNfStats(): NfStats {
  return { packets: 0n, bytes: 0n, drops: 0n, passes: 0n, errors: 0n };
}

/**
 * Sum the per-CPU values of one `sluice_stats` (or `sluice_root_stats`) entry as
 * `bpf_map_lookup_elem` returns them: `cpus` consecutive structs, each rounded up to 8 bytes.
 */
export function decodePerCpuNfStats(buffer: Buffer, cpus: number): NfStats {
  const stride = roundUp8(NF_STATS_LAYOUT.size);
  if (buffer.length < stride * cpus) {
    throw new RangeError(`per-CPU stats value has ${buffer.length} bytes, expected ${stride * cpus}`);
  }
  const sum = emptyNfStats();
  for (let cpu = 0; cpu < cpus; cpu++) {
    const base = cpu * stride;
    sum.packets += buffer.readBigUInt64LE(base + 0);
    sum.bytes += buffer.readBigUInt64LE(base + 8);
    sum.drops += buffer.readBigUInt64LE(base + 16);
    sum.passes += buffer.readBigUInt64LE(base + 24);
    sum.errors += buffer.readBigUInt64LE(base + 32);
  }
  return sum;
}

/** `union sluice_addr`: 16 bytes, network order, IPv4 mapped to `::ffff:a.b.c.d`. */
export const ADDR_SIZE = 16;

/** `struct sluice_flow_key`. */
export const FLOW_KEY_LAYOUT: StructLayout = {
  name: "struct sluice_flow_key",
  size: 40,
  offsets: { src: 0, dst: 16, sport: 32, dport: 34, proto: 36, family: 37, pad: 38 },
};

/** A directional flow as the data plane keys it. */
export interface FlowKey {
  family: IpFamily;
  src: string;
  dst: string;
  /** IP protocol number (6 TCP, 17 UDP, 1 ICMP, 58 ICMPv6, ...). */
  proto: number;
  /** 0 for protocols without ports. */
  sport: number;
  dport: number;
}

/** Decode a `struct sluice_flow_key`. */
export function decodeFlowKey(key: Buffer): FlowKey {
  expectSize(key, FLOW_KEY_LAYOUT);
  const family = key[37] === 4 ? 4 : 6;
  return {
    family,
    src: formatAddress(key.subarray(0, 16), family),
    dst: formatAddress(key.subarray(16, 32), family),
    sport: key.readUInt16BE(32),
    dport: key.readUInt16BE(34),
    proto: key[36]!,
  };
}

// ---------------------------------------------------------------------------------------------
// nf/firewall/firewall_types.h

export { FIREWALL_MAX_RULES } from "../../../common/api/builtins/index.ts";
/** `enum firewall_action`. */
export const FirewallAction = { ALLOW: 1, DENY: 2 } as const;
/** `FIREWALL_MATCH_*` bits of `struct firewall_rule.match`. */
export const FirewallMatch = {
  IPV4: 0x01,
  IPV6: 0x02,
  PROTO: 0x04,
  PORTS: 0x08,
  SRC: 0x10,
  DST: 0x20,
} as const;

/** `struct firewall_rule`. */
export const FIREWALL_RULE_LAYOUT: StructLayout = {
  name: "struct firewall_rule",
  size: 80,
  offsets: {
    src: 0,
    src_mask: 16,
    dst: 32,
    dst_mask: 48,
    sport_min: 64,
    sport_max: 66,
    dport_min: 68,
    dport_max: 70,
    action: 72,
    match: 73,
    proto: 74,
    pad: 75,
  },
};

/** `struct firewall_table`. */
export const FIREWALL_TABLE_LAYOUT: StructLayout = {
  name: "struct firewall_table",
  size: 8 + FIREWALL_MAX_RULES * FIREWALL_RULE_LAYOUT.size,
  offsets: { count: 0, pad: 4, rules: 8 },
};

/** One rule in the binary form of `struct firewall_rule` (addresses already masked). */
export interface FirewallRuleRecord {
  action: number;
  match: number;
  proto: number;
  src: Buffer;
  srcMask: Buffer;
  dst: Buffer;
  dstMask: Buffer;
  sportMin: number;
  sportMax: number;
  dportMin: number;
  dportMax: number;
}

/** Encode a whole `struct firewall_table` (at most FIREWALL_MAX_RULES rules, in order). */
export function encodeFirewallTable(rules: readonly FirewallRuleRecord[]): Buffer {
  if (rules.length > FIREWALL_MAX_RULES) {
    throw new RangeError(`${rules.length} firewall rules; at most ${FIREWALL_MAX_RULES} fit`);
  }
  const table = Buffer.alloc(FIREWALL_TABLE_LAYOUT.size);
  table.writeUInt32LE(rules.length, 0);
  rules.forEach((rule, i) => {
    const base = 8 + i * FIREWALL_RULE_LAYOUT.size;
    rule.src.copy(table, base + 0);
    rule.srcMask.copy(table, base + 16);
    rule.dst.copy(table, base + 32);
    rule.dstMask.copy(table, base + 48);
    table.writeUInt16LE(rule.sportMin, base + 64);
    table.writeUInt16LE(rule.sportMax, base + 66);
    table.writeUInt16LE(rule.dportMin, base + 68);
    table.writeUInt16LE(rule.dportMax, base + 70);
    table[base + 72] = rule.action;
    table[base + 73] = rule.match;
    table[base + 74] = rule.proto;
  });
  return table;
}

/** Decode a `struct firewall_table` back into its rules. */
export function decodeFirewallTable(table: Buffer): FirewallRuleRecord[] {
  expectSize(table, FIREWALL_TABLE_LAYOUT);
  const count = Math.min(table.readUInt32LE(0), FIREWALL_MAX_RULES);
  return Array.from({ length: count }, (_, i) => {
    const base = 8 + i * FIREWALL_RULE_LAYOUT.size;
    return {
      src: Buffer.from(table.subarray(base, base + 16)),
      srcMask: Buffer.from(table.subarray(base + 16, base + 32)),
      dst: Buffer.from(table.subarray(base + 32, base + 48)),
      dstMask: Buffer.from(table.subarray(base + 48, base + 64)),
      sportMin: table.readUInt16LE(base + 64),
      sportMax: table.readUInt16LE(base + 66),
      dportMin: table.readUInt16LE(base + 68),
      dportMax: table.readUInt16LE(base + 70),
      action: table[base + 72]!,
      match: table[base + 73]!,
      proto: table[base + 74]!,
    };
  });
}

// ---------------------------------------------------------------------------------------------
// nf/ratelimit/ratelimit_types.h

/** `RATELIMIT_MAX_SOURCES`: max_entries of `ratelimit_state`. */
export const RATELIMIT_MAX_SOURCES = 65536;

/** `struct ratelimit_bucket`. */
export const RATELIMIT_BUCKET_LAYOUT: StructLayout = {
  name: "struct ratelimit_bucket",
  size: 8,
  offsets: { tat_ns: 0 },
};

/** Decode a `struct ratelimit_bucket`: the GCRA theoretical arrival time (monotonic ns). */
export function decodeRatelimitBucket(value: Buffer): { tatNs: bigint } {
  expectSize(value, RATELIMIT_BUCKET_LAYOUT);
  return { tatNs: value.readBigUInt64LE(0) };
}

// ---------------------------------------------------------------------------------------------
// nf/flowmon/flowmon_types.h

/** `FLOWMON_MAX_FLOWS`: max_entries of `flowmon_flows`. */
export const FLOWMON_MAX_FLOWS = 65536;

/** `struct flowmon_counters`. */
export const FLOWMON_COUNTERS_LAYOUT: StructLayout = {
  name: "struct flowmon_counters",
  size: 32,
  offsets: { packets: 0, bytes: 8, first_seen_ns: 16, last_seen_ns: 24 },
};

/** Counters of one flow. Times are on the kernel's monotonic clock (bpf_ktime_get_ns). */
export interface FlowCounters {
  packets: bigint;
  bytes: bigint;
  firstSeenNs: bigint;
  lastSeenNs: bigint;
}

/** Decode a `struct flowmon_counters`. */
export function decodeFlowCounters(value: Buffer): FlowCounters {
  expectSize(value, FLOWMON_COUNTERS_LAYOUT);
  return {
    packets: value.readBigUInt64LE(0),
    bytes: value.readBigUInt64LE(8),
    firstSeenNs: value.readBigUInt64LE(16),
    lastSeenNs: value.readBigUInt64LE(24),
  };
}

// ---------------------------------------------------------------------------------------------
// nf/ips/ips_types.h

export {
  IPS_MAX_SIGNATURES,
  IPS_MAX_CONTENT,
  IPS_MIN_CONTENT,
  IPS_SCAN_MAX,
} from "../../../common/api/builtins/index.ts";
/** `IPS_PREFIX_WORDS`: 64-bit words of the two-byte-prefix filter (65,536 bits). */
export const IPS_PREFIX_WORDS = 1024;
/** `IPS_BUCKETS`: buckets of signatures by a 12-bit hash of their case-folded first two bytes. */
export const IPS_BUCKETS = 4096;
/** `IPS_MAX_SOURCES`: max_entries of `ips_sources`. */
export const IPS_MAX_SOURCES = 16384;
/** `IPS_MAX_HIT_KEYS`: max_entries of `ips_hits`. */
export const IPS_MAX_HIT_KEYS = 1024;
/** `IPS_SIG_*` bits of `struct ips_signature.flags`. */
export const IpsSigFlag = { NOCASE: 0x01, PROTO: 0x02, PORTS: 0x04 } as const;
/** `enum ips_action`. */
export const IpsAction = { ALERT: 1, DROP: 2 } as const;
/** `IPS_HIT_*`: keys of `ips_hits` that count the stateful rules (signature ids are below 2^31). */
export const IpsHitKey = { SYN_FLOOD: 0x80000001, PORT_SCAN: 0x80000002, SCAN_BUDGET: 0x80000003 } as const;

/** `struct ips_signature`. */
export const IPS_SIGNATURE_LAYOUT: StructLayout = {
  name: "struct ips_signature",
  size: 88,
  offsets: {
    content: 0,
    content_len: 64,
    offset: 66,
    depth: 68,
    sport_min: 70,
    sport_max: 72,
    dport_min: 74,
    dport_max: 76,
    proto: 78,
    flags: 79,
    id: 80,
    action: 84,
    pad: 85,
  },
};

/** `struct ips_bucket`. */
export const IPS_BUCKET_LAYOUT: StructLayout = {
  name: "struct ips_bucket",
  size: 2,
  offsets: { start: 0, count: 1 },
};

/** `struct ips_table`. */
export const IPS_TABLE_LAYOUT: StructLayout = {
  name: "struct ips_table",
  size: 8 + IPS_PREFIX_WORDS * 8 + IPS_BUCKETS * 2 + IPS_MAX_SIGNATURES * IPS_SIGNATURE_LAYOUT.size,
  offsets: {
    count: 0,
    pad: 4,
    prefix: 8,
    buckets: 8 + IPS_PREFIX_WORDS * 8,
    sigs: 8 + IPS_PREFIX_WORDS * 8 + IPS_BUCKETS * 2,
  },
};

/** `ips_bucket_of`: the bucket of a case-folded two-byte prefix (`first | second << 8`). */
export function ipsBucketOf(folded: number): number {
  return (Math.imul(folded, 2654435761) >>> 20) & (IPS_BUCKETS - 1);
}

/** `struct ips_source`. */
export const IPS_SOURCE_LAYOUT: StructLayout = {
  name: "struct ips_source",
  size: 88,
  offsets: { syn_window_ns: 0, scan_window_ns: 8, syn_count: 16, scan_ports: 20, scan_bits: 24 },
};

/** `struct ips_scratch`. */
export const IPS_SCRATCH_LAYOUT: StructLayout = {
  name: "struct ips_scratch",
  size: IPS_SCAN_MAX + IPS_MAX_CONTENT,
  offsets: { buf: 0 },
};

/** One signature in the binary form of `struct ips_signature` (content already case-folded). */
export interface IpsSignatureRecord {
  id: number;
  content: Buffer;
  offset: number;
  depth: number;
  sportMin: number;
  sportMax: number;
  dportMin: number;
  dportMax: number;
  proto: number;
  flags: number;
  action: number;
}

/** ASCII upper case to lower case, as the data plane folds bytes (`ips_fold`). */
export function foldAscii(byte: number): number {
  return byte >= 0x41 && byte <= 0x5a ? byte + 32 : byte;
}

/** The byte and, for an ASCII letter, its other case. */
function caseVariants(byte: number, nocase: boolean): number[] {
  const lower = foldAscii(byte);
  return nocase && lower >= 0x61 && lower <= 0x7a ? [lower, lower - 32] : [byte];
}

/**
 * Encode a whole `struct ips_table`: the prefilter bit (`first | second << 8`) of each
 * signature's first two bytes, in every case variant for nocase; the signatures sorted by the
 * bucket of their case-folded first two bytes (in the given order within a bucket); and each
 * bucket's range.
 */
export function encodeIpsTable(signatures: readonly IpsSignatureRecord[]): Buffer {
  if (signatures.length > IPS_MAX_SIGNATURES) {
    throw new RangeError(`${signatures.length} signatures; at most ${IPS_MAX_SIGNATURES} fit`);
  }
  const table = Buffer.alloc(IPS_TABLE_LAYOUT.size);
  table.writeUInt32LE(signatures.length, 0);
  const sigsAt = IPS_TABLE_LAYOUT.offsets.sigs!;
  const bucketsAt = IPS_TABLE_LAYOUT.offsets.buckets!;
  const bucketOf = (sig: IpsSignatureRecord) =>
    ipsBucketOf(foldAscii(sig.content[0] ?? 0) | (foldAscii(sig.content[1] ?? 0) << 8));
  const sorted = signatures
    .map((sig, order) => ({ sig, order, bucket: bucketOf(sig) }))
    .sort((a, b) => a.bucket - b.bucket || a.order - b.order);
  sorted.forEach(({ bucket }, i) => {
    const at = bucketsAt + bucket * IPS_BUCKET_LAYOUT.size;
    if (table[at + 1] === 0) table[at] = i;
    table[at + 1] = (table[at + 1] ?? 0) + 1;
  });
  sorted.forEach(({ sig }, i) => {
    if (sig.content.length < IPS_MIN_CONTENT || sig.content.length > IPS_MAX_CONTENT)
      throw new RangeError(`signature ${sig.id}: content of ${sig.content.length} bytes`);
    const nocase = (sig.flags & IpsSigFlag.NOCASE) !== 0;
    for (const first of caseVariants(sig.content[0]!, nocase)) {
      for (const second of caseVariants(sig.content[1]!, nocase)) {
        const prefix = first | (second << 8);
        const word = 8 + (prefix >> 6) * 8;
        table.writeBigUInt64LE(table.readBigUInt64LE(word) | (1n << BigInt(prefix & 63)), word);
      }
    }
    const base = sigsAt + i * IPS_SIGNATURE_LAYOUT.size;
    sig.content.copy(table, base);
    table.writeUInt16LE(sig.content.length, base + 64);
    table.writeUInt16LE(sig.offset, base + 66);
    table.writeUInt16LE(sig.depth, base + 68);
    table.writeUInt16LE(sig.sportMin, base + 70);
    table.writeUInt16LE(sig.sportMax, base + 72);
    table.writeUInt16LE(sig.dportMin, base + 74);
    table.writeUInt16LE(sig.dportMax, base + 76);
    table[base + 78] = sig.proto;
    table[base + 79] = sig.flags;
    table.writeUInt32LE(sig.id, base + 80);
    table[base + 84] = sig.action;
  });
  return table;
}

// ---------------------------------------------------------------------------------------------
// nf/l4lb/l4lb_types.h

export { L4LB_MAX_SERVICES, L4LB_MAX_BACKENDS, L4LB_RING_MAX } from "../../../common/api/builtins/index.ts";
/** `L4LB_MAX_FLOWS`: max_entries of `l4lb_flows` and `l4lb_reverse`. */
export const L4LB_MAX_FLOWS = 65536;
/** `L4LB_BACKEND_*` bits of `struct l4lb_backend.flags`. */
export const L4lbBackendFlag = { HEALTHY: 0x01 } as const;

/** `struct l4lb_vip`: key of `l4lb_services`. */
export const L4LB_VIP_LAYOUT: StructLayout = {
  name: "struct l4lb_vip",
  size: 24,
  offsets: { addr: 0, port: 16, proto: 18, pad: 19 },
};

/** `struct l4lb_backend`. */
export const L4LB_BACKEND_LAYOUT: StructLayout = {
  name: "struct l4lb_backend",
  size: 24,
  offsets: { addr: 0, port: 16, flags: 18, pad: 19 },
};

/** `struct l4lb_service`: value of `l4lb_services`. */
export const L4LB_SERVICE_LAYOUT: StructLayout = {
  name: "struct l4lb_service",
  size: 71696,
  offsets: { ring_size: 0, backend_count: 4, healthy_count: 6, backends: 8, ring: 6152, pad: 71689 },
};

/** `struct l4lb_flow`: value of `l4lb_flows`. */
export const L4LB_FLOW_LAYOUT: StructLayout = {
  name: "struct l4lb_flow",
  size: 24,
  offsets: { addr: 0, port: 16, slot: 18, pad: 20 },
};

/** `struct l4lb_nat`: value of `l4lb_reverse`. */
export const L4LB_NAT_LAYOUT: StructLayout = {
  name: "struct l4lb_nat",
  size: 24,
  offsets: { addr: 0, port: 16, pad: 18 },
};

/** Every struct mirrored here, for the BTF comparison. */
export const STRUCT_LAYOUTS: readonly StructLayout[] = [
  NF_STATS_LAYOUT,
  FLOW_KEY_LAYOUT,
  FIREWALL_RULE_LAYOUT,
  FIREWALL_TABLE_LAYOUT,
  RATELIMIT_BUCKET_LAYOUT,
  FLOWMON_COUNTERS_LAYOUT,
  IPS_SIGNATURE_LAYOUT,
  IPS_BUCKET_LAYOUT,
  IPS_TABLE_LAYOUT,
  IPS_SOURCE_LAYOUT,
  IPS_SCRATCH_LAYOUT,
  L4LB_VIP_LAYOUT,
  L4LB_BACKEND_LAYOUT,
  L4LB_SERVICE_LAYOUT,
  L4LB_FLOW_LAYOUT,
  L4LB_NAT_LAYOUT,
];

function roundUp8(n: number): number {
  return (n + 7) & ~7;
}

function expectSize(buffer: Buffer, layout: StructLayout): void {
  if (buffer.length !== layout.size) {
    throw new RangeError(`${layout.name} has ${layout.size} bytes, got ${buffer.length}`);
  }
}
