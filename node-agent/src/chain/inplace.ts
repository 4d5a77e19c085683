/**
 * Changes that need no new programs, written into the live revision in place: tables (after the
 * same code with the new tables passed the self-test), interfaces, the attach mode and the
 * revision label. No switch happens; every table is checked before the first is written.
 */
import { BpfMap } from "../libbpf/index.ts";
import { programHook } from "../packet/index.ts";
import type { SelfTestReport } from "../selftest/index.ts";
import { attachMissing, detachUnwanted, reattachModes, writeChainMeta } from "./attach.ts";
import { releaseStandby, type Chain, type ManagerContext } from "./chain.ts";
import { nfTablesDigest, type Digests } from "./digests.ts";
import { ChainStateError } from "./errors.ts";
import { writeMeta } from "./meta.ts";
import type { ChainSpec, TableEntry } from "./spec.ts";
import { checkTables, replaceEntries } from "./tables.ts";
import type { ApplyResult } from "./types.ts";

/** Converges a chain whose live revision runs `spec`'s code to `spec`'s tables, interfaces and label. */
export async function updateInPlace(
  ctx: ManagerContext,
  chain: Chain,
  spec: ChainSpec,
  digests: Digests,
  started: number,
): Promise<ApplyResult> {
  const live = chain.live!;
  const tablesChanged = live.meta.tablesDigest !== digests.tables;
  const testsChanged = live.meta.testsDigest !== digests.tests;
  let selfTest: SelfTestReport | undefined;
  if (tablesChanged || testsChanged) {
    // The same code with the new tables must pass the vectors before the tables change.
    selfTest = await ctx.selfTests.run(spec, programHook(spec.hook));
  }
  const selfTestMs = performance.now() - started;
  const updateStarted = performance.now();
  // Every table is checked before the first one is written: all or nothing. The same code runs,
  // so NF i of the spec is NF i of the live revision.
  const writes: { map: BpfMap; entries: TableEntry[] }[] = [];
  if (tablesChanged) {
    spec.functions.forEach((nf, i) => {
      const liveNf = live.meta.nfs[i]!;
      const maps = new Map<string, BpfMap>();
      const find = (name: string) => {
        if (!liveNf.maps.includes(name)) return undefined;
        const map = liveMap(chain, nf.name, name);
        maps.set(name, map);
        return map.definition();
      };
      checkTables(nf, find, liveNf.maps);
      for (const [mapName, entries] of Object.entries(nf.tables ?? {})) {
        writes.push({ map: maps.get(mapName)!, entries });
      }
    });
  }
  const attached = attachMissing(chain, spec, ctx.netns);
  // The standby may share a table map with the live revision (a last NF taken over): it would
  // no longer hold the tables it was built with.
  if (writes.length > 0) releaseStandby(chain);
  for (const { map, entries } of writes) replaceEntries(map, entries);
  if (tablesChanged) {
    spec.functions.forEach((nf, i) => {
      const liveNf = live.meta.nfs[i]!;
      liveNf.tableMaps = [...new Set([...liveNf.tableMaps, ...Object.keys(nf.tables ?? {})])];
      liveNf.tablesDigest = nfTablesDigest(nf);
    });
  }
  const detached = detachUnwanted(chain, spec);
  const reattached = reattachModes(chain, spec, ctx.netns);
  const interfacesChanged = attached.length + detached.length + reattached.length > 0;
  if (interfacesChanged) writeChainMeta(chain, spec);
  const labelChanged = live.meta.revision !== spec.revision;
  if (tablesChanged || testsChanged || labelChanged) {
    live.meta = {
      ...live.meta,
      revision: spec.revision,
      tablesDigest: digests.tables,
      testsDigest: digests.tests,
    };
    writeMeta(live.metaMap, live.meta);
  }
  return {
    action: tablesChanged ? "tables-updated" : interfacesChanged ? "interfaces-updated" : "unchanged",
    chain: chain.name,
    revision: live.meta.revision,
    generation: live.meta.generation,
    programIds: [chain.rootProg.id, ...live.programIds],
    attachedInterfaces: [...chain.links.keys()],
    carriedMaps: [],
    recreatedMaps: [],
    interfaces: { attached: [...attached, ...reattached], detached },
    ...(selfTest ? { selfTest } : {}),
    timings: {
      selfTestMs,
      loadMs: performance.now() - updateStarted,
      flipUs: 0,
      totalMs: performance.now() - started,
    },
  };
}

/**
 * NF-owned map `map` of NF `nf` in the live revision of `chain`, opened from its pin once and
 * kept with the revision. Throws ChainStateError when there is no such map.
 */
export function liveMap(chain: Chain, nf: string, map: string): BpfMap {
  const live = chain.live;
  if (!live) throw new ChainStateError(`chain ${chain.name}: no live revision`);
  const liveNf = live.meta.nfs.find((n) => n.name === nf);
  if (!liveNf) throw new ChainStateError(`chain ${chain.name}: no NF ${nf} in the live revision`);
  if (!liveNf.maps.includes(map)) {
    throw new ChainStateError(
      `chain ${chain.name}: NF ${nf} has no map ${map} (its maps: ${liveNf.maps.join(", ") || "none"})`,
    );
  }
  const key = `${nf}/${map}`;
  let handle = live.maps.get(key);
  if (!handle) {
    handle = BpfMap.fromPin(chain.paths.map(nf, map), map);
    live.maps.set(key, handle);
  }
  return handle;
}
