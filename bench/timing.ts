/**
 * What per-function time (`--time-functions N`, `sluice_time_sample` in bpf/include/sluice.h)
 * costs a packet: root + 3 no-op NFs sharing the chain's scratch map as the chain manager loads
 * them, with the setting off (the default: the verifier removes the timing code), 1 in 16
 * packets timed and every packet timed, all entered through the root in the same interleaved
 * rounds. Also what each no-op NF reports with every packet timed: about one clock read, the
 * floor of every per-function figure.
 */
import { XdpAction, u32, type BpfMap } from "../node-agent/src/libbpf/index.ts";
import { createScratchMap } from "../node-agent/src/chain/nfload.ts";
import { ChainContract } from "../node-agent/src/nf/index.ts";
import type { TestScope } from "../test/kernel/harness.ts";
import { HandChain, type NfPart } from "./chain.ts";
import { interleavedRounds } from "./measure.ts";
import type { BenchObjects } from "./objects.ts";
import { median, round } from "./stats.ts";
import { BENCH_PACKET } from "./testrun.ts";

/** Per-function time figures. */
export interface TimingFigures {
  /** Medians, ns per packet through root + 3 no-op NFs. */
  ns: { off: number; sample16: number; every: number };
  /** Medians over rounds of paired differences against off, ns per packet. */
  overhead_ns: { sample16: number; every: number };
  /** Mean ns per timed packet each no-op NF reported with every packet timed. */
  noop_reported_ns: number[];
  timing_repeat: number;
  timing_rounds: number;
}

const NFS = 3;

function parts(objects: BenchObjects, scratch: BpfMap, timeSample: number): NfPart[] {
  return Array.from({ length: NFS }, () => ({
    path: objects.noop,
    program: "noop_xdp",
    rodata: {
      [ChainContract.rodata.shareParse]: 1,
      ...(timeSample ? { [ChainContract.rodata.timeSample]: timeSample } : {}),
    },
    reuseMaps: { [ChainContract.scratchMap]: scratch },
  }));
}

/** The time sums of stats index `index` in `scratch`, summed over CPUs. */
function timeAt(scratch: BpfMap, index: number): { ns: bigint; samples: bigint } {
  const values = scratch.lookupPerCpu(u32(ChainContract.timeBase + index)) ?? [];
  return values.reduce(
    (sum, v) => ({ ns: sum.ns + v.readBigUInt64LE(0), samples: sum.samples + v.readBigUInt64LE(8) }),
    { ns: 0n, samples: 0n },
  );
}

export function measureTiming(
  objects: BenchObjects,
  scope: TestScope,
  options: { repeat: number; rounds: number },
  log: (msg: string) => void,
): TimingFigures {
  const variants = (
    [
      ["off", 0],
      ["sample16", 16],
      ["every", 1],
    ] as const
  ).map(([name, timeSample]) => {
    const scratch = createScratchMap();
    scope.defer(() => scratch.close());
    const chain = HandChain.build(objects.root, parts(objects, scratch, timeSample), {
      ...(timeSample ? { rodata: { [ChainContract.rodata.timeSample]: timeSample } } : {}),
      reuseMaps: { [ChainContract.scratchMap]: scratch },
    });
    scope.defer(() => chain.close());
    return { name, chain, scratch, samples: [] as number[] };
  });
  for (const v of variants) {
    const run = v.chain.entry.testRun({ data: BENCH_PACKET, repeat: Math.min(options.repeat, 10_000) });
    if (run.retval !== XdpAction.PASS) throw new Error(`timing ${v.name}: test run returned ${run.retval}`);
  }
  const every = variants.find((v) => v.name === "every")!;
  const before = Array.from({ length: NFS }, (_, i) => timeAt(every.scratch, i));
  interleavedRounds(variants, options.rounds, (v) =>
    v.samples.push(v.chain.entry.testRun({ data: BENCH_PACKET, repeat: options.repeat }).durationNs),
  );
  log(`per-function time: ${options.rounds} rounds`);
  const off = variants.find((v) => v.name === "off")!;
  if (Array.from({ length: NFS }, (_, i) => timeAt(off.scratch, i).samples).some((n) => n !== 0n))
    throw new Error("timing off: a function summed time");
  const noopReported = before.map((b, i) => {
    const now = timeAt(every.scratch, i);
    return round(Number(now.ns - b.ns) / Number(now.samples - b.samples), 1);
  });
  const s = (name: string) => variants.find((v) => v.name === name)!.samples;
  const overhead = (name: string) => round(median(s(name).map((x, i) => x - s("off")[i]!)), 1);
  return {
    ns: {
      off: round(median(s("off")), 1),
      sample16: round(median(s("sample16")), 1),
      every: round(median(s("every")), 1),
    },
    overhead_ns: { sample16: overhead("sample16"), every: overhead("every") },
    noop_reported_ns: noopReported,
    timing_repeat: options.repeat,
    timing_rounds: options.rounds,
  };
}
