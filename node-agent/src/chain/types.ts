/**
 * What the chain manager takes and reports: its options, the result of an apply, an adoption and
 * a chain's status. Plain data, no fds.
 */
import type { Logger } from "../../../common/log.ts";
import type { SelfTestReport } from "../selftest/index.ts";
import type { EndedCounters, NfCounters } from "./counters.ts";
import type { Hook } from "./spec.ts";

/** Default bpffs directory of the chains. */
export const DEFAULT_BPFFS_ROOT = "/sys/fs/bpf/sluice";

/** Steps of a switch, in order (the test seam {@link ChainManagerOptions.onPhase} names them). */
export type SwitchPhase =
  /**
   * The new revision passed its self-test; it was loaded and pinned next to the live one
   * meanwhile (the two run at the same time). Nothing live changed yet.
   */
  | "self-tested"
  /**
   * The new revision's prog array is filled and new interfaces attached; nothing live changed
   * yet. In a change of hook: the new hook's root is attached next to the old hook's.
   */
  | "built"
  /**
   * Root slot 0 holds the new revision: it is live. In a change of hook: the chain meta names
   * the new hook and the old hook's links are detached.
   */
  | "flipped"
  /** Maps new in this revision are pinned in the chain's maps/ directory. */
  | "maps-moved"
  /** The previous revision is unpinned and its fds closed. */
  | "released";

/** Options of the chain manager. */
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
  /**
   * Per-function time: the roots and revisions this manager loads time 1 in this many packets
   * (a power of two, at most 2^20) in each NF (see `sluice_time_sample` in bpf/include/sluice.h);
   * 0 or absent: off, at no cost. Chains adopted from another agent keep their root's setting
   * until their hook changes.
   */
  timeSample?: number;
  /**
   * Keep the revision a switch replaced loaded as the chain's standby (default true): a switch
   * back to exactly that revision (a rollback, two revisions alternating) then loads and
   * verifies nothing, it is self-tested and switched in. Costs the memory of one more revision
   * per chain (its programs, prog array and tables; state maps are the chain's, shared). Nothing
   * of the standby is pinned: a new process adopts the live revision alone.
   */
  keepStandby?: boolean;
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

/** What `ChainManager.apply` did. */
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
   * one was detached (see `ChainManager.apply` for what a packet may see meanwhile).
   */
  hookChange?: { from: Hook; to: Hook };
  /** Interfaces attached and detached by this call. */
  interfaces: { attached: string[]; detached: string[] };
  /** The self-test, when vectors ran. */
  selfTest?: SelfTestReport;
  /**
   * The revision switched in was the chain's standby (the one the switch before replaced,
   * kept loaded: see ChainManagerOptions.keepStandby): nothing was loaded or verified.
   */
  fromStandby?: boolean;
  /** How the revision runs: one program for the chain (fused) or one per NF (linked). */
  mode?: "linked" | "fused";
  /** Why a chain that asked for `auto` runs linked. */
  modeReason?: string;
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
    /**
     * A switch on the same hook: where its time went, ms. The self-test and the build run at
     * the same time (on the worker threads and the main thread), so these overlap:
     * `selfTestLoadMs` (loading what the self-test instance lacked) and `vectorsMs` run while
     * `nfLoadMs` (loading the new revision's NFs, maps carried over) runs; `revisionMs` is the
     * rest of the build (tables, pins, prog array, meta), `releaseMs` the time after the flip
     * (new maps moved into place, the replaced revision unpinned and kept as standby or closed).
     * A switch to the standby (`fromStandby`) loads nothing (`nfLoadMs` 0) and runs the
     * self-test first; `revisionMs` is then pinning the standby again, after the self-test.
     */
    parts?: {
      selfTestLoadMs: number;
      vectorsMs: number;
      nfLoadMs: number;
      revisionMs: number;
      releaseMs: number;
    };
    totalMs: number;
  };
}

/** A chain found pinned by `ChainManager.adopt`. */
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
  /**
   * Per-function time (ChainManagerOptions.timeSample): the sampled packets that went through
   * this NF and their summed time in it (since its stats slot was first used; each includes
   * about one clock read). Absent when no packet was ever timed in it.
   */
  time?: NfTime;
}

/** Time of sampled packets in one NF, summed over CPUs (`struct sluice_nf_time`). */
export interface NfTime {
  ns: bigint;
  samples: bigint;
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
  /**
   * The revision kept loaded as standby (see ChainManagerOptions.keepStandby): its label and
   * its NFs' program ids in chain order. Absent when there is none.
   */
  standby?: { revision: string; programIds: number[] };
}
