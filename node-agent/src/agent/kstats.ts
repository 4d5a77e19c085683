/**
 * Kernel run-time figures of the chains: run time and run count of each chain's root program
 * (`bpf_prog_info`; with tail calls the root's run includes every NF the packet went through),
 * and how full each NF's hash maps are. Everything is read through the chains' pins, never by
 * id (that needs CAP_SYS_ADMIN, which the agent does not have).
 *
 * The kernel counts run time only while BPF statistics are on: `bpf(BPF_ENABLE_STATS)` turns
 * them on for as long as the returned fd stays open (or the `kernel.bpf_stats_enabled` sysctl
 * is 1). Counting costs two clock reads per program run, so {@link BpfStatsSession} holds the
 * fd only while someone looks (a scrape, an open live view) and closes it after an idle period.
 * Linux allows BPF_ENABLE_STATS only with CAP_SYS_ADMIN: an agent with the chart's capabilities
 * gets EPERM, and then the figures are absent with that reason, unless the node's administrator
 * turned the sysctl on.
 */
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import koffi from "koffi";
import { BpfMap, BpfProgram, errnoName, MapType } from "../libbpf/index.ts";
import { closeFd, LIBBPF_SONAME } from "../libbpf/ffi.ts";
import { chainPaths } from "../chain/layout.ts";
import type { ChainStatus } from "../chain/index.ts";

const BPF_STATS_RUN_TIME = 0;
const STATS_SYSCTL = "/proc/sys/kernel/bpf_stats_enabled";

let enableStatsFn: ((type: number) => number) | undefined;
function enableStats(): number {
  enableStatsFn ??= koffi.load(LIBBPF_SONAME).func("int bpf_enable_stats(int type)") as (t: number) => number;
  return enableStatsFn(BPF_STATS_RUN_TIME);
}

/** Whether run-time figures are being counted, and if not, why. */
export type StatsState = { counting: true; by: "fd" | "sysctl" } | { counting: false; reason: string };

/**
 * Holds BPF run-time statistics on while they are wanted. Owns the stats fd; `close()`
 * releases it.
 */
export class BpfStatsSession {
  #fd = -1;
  #lastWanted = 0;
  #refusal: string | undefined;
  readonly #timer: NodeJS.Timeout;

  /** @param idleMs how long after the last {@link want} the fd is kept (default 2 minutes). */
  constructor(private readonly idleMs = 120_000) {
    this.#timer = setInterval(
      () => {
        if (this.#fd >= 0 && Date.now() - this.#lastWanted > this.idleMs) this.#release();
      },
      Math.min(10_000, idleMs),
    );
    this.#timer.unref();
  }

  /**
   * Someone reads the figures now: turns statistics on (if allowed) and says whether they count.
   * With `kernel.bpf_stats_enabled` at 1 the kernel counts already: no fd is taken, and the
   * figures count `by: "sysctl"` whether or not BPF_ENABLE_STATS would be refused. The sysctl is
   * read on every call, so an administrator turning it on or off is seen at the next read.
   */
  want(): StatsState {
    this.#lastWanted = Date.now();
    if (sysctlOn()) return { counting: true, by: "sysctl" };
    if (this.#fd >= 0) return { counting: true, by: "fd" };
    if (this.#refusal) return { counting: false, reason: this.#refusal };
    let ret: number;
    try {
      ret = enableStats();
    } catch (err) {
      this.#refusal = `bpf_enable_stats unavailable: ${(err as Error).message}`;
      return { counting: false, reason: this.#refusal };
    }
    if (ret >= 0) {
      this.#fd = ret;
      return { counting: true, by: "fd" };
    }
    // EPERM does not change while the process lives; other errors are kept too, to avoid a
    // syscall per scrape that cannot succeed.
    this.#refusal =
      -ret === 1
        ? "BPF_ENABLE_STATS needs CAP_SYS_ADMIN; to count run time, give the agent CAP_SYS_ADMIN or set sysctl kernel.bpf_stats_enabled=1 on the node (the chart's agent.bpfStatsSysctl does)"
        : `BPF_ENABLE_STATS: ${errnoName(-ret)}`;
    return { counting: false, reason: this.#refusal };
  }

  /** Whether this session holds statistics on now. */
  get holding(): boolean {
    return this.#fd >= 0;
  }

  #release(): void {
    closeFd(this.#fd);
    this.#fd = -1;
  }

  close(): void {
    clearInterval(this.#timer);
    if (this.#fd >= 0) this.#release();
  }
}

function sysctlOn(): boolean {
  try {
    return readFileSync(STATS_SYSCTL, "utf8").trim() === "1";
  } catch {
    return false;
  }
}

/** Run time of one program, as the kernel counted it while statistics were on. */
export interface ProgramRunTime {
  runTimeNs: bigint;
  runCount: bigint;
}

/** Fill level of one hash map of an NF. */
export interface MapFill {
  nf: string;
  map: string;
  entries: number;
  maxEntries: number;
}

/** Kernel figures of one chain. */
export interface ChainKernelFigures {
  chain: string;
  /**
   * The root program, whose run covers the whole chain: a tail call jumps into the next
   * program without returning, so the kernel counts the NFs' time in the root's run and none in
   * the NFs' own figures (their run counts stay 0).
   */
  root?: ProgramRunTime;
  maps: MapFill[];
}

const COUNTED_MAP_TYPES = new Set<number>([
  MapType.HASH,
  MapType.PERCPU_HASH,
  MapType.LRU_HASH,
  MapType.LRU_PERCPU_HASH,
  MapType.LPM_TRIE,
]);

function runTimeOf(pin: string): ProgramRunTime | undefined {
  if (!existsSync(pin)) return undefined;
  let program: BpfProgram | undefined;
  try {
    program = BpfProgram.fromPin(pin);
    const info = program.info();
    return { runTimeNs: info.runTimeNs, runCount: info.runCount };
  } catch {
    return undefined;
  } finally {
    program?.close();
  }
}

/**
 * Counts a hash map's entries by walking its keys (up to max_entries; a map being written
 * meanwhile may be off by the entries that came or went).
 */
function fillOf(pin: string, nf: string, map: string): MapFill | undefined {
  let handle: BpfMap | undefined;
  try {
    handle = BpfMap.fromPin(pin);
    if (!COUNTED_MAP_TYPES.has(handle.type)) return undefined;
    let entries = 0;
    for (const _ of handle.keys()) if (++entries >= handle.maxEntries) break;
    return { nf, map, entries, maxEntries: handle.maxEntries };
  } catch {
    return undefined;
  } finally {
    handle?.close();
  }
}

/** Reads the figures of `chains` from their pins under bpffs directory `root`. */
export function readKernelFigures(
  root: string,
  chains: readonly ChainStatus[],
  options: { maps?: boolean } = {},
): ChainKernelFigures[] {
  return chains.map((chain) => {
    const paths = chainPaths(root, chain.name);
    const maps: MapFill[] = [];
    if (options.maps !== false && existsSync(paths.maps)) {
      for (const nf of safeReaddir(paths.maps))
        for (const map of safeReaddir(join(paths.maps, nf))) {
          const fill = fillOf(paths.map(nf, map), nf, map);
          if (fill) maps.push(fill);
        }
    }
    const rootFigures = runTimeOf(paths.rootProg);
    return { chain: chain.name, ...(rootFigures ? { root: rootFigures } : {}), maps };
  });
}

function safeReaddir(dir: string): string[] {
  try {
    return readdirSync(dir).sort();
  } catch {
    return [];
  }
}
