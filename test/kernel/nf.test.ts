/**
 * The built-in network functions decide correctly on real packets sent between namespaces and
 * on their test vectors, and their counters equal what was sent.
 *
 * Every chain sits on the receiving veth end (namespace B), so the flow A -> B crosses it. Both
 * ends know each other's MAC for good, so no ARP crosses the chain and counts are exact. The
 * chain manager runs as the chart runs the agent (see chart-manager.ts).
 */
import { describe, expect, test } from "vitest";
import type { TestVector } from "../../common/api/testvector.ts";
import { decodeFlowEntry } from "../../node-agent/src/nf/index.ts";
import { ipv4Bytes } from "../../node-agent/src/packet/index.ts";
import { createChainTestbed, useBuiltinObjects } from "./chain-testbed.ts";
import { builtinChain, type BuiltinUse } from "./fixtures/chains.ts";
import { ping, udpFlow } from "./traffic.ts";

const objects = useBuiltinObjects();

const A = "10.77.0.1";
const B = "10.77.0.2";
/** Bytes a UDP packet of the traffic helper's default 64-byte payload has at the hook. */
const UDP_FRAME_BYTES = 14 + 20 + 8 + 64;

const firewallRules = {
  rules: [
    { action: "deny", protocol: "icmp", comment: "no ping" },
    { action: "deny", protocol: "tcp", dport: 22 },
    { action: "allow", src: "10.77.0.0/24" },
  ],
};
const firewallVectors: TestVector[] = [
  {
    name: "ping is denied",
    packet: { ipv4: { src: A, dst: B }, icmp: {} },
    expect: { verdict: "drop", counters: { firewall: { packets: 1, drops: 1 } } },
  },
  {
    name: "ssh is denied",
    packet: { ipv4: { src: A, dst: B }, tcp: { sport: 40000, dport: 22 } },
    expect: { verdict: "drop" },
  },
  {
    name: "dns from the subnet passes",
    packet: { ipv4: { src: A, dst: B }, udp: { sport: 40000, dport: 53 } },
    count: 3,
    expect: { verdict: "pass", passed: 3, counters: { firewall: { packets: 3, passes: 3, drops: 0 } } },
  },
  {
    name: "other sources fall to the default (allow)",
    packet: { ipv4: { src: "192.0.2.1", dst: B }, tcp: { sport: 1, dport: 443 } },
    expect: { verdict: "pass" },
  },
];

describe("built-in network functions on real traffic", () => {
  test.each(["xdp", "tc-ingress"] as const)(
    "firewall (%s) drops exactly the denied packets and passes the rest; counters match",
    async (hook) => {
      const { net, manager } = await createChainTestbed(objects);
      const spec = builtinChain(objects, {
        name: "fw",
        revision: "r1",
        hook,
        interfaces: [net.b.ifname],
        functions: [{ builtin: "firewall", tables: firewallRules, tests: firewallVectors }],
      });

      const result = await manager.apply(spec);

      expect(result.action).toBe("created");
      expect(result.selfTest).toMatchObject({ passed: firewallVectors.length, failed: 0 });
      const pings = await ping(net.a.ns, B, 4, { timeoutMs: 150 });
      const udp = await udpFlow({
        from: { ns: net.a.ns.name, ip: A },
        to: { ns: net.b.ns.name, ip: B },
        count: 3000,
        rate: 20_000,
      });
      expect(pings).toMatchObject({ sent: 4, received: 0 });
      expect(udp).toMatchObject({ sent: 3000, received: 3000, lost: 0 });
      const [fw] = (await manager.status("fw"))!.nfs;
      expect(fw!.counters).toMatchObject({ packets: 3004n, drops: 4n, passes: 3000n, errors: 0n });
      expect((await manager.status("fw"))!.rootMisses.packets).toBe(0n);
    },
  );

  test("ratelimit passes the burst and the rate, drops the rest, and counts every drop", async () => {
    const { net, manager } = await createChainTestbed(objects);
    const burst = 50;
    const rate = 200;
    const spec = builtinChain(objects, {
      name: "rl",
      revision: "r1",
      hook: "xdp",
      interfaces: [net.b.ifname],
      functions: [
        {
          builtin: "ratelimit",
          parameters: { rate, burst },
          tests: [
            {
              name: "a burst of 60 from one source: 10 over the limit",
              packet: { ipv4: { src: "192.0.2.7", dst: B }, udp: { sport: 1, dport: 2 } },
              count: 60,
              expect: {
                verdict: "drop",
                passed: 50,
                dropped: 10,
                counters: { ratelimit: { drops: 10, passes: 50 } },
              },
            },
            {
              name: "another source has its own bucket",
              packet: { ipv4: { src: "192.0.2.8", dst: B }, udp: { sport: 1, dport: 2 } },
              expect: { verdict: "pass" },
            },
          ],
        },
      ],
    });
    const result = await manager.apply(spec);
    expect(result.selfTest).toMatchObject({ passed: 2, failed: 0 });

    const flow = await udpFlow({
      from: { ns: net.a.ns.name, ip: A },
      to: { ns: net.b.ns.name, ip: B },
      count: 4000,
      rate: 20_000,
    });

    const [rl] = (await manager.status("rl"))!.nfs;
    expect(flow.sent).toBe(4000);
    expect(flow.receiverDrops).toBe(0);
    expect(rl!.counters.packets).toBe(4000n);
    expect(rl!.counters.drops).toBe(BigInt(flow.lost));
    expect(rl!.counters.passes).toBe(BigInt(flow.received));
    // The burst, plus what the rate allows over the flow's duration (with 50 ms of slack).
    expect(flow.received).toBeGreaterThanOrEqual(burst);
    expect(flow.received).toBeLessThanOrEqual(burst + Math.ceil((rate * (flow.durationMs + 50)) / 1000) + 1);
    const buckets = await manager.readTable("rl", "ratelimit", "ratelimit_state");
    expect(buckets.map((b) => b.key.subarray(12).toString("hex"))).toEqual([ipv4Bytes(A).toString("hex")]);
  });

  test("flowmon counts every packet and byte of a flow and never drops", async () => {
    const { net, manager } = await createChainTestbed(objects);
    const spec = builtinChain(objects, {
      name: "fm",
      revision: "r1",
      hook: "xdp",
      interfaces: [net.b.ifname],
      functions: [
        {
          builtin: "flowmon",
          tests: [
            {
              name: "a flow passes and is counted",
              packet: { ipv4: { src: A, dst: B }, tcp: { sport: 5, dport: 80 } },
              count: 4,
              expect: { verdict: "pass", passed: 4, counters: { flowmon: { packets: 4, passes: 4 } } },
            },
          ],
        },
      ],
    });
    await manager.apply(spec);

    const flow = await udpFlow({
      from: { ns: net.a.ns.name, ip: A },
      to: { ns: net.b.ns.name, ip: B },
      count: 2500,
      rate: 20_000,
    });

    expect(flow).toMatchObject({ sent: 2500, received: 2500, lost: 0 });
    const flows = (await manager.readTable("fm", "flowmon", "flowmon_flows")).map(({ key, value }) =>
      decodeFlowEntry(key, value),
    );
    expect(flows).toHaveLength(1);
    expect(flows[0]).toMatchObject({
      src: A,
      dst: B,
      proto: 17,
      packets: 2500,
      bytes: 2500 * UDP_FRAME_BYTES,
    });
    expect((await manager.status("fm"))!.nfs[0]!.counters).toMatchObject({
      packets: 2500n,
      passes: 2500n,
      drops: 0n,
    });
  });

  test.each(["tc-ingress", "xdp"] as const)(
    "the three in one %s chain: each NF sees what the NFs before it let through; each NF's own vectors run on it alone",
    async (hook) => {
      const { net, manager } = await createChainTestbed(objects);
      const functions: BuiltinUse[] = [
        { builtin: "firewall", tables: firewallRules, tests: firewallVectors },
        {
          builtin: "ratelimit",
          parameters: { rate: 1_000_000, burst: 100_000 },
          tests: [
            {
              name: "ping is not limited (the firewall is elsewhere)",
              packet: { ipv4: { src: A, dst: B }, icmp: {} },
              count: 2,
              expect: {
                verdict: "pass",
                passed: 2,
                counters: { ratelimit: { packets: 2, passes: 2, drops: 0 } },
              },
            },
          ],
        },
        { builtin: "flowmon" },
      ];
      const spec = builtinChain(objects, {
        name: "all",
        revision: "r1",
        hook,
        interfaces: [net.b.ifname],
        functions,
        tests: [
          {
            name: "ping stops at the firewall",
            packet: { ipv4: { src: A, dst: B }, icmp: {} },
            expect: {
              verdict: "drop",
              counters: {
                firewall: { packets: 1, drops: 1 },
                ratelimit: { packets: 0 },
                flowmon: { packets: 0 },
              },
            },
          },
          {
            name: "udp goes through all three",
            packet: { ipv4: { src: A, dst: B }, udp: { sport: 9, dport: 9 } },
            expect: {
              verdict: "pass",
              counters: {
                firewall: { passes: 1 },
                ratelimit: { passes: 1 },
                flowmon: { packets: 1, passes: 1 },
              },
            },
          },
        ],
      });
      const result = await manager.apply(spec);
      expect(result.selfTest).toMatchObject({ passed: 2 + firewallVectors.length + 1, failed: 0 });
      expect(result.selfTest!.results.map((r) => r.vector)).toContain(
        "ratelimit/ping is not limited (the firewall is elsewhere)",
      );

      const pings = await ping(net.a.ns, B, 3, { timeoutMs: 150 });
      const flow = await udpFlow({
        from: { ns: net.a.ns.name, ip: A },
        to: { ns: net.b.ns.name, ip: B },
        count: 2000,
        rate: 20_000,
      });

      expect(pings.received).toBe(0);
      expect(flow).toMatchObject({ sent: 2000, received: 2000 });
      const counters = Object.fromEntries(
        (await manager.status("all"))!.nfs.map((nf) => [nf.name, nf.counters]),
      );
      expect(counters.firewall).toMatchObject({ packets: 2003n, drops: 3n, passes: 2000n });
      expect(counters.ratelimit).toMatchObject({ packets: 2000n, drops: 0n, passes: 2000n });
      expect(counters.flowmon).toMatchObject({ packets: 2000n, drops: 0n, passes: 2000n });
    },
  );
});
