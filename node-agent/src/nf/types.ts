import type { ProgramHook } from "../packet/verdict.ts";

/** `enum bpf_map_type` values of the maps the chain and the built-in NFs declare. */
export const BpfMapType = { HASH: 1, ARRAY: 2, PROG_ARRAY: 3, PERCPU_ARRAY: 6, LRU_HASH: 9 } as const;

/** `BPF_F_NO_PREALLOC`. */
export const BPF_F_NO_PREALLOC = 1;

/**
 * A map as an NF object declares it (the same shape as the loader's map definition); a map
 * carries over only while all of this is unchanged.
 */
export interface MapDefinition {
  /** `BPF_MAP_TYPE_*` ({@link BpfMapType}). */
  type: number;
  keySize: number;
  valueSize: number;
  maxEntries: number;
  /** `BPF_F_*` map flags. */
  flags: number;
}

/** Names and map definitions fixed by the chain contract (`bpf/include/sluice.h`, `bpf/root`). */
export const ChainContract = {
  /** The revision's prog array, shared by all NFs of one revision. */
  progsMap: "sluice_progs",
  /** Per-CPU `struct sluice_nf_stats` by stable NF index, shared by all revisions. */
  statsMap: "sluice_stats",
  /**
   * Per-CPU `struct sluice_scratch`: entry 0 the packet's parse result and clock reading,
   * shared along the chain (see `sluice_parse.h`); entry 1 the stamp of a packet sampled for
   * per-function time, entry 2 + i the time sums of the NF with stats index i (`struct
   * sluice_nf_time` in the first 16 bytes). One per chain, shared by every revision.
   */
  scratchMap: "sluice_scratch",
  /** Scratch entry of stats index 0's `struct sluice_nf_time` (SLUICE_TIME_BASE). */
  timeBase: 2,
  /** Definitions of the shared maps, as every NF object declares them. */
  maps: {
    sluice_progs: { type: BpfMapType.PROG_ARRAY, keySize: 4, valueSize: 4, maxEntries: 33, flags: 0 },
    sluice_stats: { type: BpfMapType.PERCPU_ARRAY, keySize: 4, valueSize: 40, maxEntries: 64, flags: 0 },
    sluice_scratch: { type: BpfMapType.PERCPU_ARRAY, keySize: 4, valueSize: 104, maxEntries: 66, flags: 0 },
  } satisfies Record<string, MapDefinition>,
  /**
   * `.rodata` settings the loader writes into every NF before load (all `__u32`). `shareParse`
   * (1: take and leave the parse result in `sluice_scratch`) only in objects that declare it;
   * `timeSample` (per-function time of 1 in N packets, N a power of two; 0 off) only when on,
   * in the objects that declare it (the root and every NF built against this `sluice.h`).
   */
  rodata: {
    nextSlot: "sluice_next_slot",
    isLast: "sluice_is_last",
    nfIndex: "sluice_nf_index",
    shareParse: "sluice_share_parse",
    timeSample: "sluice_time_sample",
  },
  root: {
    /** Entry of the root object, relative to `bpf/`. */
    entry: "root/root.bpf.c",
    programs: { xdp: "sluice_root_xdp", tc: "sluice_root_tc" } satisfies Record<ProgramHook, string>,
    /** One-slot prog array; slot 0 holds NF 0 of the live revision. */
    progArray: "sluice_root",
    /** Per-CPU `struct sluice_nf_stats`, entry 0: packets that found no chain (as errors). */
    statsMap: "sluice_root_stats",
  },
} as const;

/** One map entry, ready for `bpf_map_update_elem`. */
export interface MapEntry {
  key: Buffer;
  value: Buffer;
}

/**
 * Desired contents of an NF's runtime-table maps: map name -> every entry it must hold. The
 * applier writes these entries and deletes any other key, so the map ends up holding exactly
 * this set.
 */
export type MapContents = Record<string, MapEntry[]>;

/** A `const volatile` setting to write into `.rodata` before load. */
export interface RodataSetting {
  /** The C variable name, e.g. `ratelimit_rate`. */
  variable: string;
  type: "u8" | "u16" | "u32" | "u64";
  value: bigint;
}

/** Settings as a record by variable name, the form the loader's `.rodata` option takes. */
export function rodataValues(settings: readonly RodataSetting[]): Record<string, bigint> {
  return Object.fromEntries(settings.map((setting) => [setting.variable, setting.value]));
}

/** The little-endian bytes of a setting, as they go into `.rodata`. */
export function encodeRodataValue(setting: RodataSetting): Buffer {
  const sizes = { u8: 1, u16: 2, u32: 4, u64: 8 } as const;
  const bytes = Buffer.alloc(sizes[setting.type]);
  if (setting.type === "u64") bytes.writeBigUInt64LE(setting.value);
  else bytes.writeUIntLE(Number(setting.value), 0, sizes[setting.type]);
  return bytes;
}

/**
 * A built-in network function: where its C source is, what it attaches to, its typed
 * parameters (load-time `.rodata` settings: changing them needs no recompile) and its runtime
 * tables (map entries that change without reloading).
 */
export interface BuiltinNf<Params = unknown, Tables = unknown> {
  /** Name used in manifests: `source: { builtin: <name> }`. */
  readonly name: string;
  /** The C entry file, relative to `bpf/`. */
  readonly entry: string;
  /** The directory whose contents decide the compile cache key, relative to `bpf/`. */
  readonly sourceDir: string;
  /** Program name per supported program type (`<nf>_xdp`, `<nf>_tc`). */
  readonly programs: Readonly<Partial<Record<ProgramHook, string>>>;
  /** The `.rodata` settings for parameters parsed with the API's schema (`common/api/builtins`). */
  rodata(params: Params): RodataSetting[];
  /** Map contents for tables parsed with the API's schema. Every map named in `tableMaps` appears in the result. */
  encodeTables(tables: Tables): MapContents;
  /** Maps that encodeTables fills (replaced as a whole on every table change). */
  readonly tableMaps: readonly string[];
  /** The NF's own maps (carried over across revisions while their definition is unchanged). */
  readonly maps: Readonly<Record<string, MapDefinition>>;
}
