/**
 * What the `ips` NF costs per packet with BPF_PROG_TEST_RUN: a 1,400-byte UDP payload that no
 * signature matches (so every byte is scanned) against 0, 10 and 100 signatures, entering at
 * the root as the hook would, next to one no-op NF for the chain's own cost. Variants run
 * interleaved in the same rounds; figures are medians over rounds.
 */
import { XdpAction } from "../node-agent/src/libbpf/index.ts";
import { buildPacket } from "../node-agent/src/packet/index.ts";
import type { TestScope } from "../test/kernel/harness.ts";
import type { HandChain, NfPart } from "./chain.ts";
import { builtinPart, interleavedRounds, medianNs, scopedChain } from "./measure.ts";
import type { BenchObjects } from "./objects.ts";

/** Signature counts measured. */
export const IPS_SIGNATURE_COUNTS = [0, 10, 100] as const;

/** Bytes of UDP payload of the measured packet. */
export const IPS_PAYLOAD_BYTES = 1400;

/**
 * The measured packet: Ethernet + IPv4 + UDP with 1,400 bytes of printable text (a repeating
 * sentence), the kind of payload whose byte pairs the prefilter sees often.
 */
export const IPS_BENCH_PACKET = buildPacket({
  ipv4: { src: "10.1.0.7", dst: "10.2.0.80" },
  udp: { sport: 40000, dport: 80 },
  payload: "the quick brown fox jumps over the lazy dog; ".repeat(40).slice(0, IPS_PAYLOAD_BYTES),
});

/**
 * `n` signatures, none of which occurs in the packet: Snort-like strings ("/cgi-bin/...",
 * "cmd.exe", ...) made distinct by a number, some case-insensitive, some bound to a port.
 */
export function benchSignatures(n: number): unknown[] {
  const stems = [
    "/cgi-bin/phf",
    "cmd.exe",
    "/etc/shadow",
    "union select",
    "<script>",
    "wget http",
    "|90 90 90 90|",
  ];
  return Array.from({ length: n }, (_, i) => ({
    id: i + 1,
    content: `${stems[i % stems.length]}${i}`,
    nocase: i % 3 === 0,
    ...(i % 4 === 0 ? { proto: "tcp", dstPort: 80 } : {}),
  }));
}

/**
 * The worst case the scan budget bounds: 100 signatures that all start with "/c" and a payload
 * of "/c" x 700, so that every other position passes the prefilter and tries every signature.
 */
export const IPS_HOSTILE_PACKET = buildPacket({
  ipv4: { src: "10.1.0.7", dst: "10.2.0.80" },
  udp: { sport: 40000, dport: 80 },
  payload: "/c".repeat(IPS_PAYLOAD_BYTES / 2),
});

/** Figures of the ips measurement. */
export interface IpsFigures {
  /** Median ns per packet through root + ips, by number of signatures. */
  ips_ns: Record<string, number>;
  /** Median ns per packet through root + one no-op NF (the same packet): the chain's share. */
  ips_baseline_noop_ns: number;
  /** Median ns per packet of {@link IPS_HOSTILE_PACKET} against 100 "/c..." signatures (default budget). */
  ips_hostile_ns: number;
  ips_payload_bytes: number;
  ips_repeat: number;
  ips_rounds: number;
}

/** Builds root + ips chains for every signature count and measures them interleaved. */
export function measureIps(
  objects: BenchObjects,
  scope: TestScope,
  options: { repeat: number; rounds: number },
  log: (msg: string) => void,
): IpsFigures {
  const variants: { name: string; chain: HandChain; packet: Buffer; samples: number[] }[] = [];
  const add = (name: string, part: NfPart, packet = IPS_BENCH_PACKET) =>
    variants.push({ name, chain: scopedChain(scope, objects.root, [part]), packet, samples: [] });
  add("noop", { path: objects.noop, program: "noop_xdp" });
  for (const n of IPS_SIGNATURE_COUNTS)
    add(`ips${n}`, builtinPart(objects, "ips", { tables: { signatures: benchSignatures(n) } }));
  add(
    "hostile",
    builtinPart(objects, "ips", {
      tables: { signatures: Array.from({ length: 100 }, (_, i) => ({ id: i + 1, content: `/c${i}zzzz` })) },
    }),
    IPS_HOSTILE_PACKET,
  );
  for (const v of variants) {
    const run = v.chain.entry.testRun({ data: v.packet, repeat: Math.min(options.repeat, 1_000) });
    const expected = v.name === "hostile" ? XdpAction.DROP : XdpAction.PASS;
    if (run.retval !== expected) throw new Error(`${v.name}: the packet got ${run.retval}, not ${expected}`);
  }
  interleavedRounds(
    variants,
    options.rounds,
    (v) => {
      // The hostile packet costs ~50x a normal one: fewer runs keep the round short.
      const repeat = v.name === "hostile" ? Math.max(1, Math.round(options.repeat / 20)) : options.repeat;
      v.samples.push(v.chain.entry.testRun({ data: v.packet, repeat }).durationNs);
    },
    (done) => {
      if (done === options.rounds || done % 5 === 0) log(`ips: round ${done}/${options.rounds}`);
    },
  );
  const med = (name: string) => medianNs(variants, name);
  return {
    ips_ns: Object.fromEntries(IPS_SIGNATURE_COUNTS.map((n) => [String(n), med(`ips${n}`)])),
    ips_baseline_noop_ns: med("noop"),
    ips_hostile_ns: med("hostile"),
    ips_payload_bytes: IPS_PAYLOAD_BYTES,
    ips_repeat: options.repeat,
    ips_rounds: options.rounds,
  };
}
