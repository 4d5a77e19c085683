import { z } from "zod";
import { AddressParseError, parseCidr } from "../packet/ip.ts";
import {
  FIREWALL_MAX_RULES,
  FIREWALL_TABLE_LAYOUT,
  FirewallAction,
  FirewallMatch,
  encodeFirewallTable,
  type FirewallRuleRecord,
} from "./structs.ts";
import {
  BPF_F_NO_PREALLOC,
  BpfMapType,
  type BuiltinNf,
  type MapContents,
  type RodataSetting,
} from "./types.ts";

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

/** One firewall rule. Conditions that are left out match anything; all given ones must match. */
export const FirewallRule = z
  .strictObject({
    action: Action.describe("allow: on to the next NF; deny: drop."),
    src: Cidr.optional().describe("Source address block."),
    dst: Cidr.optional().describe("Destination address block."),
    family: z.enum(["ipv4", "ipv6"]).optional().describe("Only this IP version (implied by src/dst)."),
    protocol: z
      .union([z.enum(["tcp", "udp", "icmp", "icmpv6"]), z.number().int().min(0).max(255)])
      .optional()
      .describe("Transport protocol, by name or IP protocol number."),
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
    if (
      hasPorts &&
      rule.protocol !== undefined &&
      rule.protocol !== "tcp" &&
      rule.protocol !== "udp" &&
      rule.protocol !== 6 &&
      rule.protocol !== 17
    ) {
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

const ACTION_CODES = { allow: FirewallAction.ALLOW, deny: FirewallAction.DENY } as const;

/** Encode one validated rule into the binary form of `struct firewall_rule`. */
export function encodeFirewallRule(rule: FirewallRule): FirewallRuleRecord {
  const zero = Buffer.alloc(16);
  const record: FirewallRuleRecord = {
    action: ACTION_CODES[rule.action],
    match: 0,
    proto: 0,
    src: zero,
    srcMask: zero,
    dst: zero,
    dstMask: zero,
    sportMin: 0,
    sportMax: 65535,
    dportMin: 0,
    dportMax: 65535,
  };
  let family: 4 | 6 | undefined = rule.family === "ipv4" ? 4 : rule.family === "ipv6" ? 6 : undefined;
  if (rule.src !== undefined) {
    const cidr = parseCidr(rule.src);
    family = cidr.family;
    record.src = cidr.network;
    record.srcMask = cidr.mask;
    record.match |= FirewallMatch.SRC;
  }
  if (rule.dst !== undefined) {
    const cidr = parseCidr(rule.dst);
    family = cidr.family;
    record.dst = cidr.network;
    record.dstMask = cidr.mask;
    record.match |= FirewallMatch.DST;
  }
  // An IPv4 block is a ::ffff:0:0/96 sub-block, which no IPv6 packet carries in practice; the
  // family bit makes it exact (and keeps "::/0" from matching IPv4 packets).
  if (family === 4) record.match |= FirewallMatch.IPV4;
  if (family === 6) record.match |= FirewallMatch.IPV6;
  if (rule.protocol !== undefined) {
    record.proto = typeof rule.protocol === "number" ? rule.protocol : PROTOCOL_NUMBERS[rule.protocol];
    record.match |= FirewallMatch.PROTO;
  }
  if (rule.sport !== undefined || rule.dport !== undefined) {
    record.match |= FirewallMatch.PORTS;
    if (rule.sport !== undefined) ({ min: record.sportMin, max: record.sportMax } = portRange(rule.sport));
    if (rule.dport !== undefined) ({ min: record.dportMin, max: record.dportMax } = portRange(rule.dport));
  }
  return record;
}

function portRange(value: number | string): { min: number; max: number } {
  if (typeof value === "number") return { min: value, max: value };
  const range = parsePortRange(value);
  if (!range) throw new RangeError(`invalid port range "${value}"`);
  return range;
}

function parsePortRange(text: string): { min: number; max: number } | undefined {
  const match = portRangePattern.exec(text.trim());
  if (!match) return undefined;
  const min = Number(match[1]);
  const max = match[2] === undefined ? min : Number(match[2]);
  if (min > 65535 || max > 65535) return undefined;
  return { min, max };
}

/** Key of the one entry of `firewall_rules`. */
const TABLE_KEY = Buffer.alloc(4);

/** The built-in `firewall`. */
export const firewall: BuiltinNf<FirewallParams, FirewallTables> = {
  name: "firewall",
  summary: "Ordered allow/deny rules on IPv4/IPv6 CIDR, protocol and port ranges; first match wins.",
  entry: "nf/firewall/firewall.bpf.c",
  sourceDir: "nf/firewall",
  programs: { xdp: "firewall_xdp", tc: "firewall_tc" },
  params: FirewallParams,
  rodata(params): RodataSetting[] {
    return [
      { variable: "firewall_default_action", type: "u32", value: BigInt(ACTION_CODES[params.defaultAction]) },
      { variable: "firewall_non_ip_action", type: "u32", value: BigInt(ACTION_CODES[params.nonIpAction]) },
    ];
  },
  tables: FirewallTables,
  encodeTables(tables): MapContents {
    // Always one entry, even for no rules: replacing the whole table is one atomic update.
    return {
      firewall_rules: [{ key: TABLE_KEY, value: encodeFirewallTable(tables.rules.map(encodeFirewallRule)) }],
    };
  },
  tableMaps: ["firewall_rules"],
  maps: {
    firewall_rules: {
      type: BpfMapType.HASH,
      keySize: 4,
      valueSize: FIREWALL_TABLE_LAYOUT.size,
      maxEntries: 1,
      flags: BPF_F_NO_PREALLOC,
    },
  },
};
