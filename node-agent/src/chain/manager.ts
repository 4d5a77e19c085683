/**
 * The chain manager: turns a ChainSpec into kernel objects and keeps them converged.
 *
 * A chain is a root program attached to the hook that tail-calls slot 0 of its one-slot prog
 * array; slot 0 holds NF 0 of the live revision, and every revision has its own prog array. A
 * new revision is loaded and self-tested next to the live one, then switched in with one update
 * of that slot: every packet sees all of the old revision or all of the new one. State that must
 * outlive this process (programs, maps, links, what is live) is pinned on bpffs (see layout.ts),
 * so a new process adopts running chains without touching traffic.
 *
 * A change of hook cannot be one slot update (another hook is another root program): the new
 * hook's root is attached, already pointing at the new revision, before the old hook's links are
 * detached, so no packet passes unfiltered; maps carry over as in any switch. While both are
 * attached, XDP and tc-ingress on one interface both process a received packet (XDP first): it
 * is dropped if either revision drops it and counted by both (see `#changeHook`).
 *
 * Capabilities: CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN are all it needs (what the Helm chart
 * gives the agent). It holds fds of what it created and opens what it adopts by pin; it never
 * opens a BPF object by id nor enumerates ids, which the kernel allows only with CAP_SYS_ADMIN.
 */
import { existsSync, mkdirSync, readdirSync, renameSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createHash } from "node:crypto";
import { rootLogger, type Logger } from "../../../common/log.ts";
import { compile, BPF_DIR } from "../compile/index.ts";
import {
  BpfError,
  BpfLink,
  BpfMap,
  BpfObject,
  BpfProgram,
  NotSupportedError,
  numPossibleCpus,
  u32,
} from "../libbpf/index.ts";
import { ifIndex, withNetns } from "../netns/index.ts";
import { ChainContract } from "../nf/types.ts";
import { decodePerCpuNfStats, NF_STATS_LAYOUT, SLUICE_STATS_ENTRIES } from "../nf/structs.ts";
import { programHook, type ProgramHook } from "../packet/index.ts";
import {
  assertSelfTestPassed,
  hasVectors,
  runSelfTest,
  type SelfTestReport,
  type SelfTestVectors,
} from "../selftest/index.ts";
import { deriveCounters, type EndedCounters, type NfCounters } from "./counters.ts";
import { AttachError, ChainStateError } from "./errors.ts";
import { chainPaths, LINK_PREFIX, type ChainPaths } from "./layout.ts";
import {
  ChainMeta,
  createMetaMap,
  META_FORMAT,
  readMeta,
  RevisionMeta,
  writeMeta,
  type RevisionNf,
} from "./meta.ts";
import {
  clearState,
  closeNfs,
  createProgArray,
  createStatsMap,
  definitionChange,
  fillProgArray,
  fillTables,
  loadNfsConcurrently,
  nfLoadDigest,
  nfTablesDigest,
  replaceEntries,
  takeOverNf,
  type LoadedNf,
  type LoadNfsOptions,
} from "./nfload.ts";
import { TestInstance } from "./testinstance.ts";
import {
  ChainSpecError,
  codeDigest,
  validateChainSpec,
  type ChainSpec,
  type Hook,
  type TableEntry,
  type XdpMode,
} from "./spec.ts";

/** Default bpffs directory of the chains. */
export const DEFAULT_BPFFS_ROOT = "/sys/fs/bpf/sluice";

/** Steps of a switch, in order (the test seam {@link ChainManagerOptions.onPhase} names them). */
export type SwitchPhase =
  /**
   * The new revision passed its self-test; it was loaded and pinned next to the live one
   * meanwhile (the two run at the same time). Nothing live changed yet.
   */
  | "self-tested"
  /** The new revision's prog array is filled and new interfaces attached; nothing live changed yet. */
  | "built"
  /** Root slot 0 holds the new revision: it is live. */
  | "flipped"
  /** Maps new in this revision are pinned in the chain's maps/ directory. */
  | "maps-moved"
  /** The previous revision is unpinned and its fds closed. */
  | "released";

/** Options of {@link ChainManager}. */
export interface ChainManagerOptions {
  /** bpffs directory with one directory per chain; default {@link DEFAULT_BPFFS_ROOT}. */
  root?: string;
  /**
   * Network namespace (name under /run/netns, or a path) of the interfaces; default: this
   * process's. Entering it (setns) needs CAP_SYS_ADMIN, which the chart does not give the agent:
   * an agent with the chart's capabilities starts inside the namespace instead (as a
   * hostNetwork pod does) and leaves this unset.
   */
  netns?: string;
  /** Compiled root object (bpf/root/root.bpf.c); default: compiled into `cacheDir` on first use. */
  rootObjectPath?: string;
  /** Compile cache for the root object; default `<tmpdir>/sluice-cache`. */
  cacheDir?: string;
  logger?: Logger;
  /**
   * Test seam: called after each step of a switch. The crash tests end the process there to
   * prove that a kill at any step loses no packet and leaks nothing.
   */
  onPhase?: (phase: SwitchPhase, chain: string) => void;
}

/** A map of an NF. */
export interface NfMapRef {
  nf: string;
  map: string;
}

/** A map that could not carry over: it starts empty in the new revision. */
export interface RecreatedMap extends NfMapRef {
  reason: string;
}

/** What {@link ChainManager.apply} did. */
export interface ApplyResult {
  /**
   * `created`: the chain was new; `switched`: a new revision replaced the live one;
   * `tables-updated`: only tables changed and were written in place; `interfaces-updated`:
   * only attachments changed; `unchanged`: nothing to do (a new revision label is recorded).
   */
  action: "created" | "switched" | "tables-updated" | "interfaces-updated" | "unchanged";
  chain: string;
  /** Revision label now live. */
  revision: string;
  /** Generation of the live revision (its directory under rev/). */
  generation: number;
  /** Kernel program ids: the root program, then each NF in chain order. */
  programIds: number[];
  /** Interfaces the chain is attached to now. */
  attachedInterfaces: string[];
  /** Maps that carried over from the previous revision (their state continues). */
  carriedMaps: NfMapRef[];
  /** Maps that were recreated because their definition changed (their state is lost). */
  recreatedMaps: RecreatedMap[];
  /**
   * Set when the chain moved to another hook: the new hook's chain was attached before the old
   * one was detached (see {@link ChainManager.apply} for what a packet may see meanwhile).
   */
  hookChange?: { from: Hook; to: Hook };
  /** Interfaces attached and detached by this call. */
  interfaces: { attached: string[]; detached: string[] };
  /** The self-test, when vectors ran. */
  selfTest?: SelfTestReport;
  timings: {
    /** From the call until the self-test passed (loading the self-test instance, running the vectors). */
    selfTestMs: number;
    /**
     * Loading, pinning and linking the new revision, as far as it took longer than the
     * self-test: the two run at the same time, so the timings add up to `totalMs`.
     */
    loadMs: number;
    /**
     * The switch itself: one prog-array update; for a change of hook, the commit and the detach
     * of the old hook's links.
     */
    flipUs: number;
    /**
     * A change of hook only: how long both hooks were attached (from the first attach of the new
     * hook to the last detach of the old one).
     */
    overlapUs?: number;
    totalMs: number;
  };
}

/** A chain found pinned by {@link ChainManager.adopt}. */
export interface AdoptedChain {
  name: string;
  /** `adopted`: taken over as it runs; `removed`: left half-created by a crash, and removed. */
  outcome: "adopted" | "removed";
  /** Live revision label ("" when none). */
  revision: string;
  generation: number;
  hook?: Hook;
  interfaces: string[];
  /** Leftovers of an interrupted switch that were cleaned up or completed. */
  repairs: string[];
}

/** One interface of a chain. */
export interface InterfaceStatus {
  name: string;
  ifindex: number;
  linkId: number;
  /** XDP only: where the root program runs. */
  xdpMode?: "native" | "generic";
}

/** One NF of the live revision. */
export interface NfStatus {
  name: string;
  programId: number;
  statsIndex: number;
  counters: NfCounters;
}

/** What runs for a chain now. */
export interface ChainStatus {
  name: string;
  hook: Hook;
  revision: string;
  generation: number;
  rootProgramId: number;
  interfaces: InterfaceStatus[];
  nfs: NfStatus[];
  /** Packets that found no chain in the root (passed): non-zero only while a chain was missing. */
  rootMisses: EndedCounters;
}

interface AttachedLink {
  link: BpfLink;
  ifindex: number;
  mode: "native" | "generic" | undefined;
}

interface LiveRevision {
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

interface Chain {
  name: string;
  paths: ChainPaths;
  log: Logger;
  meta: ChainMeta;
  rootProg: BpfProgram;
  rootArray: BpfMap;
  rootStats: BpfMap;
  stats: BpfMap;
  metaMap: BpfMap;
  links: Map<string, AttachedLink>;
  live: LiveRevision | undefined;
  nextGeneration: number;
}

/** A revision loaded next to the live one, not switched in yet. */
interface BuiltRevision {
  generation: number;
  meta: RevisionMeta;
  progs: BpfMap;
  metaMap: BpfMap;
  nfs: LoadedNf[];
  /** Own fds of the NF programs, for the live revision to keep (see LiveRevision.programs). */
  programs: BpfProgram[];
  carried: NfMapRef[];
  recreated: RecreatedMap[];
}

const KEY0 = u32(0);

/**
 * Owns the chains pinned under one bpffs directory (one manager per agent process).
 *
 * Ownership: the manager holds fds of every chain it created or adopted and closes them in
 * `close()`; the kernel objects live on through their pins (traffic keeps flowing). `remove()`
 * detaches and unpins a chain. Calls for one chain run one at a time, in call order.
 */
export class ChainManager {
  readonly root: string;
  readonly #options: ChainManagerOptions;
  readonly #log: Logger;
  readonly #chains = new Map<string, Chain>();
  readonly #queues = new Map<string, Promise<unknown>>();
  /** Each chain's self-test instance, kept between self-tests (see testinstance.ts). */
  readonly #testInstances = new Map<string, TestInstance>();
  #rootObject: Promise<string> | undefined;
  readonly #statsBuf = Buffer.alloc(((NF_STATS_LAYOUT.size + 7) & ~7) * numPossibleCpus());

  constructor(options: ChainManagerOptions = {}) {
    this.#options = options;
    this.root = options.root ?? DEFAULT_BPFFS_ROOT;
    this.#log = (options.logger ?? rootLogger).child({ component: "chain" });
    if (options.rootObjectPath) this.#rootObject = Promise.resolve(options.rootObjectPath);
  }

  /**
   * Converges chain `spec.name` to `spec`. A new or changed chain is built next to the live one,
   * self-tested and switched in atomically; a table-only change is written in place; a change of
   * hook attaches the new hook before detaching the old (a packet arriving meanwhile may be
   * processed by both an XDP and a tc-ingress chain, never by neither). Any
   * failure leaves the chain that ran before running, untouched, and throws: ChainSpecError,
   * NfContractError, VerifierError / BpfError (with the verifier log), SelfTestError,
   * NotSupportedError, AttachError, NetnsError.
   */
  async apply(spec: ChainSpec): Promise<ApplyResult> {
    validateChainSpec(spec);
    return this.#serialized(spec.name, () => this.#apply(spec));
  }

  /**
   * Finds the chains pinned under the root and takes them over as they run: nothing is detached
   * or reloaded. Leftovers of a switch that a crash interrupted are cleaned up (a half-built
   * revision is unpinned) or completed (new maps moved into place); a chain whose creation was
   * interrupted before it was attached anywhere is removed.
   */
  async adopt(): Promise<AdoptedChain[]> {
    if (!existsSync(this.root)) return [];
    const found: AdoptedChain[] = [];
    for (const entry of readdirSync(this.root, { withFileTypes: true })) {
      if (!entry.isDirectory()) continue;
      const name = entry.name;
      const adopted = await this.#serialized(name, () => {
        const known = this.#chains.get(name);
        if (known) return this.#describeAdopted(known, []);
        return this.#adoptChain(name);
      });
      found.push(adopted);
    }
    return found;
  }

  /** Detaches chain `name` from every interface and unpins all of it. No-op for an unknown chain. */
  remove(name: string): Promise<void> {
    return this.#serialized(name, () => {
      const chain = this.#chains.get(name) ?? this.#adoptIfPinned(name);
      if (chain) this.#destroy(chain);
      else rmSync(chainPaths(this.root, name).dir, { recursive: true, force: true });
      this.#dropTestInstance(name);
    });
  }

  /** What runs for chain `name` now, with counters; undefined for a chain this manager does not hold. */
  status(name: string): ChainStatus | undefined {
    const chain = this.#chains.get(name);
    return chain ? this.#status(chain) : undefined;
  }

  /** Status of every chain this manager holds. */
  list(): ChainStatus[] {
    return [...this.#chains.values()].map((chain) => this.#status(chain));
  }

  /**
   * Every entry of NF-owned map `map` of NF `nf` in the live revision of `chain` (for decoders
   * such as flowmon's top talkers). Throws ChainStateError when there is no such map.
   */
  readTable(chain: string, nf: string, map: string): { key: Buffer; value: Buffer }[] {
    const handle = this.#liveMap(chain, nf, map);
    const entries: { key: Buffer; value: Buffer }[] = [];
    for (const [key, value] of handle.entries()) entries.push({ key, value });
    return entries;
  }

  /** Closes every fd; pins stay and traffic keeps flowing. The manager is unusable afterwards. */
  close(): void {
    for (const chain of this.#chains.values()) closeChain(chain);
    this.#chains.clear();
    for (const instance of this.#testInstances.values()) instance.close();
    this.#testInstances.clear();
  }

  // -------------------------------------------------------------------------------------------

  #serialized<T>(name: string, run: () => T | Promise<T>): Promise<T> {
    const previous = this.#queues.get(name) ?? Promise.resolve();
    const next = previous.then(run, run);
    const settled = next.catch(() => undefined);
    this.#queues.set(name, settled);
    void settled.then(() => {
      if (this.#queues.get(name) === settled) this.#queues.delete(name);
    });
    return next;
  }

  #phase(phase: SwitchPhase, chain: string): void {
    this.#options.onPhase?.(phase, chain);
  }

  #rootObjectPath(): Promise<string> {
    if (!this.#rootObject) {
      const cacheDir = this.#options.cacheDir ?? join(tmpdir(), "sluice-cache");
      this.#rootObject = compile({ sourceRoot: BPF_DIR, entry: ChainContract.root.entry, cacheDir }).then(
        (r) => r.objectPath,
      );
      this.#rootObject.catch(() => (this.#rootObject = undefined));
    }
    return this.#rootObject;
  }

  async #apply(spec: ChainSpec): Promise<ApplyResult> {
    const started = performance.now();
    const chain = this.#chains.get(spec.name) ?? this.#adoptIfPinned(spec.name);
    const digests = {
      code: codeDigest(spec),
      tables: tablesDigest(spec),
      tests: testsDigest(spec),
    };
    if (chain && chain.meta.hook !== spec.hook) return this.#changeHook(chain, spec, digests, started);
    if (chain?.live && chain.live.meta.codeDigest === digests.code) {
      return this.#updateInPlace(chain, spec, digests, started);
    }
    const rootObjectPath = chain ? undefined : await this.#rootObjectPath();
    return this.#switch(chain, spec, digests, rootObjectPath, started);
  }

  // ---- switch ---------------------------------------------------------------------------------

  async #switch(
    existing: Chain | undefined,
    spec: ChainSpec,
    digests: Digests,
    rootObjectPath: string | undefined,
    started: number,
  ): Promise<ApplyResult> {
    const hook = programHook(spec.hook);
    // The self-test and the new revision load at the same time, so that their verifications
    // share the cores; nothing is switched in before the self-test passed.
    let selfTestMs = 0;
    const selfTesting = this.#selfTest(spec, hook).finally(() => (selfTestMs = performance.now() - started));
    const building = (async () => {
      const chain = existing ?? this.#createSkeleton(spec, rootObjectPath!);
      try {
        return { chain, built: await this.#build(chain, spec, digests) };
      } catch (err) {
        if (!existing) this.#destroy(chain);
        throw err;
      }
    })();
    const [testOutcome, buildOutcome] = await Promise.allSettled([selfTesting, building]);
    if (testOutcome.status === "rejected") {
      if (buildOutcome.status === "fulfilled") {
        const { chain, built } = buildOutcome.value;
        this.#discard(chain, built);
        if (!existing) this.#destroy(chain);
      }
      throw testOutcome.reason;
    }
    if (buildOutcome.status === "rejected") throw buildOutcome.reason;
    const selfTest = testOutcome.value;
    const { chain, built } = buildOutcome.value;
    this.#phase("self-tested", spec.name);
    const loadStarted = started + selfTestMs;

    // New interfaces of a running chain are attached before the switch, so that a failure
    // leaves the old revision as it was; they run the old revision until the switch.
    let attached: string[] = [];
    if (existing) {
      try {
        attached = this.#attachMissing(chain, spec);
      } catch (err) {
        this.#discard(chain, built);
        throw err;
      }
    }
    const loadMs = performance.now() - loadStarted;
    this.#phase("built", spec.name);

    const nf0 = u32(built.nfs[0]!.program.fd);
    const flipStarted = performance.now();
    chain.rootArray.update(KEY0, nf0);
    const flipUs = (performance.now() - flipStarted) * 1000;
    this.#phase("flipped", spec.name);

    this.#moveNewMaps(chain, built.generation);
    this.#phase("maps-moved", spec.name);
    const previous = chain.live;
    chain.live = {
      meta: built.meta,
      progs: built.progs,
      metaMap: built.metaMap,
      programIds: built.nfs.map((nf) => nf.program.id),
      programs: built.programs,
      maps: new Map(),
    };
    closeNfs(built.nfs);
    if (previous) this.#release(chain, previous);
    this.#pruneMaps(chain);
    this.#phase("released", spec.name);

    let detached: string[] = [];
    try {
      if (existing) {
        detached = this.#detachUnwanted(chain, spec);
        attached = [...attached, ...this.#reattachModes(chain, spec)];
      } else {
        attached = this.#attachMissing(chain, spec);
      }
    } catch (err) {
      if (!existing) this.#destroy(chain);
      throw err;
    }
    if (attached.length > 0 || detached.length > 0) this.#writeChainMeta(chain, spec);

    const result: ApplyResult = {
      action: existing ? "switched" : "created",
      chain: spec.name,
      revision: spec.revision,
      generation: built.generation,
      programIds: [chain.rootProg.id, ...chain.live.programIds],
      attachedInterfaces: [...chain.links.keys()],
      carriedMaps: built.carried,
      recreatedMaps: built.recreated,
      interfaces: { attached, detached },
      ...(selfTest ? { selfTest } : {}),
      timings: { selfTestMs, loadMs, flipUs, totalMs: performance.now() - started },
    };
    chain.log.info(
      {
        revision: spec.revision,
        generation: built.generation,
        action: result.action,
        recreated: built.recreated.length,
        flipUs: Math.round(flipUs),
        totalMs: Math.round(result.timings.totalMs),
      },
      "revision live",
    );
    return result;
  }

  // ---- change of hook -------------------------------------------------------------------------

  /**
   * Moves a chain to another hook without a moment unfiltered: the new revision is built for
   * the new hook next to the live one (maps carried over as in any switch, NFs keeping their
   * stats slots) and self-tested; a root program for the new hook, whose slot 0 already holds
   * the new revision, is attached to every interface; only then are the old hook's links
   * detached. Any failure before that leaves the old hook's chain as it was.
   *
   * What a packet may see: between the attach of the new hook and the detach of the old one
   * (about a millisecond per interface) both chains run. On different directions (tc-ingress
   * and tc-egress, or XDP and tc-egress) a packet meets only one of them. XDP and tc-ingress on
   * the same interface both see a received packet, XDP first: during that window a packet is
   * processed by the XDP chain and, if that passes it, by the tc chain, so it is dropped if either
   * revision drops it (never unfiltered) and the NFs count it, and spend rate-limit tokens or
   * flow counters on it, twice.
   */
  async #changeHook(chain: Chain, spec: ChainSpec, digests: Digests, started: number): Promise<ApplyResult> {
    const from = chain.meta.hook;
    const hook = programHook(spec.hook);
    chain.log.info({ from, to: spec.hook }, "hook changes: attaching the new hook before detaching the old");
    const rootObjectPath = await this.#rootObjectPath();
    let selfTestMs = 0;
    const selfTesting = this.#selfTest(spec, hook).finally(() => (selfTestMs = performance.now() - started));
    const building = this.#build(chain, spec, digests);
    const [testOutcome, buildOutcome] = await Promise.allSettled([selfTesting, building]);
    if (testOutcome.status === "rejected") {
      if (buildOutcome.status === "fulfilled") this.#discard(chain, buildOutcome.value);
      throw testOutcome.reason;
    }
    if (buildOutcome.status === "rejected") throw buildOutcome.reason;
    const built = buildOutcome.value;
    const selfTest = testOutcome.value;
    this.#phase("self-tested", spec.name);
    const loadStarted = started + selfTestMs;

    const paths = chain.paths.handover;
    const xdpMode = spec.xdpMode ?? "auto";
    const target: ChainMeta = { format: META_FORMAT, hook: spec.hook, xdpMode, interfaces: {} };
    let root: RootObjects | undefined;
    let targetMeta: BpfMap | undefined;
    const links = new Map<string, AttachedLink>();
    let overlapStarted = 0;
    try {
      rmSync(paths.dir, { recursive: true, force: true });
      mkdirSync(paths.dir, { recursive: true });
      targetMeta = createMetaMap();
      writeMeta(targetMeta, target);
      targetMeta.pin(paths.meta);
      // The miss counter carries over: the new root counts into the old root's map.
      root = loadRoot(rootObjectPath, spec.hook, chain.rootStats);
      root.rootArray.update(KEY0, u32(built.nfs[0]!.program.fd));
      root.rootProg.pin(paths.rootProg);
      root.rootArray.pin(paths.rootArray);
      root.rootStats.pin(paths.rootStats);
      overlapStarted = performance.now();
      for (const ifname of spec.interfaces) {
        const link = attachRoot(root.rootProg, spec.hook, ifname, xdpMode, this.#options.netns, chain.log);
        links.set(ifname, link);
        link.link.pin(paths.link(ifname));
        target.interfaces[ifname] = { ifindex: link.ifindex, ...(link.mode ? { mode: link.mode } : {}) };
      }
    } catch (err) {
      for (const { link } of links.values()) detachLink(link, chain.log);
      if (root) closeRoot(root);
      targetMeta?.close();
      rmSync(paths.dir, { recursive: true, force: true });
      this.#discard(chain, built);
      throw err;
    }
    targetMeta.close();
    const loadMs = performance.now() - loadStarted;
    this.#phase("built", spec.name);

    // The commit point: from here on a new process completes the change instead of undoing it.
    const flipStarted = performance.now();
    writeMeta(chain.metaMap, target);
    const detached = [...chain.links.keys()];
    for (const ifname of detached) this.#detach(chain, ifname);
    const flipUs = (performance.now() - flipStarted) * 1000;
    const overlapUs = (performance.now() - overlapStarted) * 1000;
    chain.meta = target;
    this.#phase("flipped", spec.name);

    renameSync(paths.rootProg, chain.paths.rootProg);
    renameSync(paths.rootArray, chain.paths.rootArray);
    renameSync(paths.rootStats, chain.paths.rootStats);
    for (const ifname of links.keys()) renameSync(paths.link(ifname), chain.paths.link(ifname));
    rmSync(paths.dir, { recursive: true, force: true });
    closeRoot(chain);
    Object.assign(chain, root);
    chain.links = links;
    this.#moveNewMaps(chain, built.generation);
    this.#phase("maps-moved", spec.name);
    const previous = chain.live;
    chain.live = {
      meta: built.meta,
      progs: built.progs,
      metaMap: built.metaMap,
      programIds: built.nfs.map((nf) => nf.program.id),
      programs: built.programs,
      maps: new Map(),
    };
    closeNfs(built.nfs);
    if (previous) this.#release(chain, previous);
    this.#pruneMaps(chain);
    this.#phase("released", spec.name);

    const result: ApplyResult = {
      action: "switched",
      chain: spec.name,
      revision: spec.revision,
      generation: built.generation,
      programIds: [chain.rootProg.id, ...chain.live.programIds],
      attachedInterfaces: [...chain.links.keys()],
      carriedMaps: built.carried,
      recreatedMaps: built.recreated,
      interfaces: { attached: [...links.keys()], detached },
      hookChange: { from, to: spec.hook },
      ...(selfTest ? { selfTest } : {}),
      timings: { selfTestMs, loadMs, flipUs, overlapUs, totalMs: performance.now() - started },
    };
    chain.log.info(
      {
        revision: spec.revision,
        generation: built.generation,
        from,
        to: spec.hook,
        recreated: built.recreated.length,
        overlapUs: Math.round(overlapUs),
        totalMs: Math.round(result.timings.totalMs),
      },
      "revision live on the new hook",
    );
    return result;
  }

  /**
   * Makes the chain's private self-test instance run the spec (its own prog array, stats and
   * state maps; NFs loaded the same way for an earlier self-test are reused, see
   * testinstance.ts) and runs every vector; throws SelfTestError on a mismatch. Nothing live is
   * touched. Without vectors nothing is loaded, unless `loadAnyway` (a trial load: the
   * verifier's verdict, no vectors).
   */
  async #selfTest(
    spec: ChainSpec,
    hook: ProgramHook,
    loadAnyway = false,
  ): Promise<SelfTestReport | undefined> {
    const vectors: SelfTestVectors = {
      chain: spec.tests ?? [],
      nf: new Map(spec.functions.map((nf) => [nf.name, nf.tests ?? []])),
    };
    const withVectors = hasVectors(vectors);
    if (!withVectors && !loadAnyway) return undefined;
    const instance = this.#testInstance(spec.name, hook);
    const nfs = await instance.prepare(spec.functions);
    const order = spec.functions.map((nf) => nf.name);
    const report = runSelfTest(
      {
        hook,
        order,
        program: (i) => nfs[i]!.program,
        readEnded: () => new Map(order.map((name, i) => [name, this.#readStats(instance.stats, i)])),
        isolate: (i) => {
          const next = nfs[i + 1];
          if (!next) return () => undefined;
          instance.progs.delete(u32(i + 1));
          return () => instance.progs.update(u32(i + 1), u32(next.program.fd));
        },
        resetState: () => clearState(nfs),
      },
      vectors,
    );
    assertSelfTestPassed(report);
    return withVectors ? report : undefined;
  }

  /** The self-test instance of chain `name` for `hook` (another hook's is closed). */
  #testInstance(name: string, hook: ProgramHook): TestInstance {
    let instance = this.#testInstances.get(name);
    if (instance?.hook !== hook) {
      instance?.close();
      instance = new TestInstance(hook);
      this.#testInstances.set(name, instance);
    }
    return instance;
  }

  #dropTestInstance(name: string): void {
    this.#testInstances.get(name)?.close();
    this.#testInstances.delete(name);
  }

  /** Loads revision B next to the live one and pins it; on failure removes all of it. */
  async #build(chain: Chain, spec: ChainSpec, digests: Digests): Promise<BuiltRevision> {
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
      const statsIndexes = this.#assignStatsIndexes(chain, spec);
      const carried: NfMapRef[] = [];
      const recreated: RecreatedMap[] = [];
      const hook = programHook(spec.hook);
      const options: LoadNfsOptions = {
        hook,
        functions: spec.functions,
        statsIndexes,
        progs,
        stats: chain.stats,
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
      const takeOver = this.#lastNfToTakeOver(chain, spec, hook, statsIndexes);
      const toLoad = spec.functions.map((_, i) => i).filter((i) => !(takeOver && i === n - 1));
      nfs.push(...(await loadNfsConcurrently(options, toLoad)));
      if (takeOver) {
        const last = spec.functions[n - 1]!;
        nfs.push(
          takeOverNf(last, takeOver.program, takeOver.nf.program, statsIndexes[n - 1]!, takeOver.nf.maps),
        );
        const tableMaps = new Set(takeOver.nf.tableMaps);
        for (const map of takeOver.nf.maps) if (!tableMaps.has(map)) carried.push({ nf: last.name, map });
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
        nfs: nfs.map((nf, i): RevisionNf => ({
          name: nf.spec.name,
          statsIndex: nf.statsIndex,
          program: nf.programName,
          objectPath: nf.spec.objectPath,
          maps: [...nf.origins.keys()],
          tableMaps: Object.keys(nf.spec.tables ?? {}),
          ...(nf.sharable ? { loadDigest: nfLoadDigest(hook, nf.spec, i, nfs.length, nf.statsIndex) } : {}),
          tablesDigest: nfTablesDigest(nf.spec),
        })),
      };
      metaMap = createMetaMap();
      writeMeta(metaMap, meta);
      metaMap.pin(paths.revMeta(generation));
      for (const nf of nfs) programs.push(nf.program.dup());
      return { generation, meta, progs, metaMap, nfs, programs, carried, recreated };
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
  #lastNfToTakeOver(
    chain: Chain,
    spec: ChainSpec,
    hook: ProgramHook,
    statsIndexes: readonly number[],
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
    if (liveLast.loadDigest !== nfLoadDigest(hook, last, n - 1, n, statsIndexes[n - 1]!)) return undefined;
    if (liveLast.tablesDigest !== nfTablesDigest(last)) return undefined;
    return { nf: liveLast, program };
  }

  /** Undoes a built revision that will not be switched in. */
  #discard(chain: Chain, built: BuiltRevision): void {
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
  #assignStatsIndexes(chain: Chain, spec: ChainSpec): number[] {
    const live = new Map((chain.live?.meta.nfs ?? []).map((nf) => [nf.name, nf.statsIndex]));
    const used = new Set(live.values());
    const zero = Buffer.alloc(this.#statsBuf.length);
    return spec.functions.map((nf) => {
      const kept = live.get(nf.name);
      if (kept !== undefined) return kept;
      let index = 0;
      while (used.has(index)) index++;
      if (index >= SLUICE_STATS_ENTRIES) throw new ChainStateError(`${spec.name}: no free stats index`);
      used.add(index);
      // Not used by the live revision, so no packet writes it meanwhile.
      chain.stats.update(u32(index), zero);
      return index;
    });
  }

  /** Moves maps new in `generation` into the chain's maps/ (atomic rename over an old pin). */
  #moveNewMaps(chain: Chain, generation: number): string[] {
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
  #release(chain: Chain, revision: LiveRevision): void {
    rmSync(chain.paths.rev(revision.meta.generation), { recursive: true, force: true });
    closeRevision(revision);
  }

  /** Unpins NF-owned maps that the live revision does not use. */
  #pruneMaps(chain: Chain): string[] {
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

  // ---- in place -------------------------------------------------------------------------------

  async #updateInPlace(
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
      selfTest = await this.#selfTest(spec, programHook(spec.hook));
    }
    const selfTestMs = performance.now() - started;
    const updateStarted = performance.now();
    // Every table is checked before the first one is written: all or nothing.
    const writes: { map: BpfMap; entries: TableEntry[] }[] = [];
    if (tablesChanged) {
      spec.functions.forEach((nf, i) => {
        const liveNf = live.meta.nfs[i]!;
        for (const [mapName, entries] of Object.entries(nf.tables ?? {})) {
          if (!liveNf.maps.includes(mapName)) {
            const known = liveNf.maps.join(", ") || "none";
            throw new ChainSpecError(`${nf.name}: tables: no map ${mapName} in the NF (its maps: ${known})`);
          }
          const map = this.#liveMap(chain.name, nf.name, mapName);
          if (map.perCpu)
            throw new ChainSpecError(
              `${nf.name}: tables: map ${mapName} is per-CPU; tables fill only shared maps`,
            );
          if (entries.length > map.maxEntries) {
            throw new ChainSpecError(
              `${nf.name}: tables: ${entries.length} entries for map ${mapName} of ${map.maxEntries}`,
            );
          }
          entries.forEach((e, k) => {
            if (e.key.length !== map.keySize || e.value.length !== map.valueSize) {
              throw new ChainSpecError(
                `${nf.name}: tables: ${mapName}[${k}]: key ${e.key.length} / value ${e.value.length} bytes; the map has ${map.keySize} / ${map.valueSize}`,
              );
            }
          });
          writes.push({ map, entries });
        }
      });
    }
    const attached = this.#attachMissing(chain, spec);
    for (const { map, entries } of writes) replaceEntries(map, entries);
    if (tablesChanged) {
      spec.functions.forEach((nf, i) => {
        const liveNf = live.meta.nfs[i]!;
        liveNf.tableMaps = [...new Set([...liveNf.tableMaps, ...Object.keys(nf.tables ?? {})])];
        liveNf.tablesDigest = nfTablesDigest(nf);
      });
    }
    const detached = this.#detachUnwanted(chain, spec);
    const reattached = this.#reattachModes(chain, spec);
    if (attached.length + detached.length + reattached.length > 0) this.#writeChainMeta(chain, spec);
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
    const interfacesChanged = attached.length + detached.length + reattached.length > 0;
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

  #liveMap(chainName: string, nf: string, map: string): BpfMap {
    const chain = this.#chains.get(chainName);
    const live = chain?.live;
    if (!chain || !live) throw new ChainStateError(`chain ${chainName}: no live revision`);
    const liveNf = live.meta.nfs.find((n) => n.name === nf);
    if (!liveNf) throw new ChainStateError(`chain ${chainName}: no NF ${nf} in the live revision`);
    if (!liveNf.maps.includes(map)) {
      throw new ChainStateError(
        `chain ${chainName}: NF ${nf} has no map ${map} (its maps: ${liveNf.maps.join(", ") || "none"})`,
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

  // ---- chain skeleton and attachment ----------------------------------------------------------

  /** Loads and pins the root program, its prog array, the stats and meta maps of a new chain. */
  #createSkeleton(spec: ChainSpec, rootObjectPath: string): Chain {
    const paths = chainPaths(this.root, spec.name);
    // A directory without a live chain (a crash before its first switch) is stale.
    rmSync(paths.dir, { recursive: true, force: true });
    const handles: { close(): void }[] = [];
    try {
      const { rootProg, rootArray, rootStats } = loadRoot(rootObjectPath, spec.hook);
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
      metaMap.pin(paths.meta);
      const chain: Chain = {
        name: spec.name,
        paths,
        log: this.#log.child({ chain: spec.name }),
        meta,
        rootProg,
        rootArray,
        rootStats,
        stats,
        metaMap,
        links: new Map(),
        live: undefined,
        nextGeneration: 1,
      };
      this.#chains.set(spec.name, chain);
      return chain;
    } catch (err) {
      for (const handle of handles) handle.close();
      rmSync(paths.dir, { recursive: true, force: true });
      throw err;
    }
  }

  /** Attaches the root to every interface of `spec` that has no link yet; all or none. */
  #attachMissing(chain: Chain, spec: ChainSpec): string[] {
    const attached: string[] = [];
    try {
      for (const ifname of spec.interfaces) {
        const existing = chain.links.get(ifname);
        if (existing && existing.link.info().ifindex) continue;
        // A link whose device went away is defunct: attach to the interface of that name anew.
        if (existing) this.#detach(chain, ifname);
        this.#attach(chain, ifname, spec.xdpMode ?? "auto");
        attached.push(ifname);
      }
    } catch (err) {
      for (const ifname of attached) this.#detach(chain, ifname);
      throw err;
    }
    return attached;
  }

  /** Detaches interfaces that `spec` no longer names. */
  #detachUnwanted(chain: Chain, spec: ChainSpec): string[] {
    const wanted = new Set(spec.interfaces);
    const detached = [...chain.links.keys()].filter((ifname) => !wanted.has(ifname));
    for (const ifname of detached) this.#detach(chain, ifname);
    return detached;
  }

  /**
   * XDP links whose mode the spec no longer accepts are attached again in the right mode. XDP
   * cannot run native and generic programs on one device at once, so packets pass that interface
   * without the chain for the moment between detach and attach.
   */
  #reattachModes(chain: Chain, spec: ChainSpec): string[] {
    if (spec.hook !== "xdp") return [];
    const wanted = spec.xdpMode ?? "auto";
    chain.meta.xdpMode = wanted;
    if (wanted === "auto") return [];
    const redo = [...chain.links]
      .filter(([, l]) => l.mode !== undefined && l.mode !== wanted)
      .map(([n]) => n);
    for (const ifname of redo) {
      this.#detach(chain, ifname);
      this.#attach(chain, ifname, wanted);
    }
    return redo;
  }

  #attach(chain: Chain, ifname: string, xdpMode: XdpMode): void {
    const attached = attachRoot(
      chain.rootProg,
      chain.meta.hook,
      ifname,
      xdpMode,
      this.#options.netns,
      chain.log,
    );
    try {
      attached.link.pin(chain.paths.link(ifname));
    } catch (err) {
      attached.link.close();
      throw err;
    }
    chain.links.set(ifname, attached);
    chain.meta.interfaces[ifname] = {
      ifindex: attached.ifindex,
      ...(attached.mode ? { mode: attached.mode } : {}),
    };
  }

  #detach(chain: Chain, ifname: string): void {
    const attached = chain.links.get(ifname);
    if (attached) detachLink(attached.link, chain.log);
    rmSync(chain.paths.link(ifname), { force: true });
    chain.links.delete(ifname);
    delete chain.meta.interfaces[ifname];
  }

  #writeChainMeta(chain: Chain, spec: ChainSpec): void {
    chain.meta.xdpMode = spec.xdpMode ?? "auto";
    writeMeta(chain.metaMap, chain.meta);
  }

  /** Detaches, unpins and closes everything of a chain. */
  #destroy(chain: Chain): void {
    for (const ifname of [...chain.links.keys()]) this.#detach(chain, ifname);
    closeChain(chain);
    rmSync(chain.paths.dir, { recursive: true, force: true });
    this.#chains.delete(chain.name);
  }

  // ---- adoption -------------------------------------------------------------------------------

  #adoptIfPinned(name: string): Chain | undefined {
    const paths = chainPaths(this.root, name);
    if (!existsSync(paths.dir)) return undefined;
    const adopted = this.#adoptChain(name);
    return adopted.outcome === "adopted" ? this.#chains.get(name) : undefined;
  }

  #adoptChain(name: string): AdoptedChain {
    const paths = chainPaths(this.root, name);
    const log = this.#log.child({ chain: name });
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
            liveProgId === undefined ? undefined : this.#openRevisionIfLive(paths, generation, liveProgId);
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
        for (const moved of this.#moveNewMaps(chain, chain.live.meta.generation)) {
          repairs.push(`moved map ${moved} of the live revision into place`);
        }
      } else {
        log.warn({ liveProgId }, "no live revision found: the next apply builds one");
      }
      for (const pruned of this.#pruneMaps(chain))
        repairs.push(`unpinned ${pruned} (not used by the live revision)`);
      this.#chains.set(name, chain);
      log.info({ revision: chain.live?.meta.revision, repairs }, "adopted pinned chain");
      return this.#describeAdopted(chain, repairs);
    } catch (err) {
      for (const handle of handles) handle.close();
      throw err;
    }
  }

  /** Opens revision `generation` when its slot 0 runs `liveProgId`; undefined otherwise. */
  #openRevisionIfLive(paths: ChainPaths, generation: number, liveProgId: number): LiveRevision | undefined {
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

  #describeAdopted(chain: Chain, repairs: string[]): AdoptedChain {
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

  // ---- status ---------------------------------------------------------------------------------

  #readStats(map: BpfMap, index: number): EndedCounters {
    if (!map.lookupInto(u32(index), this.#statsBuf))
      return { packets: 0n, bytes: 0n, drops: 0n, passes: 0n, errors: 0n };
    return decodePerCpuNfStats(this.#statsBuf, numPossibleCpus());
  }

  #status(chain: Chain): ChainStatus {
    const live = chain.live;
    const nfs = live?.meta.nfs ?? [];
    const ended = new Map(nfs.map((nf) => [nf.name, this.#readStats(chain.stats, nf.statsIndex)]));
    const counters = deriveCounters(
      nfs.map((nf) => nf.name),
      ended,
    );
    return {
      name: chain.name,
      hook: chain.meta.hook,
      revision: live?.meta.revision ?? "",
      generation: live?.meta.generation ?? 0,
      rootProgramId: chain.rootProg.id,
      interfaces: [...chain.links].map(([name, l]) => ({
        name,
        ifindex: l.ifindex,
        linkId: l.link.id,
        ...(l.mode ? { xdpMode: l.mode } : {}),
      })),
      nfs: nfs.map((nf, i) => ({
        name: nf.name,
        programId: live?.programIds[i] ?? 0,
        statsIndex: nf.statsIndex,
        counters: counters.get(nf.name)!,
      })),
      rootMisses: this.#readStats(chain.rootStats, 0),
    };
  }
}

interface Digests {
  code: string;
  tables: string;
  tests: string;
}

/** Digest of every NF's tables (entries sorted by key: a table is a set). */
function tablesDigest(spec: ChainSpec): string {
  const h = createHash("sha256");
  for (const nf of spec.functions) {
    h.update(`\0nf ${nf.name}`);
    for (const mapName of Object.keys(nf.tables ?? {}).sort()) {
      const entries = (nf.tables?.[mapName] ?? [])
        .map((e) => `${e.key.toString("hex")}=${e.value.toString("hex")}`)
        .sort();
      h.update(`\0map ${mapName}\0${entries.join(",")}`);
    }
  }
  return h.digest("hex");
}

/** Digest of every vector of the chain and of its NFs. */
function testsDigest(spec: ChainSpec): string {
  return createHash("sha256")
    .update(JSON.stringify([spec.tests ?? [], spec.functions.map((nf) => [nf.name, nf.tests ?? []])]))
    .digest("hex");
}

function closeRevision(revision: LiveRevision): void {
  revision.progs.close();
  revision.metaMap.close();
  for (const program of revision.programs) program?.close();
  for (const map of revision.maps.values()) map.close();
  revision.maps.clear();
}

function closeChain(chain: Chain): void {
  if (chain.live) closeRevision(chain.live);
  for (const { link } of chain.links.values()) link.close();
  chain.rootProg.close();
  chain.rootArray.close();
  chain.rootStats.close();
  chain.stats.close();
  chain.metaMap.close();
}

/** The objects of a root program: the program, its one-slot prog array, its miss counter (own fds). */
interface RootObjects {
  rootProg: BpfProgram;
  rootArray: BpfMap;
  rootStats: BpfMap;
}

/**
 * Loads the root program for `hook` with a new, empty prog array; counting misses into
 * `rootStats` when given (a change of hook keeps the chain's counter), else into a new map.
 * The caller owns the result.
 */
function loadRoot(rootObjectPath: string, hook: Hook, rootStats?: BpfMap): RootObjects {
  const rootName = ChainContract.root.programs[programHook(hook)];
  const object = BpfObject.load({
    path: rootObjectPath,
    programs: [rootName],
    ...(rootStats ? { reuseMaps: { [ChainContract.root.statsMap]: rootStats } } : {}),
  });
  const handles: { close(): void }[] = [];
  try {
    const rootProg = object.program(rootName).dup();
    handles.push(rootProg);
    const rootArray = object.map(ChainContract.root.progArray).dup();
    handles.push(rootArray);
    const stats = object.map(ChainContract.root.statsMap).dup();
    return { rootProg, rootArray, rootStats: stats };
  } catch (err) {
    for (const handle of handles) handle.close();
    throw err;
  } finally {
    object.close();
  }
}

function closeRoot(root: RootObjects): void {
  root.rootProg.close();
  root.rootArray.close();
  root.rootStats.close();
}

/**
 * Attaches `rootProg` to `ifname` on `hook` (unpinned: the caller pins or closes the link). In
 * XDP's `auto` mode native is tried first, generic where the device cannot run native XDP.
 * Throws AttachError, naming a hook that another program holds.
 */
function attachRoot(
  rootProg: BpfProgram,
  hook: Hook,
  ifname: string,
  xdpMode: XdpMode,
  netns: string | undefined,
  log: Logger,
): AttachedLink {
  const inNetns = <T>(fn: () => T): T => (netns ? withNetns(netns, fn) : fn());
  const ifindex = ifIndex(ifname, netns);
  let link: BpfLink;
  try {
    link = inNetns(() => {
      if (hook === "tc-ingress" || hook === "tc-egress") {
        return BpfLink.attachTcx(rootProg, ifindex, hook === "tc-ingress" ? "ingress" : "egress");
      }
      if (xdpMode !== "auto") return BpfLink.attachXdp(rootProg, ifindex, xdpMode);
      try {
        return BpfLink.attachXdp(rootProg, ifindex, "native");
      } catch (err) {
        if (!(err instanceof NotSupportedError)) throw err;
        log.info({ ifname, reason: err.message }, "native XDP not available: attaching in generic mode");
        return BpfLink.attachXdp(rootProg, ifindex, "generic");
      }
    });
  } catch (err) {
    if (err instanceof BpfError) {
      const holder = err.code === "EBUSY" || err.code === "EEXIST" ? " (another program holds the hook)" : "";
      throw new AttachError(ifname, `${err.message}${holder}`, { cause: err });
    }
    throw err;
  }
  return { link, ifindex, mode: link.xdpMode };
}

/** Detaches a link now (its pin may stay) and closes the handle. */
function detachLink(link: BpfLink, log: Logger): void {
  try {
    link.detach();
  } catch (err) {
    log.warn({ err, linkId: link.id }, "detach failed; unpinning the link");
  }
  link.close();
}

/**
 * Undoes or completes a change of hook that a crash interrupted (see layout.ts): before its
 * commit (the chain meta still names the old hook) the new hook's links are detached and the
 * handover removed; after it, the old hook's links are detached and the handover pins renamed
 * into place. Either way the chain is left on one hook. Returns what was repaired.
 */
function finishHandover(paths: ChainPaths, log: Logger): string[] {
  const handover = paths.handover;
  if (!existsSync(handover.dir)) return [];
  const chainMeta = BpfMap.fromPin(paths.meta, "sluice_meta");
  let hook: Hook;
  let target: Hook | undefined;
  try {
    hook = readMeta(chainMeta, ChainMeta, "chain meta").hook;
    if (existsSync(handover.meta)) {
      const targetMeta = BpfMap.fromPin(handover.meta, "sluice_meta");
      try {
        target = readMeta(targetMeta, ChainMeta, "handover meta").hook;
      } finally {
        targetMeta.close();
      }
    }
  } finally {
    chainMeta.close();
  }
  const linkPins = (dir: string) => readdirSync(dir).filter((entry) => entry.startsWith(LINK_PREFIX));
  if (target === undefined || target !== hook) {
    for (const entry of linkPins(handover.dir)) detachLink(BpfLink.fromPin(join(handover.dir, entry)), log);
    rmSync(handover.dir, { recursive: true, force: true });
    log.info({ hook, to: target }, "undid a change of hook that a crash interrupted");
    return [
      `undid the interrupted change of hook to ${target ?? "another hook"}: the chain stays on ${hook}`,
    ];
  }
  // Committed: every link of the chain directory that does not run the new root is the old hook's.
  const rootPin = existsSync(handover.rootProg) ? handover.rootProg : paths.rootProg;
  const newRoot = BpfProgram.fromPin(rootPin);
  const newRootId = newRoot.id;
  newRoot.close();
  for (const entry of linkPins(paths.dir)) {
    const link = BpfLink.fromPin(join(paths.dir, entry));
    if (link.info().progId === newRootId) {
      link.close();
      continue;
    }
    detachLink(link, log);
    rmSync(join(paths.dir, entry), { force: true });
  }
  for (const [from, to] of [
    [handover.rootProg, paths.rootProg],
    [handover.rootArray, paths.rootArray],
    [handover.rootStats, paths.rootStats],
  ] as const) {
    if (existsSync(from)) renameSync(from, to);
  }
  for (const entry of linkPins(handover.dir)) renameSync(join(handover.dir, entry), join(paths.dir, entry));
  rmSync(handover.dir, { recursive: true, force: true });
  log.info({ hook }, "completed a change of hook that a crash interrupted");
  return [`completed the interrupted change of hook to ${hook}`];
}
