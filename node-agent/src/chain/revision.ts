/**
 * A chain's revisions: building one next to the live one (NFs loaded, maps carried over or
 * created, pinned under rev/<generation>), making it live once switched in, and releasing the
 * one it replaced. Which maps carry over is decided here, for every switch and change of hook:
 * a pinned map of the same NF and name is reused when its definition (type, key and value size,
 * max entries, flags) is unchanged, and recreated, with the reason, otherwise.
 */
import { existsSync, mkdirSync, readdirSync, renameSync, rmSync } from "node:fs";
import { join } from "node:path";
import { BpfMap, u32, type BpfProgram } from "../libbpf/index.ts";
import { SLUICE_STATS_ENTRIES } from "../nf/structs.ts";
import { ChainContract } from "../nf/types.ts";
import { programHook, type ProgramHook } from "../packet/index.ts";
import {
  closeRevision,
  liveRevisionOf,
  releaseStandby,
  type BuiltRevision,
  type Chain,
  type LiveRevision,
  type ManagerContext,
} from "./chain.ts";
import { nfTablesDigest, type Digests } from "./digests.ts";
import { loadFused } from "./fused.ts";
import { ChainStateError } from "./errors.ts";
import { createMetaMap, META_FORMAT, writeMeta, type RevisionMeta, type RevisionNf } from "./meta.ts";
import {
  closeNfs,
  createProgArray,
  definitionChange,
  fillProgArray,
  loadNfsConcurrently,
  nfLoadDigest,
  takeOverNf,
  type LoadedNf,
  type LoadNfsOptions,
} from "./nfload.ts";
import type { ChainSpec } from "./spec.ts";
import { keepAsStandby, standbyPlanKey } from "./standby.ts";
import { statsValueSize } from "./status.ts";
import { fillTables } from "./tables.ts";
import type { NfMapRef, RecreatedMap } from "./types.ts";

/** Why an NF's writable globals do not carry over. */
export const GLOBALS_NOT_CARRIED =
  "writable globals (.data/.bss) start from their initial values in a new load; keep state in maps to carry it over";

/**
 * Loads revision `chain.nextGeneration` of `spec` next to the live one and pins it under
 * rev/<generation>; on failure removes all of it. Nothing live changes. `timeSample`: see
 * ChainManagerOptions.timeSample.
 */
export async function buildRevision(
  chain: Chain,
  spec: ChainSpec,
  digests: Digests,
  timeSample = 0,
): Promise<BuiltRevision> {
  const planKey = standbyPlanKey(spec, digests.code, timeSample);
  const generation = chain.nextGeneration++;
  const { paths } = chain;
  const opened: BpfMap[] = [];
  let progs: BpfMap | undefined;
  let metaMap: BpfMap | undefined;
  const nfs: LoadedNf[] = [];
  const programs: BpfProgram[] = [];
  try {
    progs = createProgArray();
    // Pinned before it is filled: an unpinned prog array is emptied when its last fd closes,
    // so a crash right after the switch would otherwise break the live chain.
    progs.pin(paths.revProgs(generation));
    const statsIndexes = assignStatsIndexes(chain, spec);
    const carried: NfMapRef[] = [];
    const recreated: RecreatedMap[] = [];
    const hook = programHook(spec.hook);
    const options: LoadNfsOptions = {
      hook,
      functions: spec.functions,
      statsIndexes,
      progs,
      stats: chain.stats,
      // Each NF goes into its slot as soon as it has loaded: an NF whose next slot is filled
      // when it is compiled gets its direct jump written then, not patched into live code
      // afterwards (about 70 µs per patch here, much more while the other CPUs are busy).
      onLoaded: (i, program) => progs!.update(u32(i), u32(program.fd)),
      scratch: chain.scratch,
      timeSample: timeSample,
      chooseMap: (nf, map) => {
        const pinPath = paths.map(nf.name, map.name);
        if (!existsSync(pinPath)) return { origin: { kind: "new" } };
        const pinned = BpfMap.fromPin(pinPath, map.name);
        opened.push(pinned);
        const change = definitionChange(pinned.definition(), map);
        if (change) {
          recreated.push({ nf: nf.name, map: map.name, reason: change });
          return { origin: { kind: "recreated", reason: change } };
        }
        carried.push({ nf: nf.name, map: map.name });
        return { reuse: pinned, origin: { kind: "carried" } };
      },
    };
    const n = spec.functions.length;
    // A fused revision is one program: nothing of a linked one can serve in it.
    const takeOver = spec.fused ? undefined : lastNfToTakeOver(chain, spec, hook, statsIndexes, timeSample);
    const toLoad = spec.functions.map((_, i) => i).filter((i) => !(takeOver && i === n - 1));
    if (takeOver) progs.update(u32(n - 1), u32(takeOver.program.fd));
    const loadStarted = performance.now();
    if (spec.fused) nfs.push(...(await loadFused(options, spec.fused)));
    else nfs.push(...(await loadNfsConcurrently(options, toLoad)));
    const loadMs = performance.now() - loadStarted;
    if (takeOver) {
      const last = spec.functions[n - 1]!;
      nfs.push(
        takeOverNf(last, takeOver.program, takeOver.nf.program, statsIndexes[n - 1]!, takeOver.nf.maps),
      );
      const tableMaps = new Set(takeOver.nf.tableMaps);
      for (const map of takeOver.nf.maps) if (!tableMaps.has(map)) carried.push({ nf: last.name, map });
    }
    // An NF's writable globals are state too, and a new load starts them afresh.
    const liveNfs = new Set((chain.live?.meta.nfs ?? []).map((nf) => nf.name));
    for (const nf of nfs) {
      if (!liveNfs.has(nf.spec.name)) continue;
      for (const map of nf.globals) {
        recreated.push({ nf: nf.spec.name, map, reason: GLOBALS_NOT_CARRIED });
      }
    }
    fillTables(nfs);
    for (const nf of nfs) {
      for (const [mapName, origin] of nf.origins) {
        if (origin.kind !== "carried")
          nf.maps.get(mapName)!.pin(paths.revMap(generation, nf.spec.name, mapName));
      }
    }
    // Pinned so that a new process can take a program over without opening it by id.
    for (const nf of nfs) nf.program.pin(paths.revProg(generation, nf.spec.name));
    fillProgArray(progs, nfs);
    const meta: RevisionMeta = {
      format: META_FORMAT,
      generation,
      revision: spec.revision,
      codeDigest: digests.code,
      tablesDigest: digests.tables,
      testsDigest: digests.tests,
      createdAt: new Date().toISOString(),
      ...(spec.fused ? { mode: "fused" as const } : {}),
      // A program with writable globals would resume them as a standby, a new load starts afresh.
      ...(nfs.every((nf) => nf.globals.length === 0) ? { planKey } : {}),
      nfs: nfs.map((nf, i): RevisionNf => ({
        name: nf.spec.name,
        statsIndex: nf.statsIndex,
        program: nf.programName,
        objectPath: nf.spec.objectPath,
        maps: [...nf.origins.keys()],
        tableMaps: Object.keys(nf.spec.tables ?? {}),
        ...(nf.sharable
          ? { loadDigest: nfLoadDigest(hook, nf.spec, i, nfs.length, nf.statsIndex, timeSample) }
          : {}),
        tablesDigest: nfTablesDigest(nf.spec),
      })),
    };
    metaMap = createMetaMap();
    writeMeta(metaMap, meta);
    metaMap.pin(paths.revMeta(generation));
    for (const nf of nfs) programs.push(nf.program.dup());
    return { generation, meta, progs, metaMap, nfs, programs, carried, recreated, loadMs };
  } catch (err) {
    closeNfs(nfs);
    for (const program of programs) program.close();
    progs?.close();
    metaMap?.close();
    rmSync(paths.rev(generation), { recursive: true, force: true });
    throw err;
  } finally {
    for (const map of opened) map.close();
  }
}

/**
 * The live revision's last NF, when the new revision's last NF would load the very same
 * program (same load digest: object, program, parameters, place, stats slot) with the same
 * tables: then the new revision takes that program over instead of verifying it again. Only
 * the last NF qualifies, because every other NF tail-calls through its own revision's prog
 * array (see takeOverNf).
 */
function lastNfToTakeOver(
  chain: Chain,
  spec: ChainSpec,
  hook: ProgramHook,
  statsIndexes: readonly number[],
  timeSample: number,
): { nf: RevisionNf; program: BpfProgram } | undefined {
  const live = chain.live;
  const n = spec.functions.length;
  const last = spec.functions[n - 1]!;
  const liveIndex = (live?.meta.nfs.length ?? 0) - 1;
  const liveLast = live?.meta.nfs[liveIndex];
  const program = live?.programs[liveIndex];
  if (!liveLast || !program || liveLast.name !== last.name || liveLast.loadDigest === undefined) {
    return undefined;
  }
  if (liveLast.loadDigest !== nfLoadDigest(hook, last, n - 1, n, statsIndexes[n - 1]!, timeSample))
    return undefined;
  if (liveLast.tablesDigest !== nfTablesDigest(last)) return undefined;
  return { nf: liveLast, program };
}

/** Undoes a built revision that will not be switched in. */
export function discardRevision(chain: Chain, built: BuiltRevision): void {
  closeNfs(built.nfs);
  for (const program of built.programs) program.close();
  built.progs.close();
  built.metaMap.close();
  rmSync(chain.paths.rev(built.generation), { recursive: true, force: true });
}

/**
 * Stats indexes by NF name: an NF keeps its index across revisions (its counters continue);
 * a new NF takes the lowest index used by neither the live revision nor this one, zeroed.
 */
function assignStatsIndexes(chain: Chain, spec: ChainSpec): number[] {
  const live = new Map((chain.live?.meta.nfs ?? []).map((nf) => [nf.name, nf.statsIndex]));
  const used = new Set(live.values());
  return spec.functions.map((nf) => {
    const kept = live.get(nf.name);
    if (kept !== undefined) return kept;
    let index = 0;
    while (used.has(index)) index++;
    if (index >= SLUICE_STATS_ENTRIES) throw new ChainStateError(`${spec.name}: no free stats index`);
    used.add(index);
    resetNfCounters(chain, index);
    return index;
  });
}

/**
 * Zeroes the counters of stats slot `index` for an NF new to the chain. Only for a slot the
 * live revision does not use, so that no packet writes it meanwhile.
 */
export function resetNfCounters(chain: Chain, index: number): void {
  chain.stats.update(u32(index), Buffer.alloc(statsValueSize()));
  // Its per-function time sums too (in the chain's scratch map, see SLUICE_TIME_BASE).
  if (chain.scratch.maxEntries > ChainContract.timeBase + index)
    chain.scratch.updatePerCpu(u32(ChainContract.timeBase + index), []);
}

/** Moves maps new in `generation` into the chain's maps/ (atomic rename over an old pin). */
export function moveNewMaps(chain: Chain, generation: number): string[] {
  const moved: string[] = [];
  const from = chain.paths.revMaps(generation);
  if (!existsSync(from)) return moved;
  for (const nf of readdirSync(from)) {
    mkdirSync(join(chain.paths.maps, nf), { recursive: true });
    for (const map of readdirSync(join(from, nf))) {
      renameSync(join(from, nf, map), chain.paths.map(nf, map));
      moved.push(`${nf}/${map}`);
    }
  }
  rmSync(from, { recursive: true, force: true });
  return moved;
}

/** Unpins and closes a revision that is no longer live. */
function releaseRevision(chain: Chain, revision: LiveRevision): void {
  rmSync(chain.paths.rev(revision.meta.generation), { recursive: true, force: true });
  closeRevision(revision);
}

/** Unpins NF-owned maps that the live revision does not use. */
export function pruneMaps(chain: Chain): string[] {
  const pruned: string[] = [];
  if (!existsSync(chain.paths.maps)) return pruned;
  const live = new Map((chain.live?.meta.nfs ?? []).map((nf) => [nf.name, new Set(nf.maps)]));
  for (const nf of readdirSync(chain.paths.maps)) {
    const keep = live.get(nf);
    if (!keep) {
      rmSync(join(chain.paths.maps, nf), { recursive: true, force: true });
      pruned.push(`maps/${nf}`);
      continue;
    }
    for (const map of readdirSync(join(chain.paths.maps, nf))) {
      if (!keep.has(map)) {
        rmSync(chain.paths.map(nf, map), { force: true });
        pruned.push(`maps/${nf}/${map}`);
      }
    }
  }
  return pruned;
}

/**
 * Makes a switched-in revision the chain's live one: its new maps move into maps/, the
 * revision it replaced is unpinned and either kept as the chain's standby (when `keepStandby`
 * and it can serve, see standby.ts; the standby before it is released) or closed, and maps no
 * NF uses any more are unpinned. Reports the steps through `ctx.phase`.
 */
export function goLive(ctx: ManagerContext, chain: Chain, built: BuiltRevision, keepStandby: boolean): void {
  const previous = chain.live;
  // Taken while its maps are still the chain's pins (the new revision's move over them).
  const kept = keepStandby && previous !== undefined && keepAsStandby(chain, previous);
  if (!kept) releaseStandby(chain);
  moveNewMaps(chain, built.generation);
  ctx.phase("maps-moved", chain.name);
  chain.live = liveRevisionOf(built);
  closeNfs(built.nfs);
  if (previous) {
    if (kept) rmSync(chain.paths.rev(previous.meta.generation), { recursive: true, force: true });
    else releaseRevision(chain, previous);
  }
  pruneMaps(chain);
  ctx.phase("released", chain.name);
}
