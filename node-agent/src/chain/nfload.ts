/**
 * Loading the NFs of one chain instance: each NF object opened, its hook's program selected,
 * the chain settings and its parameters written into `.rodata`, the shared prog array and stats
 * map reused by fd, its own maps reused or created as the caller decides, then verified and
 * loaded. Used for the live revision and for the private self-test instance alike.
 */
import {
  BpfMap,
  BpfObject,
  BpfSpecError,
  MapType,
  mapTypeName,
  sameMapDefinition,
  u32,
  type BpfProgram,
  type MapDefinition,
  type ObjectMapSpec,
} from "../libbpf/index.ts";
import { ChainContract } from "../nf/types.ts";
import { NF_STATS_LAYOUT, SLUICE_PROGS_ENTRIES, SLUICE_STATS_ENTRIES } from "../nf/structs.ts";
import type { ProgramHook } from "../packet/index.ts";
import { ChainSpecError, type NfLoadSpec, type TableEntry } from "./spec.ts";
import { NfContractError } from "./errors.ts";

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
  object: BpfObject;
  /** The program of the chain's hook (borrowed from `object`). */
  program: BpfProgram;
  programName: string;
  statsIndex: number;
  /** NF-owned maps by name (borrowed from `object`). */
  maps: Map<string, BpfMap>;
  origins: Map<string, MapOrigin>;
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
   * For each NF-owned map that is not a table: an existing map to reuse (borrowed: libbpf
   * duplicates the fd) and how to report the choice. Without it, every map is new.
   */
  chooseMap?: (nf: NfLoadSpec, map: ObjectMapSpec) => { reuse?: BpfMap; origin: MapOrigin };
}

const CONTRACT_MAPS = new Set<string>([ChainContract.progsMap, ChainContract.statsMap]);
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

function loadNf(options: LoadNfsOptions, spec: NfLoadSpec, i: number): LoadedNf {
  const object = BpfObject.open(spec.objectPath);
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
    const isLast = i === options.functions.length - 1;
    try {
      object.setRodata({
        ...(spec.rodata ?? {}),
        [ChainContract.rodata.nextSlot]: i + 1,
        [ChainContract.rodata.isLast]: isLast ? 1 : 0,
        [ChainContract.rodata.nfIndex]: options.statsIndexes[i] ?? i,
      });
    } catch (err) {
      if (err instanceof BpfSpecError) throw new NfContractError(spec.name, err.message);
      throw err;
    }
    object.reuseMap(ChainContract.progsMap, options.progs);
    object.reuseMap(ChainContract.statsMap, options.stats);

    const ownMaps = mapSpecs.filter((m) => !m.internal && !CONTRACT_MAPS.has(m.name));
    const tables = spec.tables ?? {};
    for (const [mapName, entries] of Object.entries(tables)) {
      const map = ownMaps.find((m) => m.name === mapName);
      if (!map) {
        const known = ownMaps.map((m) => m.name).join(", ") || "none";
        throw new ChainSpecError(`${spec.name}: tables: no map ${mapName} in the NF (its maps: ${known})`);
      }
      checkTableEntries(spec.name, map, entries);
    }
    const origins = new Map<string, MapOrigin>();
    for (const map of ownMaps) {
      if (map.name in tables) {
        origins.set(map.name, { kind: "table" });
        continue;
      }
      const choice = options.chooseMap?.(spec, map) ?? { origin: { kind: "new" } };
      if (choice.reuse) object.reuseMap(map.name, choice.reuse);
      origins.set(map.name, choice.origin);
    }

    object.load();
    const maps = new Map<string, BpfMap>();
    for (const map of ownMaps) maps.set(map.name, object.map(map.name));
    return {
      spec,
      object,
      program: object.program(programName),
      programName,
      statsIndex: options.statsIndexes[i] ?? i,
      maps,
      origins,
    };
  } catch (err) {
    object.close();
    throw err;
  }
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

function checkTableEntries(nf: string, map: ObjectMapSpec, entries: readonly TableEntry[]): void {
  if (
    map.type === MapType.PERCPU_HASH ||
    map.type === MapType.PERCPU_ARRAY ||
    map.type === MapType.LRU_PERCPU_HASH
  ) {
    throw new ChainSpecError(`${nf}: tables: map ${map.name} is per-CPU; tables fill only shared maps`);
  }
  if (entries.length > map.maxEntries) {
    throw new ChainSpecError(
      `${nf}: tables: ${entries.length} entries for map ${map.name} of ${map.maxEntries}`,
    );
  }
  entries.forEach((entry, i) => {
    if (entry.key.length !== map.keySize || entry.value.length !== map.valueSize) {
      throw new ChainSpecError(
        `${nf}: tables: ${map.name}[${i}]: key ${entry.key.length} / value ${entry.value.length} bytes; the map has ${map.keySize} / ${map.valueSize}`,
      );
    }
  });
}

/** Writes every NF's tables into its (new) table maps. */
export function fillTables(nfs: readonly LoadedNf[]): void {
  for (const nf of nfs) {
    for (const [mapName, entries] of Object.entries(nf.spec.tables ?? {})) {
      const map = nf.maps.get(mapName)!;
      for (const entry of entries) map.update(entry.key, entry.value);
    }
  }
}

/**
 * Makes `map` hold exactly `entries`: new values are written first, then keys not in the set
 * are deleted, so that a reader never finds the table emptier than either the old or the new set.
 */
export function replaceEntries(map: BpfMap, entries: readonly TableEntry[]): void {
  const wanted = new Set<string>();
  for (const entry of entries) {
    map.update(entry.key, entry.value);
    wanted.add(entry.key.toString("hex"));
  }
  const stale = [...map.keys()].filter((key) => !wanted.has(key.toString("hex")));
  for (const key of stale) map.delete(key);
}

/** Puts NF `i`'s program into slot `i` of `progs`. */
export function fillProgArray(progs: BpfMap, nfs: readonly LoadedNf[]): void {
  nfs.forEach((nf, i) => progs.update(u32(i), u32(nf.program.fd)));
}

/** Closes every NF object (programs and maps stay while pinned or referenced). */
export function closeNfs(nfs: readonly LoadedNf[]): void {
  for (const nf of nfs) nf.object.close();
}

const HASH_LIKE = new Set<number>([
  MapType.HASH,
  MapType.PERCPU_HASH,
  MapType.LRU_HASH,
  MapType.LRU_PERCPU_HASH,
  MapType.LPM_TRIE,
]);

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
