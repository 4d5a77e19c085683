/**
 * Atomic switches under traffic: whole chains switched back and forth hundreds of times while a
 * UDP flow crosses them lose no packet, on native XDP, generic XDP and tcx, and the chain's
 * counters and the rate limiter's buckets carry over every switch: fused to fused, fused to
 * linked, linked to linked and linked to fused, and to the chain's standby revision (two
 * revisions alternating: each switch brings back the one the switch before replaced).
 *
 * The chain sits on the receiving veth end (namespace B); static neighbour entries keep ARP off
 * the wire, so the chain sees exactly the packets the flow sent. The manager runs as the chart
 * runs the agent (see chart-manager.ts).
 */
import { setImmediate as yieldToEventLoop } from "node:timers/promises";
import { describe, expect, test } from "vitest";
import type { ApplyResult, ChainSpec } from "../../node-agent/src/chain/index.ts";
import { decodeRatelimitEntry } from "../../node-agent/src/nf/index.ts";
import { createChainTestbed, useBuiltinObjects } from "./chain-testbed.ts";
import { builtinChain, type BuiltinUse } from "./fixtures/chains.ts";
import { startUdpFlow, type UdpFlowResult } from "./traffic.ts";

const objects = useBuiltinObjects();

/** Switches per mode. */
const SWITCHES = 200;
/** Each flow: 1.5 s at 20k packets/s; flows follow each other until enough switches ran. */
const FLOW_PACKETS = 30_000;
const FLOW_RATE = 20_000;
/**
 * The rate limiter's rate: one packet per millisecond. The flow is much faster, so the bucket's
 * GCRA time (tat) runs ahead by 1 ms per packet; the burst is large enough that nothing is
 * dropped. After K packets tat = (arrival of the first) + K ms, unless a switch reset the bucket.
 */
const RATE = 1000;
const INTERVAL_NS = 1_000_000n;

/**
 * Four chains the test cycles through: NFs reordered, added and removed, parameters changed.
 * Noop "a" and ratelimit are in every chain and one of them is last, so what ended in them adds
 * up to every packet, if and only if the counters carried over.
 */
function variant(i: number): BuiltinUse[] {
  const ratelimit = (burst: number): BuiltinUse => ({
    builtin: "ratelimit",
    parameters: { rate: RATE, burst },
  });
  switch (i % 4) {
    case 0:
      return [ratelimit(1_000_000), { builtin: "noop", name: "a" }];
    case 1:
      return [{ builtin: "noop", name: "a" }, { builtin: "noop", name: "b" }, ratelimit(999_000)];
    case 2:
      return [{ builtin: "noop", name: "b" }, ratelimit(999_500), { builtin: "noop", name: "a" }];
    default:
      return [{ builtin: "noop", name: "c" }, { builtin: "noop", name: "a" }, ratelimit(998_000)];
  }
}

/** How revision i runs: the sequence fused, fused, linked, linked has every pair of modes in a row. */
function chainMode(i: number): "fused" | "linked" {
  return i % 4 < 2 ? "fused" : "linked";
}

const modes = [
  { mode: "native XDP", hook: "xdp", xdpMode: "native" },
  { mode: "generic XDP", hook: "xdp", xdpMode: "generic" },
  { mode: "tcx ingress", hook: "tc-ingress", xdpMode: undefined },
] as const;

/** Revisions the test switches through, one after the other. */
interface Sequence {
  sequence: string;
  functions(i: number): BuiltinUse[];
  runsAs(i: number): "fused" | "linked";
  /** Whether the switch to revision i switches in the chain's standby (loads nothing). */
  fromStandby(i: number): boolean;
}

const sequences: Sequence[] = [
  {
    sequence: "four chains in turn",
    functions: variant,
    runsAs: chainMode,
    fromStandby: () => false,
  },
  {
    // Revision i is revision i - 2 again: the one the last switch replaced, the chain's standby.
    // A (fused) and B (linked) differ in NFs, order and parameters; B's noop "b" is new to A.
    sequence: "two chains alternating (the standby switched back in)",
    functions: (i) => variant(i % 2),
    runsAs: (i) => (i % 2 === 0 ? "fused" : "linked"),
    fromStandby: (i) => i >= 2,
  },
];

const cases = sequences.flatMap((sequence) => modes.map((mode) => ({ ...mode, ...sequence })));

describe("atomic switches under traffic", () => {
  test.each(cases)(
    `${SWITCHES}+ switches of whole chains ($sequence) on $mode lose no packet; counters and buckets carry over`,
    async ({ hook, xdpMode, functions, runsAs, fromStandby }) => {
      const { net, manager } = await createChainTestbed(objects);
      const spec = (i: number): ChainSpec =>
        builtinChain(objects, {
          name: "sw",
          revision: `v${i}`,
          hook,
          interfaces: [net.b.ifname],
          ...(xdpMode ? { xdpMode } : {}),
          functions: functions(i),
          mode: runsAs(i),
        });
      const created = await manager.apply(spec(0));
      if (xdpMode) expect((await manager.status("sw"))!.interfaces[0]!.xdpMode).toBe(xdpMode);

      const results: ApplyResult[] = [];
      const flows: UdpFlowResult[] = [];
      const startedNs = process.hrtime.bigint();
      let firstPacketByNs = 0n;
      while (results.length < SWITCHES) {
        const flow = await startUdpFlow({
          from: { ns: net.a.ns.name, ip: net.a.ip },
          to: { ns: net.b.ns.name, ip: net.b.ip },
          count: FLOW_PACKETS,
          rate: FLOW_RATE,
        });
        firstPacketByNs ||= process.hrtime.bigint();
        let finished = false;
        const outcome = flow.done().finally(() => (finished = true));
        while (!finished) {
          results.push(await manager.apply(spec(results.length + 1)));
          await yieldToEventLoop();
        }
        flows.push(await outcome);
      }

      const sent = flows.reduce((sum, f) => sum + f.sent, 0);
      expect(
        flows.map((f) => ({ lost: f.lost, receiverDrops: f.receiverDrops, duplicates: f.duplicates })),
      ).toEqual(flows.map(() => ({ lost: 0, receiverDrops: 0, duplicates: 0 })));
      expect(sent).toBe(flows.length * FLOW_PACKETS);
      expect(results.every((r) => r.action === "switched")).toBe(true);
      expect(results.map((r) => r.mode)).toEqual(results.map((_, i) => runsAs(i + 1)));
      expect(results.map((r) => r.fromStandby ?? false)).toEqual(results.map((_, i) => fromStandby(i + 1)));
      // A standby switched back in runs the very programs it ran before: nothing was loaded.
      const ids = [created, ...results].map((r) => r.programIds);
      expect(ids.map((list, i) => (fromStandby(i) ? list : []))).toEqual(
        ids.map((_, i) => (fromStandby(i) ? ids[i - 2] : [])),
      );
      expect(results.flatMap((r) => r.recreatedMaps)).toEqual([]);
      expect(
        results.every((r) => r.carriedMaps.some((m) => m.nf === "ratelimit" && m.map === "ratelimit_state")),
      ).toBe(true);

      // Counters: every packet ended in exactly one NF, and nothing missed a tail call.
      const status = (await manager.status("sw"))!;
      expect(status.rootMisses.packets).toBe(0n);
      expect(status.nfs.map((nf) => [nf.name, nf.counters.drops, nf.counters.errors])).toEqual(
        status.nfs.map((nf) => [nf.name, 0n, 0n]),
      );
      expect(status.nfs[0]!.counters.packets).toBe(BigInt(sent));

      // Buckets: tat advanced 1 ms for every packet since the first one: it never restarted.
      const [bucket] = await manager.readTable("sw", "ratelimit", "ratelimit_state");
      const tatNs = decodeRatelimitEntry(bucket!.key, bucket!.value).tatNs;
      const firstArrivalNs = tatNs - BigInt(sent) * INTERVAL_NS;
      expect(firstArrivalNs).toBeGreaterThanOrEqual(startedNs - 20n * INTERVAL_NS);
      expect(
        firstArrivalNs,
        `${sent} packets, ${results.length} switches, ${flows.length} flows`,
      ).toBeLessThanOrEqual(firstPacketByNs + 50n * INTERVAL_NS);

      if (process.env.SLUICE_TEST_TIMINGS) {
        const sorted = (pick: (r: ApplyResult) => number) => results.map(pick).sort((x, y) => x - y);
        const p = (values: number[], q: number) => values[Math.floor(values.length * q)]!.toFixed(1);
        const flip = sorted((r) => r.timings.flipUs);
        const total = sorted((r) => r.timings.totalMs);
        console.info(
          `${hook}${xdpMode ? `/${xdpMode}` : ""}: ${results.length} switches, ${sent} packets; ` +
            `switch p50 ${p(total, 0.5)} ms p99 ${p(total, 0.99)} ms; flip p50 ${p(flip, 0.5)} us p99 ${p(flip, 0.99)} us`,
        );
      }
    },
  );
});
