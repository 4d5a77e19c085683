/**
 * The `ips` built-in on real traffic, on XDP and tc: a datagram whose payload holds a drop
 * signature's content never arrives, others do; detect mode counts and delivers; SYNs over the
 * per-second threshold and probes past the port-scan limit are dropped; a signature change is
 * written in place; per-signature hit counters equal what was sent. The chain sits on B's veth
 * end, as in nf.test.ts, and the chain manager runs as the chart runs the agent.
 */
import { describe, expect, test } from "vitest";
import type { TestVector } from "../../common/api/testvector.ts";
import { decodeIpsHits, type IpsHits } from "../../node-agent/src/nf/index.ts";
import { createChainTestbed, useBuiltinObjects } from "./chain-testbed.ts";
import type { ChartManager } from "./chart-manager.ts";
import { builtinChain, builtinNf } from "./fixtures/chains.ts";
import type { VethNetwork } from "./harness.ts";
import { spawnInNetns } from "./traffic.ts";

const objects = useBuiltinObjects();

/** Runs ips-traffic.mjs in a namespace: its JSON lines one by one, and a way to write to it. */
function traffic(nsPath: string, args: readonly (string | number)[]) {
  const script = spawnInNetns(nsPath, "ips-traffic.mjs", args);
  const next = <T>(timeoutMs = 20_000) => script.nextLine<T>(`${args[0]} output`, timeoutMs);
  return Object.assign(next, { tell: script.tell });
}

const PORT = 7000;

/** Sends each payload `count` times from A to B's UDP port; returns how many of each arrived. */
async function sendPayloads(net: VethNetwork, payloads: Buffer[], count: number): Promise<number[]> {
  const receiver = traffic(net.b.ns.path, ["udp-recv", net.b.ip, PORT, 30_000]);
  await receiver<{ ready: true }>();
  for (const payload of payloads) {
    const sender = traffic(net.a.ns.path, ["udp-send", net.b.ip, PORT, payload.toString("hex"), count]);
    expect(await sender<{ sent: number }>()).toEqual({ sent: count });
  }
  // Datagrams that passed are queued at the receiver by now; a short grace for the last ones.
  await new Promise((r) => setTimeout(r, 200));
  receiver.tell("stop");
  const { payloads: got } = await receiver<{ payloads: Record<string, number> }>();
  return payloads.map((p) => got[p.toString("hex")] ?? 0);
}

/** TCP connects from A to closed ports of B: how many got a RST (passed) and how many nothing. */
async function syns(net: VethNetwork, firstPort: number, ports: number, rounds: number, sequential = false) {
  const run = traffic(net.a.ns.path, [
    "syn",
    net.b.ip,
    firstPort,
    ports,
    rounds,
    300,
    ...(sequential ? ["sequential"] : []),
  ]);
  return run<{ refused: number; silent: number }>();
}

async function hits(manager: ChartManager, chain: string): Promise<IpsHits> {
  return decodeIpsHits(await manager.readTable(chain, "ips", "ips_hits"));
}

/** 1,400 bytes of filler with `needle` at `at`. */
function payload(needle: string, at: number, size = 1400): Buffer {
  const bytes = Buffer.alloc(size, "-");
  bytes.write(needle, at);
  return bytes;
}

const signatures = [
  { id: 101, content: "/etc/passwd", message: "path traversal" },
  { id: 102, content: "|de ad be ef|", offset: 0, depth: 8, message: "magic at the start only" },
  { id: 103, content: "select * from", nocase: true, proto: "udp", dstPort: PORT },
  { id: 104, content: "curious", action: "alert" },
];

const vectors: TestVector[] = [
  {
    name: "a payload with a drop signature is dropped",
    packet: {
      ipv4: { src: "10.77.0.1", dst: "10.77.0.2" },
      udp: { sport: 1, dport: 53 },
      payload: "GET /etc/passwd",
    },
    expect: { verdict: "drop", counters: { ips: { drops: 1 } } },
  },
  {
    name: "a TCP segment's payload starts after its options (data offset)",
    packet: {
      ipv4: { src: "10.77.0.1", dst: "10.77.0.2" },
      tcp: { sport: 1, dport: 80, flags: ["ack", "psh"] },
      payload: "POST /upload?f=/etc/passwd",
    },
    expect: { verdict: "drop" },
  },
  {
    name: "IPv6 payloads are scanned too",
    packet: {
      ipv6: { src: "fd00::1", dst: "fd00::2" },
      udp: { sport: 1, dport: 53 },
      payload: "/etc/passwd",
    },
    expect: { verdict: "drop" },
  },
  {
    name: "bytes past depth do not match",
    packet: {
      ipv4: { src: "10.77.0.1", dst: "10.77.0.2" },
      tcp: { sport: 1, dport: 80, flags: ["ack"] },
      payload: "0123456789|de ad be ef|",
    },
    expect: { verdict: "pass" },
  },
  {
    name: "nocase matches on the signature's port, not on another",
    packet: {
      ipv4: { src: "10.77.0.1", dst: "10.77.0.2" },
      udp: { sport: 1, dport: PORT },
      payload: "SELECT * FROM t",
    },
    expect: { verdict: "drop" },
  },
  {
    name: "an alert signature counts and passes",
    packet: {
      ipv4: { src: "10.77.0.1", dst: "10.77.0.2" },
      udp: { sport: 1, dport: 9 },
      payload: "curious",
      payloadLength: 1400,
    },
    expect: { verdict: "pass" },
  },
];

describe("ips on real traffic", () => {
  test.each(["xdp", "tc-ingress"] as const)(
    "%s: matching payloads are dropped, others pass, alerts pass; hit counters per signature",
    async (hook) => {
      const { net, manager } = await createChainTestbed(objects);
      const spec = builtinChain(objects, {
        name: "ips",
        revision: "r1",
        hook,
        interfaces: [net.b.ifname],
        functions: [{ builtin: "ips", tables: { signatures }, tests: vectors }],
      });
      const result = await manager.apply(spec);
      expect(result.selfTest).toMatchObject({ passed: vectors.length, failed: 0 });

      const traversal = payload("/etc/passwd", 1000);
      const sql = payload("SeLeCt * FrOm users", 10);
      const clean = payload("hello", 10);
      const deepMagic = Buffer.concat([
        Buffer.alloc(100, "-"),
        Buffer.from("deadbeef", "hex"),
        Buffer.alloc(1296, "-"),
      ]);
      const alert = payload("curious", 1390);
      const received = await sendPayloads(net, [traversal, sql, clean, deepMagic, alert], 20);

      expect(received).toEqual([0, 0, 20, 20, 20]);
      // Self-test runs use private instances: the live counters hold only the traffic.
      expect(await hits(manager, "ips")).toEqual({
        signatures: { 101: 20, 103: 20, 104: 20 },
        synFlood: 0,
        portScan: 0,
        scanBudget: 0,
      });
      const [nf] = (await manager.status("ips"))!.nfs;
      expect(nf!.counters).toMatchObject({ packets: 100n, drops: 40n, passes: 60n, errors: 0n });
    },
  );

  test.each(["xdp", "tc-ingress"] as const)(
    "%s: detect mode counts matches and delivers them",
    async (hook) => {
      const { net, manager } = await createChainTestbed(objects);
      await manager.apply(
        builtinChain(objects, {
          name: "ids",
          revision: "r1",
          hook,
          interfaces: [net.b.ifname],
          functions: [{ builtin: "ips", parameters: { mode: "detect" }, tables: { signatures } }],
        }),
      );
      const received = await sendPayloads(net, [payload("/etc/passwd", 3), payload("hello", 3)], 15);
      expect(received).toEqual([15, 15]);
      expect((await hits(manager, "ids")).signatures).toEqual({ 101: 15 });
    },
  );

  test.each(["xdp", "tc-ingress"] as const)(
    "%s: SYNs from one source over the per-second threshold are dropped",
    async (hook) => {
      const { net, manager } = await createChainTestbed(objects);
      await manager.apply(
        builtinChain(objects, {
          name: "syn",
          revision: "r1",
          hook,
          interfaces: [net.b.ifname],
          functions: [{ builtin: "ips", parameters: { synFloodThreshold: 20 } }],
        }),
      );
      expect(await syns(net, 9000, 1, 60)).toEqual({ refused: 20, silent: 40 });
      expect((await hits(manager, "syn")).synFlood).toBe(40);
    },
  );

  test.each(["xdp", "tc-ingress"] as const)(
    "%s: a source probing many ports is blocked from the limit on, for the rest of the window",
    async (hook) => {
      const { net, manager } = await createChainTestbed(objects);
      const limit = 10;
      await manager.apply(
        builtinChain(objects, {
          name: "scan",
          revision: "r1",
          hook,
          interfaces: [net.b.ifname],
          functions: [{ builtin: "ips", parameters: { portScanPorts: limit, portScanSeconds: 60 } }],
        }),
      );
      // Ports are counted in a 512-bit set (Fibonacci hashing): these 30 ports fall in distinct bits.
      const firstPort = 20000;
      const bins = new Set(
        Array.from(
          { length: 30 },
          (_, i) => Number((BigInt(firstPort + i) * 2654435761n) & 0xffffffffn) >>> 23,
        ),
      );
      expect(bins.size).toBe(30);
      // One port at a time, so that the order of the probes is known.
      expect(await syns(net, firstPort, 30, 1, true)).toEqual({
        refused: limit - 1,
        silent: 30 - (limit - 1),
      });
      expect((await hits(manager, "scan")).portScan).toBe(30 - (limit - 1));
    },
  );

  test("a payload built to hit the prefilter everywhere spends its scan budget and is dropped, and counted", async () => {
    const { net, manager } = await createChainTestbed(objects);
    // Ten signatures that all start with "/c": every other position of "/c/c/c..." tries all ten.
    const sigs = Array.from({ length: 10 }, (_, i) => ({ id: i + 1, content: `/c${i}zzzz` }));
    const spec = (onScanBudget: string) =>
      builtinChain(objects, {
        name: "budget",
        revision: onScanBudget,
        hook: "xdp",
        interfaces: [net.b.ifname],
        functions: [
          { builtin: "ips", parameters: { scanBudget: 1000, onScanBudget }, tables: { signatures: sigs } },
        ],
      });
    await manager.apply(spec("drop"));
    const hostile = Buffer.from("/c".repeat(700));
    const benign = payload("/c0 is not a signature", 10);
    expect(await sendPayloads(net, [hostile, benign], 10)).toEqual([0, 10]);
    expect(await hits(manager, "budget")).toMatchObject({ signatures: {}, scanBudget: 10 });

    await manager.apply(spec("pass"));
    expect(await sendPayloads(net, [hostile], 10)).toEqual([10]);
    expect((await hits(manager, "budget")).scanBudget).toBe(20);
  });

  test("a signature change is written in place: same programs, the new set applies, counters stay", async () => {
    const { net, manager } = await createChainTestbed(objects);
    const spec = (revision: string, sigs: unknown[]) => ({
      ...builtinChain(objects, {
        name: "upd",
        revision,
        hook: "xdp",
        interfaces: [net.b.ifname],
        functions: [],
      }),
      functions: [builtinNf(objects, { builtin: "ips", tables: { signatures: sigs } })],
    });
    const first = await manager.apply(spec("r1", [{ id: 1, content: "attack-one" }]));
    expect(await sendPayloads(net, [payload("attack-one", 50), payload("attack-two", 50)], 10)).toEqual([
      0, 10,
    ]);

    const second = await manager.apply(spec("r2", [{ id: 2, content: "attack-two" }]));

    expect(second).toMatchObject({ action: "tables-updated", revision: "r2" });
    expect(second.programIds).toEqual(first.programIds);
    expect(await sendPayloads(net, [payload("attack-one", 50), payload("attack-two", 50)], 10)).toEqual([
      10, 0,
    ]);
    expect((await hits(manager, "upd")).signatures).toEqual({ 1: 10, 2: 10 });
  });
});
