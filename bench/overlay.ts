/**
 * What the `overlay` NF costs per packet with BPF_PROG_TEST_RUN, entering at the root as the
 * hook would: a packet for a remote segment (LPM lookup, FIB lookup with the source address,
 * 50 bytes of headers pushed, redirect verdict), a VXLAN packet from a known node (header
 * checks, node lookup, 50 bytes pulled; the inner packet goes on), and a packet for no segment
 * (the LPM lookup that misses), next to one no-op NF for the chain's own cost. The runs happen
 * inside a private namespace with forwarding on, an underlay route and a static neighbour for
 * the remote node, so that the lookup succeeds. Variants run interleaved; figures are medians.
 */
import { XdpAction } from "../node-agent/src/libbpf/index.ts";
import { withNetns } from "../node-agent/src/netns/index.ts";
import { buildPacket } from "../node-agent/src/packet/index.ts";
import { createNetns, run, sysctl, type TestScope } from "../test/kernel/harness.ts";
import { builtinPart, interleavedRounds, medianNs, nsPerPacket, scopedChain } from "./measure.ts";
import type { BenchObjects } from "./objects.ts";

const VNI = 4242;
const REMOTE_NODE = "192.168.50.2";

const inner = buildPacket({
  ipv4: { src: "10.2.0.80", dst: "10.1.0.7" },
  udp: { sport: 80, dport: 40000 },
  payloadLength: 64,
});
/** VXLAN header: the I flag, then the VNI in the top 24 bits of the second word. */
const vxlan = Buffer.alloc(8);
vxlan.writeUInt32BE(0x08000000, 0);
vxlan.writeUInt32BE(VNI << 8, 4);

const PACKETS = {
  encap: buildPacket({
    ipv4: { src: "10.1.0.7", dst: "10.2.0.80" },
    udp: { sport: 40000, dport: 80 },
    payloadLength: 64,
  }),
  decap: buildPacket({
    ipv4: { src: REMOTE_NODE, dst: "192.168.50.1" },
    udp: { sport: 50000, dport: 4789 },
    payload: `|${[...vxlan, ...inner].map((b) => b.toString(16).padStart(2, "0")).join(" ")}|`,
  }),
  no_segment: buildPacket({
    ipv4: { src: "10.1.0.7", dst: "10.9.0.80" },
    udp: { sport: 40000, dport: 80 },
    payloadLength: 64,
  }),
} as const;

/**
 * One run per test run: a test run repeats the program on one buffer without restoring it, so
 * after one wrap the buffer holds a VXLAN packet (which the next run would leave alone), and
 * after one unwrap the inner packet. Every run thus pays the kernel's timing of a call, as the
 * root + noop baseline measured the same way does.
 */
const RUNS_PER_CALL = 1;

/** Figures of the overlay measurement. */
export interface OverlayFigures {
  /** Median ns per packet through root + overlay, by case. */
  overlay_ns: Record<keyof typeof PACKETS, number>;
  /** Median ns per packet through root + one no-op NF (the encap case's packet): the chain's share. */
  overlay_baseline_noop_ns: number;
  /** Packets per variant and round. */
  overlay_repeat: number;
  overlay_rounds: number;
  /** Runs per test run (see RUNS_PER_CALL). */
  overlay_runs_per_call: number;
}

/** A namespace that forwards, with an underlay route to the remote node and its MAC known. */
async function underlayNetns(scope: TestScope): Promise<string> {
  const ns = await createNetns(scope, "ov");
  sysctl(ns, { "ipv4/ip_forward": "1" });
  await run(
    "ip",
    ["-n", ns.name, "-batch", "-"],
    [
      "link add ul0 type veth peer name ul1",
      "link set ul0 up",
      "link set ul1 up",
      "addr add 192.168.50.1/24 dev ul0",
      `neigh replace ${REMOTE_NODE} lladdr 02:00:00:00:00:02 dev ul0 nud permanent`,
      "",
    ].join("\n"),
  );
  return ns.path;
}

/** Builds root + overlay and root + noop and measures them interleaved. */
export async function measureOverlay(
  objects: BenchObjects,
  scope: TestScope,
  options: { repeat: number; rounds: number },
  log: (msg: string) => void,
): Promise<OverlayFigures> {
  const nsPath = await underlayNetns(scope);
  const overlay = builtinPart(objects, "overlay", {
    parameters: { vni: VNI },
    tables: {
      segments: [
        { prefix: "10.1.0.0/24", node: "192.168.50.1" },
        { prefix: "10.2.0.0/24", node: REMOTE_NODE },
      ],
    },
  });
  const withOverlay = scopedChain(scope, objects.root, [overlay]);
  const noop = scopedChain(scope, objects.root, [{ path: objects.noop, program: "noop_xdp" }]);
  const variants = [
    { name: "noop", chain: noop, packet: PACKETS.encap, expect: XdpAction.PASS, outLength: 0 },
    {
      name: "encap",
      chain: withOverlay,
      packet: PACKETS.encap,
      expect: XdpAction.REDIRECT,
      outLength: PACKETS.encap.length + 50,
    },
    {
      name: "decap",
      chain: withOverlay,
      packet: PACKETS.decap,
      expect: XdpAction.PASS,
      outLength: PACKETS.decap.length - 50,
    },
    {
      name: "no_segment",
      chain: withOverlay,
      packet: PACKETS.no_segment,
      expect: XdpAction.PASS,
      outLength: 0,
    },
  ].map((v) => ({ ...v, samples: [] as number[] }));
  withNetns(nsPath, () => {
    for (const v of variants) {
      const result = v.chain.entry.testRun({ data: v.packet, repeat: 1, dataOut: true });
      if (result.retval !== v.expect)
        throw new Error(`overlay bench ${v.name}: the packet got ${result.retval}, not ${v.expect}`);
      // Wrapped or unwrapped as it should be, not just passed on.
      const length = result.dataOut?.length ?? -1;
      if (v.outLength > 0 && length !== v.outLength)
        throw new Error(`overlay bench ${v.name}: ${length} bytes came out, not ${v.outLength}`);
    }
    interleavedRounds(variants, options.rounds, (v) =>
      v.samples.push(nsPerPacket(v.chain.entry, v.packet, options.repeat, RUNS_PER_CALL)),
    );
  });
  log(`overlay: ${options.rounds} rounds`);
  const med = (name: string) => medianNs(variants, name);
  return {
    overlay_ns: { encap: med("encap"), decap: med("decap"), no_segment: med("no_segment") },
    overlay_baseline_noop_ns: med("noop"),
    overlay_repeat: options.repeat,
    overlay_rounds: options.rounds,
    overlay_runs_per_call: RUNS_PER_CALL,
  };
}
