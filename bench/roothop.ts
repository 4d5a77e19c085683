/**
 * The root's hop into the live revision, two ways: the direct jump sluice uses (slot 0 is a
 * constant to the verifier, so the JIT emits a direct jump that the kernel patches on every
 * update of the slot) and an indirect one (bpf/bench/root_indirect.bpf.c: the slot comes from
 * a writable global, so the tail call jumps through the prog array and an update only swaps a
 * pointer). What a packet pays for the hop (BPF_PROG_TEST_RUN, interleaved rounds, medians of
 * paired differences) is weighed against what a flip costs (update of slot 0 between two loaded
 * 3-NF revisions).
 */
import { u32 } from "../node-agent/src/libbpf/index.ts";
import type { TestScope } from "../test/kernel/harness.ts";
import { createStats, HandChain, Revision, Root, type NfPart } from "./chain.ts";
import { interleavedRounds, scopedChain } from "./measure.ts";
import type { BenchObjects } from "./objects.ts";
import { median, percentile, round } from "./stats.ts";
import { switchParts } from "./swap.ts";
import { BENCH_PACKET, chain3Parts } from "./testrun.ts";

/** Root hop figures. */
export interface RootHopFigures {
  /** ns per packet entering at each root, by chain (`noop1`: one no-op NF; `chain3`: fw+rl+fm). */
  ns: Record<"direct" | "indirect", { noop1: number; chain3: number }>;
  /** indirect - direct, median of paired differences per round, ns per packet. */
  indirect_extra_ns: { noop1: number; chain3: number };
  /** Update of slot 0 from one revision's NF 0 to the other's, µs. */
  flip_us_p50: Record<"direct" | "indirect", number>;
  flip_us_p99: Record<"direct" | "indirect", number>;
  /** Packets per switch above which the direct hop costs less in total: flip saving / extra ns. */
  break_even_packets: number;
  repeat: number;
  rounds: number;
  flips: number;
}

/** Measures both roots; `flips` slot updates each, `rounds` x `repeat` test runs per variant. */
export function measureRootHop(
  objects: BenchObjects,
  scope: TestScope,
  options: { repeat: number; rounds: number; flips: number },
  log: (msg: string) => void,
): RootHopFigures {
  const kinds = { direct: objects.root, indirect: objects.rootIndirect } as const;
  const noop: NfPart = { path: objects.noop, program: "noop_xdp" };
  const variants: { name: string; chain: HandChain; samples: number[] }[] = [];
  const flips: Record<string, number[]> = {};
  for (const [kind, rootPath] of Object.entries(kinds)) {
    for (const [name, parts] of [
      ["noop1", [noop]],
      ["chain3", chain3Parts(objects)],
    ] as const) {
      variants.push({ name: `${kind}/${name}`, chain: scopedChain(scope, rootPath, parts), samples: [] });
    }

    const stats = createStats();
    scope.defer(() => stats.close());
    const root = new Root(rootPath);
    scope.defer(() => root.close());
    const a = Revision.load(switchParts(objects, 0), stats);
    scope.defer(() => a.close());
    const b = Revision.load(switchParts(objects, 1, a), stats);
    scope.defer(() => b.close());
    const samples: number[] = [];
    for (let k = 0; k < options.flips; k++) {
      const next = k % 2 === 0 ? b : a;
      const fd = u32(next.first!.fd);
      const started = performance.now();
      root.array.update(u32(0), fd);
      samples.push((performance.now() - started) * 1000);
    }
    flips[kind] = samples;
  }

  for (const v of variants) v.chain.entry.testRun({ data: BENCH_PACKET, repeat: 10_000 });
  interleavedRounds(variants, options.rounds, (v) => {
    const run = v.chain.entry.testRun({ data: BENCH_PACKET, repeat: options.repeat });
    if (run.retval !== 2)
      throw new Error(`root hop ${v.name}: test run returned ${run.retval}, not XDP_PASS`);
    v.samples.push(run.durationNs);
  });
  log(`root hop: ${options.rounds} rounds, ${options.flips} flips per root`);
  const s = (name: string) => variants.find((v) => v.name === name)!.samples;
  const extra = (chain: string) =>
    round(median(s(`indirect/${chain}`).map((x, i) => x - s(`direct/${chain}`)[i]!)), 1);
  const ns = (kind: string) => ({
    noop1: round(median(s(`${kind}/noop1`)), 1),
    chain3: round(median(s(`${kind}/chain3`)), 1),
  });
  const flipP50 = { direct: round(median(flips.direct!), 1), indirect: round(median(flips.indirect!), 1) };
  const extraNs = { noop1: extra("noop1"), chain3: extra("chain3") };
  return {
    ns: { direct: ns("direct"), indirect: ns("indirect") },
    indirect_extra_ns: extraNs,
    flip_us_p50: flipP50,
    flip_us_p99: {
      direct: round(percentile(flips.direct!, 99), 1),
      indirect: round(percentile(flips.indirect!, 99), 1),
    },
    break_even_packets:
      extraNs.noop1 > 0 ? Math.round(((flipP50.direct - flipP50.indirect) * 1000) / extraNs.noop1) : 0,
    repeat: options.repeat,
    rounds: options.rounds,
    flips: options.flips,
  };
}
