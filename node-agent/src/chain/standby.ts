/**
 * The standby revision: a switch keeps the revision it replaced loaded (its programs, its prog
 * array, its tables; its state maps are the chain's), so that a switch back to it (a rollback,
 * or alternating between two revisions) verifies nothing again: it is self-tested, pinned as a
 * new generation and flipped in, and the revision it replaces becomes the standby in turn.
 *
 * It is reused only when it is provably what a new build would be: the same plan (code digest,
 * fused program, tables, per-function time), the same hook, every NF in the same stats slot as
 * in the live revision (its counters continue), and every state map its programs use still the
 * chain's own (a switch that recreated a map because its definition changed, or that dropped
 * an NF and unpinned its maps, rules it out). Revisions whose NFs keep writable globals are not
 * kept: a new load would start them afresh, the standby would resume stale values.
 *
 * Nothing of the standby is pinned, so an agent killed meanwhile leaves nothing of it behind
 * (the kernel frees it with the process's fds) and a new agent adopts the live revision alone;
 * the plan key is in the revision's meta, so the revision an adopting agent replaces becomes
 * its standby as any other.
 * It costs the memory of one revision's programs and tables; state maps are shared.
 */
import { createHash } from "node:crypto";
import { rmSync } from "node:fs";
import { BpfMap, type BpfProgram } from "../libbpf/index.ts";
import {
  closeRevision,
  releaseStandby,
  type BuiltRevision,
  type Chain,
  type LiveRevision,
  type StandbyRevision,
} from "./chain.ts";
import type { Digests } from "./digests.ts";
import { resetNfCounters } from "./revision.ts";
import { writeMeta, type RevisionMeta } from "./meta.ts";
import type { ChainSpec } from "./spec.ts";
import type { NfMapRef } from "./types.ts";

/**
 * Identity of a revision's load apart from its tables: the hook, the code digest (objects,
 * programs, parameters, order, requested mode), the fused program it runs as (or none) and
 * per-function time. Two builds with the same key and the same tables load the same programs.
 */
export function standbyPlanKey(spec: ChainSpec, codeDigest: string, timeSample: number): string {
  return createHash("sha256")
    .update(
      JSON.stringify([
        spec.hook,
        codeDigest,
        spec.fused ? [spec.fused.objectPath, spec.fused.program] : null,
        timeSample,
      ]),
    )
    .digest("hex");
}

/**
 * Takes the revision `previous` over as the chain's standby, called while it is still live (its
 * maps are the chain's pins). Its fds move into the standby; returns false (and takes nothing)
 * when it cannot serve: no plan key, a program not held, a map not pinned.
 */
export function keepAsStandby(chain: Chain, previous: LiveRevision): boolean {
  const planKey = previous.meta.planKey;
  const programs = previous.programs.filter((p): p is BpfProgram => p !== undefined);
  if (planKey === undefined || programs.length !== previous.programs.length) return false;
  const maps = new Map<string, BpfMap>();
  try {
    for (const nf of previous.meta.nfs) {
      for (const map of nf.maps)
        maps.set(`${nf.name}/${map}`, BpfMap.fromPin(chain.paths.map(nf.name, map), map));
    }
  } catch (err) {
    for (const map of maps.values()) map.close();
    chain.log.debug({ err }, "the replaced revision is not kept as standby: a map of it is not pinned");
    return false;
  }
  releaseStandby(chain);
  // Handles opened for tables and readTable: the standby holds its own.
  for (const map of previous.maps.values()) map.close();
  previous.maps.clear();
  chain.standby = { revision: { ...previous, programs }, planKey, maps };
  return true;
}

/** Why the standby cannot serve a plan; `stale`: nor any later one (release it). */
export interface StandbyMismatch {
  reason: string;
  stale: boolean;
}

/**
 * Why the standby cannot serve as `spec` (`planKey`: see standbyPlanKey), or undefined when it
 * can. Reads the chain's map pins; changes nothing.
 */
export function standbyMismatch(
  chain: Chain,
  standby: StandbyRevision,
  spec: ChainSpec,
  digests: Digests,
  planKey: string,
): StandbyMismatch | undefined {
  const meta = standby.revision.meta;
  if (standby.planKey !== planKey) return { reason: "another plan", stale: false };
  if (meta.tablesDigest !== digests.tables) return { reason: "other tables", stale: false };
  if (chain.meta.hook !== spec.hook) return { reason: "another hook", stale: true };
  if (!chain.live) return { reason: "no live revision", stale: true };
  const live = new Map(chain.live.meta.nfs.map((nf) => [nf.name, nf.statsIndex]));
  const liveSlots = new Set(live.values());
  for (const nf of meta.nfs) {
    // An NF of the live revision continues its counters; one new to it starts from zero in a
    // slot the live revision does not use (as a build assigns them).
    const slot = live.get(nf.name);
    if (slot === undefined ? liveSlots.has(nf.statsIndex) : slot !== nf.statsIndex) {
      return { reason: `${nf.name}: its stats slot is another NF's now`, stale: true };
    }
    const tables = new Set(nf.tableMaps);
    for (const name of nf.maps) {
      if (tables.has(name)) continue;
      const held = standby.maps.get(`${nf.name}/${name}`);
      let pinned: BpfMap;
      try {
        pinned = BpfMap.fromPin(chain.paths.map(nf.name, name), name);
      } catch {
        return { reason: `map ${nf.name}/${name} is no longer the chain's`, stale: true };
      }
      const same = held !== undefined && pinned.id === held.id;
      pinned.close();
      if (!same) return { reason: `map ${nf.name}/${name} was recreated since`, stale: true };
    }
  }
  return undefined;
}

/**
 * Turns the standby into a revision ready to be switched in, as buildRevision would return it:
 * pinned as generation `chain.nextGeneration` (prog array, programs, meta, and its tables
 * under the revision's maps/, which goLive moves into place), relabelled for `spec`. The
 * standby's fds move into the result; on failure everything of it is released and unpinned.
 */
export function reviveStandby(chain: Chain, spec: ChainSpec, digests: Digests): BuiltRevision {
  const standby = chain.standby!;
  chain.standby = undefined;
  const { revision, maps } = standby;
  const generation = chain.nextGeneration++;
  const { paths } = chain;
  const carried: NfMapRef[] = [];
  try {
    revision.progs.pin(paths.revProgs(generation));
    for (const nf of revision.meta.nfs) {
      const tables = new Set(nf.tableMaps);
      for (const name of nf.maps) {
        if (tables.has(name)) maps.get(`${nf.name}/${name}`)!.pin(paths.revMap(generation, nf.name, name));
        else carried.push({ nf: nf.name, map: name });
      }
    }
    revision.meta.nfs.forEach((nf, i) => revision.programs[i]!.pin(paths.revProg(generation, nf.name)));
    const meta: RevisionMeta = {
      ...revision.meta,
      generation,
      revision: spec.revision,
      tablesDigest: digests.tables,
      testsDigest: digests.tests,
      createdAt: new Date().toISOString(),
    };
    writeMeta(revision.metaMap, meta);
    revision.metaMap.pin(paths.revMeta(generation));
    // NFs new to the live revision count from zero, as in a revision built now.
    const live = new Set(chain.live?.meta.nfs.map((nf) => nf.name));
    for (const nf of meta.nfs) if (!live.has(nf.name)) resetNfCounters(chain, nf.statsIndex);
    return {
      generation,
      meta,
      progs: revision.progs,
      metaMap: revision.metaMap,
      nfs: [],
      programs: revision.programs,
      carried,
      recreated: [],
      loadMs: 0,
    };
  } catch (err) {
    rmSync(paths.rev(generation), { recursive: true, force: true });
    closeRevision(revision);
    throw err;
  } finally {
    for (const map of maps.values()) map.close();
    maps.clear();
  }
}
