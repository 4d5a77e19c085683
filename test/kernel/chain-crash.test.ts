/**
 * Crash safety: the process that owns a chain is killed with SIGKILL in the middle of switches
 * (at every step of a switch, and at random times) while traffic flows. No packet is lost, the
 * next process adopts the chain and cleans up what the dead one left half done, state carries
 * over, and after removal nothing is left in bpffs or in the kernel. Every process that owns the
 * chain runs as the chart runs the agent: in the node's namespace, with exactly CAP_BPF,
 * CAP_PERFMON and CAP_NET_ADMIN; adopting a chain and taking its programs over needs no more.
 */
import { spawn } from "node:child_process";
import { readdirSync, readlinkSync } from "node:fs";
import { basename, join } from "node:path";
import { createInterface } from "node:readline";
import { setTimeout as sleep } from "node:timers/promises";
import { beforeAll, describe, expect, test } from "vitest";
import type { AdoptedChain, SwitchPhase } from "../../node-agent/src/chain/index.ts";
import { compile } from "../../node-agent/src/compile/index.ts";
import { linkById, listIds, type ObjectKind } from "../../node-agent/src/libbpf/byid.ts";
import { BpfLink, BpfMap, BpfProgram, xdpQuery } from "../../node-agent/src/libbpf/index.ts";
import { withNetns } from "../../node-agent/src/netns/index.ts";
import { decodeRatelimitEntry } from "../../node-agent/src/nf/index.ts";
import { asChartAgent, CHART_AGENT_CAP_MASK } from "../support/sluice.ts";
import { createChainBed, useBuiltinObjects, type ChainBed } from "./chain-testbed.ts";
import { startChartManager } from "./chart-manager.ts";
import type { DriverConfig } from "./fixtures/chain-driver.ts";
import { CRASH_RATE, crashChain } from "./fixtures/crash-chain.ts";
import { fixture, listPinned, repoRoot } from "./harness.ts";
import { startUdpFlow, type UdpFlowResult } from "./traffic.ts";

const objects = useBuiltinObjects();
let counterObject = "";

beforeAll(async () => {
  counterObject = (
    await compile({ sourceRoot: fixture("nf"), entry: "counter.bpf.c", cacheDir: objects.cacheDir })
  ).objectPath;
});

interface DriverRun {
  /** Every JSON line the driver printed. */
  lines: Record<string, unknown>[];
  /** How it ended. */
  signal: NodeJS.Signals | null;
}

/**
 * Runs the driver until it kills itself (`crashAt`) or, without it, until it has switched a few
 * times and a random moment later, when the test kills it.
 */
async function runDriver(config: DriverConfig, killAfterMs?: number): Promise<DriverRun> {
  const [file, ...args] = asChartAgent(
    [process.execPath, "--import", "tsx", fixture("chain-driver.ts"), JSON.stringify(config)],
    config.netns,
  );
  const child = spawn(file!, args, {
    cwd: repoRoot,
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, SLUICE_LOG_LEVEL: "silent" },
  });
  let stderr = "";
  child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
  const lines: Record<string, unknown>[] = [];
  let switched = 0;
  createInterface({ input: child.stdout }).on("line", (line) => {
    const parsed = JSON.parse(line) as Record<string, unknown>;
    lines.push(parsed);
    if ("switched" in parsed) switched++;
  });
  const exited = new Promise<NodeJS.Signals | null>((resolve) =>
    child.on("exit", (_code, signal) => resolve(signal)),
  );
  const deadline = Date.now() + 30_000;
  if (killAfterMs !== undefined) {
    while (switched < 2 && child.exitCode === null && child.signalCode === null && Date.now() < deadline)
      await sleep(5);
    await sleep(killAfterMs);
    child.kill("SIGKILL");
  }
  const timer = setTimeout(() => child.kill("SIGKILL"), Math.max(0, deadline - Date.now()));
  const signal = await exited;
  clearTimeout(timer);
  if (lines.length === 0) throw new Error(`chain driver printed nothing: ${stderr.trim()}`);
  return { lines, signal };
}

/**
 * Kernel ids of everything pinned below `dir`: `root_prog` and a revision's `nfs/*` are programs,
 * `link_*` links, the rest maps.
 */
function pinnedObjectIds(dir: string): Record<ObjectKind, number[]> {
  const ids: Record<ObjectKind, number[]> = { prog: [], map: [], link: [] };
  for (const rel of listPinned(dir)) {
    const path = join(dir, rel);
    const name = basename(rel);
    const kind: ObjectKind =
      name === "root_prog" || /\/nfs\/[^/]+$/.test(rel) ? "prog" : name.startsWith("link_") ? "link" : "map";
    const handle =
      kind === "prog"
        ? BpfProgram.fromPin(path)
        : kind === "link"
          ? BpfLink.fromPin(path)
          : BpfMap.fromPin(path);
    ids[kind].push(handle.id);
    handle.close();
  }
  return ids;
}

/** BPF objects process `pid` holds fds of. */
function bpfFdsOf(pid: number | "self"): number {
  return readdirSync(`/proc/${pid}/fd`).filter((fd) => {
    try {
      return readlinkSync(`/proc/${pid}/fd/${fd}`).startsWith("anon_inode:bpf");
    } catch {
      return false;
    }
  }).length;
}

/** The driver's config for a chain on B's end of `bed`, on native XDP. */
function driverConfig(
  { net, bpffs }: ChainBed,
  chain: Pick<DriverConfig, "chain"> & Partial<DriverConfig>,
): DriverConfig {
  return {
    root: bpffs.path,
    netns: net.b.ns.path,
    ifname: net.b.ifname,
    hook: "xdp",
    xdpMode: "native",
    objects,
    counterObject,
    src: net.a.ip,
    dst: net.b.ip,
    ...chain,
  };
}

/** Creates chain 0 of `config` with a manager that then closes: its pins stay, as an agent's do. */
async function createFirstRevision(config: DriverConfig): Promise<void> {
  const creator = await startChartManager({
    root: config.root,
    netns: config.netns,
    rootObjectPath: objects.root,
  });
  await creator.apply(crashChain(config, 0));
  await creator.close();
}

/**
 * UDP flows from A to B, back to back until `stop()` (or the bed's scope is disposed).
 * `firstPacketByNs` resolves once the first flow sends, with the time it was seen sending.
 */
function backToBackFlows({ scope, net }: ChainBed) {
  const flows: UdpFlowResult[] = [];
  let on = true;
  let sending: (ns: bigint) => void = () => undefined;
  const firstPacketByNs = new Promise<bigint>((resolve) => (sending = resolve));
  const loop = (async () => {
    while (on) {
      const flow = await startUdpFlow({
        from: { ns: net.a.ns.name, ip: net.a.ip },
        to: { ns: net.b.ns.name, ip: net.b.ip },
        count: 20_000,
        rate: 10_000,
      });
      sending(process.hrtime.bigint());
      flows.push(await flow.done());
    }
  })();
  scope.defer(async () => {
    on = false;
    await loop.catch(() => undefined);
  });
  return {
    flows,
    firstPacketByNs,
    /** Ends the flows after the one running and waits for it; a flow's failure throws here. */
    async stop(): Promise<void> {
      on = false;
      await loop;
    },
  };
}

const PHASES: SwitchPhase[] = ["self-tested", "built", "flipped", "maps-moved", "released"];

describe("crash safety", () => {
  test("SIGKILL at every step of a switch and at random times loses no packet; the next process adopts the chain and nothing leaks", async () => {
    const bed = await createChainBed();
    const { scope, net, bpffs } = bed;
    const bpfFdsBefore = bpfFdsOf("self");
    const config = driverConfig(bed, { chain: "crash" });
    await createFirstRevision(config);

    // Traffic throughout: flows back to back until the crashes are over.
    const startedNs = process.hrtime.bigint();
    const traffic = backToBackFlows(bed);
    const { flows } = traffic;
    const firstPacketByNs = await traffic.firstPacketByNs;

    const adoptions: { after: string; adopted: AdoptedChain[] }[] = [];
    let tookOverByPin = false;
    let standbySwitches = 0;
    let previous = "created";
    const kill = async (run: DriverRun, what: string) => {
      expect(run.signal, `driver ${what}: ${JSON.stringify(run.lines.slice(-3))}`).toBe("SIGKILL");
      expect(run.lines.filter((l) => "switched" in l).length).toBeGreaterThanOrEqual(2);
      if ((PHASES as string[]).includes(what)) expect(run.lines.at(-1)).toMatchObject({ crashing: what });
      // Every thread of the driver, libbpf's workers included, had the chart's capabilities only.
      const first = run.lines.find((l) => "caps" in l)!;
      const caps = first.caps as string[];
      expect(caps.map((c) => BigInt(`0x${c}`))).toEqual(caps.map(() => CHART_AGENT_CAP_MASK));
      // Into a chain other than 4k only the first NF changes: the adopted rate limiter is taken
      // over by its pin (by id would need CAP_SYS_ADMIN), not loaded again.
      expect(first.keptLast).toBe((first.switched as number) % 4 !== 0);
      tookOverByPin ||= first.keptLast === true;
      // A new process has no standby: its first switch builds. Later ones into 4k+3 reuse 4k+1.
      expect(first.fromStandby).toBe(false);
      const switchedLines = run.lines.filter((l) => "switched" in l);
      expect(switchedLines.filter((l) => l.fromStandby)).toEqual(
        switchedLines.filter((l, i) => i > 0 && (l.switched as number) % 4 === 3),
      );
      standbySwitches += switchedLines.filter((l) => l.fromStandby).length;
      const adopted = run.lines.find((l) => "adopted" in l)?.adopted as AdoptedChain[];
      adoptions.push({ after: previous, adopted });
      previous = what;
    };
    for (const phase of PHASES)
      await kill(await runDriver({ ...config, crashAt: { phase, after: 2 } }), phase);
    for (const ms of [37, 113, 251]) await kill(await runDriver(config, ms), `random kill after ${ms} ms`);

    await traffic.stop();

    expect(tookOverByPin).toBe(true);
    // Kills also hit processes that had switched their standby back in: it left nothing behind.
    expect(standbySwitches).toBeGreaterThan(0);

    // Each process found what the one before it left and repaired it.
    const repairsAfter = (what: string) =>
      adoptions.find((a) => a.after === what)!.adopted[0]!.repairs.join("\n");
    expect(adoptions.every((a) => a.adopted.length === 1 && a.adopted[0]!.outcome === "adopted")).toBe(true);
    expect(repairsAfter("built")).toMatch(/removed revision \d+ \(not live/);
    expect(repairsAfter("flipped")).toMatch(/removed revision \d+ \(not live/);
    expect(repairsAfter("flipped")).toMatch(
      /moved map counter\/counter_hits of the live revision into place/,
    );
    expect(repairsAfter("maps-moved")).toMatch(/removed revision \d+ \(not live/);

    // This process adopts the chain last: exactly one revision and its maps are pinned.
    const manager = await startChartManager({
      root: bpffs.path,
      netns: net.b.ns.path,
      rootObjectPath: objects.root,
      scope,
    });
    const [chain] = await manager.adopt();
    expect(chain).toMatchObject({ name: "crash", outcome: "adopted", interfaces: [net.b.ifname] });
    const liveGeneration = chain!.generation;
    const counterHead = Number(chain!.revision.slice(1)) % 2 === 0;
    const headMaps = counterHead ? ["crash/maps/counter/counter_hits"] : [];
    expect(bpffs.listPinned()).toEqual(
      [
        `crash/link_${net.b.ifname}`,
        ...headMaps,
        "crash/maps/ratelimit/ratelimit_state",
        "crash/meta",
        `crash/rev/${liveGeneration}/meta`,
        `crash/rev/${liveGeneration}/nfs/${counterHead ? "counter" : "noop"}`,
        `crash/rev/${liveGeneration}/nfs/ratelimit`,
        `crash/rev/${liveGeneration}/progs`,
        "crash/root_array",
        "crash/root_prog",
        "crash/root_stats",
        "crash/scratch",
        "crash/stats",
      ].sort(),
    );

    // No packet lost, and state carried over every crash.
    const sent = flows.reduce((sum, f) => sum + f.sent, 0);
    expect(flows.length).toBeGreaterThan(0);
    expect(flows.map((f) => [f.lost, f.receiverDrops])).toEqual(flows.map(() => [0, 0]));
    const status = (await manager.status("crash"))!;
    expect(status.rootMisses.packets).toBe(0n);
    expect(status.nfs.at(-1)).toMatchObject({ name: "ratelimit" });
    expect(status.nfs.at(-1)!.counters).toMatchObject({
      packets: BigInt(sent),
      passes: BigInt(sent),
      errors: 0n,
    });
    const [bucket] = await manager.readTable("crash", "ratelimit", "ratelimit_state");
    const firstArrivalNs =
      decodeRatelimitEntry(bucket!.key, bucket!.value).tatNs - BigInt(sent) * BigInt(1e9 / CRASH_RATE);
    expect(firstArrivalNs).toBeGreaterThanOrEqual(startedNs - 20_000_000n);
    expect(firstArrivalNs).toBeLessThanOrEqual(firstPacketByNs + 50_000_000n);

    // Removal leaves nothing pinned, nothing attached, and nothing of the chain in the kernel:
    // every revision's programs hold the chain's stats map, so once it and the other pinned
    // objects are gone, no program of any revision (built by any of the killed processes) lives.
    const chainObjects = pinnedObjectIds(bpffs.path);
    expect(chainObjects.map.length).toBeGreaterThanOrEqual(7);
    await manager.remove("crash");
    expect(bpffs.listPinned()).toEqual([]);
    expect(withNetns(net.b.ns.path, () => xdpQuery(net.b.ifindex)).mode).toBe("none");
    await expect
      .poll(
        () => ({
          prog: chainObjects.prog.filter((id) => listIds("prog").includes(id)),
          map: chainObjects.map.filter((id) => listIds("map").includes(id)),
          link: chainObjects.link.filter((id) => listIds("link").includes(id)),
        }),
        { timeout: 5000, interval: 100 },
      )
      .toEqual({ prog: [], map: [], link: [] });
    // Neither the manager nor this process holds anything of the removed chain.
    expect(bpfFdsOf(manager.pid)).toBe(0);
    await manager.close();
    expect(bpfFdsOf("self")).toBe(bpfFdsBefore);
  });

  test("SIGKILL at every step of a change of hook (tcx ingress to XDP) loses no packet; the next process undoes or completes the change and leaves one hook attached", async () => {
    const bed = await createChainBed();
    const { scope, net, bpffs } = bed;
    // Even-numbered chains run on native XDP, odd-numbered ones on tcx ingress: every switch
    // changes the hook, and the driver crashes in changes from tcx ingress to XDP.
    const config = driverConfig(bed, { chain: "hop", alternateHook: "tc-ingress" });
    await createFirstRevision(config);

    const traffic = backToBackFlows(bed);
    const { flows } = traffic;

    const repairsAfter = new Map<string, string>();
    let previous = "created";
    for (const phase of PHASES) {
      const run = await runDriver({ ...config, crashAt: { phase, after: 0 } });
      expect(run.signal, JSON.stringify(run.lines.slice(-3))).toBe("SIGKILL");
      expect(run.lines.at(-1)).toMatchObject({ crashing: phase });
      const adopted = run.lines.find((l) => "adopted" in l)?.adopted as AdoptedChain[];
      expect(adopted).toEqual([expect.objectContaining({ name: "hop", outcome: "adopted" })]);
      repairsAfter.set(previous, adopted[0]!.repairs.join("\n"));
      previous = phase;
    }
    const manager = await startChartManager({
      root: bpffs.path,
      netns: net.b.ns.path,
      rootObjectPath: objects.root,
      scope,
    });
    const [chain] = await manager.adopt();
    repairsAfter.set(previous, chain!.repairs.join("\n"));
    await traffic.stop();

    // Killed with both hooks attached, before the commit: the next process undoes the change.
    expect(repairsAfter.get("built")).toMatch(
      /undid the interrupted change of hook to xdp: the chain stays on tc-ingress/,
    );
    // Killed after the commit, before the new hook's pins were in place: it completes it.
    expect(repairsAfter.get("flipped")).toMatch(/completed the interrupted change of hook to xdp/);

    // One hook runs the chain, the one its live revision was built for, on one link.
    const hook = Number(chain!.revision.slice(1)) % 2 === 0 ? "xdp" : "tc-ingress";
    expect(chain).toMatchObject({ outcome: "adopted", hook, interfaces: [net.b.ifname] });
    expect(withNetns(net.b.ns.path, () => xdpQuery(net.b.ifindex)).mode).toBe(
      hook === "xdp" ? "native" : "none",
    );
    const linksOnInterface = listIds("link").filter((id) => {
      const link = linkById(id);
      try {
        return link.info().ifindex === net.b.ifindex;
      } finally {
        link.close();
      }
    });
    expect(linksOnInterface).toHaveLength(1);
    expect(bpffs.listPinned().filter((p) => !p.startsWith("hop/rev/") && !p.startsWith("hop/maps/"))).toEqual(
      [
        `hop/link_${net.b.ifname}`,
        "hop/meta",
        "hop/root_array",
        "hop/root_prog",
        "hop/root_stats",
        "hop/scratch",
        "hop/stats",
      ],
    );

    // No packet lost through every crash; every packet reached the rate limiter at least once.
    const sent = flows.reduce((sum, f) => sum + f.sent, 0);
    expect(flows.length).toBeGreaterThan(0);
    expect(flows.map((f) => [f.lost, f.receiverDrops])).toEqual(flows.map(() => [0, 0]));
    const status = (await manager.status("hop"))!;
    expect(status.rootMisses.packets).toBe(0n);
    expect(status.nfs.at(-1)!.counters.packets).toBeGreaterThanOrEqual(BigInt(sent));

    await manager.remove("hop");
    expect(bpffs.listPinned()).toEqual([]);
    expect(withNetns(net.b.ns.path, () => xdpQuery(net.b.ifindex)).mode).toBe("none");
  });
});
