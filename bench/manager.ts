/**
 * Switch figures through the chain manager (node-agent/src/chain): the latency of switching a
 * 3-NF chain attached to a veth interface (self-test + load + flip, as `apply` does it), and
 * whole-chain switches under traffic. Every switch is checked: the root's slot 0 must run the
 * new revision's NF 0 when `apply` returns, and traffic sent afterwards must pass the chain.
 */
import { ChainManager, chainPaths, type ApplyResult, type ChainSpec } from "../node-agent/src/chain/index.ts";
import { basename, dirname, join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { fusionSourceOf } from "../node-agent/src/chain/fused.ts";
import { BPF_DIR } from "../node-agent/src/compile/index.ts";
import { listIds } from "../node-agent/src/libbpf/byid.ts";
import { BpfMap, u32 } from "../node-agent/src/libbpf/index.ts";
import type { TestScope, VethNetwork } from "../test/kernel/harness.ts";
import { udpFlow } from "../test/kernel/traffic.ts";
import type { BenchObjects } from "./objects.ts";
import { getBuiltinNf, rodataValues } from "../node-agent/src/nf/index.ts";
import { configuredBuiltin } from "./measure.ts";
import {
  SWITCH_FIREWALL,
  swapFigures,
  switchParts,
  trafficWhileSwitching,
  type SwapFigures,
  type SwapOptions,
} from "./swap.ts";
import { SWITCH_ORDER, SWITCH_VECTORS, switchFigures, type SwitchFigures } from "./switching.ts";
import { since } from "./stats.ts";

/** Revision `k` of chain `name`: consecutive revisions differ, so each apply is a switch. */
export type SpecFactory = (name: string, k: number) => ChainSpec;

/** How the chain manager runs a benchmark chain: one program per NF, or one fused program. */
export type BenchMode = "linked" | "fused";

/** Where built-in NF `name`'s inline contract lives, for a fused chain. */
function fusionOf(name: string) {
  const nf = getBuiltinNf(name);
  if (!nf) throw new Error(`${name} is no built-in NF`);
  return fusionSourceOf(join(BPF_DIR, nf.sourceDir), basename(nf.entry));
}

/**
 * firewall -> ratelimit -> flowmon on B's interface; even and odd revisions differ in one
 * parameter (ratelimit's burst). Fused, the manager generates the chain's program (compiled
 * once, then from the cache: its source does not depend on the parameters).
 */
export function chain3Specs(
  objects: BenchObjects,
  net: VethNetwork,
  mode: BenchMode = "linked",
): SpecFactory {
  return (name, k) => ({
    name,
    revision: `rev-${k}`,
    hook: "xdp",
    interfaces: [net.b.ifname],
    xdpMode: "auto",
    ...(mode === "fused" ? { mode } : {}),
    functions: switchParts(objects, (k % 2) as 0 | 1).map((part, i) => ({
      name: SWITCH_ORDER[i] as string,
      objectPath: part.path,
      programName: part.program,
      rodata: { ...part.rodata },
      tables: { ...part.tables },
      ...(mode === "fused" ? { fusion: fusionOf(SWITCH_ORDER[i] as string) } : {}),
    })),
    tests: SWITCH_VECTORS,
  });
}

/**
 * firewall -> ratelimit -> flowmon on B's interface, every revision one that was never applied
 * before: revision k sets ratelimit's rate and burst to values no other revision has (so that
 * no load of ratelimit, live or self-test, can be one done before) and adds a firewall rule of
 * its own (a table never written before). The firewall's parameters and flowmon have nothing
 * more to vary: what depends on nothing that changed is served as in any switch (the firewall's
 * self-test load and flowmon, the unchanged last NF, are reused), and the firewall of the live
 * revision is loaded anew, as every NF before the last one is.
 */
export function chain3UnseenSpecs(
  objects: BenchObjects,
  net: VethNetwork,
  mode: BenchMode = "linked",
): SpecFactory {
  const alternating = chain3Specs(objects, net, mode);
  return (name, k) => {
    const spec = alternating(name, 0);
    const rl = configuredBuiltin("ratelimit", {
      parameters: { rate: 1_000_000_000 - k, burst: 1_000_000 - k },
    });
    const fw = configuredBuiltin("firewall", {
      ...SWITCH_FIREWALL,
      tables: {
        rules: [...SWITCH_FIREWALL.tables.rules, { action: "deny", protocol: "tcp", dport: 10_000 + k }],
      },
    });
    const [firewall, ratelimit, flowmon] = spec.functions;
    return {
      ...spec,
      revision: `rev-${k}`,
      functions: [
        { ...firewall!, tables: { ...fw.mapContents } },
        { ...ratelimit!, rodata: rodataValues(rl.rodata) },
        flowmon!,
      ],
    };
  };
}

/**
 * Three noop NFs on B's interface, named differently in even and odd revisions (noop has no
 * parameter to change): the manager's own cost of a switch, with almost nothing to verify.
 */
export function noop3Specs(objects: BenchObjects, net: VethNetwork): SpecFactory {
  return (name, k) => {
    const names = [0, 1, 2].map((i) => `noop${k % 2}${i}`);
    return {
      name,
      revision: `rev-${k}`,
      hook: "xdp",
      interfaces: [net.b.ifname],
      xdpMode: "auto",
      functions: names.map((nf) => ({ name: nf, objectPath: objects.noop, programName: "noop_xdp" })),
      tests: [
        {
          name: "udp passes every NF",
          packet: { ipv4: { src: "10.77.0.1", dst: "10.77.0.2" }, udp: { sport: 40000, dport: 5000 } },
          expect: { verdict: "pass", counters: { [names[2] as string]: { packets: 1, passes: 1 } } },
        },
      ],
    };
  };
}

/** A manager for B's namespace under `bpffsRoot`; its chains are removed and its fds closed by `scope`. */
function openManager(
  objects: BenchObjects,
  net: VethNetwork,
  bpffsRoot: string,
  scope: TestScope,
  chains: string[],
  keepStandby = true,
) {
  // Fused programs are compiled into the bench's own compile cache (where its objects are).
  const cacheDir = dirname(objects.root);
  const manager = new ChainManager({
    root: bpffsRoot,
    netns: net.b.ns.path,
    rootObjectPath: objects.root,
    cacheDir,
    keepStandby,
  });
  scope.defer(async () => {
    try {
      for (const name of chains) await manager.remove(name);
    } finally {
      manager.close();
    }
  });
  return manager;
}

/**
 * Reads which program the chain's root runs now (slot 0 of its pinned one-slot array). The
 * handle is closed by `scope` at the latest; close it once the chain is gone, so that it does
 * not keep the last revision's programs alive.
 */
function liveSlot(
  bpffsRoot: string,
  chain: string,
  scope: TestScope,
): { read: () => number; close: () => void } {
  const rootArray = BpfMap.fromPin(chainPaths(bpffsRoot, chain).rootArray);
  scope.defer(() => rootArray.close());
  return { read: () => rootArray.lookup(u32(0))?.readUInt32LE(0) ?? 0, close: () => rootArray.close() };
}

/** What the manager left in the kernel: programs it reported that still exist. */
export interface ManagerLeftovers {
  /**
   * Programs of replaced revisions still loaded after the last switch, beyond the one standby
   * revision the manager keeps (ChainManagerOptions.keepStandby): should be 0.
   */
  stale_programs: number;
  /** Programs of the chain (root, live and standby NFs) still loaded after remove() (should be 0). */
  programs_after_remove: number;
  /** Switches that switched in the chain's standby revision (nothing loaded). */
  from_standby: number;
}

/**
 * Ids among `ids` still loaded, after giving the kernel up to `ms` to free them (a program is
 * freed after an RCU grace period once its last reference is gone).
 */
async function stillLoaded(ids: Iterable<number>, ms = 3000): Promise<number[]> {
  const wanted = new Set(ids);
  const deadline = performance.now() + ms;
  for (;;) {
    const loaded = new Set(listIds("prog"));
    const left = [...wanted].filter((id) => loaded.has(id));
    if (left.length === 0 || performance.now() > deadline) return left;
    await sleep(50);
  }
}

/**
 * Runs `measure` on chain `name`; if it fails, the chain is removed at once, so that the
 * interface is free for the phases after it (the scope would remove it only at the very end).
 */
async function removedOnFailure<T>(
  manager: ChainManager,
  name: string,
  measure: () => Promise<T>,
): Promise<T> {
  try {
    return await measure();
  } catch (err) {
    await manager.remove(name).catch(() => undefined);
    throw err;
  }
}

/** Fails unless `result` is a switch whose NF 0 the root runs now. */
function checkSwitched(result: ApplyResult, live: { read: () => number }, k: number): void {
  if (result.action !== "switched")
    throw new Error(`switch ${k}: apply did "${result.action}", not a switch`);
  const nf0 = result.programIds[1];
  const running = live.read();
  if (running !== nf0)
    throw new Error(`switch ${k}: root slot 0 runs program ${running}, not the new NF 0 ${nf0}`);
}

/**
 * Creates chain `name`, then `count` timed switches through revisions from `makeSpec`.
 * Afterwards 1000 packets must pass the chain, counted by its last NF, with no root misses; then
 * the chain is removed (the interface is free again).
 */
export async function measureManagerSwitches(
  name: string,
  makeSpec: SpecFactory,
  objects: BenchObjects,
  net: VethNetwork,
  bpffsRoot: string,
  scope: TestScope,
  count: number,
  log: (msg: string) => void,
  checkpoint: () => void,
  keepStandby = true,
): Promise<SwitchFigures & ManagerLeftovers> {
  const manager = openManager(objects, net, bpffsRoot, scope, [name], keepStandby);
  return removedOnFailure(manager, name, async () => {
    const created = await manager.apply(makeSpec(name, 0));
    if (created.action !== "created") throw new Error(`first apply did "${created.action}", not a creation`);
    const live = liveSlot(bpffsRoot, name, scope);

    const total: number[] = [];
    const flipUs: number[] = [];
    const parts: Record<string, number[]> = { self_test: [], load: [], after_flip: [] };
    const reported = new Set<number>(created.programIds.slice(1));
    let current = created.programIds;
    let fromStandby = 0;
    for (let k = 1; k <= count; k++) {
      checkpoint();
      const spec = makeSpec(name, k);
      const started = performance.now();
      const result = await manager.apply(spec);
      const ms = since(started);
      checkSwitched(result, live, k);
      for (const id of result.programIds.slice(1)) reported.add(id);
      current = result.programIds;
      if (result.fromStandby) fromStandby++;
      total.push(ms);
      flipUs.push(result.timings.flipUs);
      parts.self_test?.push(result.timings.selfTestMs);
      parts.load?.push(result.timings.loadMs);
      parts.after_flip?.push(
        result.timings.totalMs -
          result.timings.selfTestMs -
          result.timings.loadMs -
          result.timings.flipUs / 1000,
      );
      // Where the time went inside (the self-test and the build overlap).
      for (const [part, ms] of Object.entries(result.timings.parts ?? {})) (parts[part] ??= []).push(ms);
      if (k % 25 === 0) log(`manager (${name}): ${k}/${count} switches`);
    }

    const before = manager.status(name);
    const flow = await udpFlow({
      from: { ns: net.a.ns, ip: net.a.ip },
      to: { ns: net.b.ns, ip: net.b.ip },
      count: 1000,
      rate: 10_000,
    });
    const after = manager.status(name);
    const last = (s: typeof after) => s?.nfs.at(-1)?.counters.packets ?? 0n;
    const carried = last(after) - last(before);
    if (flow.lost !== 0 || carried < 1000n || (after?.rootMisses.packets ?? 1n) !== 0n) {
      throw new Error(
        `after ${count} switches the chain did not carry traffic: ${flow.lost} of ${flow.sent} lost, ` +
          `${carried} counted by its last NF, ${after?.rootMisses.packets} root misses`,
      );
    }
    const standby = after?.standby?.programIds ?? [];
    const stale = await stillLoaded(
      [...reported].filter((id) => !current.includes(id) && !standby.includes(id)),
    );
    await manager.remove(name);
    live.close();
    const afterRemove = await stillLoaded([...current, ...standby]);
    return {
      ...switchFigures(total, flipUs, parts),
      stale_programs: stale.length,
      programs_after_remove: afterRemove.length,
      from_standby: fromStandby,
    };
  });
}

/**
 * Traffic through a chain that the manager switches back and forth between two revisions for
 * as long as the flow lasts. The chain is removed afterwards.
 */
export async function measureManagerSwap(
  objects: BenchObjects,
  net: VethNetwork,
  bpffsRoot: string,
  scope: TestScope,
  options: SwapOptions,
  log: (msg: string) => void,
  checkpoint: () => void,
): Promise<SwapFigures> {
  const name = "bench-swap";
  const manager = openManager(objects, net, bpffsRoot, scope, [name]);
  return removedOnFailure(manager, name, async () => {
    const makeSpec = chain3Specs(objects, net);
    await manager.apply(makeSpec(name, 0));
    const live = liveSlot(bpffsRoot, name, scope);
    const status0 = manager.status(name);
    const mode = status0?.interfaces[0]?.xdpMode ?? "unknown";
    const lastPackets = () => manager.status(name)?.nfs.at(-1)?.counters.packets ?? 0n;
    const before = lastPackets();

    let k = 0;
    const { flow, switches } = await trafficWhileSwitching(
      net,
      scope,
      options,
      async () => {
        k++;
        const result = await manager.apply(makeSpec(name, k));
        checkSwitched(result, live, k);
      },
      log,
      checkpoint,
    );
    const chainPackets = lastPackets() - before;
    const misses = manager.status(name)?.rootMisses.packets ?? 0n;
    await manager.remove(name);
    live.close();
    return swapFigures(flow, {
      switches,
      chainPackets,
      rootMisses: misses,
      via: "ChainManager.apply of alternating revisions (self-test, load, flip, release)",
      mode,
      rate: options.rate,
    });
  });
}
