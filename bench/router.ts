/**
 * What the `router` NF costs per packet with BPF_PROG_TEST_RUN, entering at the root as the hook
 * would: a forwarded IPv4 and IPv6 packet (FIB lookup, TTL / hop limit decrement with the
 * checksum update, MAC rewrite, redirect verdict) and a TTL-1 packet it leaves to the stack,
 * next to one no-op NF for the chain's own cost. The runs happen inside a private namespace
 * with forwarding on, a route and a static neighbour, so that the lookup succeeds (a test run
 * enters on that namespace's loopback). Variants run interleaved; figures are medians.
 */
import { XdpAction } from "../node-agent/src/libbpf/index.ts";
import { withNetns } from "../node-agent/src/netns/index.ts";
import { buildPacket } from "../node-agent/src/packet/index.ts";
import { createNetns, run, type TestScope } from "../test/kernel/harness.ts";
import { builtinPart, interleavedRounds, medianNs, nsPerPacket, scopedChain } from "./measure.ts";
import type { BenchObjects } from "./objects.ts";

const PACKETS = {
  forward_v4: buildPacket({
    ipv4: { src: "10.1.0.7", dst: "10.2.0.80" },
    udp: { sport: 40000, dport: 80 },
    payloadLength: 64,
  }),
  forward_v6: buildPacket({
    ipv6: { src: "fd01::7", dst: "fd02::80" },
    udp: { sport: 40000, dport: 80 },
    payloadLength: 64,
  }),
  ttl1_to_stack: buildPacket({
    ipv4: { src: "10.1.0.7", dst: "10.2.0.80", ttl: 1 },
    udp: { sport: 40000, dport: 80 },
    payloadLength: 64,
  }),
} as const;

/**
 * One run per test run: the router decrements the TTL of the one buffer a test run repeats on,
 * so with many repetitions it measured mostly a TTL-1 packet left to the stack. Repetitions in
 * small batches are no way out: for more than one the kernel swaps its XDP dispatcher in and
 * out around every call, which waits for an RCU grace period each time. Every figure, the
 * baseline's too, carries the kernel's timing of one call.
 */
const RUNS_PER_CALL = 1;

/** Figures of the router measurement. */
export interface RouterFigures {
  /** Median ns per packet through root + router, by case. */
  router_ns: Record<keyof typeof PACKETS, number>;
  /** Median ns per packet through root + one no-op NF (the IPv4 packet): the chain's share. */
  router_baseline_noop_ns: number;
  /** Packets per variant and round. */
  router_repeat: number;
  router_rounds: number;
  /** Runs per test run (see RUNS_PER_CALL). */
  router_runs_per_call: number;
}

/** A namespace where 10.2.0.80 and fd02::80 are forwarded out of a veth to a known neighbour. */
async function forwardingNetns(scope: TestScope): Promise<string> {
  const ns = await createNetns(scope, "rt", { ipv6: true, forwarding: true });
  await run(
    "ip",
    ["-n", ns.name, "-batch", "-"],
    [
      "link add rt0 type veth peer name rt1",
      "link set rt0 up",
      "link set rt1 up",
      "addr add 10.2.0.1/24 dev rt0",
      "addr add fd02::1/64 dev rt0 nodad",
      "neigh replace 10.2.0.80 lladdr 02:00:00:00:00:80 dev rt0 nud permanent",
      "neigh replace fd02::80 lladdr 02:00:00:00:00:80 dev rt0 nud permanent",
      "",
    ].join("\n"),
  );
  return ns.path;
}

/** Builds root + router and root + noop and measures them interleaved. */
export async function measureRouter(
  objects: BenchObjects,
  scope: TestScope,
  options: { repeat: number; rounds: number },
  log: (msg: string) => void,
): Promise<RouterFigures> {
  const nsPath = await forwardingNetns(scope);
  const withRouter = scopedChain(scope, objects.root, [builtinPart(objects, "router")]);
  const noop = scopedChain(scope, objects.root, [{ path: objects.noop, program: "noop_xdp" }]);
  const variants = [
    { name: "noop", chain: noop, packet: PACKETS.forward_v4, expect: XdpAction.PASS },
    { name: "forward_v4", chain: withRouter, packet: PACKETS.forward_v4, expect: XdpAction.REDIRECT },
    { name: "forward_v6", chain: withRouter, packet: PACKETS.forward_v6, expect: XdpAction.REDIRECT },
    { name: "ttl1_to_stack", chain: withRouter, packet: PACKETS.ttl1_to_stack, expect: XdpAction.PASS },
  ].map((v) => ({ ...v, samples: [] as number[] }));
  withNetns(nsPath, () => {
    for (const v of variants) {
      const { retval } = v.chain.entry.testRun({ data: v.packet, repeat: 1 });
      if (retval !== v.expect)
        throw new Error(`router bench ${v.name}: the packet got ${retval}, not ${v.expect}`);
    }
    interleavedRounds(variants, options.rounds, (v) =>
      v.samples.push(nsPerPacket(v.chain.entry, v.packet, options.repeat, RUNS_PER_CALL)),
    );
  });
  log(`router: ${options.rounds} rounds`);
  const med = (name: string) => medianNs(variants, name);
  return {
    router_ns: {
      forward_v4: med("forward_v4"),
      forward_v6: med("forward_v6"),
      ttl1_to_stack: med("ttl1_to_stack"),
    },
    router_baseline_noop_ns: med("noop"),
    router_repeat: options.repeat,
    router_rounds: options.rounds,
    router_runs_per_call: RUNS_PER_CALL,
  };
}
