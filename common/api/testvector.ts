import { z } from "zod";
import { parseContent } from "./builtins/ips.ts";

/**
 * Test vectors: packets described in a small typed form, with the verdict (and optionally the
 * counters) a network function or a whole chain must produce for them. The node agent builds
 * each packet and runs it through the new chain with BPF_PROG_TEST_RUN before switching it in.
 *
 * The same schema is used in `NetworkFunction.spec.tests`, `ServiceChain.spec.tests`, the CLI's
 * `sluice test` and the data-plane library, so a vector means the same thing everywhere.
 */

const macAddress = z
  .string()
  .regex(/^([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}$/, "must be a MAC address like 02:00:00:00:00:01");
const port = z.number().int().min(0).max(65535);
const ipv4Address = z.ipv4({ message: "must be an IPv4 address like 10.0.0.1" });
const ipv6Address = z.ipv6({ message: "must be an IPv6 address like fd00::1" });

/** Ethernet header fields; both addresses default to locally administered unicast ones. */
export const EthernetSpec = z.strictObject({
  src: macAddress.optional(),
  dst: macAddress.optional(),
});
export type EthernetSpec = z.infer<typeof EthernetSpec>;

/** IPv4 header fields. `ttl` defaults to 64. */
export const Ipv4Spec = z.strictObject({
  src: ipv4Address,
  dst: ipv4Address,
  ttl: z.number().int().min(0).max(255).optional(),
});
export type Ipv4Spec = z.infer<typeof Ipv4Spec>;

/** IPv6 header fields. `hopLimit` defaults to 64. */
export const Ipv6Spec = z.strictObject({
  src: ipv6Address,
  dst: ipv6Address,
  hopLimit: z.number().int().min(0).max(255).optional(),
});
export type Ipv6Spec = z.infer<typeof Ipv6Spec>;

/** TCP header fields. `flags` defaults to `["syn"]`. */
export const TcpSpec = z.strictObject({
  sport: port,
  dport: port,
  flags: z.array(z.enum(["fin", "syn", "rst", "psh", "ack", "urg"])).optional(),
});
export type TcpSpec = z.infer<typeof TcpSpec>;

/** UDP header fields. */
export const UdpSpec = z.strictObject({ sport: port, dport: port });
export type UdpSpec = z.infer<typeof UdpSpec>;

/** ICMP (ICMPv6 over IPv6) header fields; default echo request (8, or 128 for ICMPv6). */
export const IcmpSpec = z.strictObject({
  type: z.number().int().min(0).max(255).optional(),
  code: z.number().int().min(0).max(255).optional(),
});
export type IcmpSpec = z.infer<typeof IcmpSpec>;

/**
 * One packet: Ethernet, then exactly one of IPv4/IPv6, then at most one of TCP/UDP/ICMP, then
 * the payload: `payload`'s bytes, then zero bytes up to `payloadLength` (default: none).
 */
export const PacketSpec = z
  .strictObject({
    eth: EthernetSpec.optional(),
    ipv4: Ipv4Spec.optional(),
    ipv6: Ipv6Spec.optional(),
    tcp: TcpSpec.optional(),
    udp: UdpSpec.optional(),
    icmp: IcmpSpec.optional(),
    payload: z
      .string()
      .max(9000)
      .superRefine((text, ctx) => {
        const parsed = parseContent(text);
        if (!parsed.ok) ctx.addIssue({ code: "custom", message: parsed.message });
        else if (parsed.bytes.length > 9000)
          ctx.addIssue({ code: "custom", message: "is more than 9000 bytes" });
      })
      .optional()
      .describe(
        'Payload bytes: text, with hex bytes between pipes ("GET /|0d 0a|"), as an ips signature\'s content.',
      ),
    payloadLength: z
      .number()
      .int()
      .min(0)
      .max(9000)
      .optional()
      .describe("Payload length in bytes: zero bytes after payload, up to this length."),
  })
  .refine((p) => (p.ipv4 ? 1 : 0) + (p.ipv6 ? 1 : 0) === 1, {
    message: "a packet needs exactly one of ipv4 or ipv6",
  })
  .refine((p) => (p.tcp ? 1 : 0) + (p.udp ? 1 : 0) + (p.icmp ? 1 : 0) <= 1, {
    message: "a packet has at most one of tcp, udp or icmp",
  });
export type PacketSpec = z.infer<typeof PacketSpec>;

/**
 * What the hook returns for a packet. `pass` and `drop` exist on every hook; `tx`, `redirect` and
 * `aborted` are XDP's own. On tc hooks `pass` is TC_ACT_OK and `drop` is TC_ACT_SHOT.
 */
export const Verdict = z.enum(["pass", "drop", "tx", "redirect", "aborted"]);
export type Verdict = z.infer<typeof Verdict>;

/** Counters a vector may check after it ran, per network function (by its name in the chain). */
export const ExpectedCounters = z.strictObject({
  packets: z.number().int().min(0).optional(),
  drops: z.number().int().min(0).optional(),
  passes: z.number().int().min(0).optional(),
});
export type ExpectedCounters = z.infer<typeof ExpectedCounters>;

/**
 * One test vector. The packet is sent `count` times (default 1) in a row; `verdict` is what the
 * last one must get, and `passed`/`dropped`, when given, how many of the `count` packets must
 * have been passed or dropped in total (useful for rate limits: "burst 5, send 8, 3 dropped").
 * Counters are checked as the difference made by this vector alone.
 */
export const TestVector = z.strictObject({
  name: z.string().min(1).max(128),
  packet: PacketSpec,
  count: z.number().int().min(1).max(10_000).optional(),
  expect: z.strictObject({
    verdict: Verdict,
    passed: z.number().int().min(0).optional(),
    dropped: z.number().int().min(0).optional(),
    counters: z.record(z.string(), ExpectedCounters).optional(),
  }),
});
export type TestVector = z.infer<typeof TestVector>;
