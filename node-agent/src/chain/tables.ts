/**
 * Runtime tables: the map contents a spec defines (firewall rules, say). Checked against the
 * NF's maps before anything is written, written into a new revision's maps, or replaced in the
 * live maps in place when only tables changed.
 */
import { MapType, type BpfMap, type MapDefinition } from "../libbpf/index.ts";
import type { LoadedNf } from "./nfload.ts";
import { ChainSpecError, type NfLoadSpec, type TableEntry } from "./spec.ts";

/**
 * Checks the spec's tables against the NF's maps (by name; `known` lists them for the message):
 * each names a shared (not per-CPU) map and fits its sizes and capacity. Throws ChainSpecError.
 */
export function checkTables(
  spec: NfLoadSpec,
  find: (map: string) => MapDefinition | undefined,
  known: readonly string[],
): void {
  for (const [mapName, entries] of Object.entries(spec.tables ?? {})) {
    const map = find(mapName);
    if (!map) {
      throw tableError(
        spec.name,
        `tables.${mapName}`,
        `no map ${mapName} in the NF (its maps: ${known.join(", ") || "none"})`,
      );
    }
    checkTableEntries(spec.name, mapName, map, entries);
  }
}

/**
 * `<nf>: tables: [<at>: ]<message>` as users read it, with the field of the NF's spec at fault
 * (`tables.<map>` or `tables.<map>[i]`) as data.
 */
function tableError(nf: string, path: string, message: string, at?: string): ChainSpecError {
  return new ChainSpecError(`${nf}: tables: ${at ? `${at}: ` : ""}${message}`, [{ path, message }]);
}

function checkTableEntries(
  nf: string,
  mapName: string,
  map: MapDefinition,
  entries: readonly TableEntry[],
): void {
  if (
    map.type === MapType.PERCPU_HASH ||
    map.type === MapType.PERCPU_ARRAY ||
    map.type === MapType.LRU_PERCPU_HASH
  ) {
    throw tableError(nf, `tables.${mapName}`, `map ${mapName} is per-CPU; tables fill only shared maps`);
  }
  if (entries.length > map.maxEntries) {
    throw tableError(
      nf,
      `tables.${mapName}`,
      `${entries.length} entries for map ${mapName} of ${map.maxEntries}`,
    );
  }
  entries.forEach((entry, i) => {
    if (entry.key.length !== map.keySize || entry.value.length !== map.valueSize) {
      throw tableError(
        nf,
        `tables.${mapName}[${i}]`,
        `key ${entry.key.length} / value ${entry.value.length} bytes; the map has ${map.keySize} / ${map.valueSize}`,
        `${mapName}[${i}]`,
      );
    }
  });
}

/**
 * Writes every NF's tables into its (new) table maps. A taken-over program keeps the live
 * table maps, which hold the same tables already.
 */
export function fillTables(nfs: readonly LoadedNf[]): void {
  for (const nf of nfs) {
    for (const [mapName, entries] of Object.entries(nf.spec.tables ?? {})) {
      // Absent for a taken-over program (see above).
      const map = nf.maps.get(mapName);
      if (!map) continue;
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
