/**
 * Loading the NFs of one chain instance: each NF object opened, its hook's program selected,
 * the chain settings and its parameters written into `.rodata`, the shared prog array and stats
 * map reused by fd, its own maps reused or created as the caller decides, then verified and
 * loaded. Used for the live revision and for the private self-test instance alike; also what
 * decides that an earlier load can serve again (nfLoadDigest, takeOverNf).
 */
import { createHash } from "node:crypto";
import {
  BpfMap,
  BpfObject,
  BpfSpecError,
  MapType,
  mapTypeName,
  sameMapDefinition,
  u32,
  type MapDefinition,
  type BpfProgram,
  type ObjectMapSpec,
} from "../libbpf/index.ts";
import { ChainContract } from "../nf/types.ts";
import { NF_STATS_LAYOUT, SLUICE_PROGS_ENTRIES, SLUICE_STATS_ENTRIES } from "../nf/structs.ts";
import type { ProgramHook } from "../packet/index.ts";
import { objectDigest, type NfLoadSpec } from "./spec.ts";
import { NfContractError } from "./errors.ts";
import { openObject } from "./objectpool.ts";
import { checkTables } from "./tables.ts";

/** `sluice_progs` as the contract declares it. */
export const PROGS_DEFINITION: MapDefinition = {
  type: MapType.PROG_ARRAY,
  keySize: 4,
  valueSize: 4,
  maxEntries: SLUICE_PROGS_ENTRIES,
  flags: 0,
};

/** `sluice_stats` as the contract declares it. */
export const STATS_DEFINITION: MapDefinition = {
  type: MapType.PERCPU_ARRAY,
  keySize: 4,
  valueSize: NF_STATS_LAYOUT.size,
  maxEntries: SLUICE_STATS_ENTRIES,
  flags: 0,
};

/** `sluice_scratch` as the contract declares it (value: `struct sluice_scratch`, 104 bytes). */
export const SCRATCH_DEFINITION: MapDefinition = ChainContract.maps.sluice_scratch;

/**
 * A new, unpinned scratch map: where the NFs of one chain leave a packet's parse result for
 * the NFs after them. Every NF of the chain must get the same one (see {@link LoadNfsOptions}).
 */
export function createScratchMap(): BpfMap {
  return BpfMap.create({ name: ChainContract.scratchMap, ...SCRATCH_DEFINITION });
}

/** A new, unpinned prog array for one revision (or a self-test instance); the caller owns it. */
export function createProgArray(): BpfMap {
  return BpfMap.create({ name: ChainContract.progsMap, ...PROGS_DEFINITION });
}

/** A new, unpinned stats map; the caller owns it. */
export function createStatsMap(): BpfMap {
  return BpfMap.create({ name: ChainContract.statsMap, ...STATS_DEFINITION });
}

/** How an NF-owned map of a loaded NF came to be. */
export type MapOrigin =
  /** The map of the previous revision, reused: its state carries over. */
  | { kind: "carried" }
  /** A new map: the NF (or the map) is new in the chain. */
  | { kind: "new" }
  /** A new map replacing one whose definition changed: its state is lost. */
  | { kind: "recreated"; reason: string }
  /** A new map whose whole contents the spec's tables define. */
  | { kind: "table" };

/** One NF loaded into the kernel. Owned by whoever called {@link loadNfs}: close with {@link closeNfs}. */
export interface LoadedNf {
  spec: NfLoadSpec;
  /**
   * The loaded object; undefined for a program taken over from the live revision (see
   * {@link takeOverNf}), which `program` then owns.
   */
  object: BpfObject | undefined;
  /** The program of the chain's hook (borrowed from `object`, if there is one). */
  program: BpfProgram;
  programName: string;
  statsIndex: number;
  /** NF-owned maps by name (borrowed from `object`; empty for a taken-over program). */
  maps: Map<string, BpfMap>;
  origins: Map<string, MapOrigin>;
  /**
   * Whether the loaded program may serve again in place of a new load of the same
   * {@link nfLoadDigest}: it keeps no state of its own that a new load would start afresh
   * (writable globals in `.data` / `.bss`).
   */
  sharable: boolean;
  /**
   * Internal maps of the NF's writable globals (`.data`, `.bss`): state that starts from its
   * initial values in every new load, so it never carries over to a new revision.
   */
  globals: string[];
  /**
   * Whether every NF-owned map that is not a table is emptied by {@link clearState}, so that
   * a reused self-test NF starts every vector as a new one would.
   */
  clearable: boolean;
}

/** Options of {@link loadNfs}. */
export interface LoadNfsOptions {
  hook: ProgramHook;
  functions: readonly NfLoadSpec[];
  /** Stats index of each NF (parallel to `functions`). */
  statsIndexes: readonly number[];
  /** The instance's prog array and stats map, reused by every NF. */
  progs: BpfMap;
  stats: BpfMap;
  /**
   * The chain's scratch map, reused by every NF that declares it (every object built against
   * this `sluice.h`), which then parses a packet only when no NF before it did. It must be the
   * same map for every NF of the chain in every revision (the last NF can be taken over from
   * the live revision): the chain's, as `stats`. Without it each NF gets a map of its own and
   * parses every packet itself.
   */
  scratch?: BpfMap;
  /**
   * Per-function time of 1 in this many packets (a power of two; 0 or absent: off), written as
   * `sluice_time_sample` into every NF that declares it. The time sums go to `scratch`, so this
   * needs `scratch` and a root loaded with the same setting.
   */
  timeSample?: number;
  /**
   * For each NF-owned map that is not a table: an existing map to reuse (borrowed: libbpf
   * duplicates the fd) and how to report the choice. Without it, every map is new.
   */
  chooseMap?: (nf: NfLoadSpec, map: ObjectMapSpec) => { reuse?: BpfMap; origin: MapOrigin };
  /**
   * At most this many entries for every NF-owned hash-like map that is not a table (those
   * {@link clearState} empties). For the self-test instance: test packets put a few entries
   * there, and emptying a map costs a walk over all of its buckets (about 70 µs for an LRU
   * hash of 65,536 entries, before every vector), however few entries it holds.
   */
  maxStateEntries?: number;
  /**
   * Called by {@link loadNfsConcurrently} as soon as NF `i` has loaded, before the others may
   * have (to put it in its slot of `progs` early, see buildRevision). A throw fails the load.
   */
  onLoaded?: (i: number, program: BpfProgram) => void;
}

const CONTRACT_MAPS = new Set<string>([
  ChainContract.progsMap,
  ChainContract.statsMap,
  ChainContract.scratchMap,
]);
/** Internal maps of writable globals (`.data`, `.data.*`, `.bss`): state a new load starts afresh. */
const WRITABLE_GLOBALS = /\.(data|bss)(\.|$)/;

/** Map types {@link clearState} empties. */
export const HASH_LIKE: ReadonlySet<number> = new Set<number>([
  MapType.HASH,
  MapType.PERCPU_HASH,
  MapType.LRU_HASH,
  MapType.LRU_PERCPU_HASH,
  MapType.LPM_TRIE,
]);
const TYPE_OF_HOOK: Record<ProgramHook, string> = { xdp: "xdp", tc: "sched_cls" };

/**
 * Opens, configures and loads every NF; NF `i` tail-calls slot `i + 1` of `progs` and the last
 * one ends the chain. Tables are not written and the prog array is not filled (see
 * {@link fillTables}, {@link fillProgArray}). On any failure everything opened is closed and
 * the error is passed on: VerifierError for a rejected program, NfContractError,
 * ChainSpecError, BpfError.
 */
export function loadNfs(options: LoadNfsOptions): LoadedNf[] {
  const loaded: LoadedNf[] = [];
  try {
    options.functions.forEach((spec, i) => {
      loaded.push(loadNf(options, spec, i));
    });
    return loaded;
  } catch (err) {
    closeNfs(loaded);
    throw err;
  }
}

/** Loads NF `i` of `options.functions` (see {@link loadNfs}); the caller owns the result. */
export function loadNf(options: LoadNfsOptions, spec: NfLoadSpec, i: number): LoadedNf {
  const opened = openNf(options, spec, i);
  try {
    opened.object.load();
    return loadedNf(opened);
  } catch (err) {
    opened.object.close();
    throw err;
  }
}

/**
 * Loads NFs `indexes` of `options.functions` at once, each verified on a worker thread (see
 * BpfObject.loadAsync), so that they share the machine's cores; in the order of `indexes`. An
 * NF's verification starts as soon as it is opened, while the main thread opens the next. All
 * or nothing: on a failure everything is closed, and the failed NF is loaded once more on the
 * main thread, so that its error carries what libbpf printed.
 */
export async function loadNfsConcurrently(
  options: LoadNfsOptions,
  indexes: readonly number[],
): Promise<LoadedNf[]> {
  const opened: OpenedNf[] = [];
  const loading: Promise<void>[] = [];
  let openFailure: { error: unknown } | undefined;
  for (const i of indexes) {
    try {
      const nf = openNf(options, options.functions[i]!, i);
      opened.push(nf);
      loading.push(
        nf.object.loadAsync().then(() => options.onLoaded?.(i, nf.object.program(nf.programName))),
      );
    } catch (err) {
      openFailure = { error: err };
      break;
    }
  }
  const results = await Promise.allSettled(loading);
  if (openFailure) {
    for (const nf of opened) nf.object.close();
    throw openFailure.error;
  }
  const failed = results.findIndex((r) => r.status === "rejected");
  if (failed < 0) return opened.map(loadedNf);
  for (const nf of opened) nf.object.close();
  const i = indexes[failed]!;
  closeNfs([loadNf(options, options.functions[i]!, i)]);
  // Loaded this time (the failure was passing): report the first attempt's error.
  throw (results[failed] as PromiseRejectedResult).reason;
}

/** An NF object opened and configured for loading. */
interface OpenedNf {
  object: BpfObject;
  spec: NfLoadSpec;
  programName: string;
  statsIndex: number;
  mapSpecs: ObjectMapSpec[];
  ownMaps: ObjectMapSpec[];
  origins: Map<string, MapOrigin>;
}

/** Opens NF `i` and configures it for loading; throws (having closed it) what is wrong with it. */
function openNf(options: LoadNfsOptions, spec: NfLoadSpec, i: number): OpenedNf {
  const object = openObject(spec.objectPath);
  try {
    const programName = pickProgram(object, spec, options.hook);
    object.selectPrograms([programName]);
    const mapSpecs = object.mapSpecs();
    for (const [name, definition] of [
      [ChainContract.progsMap, PROGS_DEFINITION],
      [ChainContract.statsMap, STATS_DEFINITION],
    ] as const) {
      const declared = mapSpecs.find((m) => m.name === name);
      if (!declared || !sameMapDefinition(declared, definition)) {
        throw new NfContractError(
          spec.name,
          `${spec.objectPath} ${declared ? "declares" : "lacks"} map ${name}${declared ? " unlike the chain contract" : ""}; include sluice.h`,
        );
      }
    }
    const scratch = mapSpecs.find((m) => m.name === ChainContract.scratchMap);
    if (scratch && !sameMapDefinition(scratch, SCRATCH_DEFINITION)) {
      throw new NfContractError(
        spec.name,
        `${spec.objectPath} declares map ${ChainContract.scratchMap} unlike the chain contract; include sluice.h`,
      );
    }
    const shareParse = scratch !== undefined && options.scratch !== undefined;
    const timed =
      shareParse &&
      (options.timeSample ?? 0) > 0 &&
      object.rodataVariables().some((v) => v.name === ChainContract.rodata.timeSample);
    const isLast = i === options.functions.length - 1;
    const statsIndex = options.statsIndexes[i] ?? i;
    try {
      object.setRodata({
        ...(spec.rodata ?? {}),
        [ChainContract.rodata.nextSlot]: i + 1,
        [ChainContract.rodata.isLast]: isLast ? 1 : 0,
        [ChainContract.rodata.nfIndex]: statsIndex,
        ...(shareParse ? { [ChainContract.rodata.shareParse]: 1 } : {}),
        ...(timed ? { [ChainContract.rodata.timeSample]: options.timeSample! } : {}),
      });
    } catch (err) {
      if (err instanceof BpfSpecError) throw new NfContractError(spec.name, err.message);
      throw err;
    }
    object.reuseMap(ChainContract.progsMap, options.progs);
    object.reuseMap(ChainContract.statsMap, options.stats);
    if (shareParse) object.reuseMap(ChainContract.scratchMap, options.scratch!);

    const ownMaps = mapSpecs.filter((m) => !m.internal && !CONTRACT_MAPS.has(m.name));
    const tables = spec.tables ?? {};
    checkTables(
      spec,
      (name) => ownMaps.find((m) => m.name === name),
      ownMaps.map((m) => m.name),
    );
    const origins = new Map<string, MapOrigin>();
    for (const declared of ownMaps) {
      if (declared.name in tables) {
        origins.set(declared.name, { kind: "table" });
        continue;
      }
      let map = declared;
      const limit = options.maxStateEntries;
      if (limit !== undefined && HASH_LIKE.has(map.type) && map.maxEntries > limit) {
        object.setMaxEntries(map.name, limit);
        map = { ...map, maxEntries: limit };
      }
      const choice = options.chooseMap?.(spec, map) ?? { origin: { kind: "new" } };
      if (choice.reuse) object.reuseMap(map.name, choice.reuse);
      origins.set(map.name, choice.origin);
    }
    return { object, spec, programName, statsIndex, mapSpecs, ownMaps, origins };
  } catch (err) {
    object.close();
    throw err;
  }
}

/** The loaded NF of an opened one whose object has loaded. */
function loadedNf(opened: OpenedNf): LoadedNf {
  const { object, spec, ownMaps, mapSpecs } = opened;
  const globals = mapSpecs.filter((m) => m.internal && WRITABLE_GLOBALS.test(m.name)).map((m) => m.name);
  const maps = new Map<string, BpfMap>();
  for (const map of ownMaps) maps.set(map.name, object.map(map.name));
  return {
    spec,
    object,
    program: object.program(opened.programName),
    programName: opened.programName,
    statsIndex: opened.statsIndex,
    maps,
    origins: opened.origins,
    sharable: globals.length === 0,
    globals,
    clearable: ownMaps.every((m) => m.name in (spec.tables ?? {}) || HASH_LIKE.has(m.type)),
  };
}

/** The NF's program for the hook: the one named in the spec, else the only one of the hook's type. */
function pickProgram(object: BpfObject, spec: NfLoadSpec, hook: ProgramHook): string {
  const programs = object.programSpecs();
  const wantedType = TYPE_OF_HOOK[hook];
  const list = programs.map((p) => `${p.name} (${p.typeName})`).join(", ") || "none";
  if (spec.programName !== undefined) {
    const found = programs.find((p) => p.name === spec.programName);
    if (!found) throw new NfContractError(spec.name, `no program ${spec.programName} (programs: ${list})`);
    if (found.typeName !== wantedType) {
      throw new NfContractError(
        spec.name,
        `program ${found.name} is ${found.typeName}; a ${hook} chain needs ${wantedType}`,
      );
    }
    return found.name;
  }
  const candidates = programs.filter((p) => p.typeName === wantedType);
  if (candidates.length === 1) return candidates[0]!.name;
  const suffix = `_${hook}`;
  const named = candidates.filter((p) => p.name.endsWith(suffix));
  if (named.length === 1) return named[0]!.name;
  throw new NfContractError(
    spec.name,
    candidates.length === 0
      ? `no ${wantedType} program for a ${hook} chain (programs: ${list})`
      : `several ${wantedType} programs (${candidates.map((p) => p.name).join(", ")}); name one in programName`,
  );
}

/** Puts NF `i`'s program into slot `i` of `progs`. */
export function fillProgArray(progs: BpfMap, nfs: readonly LoadedNf[]): void {
  nfs.forEach((nf, i) => progs.update(u32(i), u32(nf.program.fd)));
}

/** Closes every NF object (programs and maps stay while pinned or referenced). */
export function closeNfs(nfs: readonly LoadedNf[]): void {
  for (const nf of nfs) {
    if (nf.object) nf.object.close();
    else nf.program.close();
  }
}

/**
 * Takes over the live revision's program `live` for NF `spec` of a new revision, instead of
 * loading the same program again (see {@link nfLoadDigest}). Only the last NF of a revision
 * qualifies: it tail-calls nothing, so it is not tied to its revision's prog array, and its maps
 * are the chain's pinned ones, which the new revision would carry over anyway. `live` is a
 * handle the caller holds (the fd kept since the load, or opened from the revision's pin: never
 * by id, which needs CAP_SYS_ADMIN); the result owns a new fd on the same program.
 */
export function takeOverNf(
  spec: NfLoadSpec,
  live: BpfProgram,
  programName: string,
  statsIndex: number,
  maps: readonly string[],
): LoadedNf {
  return {
    spec,
    object: undefined,
    program: live.dup(),
    programName,
    statsIndex,
    maps: new Map(),
    origins: new Map(maps.map((name): [string, MapOrigin] => [name, { kind: "carried" }])),
    sharable: true,
    globals: [],
    clearable: false,
  };
}

/**
 * Identity of a program load: two loads with the same digest yield the same program (same
 * object contents, program, hook, `.rodata` including the chain settings, and the same maps
 * filled from tables). `i` and `n` place the NF in its chain; `statsIndex` is its counters slot.
 */
export function nfLoadDigest(
  hook: ProgramHook,
  spec: NfLoadSpec,
  i: number,
  n: number,
  statsIndex: number,
  timeSample = 0,
): string {
  const rodata = Object.entries(spec.rodata ?? {})
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([k, v]) => [k, String(v)]);
  return createHash("sha256")
    .update(
      JSON.stringify([
        hook,
        objectDigest(spec.objectPath),
        spec.programName ?? "",
        rodata,
        { next: i + 1, last: i === n - 1, statsIndex },
        Object.keys(spec.tables ?? {}).sort(),
        // Absent when off, so that digests of untimed loads stay what they were.
        ...(timeSample > 0 ? [{ timeSample }] : []),
      ]),
    )
    .digest("hex");
}

/**
 * Forgets every packet the scratch map holds a parse result or a clock reading for, on every
 * CPU: the next NF to run parses and reads the clock itself, also when it is not the chain's
 * first (a test run that enters at NF i > 0, which NF 0 does not count as a new packet).
 */
export function clearScratch(scratch: BpfMap): void {
  scratch.updatePerCpu(u32(0), []);
}

/** Empties the NF-owned hash-like maps that are not tables (state such as buckets and flows). */
export function clearState(nfs: readonly LoadedNf[]): void {
  for (const nf of nfs) {
    for (const [name, map] of nf.maps) {
      if (nf.origins.get(name)?.kind === "table" || !HASH_LIKE.has(map.type)) continue;
      const keys = [...map.keys()];
      for (const key of keys) map.delete(key);
    }
  }
}

/** Why a pinned map cannot stand in for the one an object declares, or undefined when it can. */
export function definitionChange(pinned: MapDefinition, declared: MapDefinition): string | undefined {
  if (sameMapDefinition(pinned, declared)) return undefined;
  const changes: string[] = [];
  if (pinned.type !== declared.type)
    changes.push(`type ${mapTypeName(pinned.type)} -> ${mapTypeName(declared.type)}`);
  if (pinned.keySize !== declared.keySize) changes.push(`key size ${pinned.keySize} -> ${declared.keySize}`);
  if (pinned.valueSize !== declared.valueSize)
    changes.push(`value size ${pinned.valueSize} -> ${declared.valueSize}`);
  if (pinned.maxEntries !== declared.maxEntries)
    changes.push(`max entries ${pinned.maxEntries} -> ${declared.maxEntries}`);
  if (pinned.flags !== declared.flags)
    changes.push(`flags 0x${pinned.flags.toString(16)} -> 0x${declared.flags.toString(16)}`);
  return `definition changed: ${changes.join(", ")}`;
}
