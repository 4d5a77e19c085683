/**
 * The chain manager with exactly the capabilities the Helm chart gives the agent (CAP_BPF,
 * CAP_PERFMON, CAP_NET_ADMIN), started inside the node's network namespace as a hostNetwork pod
 * is: every thread of its process has those three and nothing more, and the switches users make
 * every day go live, with traffic flowing and state carried, also across a restart.
 */
import { beforeAll, describe, expect, test } from "vitest";
import type { ChainSpec } from "../../node-agent/src/chain/index.ts";
import { compile } from "../../node-agent/src/compile/index.ts";
import { decodeFlowEntry } from "../../node-agent/src/nf/index.ts";
import { CHART_AGENT_CAP_MASK } from "../support/sluice.ts";
import { chartManagerStarter, createChainBed, useBuiltinObjects } from "./chain-testbed.ts";
import { builtinChain } from "./fixtures/chains.ts";
import { fixture } from "./harness.ts";
import { startUdpFlow, udpFlow } from "./traffic.ts";

const objects = useBuiltinObjects();
let coreProbeObject = "";

beforeAll(async () => {
  coreProbeObject = (
    await compile({ sourceRoot: fixture("nf"), entry: "core-probe.bpf.c", cacheDir: objects.cacheDir })
  ).objectPath;
});

/** A chain bed with no manager yet: each test starts the managers it needs. */
async function setup() {
  const { scope, net, bpffs } = await createChainBed();
  const startManager = chartManagerStarter(scope, net.b.ns, bpffs, objects);
  const flowOptions = { from: { ns: net.a.ns.name, ip: net.a.ip }, to: { ns: net.b.ns.name, ip: net.b.ip } };
  return {
    net,
    bpffs,
    startManager,
    startFlow: (count: number) => startUdpFlow({ ...flowOptions, count, rate: 10_000 }),
    flow: (count: number) => udpFlow({ ...flowOptions, count, rate: 20_000 }),
  };
}

/** ratelimit (never limiting this flow, at any of the rates used) -> flowmon, on native XDP. */
function edgeChain(net: { b: { ifname: string } }, revision: string, rate: number): ChainSpec {
  return builtinChain(objects, {
    name: "edge",
    revision,
    hook: "xdp",
    xdpMode: "native",
    interfaces: [net.b.ifname],
    functions: [{ builtin: "ratelimit", parameters: { rate, burst: 1_000_000 } }, { builtin: "flowmon" }],
  });
}

describe("the chain manager with the chart agent's capabilities", () => {
  test("every thread of the manager's process has exactly CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN, also after loading and switching", async () => {
    const s = await setup();
    const manager = await s.startManager();
    const hex = (caps: bigint[]) => caps.map((c) => `0x${c.toString(16)}`);
    const chart = `0x${CHART_AGENT_CAP_MASK.toString(16)}`;
    expect(hex(manager.threadCaps())).toEqual(manager.threadCaps().map(() => chart));

    await manager.apply(edgeChain(s.net, "r1", 100_000));
    await manager.apply(edgeChain(s.net, "r2", 200_000));

    // libbpf verifies programs on worker threads: those run with the chart's set too.
    const caps = manager.threadCaps();
    expect(caps.length).toBeGreaterThan(1);
    expect(hex(caps)).toEqual(caps.map(() => chart));
    expect(await s.flow(300)).toMatchObject({ sent: 300, received: 300 });
  });

  test("a change of only the first NF goes live with no packet lost and state carried, and again after a restart that adopts the chain", async () => {
    const s = await setup();
    const first = await s.startManager();
    const created = await first.apply(edgeChain(s.net, "r1", 100_000));
    const before = await s.flow(500);
    expect(before).toMatchObject({ sent: 500, received: 500 });

    const during2 = await s.startFlow(10_000);
    const second = await first.apply(edgeChain(s.net, "r2", 200_000));
    expect(second).toMatchObject({ action: "switched", revision: "r2", generation: 2 });
    expect(second.carriedMaps).toEqual(
      expect.arrayContaining([
        { nf: "ratelimit", map: "ratelimit_state" },
        { nf: "flowmon", map: "flowmon_flows" },
      ]),
    );
    // The unchanged last NF is taken over, not loaded again.
    expect(second.programIds.at(-1)).toBe(created.programIds.at(-1));
    const flow2 = await during2.done();
    expect(flow2).toMatchObject({ lost: 0, receiverDrops: 0 });

    // A restart: the agent's process ends; a new one adopts the chain from its pins.
    await first.close();
    const restarted = await s.startManager();
    expect(await restarted.adopt()).toEqual([
      expect.objectContaining({ name: "edge", outcome: "adopted", revision: "r2", repairs: [] }),
    ]);
    const during3 = await s.startFlow(10_000);
    const third = await restarted.apply(edgeChain(s.net, "r3", 300_000));
    expect(third).toMatchObject({ action: "switched", revision: "r3", generation: 3 });
    // Taken over again, by its pin: the new process never held its fd.
    expect(third.programIds.at(-1)).toBe(second.programIds.at(-1));
    const flow3 = await during3.done();
    expect(flow3).toMatchObject({ lost: 0, receiverDrops: 0 });

    // Counters and flow records continued through both switches and the restart.
    const sent = before.sent + flow2.sent + flow3.sent;
    const status = (await restarted.status("edge"))!;
    expect(status.revision).toBe("r3");
    expect(status.rootMisses.packets).toBe(0n);
    expect(status.nfs.map((nf) => [nf.name, nf.counters.packets, nf.counters.drops])).toEqual([
      ["ratelimit", BigInt(sent), 0n],
      ["flowmon", BigInt(sent), 0n],
    ]);
    const flows = (await restarted.readTable("edge", "flowmon", "flowmon_flows")).map(({ key, value }) =>
      decodeFlowEntry(key, value),
    );
    expect(flows.reduce((sum, f) => sum + f.packets, 0)).toBe(sent);

    await restarted.remove("edge");
    expect(s.bpffs.listPinned()).toEqual([]);
  });

  test("an NF that asks CO-RE about a type the kernel lacks loads and runs (libbpf does not search module BTF by id)", async () => {
    const s = await setup();
    const manager = await s.startManager();

    const result = await manager.apply({
      name: "probe",
      revision: "r1",
      hook: "xdp",
      interfaces: [s.net.b.ifname],
      functions: [{ name: "core-probe", objectPath: coreProbeObject }],
      tests: [
        {
          name: "the type is missing: packets pass",
          packet: { ipv4: { src: s.net.a.ip, dst: s.net.b.ip }, udp: { sport: 1, dport: 2 } },
          expect: { verdict: "pass" },
        },
      ],
    });

    expect(result).toMatchObject({ action: "created", selfTest: { passed: 1, failed: 0 } });
    expect(await s.flow(300)).toMatchObject({ sent: 300, received: 300 });
  });
});
