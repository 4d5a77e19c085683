/**
 * Per-packet costs with BPF_PROG_TEST_RUN, always entering at the root program as the hook
 * would: chains of 0..8 no-op NFs (hop cost), and firewall + ratelimit + flowmon linked by tail
 * calls against the same logic hand-fused into one program. All variants run interleaved in
 * the same rounds (order rotated per round), and figures are medians over rounds of paired
 * differences or ratios, so that a noisy neighbour shifts both sides of a comparison alike.
 */
import { XdpAction, type BpfMap, type BpfProgram } from "../node-agent/src/libbpf/index.ts";
import { buildPacket } from "../node-agent/src/packet/index.ts";
import { createScratchMap } from "../node-agent/src/chain/nfload.ts";
import { ChainContract, rodataValues, type MapContents } from "../node-agent/src/nf/index.ts";
import type { TestScope } from "../test/kernel/harness.ts";
import { HandChain, packetsAt, type NfPart } from "./chain.ts";
import { configuredBuiltin, interleavedRounds, type Sampled } from "./measure.ts";
import type { BenchObjects } from "./objects.ts";
import { median, round, slope } from "./stats.ts";

/** Chain lengths measured; 0 is the root alone (its tail call misses, the packet passes). */
export const CHAIN_LENGTHS = [0, 1, 2, 4, 8] as const;

/**
 * The packet of every test run: 60 bytes, Ethernet + IPv4 + UDP to port 53, as in the measured
 * facts the targets come from.
 */
export const BENCH_PACKET = buildPacket({
  ipv4: { src: "10.1.0.7", dst: "10.2.0.53" },
  udp: { sport: 40000, dport: 53 },
  payloadLength: 18,
});

/**
 * Firewall rules of the linked/fused comparison: seven rules the packet does not match (each
 * fails on a different condition), then the one that allows it, so that the scan does real
 * work without dominating the figure.
 */
export const BENCH_FIREWALL = {
  parameters: { defaultAction: "deny", nonIpAction: "allow" },
  tables: {
    rules: [
      { action: "deny", src: "192.168.0.0/16" },
      { action: "deny", dst: "172.16.0.0/12" },
      { action: "deny", protocol: "tcp", dport: 22 },
      { action: "deny", protocol: "icmp" },
      { action: "deny", family: "ipv6" },
      { action: "deny", protocol: "udp", dport: "6000-6100" },
      { action: "deny", src: "10.1.0.0/24", protocol: "udp", sport: "1-1023" },
      { action: "allow", src: "10.0.0.0/8", dst: "10.2.0.0/16", protocol: "udp", dport: 53 },
    ],
  },
};

/** A rate limit no test run reaches (1e9 packets/s, burst 1e6): every packet takes the full path. */
export const BENCH_RATELIMIT = { parameters: { rate: 1_000_000_000, burst: 1_000_000 } };

/** The three NFs of the linked chain, configured as in the comparison. */
export function chain3Parts(objects: BenchObjects): NfPart[] {
  const fw = configuredBuiltin("firewall", BENCH_FIREWALL);
  const rl = configuredBuiltin("ratelimit", BENCH_RATELIMIT);
  const fm = configuredBuiltin("flowmon", {});
  return [
    {
      path: objects.firewall,
      program: "firewall_xdp",
      rodata: rodataValues(fw.rodata),
      tables: fw.mapContents,
    },
    { path: objects.ratelimit, program: "ratelimit_xdp", rodata: rodataValues(rl.rodata) },
    { path: objects.flowmon, program: "flowmon_xdp", rodata: rodataValues(fm.rodata) },
  ];
}

/**
 * The three NFs of {@link chain3Parts} sharing the parse and the clock through `scratch`, as the
 * chain manager loads them.
 */
export function sharedChain3Parts(objects: BenchObjects, scratch: BpfMap): NfPart[] {
  return chain3Parts(objects).map((part) => ({
    ...part,
    rodata: { ...part.rodata, [ChainContract.rodata.shareParse]: 1 },
    reuseMaps: { ...part.reuseMaps, [ChainContract.scratchMap]: scratch },
  }));
}

/** The hand-fused program (bench/fused.bpf.c) with the same settings and rules. */
export function fusedPart(objects: BenchObjects): NfPart {
  const fw = configuredBuiltin("firewall", BENCH_FIREWALL);
  const rl = configuredBuiltin("ratelimit", BENCH_RATELIMIT);
  const tables: MapContents = { ...fw.mapContents };
  return {
    path: objects.fused,
    program: "fused_xdp",
    rodata: { ...rodataValues(fw.rodata), ...rodataValues(rl.rodata) },
    tables,
  };
}

/** Test-run figures. */
export interface TestRunFigures {
  /** (t8 - t0) / 8 per round, median: marginal cost of one no-op hop. */
  hop_ns: number;
  /** Least-squares slope of the chain_ns medians over 0..8 NFs. */
  hop_ns_slope: number;
  /** (t8 - t1) / 7 per round, median: hop cost between NFs only (both ends count in an NF). */
  hop_ns_between_nfs: number;
  /** Median ns per packet entering at the root, by number of no-op NFs ("0": root alone). */
  chain_ns: Record<string, number>;
  /** Medians of the linked and fused variants, in ns per packet. */
  fused: { linked_ns: number; fused_ns: number; fused_direct_ns: number };
  /** linked / fused (both entered through a root), median over rounds. */
  fused_ratio: number;
  /** linked / fused program run on its own without a root, median over rounds. */
  fused_ratio_direct: number;
  testrun_repeat: number;
  testrun_rounds: number;
  packet_bytes: number;
}

/** A program measured on {@link BENCH_PACKET}. */
export interface ProgramVariant extends Sampled {
  prog: BpfProgram;
}

/**
 * Runs every variant once to warm it up, then `rounds` interleaved rounds of `repeat` runs of
 * {@link BENCH_PACKET} each; a run that does not pass throws. `progress` hears of every fifth
 * round and of the last.
 */
export function measurePassing(
  variants: readonly ProgramVariant[],
  options: { repeat: number; rounds: number },
  progress?: (done: number) => void,
): void {
  // Warm-up: first runs fill caches and the flow/ratelimit entries.
  for (const v of variants) v.prog.testRun({ data: BENCH_PACKET, repeat: Math.min(options.repeat, 10_000) });
  interleavedRounds(
    variants,
    options.rounds,
    (v) => {
      const run = v.prog.testRun({ data: BENCH_PACKET, repeat: options.repeat });
      if (run.retval !== XdpAction.PASS)
        throw new Error(`${v.name}: test run returned ${run.retval}, not XDP_PASS`);
      v.samples.push(run.durationNs);
    },
    (done) => {
      if (done === options.rounds || done % 5 === 0) progress?.(done);
    },
  );
}

/**
 * Builds every variant, checks that each walks the whole chain (the last NF counted the
 * packet; for the root alone, the miss counter), then measures `rounds` interleaved rounds of
 * `repeat` runs each.
 */
export function measureTestRuns(
  objects: BenchObjects,
  scope: TestScope,
  options: { repeat: number; rounds: number },
  log: (msg: string) => void,
): TestRunFigures {
  const built: HandChain[] = [];
  const keep = (chain: HandChain) => {
    built.push(chain);
    scope.defer(() => chain.close());
    return chain;
  };
  const noop: NfPart = { path: objects.noop, program: "noop_xdp" };
  const variants: ProgramVariant[] = [];
  for (const n of CHAIN_LENGTHS) {
    const chain = keep(
      HandChain.build(
        objects.root,
        Array.from({ length: n }, () => noop),
      ),
    );
    expectWalk(`noop x${n}`, chain.entry, () =>
      n === 0 ? chain.root.misses() : packetsAt(chain.stats, n - 1),
    );
    variants.push({ name: `noop${n}`, prog: chain.entry, samples: [] });
  }
  const scratch = createScratchMap();
  scope.defer(() => scratch.close());
  const linked = keep(HandChain.build(objects.root, sharedChain3Parts(objects, scratch)));
  expectWalk("linked fw+rl+fm", linked.entry, () => packetsAt(linked.stats, 2));
  variants.push({ name: "linked", prog: linked.entry, samples: [] });
  const fused = keep(HandChain.build(objects.root, [fusedPart(objects)]));
  expectWalk("fused via root", fused.entry, () => packetsAt(fused.stats, 0));
  variants.push({ name: "fused", prog: fused.entry, samples: [] });
  const fusedProg = fused.revision.first;
  if (!fusedProg) throw new Error("fused chain has no program");
  expectWalk("fused direct", fusedProg, () => packetsAt(fused.stats, 0));
  variants.push({ name: "fusedDirect", prog: fusedProg, samples: [] });

  measurePassing(variants, options, (done) => log(`test runs: round ${done}/${options.rounds}`));
  for (const chain of built.splice(0)) chain.close();

  const s = (name: string) => variants.find((v) => v.name === name)?.samples ?? [];
  const paired = (a: string, b: string, f: (x: number, y: number) => number) =>
    median(s(a).map((x, i) => f(x, s(b)[i] as number)));
  const chainNs = Object.fromEntries(CHAIN_LENGTHS.map((n) => [String(n), round(median(s(`noop${n}`)), 1)]));
  return {
    hop_ns: round(
      paired("noop8", "noop0", (t8, t0) => (t8 - t0) / 8),
      2,
    ),
    hop_ns_slope: round(slope(CHAIN_LENGTHS.map((n) => ({ x: n, y: median(s(`noop${n}`)) }))), 2),
    hop_ns_between_nfs: round(
      paired("noop8", "noop1", (t8, t1) => (t8 - t1) / 7),
      2,
    ),
    chain_ns: chainNs,
    fused: {
      linked_ns: round(median(s("linked")), 1),
      fused_ns: round(median(s("fused")), 1),
      fused_direct_ns: round(median(s("fusedDirect")), 1),
    },
    fused_ratio: round(
      paired("linked", "fused", (l, f) => l / f),
      3,
    ),
    fused_ratio_direct: round(
      paired("linked", "fusedDirect", (l, f) => l / f),
      3,
    ),
    testrun_repeat: options.repeat,
    testrun_rounds: options.rounds,
    packet_bytes: BENCH_PACKET.length,
  };
}

/** Runs the packet once and checks that it passed and that `counted` grew by one. */
export function expectWalk(what: string, prog: BpfProgram, counted: () => bigint): void {
  const before = counted();
  const run = prog.testRun({ data: BENCH_PACKET });
  const after = counted();
  if (run.retval !== XdpAction.PASS) throw new Error(`${what}: the packet got ${run.retval}, not XDP_PASS`);
  if (after - before !== 1n)
    throw new Error(`${what}: the packet did not end where expected (counter moved by ${after - before})`);
}
