/**
 * The `overlay` built-in with `router`: one L3 network over two nodes that share only an
 * underlay link. Host A sits behind node N1 (segment 10.79.1.0/24, fd79:1::/64), host B behind
 * N2 (10.79.2.0/24, fd79:2::/64); neither node has a route to the other's segment. The chain
 * overlay → router runs on both interfaces of each node, with the same segment table (the one
 * the operator writes for every node). A's packets for B leave N1 in VXLAN, N2 unwraps them and
 * its router forwards them to B: B sees A's packet as A sent it, its TTL one lower (N2's router;
 * the tunnel is one hop). A packet too big to fit the underlay MTU once wrapped is dropped and
 * counted. The chain managers run as the chart runs the agent.
 */
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { describe, expect, test } from "vitest";
import type { Hook } from "../../node-agent/src/chain/spec.ts";
import { decodeOverlayCounters, type OverlayCounters } from "../../node-agent/src/nf/index.ts";
import { BpfMap } from "../../node-agent/src/libbpf/index.ts";
import { OVERLAY_COUNTERS } from "../../node-agent/src/nf/overlay.ts";
import { udpCapture } from "./capture.ts";
import { startNodeManager, useBuiltinObjects } from "./chain-testbed.ts";
import { builtinChain, type BuiltinUse } from "./fixtures/chains.ts";
import {
  attachXdpPass,
  type BpffsDir,
  configurePort,
  createNetns,
  createVethPair,
  ifnameToken,
  permanentNeighbor,
  type Port,
  type PortAddress,
  run,
  type TestNetns,
  testScope,
  type TestScope,
  viaGateway,
} from "./harness.ts";
import { ping, udpFlow } from "./traffic.ts";

const objects = useBuiltinObjects();

const ADDR = {
  a: { v4: "10.79.1.1", v6: "fd79:1::1" },
  h1: { v4: "10.79.1.2", v6: "fd79:1::2" },
  h2: { v4: "10.79.2.2", v6: "fd79:2::2" },
  b: { v4: "10.79.2.1", v6: "fd79:2::1" },
  u1: { v4: "192.168.79.1" },
  u2: { v4: "192.168.79.2" },
} as const;

/** The table the operator writes for both nodes: every segment and the node that hosts it. */
const SEGMENTS = [
  { prefix: "10.79.1.0/24", node: ADDR.u1.v4 },
  { prefix: "fd79:1::/64", node: ADDR.u1.v4 },
  { prefix: "10.79.2.0/24", node: ADDR.u2.v4 },
  { prefix: "fd79:2::/64", node: ADDR.u2.v4 },
];

interface Topology {
  a: Port;
  h1: Port;
  u1: Port;
  u2: Port;
  h2: Port;
  b: Port;
  n1: TestNetns;
  n2: TestNetns;
}

/** A — N1 ==underlay== N2 — B; the underlay's MTU is `underlayMtu`, the hosts' 1500. */
async function topology(
  scope: TestScope,
  underlayMtu: number,
  options: { resolveUnderlay?: boolean } = {},
): Promise<Topology> {
  const ns = {
    a: await createNetns(scope, "a", { ipv6: true }),
    n1: await createNetns(scope, "n1", { ipv6: true, forwarding: true }),
    n2: await createNetns(scope, "n2", { ipv6: true, forwarding: true }),
    b: await createNetns(scope, "b", { ipv6: true }),
  };
  const id = ifnameToken();
  const names = {
    a: `ov${id}a`,
    h1: `ov${id}h1`,
    u1: `ov${id}u1`,
    u2: `ov${id}u2`,
    h2: `ov${id}h2`,
    b: `ov${id}b`,
  };
  const home = { a: ns.a, h1: ns.n1, u1: ns.n1, u2: ns.n2, h2: ns.n2, b: ns.b };
  await createVethPair({ ns: ns.a, ifname: names.a }, { ns: ns.n1, ifname: names.h1 });
  await createVethPair({ ns: ns.n1, ifname: names.u1 }, { ns: ns.n2, ifname: names.u2 });
  await createVethPair({ ns: ns.n2, ifname: names.h2 }, { ns: ns.b, ifname: names.b });
  const ports = {} as Record<keyof typeof names, Port>;
  for (const key of Object.keys(names) as (keyof typeof names)[]) {
    const mtu = key === "u1" || key === "u2" ? underlayMtu : 1500;
    ports[key] = await configurePort(home[key], names[key], ADDR[key], mtu);
  }
  // Every neighbour static: no ARP or neighbour discovery in the counters.
  const neigh = (self: Port, peer: Port, addr: PortAddress) => permanentNeighbor(self, addr, peer.mac);
  await run("ip", ["-n", ns.a.name, "-batch", "-"], viaGateway(ports.a, ports.h1, ADDR.h1));
  await run("ip", ["-n", ns.b.name, "-batch", "-"], viaGateway(ports.b, ports.h2, ADDR.h2));
  await run(
    "ip",
    ["-n", ns.n1.name, "-batch", "-"],
    neigh(ports.h1, ports.a, ADDR.a) + (options.resolveUnderlay ? "" : neigh(ports.u1, ports.u2, ADDR.u2)),
  );
  await run(
    "ip",
    ["-n", ns.n2.name, "-batch", "-"],
    neigh(ports.h2, ports.b, ADDR.b) + (options.resolveUnderlay ? "" : neigh(ports.u2, ports.u1, ADDR.u1)),
  );
  return { ...ports, n1: ns.n1, n2: ns.n2 };
}

/** Starts a chart manager in each node and applies overlay → router on both of its interfaces. */
/** How the fabric chain is built: its mode, and NFs between overlay and router. */
interface FabricOptions {
  mode?: "linked" | "fused";
  /** XDP attach mode (default generic, see below). */
  xdpMode?: "native" | "generic";
  between?: BuiltinUse[];
}

async function fabric(
  scope: TestScope,
  net: Topology,
  hook: Hook,
  options: FabricOptions = {},
): Promise<BpffsDir[]> {
  const dirs: BpffsDir[] = [];
  for (const [node, ifaces] of [
    [net.n1, [net.h1.ifname, net.u1.ifname]],
    [net.n2, [net.h2.ifname, net.u2.ifname]],
  ] as const) {
    const { bpffs, manager } = await startNodeManager(scope, node, objects);
    const result = await manager.apply(
      builtinChain(objects, {
        name: "fabric",
        revision: "r1",
        hook,
        interfaces: [...ifaces],
        // Generic: native XDP_REDIRECT into a veth needs an XDP program at its far end, and
        // drops the checksum state of locally sent packets (see bpf/README.md).
        ...(hook === "xdp" ? { xdpMode: options.xdpMode ?? "generic" } : {}),
        ...(options.mode ? { mode: options.mode } : {}),
        functions: [
          {
            builtin: "overlay",
            parameters: { vni: 4242 },
            tables: { segments: SEGMENTS },
            tests: [
              {
                name: "a packet for no segment goes on unchanged",
                packet: { ipv4: { src: "10.9.9.1", dst: "10.9.9.2" }, udp: { sport: 1, dport: 7 } },
                expect: { verdict: "pass" },
              },
              {
                name: "VXLAN from an unknown node is not unwrapped",
                packet: {
                  ipv4: { src: "198.51.100.7", dst: ADDR.u1.v4 },
                  udp: { sport: 50000, dport: 4789 },
                },
                expect: { verdict: "pass" },
              },
            ],
          },
          ...(options.between ?? []),
          { builtin: "router" },
        ],
      }),
    );
    expect(result.selfTest).toMatchObject({ failed: 0 });
    expect(result.mode ?? "linked").toBe(options.mode ?? "linked");
    dirs.push(bpffs);
  }
  return dirs;
}

/** The overlay's counters on a node, read from the pinned per-CPU map as the agent's metrics would. */
function counters(bpffs: BpffsDir): OverlayCounters {
  const pin = bpffs.listPinned().find((p) => p.endsWith("/overlay/overlay_counters"));
  if (!pin) throw new Error(`no overlay_counters pinned in ${bpffs.path}: ${bpffs.listPinned().join(", ")}`);
  const map = BpfMap.fromPin(join(bpffs.path, pin), "overlay_counters");
  try {
    const entries = [];
    for (let counter = 0; counter < OVERLAY_COUNTERS; counter++) {
      const key = Buffer.alloc(4);
      key.writeUInt32LE(counter);
      entries.push({ key, value: Buffer.concat(map.lookupPerCpu(key) ?? []) });
    }
    return decodeOverlayCounters(entries);
  } finally {
    map.close();
  }
}

const V6_HEX = { a: "fd790001000000000000000000000001", b: "fd790002000000000000000000000001" };
const COUNT = 20_000;
const RATE = 20_000;
const PORT = 7200;
const PAYLOAD = 64;

describe("overlay + router across two nodes", () => {
  test.each(["xdp", "tc-ingress"] as const satisfies Hook[])(
    "%s: A's UDP flows reach B through VXLAN over the underlay, unchanged but for one TTL step; too big is dropped and counted",
    async (hook) => {
      const scope = testScope();
      // 1400 on the underlay: room for inner packets up to 1350 bytes.
      const net = await topology(scope, 1400);
      const [n1, n2] = await fabric(scope, net, hook);

      for (const family of ["v4", "v6"] as const) {
        const cap = udpCapture(net.b.ns.path);
        try {
          const flow = await udpFlow({
            from: { ns: net.a.ns, ip: ADDR.a[family] },
            to: { ns: net.b.ns, ip: ADDR.b[family] },
            count: COUNT,
            rate: RATE,
            port: PORT,
            payloadSize: PAYLOAD,
          });
          expect({ family, sent: flow.sent, lost: flow.lost, receiverDrops: flow.receiverDrops }).toEqual({
            family,
            sent: COUNT,
            lost: 0,
            receiverDrops: 0,
          });
          await sleep(50);
          const seen = cap.datagrams(PORT);
          // The capture's buffer keeps only part of the flow; every frame it kept is A's own.
          expect(seen.length).toBeGreaterThan(0);
          const expected =
            family === "v4"
              ? { family: 4, src: ADDR.a.v4, dst: ADDR.b.v4, ttl: 63, udpLength: 8 + PAYLOAD }
              : { family: 6, src: V6_HEX.a, dst: V6_HEX.b, ttl: 63, udpLength: 8 + PAYLOAD };
          expect(new Set(seen.map((s) => JSON.stringify(s)))).toEqual(new Set([JSON.stringify(expected)]));
        } finally {
          cap.close();
        }
      }
      const sent = counters(n1!);
      const arrived = counters(n2!);
      expect(sent).toMatchObject({ encapsulated: 2 * COUNT, tooBig: 0, noRoute: 0 });
      expect(arrived).toMatchObject({ decapsulated: 2 * COUNT, foreign: 0 });

      // 1,351 bytes of IP (1,323 of UDP payload) need 1,401 on the underlay: one too many.
      const big = await udpFlow({
        from: { ns: net.a.ns, ip: ADDR.a.v4 },
        to: { ns: net.b.ns, ip: ADDR.b.v4 },
        count: 100,
        rate: 1000,
        port: PORT + 1,
        payloadSize: 1351 - 28,
      });
      expect({ sent: big.sent, received: big.received }).toEqual({ sent: 100, received: 0 });
      expect(counters(n1!).tooBig).toBe(100);
      // One byte less fits.
      const fits = await udpFlow({
        from: { ns: net.a.ns, ip: ADDR.a.v4 },
        to: { ns: net.b.ns, ip: ADDR.b.v4 },
        count: 100,
        rate: 1000,
        port: PORT + 2,
        payloadSize: 1350 - 28,
      });
      expect({ sent: fits.sent, lost: fits.lost }).toEqual({ sent: 100, lost: 0 });
      expect(counters(n1!)).toMatchObject({ tooBig: 100, encapsulated: 2 * COUNT + 100 });
    },
  );

  test("tc-ingress: a node whose MAC is not resolved yet gets the first packets once the kernel resolved it", async () => {
    const scope = testScope();
    const net = await topology(scope, 1500, { resolveUnderlay: true });
    const [n1, n2] = await fabric(scope, net, "tc-ingress");
    const flow = await udpFlow({
      from: { ns: net.a.ns, ip: ADDR.a.v4 },
      to: { ns: net.b.ns, ip: ADDR.b.v4 },
      count: 2_000,
      rate: 2_000,
      port: PORT + 3,
    });
    expect({ sent: flow.sent, lost: flow.lost }).toEqual({ sent: 2_000, lost: 0 });
    const sent = counters(n1!);
    // The first packet(s) waited for ARP in the kernel; the rest went straight out.
    expect(sent.noNeighbour).toBeGreaterThanOrEqual(1);
    expect(sent.noNeighbour + sent.encapsulated).toBe(2_000);
    expect(counters(n2!).decapsulated).toBe(2_000);
  });

  test.each(["linked", "fused"] as const)(
    "tc-ingress, %s: an NF after overlay sees the unwrapped packet, not the tunnel",
    async (mode) => {
      const scope = testScope();
      const net = await topology(scope, 1500);
      // The firewall matches B's inner port: at N2 it must see A's datagram, not UDP to 4789.
      const firewall: BuiltinUse = {
        builtin: "firewall",
        tables: { rules: [{ action: "deny", protocol: "udp", dport: PORT + 5 }] },
      };
      const [, n2] = await fabric(scope, net, "tc-ingress", { mode, between: [firewall] });
      const flow = (port: number) =>
        udpFlow({
          from: { ns: net.a.ns, ip: ADDR.a.v4 },
          to: { ns: net.b.ns, ip: ADDR.b.v4 },
          count: 500,
          rate: 1_000,
          port,
        });
      const allowed = await flow(PORT + 4);
      expect({ sent: allowed.sent, lost: allowed.lost }).toEqual({ sent: 500, lost: 0 });
      const denied = await flow(PORT + 5);
      expect({ sent: denied.sent, received: denied.received }).toEqual({ sent: 500, received: 0 });
      expect(counters(n2!).decapsulated).toBe(1_000);
    },
  );

  test("native xdp: ICMP echoes (checksums made by the sender) cross the tunnel both ways", async () => {
    const scope = testScope();
    const net = await topology(scope, 1500);
    // Native XDP_REDIRECT into a veth delivers only when the far end runs an XDP program: the
    // underlay's far end runs the chain; A's and B's ends get a pass program.
    await attachXdpPass(scope, [net.a, net.b]);
    const [n1, n2] = await fabric(scope, net, "xdp", { xdpMode: "native" });
    const result = await ping(net.a.ns, ADDR.b.v4, 200, { intervalMs: 1 });
    expect(result.received).toBe(200);
    // Requests wrapped on N1 and unwrapped on N2, replies the other way.
    expect(counters(n1!)).toMatchObject({ encapsulated: 200, decapsulated: 200 });
    expect(counters(n2!)).toMatchObject({ encapsulated: 200, decapsulated: 200 });
  });
});
