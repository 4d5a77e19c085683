import { describe, expect, it } from "vitest";
import { HISTORY_POINTS, LiveHistory, RATE_HOLD_MS } from "./history.ts";
import type { ChainReading } from "./model.ts";

/** A one-NF-pair chain whose counters are `packets` and `drops` (of the second NF) so far. */
function reading(packets: number, drops: number, extra: Partial<ChainReading> = {}): ChainReading {
  return {
    node: "n1",
    chain: "default_edge",
    hook: "xdp",
    revision: "main@sha1:" + "a".repeat(40),
    phase: "Ready",
    functions: [
      { name: "firewall", packets: BigInt(packets), drops: 0n, passes: BigInt(packets), errors: 0n },
      {
        name: "ratelimit",
        packets: BigInt(packets),
        drops: BigInt(drops),
        passes: BigInt(packets - drops),
        errors: 0n,
      },
    ],
    rootMisses: 0n,
    ...extra,
  };
}

/** Feeds one reading a second from `start` (s) with `perSecond(i)` -> [packets/s, drops/s]. */
function feed(
  history: LiveHistory,
  start: number,
  seconds: number,
  perSecond: (i: number) => [number, number],
  from = { p: 0, d: 0 },
  extra: Partial<ChainReading> = {},
) {
  let { p, d } = from;
  for (let i = 0; i < seconds; i++) {
    const [pp, dd] = perSecond(i);
    p += pp;
    d += dd;
    history.record((start + i) * 1000, [reading(p, d, extra)]);
  }
  return { p, d };
}

describe("the live view's history", () => {
  it("turns counters into per-second rates per function and keeps 15 minutes", () => {
    const history = new LiveHistory("n1");
    feed(history, 1000, HISTORY_POINTS + 20, () => [100, 10]);
    const { points } = history.snapshot();
    expect(points).toHaveLength(HISTORY_POINTS);
    expect(points.at(-1)!.functions["n1/default_edge/ratelimit"]).toEqual([100, 10, 90, 0]);
    expect(points.at(-1)!.t - points[0]!.t).toBe(HISTORY_POINTS - 1);
  });

  it("gives each timed function its mean ns per sampled packet over the second", () => {
    const history = new LiveHistory("n1");
    const timed = (s: number): ChainReading => {
      const r = reading(100 * s, 0);
      r.functions[0]!.timeNs = BigInt(s * 10 * 40);
      r.functions[0]!.timeSamples = BigInt(s * 10);
      r.functions[1]!.timeNs = BigInt(s * 5 * 300);
      r.functions[1]!.timeSamples = BigInt(s * 5);
      return r;
    };
    history.record(1000_000, [timed(1)]);
    const point = history.record(1001_000, [timed(2)]);
    expect(point.nsPerPacket["n1/default_edge/firewall"]).toBe(40);
    expect(point.nsPerPacket["n1/default_edge/ratelimit"]).toBe(300);
    // Untimed chains give no per-function figure.
    const plain = new LiveHistory("n1");
    plain.record(1000_000, [reading(100, 0)]);
    expect(Object.keys(plain.record(1001_000, [reading(200, 0)]).nsPerPacket)).toEqual([]);
  });

  it("reports a function whose drop rate jumped after a switch, naming the commit", () => {
    const history = new LiveHistory("n1");
    const at = feed(history, 1000, 30, () => [100, 0]);
    history.mark({
      t: 1030,
      chain: "default_edge",
      node: "n1",
      kind: "switch",
      revision: "r2",
      message: "deny udp",
    });
    feed(history, 1030, 6, () => [100, 80], at);
    const problems = history.snapshot().problems;
    expect(problems).toEqual([
      expect.objectContaining({
        kind: "drop-rate-jump",
        chain: "default_edge",
        nf: "ratelimit",
        message: expect.stringContaining("deny udp"),
      }),
    ]);
  });

  it("reports counters that stopped, tail-call misses, a failed switch and a map near full", () => {
    const history = new LiveHistory("n1");
    const at = feed(history, 1000, 30, () => [50, 0]);
    feed(history, 1030, 12, () => [0, 0], at, {
      rootMisses: 0n,
      phase: "Failed",
      lastError: { reason: "VerifierRejected", message: "R1 invalid mem access\nmore" },
      maps: [{ nf: "ratelimit", map: "ratelimit_state", entries: 950, maxEntries: 1000 }],
    });
    history.record(1042_000, [reading(at.p, 0, { rootMisses: 7n })]);
    const kinds = history.snapshot().problems.map((p) => p.kind);
    expect(kinds).toContain("tail-call-misses");
    feed(history, 1043, 1, () => [0, 0], at, {
      phase: "Failed",
      lastError: { reason: "VerifierRejected", message: "R1 invalid mem access\nmore" },
      maps: [{ nf: "ratelimit", map: "ratelimit_state", entries: 950, maxEntries: 1000 }],
      rootMisses: 7n,
    });
    expect(
      history
        .snapshot()
        .problems.map((p) => p.kind)
        .sort(),
    ).toEqual(["counters-stopped", "map-near-full", "switch-failed", "tail-call-misses"].sort());
  });

  it("takes rates of counters read elsewhere over their own sampling times, and holds them until they are too old", () => {
    const history = new LiveHistory("cluster");
    // The agent read its counters at 1000.0 s and 1010.0 s (every 10 s: no page open), and the
    // operator records a point every second.
    history.record(1000_500, [reading(0, 0, { sampledAtMs: 1000_000 })]);
    for (let s = 1001; s <= 1009; s++)
      history.record(s * 1000 + 500, [reading(0, 0, { sampledAtMs: 1000_000 })]);
    expect(history.snapshot().points.every((p) => Object.keys(p.functions).length === 0)).toBe(true);
    for (let s = 1010; s <= 1030; s++)
      history.record(s * 1000 + 500, [reading(5000, 1000, { sampledAtMs: 1010_000 })]);
    const series = history.snapshot().points.map((p) => p.functions["n1/default_edge/ratelimit"]);
    // 5000 packets in 10 s, drawn every second while the sample is at most RATE_HOLD_MS old.
    expect(series.filter(Boolean)).toHaveLength(RATE_HOLD_MS / 1000);
    expect(series.find(Boolean)).toEqual([500, 100, 400, 0]);
    expect(series.at(-1)).toBeUndefined();
  });

  it("reports a node whose agent stopped answering once, whatever the number of its chains", () => {
    const history = new LiveHistory("cluster");
    const silent = { seconds: 12, error: "connect ECONNREFUSED" };
    history.record(1000_000, [
      reading(0, 0, { silent, noCounters: true }),
      reading(0, 0, { chain: "default_core", silent, noCounters: true }),
    ]);
    expect(history.snapshot().problems).toEqual([
      expect.objectContaining({
        kind: "node-silent",
        node: "n1",
        message: expect.stringMatching(/node stopped reporting.*12 s.*ECONNREFUSED/),
      }),
    ]);
  });

  it("tells subscribers of every point and marker", () => {
    const history = new LiveHistory("n1");
    const events: string[] = [];
    const stop = history.subscribe((e) => events.push(e.type));
    expect(history.watchers).toBe(1);
    history.record(1000, [reading(1, 0)]);
    history.mark({ t: 1, chain: "default_edge", kind: "rollout-started", revision: "r", message: "m" });
    stop();
    history.record(2000, [reading(2, 0)]);
    expect(events).toEqual(["point", "marker"]);
  });
});
