/**
 * Switch latency of a 3-NF chain (firewall -> ratelimit -> flowmon) with a warm compile cache:
 * from handing over the new revision until the root points at it. Two revisions that differ
 * in one parameter alternate, so every switch loads new programs.
 *
 * The floor is the same work done directly on the libbpf layer (self-test instance with the
 * real self-test module, live instance with maps carried over, flip, release of the old
 * revision): what any chain manager must at least spend on this kernel.
 */
import type { TestVector } from "../common/api/testvector.ts";
import { u32, type BpfMap } from "../node-agent/src/libbpf/index.ts";
import type { EndedCounters } from "../node-agent/src/chain/counters.ts";
import { assertSelfTestPassed, runSelfTest, type SelfTestTarget } from "../node-agent/src/selftest/index.ts";
import type { TestScope } from "../test/kernel/harness.ts";
import { createStats, Revision, Root } from "./chain.ts";
import type { BenchObjects } from "./objects.ts";
import { switchParts } from "./swap.ts";
import { median, percentile, round, since } from "./stats.ts";

/** NF names of the switched chain, in order. */
export const SWITCH_ORDER = ["firewall", "ratelimit", "flowmon"] as const;

/** The vectors every switch proves before going live (the chain's own). */
export const SWITCH_VECTORS: TestVector[] = [
  {
    name: "udp from the cluster subnet passes through every NF",
    packet: { ipv4: { src: "10.77.0.1", dst: "10.77.0.2" }, udp: { sport: 40000, dport: 5000 } },
    expect: { verdict: "pass", counters: { flowmon: { packets: 1, passes: 1 } } },
  },
  {
    name: "a private source is dropped by the firewall",
    packet: { ipv4: { src: "192.168.1.1", dst: "10.77.0.2" }, udp: { sport: 40000, dport: 5000 } },
    expect: { verdict: "drop", counters: { firewall: { drops: 1 }, ratelimit: { packets: 0 } } },
  },
  {
    name: "ssh is dropped",
    packet: { ipv4: { src: "10.77.0.1", dst: "10.77.0.2" }, tcp: { sport: 40000, dport: 22 } },
    expect: { verdict: "drop" },
  },
];

/** Switch latency figures (ms, except flip in µs). */
export interface SwitchFigures {
  switches: number;
  p50_ms: number;
  p99_ms: number;
  max_ms: number;
  /** The atomic step alone (root slot update), median, µs. */
  flip_us_p50: number;
  flip_us_p99: number;
  /** Where the time goes (medians), when known. */
  parts_ms_p50: Record<string, number>;
  /** Median of the first and of the last quarter of the switches: a trend means something accumulates. */
  p50_first_quarter_ms: number;
  p50_last_quarter_ms: number;
}

/** Summarises per-switch samples. */
export function switchFigures(
  total: number[],
  flipUs: number[],
  parts: Record<string, number[]>,
): SwitchFigures {
  return {
    switches: total.length,
    p50_ms: round(median(total), 2),
    p99_ms: round(percentile(total, 99), 2),
    max_ms: round(Math.max(...total), 2),
    flip_us_p50: round(median(flipUs), 1),
    flip_us_p99: round(percentile(flipUs, 99), 1),
    parts_ms_p50: Object.fromEntries(Object.entries(parts).map(([k, v]) => [k, round(median(v), 2)])),
    p50_first_quarter_ms: round(median(total.slice(0, Math.max(1, Math.floor(total.length / 4)))), 2),
    p50_last_quarter_ms: round(median(total.slice(-Math.max(1, Math.floor(total.length / 4)))), 2),
  };
}

/** A revision as a self-test target: NF i is `order[i]` with stats index i. */
function selfTestTarget(revision: Revision, stats: BpfMap): SelfTestTarget {
  const programs = SWITCH_ORDER.map((nf) => `${nf}_xdp`);
  const stateMaps: [number, string][] = [
    [1, "ratelimit_state"],
    [2, "flowmon_flows"],
  ];
  return {
    hook: "xdp",
    order: SWITCH_ORDER,
    program: (i) => {
      const nf = revision.nfs[i];
      if (!nf) throw new Error(`self-test: no NF ${i}`);
      return nf.program(programs[i] as string);
    },
    readEnded: () =>
      new Map(
        SWITCH_ORDER.map((nf, i): [string, EndedCounters] => {
          const sum = (field: number) =>
            (stats.lookupPerCpu(u32(i)) ?? []).reduce((s, v) => s + v.readBigUInt64LE(field * 8), 0n);
          return [nf, { packets: sum(0), bytes: sum(1), drops: sum(2), passes: sum(3), errors: sum(4) }];
        }),
      ),
    isolate: (i) => {
      const next = revision.nfs[i + 1];
      if (!next) return () => undefined;
      revision.progs.delete(u32(i + 1));
      return () => revision.progs.update(u32(i + 1), u32(next.program(programs[i + 1] as string).fd));
    },
    resetState: () => {
      for (const [i, name] of stateMaps) {
        const map = revision.nfs[i]?.map(name);
        if (!map) continue;
        for (const key of [...map.keys()]) map.delete(key);
      }
    },
  };
}

/**
 * `count` switches done by hand: self-test instance (private maps) + vectors, live instance
 * (maps carried over), flip, release of the old revision.
 */
export function measureSwitchFloor(
  objects: BenchObjects,
  scope: TestScope,
  count: number,
  log: (msg: string) => void,
): SwitchFigures {
  const stats = createStats();
  scope.defer(() => stats.close());
  const root = new Root(objects.root);
  scope.defer(() => root.close());
  let live = Revision.load(switchParts(objects, 0), stats);
  scope.defer(() => live.close());
  root.switchTo(live);

  const total: number[] = [];
  const flipUs: number[] = [];
  const parts: Record<string, number[]> = { selftest_instance: [], vectors: [], live_load: [], release: [] };
  for (let k = 0; k < count; k++) {
    const variant = ((k + 1) % 2) as 0 | 1;
    const started = performance.now();

    let t = performance.now();
    const testStats = createStats();
    const instance = Revision.load(switchParts(objects, variant), testStats);
    parts.selftest_instance?.push(since(t));
    t = performance.now();
    try {
      assertSelfTestPassed(runSelfTest(selfTestTarget(instance, testStats), { chain: SWITCH_VECTORS }));
    } finally {
      instance.close();
      testStats.close();
    }
    parts.vectors?.push(since(t));

    t = performance.now();
    const next = Revision.load(switchParts(objects, variant, live), stats);
    parts.live_load?.push(since(t));

    t = performance.now();
    root.switchTo(next);
    flipUs.push(since(t) * 1000);
    total.push(since(started));

    t = performance.now();
    const old = live;
    live = next;
    old.close();
    parts.release?.push(since(t));
  }
  log(`switch floor: ${count} switches by hand`);
  return switchFigures(total, flipUs, parts);
}
