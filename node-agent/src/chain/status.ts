/**
 * What runs for a chain and what it counted: the live revision, the links, and each NF's
 * counters read from the per-CPU stats map and derived along the chain's order.
 */
import { numPossibleCpus, u32, type BpfMap } from "../libbpf/index.ts";
import { decodePerCpuNfStats, NF_STATS_LAYOUT } from "../nf/structs.ts";
import type { Chain } from "./chain.ts";
import { deriveCounters, zeroEnded, type EndedCounters } from "./counters.ts";
import { ChainContract } from "../nf/types.ts";
import type { ChainStatus, NfTime } from "./types.ts";

/** Bytes of one per-CPU stats value as the kernel hands it out (8-byte slots, one per CPU). */
export function statsValueSize(): number {
  return ((NF_STATS_LAYOUT.size + 7) & ~7) * numPossibleCpus();
}

/** Reads per-CPU NF stats through one reused buffer (one reader per manager). */
export class StatsReader {
  readonly #buffer = Buffer.alloc(statsValueSize());

  /** The counters at `index` of stats map `map`, summed over CPUs; zeros when absent. */
  read(map: BpfMap, index: number): EndedCounters {
    if (!map.lookupInto(u32(index), this.#buffer)) return zeroEnded();
    return decodePerCpuNfStats(this.#buffer, numPossibleCpus());
  }
}

/**
 * The per-function time sums of stats index `index` in `scratch` (entry SLUICE_TIME_BASE +
 * index, `struct sluice_nf_time` in its first 16 bytes), summed over CPUs; undefined when no
 * packet was timed there.
 */
export function readNfTime(scratch: BpfMap, index: number): NfTime | undefined {
  const key = ChainContract.timeBase + index;
  if (key >= scratch.maxEntries) return undefined;
  const values = scratch.lookupPerCpu(u32(key));
  if (!values) return undefined;
  let ns = 0n;
  let samples = 0n;
  for (const v of values) {
    ns += v.readBigUInt64LE(0);
    samples += v.readBigUInt64LE(8);
  }
  return samples > 0n ? { ns, samples } : undefined;
}

/** What runs for `chain` now, with counters. */
export function chainStatus(chain: Chain, stats: StatsReader): ChainStatus {
  const live = chain.live;
  const nfs = live?.meta.nfs ?? [];
  const ended = new Map(nfs.map((nf) => [nf.name, stats.read(chain.stats, nf.statsIndex)]));
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
    nfs: nfs.map((nf, i) => {
      const time = readNfTime(chain.scratch, nf.statsIndex);
      return {
        name: nf.name,
        programId: live?.programIds[i] ?? 0,
        statsIndex: nf.statsIndex,
        counters: counters.get(nf.name)!,
        ...(time ? { time } : {}),
      };
    }),
    rootMisses: stats.read(chain.rootStats, 0),
    ...(chain.standby
      ? {
          standby: {
            revision: chain.standby.revision.meta.revision,
            programIds: chain.standby.revision.programs.map((p) => p.id),
          },
        }
      : {}),
  };
}
