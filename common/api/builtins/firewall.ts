import { z } from "zod";
import { AddressParseError, parseCidr } from "../../net/ip.ts";

/** `FIREWALL_MAX_RULES` of `bpf/nf/firewall/firewall_types.h`: most rules one table holds. */
export const FIREWALL_MAX_RULES = 64;

const Action = z.enum(["allow", "deny"]);

/** Protocol names a rule accepts besides a number 0-255. */
export const PROTOCOL_NUMBERS = { tcp: 6, udp: 17, icmp: 1, icmpv6: 58 } as const;

/** Parameters of `firewall` (load-time settings). */
export const FirewallParams = z.strictObject({
  defaultAction: Action.default("allow").describe(
    "What happens to an IP packet that no rule matches: allow (on to the next NF) or deny (drop).",
  ),
  nonIpAction: Action.default("allow").describe(
    "What happens to a frame that is not IPv4/IPv6 (ARP, LLDP, ...). Rules never match these.",
  ),
});
export type FirewallParams = z.infer<typeof FirewallParams>;

const portRangePattern = /^(\d{1,5})(?:-(\d{1,5}))?$/;

/** `"80"` or `"1000-2000"` as an inclusive range; undefined when it is neither. */
export function parsePortRange(text: string): { min: number; max: number } | undefined {
  const match = portRangePattern.exec(text.trim());
  if (!match) return undefined;
  const min = Number(match[1]);
  const max = match[2] === undefined ? min : Number(match[2]);
  if (min > 65535 || max > 65535) return undefined;
  return { min, max };
}

/** A port or an inclusive range: `80`, `"80"` or `"1000-2000"`. */
export const PortRange = z
  .union([z.number().int().min(0).max(65535), z.string()])
  .describe('A port (80 or "80") or an inclusive range ("1000-2000").')
  .superRefine((value, ctx) => {
    if (typeof value === "number") return;
    const range = parsePortRange(value);
    if (!range)
      ctx.addIssue({
        code: "custom",
        message: `"${value}" is not a port (0-65535) or a range like "1000-2000"`,
      });
    else if (range.min > range.max)
      ctx.addIssue({ code: "custom", message: `"${value}": the range is reversed` });
  });
export type PortRange = z.infer<typeof PortRange>;

/** A validated {@link PortRange} as its inclusive bounds. */
export function portRangeBounds(value: PortRange): { min: number; max: number } {
  if (typeof value === "number") return { min: value, max: value };
  const range = parsePortRange(value);
  if (!range) throw new RangeError(`invalid port range "${value}"`);
  return range;
}

/** An IPv4 or IPv6 CIDR block, or a single address; host bits must be zero. */
export const Cidr = z
  .string()
  .describe('An IPv4 or IPv6 CIDR block ("10.0.0.0/8", "fd00::/64") or a single address.')
  .superRefine((value, ctx) => {
    try {
      parseCidr(value);
    } catch (err) {
      if (!(err instanceof AddressParseError)) throw err;
      ctx.addIssue({ code: "custom", message: err.message });
    }
  });

/** A transport protocol by name or IP protocol number. */
export const Protocol = z
  .union([z.enum(["tcp", "udp", "icmp", "icmpv6"]), z.number().int().min(0).max(255)])
  .describe("Transport protocol, by name or IP protocol number.");
export type Protocol = z.infer<typeof Protocol>;

/** The IP protocol number of a validated {@link Protocol}. */
export function protocolNumber(protocol: Protocol): number {
  return typeof protocol === "number" ? protocol : PROTOCOL_NUMBERS[protocol];
}

/** One firewall rule. Conditions that are left out match anything; all given ones must match. */
export const FirewallRule = z
  .strictObject({
    action: Action.describe("allow: on to the next NF; deny: drop."),
    src: Cidr.optional().describe("Source address block."),
    dst: Cidr.optional().describe("Destination address block."),
    family: z.enum(["ipv4", "ipv6"]).optional().describe("Only this IP version (implied by src/dst)."),
    protocol: Protocol.optional(),
    sport: PortRange.optional().describe("Source port or range; the packet must be TCP or UDP."),
    dport: PortRange.optional().describe("Destination port or range; the packet must be TCP or UDP."),
    comment: z.string().max(256).optional().describe("Free text, kept with the rule."),
  })
  .superRefine((rule, ctx) => {
    const families = new Set<4 | 6>();
    for (const field of ["src", "dst"] as const) {
      const value = rule[field];
      if (value === undefined) continue;
      try {
        families.add(parseCidr(value).family);
      } catch {
        return; // reported by the field's own check
      }
    }
    if (families.size > 1) {
      ctx.addIssue({ code: "custom", path: ["dst"], message: "src and dst must be the same IP version" });
    }
    const implied = [...families][0];
    if (rule.family && implied && rule.family !== `ipv${implied}`) {
      ctx.addIssue({
        code: "custom",
        path: ["family"],
        message: `contradicts the ${`ipv${implied}`} address in src/dst`,
      });
    }
    const hasPorts = rule.sport !== undefined || rule.dport !== undefined;
    if (hasPorts && rule.protocol !== undefined && ![6, 17].includes(protocolNumber(rule.protocol))) {
      ctx.addIssue({
        code: "custom",
        path: ["protocol"],
        message: "ports need protocol tcp or udp (or no protocol)",
      });
    }
  });
export type FirewallRule = z.infer<typeof FirewallRule>;

/** Runtime tables of `firewall`: the ordered rule list (first match wins). */
export const FirewallTables = z.strictObject({
  rules: z
    .array(FirewallRule)
    .max(FIREWALL_MAX_RULES)
    .default([])
    .describe(`Rules in priority order, at most ${FIREWALL_MAX_RULES}; the first matching rule decides.`),
});
export type FirewallTables = z.infer<typeof FirewallTables>;
