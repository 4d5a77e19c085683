/**
 * The chain manager on the running kernel: creating, updating, switching and adopting chains,
 * and what a user sees when a new revision cannot be switched in (the old one keeps forwarding).
 * The manager runs as the chart runs the agent (see chart-manager.ts): in namespace B, with
 * exactly CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN.
 *
 * Chains sit on the receiving veth end (namespace B); traffic goes A -> B. Both ends know each
 * other's MAC for good, so no ARP crosses the chain and counters equal what was sent.
 */
import { beforeAll, describe, expect, test } from "vitest";
import type { TestVector } from "../../common/api/testvector.ts";
import {
  ChainSpecError,
  NfContractError,
  SelfTestError,
  type ChainSpec,
} from "../../node-agent/src/chain/index.ts";
import { compile, CompileError } from "../../node-agent/src/compile/index.ts";
import { linkById, listIds } from "../../node-agent/src/libbpf/byid.ts";
import { VerifierError, xdpQuery } from "../../node-agent/src/libbpf/index.ts";
import { withNetns } from "../../node-agent/src/netns/index.ts";
import { type ChainTestbed, createChainTestbed, useBuiltinObjects } from "./chain-testbed.ts";
import { startChartManager } from "./chart-manager.ts";
import { builtinChain, builtinNf } from "./fixtures/chains.ts";
import { fixture, run, VETH_NATIVE_XDP_MAX_MTU, type VethNetworkOptions } from "./harness.ts";
import { ping, startUdpFlow, udpFlow } from "./traffic.ts";

const objects = useBuiltinObjects();
let counterV1 = "";
let counterV2 = "";
let rejectObject = "";

beforeAll(async () => {
  const custom = (entry: string, defines?: Record<string, number>) =>
    compile({
      sourceRoot: fixture("nf"),
      entry,
      cacheDir: objects.cacheDir,
      ...(defines ? { defines } : {}),
    }).then((r) => r.objectPath);
  counterV1 = await custom("counter.bpf.c", { COUNTER_SLOTS: 4 });
  counterV2 = await custom("counter.bpf.c", { COUNTER_SLOTS: 8 });
  rejectObject = await custom("reject.bpf.c");
});

interface Setup extends ChainTestbed {
  flow(count: number, rate?: number): ReturnType<typeof udpFlow>;
  startFlow(count: number, rate?: number): ReturnType<typeof startUdpFlow>;
  pingB(count: number): ReturnType<typeof ping>;
}

async function setup(veth: VethNetworkOptions = {}): Promise<Setup> {
  const testbed = await createChainTestbed(objects, { veth });
  const { net } = testbed;
  const flowOptions = { from: { ns: net.a.ns.name, ip: net.a.ip }, to: { ns: net.b.ns.name, ip: net.b.ip } };
  return {
    ...testbed,
    flow: (count, rate = 20_000) => udpFlow({ ...flowOptions, count, rate }),
    startFlow: (count, rate = 20_000) => startUdpFlow({ ...flowOptions, count, rate }),
    pingB: (count) => ping(net.a.ns, net.b.ip, count, { timeoutMs: 150, intervalMs: 5 }),
  };
}

const denyPing = { rules: [{ action: "deny", protocol: "icmp" }] };

/** firewall (denying ping) -> ratelimit -> flowmon on XDP. */
function threeNfChain(
  s: Setup,
  revision: string,
  extra: Partial<ChainSpec> = {},
  burst = 100_000,
): ChainSpec {
  return {
    ...builtinChain(objects, {
      name: "edge",
      revision,
      hook: "xdp",
      interfaces: [s.net.b.ifname],
      functions: [
        { builtin: "firewall", tables: denyPing },
        { builtin: "ratelimit", parameters: { rate: 1_000_000, burst } },
        { builtin: "flowmon" },
      ],
    }),
    ...extra,
  };
}

describe("chain manager", () => {
  test("a new chain is loaded, linked, attached natively and reports what runs", async () => {
    const s = await setup();

    const result = await s.manager.apply(threeNfChain(s, "r1"));

    expect(result).toMatchObject({
      action: "created",
      revision: "r1",
      generation: 1,
      attachedInterfaces: [s.net.b.ifname],
      recreatedMaps: [],
    });
    expect(result.programIds).toHaveLength(4);
    expect(new Set(result.programIds).size).toBe(4);
    expect(s.bpffs.listPinned()).toEqual([
      `edge/link_${s.net.b.ifname}`,
      "edge/maps/firewall/firewall_rules",
      "edge/maps/flowmon/flowmon_flows",
      "edge/maps/ratelimit/ratelimit_state",
      "edge/meta",
      "edge/rev/1/meta",
      "edge/rev/1/nfs/firewall",
      "edge/rev/1/nfs/flowmon",
      "edge/rev/1/nfs/ratelimit",
      "edge/rev/1/progs",
      "edge/root_array",
      "edge/root_prog",
      "edge/root_stats",
      "edge/scratch",
      "edge/stats",
    ]);
    const pings = await s.pingB(3);
    const flow = await s.flow(1000);
    expect(pings.received).toBe(0);
    expect(flow).toMatchObject({ sent: 1000, received: 1000 });

    const status = (await s.manager.status("edge"))!;
    expect(status).toMatchObject({ name: "edge", hook: "xdp", revision: "r1", generation: 1 });
    expect(status.interfaces).toEqual([
      expect.objectContaining({ name: s.net.b.ifname, ifindex: s.net.b.ifindex, xdpMode: "native" }),
    ]);
    expect(status.nfs.map((nf) => [nf.name, nf.programId])).toEqual([
      ["firewall", result.programIds[1]],
      ["ratelimit", result.programIds[2]],
      ["flowmon", result.programIds[3]],
    ]);
    expect(status.nfs.map((nf) => nf.counters.packets)).toEqual([1003n, 1000n, 1000n]);
    expect(status.nfs[0]!.counters.drops).toBe(3n);
    expect(status.rootMisses.packets).toBe(0n);
    expect((await s.manager.list()).map((c) => c.name)).toEqual(["edge"]);
  });

  test("33 NFs are refused before anything is loaded; 32 NFs run (33 tail calls per packet)", async () => {
    const s = await setup();
    const noops = (n: number) =>
      Array.from({ length: n }, (_, i) => builtinNf(objects, { builtin: "noop", name: `hop${i}` }));
    const spec = (n: number): ChainSpec => ({
      name: "long",
      revision: `n${n}`,
      hook: "xdp",
      interfaces: [s.net.b.ifname],
      functions: noops(n),
    });
    const programsBefore = listIds("prog").length;

    await expect(s.manager.apply(spec(33))).rejects.toThrow(ChainSpecError);
    await expect(s.manager.apply(spec(33))).rejects.toThrow(/33 network functions; at most 32/);
    expect(s.bpffs.listPinned()).toEqual([]);
    expect(listIds("prog").length).toBeLessThanOrEqual(programsBefore);

    await s.manager.apply(spec(32));
    const flow = await s.flow(500);
    expect(flow).toMatchObject({ sent: 500, received: 500 });
    const nfs = (await s.manager.status("long"))!.nfs;
    expect(nfs).toHaveLength(32);
    // Every packet reached the last NF and ended there: no tail call missed.
    expect(nfs[31]!.counters).toMatchObject({ packets: 500n, passes: 500n, errors: 0n });
    expect(nfs[0]!.counters.packets).toBe(500n);
  });

  test("a table-only change is written in place: same programs, no switch, new rules apply", async () => {
    const s = await setup();
    const first = await s.manager.apply(threeNfChain(s, "r1"));
    expect((await s.pingB(2)).received).toBe(0);

    const allowPing = threeNfChain(s, "r2");
    allowPing.functions[0] = builtinNf(objects, { builtin: "firewall", tables: { rules: [] } });
    const second = await s.manager.apply(allowPing);

    expect(second).toMatchObject({ action: "tables-updated", revision: "r2", generation: first.generation });
    expect(second.programIds).toEqual(first.programIds);
    expect(second.timings.flipUs).toBe(0);
    expect((await s.pingB(2)).received).toBe(2);
    expect(await s.manager.apply(allowPing)).toMatchObject({
      action: "unchanged",
      programIds: first.programIds,
    });
  });

  test("counters and rate-limit buckets carry over a switch; a map whose definition changed is recreated and reported", async () => {
    const s = await setup();
    const spec = (revision: string, counterObject: string, rate: number, withNoop: boolean): ChainSpec => ({
      name: "carry",
      revision,
      hook: "xdp",
      interfaces: [s.net.b.ifname],
      functions: [
        ...(withNoop ? [builtinNf(objects, { builtin: "noop" })] : []),
        { name: "counter", objectPath: counterObject },
        builtinNf(objects, { builtin: "ratelimit", parameters: { rate, burst: 5 } }),
      ],
    });
    await s.manager.apply(spec("r1", counterV1, 1, false));
    const before = await s.flow(20, 2000);
    expect(before.received).toBe(5);
    const hits = async () =>
      (await s.manager.readTable("carry", "counter", "counter_hits"))[0]!.value.readBigUInt64LE(0);
    expect(await hits()).toBe(20n);

    // New parameters, an NF added in front, and the counter NF rebuilt with a bigger map.
    const switched = await s.manager.apply(spec("r2", counterV2, 2, true));

    expect(switched.action).toBe("switched");
    expect(switched.recreatedMaps).toEqual([
      { nf: "counter", map: "counter_hits", reason: "definition changed: max entries 4 -> 8" },
    ]);
    expect(switched.carriedMaps).toEqual([{ nf: "ratelimit", map: "ratelimit_state" }]);
    const after = await s.flow(20, 2000);
    // The bucket emptied by the first 5 packets is still empty: the state carried over.
    expect(after.received).toBe(0);
    expect(await hits()).toBe(20n); // a new map: it counts only packets since the switch
    const status = (await s.manager.status("carry"))!;
    const ratelimit = status.nfs.find((nf) => nf.name === "ratelimit")!;
    expect(ratelimit.counters).toMatchObject({ packets: 40n, drops: 35n, passes: 5n });
    expect(s.bpffs.listPinned().filter((p) => p.startsWith("carry/rev/"))).toEqual([
      "carry/rev/2/meta",
      "carry/rev/2/nfs/counter",
      "carry/rev/2/nfs/noop",
      "carry/rev/2/nfs/ratelimit",
      "carry/rev/2/progs",
    ]);
  });

  test("C that does not compile: the error names the cause, and the running chain keeps forwarding", async () => {
    const s = await setup();
    await s.manager.apply(threeNfChain(s, "r1"));
    const flow = await s.startFlow(4000);

    const error = await compile({
      sourceRoot: fixture("nf"),
      entry: "broken.bpf.c",
      cacheDir: objects.cacheDir,
    }).catch((err: unknown) => err);

    expect(error).toBeInstanceOf(CompileError);
    expect((error as CompileError).message).toMatch(
      /broken\.bpf\.c:8:\d+: error: use of undeclared identifier 'undeclared_verdict'/,
    );
    expect(await flow.done()).toMatchObject({ sent: 4000, received: 4000, lost: 0 });
    expect((await s.pingB(2)).received).toBe(0);
    expect((await s.manager.status("edge"))!.revision).toBe("r1");
  });

  test("C the verifier rejects: VerifierError names the program and the reason; the running chain keeps forwarding and nothing of the new revision is left", async () => {
    const s = await setup();
    await s.manager.apply(threeNfChain(s, "r1"));
    const pinned = s.bpffs.listPinned();
    const flow = await s.startFlow(4000);

    const rejected = threeNfChain(s, "r2");
    rejected.functions.splice(1, 0, { name: "unchecked", objectPath: rejectObject });
    const error = await s.manager.apply(rejected).catch((err: unknown) => err);

    expect(error).toBeInstanceOf(VerifierError);
    expect((error as VerifierError).program).toBe("unchecked_xdp");
    expect((error as VerifierError).message).toMatch(
      /^program unchecked_xdp: load: E[A-Z]+: verifier rejected it: .*packet/,
    );
    expect((error as VerifierError).log).toMatch(/invalid access to packet/);
    expect(await flow.done()).toMatchObject({ sent: 4000, received: 4000, lost: 0 });
    expect((await s.pingB(2)).received).toBe(0);
    expect((await s.manager.status("edge"))!.revision).toBe("r1");
    expect(s.bpffs.listPinned()).toEqual(pinned);
    // The failure does not poison the chain: the next good revision goes live.
    expect(await s.manager.apply(threeNfChain(s, "r3", {}, 50_000))).toMatchObject({
      action: "switched",
      revision: "r3",
    });
  });

  test("a failing self-test vector stops the switch, says which vector (expected vs got), and the old chain keeps running", async () => {
    const s = await setup();
    await s.manager.apply(threeNfChain(s, "r1"));
    const flow = await s.startFlow(4000);

    const vectors: TestVector[] = [
      {
        name: "udp passes",
        packet: { ipv4: { src: s.net.a.ip, dst: s.net.b.ip }, udp: { sport: 1, dport: 2 } },
        expect: { verdict: "pass" },
      },
      {
        name: "ping is still denied",
        packet: { ipv4: { src: s.net.a.ip, dst: s.net.b.ip }, icmp: {} },
        expect: { verdict: "drop", counters: { firewall: { drops: 1 } } },
      },
    ];
    const mistaken = threeNfChain(s, "r2", { tests: vectors });
    mistaken.functions[0] = builtinNf(objects, { builtin: "firewall", tables: { rules: [] } });
    const error = await s.manager.apply(mistaken).catch((err: unknown) => err);

    expect(error).toBeInstanceOf(SelfTestError);
    expect((error as SelfTestError).results).toEqual([
      {
        vector: "ping is still denied",
        passed: false,
        expected: "drop, firewall.drops=1",
        got: "pass, firewall.drops=0",
      },
      { vector: "udp passes", passed: true, expected: "pass", got: "pass" },
    ]);
    expect((error as SelfTestError).message).toMatch(
      /ping is still denied: expected drop, firewall.drops=1, got pass/,
    );
    expect(await flow.done()).toMatchObject({ sent: 4000, received: 4000, lost: 0 });
    expect((await s.pingB(2)).received).toBe(0);
    expect((await s.manager.status("edge"))!.revision).toBe("r1");
  });

  test("a new manager adopts a running chain without reloading or detaching it, then switches and removes it", async () => {
    const s = await setup();
    const created = await s.manager.apply(threeNfChain(s, "r1"));
    await s.flow(300);
    const linkId = (await s.manager.status("edge"))!.interfaces[0]!.linkId;
    await s.manager.close();

    const flow = await s.startFlow(6000);
    const successor = await s.startManager();
    const adopted = await successor.adopt();

    expect(adopted).toEqual([
      expect.objectContaining({
        name: "edge",
        outcome: "adopted",
        revision: "r1",
        generation: 1,
        repairs: [],
      }),
    ]);
    const status = (await successor.status("edge"))!;
    expect([status.rootProgramId, ...status.nfs.map((nf) => nf.programId)]).toEqual(created.programIds);
    expect(status.interfaces[0]!.linkId).toBe(linkId);
    expect(status.interfaces[0]!.xdpMode).toBe("native");

    const switched = await successor.apply(threeNfChain(s, "r2", {}, 50_000));
    expect(switched).toMatchObject({ action: "switched", generation: 2 });
    expect(await flow.done()).toMatchObject({ sent: 6000, received: 6000, lost: 0 });
    // The counters continued across the change of owner and the switch.
    expect((await successor.status("edge"))!.nfs[2]!.counters.packets).toBe(6300n);

    const programs = (await successor.status("edge"))!.nfs.map((nf) => nf.programId);
    await successor.remove("edge");
    expect(s.bpffs.listPinned()).toEqual([]);
    expect(() => linkById(linkId)).toThrow();
    expect((await s.pingB(2)).received).toBe(2);
    await expect
      .poll(() => programs.filter((id) => listIds("prog").includes(id)), { timeout: 3000 })
      .toEqual([]);
  });

  test("interfaces follow the spec: a new one is attached before the switch, a dropped one detached", async () => {
    const s = await setup();
    // A second veth pair between the same namespaces, on 10.77.1.0/24.
    const ifA2 = `${s.net.a.ifname.slice(0, -1)}c`;
    const ifB2 = `${s.net.b.ifname.slice(0, -1)}d`;
    await run("ip", [
      "-n",
      s.net.a.ns.name,
      "link",
      "add",
      ifA2,
      "type",
      "veth",
      "peer",
      "name",
      ifB2,
      "netns",
      s.net.b.ns.name,
    ]);
    await run(
      "ip",
      ["-n", s.net.a.ns.name, "-batch", "-"],
      `addr add 10.77.1.1/24 dev ${ifA2}\nlink set ${ifA2} up\n`,
    );
    await run(
      "ip",
      ["-n", s.net.b.ns.name, "-batch", "-"],
      `addr add 10.77.1.2/24 dev ${ifB2}\nlink set ${ifB2} up\n`,
    );
    const ping2 = async () => (await ping(s.net.a.ns, "10.77.1.2", 2, { timeoutMs: 300 })).received;
    expect(await ping2()).toBe(2);
    await s.manager.apply(threeNfChain(s, "r1"));

    const both = await s.manager.apply(threeNfChain(s, "r2", { interfaces: [s.net.b.ifname, ifB2] }));
    expect(both).toMatchObject({
      action: "interfaces-updated",
      interfaces: { attached: [ifB2], detached: [] },
    });
    expect(await ping2()).toBe(0);
    expect((await s.pingB(2)).received).toBe(0);

    const onlySecond = await s.manager.apply(threeNfChain(s, "r3", { interfaces: [ifB2] }, 50_000));
    expect(onlySecond).toMatchObject({
      action: "switched",
      attachedInterfaces: [ifB2],
      interfaces: { attached: [], detached: [s.net.b.ifname] },
    });
    expect(await ping2()).toBe(0);
    expect((await s.pingB(2)).received).toBe(2);
    expect(s.bpffs.listPinned().filter((p) => p.includes("link_"))).toEqual([`edge/link_${ifB2}`]);
  });

  test("XDP in auto mode falls back to generic where native XDP cannot run (veth MTU above the native limit)", async () => {
    const s = await setup({ mtu: VETH_NATIVE_XDP_MAX_MTU + 500 });
    await expect(s.manager.apply(threeNfChain(s, "r1", { xdpMode: "native" }))).rejects.toThrow(/native XDP/);
    expect(s.bpffs.listPinned()).toEqual([]);

    await s.manager.apply(threeNfChain(s, "r1", { xdpMode: "auto" }));

    expect((await s.manager.status("edge"))!.interfaces[0]!.xdpMode).toBe("generic");
    expect((await s.pingB(2)).received).toBe(0);
    expect(await s.flow(500)).toMatchObject({ received: 500 });
  });

  test("a change of hook moves the chain to the new hook, only once the new NFs load, keeping its maps", async () => {
    const s = await setup();
    await s.manager.apply(threeNfChain(s, "r1"));
    const noTcProgram = threeNfChain(s, "bad", { hook: "tc-ingress" });
    noTcProgram.functions.push({ name: "unchecked", objectPath: rejectObject });

    await expect(s.manager.apply(noTcProgram)).rejects.toThrow(NfContractError);
    await expect(s.manager.apply(noTcProgram)).rejects.toThrow(/unchecked: no sched_cls program/);
    expect(await s.manager.status("edge")).toMatchObject({ hook: "xdp", revision: "r1" });
    expect((await s.pingB(2)).received).toBe(0);

    const moved = await s.manager.apply(threeNfChain(s, "r2", { hook: "tc-ingress" }));

    expect(moved).toMatchObject({
      action: "switched",
      hookChange: { from: "xdp", to: "tc-ingress" },
      recreatedMaps: [],
      interfaces: { attached: [s.net.b.ifname], detached: [s.net.b.ifname] },
    });
    expect(moved.carriedMaps).toEqual(
      expect.arrayContaining([
        { nf: "ratelimit", map: "ratelimit_state" },
        { nf: "flowmon", map: "flowmon_flows" },
      ]),
    );
    expect((await s.manager.status("edge"))!.hook).toBe("tc-ingress");
    expect(withNetns(s.net.b.ns.path, () => xdpQuery(s.net.b.ifindex)).mode).toBe("none");
    expect((await s.pingB(2)).received).toBe(0);
    expect(await s.flow(500)).toMatchObject({ received: 500 });
  });

  test("on tcx egress the chain sees what leaves the interface: ping replies are denied, requests pass", async () => {
    const s = await setup();

    await s.manager.apply(threeNfChain(s, "r1", { hook: "tc-egress" }));

    expect((await s.pingB(3)).received).toBe(0);
    const [firewall] = (await s.manager.status("edge"))!.nfs;
    expect(firewall!.counters).toMatchObject({ packets: 3n, drops: 3n });
    expect(await s.flow(300)).toMatchObject({ received: 300 });
    expect((await s.manager.status("edge"))!.nfs[0]!.counters.packets).toBe(3n);
  });
});

describe("the standby revision (the one the last switch replaced, kept loaded)", () => {
  /** UDP from A passes; ping is denied by the firewall. */
  const vectors = (s: Setup): TestVector[] => [
    {
      name: "udp passes",
      packet: { ipv4: { src: s.net.a.ip, dst: s.net.b.ip }, udp: { sport: 1, dport: 2 } },
      expect: { verdict: "pass" },
    },
    {
      name: "ping is denied",
      packet: { ipv4: { src: s.net.a.ip, dst: s.net.b.ip }, icmp: {} },
      expect: { verdict: "drop", counters: { firewall: { drops: 1 } } },
    },
  ];
  const revisionA = (s: Setup, label: string, mode: "linked" | "fused" = "linked") =>
    threeNfChain(s, label, { tests: vectors(s), mode }, 100_000);
  const revisionB = (s: Setup, label: string, mode: "linked" | "fused" = "linked") =>
    threeNfChain(s, label, { tests: vectors(s), mode }, 50_000);
  const stillLoaded = (ids: number[]) => ids.filter((id) => listIds("prog").includes(id));

  test.each(["linked", "fused"] as const)(
    "%s: a switch back to the revision just replaced loads nothing: its programs return, its self-test runs, counters and flows continue",
    async (mode) => {
      const s = await setup();
      const a = await s.manager.apply(revisionA(s, "r1", mode));
      expect(await s.flow(300)).toMatchObject({ received: 300 });
      const b = await s.manager.apply(revisionB(s, "r2", mode));
      expect(b).toMatchObject({ action: "switched", mode });
      expect(b.fromStandby).toBeUndefined();
      expect((await s.manager.status("edge"))!.standby).toEqual({
        revision: "r1",
        programIds: a.programIds.slice(1),
      });
      expect(await s.flow(300)).toMatchObject({ received: 300 });

      const backToA = await s.manager.apply(revisionA(s, "r3", mode));

      expect(backToA).toMatchObject({
        action: "switched",
        revision: "r3",
        fromStandby: true,
        recreatedMaps: [],
      });
      expect(backToA.programIds).toEqual(a.programIds);
      expect(backToA.generation).toBeGreaterThan(b.generation);
      expect(backToA.selfTest).toMatchObject({ passed: 2, failed: 0 });
      expect(backToA.carriedMaps).toEqual(
        expect.arrayContaining([
          { nf: "ratelimit", map: "ratelimit_state" },
          { nf: "flowmon", map: "flowmon_flows" },
        ]),
      );
      const status = (await s.manager.status("edge"))!;
      expect(status).toMatchObject({ revision: "r3", generation: backToA.generation });
      expect(status.standby).toEqual({ revision: "r2", programIds: b.programIds.slice(1) });
      // The revision runs as it ran: tables (ping denied), the chain's counters and flows.
      expect((await s.pingB(2)).received).toBe(0);
      expect(await s.flow(300)).toMatchObject({ received: 300 });
      expect((await s.manager.status("edge"))!.nfs[2]!.counters.packets).toBe(900n);
      const flows = await s.manager.readTable("edge", "flowmon", "flowmon_flows");
      expect(flows.length).toBeGreaterThan(0);
      // Exactly one revision is pinned, as after any switch.
      const revs = new Set(
        s.bpffs
          .listPinned()
          .filter((p) => p.startsWith("edge/rev/"))
          .map((p) => p.split("/")[2]),
      );
      expect([...revs]).toEqual([String(backToA.generation)]);

      // And forth again: the revision of r2 returns.
      const backToB = await s.manager.apply(revisionB(s, "r4", mode));
      expect(backToB).toMatchObject({ fromStandby: true, programIds: b.programIds });
      expect(await s.flow(300)).toMatchObject({ received: 300 });
      expect((await s.manager.status("edge"))!.nfs[2]!.counters.packets).toBe(1200n);
    },
  );

  test("a self-test failure of the standby leaves the live revision and the standby as they were", async () => {
    const s = await setup();
    const a = await s.manager.apply(revisionA(s, "r1"));
    await s.manager.apply(revisionB(s, "r2"));
    const wrong = revisionA(s, "bad");
    wrong.tests = [{ ...vectors(s)[1]!, expect: { verdict: "pass" } }];

    await expect(s.manager.apply(wrong)).rejects.toThrow(SelfTestError);

    expect(await s.manager.status("edge")).toMatchObject({ revision: "r2", standby: { revision: "r1" } });
    expect(await s.flow(300)).toMatchObject({ received: 300 });
    expect(await s.manager.apply(revisionA(s, "r3"))).toMatchObject({
      fromStandby: true,
      programIds: a.programIds,
    });
  });

  test("a map recreated since (its definition changed) rules the standby out: the revision is loaded again", async () => {
    const s = await setup();
    const spec = (revision: string, counterObject: string): ChainSpec => ({
      name: "carry",
      revision,
      hook: "xdp",
      interfaces: [s.net.b.ifname],
      functions: [
        { name: "counter", objectPath: counterObject },
        builtinNf(objects, { builtin: "ratelimit", parameters: { rate: 1000, burst: 1_000_000 } }),
      ],
    });
    const a = await s.manager.apply(spec("r1", counterV1));
    const b = await s.manager.apply(spec("r2", counterV2));
    expect(b.recreatedMaps).toEqual([
      { nf: "counter", map: "counter_hits", reason: "definition changed: max entries 4 -> 8" },
    ]);
    expect((await s.manager.status("carry"))!.standby?.revision).toBe("r1");

    const again = await s.manager.apply(spec("r3", counterV1));

    expect(again.fromStandby).toBeUndefined();
    expect(again.recreatedMaps).toEqual([
      { nf: "counter", map: "counter_hits", reason: "definition changed: max entries 8 -> 4" },
    ]);
    expect(again.programIds[1]).not.toBe(a.programIds[1]);
    // The ruled-out standby is gone; the revision it replaced is the standby now.
    expect((await s.manager.status("carry"))!.standby?.revision).toBe("r2");
    await expect.poll(() => stillLoaded([a.programIds[1]!]), { timeout: 3000 }).toEqual([]);
    expect(await s.flow(300)).toMatchObject({ received: 300 });
    const hits = (await s.manager.readTable("carry", "counter", "counter_hits"))[0]!.value.readBigUInt64LE(0);
    expect(hits).toBe(300n);
  });

  test("removing the chain releases the standby: no program of any revision is left", async () => {
    const s = await setup();
    const a = await s.manager.apply(revisionA(s, "r1"));
    const b = await s.manager.apply(revisionB(s, "r2"));
    const programs = [...new Set([...a.programIds, ...b.programIds])];
    expect(stillLoaded(programs)).toEqual(programs);

    await s.manager.remove("edge");

    expect(s.bpffs.listPinned()).toEqual([]);
    await expect.poll(() => stillLoaded(programs), { timeout: 3000 }).toEqual([]);
  });

  test("nothing of the standby is pinned: a new manager adopts the live revision alone, the standby's programs die with the old one, and the adopted revision serves as standby once replaced", async () => {
    const s = await setup();
    const a = await s.manager.apply(revisionA(s, "r1"));
    const b = await s.manager.apply(revisionB(s, "r2"));
    const flow = await s.startFlow(6000);
    await s.manager.close();

    // The last NF (flowmon, unchanged) is one program in both revisions.
    const standbyOnly = a.programIds.slice(1).filter((id) => !b.programIds.includes(id));
    expect(standbyOnly.length).toBe(2);
    await expect.poll(() => stillLoaded(standbyOnly), { timeout: 3000 }).toEqual([]);
    const successor = await s.startManager();
    expect(await successor.adopt()).toEqual([
      expect.objectContaining({ name: "edge", outcome: "adopted", revision: "r2", repairs: [] }),
    ]);
    expect((await successor.status("edge"))!.standby).toBeUndefined();

    const backToA = await successor.apply(revisionA(s, "r3"));
    expect(backToA.fromStandby).toBeUndefined();
    expect(await successor.apply(revisionB(s, "r4"))).toMatchObject({
      fromStandby: true,
      programIds: b.programIds,
    });
    expect(await flow.done()).toMatchObject({ sent: 6000, received: 6000, lost: 0 });
  });

  test("with keepStandby off a switch releases the revision it replaced and a switch back loads it again", async () => {
    const s = await setup();
    const manager = await startChartManager({
      root: s.bpffs.path,
      netns: s.net.b.ns.path,
      rootObjectPath: objects.root,
      keepStandby: false,
    });
    try {
      await s.manager.close();
      await manager.adopt();
      const a = await manager.apply(revisionA(s, "r1"));
      await manager.apply(revisionB(s, "r2"));
      expect((await manager.status("edge"))!.standby).toBeUndefined();
      const replaced = a.programIds.slice(1, 3);
      await expect.poll(() => stillLoaded(replaced), { timeout: 3000 }).toEqual([]);
      const again = await manager.apply(revisionA(s, "r3"));
      expect(again.fromStandby).toBeUndefined();
      expect(again.programIds.slice(1, 3)).not.toEqual(replaced);
      await manager.remove("edge");
    } finally {
      await manager.close();
    }
  });
});
