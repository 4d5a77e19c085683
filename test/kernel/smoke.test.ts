/**
 * Smoke test of the data-plane library on the running kernel: TypeScript -> koffi -> libbpf ->
 * kernel, with a real compiler, real verifier, real veth pairs and real packets.
 */
import { copyFileSync, mkdtempSync, readlinkSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import {
  BpfError,
  BpfLink,
  BpfMap,
  BpfObject,
  BpfProgram,
  BpfSpecError,
  MapType,
  NotSupportedError,
  UpdateFlags,
  VerifierError,
  XdpAction,
  u32,
  u64,
  xdpQuery,
} from "../../node-agent/src/libbpf/index.ts";
import { listIds, mapById } from "../../node-agent/src/libbpf/byid.ts";
import { ifIndex, NetnsError, withNetns } from "../../node-agent/src/netns/index.ts";
import {
  compileBpf,
  createBpffsDir,
  createVethNetwork,
  fixture,
  TestScope,
  testScope,
  VETH_NATIVE_XDP_MAX_MTU,
} from "./harness.ts";
import { ping, startUdpFlow } from "./traffic.ts";

/** pkt_count keys, as in fixtures/smoke.bpf.c. */
const XDP_ALL = 0;
const XDP_ICMP = 1;
const TC_ICMP = 2;
const XDP_UDP_DROPPED = 3;

const files = new TestScope();
let smokeObject = "";
let rejectObject = "";

beforeAll(async () => {
  smokeObject = await compileBpf(fixture("smoke.bpf.c"), { scope: files });
  rejectObject = await compileBpf(fixture("reject.bpf.c"), { scope: files });
});
afterAll(() => files.dispose());

/** An Ethernet + IPv4 + ICMP echo request frame, checksums included. */
function icmpEchoFrame(): Buffer {
  const frame = Buffer.alloc(14 + 20 + 8 + 32);
  Buffer.from("020000000002020000000001", "hex").copy(frame, 0); // dst, src MAC
  frame.writeUInt16BE(0x0800, 12);
  const ip = frame.subarray(14, 34);
  ip.writeUInt8(0x45, 0);
  ip.writeUInt16BE(frame.length - 14, 2);
  ip.writeUInt8(64, 8); // TTL
  ip.writeUInt8(1, 9); // ICMP
  Buffer.from([10, 77, 0, 1, 10, 77, 0, 2]).copy(ip, 12);
  ip.writeUInt16BE(checksum(ip), 10);
  const icmp = frame.subarray(34);
  icmp.writeUInt8(8, 0); // echo request
  icmp.writeUInt16BE(0x1234, 4);
  icmp.writeUInt16BE(1, 6);
  icmp.writeUInt16BE(checksum(icmp), 2);
  return frame;
}

function checksum(bytes: Buffer): number {
  let sum = 0;
  for (let i = 0; i + 1 < bytes.length; i += 2) sum += bytes.readUInt16BE(i);
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return ~sum & 0xffff;
}

function counter(map: BpfMap, key: number): bigint {
  return map.lookup(u32(key))?.readBigUInt64LE(0) ?? -1n;
}

/** Loads the smoke object with its `.rodata` settings and, optionally, another object's counters. */
function loadSmoke(scope: TestScope, drop: { icmp?: boolean; udp?: boolean }, counters?: BpfMap): BpfObject {
  const object = BpfObject.load({
    path: smokeObject,
    rodata: { drop_icmp: drop.icmp ?? false, drop_udp: drop.udp ?? false },
    ...(counters ? { reuseMaps: { pkt_count: counters } } : {}),
  });
  scope.defer(() => object.close());
  return object;
}

/** Waits until the kernel has freed program `id` (freeing is deferred after the last reference goes). */
async function programFreed(id: number): Promise<boolean> {
  for (let i = 0; i < 100; i++) {
    if (!listIds("prog").includes(id)) return true;
    await new Promise((r) => setTimeout(r, 20));
  }
  return false;
}

describe("libbpf from TypeScript on the running kernel", () => {
  test("a loaded XDP program passes a test-run ICMP packet and counts it in its maps", () => {
    const scope = testScope();
    const object = loadSmoke(scope, {});
    const prog = object.program("smoke_xdp");
    expect(prog.typeName).toBe("xdp");
    expect(prog.id).toBeGreaterThan(0);
    expect(prog.info().mapIds).toContain(object.map("pkt_count").id);

    const frame = icmpEchoFrame();
    const run = prog.testRun({ data: frame, dataOut: true });

    expect(run.retval).toBe(XdpAction.PASS);
    expect(run.dataOut).toEqual(frame);
    const counts = object.map("pkt_count");
    expect(counter(counts, XDP_ALL)).toBe(1n);
    expect(counter(counts, XDP_ICMP)).toBe(1n);
    const perCpu = object.map("cpu_count").lookupPerCpu(u32(0)) ?? [];
    expect(perCpu.reduce((sum, v) => sum + v.readBigUInt64LE(0), 0n)).toBe(1n);
  });

  test("a .rodata setting changes the verdict and a reused map carries the counts over", () => {
    const scope = testScope();
    const passing = loadSmoke(scope, {});
    const counts = passing.map("pkt_count");
    const dropping = loadSmoke(scope, { icmp: true }, counts);

    const run = dropping.program("smoke_xdp").testRun({ data: icmpEchoFrame(), repeat: 10 });

    expect(run.retval).toBe(XdpAction.DROP);
    expect(dropping.map("pkt_count").id).toBe(counts.id);
    expect(counter(counts, XDP_ICMP)).toBe(10n);
    expect(dropping.map("cpu_count").id).not.toBe(passing.map("cpu_count").id);
  });

  test("an object file replaced in place is read anew: its .rodata is the new file's", async () => {
    const dir = mkdtempSync(join(tmpdir(), "sluice-rodata-"));
    files.defer(() => rmSync(dir, { recursive: true, force: true }));
    const path = join(dir, "nf.o");
    const names = () => {
      const object = BpfObject.open(path);
      try {
        return object.rodataVariables().map((v) => v.name);
      } finally {
        object.close();
      }
    };
    // A file changed in the last 100 ms is read every time; this one is old enough to be kept.
    copyFileSync(smokeObject, path);
    await sleep(300);
    expect(names()).toEqual(["drop_icmp", "drop_udp"]);
    expect(names()).toEqual(["drop_icmp", "drop_udp"]);

    copyFileSync(rejectObject, path);
    expect(names()).toEqual([]);
    await sleep(300);
    expect(names()).toEqual([]);
    const object = BpfObject.open(path);
    try {
      expect(() => object.setRodata({ drop_icmp: 1 })).toThrow(/has no \.rodata|no \.rodata variable/);
    } finally {
      object.close();
    }
  });

  test("a spec naming what the object lacks is refused before anything is loaded", () => {
    expect(() => BpfObject.load({ path: smokeObject, rodata: { drop_tcp: 1 } })).toThrow(
      /no \.rodata variable drop_tcp \(variables: drop_icmp, drop_udp\)/,
    );
    expect(() => BpfObject.load({ path: smokeObject, programs: ["smoke_tcp"] })).toThrow(BpfSpecError);
    expect(() => BpfObject.load({ path: smokeObject, rodata: { drop_icmp: 2n ** 40n } })).toThrow(
      /does not fit in 4 bytes/,
    );
  });

  test("native XDP on a veth counts real pings, and a link update swaps programs without a gap", async () => {
    const scope = testScope();
    const net = await createVethNetwork(scope);
    const passing = loadSmoke(scope, {});
    const counts = passing.map("pkt_count");
    const dropping = loadSmoke(scope, { icmp: true }, counts);

    const link = withNetns(net.b.ns.path, () =>
      BpfLink.attachXdp(passing.program("smoke_xdp"), net.b.ifindex, "native"),
    );
    scope.defer(() => link.close());
    expect(link.xdpMode).toBe("native");
    expect(link.info()).toMatchObject({
      typeName: "xdp",
      progId: passing.program("smoke_xdp").id,
      ifindex: net.b.ifindex,
    });
    expect(withNetns(net.b.ns.path, () => xdpQuery(net.b.ifindex))).toMatchObject({
      mode: "native",
      progId: passing.program("smoke_xdp").id,
    });

    expect(await ping(net.a.ns, net.b.ip, 5)).toMatchObject({ sent: 5, received: 5 });
    expect(counter(counts, XDP_ICMP)).toBe(5n);

    link.update(dropping.program("smoke_xdp"));
    expect(await ping(net.a.ns, net.b.ip, 3, { timeoutMs: 200 })).toMatchObject({ sent: 3, received: 0 });
    expect(counter(counts, XDP_ICMP)).toBe(8n);

    // A compare-and-swap update names the program it expects to replace.
    expect(() =>
      link.update(passing.program("smoke_xdp"), { expectedProgFd: passing.program("smoke_xdp").fd }),
    ).toThrow(BpfError);
    link.update(passing.program("smoke_xdp"), { expectedProgFd: dropping.program("smoke_xdp").fd });
    expect(await ping(net.a.ns, net.b.ip, 2)).toMatchObject({ received: 2 });
    expect(counter(counts, XDP_ICMP)).toBe(10n);
  });

  test("UDP traffic loses nothing across link updates, and exactly the packets XDP drops are reported lost", async () => {
    const scope = testScope();
    const net = await createVethNetwork(scope);
    const first = loadSmoke(scope, {});
    const counts = first.map("pkt_count");
    const second = loadSmoke(scope, {}, counts);
    const dropper = loadSmoke(scope, { udp: true }, counts);
    const link = withNetns(net.b.ns.path, () =>
      BpfLink.attachXdp(first.program("smoke_xdp"), net.b.ifindex, "native"),
    );
    scope.defer(() => link.close());
    const flowOptions = {
      from: { ns: net.a.ns.name, ip: net.a.ip },
      to: { ns: net.b.ns.name, ip: net.b.ip },
    };

    const steady = await startUdpFlow({ ...flowOptions, count: 20_000, rate: 40_000 });
    let updates = 0;
    let finished = false;
    const result = steady.done().finally(() => (finished = true));
    while (!finished) {
      link.update((updates++ % 2 === 0 ? second : first).program("smoke_xdp"));
      await sleep(2);
    }
    expect(await result).toMatchObject({ sent: 20_000, received: 20_000, lost: 0, receiverDrops: 0 });
    expect(updates).toBeGreaterThan(10);

    link.update(first.program("smoke_xdp"));
    const lossy = await startUdpFlow({ ...flowOptions, count: 6_000, rate: 20_000 });
    await sleep(60);
    link.update(dropper.program("smoke_xdp"));
    await sleep(60);
    link.update(first.program("smoke_xdp"));
    const outcome = await lossy.done();

    expect(outcome.lost).toBeGreaterThan(0);
    expect(outcome.receiverDrops).toBe(0);
    expect(BigInt(outcome.lost)).toBe(counter(counts, XDP_UDP_DROPPED));
  });

  test("a tcx ingress link runs a tc program on real packets", async () => {
    const scope = testScope();
    const net = await createVethNetwork(scope);
    const object = loadSmoke(scope, {});

    const link = withNetns(net.b.ns.path, () =>
      BpfLink.attachTcx(object.program("smoke_tc"), net.b.ifindex, "ingress"),
    );
    scope.defer(() => link.close());

    expect(link.info()).toMatchObject({ typeName: "tcx", ifindex: net.b.ifindex, attachType: 46 });
    expect(await ping(net.a.ns, net.b.ip, 4)).toMatchObject({ received: 4 });
    expect(counter(object.map("pkt_count"), TC_ICMP)).toBe(4n);
  });

  test("pinned program, map and link outlive their object, and nothing is left after cleanup", async () => {
    const scope = testScope();
    const net = await createVethNetwork(scope);
    const bpffs = createBpffsDir(scope);
    const object = loadSmoke(scope, {});
    const prog = object.program("smoke_xdp");
    const progId = prog.id;
    const link = withNetns(net.b.ns.path, () => BpfLink.attachXdp(prog, net.b.ifindex, "native"));
    scope.defer(() => link.close());
    const linkId = link.id;
    prog.pin(`${bpffs.path}/prog`);
    object.map("pkt_count").pin(`${bpffs.path}/maps/pkt_count`);
    link.pin(`${bpffs.path}/link`);
    expect(bpffs.listPinned()).toEqual(["link", "maps/pkt_count", "prog"]);

    // The agent that loaded it goes away: the chain keeps running from the pins.
    link.close();
    object.close();
    const counts = BpfMap.fromPin(`${bpffs.path}/maps/pkt_count`, "pkt_count");
    scope.defer(() => counts.close());
    expect(await ping(net.a.ns, net.b.ip, 3)).toMatchObject({ received: 3 });
    expect(counter(counts, XDP_ICMP)).toBe(3n);
    const adopted = BpfLink.fromPin(`${bpffs.path}/link`);
    scope.defer(() => adopted.close());
    expect(adopted.info().progId).toBe(progId);
    const pinnedProg = BpfProgram.fromPin(`${bpffs.path}/prog`);
    scope.defer(() => pinnedProg.close());
    expect(pinnedProg).toMatchObject({ id: progId, name: "smoke_xdp", typeName: "xdp" });

    await scope.dispose();

    expect(listIds("link")).not.toContain(linkId);
    expect(await programFreed(progId)).toBe(true);
  });

  test("native XDP above the veth MTU limit is reported as not supported; generic mode still attaches", async () => {
    const scope = testScope();
    const net = await createVethNetwork(scope, { mtu: VETH_NATIVE_XDP_MAX_MTU + 500 });
    const prog = loadSmoke(scope, {}).program("smoke_xdp");

    expect(() => withNetns(net.b.ns.path, () => BpfLink.attachXdp(prog, net.b.ifindex, "native"))).toThrow(
      NotSupportedError,
    );
    const link = withNetns(net.b.ns.path, () => BpfLink.attachXdp(prog, net.b.ifindex, "generic"));
    scope.defer(() => link.close());
    expect(withNetns(net.b.ns.path, () => xdpQuery(net.b.ifindex))).toMatchObject({
      mode: "generic",
      progId: prog.id,
    });
    expect(await ping(net.a.ns, net.b.ip, 2)).toMatchObject({ received: 2 });
  });

  test("maps made from TypeScript store, iterate and delete entries; a prog array holds a program", () => {
    const scope = testScope();
    const hash = BpfMap.create({
      name: "smoke_hash",
      type: MapType.HASH,
      keySize: 4,
      valueSize: 8,
      maxEntries: 8,
      flags: 0,
    });
    scope.defer(() => hash.close());
    for (const key of [3, 1, 2]) hash.update(u32(key), u64(key * 100));

    expect([...hash.keys()].map((k) => k.readUInt32LE(0)).sort()).toEqual([1, 2, 3]);
    expect(hash.lookup(u32(2))?.readBigUInt64LE(0)).toBe(200n);
    expect(hash.delete(u32(2))).toBe(true);
    expect(hash.delete(u32(2))).toBe(false);
    expect(hash.lookup(u32(2))).toBeUndefined();
    expect(() => hash.update(u32(1), u64(1), UpdateFlags.NOEXIST)).toThrow("map smoke_hash: update: EEXIST");
    const reopened = mapById(hash.id);
    scope.defer(() => reopened.close());
    expect(reopened.definition()).toEqual(hash.definition());
    expect(reopened.lookup(u32(3))?.readBigUInt64LE(0)).toBe(300n);

    const object = loadSmoke(scope, {});
    const progs = BpfMap.create({
      name: "smoke_progs",
      type: MapType.PROG_ARRAY,
      keySize: 4,
      valueSize: 4,
      maxEntries: 2,
      flags: 0,
    });
    scope.defer(() => progs.close());
    progs.update(u32(0), u32(object.program("smoke_xdp").fd));
    // Reading a prog array slot from user space yields the program's id.
    expect(progs.lookup(u32(0))?.readUInt32LE(0)).toBe(object.program("smoke_xdp").id);
    expect(() => progs.update(u32(1), u32(hash.fd))).toThrow(/map smoke_progs: update: EINVAL/);
  });

  test("withNetns runs inside the namespace and always comes back, also when the function throws", async () => {
    const scope = testScope();
    const net = await createVethNetwork(scope);
    const here = () => readlinkSync("/proc/thread-self/ns/net");
    const home = here();
    const inside = withNetns(net.b.ns.path, here);

    expect(inside).not.toBe(home);
    expect(inside).toBe(withNetns(net.b.ns.name, here));
    expect(() =>
      withNetns(net.b.ns.path, () => {
        throw new Error("boom");
      }),
    ).toThrow("boom");
    expect(here()).toBe(home);
    expect(() => withNetns(net.b.ns.path, async () => 1)).toThrow(/synchronous/);
    expect(here()).toBe(home);
    expect(ifIndex(net.b.ifname, net.b.ns.name)).toBe(net.b.ifindex);
    expect(() => ifIndex(net.b.ifname)).toThrow(NetnsError);
  });

  test("a program the verifier refuses raises VerifierError with the program name and the log", () => {
    let error: unknown;
    try {
      BpfObject.load({ path: rejectObject });
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(VerifierError);
    expect(error).toBeInstanceOf(BpfError);
    const rejection = error as VerifierError;
    expect(rejection.program).toBe("reject_xdp");
    expect(rejection.message).toMatch(
      /^program reject_xdp: load: E[A-Z0-9]+: verifier rejected it: .*packet/,
    );
    expect(rejection.log).toMatch(/invalid access to packet/);
    expect(rejection.log.length).toBeLessThanOrEqual(4100);
  });

  test("a bad map update raises BpfError naming the map, the operation and the errno", () => {
    const scope = testScope();
    const counts = loadSmoke(scope, {}).map("pkt_count");

    expect(() => counts.update(u32(7), u64(1))).toThrow(
      expect.objectContaining({
        message: "map pkt_count: update: E2BIG",
        errno: 7,
        code: "E2BIG",
        op: "update",
      }),
    );
    expect(() => counts.update(u32(0), u32(1))).toThrow(RangeError);
  });
});
