import {
  portRangeBounds,
  protocolNumber,
  type FirewallParams,
  type FirewallRule,
  type FirewallTables,
} from "../../../common/api/builtins/index.ts";
import { parseCidr } from "../../../common/net/ip.ts";
import {
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
    record.proto = protocolNumber(rule.protocol);
    record.match |= FirewallMatch.PROTO;
  }
  if (rule.sport !== undefined || rule.dport !== undefined) {
    record.match |= FirewallMatch.PORTS;
    if (rule.sport !== undefined)
      ({ min: record.sportMin, max: record.sportMax } = portRangeBounds(rule.sport));
    if (rule.dport !== undefined)
      ({ min: record.dportMin, max: record.dportMax } = portRangeBounds(rule.dport));
  }
  return record;
}

/** Key of the one entry of `firewall_rules`. */
const TABLE_KEY = Buffer.alloc(4);

/** The built-in `firewall`. */
export const firewall: BuiltinNf<FirewallParams, FirewallTables> = {
  name: "firewall",
  entry: "nf/firewall/firewall.bpf.c",
  sourceDir: "nf/firewall",
  programs: { xdp: "firewall_xdp", tc: "firewall_tc" },
  rodata(params): RodataSetting[] {
    return [
      { variable: "firewall_default_action", type: "u32", value: BigInt(ACTION_CODES[params.defaultAction]) },
      { variable: "firewall_non_ip_action", type: "u32", value: BigInt(ACTION_CODES[params.nonIpAction]) },
    ];
  },
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
