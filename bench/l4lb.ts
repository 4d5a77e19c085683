/**
 * What the `l4lb` NF costs per packet with BPF_PROG_TEST_RUN, entering at the root as the hook
 * would, on one TCP segment of 64 payload bytes, next to one no-op NF for the chain's own cost:
 * - `known_flow`: a packet of a remembered connection (service lookup, flow lookup, DNAT with
 *   the IP and TCP checksums updated);
 * - `no_affinity`: the same packet with affinity off (service lookup, Maglev hash and ring, a
 *   lookup of the reply's entry, DNAT): the cost of a packet without a remembered flow, less
 *   the two inserts a new connection makes once;
 * - `reply`: a backend's reply (service miss, reverse lookup, source rewrite);
 * - `other`: TCP to an address that is neither (two lookups that miss).
 *
 * A test run repeats on the same buffer, so a rewritten packet would be measured rewritten:
 * the measured service's one backend is the virtual IP and port itself, which keeps the packet
 * what it was while every step runs. (A first run on a service of 16 real backends checks that
 * the packet does go to one of them.) Variants run interleaved; figures are medians.
 */
import { XdpAction } from "../node-agent/src/libbpf/index.ts";
import { buildPacket } from "../node-agent/src/packet/index.ts";
import type { TestScope } from "../test/kernel/harness.ts";
import { builtinPart, interleavedRounds, medianNs, scopedChain, type BuiltinConfig } from "./measure.ts";
import type { BenchObjects } from "./objects.ts";

const VIP = "10.96.0.10";
const BACKENDS = Array.from({ length: 16 }, (_, i) => `10.1.0.${i + 1}`);

/** A service of 16 backends on port 8080, to check the rewrite. */
const SIXTEEN = {
  services: [
    { vip: VIP, port: 80, proto: "tcp", backends: BACKENDS.map((address) => ({ address, port: 8080 })) },
  ],
};
/** The measured service: its backend is the virtual IP and port (see above). */
const SELF = { services: [{ vip: VIP, port: 80, proto: "tcp", backends: [{ address: VIP }] }] };

const segment = (src: string, dst: string, sport: number, dport: number) =>
  buildPacket({ ipv4: { src, dst }, tcp: { sport, dport, flags: ["ack", "psh"] }, payloadLength: 64 });

const PACKETS = {
  toVip: segment("192.0.2.7", VIP, 40000, 80),
  other: segment("192.0.2.7", "10.2.0.1", 40000, 80),
};

/** Figures of the l4lb measurement. */
export interface L4lbFigures {
  /** Median ns per packet through root + l4lb, by case. */
  l4lb_ns: { known_flow: number; no_affinity: number; reply: number; other: number };
  /** Median ns per packet through root + one no-op NF (the same packet): the chain's share. */
  l4lb_baseline_noop_ns: number;
  l4lb_repeat: number;
  l4lb_rounds: number;
}

/** Builds the chains and measures them interleaved. */
export function measureL4lb(
  objects: BenchObjects,
  scope: TestScope,
  options: { repeat: number; rounds: number },
  log: (msg: string) => void,
): L4lbFigures {
  const build = (config: BuiltinConfig) =>
    scopedChain(scope, objects.root, [builtinPart(objects, "l4lb", config)]);
  const check = build({ tables: SIXTEEN });
  const sticky = build({ tables: SELF });
  const stateless = build({ parameters: { affinity: false }, tables: SELF });
  const noop = scopedChain(scope, objects.root, [{ path: objects.noop, program: "noop_xdp" }]);

  const first = check.entry.testRun({ data: PACKETS.toVip, dataOut: true });
  if (first.retval !== XdpAction.PASS || !first.dataOut)
    throw new Error(`l4lb bench: the first packet got ${first.retval}, not ${XdpAction.PASS}`);
  const out = first.dataOut;
  const backend = `${out[30]}.${out[31]}.${out[32]}.${out[33]}`;
  if (!BACKENDS.includes(backend) || out.readUInt16BE(36) !== 8080)
    throw new Error(`l4lb bench: the packet went to ${backend}:${out.readUInt16BE(36)}, not a backend`);
  // The reply of the measured service's flow, once the flow is remembered.
  const reply = segment(VIP, "192.0.2.7", 80, 40000);

  const variants = [
    { name: "noop", chain: noop, packet: PACKETS.toVip },
    { name: "known_flow", chain: sticky, packet: PACKETS.toVip },
    { name: "no_affinity", chain: stateless, packet: PACKETS.toVip },
    { name: "reply", chain: sticky, packet: reply },
    { name: "other", chain: sticky, packet: PACKETS.other },
  ].map((v) => ({ ...v, samples: [] as number[] }));
  for (const v of variants) {
    const { retval } = v.chain.entry.testRun({ data: v.packet, repeat: 1 });
    if (retval !== XdpAction.PASS)
      throw new Error(`l4lb bench ${v.name}: the packet got ${retval}, not pass`);
  }
  interleavedRounds(variants, options.rounds, (v) =>
    v.samples.push(v.chain.entry.testRun({ data: v.packet, repeat: options.repeat }).durationNs),
  );
  log(`l4lb: ${options.rounds} rounds`);
  const med = (name: string) => medianNs(variants, name);
  return {
    l4lb_ns: {
      known_flow: med("known_flow"),
      no_affinity: med("no_affinity"),
      reply: med("reply"),
      other: med("other"),
    },
    l4lb_baseline_noop_ns: med("noop"),
    l4lb_repeat: options.repeat,
    l4lb_rounds: options.rounds,
  };
}
