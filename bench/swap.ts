/**
 * Hitless switching under load: UDP traffic from namespace A to namespace B across a veth pair,
 * the chain (root -> firewall -> ratelimit -> flowmon) on B's interface at XDP, while whole
 * revisions are switched back and forth. Every sent packet must arrive: a switch may neither
 * drop a packet nor let one fall out of the chain (the root's miss counter stays 0).
 */
import { setImmediate as yieldToLoop } from "node:timers/promises";
import { BpfLink, BpfMap, NotSupportedError, type XdpMode } from "../node-agent/src/libbpf/index.ts";
import { rodataValues } from "../node-agent/src/nf/index.ts";
import { withNetns } from "../node-agent/src/netns/index.ts";
import type { TestScope, VethNetwork } from "../test/kernel/harness.ts";
import { startUdpFlow, type UdpFlowResult } from "../test/kernel/traffic.ts";
import { createStats, packetsAt, Revision, Root, type NfPart } from "./chain.ts";
import { configuredBuiltin } from "./measure.ts";
import type { BenchObjects } from "./objects.ts";

/**
 * Settings of the switched chain. The two revisions differ in one parameter (ratelimit's burst),
 * so that switching between them needs new programs; the limit itself is far above the traffic.
 */
export const SWITCH_FIREWALL = {
  parameters: { defaultAction: "allow", nonIpAction: "allow" },
  tables: {
    rules: [
      { action: "deny", src: "192.168.0.0/16" },
      { action: "deny", protocol: "tcp", dport: 22 },
      { action: "allow", src: "10.77.0.0/16", protocol: "udp" },
    ],
  },
};
/** ratelimit parameters of revision 0 and 1. */
export const SWITCH_RATELIMIT = [
  { parameters: { rate: 1_000_000_000, burst: 1_000_000 } },
  { parameters: { rate: 1_000_000_000, burst: 999_999 } },
] as const;

/** The three NFs of revision `variant` (0 or 1), with their own maps carried over from `carry` if given. */
export function switchParts(objects: BenchObjects, variant: 0 | 1, carry?: Revision): NfPart[] {
  const fw = configuredBuiltin("firewall", SWITCH_FIREWALL);
  const rl = configuredBuiltin("ratelimit", SWITCH_RATELIMIT[variant]);
  const own = (i: number, map: string): Record<string, BpfMap> => {
    const nf = carry?.nfs[i];
    return nf ? { [map]: nf.map(map) } : {};
  };
  return [
    {
      path: objects.firewall,
      program: "firewall_xdp",
      rodata: rodataValues(fw.rodata),
      tables: fw.mapContents,
      reuseMaps: own(0, "firewall_rules"),
    },
    {
      path: objects.ratelimit,
      program: "ratelimit_xdp",
      rodata: rodataValues(rl.rodata),
      reuseMaps: own(1, "ratelimit_state"),
    },
    { path: objects.flowmon, program: "flowmon_xdp", reuseMaps: own(2, "flowmon_flows") },
  ];
}

/** Attaches `root` to B's interface at XDP, native if the driver takes it, else generic. */
export function attachXdp(root: Root, net: VethNetwork): { link: BpfLink; mode: XdpMode } {
  return withNetns(net.b.ns.path, () => {
    try {
      return { link: BpfLink.attachXdp(root.program, net.b.ifindex, "native"), mode: "native" as const };
    } catch (err) {
      if (!(err instanceof NotSupportedError)) throw err;
      return { link: BpfLink.attachXdp(root.program, net.b.ifindex, "generic"), mode: "generic" as const };
    }
  });
}

/** What a swap run saw. */
export interface SwapFigures {
  /** Switches completed while traffic flowed. */
  switches: number;
  sent: number;
  received: number;
  /** sent - received. */
  lost: number;
  /** Of the lost: dropped at the receiving socket (the receiver fell behind), not in the data path. */
  receiver_drops: number;
  send_failures: number;
  duplicates: number;
  /** Packets whose walk ended in the chain's last NF during the run (the chain carried them). */
  chain_packets: number;
  /** Packets that found the root's slot empty: must be 0. */
  root_misses: number;
  /** How the switches were made. */
  via: string;
  /** `native` or `generic` (`unknown` when the manager did not say). */
  xdp_mode: string;
  /** Offered packet rate and the sender's duration. */
  rate_pps: number;
  duration_ms: number;
  /** Up to 20 missing sequence numbers, when packets were lost. */
  missing_sample: number[];
}

/** Options of a swap run. */
/** The figures of one traffic-while-switching run, from the flow and what the chain counted. */
export function swapFigures(
  flow: UdpFlowResult,
  run: {
    switches: number;
    chainPackets: bigint;
    rootMisses: bigint;
    via: string;
    mode: string;
    rate: number;
  },
): SwapFigures {
  return {
    switches: run.switches,
    sent: flow.sent,
    received: flow.received,
    lost: flow.lost,
    receiver_drops: flow.receiverDrops,
    send_failures: flow.sendFailures,
    duplicates: flow.duplicates,
    chain_packets: Number(run.chainPackets),
    root_misses: Number(run.rootMisses),
    via: run.via,
    xdp_mode: run.mode,
    rate_pps: run.rate,
    duration_ms: Math.round(flow.durationMs),
    missing_sample: flow.missingSample,
  };
}

export interface SwapOptions {
  packets: number;
  rate: number;
}

/**
 * Runs traffic through a flow while `switchOnce` is called back to back (yielding to the event
 * loop in between so that the flow's bookkeeping runs), until the traffic is done.
 */
export async function trafficWhileSwitching(
  net: VethNetwork,
  scope: TestScope,
  options: SwapOptions,
  switchOnce: () => Promise<void> | void,
  log: (msg: string) => void,
  checkpoint: () => void,
): Promise<{ flow: UdpFlowResult; switches: number }> {
  const flow = await startUdpFlow({
    from: { ns: net.a.ns, ip: net.a.ip },
    to: { ns: net.b.ns, ip: net.b.ip },
    count: options.packets,
    rate: options.rate,
    drainMs: 500,
  });
  scope.defer(() => flow.abort());
  let finished = false;
  let failure: unknown;
  const result = flow.done().then(
    (r) => {
      finished = true;
      return r;
    },
    (err: unknown) => {
      finished = true;
      failure = err;
      return undefined;
    },
  );
  let switches = 0;
  let lastLog = performance.now();
  let lastYield = performance.now();
  try {
    while (!finished) {
      checkpoint();
      await switchOnce();
      switches++;
      // Switches are synchronous underneath (an await resolves through microtasks only): give
      // timers and the flow's pipes a turn every couple of milliseconds, or the end of the flow
      // would be noticed late and switches would pile up after the traffic.
      if (performance.now() - lastYield > 2) {
        await yieldToLoop();
        lastYield = performance.now();
      }
      if (performance.now() - lastLog > 2000) {
        lastLog = performance.now();
        log(`traffic: ${switches} switches so far`);
      }
    }
  } catch (err) {
    flow.abort();
    await result;
    throw err;
  }
  const outcome = await result;
  if (!outcome) throw failure instanceof Error ? failure : new Error(String(failure));
  return { flow: outcome, switches };
}

/**
 * Two resident revisions, switched by flipping the root's slot 0 (the atomic step of every
 * switch) as fast as the loop goes, for the whole flow.
 */
export async function measureSwapFlips(
  objects: BenchObjects,
  net: VethNetwork,
  scope: TestScope,
  options: SwapOptions,
  log: (msg: string) => void,
  checkpoint: () => void,
): Promise<SwapFigures> {
  const stats = createStats();
  scope.defer(() => stats.close());
  const root = new Root(objects.root);
  scope.defer(() => root.close());
  const revA = Revision.load(switchParts(objects, 0), stats);
  scope.defer(() => revA.close());
  const revB = Revision.load(switchParts(objects, 1, revA), stats);
  scope.defer(() => revB.close());
  root.switchTo(revA);
  const { link, mode } = attachXdp(root, net);
  scope.defer(() => link.close());

  const before = packetsAt(stats, 2);
  let live = revA;
  const { flow, switches } = await trafficWhileSwitching(
    net,
    scope,
    options,
    () => {
      live = live === revA ? revB : revA;
      root.switchTo(live);
    },
    log,
    checkpoint,
  );
  const chainPackets = packetsAt(stats, 2) - before;
  link.close();
  return swapFigures(flow, {
    switches,
    chainPackets,
    rootMisses: root.misses(),
    via: "root slot 0 flipped between two loaded 3-NF revisions",
    mode,
    rate: options.rate,
  });
}
