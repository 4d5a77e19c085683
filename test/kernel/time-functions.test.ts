/**
 * Per-function time (`sluice run --time-functions N`): with it on, every function of a chain
 * reports the mean ns per packet it spent on the packets sampled, linked and fused; an ips
 * scanning a 1,400-byte payload against signatures shows more than a no-op in the same chain;
 * with it off no function reports any, and /metrics has no such series.
 *
 * The chain sits on the receiving veth end (namespace B), on generic XDP; both ends know each
 * other's MAC, so only the test's packets cross it. The manager runs as the chart runs the agent.
 */
import { describe, expect, test } from "vitest";
import type { ChainStatus } from "../../node-agent/src/chain/index.ts";
import { numPossibleCpus } from "../../node-agent/src/libbpf/index.ts";
import { createChainTestbed, useBuiltinObjects } from "./chain-testbed.ts";
import type { ChartManager } from "./chart-manager.ts";
import { builtinChain } from "./fixtures/chains.ts";
import type { VethNetwork } from "./harness.ts";
import { startUdpFlow } from "./traffic.ts";

const objects = useBuiltinObjects();

const PACKETS = 2000;
const PORT = 9011;

/** Signatures none of which is in the payload: the ips scans all of it. */
const signatures = Array.from({ length: 10 }, (_, i) => ({
  id: i + 1,
  content: `/cgi-bin/phf${i}`,
  nocase: i % 3 === 0,
}));

/** first (noop) -> ips -> last (noop), on generic XDP. */
async function applyChain(manager: ChartManager, net: VethNetwork, mode: "linked" | "fused"): Promise<void> {
  const result = await manager.apply(
    builtinChain(objects, {
      name: "timed",
      revision: "r1",
      hook: "xdp",
      xdpMode: "generic",
      interfaces: [net.b.ifname],
      mode,
      functions: [
        { builtin: "noop", name: "first" },
        { builtin: "ips", tables: { signatures } },
        { builtin: "noop", name: "last" },
      ],
    }),
  );
  expect(result.mode ?? mode).toBe(mode);
}

async function sendLargePayloads(net: VethNetwork): Promise<void> {
  const flow = await startUdpFlow({
    from: { ns: net.a.ns.name, ip: net.a.ip },
    to: { ns: net.b.ns.name, ip: net.b.ip },
    count: PACKETS,
    rate: 10_000,
    payloadSize: 1400,
    port: PORT,
  });
  expect(await flow.done()).toMatchObject({ sent: PACKETS, received: PACKETS, lost: 0 });
}

const byName = (status: ChainStatus) => Object.fromEntries(status.nfs.map((nf) => [nf.name, nf]));
const nsPerPacket = (t: { ns: bigint; samples: bigint }) => Number(t.ns) / Number(t.samples);

describe("per-function time", () => {
  test.each([
    ["linked", 1],
    ["fused", 16],
  ] as const)(
    "%s, 1 in %i packets timed: every function reports ns per packet, and ips on 1,400 bytes more than a no-op",
    async (mode, timeSample) => {
      const { net, manager } = await createChainTestbed(objects, { timeSample });
      await applyChain(manager, net, mode);
      await sendLargePayloads(net);

      const nfs = byName((await manager.status("timed"))!);
      const cpus = numPossibleCpus();
      for (const name of ["first", "ips", "last"]) {
        const { counters, time } = nfs[name]!;
        expect(counters.packets, name).toBe(BigInt(PACKETS));
        expect(time, `${name}: no time summed`).toBeDefined();
        // Each CPU picks 1 in timeSample of the packets it sees.
        const expected = PACKETS / timeSample;
        expect(Number(time!.samples), name).toBeGreaterThanOrEqual(Math.floor(expected) - cpus);
        expect(Number(time!.samples), name).toBeLessThanOrEqual(Math.ceil(expected) + cpus);
        expect(nsPerPacket(time!), name).toBeGreaterThan(0);
      }
      expect(nsPerPacket(nfs.ips!.time!)).toBeGreaterThan(nsPerPacket(nfs.first!.time!));
      expect(nsPerPacket(nfs.ips!.time!)).toBeGreaterThan(nsPerPacket(nfs.last!.time!));

      const scrape = await manager.scrape();
      for (const name of ["first", "ips", "last"]) {
        const samples = new RegExp(
          `^sluice_nf_sampled_packets_total\\{[^}]*nf="${name}"[^}]*\\} (\\d+)$`,
          "m",
        );
        expect(Number(samples.exec(scrape)?.[1]), name).toBe(Number(nfs[name]!.time!.samples));
        expect(scrape).toMatch(new RegExp(`^sluice_nf_sampled_time_seconds_total\\{[^}]*nf="${name}"`, "m"));
      }
    },
  );

  test("off (the default): no function reports time, and /metrics has no such series", async () => {
    const { net, manager } = await createChainTestbed(objects);
    await applyChain(manager, net, "linked");
    await sendLargePayloads(net);
    const status = (await manager.status("timed"))!;
    expect(status.nfs.map((nf) => nf.time)).toEqual([undefined, undefined, undefined]);
    expect(status.nfs.every((nf) => nf.counters.packets === BigInt(PACKETS))).toBe(true);
    expect(await manager.scrape()).not.toMatch(/^sluice_nf_sampled_/m);
  });
});
