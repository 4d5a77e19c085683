/**
 * Fused chains per packet, with BPF_PROG_TEST_RUN, entering at the root program as the hook
 * would: sluice's generated fused program of firewall + ratelimit + flowmon (planned, compiled
 * and loaded by the agent's own code, node-agent/src/chain/fused.ts) against the hand-fused
 * bpf/bench/fused.bpf.c with the same settings and rules, and generated fused chains of
 * 0..32 no-op NFs (the marginal cost of an NF in a fused chain). All variants run interleaved
 * in the same rounds (order rotated per round); figures are medians over rounds of paired
 * ratios or differences.
 */
import { basename, join } from "node:path";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { loadFused, planFused, fusionSourceOf } from "../node-agent/src/chain/fused.ts";
import { closeNfs, createProgArray, type LoadedNf } from "../node-agent/src/chain/nfload.ts";
import type { NfLoadSpec } from "../node-agent/src/chain/spec.ts";
import { fillTables as fillNfTables } from "../node-agent/src/chain/tables.ts";
import { BPF_DIR } from "../node-agent/src/compile/index.ts";
import { u32, type BpfMap, type BpfProgram } from "../node-agent/src/libbpf/index.ts";
import { BUILTIN_NFS, rodataValues } from "../node-agent/src/nf/index.ts";
import type { TestScope } from "../test/kernel/harness.ts";
import { createStats, HandChain, packetsAt, Root } from "./chain.ts";
import type { BenchObjects } from "./objects.ts";
import { median, round, slope } from "./stats.ts";
import { configuredBuiltin } from "./measure.ts";
import {
  BENCH_FIREWALL,
  BENCH_RATELIMIT,
  expectWalk,
  fusedPart,
  measurePassing,
  type ProgramVariant,
} from "./testrun.ts";

/** Lengths of the generated no-op chains; 0 is the root alone (its tail call misses). */
export const FUSED_LENGTHS = [0, 1, 2, 4, 8, 16, 32] as const;

/** Fused-chain figures. */
export interface FusedFigures {
  /** Generated fused fw+rl+fm / hand-fused fused.bpf.c, both through a root; median over rounds. */
  fused_mode_ratio: number;
  /** The same without the root (each program run on its own). */
  fused_mode_ratio_direct: number;
  /** (t32 - t0) / 32 per round, median: marginal cost of one no-op NF in a fused chain. */
  fused_ns_per_nf: number;
  /** Least-squares slope of the medians over 0..32 NFs. */
  fused_ns_per_nf_slope: number;
  /** Median ns per packet through the root, by number of fused no-op NFs. */
  fused_chain_ns: Record<string, number>;
  /** Medians in ns per packet: generated and hand-fused, through the root and direct. */
  fused_mode: { generated_ns: number; hand_ns: number; generated_direct_ns: number; hand_direct_ns: number };
  /** Verified instructions of the generated fw+rl+fm program and of the hand-fused one. */
  fused_mode_insns: { generated: number; hand: number };
}

function builtinSpec(
  objects: BenchObjects,
  name: keyof typeof BUILTIN_NFS,
  as: string,
  config: { parameters?: unknown; tables?: unknown } = {},
): NfLoadSpec {
  const nf = BUILTIN_NFS[name];
  const c = configuredBuiltin(name, config);
  return {
    name: as,
    objectPath: objects[name as keyof BenchObjects],
    rodata: rodataValues(c.rodata),
    tables: c.mapContents,
    fusion: fusionSourceOf(join(BPF_DIR, nf.sourceDir), basename(nf.entry)),
  };
}

/** A generated fused chain behind its own root. */
class FusedChain {
  readonly root: Root;
  readonly stats: BpfMap;
  readonly progs: BpfMap;
  readonly nfs: LoadedNf[];

  private constructor(root: Root, stats: BpfMap, progs: BpfMap, nfs: LoadedNf[]) {
    this.root = root;
    this.stats = stats;
    this.progs = progs;
    this.nfs = nfs;
  }

  static async build(rootPath: string, functions: NfLoadSpec[], cacheDir: string): Promise<FusedChain> {
    const planned = await planFused("xdp", functions, cacheDir);
    if (!planned.ok) throw new Error(`not fused: ${planned.reason}`);
    const stats = createStats();
    const progs = createProgArray();
    let root: Root | undefined;
    try {
      const nfs = await loadFused(
        { hook: "xdp", functions, statsIndexes: functions.map((_, i) => i), progs, stats },
        planned.plan,
      );
      fillNfTables(nfs);
      root = new Root(rootPath);
      root.array.update(u32(0), u32(nfs[0]!.program.fd));
      return new FusedChain(root, stats, progs, nfs);
    } catch (err) {
      root?.close();
      progs.close();
      stats.close();
      throw err;
    }
  }

  get program(): BpfProgram {
    return this.nfs[0]!.program;
  }

  #closed = false;

  /** Releases every fd. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    closeNfs(this.nfs);
    this.root.close();
    this.progs.close();
    this.stats.close();
  }
}

/** Builds every variant, checks each walk, and measures `rounds` interleaved rounds of `repeat` runs. */
export async function measureFused(
  objects: BenchObjects,
  scope: TestScope,
  options: { repeat: number; rounds: number },
  log: (msg: string) => void,
): Promise<FusedFigures> {
  const cacheDir = await mkdtemp(join(tmpdir(), "sluice-bench-fused-"));
  scope.defer(() => rm(cacheDir, { recursive: true, force: true }));
  const closers: { close(): void }[] = [];
  const keep = <T extends { close(): void }>(x: T): T => {
    closers.push(x);
    scope.defer(() => x.close());
    return x;
  };
  try {
    const variants: ProgramVariant[] = [];
    const hand = keep(HandChain.build(objects.root, [fusedPart(objects)]));
    expectWalk("hand-fused", hand.entry, () => packetsAt(hand.stats, 0));
    const handProg = hand.revision.first!;
    const generated = keep(
      await FusedChain.build(
        objects.root,
        [
          builtinSpec(objects, "firewall", "firewall", BENCH_FIREWALL),
          builtinSpec(objects, "ratelimit", "ratelimit", BENCH_RATELIMIT),
          builtinSpec(objects, "flowmon", "flowmon"),
        ],
        cacheDir,
      ),
    );
    expectWalk("generated fused", generated.root.program, () => packetsAt(generated.stats, 2));
    variants.push(
      { name: "hand", prog: hand.entry, samples: [] },
      { name: "handDirect", prog: handProg, samples: [] },
      { name: "generated", prog: generated.root.program, samples: [] },
      { name: "generatedDirect", prog: generated.program, samples: [] },
    );
    for (const n of FUSED_LENGTHS) {
      if (n === 0) {
        const alone = keep(HandChain.build(objects.root, []));
        expectWalk("root alone", alone.entry, () => alone.root.misses());
        variants.push({ name: "noop0", prog: alone.entry, samples: [] });
        continue;
      }
      const chain = keep(
        await FusedChain.build(
          objects.root,
          Array.from({ length: n }, (_, i) => builtinSpec(objects, "noop", `noop${i}`)),
          cacheDir,
        ),
      );
      expectWalk(`fused noop x${n}`, chain.root.program, () => packetsAt(chain.stats, n - 1));
      variants.push({ name: `noop${n}`, prog: chain.root.program, samples: [] });
    }

    measurePassing(variants, options, (done) => log(`fused: round ${done}/${options.rounds}`));
    const s = (name: string) => variants.find((v) => v.name === name)?.samples ?? [];
    const paired = (a: string, b: string, f: (x: number, y: number) => number) =>
      median(s(a).map((x, i) => f(x, s(b)[i]!)));
    const last = FUSED_LENGTHS[FUSED_LENGTHS.length - 1]!;
    return {
      fused_mode_ratio: round(
        paired("generated", "hand", (g, h) => g / h),
        3,
      ),
      fused_mode_ratio_direct: round(
        paired("generatedDirect", "handDirect", (g, h) => g / h),
        3,
      ),
      fused_ns_per_nf: round(
        paired(`noop${last}`, "noop0", (tn, t0) => (tn - t0) / last),
        2,
      ),
      fused_ns_per_nf_slope: round(slope(FUSED_LENGTHS.map((n) => ({ x: n, y: median(s(`noop${n}`)) }))), 2),
      fused_chain_ns: Object.fromEntries(
        FUSED_LENGTHS.map((n) => [String(n), round(median(s(`noop${n}`)), 1)]),
      ),
      fused_mode: {
        generated_ns: round(median(s("generated")), 1),
        hand_ns: round(median(s("hand")), 1),
        generated_direct_ns: round(median(s("generatedDirect")), 1),
        hand_direct_ns: round(median(s("handDirect")), 1),
      },
      fused_mode_insns: {
        generated: generated.program.info().verifiedInsns,
        hand: handProg.info().verifiedInsns,
      },
    };
  } finally {
    for (const c of closers.splice(0)) c.close();
  }
}
