/**
 * A chain as the manager holds it: the root program attached to the hook, its one-slot prog
 * array, the stats and meta maps shared by every revision, the links, and the live revision.
 * Also what every step of the manager is given (ManagerContext), and creating and destroying a
 * chain's skeleton.
 */
import { rmSync } from "node:fs";
import type { Logger } from "../../../common/log.ts";
import { u32, type BpfLink, type BpfMap, type BpfProgram } from "../libbpf/index.ts";
import { detach, loadRoot } from "./attach.ts";
import { chainPaths, type ChainPaths } from "./layout.ts";
import { createMetaMap, META_FORMAT, writeMeta, type ChainMeta, type RevisionMeta } from "./meta.ts";
import { createScratchMap, createStatsMap, type LoadedNf } from "./nfload.ts";
import type { SelfTests } from "./selftests.ts";
import type { ChainSpec } from "./spec.ts";
import type { NfMapRef, RecreatedMap, SwitchPhase } from "./types.ts";

/** Key 0 of a prog array or a one-entry map. */
export const KEY0 = u32(0);

/** What the steps of the chain manager share: where pins go, the namespace, logs, seams. */
export interface ManagerContext {
  /** bpffs directory with one directory per chain. */
  readonly root: string;
  /** Network namespace of the interfaces (see ChainManagerOptions.netns). */
  readonly netns: string | undefined;
  readonly log: Logger;
  /** The chains held, by name. */
  readonly chains: Map<string, Chain>;
  readonly selfTests: SelfTests;
  /** Per-function time of 1 in this many packets, for the roots and revisions it loads; 0 off. */
  readonly timeSample: number;
  /** Whether a switch keeps the revision it replaced loaded as the chain's standby (see standby.ts). */
  readonly keepStandby: boolean;
  /** Reports a step of a switch (the crash tests' seam). */
  phase(phase: SwitchPhase, chain: string): void;
}

/** The root program's link on one interface (own fd). */
export interface AttachedLink {
  link: BpfLink;
  ifindex: number;
  mode: "native" | "generic" | undefined;
}

/** The revision slot 0 of the root runs. Its fds are the chain's (see closeRevision). */
export interface LiveRevision {
  meta: RevisionMeta;
  progs: BpfMap;
  metaMap: BpfMap;
  /** Program ids by NF position. */
  programIds: number[];
  /**
   * The NF programs by position (own fds): kept from the load, or opened from the revision's
   * pins on adoption (undefined where a revision pinned by an older agent has no pin). A program
   * that a later revision takes over is reached through these, never by id: opening a program
   * by id needs CAP_SYS_ADMIN.
   */
  programs: (BpfProgram | undefined)[];
  /** NF-owned maps opened from their pins, by `<nf>/<map>` (for tables and readTable). */
  maps: Map<string, BpfMap>;
}

/**
 * The revision a switch replaced, kept loaded so that a switch back to it needs no load (see
 * standby.ts). Nothing of it is pinned: its fds are its only references, so a process that dies
 * leaves nothing of it behind. Own fds, closed by releaseStandby / closeChain.
 */
export interface StandbyRevision {
  /** Its prog array, meta map and programs (every program present), as they were live. */
  revision: Omit<LiveRevision, "programs"> & { programs: BpfProgram[] };
  /** Its meta's plan key (see standbyPlanKey). */
  planKey: string;
  /**
   * Every NF-owned map its programs use, by `<nf>/<map>`: tables, to pin again when it returns;
   * state maps, to prove that they are still the chain's.
   */
  maps: Map<string, BpfMap>;
}

/** A chain held by the manager; every handle is an own fd, closed by closeChain. */
export interface Chain {
  name: string;
  paths: ChainPaths;
  log: Logger;
  meta: ChainMeta;
  rootProg: BpfProgram;
  rootArray: BpfMap;
  rootStats: BpfMap;
  stats: BpfMap;
  /** Where the chain's NFs leave a packet's parse result for the NFs after them. */
  scratch: BpfMap;
  metaMap: BpfMap;
  links: Map<string, AttachedLink>;
  live: LiveRevision | undefined;
  /** The revision the last switch replaced, kept loaded (see StandbyRevision). */
  standby?: StandbyRevision;
  nextGeneration: number;
}

/** A revision loaded next to the live one, not switched in yet. */
export interface BuiltRevision {
  generation: number;
  meta: RevisionMeta;
  progs: BpfMap;
  metaMap: BpfMap;
  nfs: LoadedNf[];
  /** Own fds of the NF programs, for the live revision to keep (see LiveRevision.programs). */
  programs: BpfProgram[];
  carried: NfMapRef[];
  recreated: RecreatedMap[];
  /** How long loading its NFs took (open, choice of maps, verification), ms. */
  loadMs: number;
}

/** Loads and pins the root program, its prog array, the stats and meta maps of a new chain. */
export function createSkeleton(ctx: ManagerContext, spec: ChainSpec, rootObjectPath: string): Chain {
  const paths = chainPaths(ctx.root, spec.name);
  // A directory without a live chain (a crash before its first switch) is stale.
  rmSync(paths.dir, { recursive: true, force: true });
  const handles: { close(): void }[] = [];
  try {
    const scratch = createScratchMap();
    handles.push(scratch);
    const { rootProg, rootArray, rootStats } = loadRoot(rootObjectPath, spec.hook, undefined, {
      scratch,
      timeSample: ctx.timeSample,
    });
    handles.push(rootProg, rootArray, rootStats);
    const stats = createStatsMap();
    handles.push(stats);
    const metaMap = createMetaMap();
    handles.push(metaMap);
    const meta: ChainMeta = {
      format: META_FORMAT,
      hook: spec.hook,
      xdpMode: spec.xdpMode ?? "auto",
      interfaces: {},
    };
    writeMeta(metaMap, meta);
    rootProg.pin(paths.rootProg);
    rootArray.pin(paths.rootArray);
    rootStats.pin(paths.rootStats);
    stats.pin(paths.stats);
    scratch.pin(paths.scratch);
    metaMap.pin(paths.meta);
    const chain: Chain = {
      name: spec.name,
      paths,
      log: ctx.log.child({ chain: spec.name }),
      meta,
      rootProg,
      rootArray,
      rootStats,
      stats,
      scratch,
      metaMap,
      links: new Map(),
      live: undefined,
      nextGeneration: 1,
    };
    ctx.chains.set(spec.name, chain);
    return chain;
  } catch (err) {
    for (const handle of handles) handle.close();
    rmSync(paths.dir, { recursive: true, force: true });
    throw err;
  }
}

/** Detaches, unpins and closes everything of a chain. */
export function destroyChain(ctx: ManagerContext, chain: Chain): void {
  for (const ifname of [...chain.links.keys()]) detach(chain, ifname);
  closeChain(chain);
  rmSync(chain.paths.dir, { recursive: true, force: true });
  ctx.chains.delete(chain.name);
}

/** The live revision that a built one becomes once switched in (it takes over its fds). */
export function liveRevisionOf(built: BuiltRevision): LiveRevision {
  return {
    meta: built.meta,
    progs: built.progs,
    metaMap: built.metaMap,
    programIds: built.programs.map((program) => program.id),
    programs: built.programs,
    maps: new Map(),
  };
}

/** Closes the standby revision's fds (nothing of it is pinned) and forgets it. */
export function releaseStandby(chain: Chain): void {
  const standby = chain.standby;
  if (!standby) return;
  chain.standby = undefined;
  closeRevision(standby.revision);
  for (const map of standby.maps.values()) map.close();
  standby.maps.clear();
}

export function closeRevision(revision: Pick<LiveRevision, "progs" | "metaMap" | "programs" | "maps">): void {
  revision.progs.close();
  revision.metaMap.close();
  for (const program of revision.programs) program?.close();
  for (const map of revision.maps.values()) map.close();
  revision.maps.clear();
}

/** Closes every fd of a chain; its pins stay. */
export function closeChain(chain: Chain): void {
  if (chain.live) closeRevision(chain.live);
  releaseStandby(chain);
  for (const { link } of chain.links.values()) link.close();
  chain.rootProg.close();
  chain.rootArray.close();
  chain.rootStats.close();
  chain.stats.close();
  chain.scratch.close();
  chain.metaMap.close();
}
