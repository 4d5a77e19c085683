/**
 * A change of a chain's hook (XDP to tcx ingress and back) while traffic runs, with the chain
 * manager as the Helm chart runs the agent: the new hook's chain is built, self-tested and
 * attached before the old hook's is detached, so that no packet of a denied port gets through
 * at any moment, no allowed packet is lost, and the NFs' maps and counters carry over.
 *
 * While both hooks are attached (between attaching the new one and detaching the old one) a
 * received packet runs through the XDP chain and then, if that passed it, through the tcx
 * chain: it is dropped if either drops it, and counted by both. The test measures how many
 * packets that was (`processed twice` in its output).
 */
import { beforeAll, describe, expect, test } from "vitest";
import type { ChainSpec, Hook } from "../../node-agent/src/chain/index.ts";
import { xdpQuery } from "../../node-agent/src/libbpf/index.ts";
import { withNetns } from "../../node-agent/src/netns/index.ts";
import { decodeFlowEntry } from "../../node-agent/src/nf/index.ts";
import { createChainTestbed, useBuiltinObjects } from "./chain-testbed.ts";
import { builtinChain } from "./fixtures/chains.ts";
import { compile } from "../../node-agent/src/compile/index.ts";
import { fixture } from "./harness.ts";
import { ping, startUdpFlow, udpFlow } from "./traffic.ts";

const objects = useBuiltinObjects();
let counterV1 = "";
let counterV2 = "";
let counterWithGlobal = "";

beforeAll(async () => {
  const counter = async (slots: number) =>
    (
      await compile({
        sourceRoot: fixture("nf"),
        entry: "counter.bpf.c",
        cacheDir: objects.cacheDir,
        defines: { COUNTER_SLOTS: slots },
      })
    ).objectPath;
  counterV1 = await counter(4);
  counterV2 = await counter(8);
  counterWithGlobal = (
    await compile({
      sourceRoot: fixture("nf"),
      entry: "counter.bpf.c",
      cacheDir: objects.cacheDir,
      defines: { COUNTER_SLOTS: 4, COUNTER_GLOBAL: true },
    })
  ).objectPath;
});

/** The UDP port the firewall denies. */
const DENIED_PORT = 7777;

async function setup() {
  const { net, bpffs, manager } = await createChainTestbed(objects);
  const flowOptions = { from: { ns: net.a.ns.name, ip: net.a.ip }, to: { ns: net.b.ns.name, ip: net.b.ip } };
  return {
    net,
    bpffs,
    manager,
    flow: (count: number) => udpFlow({ ...flowOptions, count, rate: 10_000 }),
    startFlow: (count: number, rate: number, port?: number) =>
      startUdpFlow({ ...flowOptions, count, rate, ...(port ? { port } : {}) }),
  };
}

/** firewall (denying UDP to DENIED_PORT) -> ratelimit (never limiting here) -> flowmon. */
function guardChain(ifname: string, revision: string, hook: Hook, mode: "linked" | "fused"): ChainSpec {
  return builtinChain(objects, {
    name: "guard",
    revision,
    hook,
    mode,
    ...(hook === "xdp" ? { xdpMode: "native" as const } : {}),
    interfaces: [ifname],
    functions: [
      { builtin: "firewall", tables: { rules: [{ action: "deny", protocol: "udp", dport: DENIED_PORT }] } },
      { builtin: "ratelimit", parameters: { rate: 1_000_000, burst: 1_000_000 } },
      { builtin: "flowmon" },
    ],
  });
}

describe("a change of a chain's hook under traffic", () => {
  test.each(["linked", "fused"] as const)(
    "%s: xdp -> tcx ingress -> xdp: no denied packet gets through, no allowed packet is lost, maps and counters carry over",
    async (mode) => {
      const s = await setup();
      const ifname = s.net.b.ifname;
      const created = await s.manager.apply(guardChain(ifname, "r1", "xdp", mode));
      expect(created).toMatchObject({ action: "created", generation: 1, mode });

      // A flow before any change: flowmon's record of it must come through both changes as it is.
      const before = await s.flow(500);
      expect(before).toMatchObject({ sent: 500, received: 500 });
      const flowsOf = async () =>
        (await s.manager.readTable("guard", "flowmon", "flowmon_flows")).map(({ key, value }) =>
          decodeFlowEntry(key, value),
        );
      const [beforeRecord] = await flowsOf();
      expect(beforeRecord).toMatchObject({ packets: 500 });
      const ratelimitKeys = (await s.manager.readTable("guard", "ratelimit", "ratelimit_state")).map((e) =>
        e.key.toString("hex"),
      );
      expect(ratelimitKeys.length).toBeGreaterThan(0);

      let sent = before.sent;
      let generation = created.generation;
      for (const [revision, hook] of [
        ["r2", "tc-ingress"],
        ["r3", "xdp"],
      ] as const) {
        const counted = (await s.manager.status("guard"))!.nfs[0]!.counters.packets;
        const allowed = await s.startFlow(20_000, 10_000);
        const denied = await s.startFlow(10_000, 5_000, DENIED_PORT);
        await new Promise((resolve) => setTimeout(resolve, 300));

        const changed = await s.manager.apply(guardChain(ifname, revision, hook, mode));

        const [allowedResult, deniedResult] = await Promise.all([allowed.done(), denied.done()]);
        // Not one packet of the denied port passed unfiltered, before, during or after the change.
        expect(deniedResult.sent).toBe(10_000);
        expect(deniedResult.received).toBe(0);
        // The allowed flow lost nothing.
        expect(allowedResult).toMatchObject({ sent: 20_000, lost: 0, receiverDrops: 0 });
        expect(changed).toMatchObject({
          action: "switched",
          revision,
          generation: generation + 1,
          attachedInterfaces: [ifname],
          recreatedMaps: [],
          hookChange: { from: hook === "xdp" ? "tc-ingress" : "xdp", to: hook },
          mode,
        });
        generation = changed.generation;
        expect(changed.carriedMaps).toEqual(
          expect.arrayContaining([
            { nf: "ratelimit", map: "ratelimit_state" },
            { nf: "flowmon", map: "flowmon_flows" },
          ]),
        );
        sent += allowedResult.sent + deniedResult.sent;

        const status = (await s.manager.status("guard"))!;
        expect(status).toMatchObject({ hook, revision, generation });
        expect(status.interfaces.map((i) => i.name)).toEqual([ifname]);
        // Only the new hook runs a program now.
        expect(withNetns(s.net.b.ns.path, () => xdpQuery(s.net.b.ifindex)).mode).toBe(
          hook === "xdp" ? "native" : "none",
        );
        // The firewall's counters continued: every packet was counted at least once. A packet
        // that arrived while both hooks were attached was counted by both chains.
        const firewall = status.nfs[0]!.counters;
        expect(firewall.packets).toBeGreaterThanOrEqual(BigInt(sent));
        expect(firewall.drops).toBeGreaterThanOrEqual(BigInt(deniedResult.sent));
        console.log(
          `${hook}: ${Number(firewall.packets - counted) - allowedResult.sent - deniedResult.sent} packets processed twice during the change, both hooks attached for ${((changed.timings.overlapUs ?? 0) / 1000).toFixed(2)} ms, apply ${changed.timings.totalMs.toFixed(1)} ms`,
        );
      }

      // State carried over both changes: the first flow's record is intact, the rate limiter's
      // buckets are the same, and nothing of the old hooks is left pinned.
      const after = await flowsOf();
      expect(
        after.find((f) => f.sport === beforeRecord!.sport && f.dport === beforeRecord!.dport),
      ).toMatchObject({
        packets: 500,
      });
      const ratelimitAfter = (await s.manager.readTable("guard", "ratelimit", "ratelimit_state")).map((e) =>
        e.key.toString("hex"),
      );
      expect(ratelimitAfter).toEqual(expect.arrayContaining(ratelimitKeys));
      expect(
        s.bpffs.listPinned().filter((p) => !p.startsWith("guard/rev/") && !p.startsWith("guard/maps/")),
      ).toEqual([
        `guard/link_${ifname}`,
        "guard/meta",
        "guard/root_array",
        "guard/root_prog",
        "guard/root_stats",
        "guard/scratch",
        "guard/stats",
      ]);
      expect((await s.manager.status("guard"))!.rootMisses.packets).toBe(0n);

      await s.manager.remove("guard");
      expect(s.bpffs.listPinned()).toEqual([]);
    },
  );

  test("a map whose definition changes with the hook starts empty on the new hook, and the result names it and why", async () => {
    const s = await setup();
    const spec = (revision: string, hook: Hook, counterObject: string): ChainSpec => ({
      name: "count",
      revision,
      hook,
      interfaces: [s.net.b.ifname],
      functions: [
        { name: "counter", objectPath: counterObject },
        ...builtinChain(objects, {
          name: "count",
          revision,
          hook,
          interfaces: [s.net.b.ifname],
          functions: [{ builtin: "flowmon" }],
        }).functions,
      ],
    });
    await s.manager.apply(spec("r1", "xdp", counterV1));
    expect(await s.flow(200)).toMatchObject({ received: 200 });

    const moved = await s.manager.apply(spec("r2", "tc-ingress", counterV2));

    expect(moved).toMatchObject({
      action: "switched",
      hookChange: { from: "xdp", to: "tc-ingress" },
      carriedMaps: [{ nf: "flowmon", map: "flowmon_flows" }],
      recreatedMaps: [
        { nf: "counter", map: "counter_hits", reason: "definition changed: max entries 4 -> 8" },
      ],
    });
    const hits = await s.manager.readTable("count", "counter", "counter_hits");
    expect(hits[0]!.value.readBigUInt64LE(0)).toBe(0n);
    const flows = await s.manager.readTable("count", "flowmon", "flowmon_flows");
    expect(flows.map(({ key, value }) => decodeFlowEntry(key, value).packets)).toEqual([200]);
  });

  test("an NF's writable globals cannot carry over: the result names them and why, its maps carry over", async () => {
    const s = await setup();
    const spec = (revision: string, hook: Hook): ChainSpec => ({
      name: "globals",
      revision,
      hook,
      interfaces: [s.net.b.ifname],
      functions: [{ name: "counter", objectPath: counterWithGlobal }],
    });
    const created = await s.manager.apply(spec("r1", "xdp"));
    expect(created.recreatedMaps).toEqual([]);

    const moved = await s.manager.apply(spec("r2", "tc-ingress"));

    expect(moved.carriedMaps).toEqual([{ nf: "counter", map: "counter_hits" }]);
    expect(moved.recreatedMaps).toEqual([
      {
        nf: "counter",
        map: expect.stringMatching(/\.bss$/),
        reason: expect.stringMatching(/^writable globals \(\.data\/\.bss\) start from their initial values/),
      },
    ]);
  });

  test("tcx ingress -> tcx egress under ping: a firewall denying ICMP answers no ping at any moment, UDP loses nothing", async () => {
    const s = await setup();
    const ifname = s.net.b.ifname;
    const denyPing = (revision: string, hook: Hook): ChainSpec =>
      builtinChain(objects, {
        name: "icmp",
        revision,
        hook,
        interfaces: [ifname],
        functions: [
          { builtin: "firewall", tables: { rules: [{ action: "deny", protocol: "icmp" }] } },
          { builtin: "flowmon" },
        ],
      });
    await s.manager.apply(denyPing("r1", "tc-ingress"));
    const pingB = (count: number) => ping(s.net.a.ns, s.net.b.ip, count, { intervalMs: 1, timeoutMs: 10 });
    expect((await pingB(3)).received).toBe(0);

    // Requests are dropped on the way in before the change, replies on the way out after it.
    const udp = await s.startFlow(10_000, 10_000);
    const pings = pingB(150);
    await new Promise((resolve) => setTimeout(resolve, 200));
    const moved = await s.manager.apply(denyPing("r2", "tc-egress"));
    const [pinged, flowed] = await Promise.all([pings, udp.done()]);

    expect(pinged).toMatchObject({ sent: 150, received: 0 });
    expect(flowed).toMatchObject({ sent: 10_000, lost: 0, receiverDrops: 0 });
    expect(moved).toMatchObject({ action: "switched", hookChange: { from: "tc-ingress", to: "tc-egress" } });
    expect((await s.manager.status("icmp"))!.hook).toBe("tc-egress");
    expect((await pingB(3)).received).toBe(0);
    // flowmon's record of the UDP flow, made on ingress, carried over to the egress chain.
    const flows = (await s.manager.readTable("icmp", "flowmon", "flowmon_flows")).map(({ key, value }) =>
      decodeFlowEntry(key, value),
    );
    expect(flows.find((f) => f.proto === 17)?.packets).toBeGreaterThan(0);
  });
});
