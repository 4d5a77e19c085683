/**
 * The `router` built-in forwarding real traffic between three namespaces, on XDP and tc:
 * host A — router R — host B, with the chain on both of R's veths, forwarding on in R and the
 * neighbours known (static entries). A UDP flow from A to B over IPv4 and over IPv6 arrives
 * whole, with its TTL / hop limit one lower than A sent it, and R's stack forwarded none of it
 * (its forwarding counters stay put: the chain did the work). What the router cannot forward
 * (TTL 1, no route) goes to the stack, as its vectors show. The chain manager runs as the chart
 * runs the agent (CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN).
 */
import { readFileSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import { describe, expect, test } from "vitest";
import type { TestVector } from "../../common/api/testvector.ts";
import type { ChainSpec, Hook } from "../../node-agent/src/chain/spec.ts";
import { withNetns } from "../../node-agent/src/netns/index.ts";
import { udpCapture } from "./capture.ts";
import { startNodeManager, useBuiltinObjects } from "./chain-testbed.ts";
import { builtinChain } from "./fixtures/chains.ts";
import {
  attachXdpPass,
  configurePort,
  createNetns,
  createVethPair,
  ifnameToken,
  permanentNeighbor,
  type Port,
  run,
  type TestNetns,
  testScope,
  type TestScope,
  viaGateway,
} from "./harness.ts";
import { ping, udpFlow } from "./traffic.ts";

const objects = useBuiltinObjects();

interface Topology {
  a: Port;
  /** R's end towards A. */
  ra: Port;
  /** R's end towards B. */
  rb: Port;
  b: Port;
  r: TestNetns;
}

const ADDR = {
  a: { v4: "10.78.1.1", v6: "fd78:1::1" },
  ra: { v4: "10.78.1.2", v6: "fd78:1::2" },
  rb: { v4: "10.78.2.2", v6: "fd78:2::2" },
  b: { v4: "10.78.2.1", v6: "fd78:2::1" },
} as const;

/**
 * A — R — B, IPv4 and IPv6, forwarding on in R, every neighbour entry static (but R's for B
 * with `resolveB`: R then learns B's address by ARP, as a router does).
 */
async function topology(scope: TestScope, options: { resolveB?: boolean } = {}): Promise<Topology> {
  const [nsA, nsR, nsB] = [
    await createNetns(scope, "a", { ipv6: true }),
    await createNetns(scope, "r", { ipv6: true, forwarding: true }),
    await createNetns(scope, "b", { ipv6: true }),
  ];
  const id = ifnameToken();
  const names = { a: `rt${id}a`, ra: `rt${id}ra`, rb: `rt${id}rb`, b: `rt${id}b` };
  await createVethPair({ ns: nsA, ifname: names.a }, { ns: nsR, ifname: names.ra });
  await createVethPair({ ns: nsB, ifname: names.b }, { ns: nsR, ifname: names.rb });
  const ports = {} as Record<keyof typeof names, Port>;
  for (const [key, ns] of [
    ["a", nsA],
    ["ra", nsR],
    ["rb", nsR],
    ["b", nsB],
  ] as const) {
    ports[key] = await configurePort(ns, names[key], ADDR[key]);
  }
  await run("ip", ["-n", nsA.name, "-batch", "-"], viaGateway(ports.a, ports.ra, ADDR.ra));
  await run("ip", ["-n", nsB.name, "-batch", "-"], viaGateway(ports.b, ports.rb, ADDR.rb));
  await run(
    "ip",
    ["-n", nsR.name, "-batch", "-"],
    permanentNeighbor(ports.ra, ADDR.a, ports.a.mac) +
      (options.resolveB ? "" : permanentNeighbor(ports.rb, ADDR.b, ports.b.mac)),
  );
  return { a: ports.a, ra: ports.ra, rb: ports.rb, b: ports.b, r: nsR };
}

/** The router alone on both of R's veths, at `placement`, with its own `tests` if given. */
function routerChain(
  net: Topology,
  placement: { hook: Hook; xdpMode?: "generic" | "native" },
  tests?: TestVector[],
): ChainSpec {
  return builtinChain(objects, {
    name: "router",
    revision: "r1",
    ...placement,
    interfaces: [net.ra.ifname, net.rb.ifname],
    functions: [{ builtin: "router", ...(tests ? { tests } : {}) }],
  });
}

/** Packets R's own stack forwarded (IPv4 ForwDatagrams, IPv6 Ip6OutForwDatagrams). */
function stackForwarded(ns: TestNetns): { v4: number; v6: number } {
  return withNetns(ns.path, () => {
    const snmp = readFileSync("/proc/thread-self/net/snmp", "utf8").split("\n");
    const [names, values] = snmp.filter((line) => line.startsWith("Ip: ")).map((l) => l.split(/\s+/));
    const v4 = Number(values![names!.indexOf("ForwDatagrams")]);
    const snmp6 = readFileSync("/proc/thread-self/net/snmp6", "utf8");
    const v6 = Number(/^Ip6OutForwDatagrams\s+(\d+)/m.exec(snmp6)![1]);
    return { v4, v6 };
  });
}

const vectors: TestVector[] = [
  {
    name: "TTL 1 goes to the stack (which answers time exceeded)",
    packet: { ipv4: { src: ADDR.a.v4, dst: ADDR.b.v4, ttl: 1 }, udp: { sport: 1, dport: 7 } },
    expect: { verdict: "pass" },
  },
  {
    name: "hop limit 1 goes to the stack",
    packet: { ipv6: { src: ADDR.a.v6, dst: ADDR.b.v6, hopLimit: 1 }, udp: { sport: 1, dport: 7 } },
    expect: { verdict: "pass" },
  },
  {
    name: "no route goes to the stack (which answers unreachable)",
    packet: { ipv4: { src: ADDR.a.v4, dst: "192.0.2.1" }, udp: { sport: 1, dport: 7 } },
    expect: { verdict: "pass", counters: { router: { passes: 1, drops: 0 } } },
  },
  {
    name: "no IPv6 route goes to the stack",
    packet: { ipv6: { src: ADDR.a.v6, dst: "2001:db8::1" }, tcp: { sport: 1, dport: 80 } },
    expect: { verdict: "pass" },
  },
];

const COUNT = 30_000;
const RATE = 30_000;
const PORT = 7100;

describe("router between three namespaces", () => {
  test.each(["xdp", "tc-ingress"] as const satisfies Hook[])(
    "%s: IPv4 and IPv6 UDP flows from A to B are forwarded by the chain without loss, TTL one lower",
    async (hook) => {
      const scope = testScope();
      const net = await topology(scope);
      const { manager } = await startNodeManager(scope, net.r, objects);
      const result = await manager.apply(
        // Generic: native XDP_REDIRECT between veths drops the checksum offload state of locally
        // sent packets, so their UDP checksums arrive unfinished (see bpf/README.md).
        routerChain(net, { hook, ...(hook === "xdp" ? { xdpMode: "generic" as const } : {}) }, vectors),
      );
      expect(result.selfTest).toMatchObject({ passed: vectors.length, failed: 0 });

      const before = stackForwarded(net.r);
      for (const family of ["v4", "v6"] as const) {
        const cap = udpCapture(net.b.ns.path);
        try {
          const flow = await udpFlow({
            from: { ns: net.a.ns, ip: ADDR.a[family] },
            to: { ns: net.b.ns, ip: ADDR.b[family] },
            count: COUNT,
            rate: RATE,
            port: PORT,
          });
          expect({ family, sent: flow.sent, lost: flow.lost, receiverDrops: flow.receiverDrops }).toEqual({
            family,
            sent: COUNT,
            lost: 0,
            receiverDrops: 0,
          });
          await sleep(50);
          const ttls = cap
            .datagrams(PORT)
            .filter((d) => d.family === (family === "v4" ? 4 : 6))
            .map((d) => d.ttl);
          // The capture's buffer keeps only part of the flow; every frame it kept counts.
          expect(ttls.length).toBeGreaterThan(0);
          expect(new Set(ttls)).toEqual(new Set([63])); // A sends with 64
        } finally {
          cap.close();
        }
      }
      // R's stack forwarded none of the flows: the chain redirected them.
      const after = stackForwarded(net.r);
      expect(after.v4 - before.v4).toBe(0);
      expect(after.v6 - before.v6).toBe(0);
      const [nf] = (await manager.status("router"))!.nfs;
      expect(nf!.counters.passes).toBeGreaterThanOrEqual(BigInt(2 * COUNT));
      expect(nf!.counters.drops).toBe(0n);
      expect(nf!.counters.errors).toBe(0n);
    },
  );

  test("xdp: a packet whose next hop R has not resolved yet goes to R's stack, which resolves it; then the chain forwards", async () => {
    const scope = testScope();
    const net = await topology(scope, { resolveB: true });
    const { manager } = await startNodeManager(scope, net.r, objects);
    await manager.apply(routerChain(net, { hook: "xdp", xdpMode: "generic" }));
    const before = stackForwarded(net.r);
    const result = await ping(net.a.ns, ADDR.b.v4, 10, { intervalMs: 20 });
    expect(result.received).toBe(10);
    const forwardedByStack = stackForwarded(net.r).v4 - before.v4;
    // The first echo waits in R's stack for ARP; once B's entry exists, the chain forwards the
    // rest (requests and replies: 20 packets in all).
    expect(forwardedByStack).toBeGreaterThanOrEqual(1);
    expect(forwardedByStack).toBeLessThan(20);
    const [nf] = (await manager.status("router"))!.nfs;
    expect(nf!.counters.drops).toBe(0n);
  });

  test("native xdp: ICMP echoes (checksums made by the sender, no offload) are forwarded both ways by the chain", async () => {
    const scope = testScope();
    const net = await topology(scope);
    // Native XDP_REDIRECT into a veth delivers only when the far end runs an XDP program.
    await attachXdpPass(scope, [net.a, net.b]);
    const { manager } = await startNodeManager(scope, net.r, objects);
    await manager.apply(routerChain(net, { hook: "xdp", xdpMode: "native" }));
    const before = stackForwarded(net.r);
    const result = await ping(net.a.ns, ADDR.b.v4, 200, { intervalMs: 1 });
    expect(result.received).toBe(200);
    expect(stackForwarded(net.r).v4 - before.v4).toBe(0);
    const [nf] = (await manager.status("router"))!.nfs;
    expect(nf!.counters.passes).toBeGreaterThanOrEqual(400n);
  });
});
