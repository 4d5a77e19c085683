/**
 * The `l4lb` built-in balancing real traffic, on XDP and tc: client C — balancer L — backends
 * B, with the chain on both of L's veths and forwarding on in L. C sends to a virtual IP that no
 * host has; the chain rewrites each flow to a backend's address (the backends' servers answer
 * with the address they were reached on), and the backends' replies get the virtual IP back as
 * their source on the way through L (C's sockets are connected to the virtual IP and take
 * nothing else). Checksum offload is off on the senders, so every receiver checks the TCP/UDP
 * checksums the chain rewrote.
 *
 * What a user would measure: flows spread within 10% across the backends; removing a backend
 * moves only the flows it had (the fraction moved equals its share); marking one unhealthy
 * moves only its flows; established TCP connections keep their backend across a revision
 * switch that changes the Maglev table, because the affinity map carries over. The chain
 * manager runs as the chart runs the agent (CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN).
 */
import koffi from "koffi";
import { describe, expect, test } from "vitest";
import type { TestVector } from "../../common/api/testvector.ts";
import type { ChainSpec, Hook } from "../../node-agent/src/chain/spec.ts";
import { addressOf } from "../../node-agent/src/libbpf/ffi.ts";
import { withNetns } from "../../node-agent/src/netns/index.ts";
import { decodeL4lbFlow } from "../../node-agent/src/nf/index.ts";
import { startNodeManager, useBuiltinObjects } from "./chain-testbed.ts";
import type { ChartManager } from "./chart-manager.ts";
import { builtinChain, type BuiltinUse } from "./fixtures/chains.ts";
import {
  createNetns,
  createVethPair,
  ifnameToken,
  run,
  type TestNetns,
  testScope,
  type TestScope,
} from "./harness.ts";
import { closeFn, socketFn, SOCK_CLOEXEC, spawnInNetns } from "./traffic.ts";

const objects = useBuiltinObjects();

const VIP = { v4: "10.79.9.1", v6: "fd79:9::1" } as const;
const PORT = 80;
const BACKENDS = ["10.79.2.11", "10.79.2.12", "10.79.2.13", "10.79.2.14", "10.79.2.15"];
const BACKENDS_V6 = ["fd79:2::11", "fd79:2::12", "fd79:2::13", "fd79:2::14"];
const ADDR = {
  c: { v4: "10.79.1.1", v6: "fd79:1::1" },
  lc: { v4: "10.79.1.2", v6: "fd79:1::2" },
  lb: { v4: "10.79.2.2", v6: "fd79:2::2" },
} as const;

interface Topology {
  c: TestNetns;
  l: TestNetns;
  b: TestNetns;
  /** L's ends towards C and towards B: the chain's interfaces. */
  lIfs: [string, string];
}

const libc = koffi.load("libc.so.6");
const ioctlFn = libc.func("int ioctl(int fd, unsigned long request, void *arg)") as (
  fd: number,
  request: number,
  arg: Buffer,
) => number;

/**
 * Turns transmit checksum offload off on ifname (ethtool's ETHTOOL_STXCSUM through SIOCETHTOOL):
 * the sender then completes every checksum itself and the receiver checks it, instead of
 * trusting a CHECKSUM_PARTIAL skb across the veth.
 */
function txChecksumOff(ns: TestNetns, ifname: string): void {
  withNetns(ns.path, () => {
    const fd = socketFn(2 /* AF_INET */, 2 /* SOCK_DGRAM */ | SOCK_CLOEXEC, 0);
    if (fd < 0) throw new Error(`socket in ${ns.name}: errno ${koffi.errno()}`);
    try {
      const value = Buffer.alloc(8);
      value.writeUInt32LE(0x17, 0); // ETHTOOL_STXCSUM, data 0
      const ifr = Buffer.alloc(40);
      ifr.write(ifname, 0);
      ifr.writeBigUInt64LE(addressOf(value), 16);
      if (ioctlFn(fd, 0x8946 /* SIOCETHTOOL */, ifr) < 0)
        throw new Error(`${ifname}: tx checksum offload off: errno ${koffi.errno()}`);
      value.writeUInt32LE(0x16, 0); // ETHTOOL_GTXCSUM: read it back
      value.writeUInt32LE(1, 4);
      if (ioctlFn(fd, 0x8946, ifr) < 0 || value.readUInt32LE(4) !== 0)
        throw new Error(`${ifname}: tx checksum offload is still on`);
    } finally {
      closeFn(fd);
    }
  });
}

/** C — L — B over IPv4 and IPv6; B holds every backend address; forwarding on in L. */
async function topology(scope: TestScope): Promise<Topology> {
  const [c, l, b] = [
    await createNetns(scope, "c", { ipv6: true }),
    await createNetns(scope, "l", { ipv6: true, forwarding: true }),
    await createNetns(scope, "b", { ipv6: true }),
  ];
  const id = ifnameToken();
  const names = { c: `lb${id}c`, lc: `lb${id}lc`, lb: `lb${id}lb`, b: `lb${id}b` };
  await createVethPair({ ns: c, ifname: names.c }, { ns: l, ifname: names.lc });
  await createVethPair({ ns: b, ifname: names.b }, { ns: l, ifname: names.lb });
  await run(
    "ip",
    ["-n", c.name, "-batch", "-"],
    [
      `addr add ${ADDR.c.v4}/24 dev ${names.c}`,
      `addr add ${ADDR.c.v6}/64 dev ${names.c} nodad`,
      `link set ${names.c} up`,
      `route add default via ${ADDR.lc.v4}`,
      `route add default via ${ADDR.lc.v6}`,
      "",
    ].join("\n"),
  );
  await run(
    "ip",
    ["-n", l.name, "-batch", "-"],
    [
      `addr add ${ADDR.lc.v4}/24 dev ${names.lc}`,
      `addr add ${ADDR.lc.v6}/64 dev ${names.lc} nodad`,
      `addr add ${ADDR.lb.v4}/24 dev ${names.lb}`,
      `addr add ${ADDR.lb.v6}/64 dev ${names.lb} nodad`,
      `link set ${names.lc} up`,
      `link set ${names.lb} up`,
      "",
    ].join("\n"),
  );
  await run(
    "ip",
    ["-n", b.name, "-batch", "-"],
    [
      ...BACKENDS.map((a) => `addr add ${a}/24 dev ${names.b}`),
      ...BACKENDS_V6.map((a) => `addr add ${a}/64 dev ${names.b} nodad`),
      `link set ${names.b} up`,
      `route add default via ${ADDR.lb.v4}`,
      `route add default via ${ADDR.lb.v6}`,
      "",
    ].join("\n"),
  );
  txChecksumOff(c, names.c);
  txChecksumOff(b, names.b);
  return { c, l, b, lIfs: [names.lc, names.lb] };
}

/** Runs l4lb-traffic.mjs in a namespace: its JSON lines one by one, and a way to write to it. */
function traffic(scope: TestScope, ns: TestNetns, args: readonly (string | number)[]) {
  const script = spawnInNetns(ns.path, "l4lb-traffic.mjs", args, { scope });
  const next = <T>(timeoutMs = 60_000) => script.nextLine<T>(`${args[0]} output`, timeoutMs);
  return Object.assign(next, { tell: script.tell });
}

/** Backends' servers in B on every backend address (IPv4 and IPv6), TCP and UDP. */
async function serveBackends(scope: TestScope, net: Topology): Promise<void> {
  const server = traffic(scope, net.b, ["serve", PORT, ...BACKENDS, ...BACKENDS_V6]);
  await server<{ ready: true }>();
}

/** The backend each of `n` UDP flows (source ports first..first+n-1) reached; null for none. */
async function udpFlows(
  scope: TestScope,
  net: Topology,
  vip: string,
  first: number,
  n: number,
  once = false,
) {
  const client = traffic(scope, net.c, ["udp", vip, PORT, first, n, ...(once ? ["once"] : [])]);
  return (await client<{ backends: (string | null)[] }>()).backends;
}

function countBy(backends: readonly (string | null)[]): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const b of backends) counts[String(b)] = (counts[String(b)] ?? 0) + 1;
  return counts;
}

/** Every count within `tolerance` (0.1: 10%) of the mean over `of` backends. */
function expectEvenSpread(counts: Record<string, number>, of: readonly string[], tolerance: number): void {
  const total = of.reduce((sum, b) => sum + (counts[b] ?? 0), 0);
  const mean = total / of.length;
  const spread = Object.fromEntries(of.map((b) => [b, Math.abs((counts[b] ?? 0) - mean) / mean]));
  console.log(
    `l4lb spread over ${of.length} backends: ${JSON.stringify(counts)}, deviation from mean: ${JSON.stringify(Object.fromEntries(Object.entries(spread).map(([k, v]) => [k, Number(v.toFixed(3))])))}`,
  );
  for (const b of of)
    expect({ backend: b, deviation: spread[b]! <= tolerance }).toEqual({ backend: b, deviation: true });
}

function service(backends: readonly string[], extra: Record<string, unknown> = {}) {
  return {
    vip: VIP.v4,
    port: PORT,
    proto: "udp",
    backends: backends.map((address) => ({ address })),
    ...extra,
  };
}

const vectors: TestVector[] = [
  {
    name: "a datagram to the virtual IP goes on, to a backend",
    packet: { ipv4: { src: ADDR.c.v4, dst: VIP.v4 }, udp: { sport: 40000, dport: PORT } },
    expect: { verdict: "pass" },
  },
  {
    name: "a SYN to a service without a healthy backend is dropped",
    packet: { ipv4: { src: ADDR.c.v4, dst: "10.79.9.2" }, tcp: { sport: 40000, dport: PORT } },
    expect: { verdict: "drop", counters: { l4lb: { drops: 1 } } },
  },
  {
    name: "another port of the virtual IP is not balanced",
    packet: { ipv4: { src: ADDR.c.v4, dst: VIP.v4 }, udp: { sport: 40000, dport: 81 } },
    expect: { verdict: "pass" },
  },
  {
    name: "IPv6 to the virtual IP goes on",
    packet: { ipv6: { src: ADDR.c.v6, dst: VIP.v6 }, tcp: { sport: 40000, dport: PORT } },
    expect: { verdict: "pass" },
  },
];

const drained = { vip: "10.79.9.2", port: PORT, proto: "tcp", backends: [{ address: "10.79.2.99" }] };

/** The chain "lb" on L's two interfaces; on XDP, native. */
function lbChain(net: Topology, hook: Hook, revision: string, functions: BuiltinUse[]): ChainSpec {
  return builtinChain(objects, {
    name: "lb",
    revision,
    hook,
    interfaces: net.lIfs,
    ...(hook === "xdp" ? { xdpMode: "native" as const } : {}),
    functions,
  });
}

/** C — L — B with the backends serving and a chart-run manager in L; undone when the test ends. */
async function setup(): Promise<{ scope: TestScope; net: Topology; manager: ChartManager }> {
  const scope = testScope();
  const net = await topology(scope);
  await serveBackends(scope, net);
  const { manager } = await startNodeManager(scope, net.l, objects);
  return { scope, net, manager };
}

const FLOWS = 4000;
const hooks = ["xdp", "tc-ingress"] as const satisfies Hook[];

describe("l4lb between a client and four backends", () => {
  test.each(hooks)(
    "%s: flows spread within 10 percent across backends; removing one moves exactly its flows",
    async (hook) => {
      const { scope, net, manager } = await setup();
      const four = BACKENDS.slice(0, 4);
      const spec = (revision: string, backends: string[]) =>
        lbChain(net, hook, revision, [
          {
            builtin: "l4lb",
            tables: {
              services: [
                service(backends),
                { vip: VIP.v6, port: PORT, proto: "tcp", backends: [{ address: BACKENDS_V6[0]! }] },
                drained,
              ],
              health: [{ address: "10.79.2.99", healthy: false }],
            },
            tests: vectors,
          },
        ]);
      const first = await manager.apply(spec("r1", four));
      expect(first.selfTest).toMatchObject({ passed: vectors.length, failed: 0 });

      const before = await udpFlows(scope, net, VIP.v4, 20000, FLOWS);
      expect(before.filter((b) => b === null).length).toBe(0);
      expectEvenSpread(countBy(before), four, 0.1);

      const removed = four[3]!;
      const second = await manager.apply(spec("r2", four.slice(0, 3)));
      expect(second.action).toBe("tables-updated");
      const after = await udpFlows(scope, net, VIP.v4, 20000, FLOWS);
      expect(after.filter((b) => b === null).length).toBe(0);
      const moved = before.map((b, i) => b !== after[i]);
      const movedCount = moved.filter(Boolean).length;
      const share = before.filter((b) => b === removed).length / FLOWS;
      console.log(
        `l4lb ${hook}: removing 1 of 4 backends moved ${movedCount}/${FLOWS} flows (${(movedCount / FLOWS).toFixed(3)}); its share was ${share.toFixed(3)}`,
      );
      // Exactly the removed backend's flows moved, and they spread over the other three.
      expect(before.filter((b, i) => moved[i] && b !== removed)).toEqual([]);
      expect(movedCount / FLOWS).toBe(share);
      expect(new Set(after)).toEqual(new Set(four.slice(0, 3)));
      // The remembered flows are the ones sent.
      const remembered = (await manager.readTable("lb", "l4lb", "l4lb_flows")).map(decodeL4lbFlow);
      expect(remembered.length).toBe(FLOWS);
      expect(remembered.every((r) => r.flow.dst === VIP.v4 && r.backendPort === PORT)).toBe(true);

      const [nf] = (await manager.status("lb"))!.nfs;
      expect(nf!.counters.errors).toBe(0n);
      expect(nf!.counters.drops).toBe(0n);
    },
  );

  test("xdp, without affinity: removing one backend moves its flows and only a few others (Maglev alone)", async () => {
    const { scope, net, manager } = await setup();
    const spec = (revision: string, backends: string[]) =>
      lbChain(net, "xdp", revision, [
        { builtin: "l4lb", parameters: { affinity: false }, tables: { services: [service(backends)] } },
      ]);
    const five = BACKENDS.slice(0, 5);
    await manager.apply(spec("r1", five));
    const before = await udpFlows(scope, net, VIP.v4, 30000, FLOWS);
    expectEvenSpread(countBy(before), five, 0.1);
    const removed = five[2]!;
    await manager.apply(
      spec(
        "r2",
        five.filter((b) => b !== removed),
      ),
    );
    const after = await udpFlows(scope, net, VIP.v4, 30000, FLOWS);
    const movedCount = before.filter((b, i) => b !== after[i]).length;
    const share = before.filter((b) => b === removed).length / FLOWS;
    expect(await manager.readTable("lb", "l4lb", "l4lb_flows")).toEqual([]);
    console.log(
      `l4lb xdp without affinity: removing 1 of 5 backends moved ${movedCount}/${FLOWS} flows (${(movedCount / FLOWS).toFixed(3)}); its share was ${share.toFixed(3)}`,
    );
    // All of its flows moved; Maglev moves a few percent of the others' too.
    expect(before.every((b, i) => b !== removed || after[i] !== removed)).toBe(true);
    expect(movedCount / FLOWS).toBeGreaterThanOrEqual(share);
    expect(movedCount / FLOWS).toBeLessThan(share + 0.04);
  });

  test.each(hooks)(
    "%s: an unhealthy backend's flows move to the others and the rest stay; IPv6 flows spread too",
    async (hook) => {
      const { scope, net, manager } = await setup();
      const spec = (revision: string, health: unknown[]) =>
        lbChain(net, hook, revision, [
          {
            builtin: "l4lb",
            tables: {
              services: [
                service(BACKENDS.slice(0, 4)),
                { ...service([]), vip: VIP.v6, backends: BACKENDS_V6.map((address) => ({ address })) },
              ],
              health,
            },
          },
        ]);
      await manager.apply(spec("r1", []));
      const before = await udpFlows(scope, net, VIP.v4, 40000, 2000);
      const sick = BACKENDS[1]!;
      expect((await manager.apply(spec("r2", [{ address: sick, healthy: false }]))).action).toBe(
        "tables-updated",
      );
      const after = await udpFlows(scope, net, VIP.v4, 40000, 2000);
      expect(after.includes(sick)).toBe(false);
      expect(before.every((b, i) => b === sick || after[i] === b)).toBe(true);
      expect(after.filter((b) => b === null).length).toBe(0);

      const v6 = await udpFlows(scope, net, VIP.v6, 40000, FLOWS);
      expect(v6.filter((b) => b === null).length).toBe(0);
      expectEvenSpread(countBy(v6), BACKENDS_V6, 0.1);
    },
  );

  test.each([
    ["xdp", "linked"],
    ["xdp", "fused"],
    ["tc-ingress", "linked"],
    ["tc-ingress", "fused"],
  ] as const)(
    "%s, %s: the NFs after the balancer see the rewritten packet: a firewall rule on one backend's address stops exactly its flows",
    async (hook, mode) => {
      const { scope, net, manager } = await setup();
      const four = BACKENDS.slice(0, 4);
      const blocked = four[0]!;
      // Linked: each NF parses (or takes a parse shared along the chain, which the balancer
      // voids when it rewrites); fused: one parse for both, which the balancer updates.
      await manager.apply({
        ...lbChain(net, hook, "r1", [
          { builtin: "l4lb", tables: { services: [service(four)] } },
          { builtin: "firewall", tables: { rules: [{ action: "deny", dst: `${blocked}/32` }] } },
        ]),
        mode,
      });
      const got = await udpFlows(scope, net, VIP.v4, 50000, 400, true);
      const remembered = new Map(
        (await manager.readTable("lb", "l4lb", "l4lb_flows"))
          .map(decodeL4lbFlow)
          .map((r) => [r.flow.sport, r.backend]),
      );
      expect(remembered.size).toBe(400);
      // Answered: every flow whose backend is not the blocked one, from that backend.
      got.forEach((answer, i) => {
        const backend = remembered.get(50000 + i);
        expect({ flow: i, answer }).toEqual({ flow: i, answer: backend === blocked ? null : backend });
      });
      expect(got.filter((b) => b === null).length).toBeGreaterThan(50);
      const [, firewall] = (await manager.status("lb"))!.nfs;
      expect(firewall!.counters.drops).toBe(BigInt(got.filter((b) => b === null).length));
    },
  );

  test.each(hooks)(
    "%s: established TCP connections keep their backend across a revision switch that changes the Maglev table",
    async (hook) => {
      const { scope, net, manager } = await setup();
      const lb = (backends: string[], tableSize: number) => ({
        builtin: "l4lb" as const,
        tables: {
          services: [
            {
              vip: VIP.v4,
              port: PORT,
              proto: "tcp",
              tableSize,
              backends: backends.map((address) => ({ address })),
            },
          ],
        },
      });
      const first = await manager.apply(lbChain(net, hook, "r1", [lb(BACKENDS.slice(0, 4), 65537)]));

      const client = traffic(scope, net.c, ["tcp", VIP.v4, PORT, 200]);
      const opened = await client<{ backends: string[]; errors: number }>();
      expect(opened.errors).toBe(0);
      expect(new Set(opened.backends)).toEqual(new Set(BACKENDS.slice(0, 4)));

      // A new revision (a flow monitor in front) with a fifth backend and another table size:
      // the new Maglev table would send most of these connections elsewhere.
      const second = await manager.apply(
        lbChain(net, hook, "r2", [{ builtin: "flowmon" }, lb(BACKENDS, 16381)]),
      );
      expect(second.action).toBe("switched");
      expect(second.programIds).not.toEqual(first.programIds);

      client.tell("again");
      const later = await client<{ backends: string[]; errors: number }>();
      expect(later.errors).toBe(0);
      expect(later.backends).toEqual(opened.backends);

      // New connections use the new table, the fifth backend included.
      const fresh = traffic(scope, net.c, ["tcp", VIP.v4, PORT, 200]);
      const newer = await fresh<{ backends: string[]; errors: number }>();
      expect(newer.errors).toBe(0);
      expect(newer.backends).toContain(BACKENDS[4]);
    },
  );
});
