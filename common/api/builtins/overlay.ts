import { isIPv4 } from "node:net";
import { z } from "zod";
import { parseCidr } from "../../net/ip.ts";
import { Cidr } from "./firewall.ts";

/** `OVERLAY_MAX_SEGMENTS` of `bpf/nf/overlay/overlay_types.h`: most segments one table holds. */
export const OVERLAY_MAX_SEGMENTS = 4096;
/** `OVERLAY_MAX_NODES`: most distinct node addresses. */
export const OVERLAY_MAX_NODES = 1024;
/**
 * `OVERLAY_OVERHEAD`: bytes VXLAN over IPv4 adds to an IP packet (outer IPv4 20, UDP 8, VXLAN 8,
 * inner Ethernet 14). Hosts behind the overlay need an MTU this much below the underlay's.
 */
export const OVERLAY_OVERHEAD = 50;
/** IANA's VXLAN port. */
export const VXLAN_PORT = 4789;

/**
 * The Node annotation that lists the segments a node hosts, comma-separated CIDR blocks:
 * `sluice.dev/overlay-segments: "10.1.0.0/24, fd00:1::/64"`. The operator adds them, with the
 * node's InternalIP, to the `segments` table of every `overlay` in the chains that select the node.
 */
export const OVERLAY_SEGMENTS_ANNOTATION = "sluice.dev/overlay-segments";

/** Parameters of `overlay` (load-time settings). */
export const OverlayParams = z.strictObject({
  vni: z
    .number()
    .int()
    .min(1)
    .max(0xffffff)
    .default(1)
    .describe(
      "VXLAN network identifier (1-16777215): sent in every packet; packets with another are not unwrapped.",
    ),
  port: z
    .number()
    .int()
    .min(1)
    .max(65535)
    .default(VXLAN_PORT)
    .describe("UDP destination port of the VXLAN packets between nodes (4789, IANA's)."),
  ttl: z.number().int().min(1).max(255).default(64).describe("TTL of the outer IPv4 header."),
});
export type OverlayParams = z.infer<typeof OverlayParams>;

/** An IPv4 address (the underlay is IPv4). */
export const Ipv4Address = z
  .string()
  .describe("An IPv4 address (the underlay between nodes is IPv4).")
  .refine((value) => isIPv4(value), {
    error: (issue) =>
      `${JSON.stringify(issue.input)} is not an IPv4 address (the underlay between nodes is IPv4)`,
  });

/** One segment: a block of host addresses behind one node. */
export const OverlaySegment = z.strictObject({
  prefix: Cidr.describe("The segment: an IPv4 or IPv6 block of the hosts behind the node."),
  node: Ipv4Address.describe("Underlay address of the node that hosts the segment."),
});
export type OverlaySegment = z.infer<typeof OverlaySegment>;

/** `prefix` in a canonical form (network/length), or undefined when it does not parse. */
function canonicalPrefix(prefix: string): string | undefined {
  try {
    const cidr = parseCidr(prefix);
    return `${cidr.network.toString("hex")}/${cidr.family === 4 ? 96 + cidr.prefixLength : cidr.prefixLength}`;
  } catch {
    return undefined;
  }
}

/**
 * Runtime tables of `overlay`: which node hosts which segment. The operator fills it from the
 * cluster (the {@link OVERLAY_SEGMENTS_ANNOTATION} of every node the chain selects, with the
 * node's InternalIP); entries written here are added to those, for nodes outside the cluster.
 */
export const OverlayTables = z.strictObject({
  segments: z
    .array(OverlaySegment)
    .max(OVERLAY_MAX_SEGMENTS)
    .default([])
    .describe(
      `Segments and the node hosting each, at most ${OVERLAY_MAX_SEGMENTS}; the longest matching prefix wins. The operator adds the segments of the chain's nodes (Node annotation ${OVERLAY_SEGMENTS_ANNOTATION}).`,
    )
    .superRefine((segments, ctx) => {
      const seen = new Map<string, number>();
      const nodes = new Set<string>();
      segments.forEach((segment, index) => {
        nodes.add(segment.node);
        const key = canonicalPrefix(segment.prefix);
        if (key === undefined) return; // reported by the field's own check
        const first = seen.get(key);
        if (first !== undefined) {
          ctx.addIssue({
            code: "custom",
            path: [index, "prefix"],
            message: `${segment.prefix} is already segments[${first}] (hosted by ${segments[first]!.node}); a segment has one node`,
          });
        } else {
          seen.set(key, index);
        }
      });
      if (nodes.size > OVERLAY_MAX_NODES) {
        ctx.addIssue({ code: "custom", message: `at most ${OVERLAY_MAX_NODES} distinct nodes` });
      }
    }),
});
export type OverlayTables = z.infer<typeof OverlayTables>;
