/**
 * Adoption: a new process takes over the chains an earlier one left pinned, as they run. The
 * kernel's own state is the truth (see layout.ts): the live revision is the one whose slot 0
 * the root runs; anything else a crash left behind is removed, or completed where the switch
 * had already happened.
 */
import { existsSync, readdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import { BpfLink, BpfMap, BpfProgram, sameMapDefinition, u32 } from "../libbpf/index.ts";
import { ChainContract } from "../nf/types.ts";
import {
  closeRevision,
  KEY0,
  type AttachedLink,
  type Chain,
  type LiveRevision,
  type ManagerContext,
} from "./chain.ts";
import { finishHandover } from "./hookchange.ts";
import { chainPaths, LINK_PREFIX, type ChainPaths } from "./layout.ts";
import { ChainMeta, readMeta, RevisionMeta, writeMeta } from "./meta.ts";
import { createScratchMap, SCRATCH_DEFINITION } from "./nfload.ts";
import { moveNewMaps, pruneMaps } from "./revision.ts";
import type { AdoptedChain } from "./types.ts";

/** The chain pinned as `name`, adopted; undefined when none is pinned (or it was half-created and removed). */
export function adoptIfPinned(ctx: ManagerContext, name: string): Chain | undefined {
  const paths = chainPaths(ctx.root, name);
  if (!existsSync(paths.dir)) return undefined;
  const adopted = adoptChain(ctx, name);
  return adopted.outcome === "adopted" ? ctx.chains.get(name) : undefined;
}

/**
 * Takes over the chain pinned as `name` as it runs: nothing is detached or reloaded. Leftovers
 * of a switch or a change of hook that a crash interrupted are cleaned up or completed; a
 * chain whose creation was interrupted before it was attached anywhere is removed.
 */
export function adoptChain(ctx: ManagerContext, name: string): AdoptedChain {
  const paths = chainPaths(ctx.root, name);
  const log = ctx.log.child({ chain: name });
  const removed = (why: string): AdoptedChain => {
    rmSync(paths.dir, { recursive: true, force: true });
    log.info({ why }, "removed a chain whose creation was interrupted");
    return { name, outcome: "removed", revision: "", generation: 0, interfaces: [], repairs: [why] };
  };
  for (const required of [paths.meta, paths.rootArray, paths.rootProg, paths.rootStats, paths.stats]) {
    if (!existsSync(required)) return removed(`no ${required.slice(paths.dir.length + 1)} pinned`);
  }
  const links = new Map<string, AttachedLink>();
  const earlyRepairs: string[] = finishHandover(paths, log);
  for (const entry of readdirSync(paths.dir)) {
    if (!entry.startsWith(LINK_PREFIX)) continue;
    const link = BpfLink.fromPin(join(paths.dir, entry));
    const ifindex = link.info().ifindex ?? 0;
    if (ifindex === 0) {
      // Its device was deleted: the link is defunct and attaches nothing.
      link.close();
      rmSync(join(paths.dir, entry), { force: true });
      earlyRepairs.push(`unpinned ${entry} (its interface is gone)`);
      continue;
    }
    links.set(entry.slice(LINK_PREFIX.length), { link, ifindex, mode: undefined });
  }
  if (links.size === 0) {
    return removed("not attached to any interface");
  }
  const handles: { close(): void }[] = [...[...links.values()].map((l) => l.link)];
  try {
    const metaMap = BpfMap.fromPin(paths.meta, "sluice_meta");
    handles.push(metaMap);
    const meta = readMeta(metaMap, ChainMeta, `chain ${name}: meta`);
    const rootProg = BpfProgram.fromPin(paths.rootProg);
    handles.push(rootProg);
    const rootArray = BpfMap.fromPin(paths.rootArray, ChainContract.root.progArray);
    handles.push(rootArray);
    const rootStats = BpfMap.fromPin(paths.rootStats, ChainContract.root.statsMap);
    handles.push(rootStats);
    const stats = BpfMap.fromPin(paths.stats, ChainContract.statsMap);
    handles.push(stats);
    const scratch = adoptScratch(paths);
    handles.push(scratch);
    for (const [ifname, attached] of links) attached.mode = meta.interfaces[ifname]?.mode;
    const chain: Chain = {
      name,
      paths,
      log,
      meta,
      rootProg,
      rootArray,
      rootStats,
      stats,
      scratch,
      metaMap,
      links,
      live: undefined,
      nextGeneration: 1,
    };
    const repairs: string[] = [...earlyRepairs];
    // Interfaces the meta does not know were attached by a process that died before writing it.
    const linked = new Set(links.keys());
    const metaIfs = Object.keys(meta.interfaces);
    if (metaIfs.length !== linked.size || metaIfs.some((n) => !linked.has(n))) {
      for (const n of metaIfs) if (!linked.has(n)) delete meta.interfaces[n];
      for (const [n, l] of links) meta.interfaces[n] ??= { ifindex: l.ifindex };
      writeMeta(metaMap, meta);
      repairs.push("interfaces in meta updated from the pinned links");
    }
    const liveProgId = rootArray.lookup(KEY0)?.readUInt32LE(0);
    let maxGeneration = 0;
    if (existsSync(paths.revs)) {
      for (const dir of readdirSync(paths.revs)) {
        const generation = Number(dir);
        if (!Number.isInteger(generation) || generation < 1) {
          rmSync(join(paths.revs, dir), { recursive: true, force: true });
          repairs.push(`removed rev/${dir}`);
          continue;
        }
        maxGeneration = Math.max(maxGeneration, generation);
        const revision =
          liveProgId === undefined ? undefined : openRevisionIfLive(paths, generation, liveProgId);
        if (revision) {
          chain.live = revision;
          handles.push({ close: () => closeRevision(revision) });
        } else {
          rmSync(paths.rev(generation), { recursive: true, force: true });
          repairs.push(
            `removed revision ${generation} (not live: its switch did not happen or it was replaced)`,
          );
        }
      }
    }
    chain.nextGeneration = maxGeneration + 1;
    if (chain.live) {
      for (const moved of moveNewMaps(chain, chain.live.meta.generation)) {
        repairs.push(`moved map ${moved} of the live revision into place`);
      }
    } else {
      log.warn({ liveProgId }, "no live revision found: the next apply builds one");
    }
    for (const pruned of pruneMaps(chain)) repairs.push(`unpinned ${pruned} (not used by the live revision)`);
    ctx.chains.set(name, chain);
    log.info({ revision: chain.live?.meta.revision, repairs }, "adopted pinned chain");
    return describeAdopted(chain, repairs);
  } catch (err) {
    for (const handle of handles) handle.close();
    throw err;
  }
}

/** Opens revision `generation` when its slot 0 runs `liveProgId`; undefined otherwise. */
function openRevisionIfLive(
  paths: ChainPaths,
  generation: number,
  liveProgId: number,
): LiveRevision | undefined {
  if (!existsSync(paths.revProgs(generation)) || !existsSync(paths.revMeta(generation))) return undefined;
  const progs = BpfMap.fromPin(paths.revProgs(generation), ChainContract.progsMap);
  if (progs.lookup(KEY0)?.readUInt32LE(0) !== liveProgId) {
    progs.close();
    return undefined;
  }
  let metaMap: BpfMap | undefined;
  const programs: (BpfProgram | undefined)[] = [];
  try {
    metaMap = BpfMap.fromPin(paths.revMeta(generation), "sluice_meta");
    const meta = readMeta(metaMap, RevisionMeta, `revision ${generation}: meta`);
    const programIds = meta.nfs.map((_, i) => progs.lookup(u32(i))?.readUInt32LE(0) ?? 0);
    meta.nfs.forEach((nf, i) => {
      const pin = paths.revProg(generation, nf.name);
      // A revision pinned by an agent that did not pin its programs: nothing to take over.
      let program = existsSync(pin) ? BpfProgram.fromPin(pin, nf.program) : undefined;
      // Only the program the revision's slot runs may stand in for it.
      if (program && program.id !== programIds[i]) {
        program.close();
        program = undefined;
      }
      programs.push(program);
    });
    return { meta, progs, metaMap, programIds, programs, maps: new Map() };
  } catch (err) {
    progs.close();
    metaMap?.close();
    for (const program of programs) program?.close();
    throw err;
  }
}

/** What adoption reports for a chain held. */
export function describeAdopted(chain: Chain, repairs: string[]): AdoptedChain {
  return {
    name: chain.name,
    outcome: "adopted",
    revision: chain.live?.meta.revision ?? "",
    generation: chain.live?.meta.generation ?? 0,
    hook: chain.meta.hook,
    interfaces: [...chain.links.keys()],
    repairs,
  };
}

/**
 * The chain's pinned scratch map, or a new one pinned in its place when there is none (a chain
 * of an agent from before it) or it is not the contract's: the NFs that use the old one (all of
 * them from that agent) stay with it until they are replaced.
 */
function adoptScratch(paths: ChainPaths): BpfMap {
  if (existsSync(paths.scratch)) {
    const pinned = BpfMap.fromPin(paths.scratch, ChainContract.scratchMap);
    if (sameMapDefinition(pinned.definition(), SCRATCH_DEFINITION)) return pinned;
    pinned.close();
    rmSync(paths.scratch, { force: true });
  }
  const scratch = createScratchMap();
  try {
    scratch.pin(paths.scratch);
    return scratch;
  } catch (err) {
    scratch.close();
    throw err;
  }
}
