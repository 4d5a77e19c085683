import { describe, expect, it } from "vitest";
import { configureBuiltinNf, type ConfiguredBuiltinNf } from "./registry.ts";
import { FIREWALL_TABLE_LAYOUT, FirewallMatch, decodeFirewallTable } from "./structs.ts";

function configure(tables: unknown, parameters?: unknown): ConfiguredBuiltinNf {
  const result = configureBuiltinNf("firewall", { tables, parameters });
  if (!result.ok) throw result.error;
  return result.value;
}

function tableOf(configured: ConfiguredBuiltinNf): Buffer {
  const entries = configured.mapContents.firewall_rules!;
  expect(entries).toHaveLength(1);
  expect(entries[0]!.key.toString("hex")).toBe("00000000");
  return entries[0]!.value;
}

function errorOf(tables: unknown, parameters?: unknown) {
  const result = configureBuiltinNf("firewall", { tables, parameters });
  if (result.ok) throw new Error("expected the configuration to be refused");
  return result.error;
}

describe("firewall rule table", () => {
  it("no rules is still one table entry (count 0), so clearing rules is one atomic update", () => {
    const table = tableOf(configure({}));
    expect(table.length).toBe(FIREWALL_TABLE_LAYOUT.size);
    expect(table.readUInt32LE(0)).toBe(0);
  });

  it("encodes an IPv4 rule at the offsets of struct firewall_rule", () => {
    const table = tableOf(
      configure({ rules: [{ action: "deny", src: "10.0.0.0/8", protocol: "tcp", dport: "1000-2000" }] }),
    );
    expect(table.readUInt32LE(0)).toBe(1);
    const rule = table.subarray(8, 8 + 80);
    expect(rule.subarray(0, 16).toString("hex")).toBe("00000000000000000000ffff0a000000"); // src
    expect(rule.subarray(16, 32).toString("hex")).toBe("ffffffffffffffffffffffffff000000"); // src_mask
    expect(rule.subarray(32, 64).equals(Buffer.alloc(32))).toBe(true); // dst, dst_mask unused
    expect(rule.subarray(64, 72).toString("hex")).toBe("0000ffff" + "e803d007"); // sport 0-65535, dport 1000-2000 (LE)
    expect(rule[72]).toBe(2); // FIREWALL_DENY
    expect(rule[73]).toBe(FirewallMatch.SRC | FirewallMatch.IPV4 | FirewallMatch.PROTO | FirewallMatch.PORTS);
    expect(rule[74]).toBe(6);
  });

  it("keeps rule order: the first rule in the list is the first in the table", () => {
    const rules = decodeFirewallTable(
      tableOf(
        configure({
          rules: [
            { action: "deny", dport: 22 },
            { action: "allow", dst: "fd00::/64", protocol: 58 },
            { action: "allow", family: "ipv6" },
          ],
        }),
      ),
    );
    expect(rules.map((r) => [r.action, r.match])).toEqual([
      [2, FirewallMatch.PORTS],
      [1, FirewallMatch.DST | FirewallMatch.IPV6 | FirewallMatch.PROTO],
      [1, FirewallMatch.IPV6],
    ]);
    expect(rules[0]!.dportMin).toBe(22);
    expect(rules[0]!.dportMax).toBe(22);
    expect(rules[1]!.dst.toString("hex")).toBe("fd000000000000000000000000000000");
    expect(rules[1]!.proto).toBe(58);
  });

  it("maps defaultAction and nonIpAction to their .rodata settings", () => {
    const { rodata } = configure({}, { defaultAction: "deny" });
    expect(rodata).toEqual([
      { variable: "firewall_default_action", type: "u32", value: 2n },
      { variable: "firewall_non_ip_action", type: "u32", value: 1n },
    ]);
  });
});

describe("firewall configuration errors name the field", () => {
  it.each([
    [
      { rules: [{ action: "allow" }, { action: "deny", src: "10.0.0.1/8" }] },
      "rules[1].src",
      "did you mean 10.0.0.0/8?",
    ],
    [{ rules: [{ action: "deny", dport: "70000" }] }, "rules[0].dport", "not a port"],
    [{ rules: [{ action: "deny", sport: "2000-1000" }] }, "rules[0].sport", "reversed"],
    [
      { rules: [{ action: "deny", protocol: "icmp", dport: 80 }] },
      "rules[0].protocol",
      "ports need protocol tcp or udp",
    ],
    [{ rules: [{ action: "deny", src: "10.0.0.0/8", dst: "fd00::/8" }] }, "rules[0].dst", "same IP version"],
    [{ rules: [{ action: "deny", src: "10.0.0.0/8", family: "ipv6" }] }, "rules[0].family", "contradicts"],
    [{ rules: [{ action: "reject" }] }, "rules[0].action", ""],
    [{ rules: Array.from({ length: 65 }, () => ({ action: "deny" })) }, "rules", "64"],
  ])("%j -> %s", (tables, field, message) => {
    const error = errorOf(tables);
    expect(error.part).toBe("tables");
    const issue = error.issues.find((i) => i.field === field);
    expect(issue, `issues: ${error.message}`).toBeDefined();
    expect(issue!.message).toContain(message);
    expect(error.message).toContain(`firewall tables: ${field}`);
  });

  it("an unknown rule field is refused, naming it", () => {
    const error = errorOf({ rules: [{ action: "deny", port: 22 }] });
    expect(error.message).toContain("rules[0]");
    expect(error.message).toContain("port");
  });

  it("a wrong parameter names the parameter", () => {
    const error = errorOf({}, { defaultAction: "drop" });
    expect(error.part).toBe("parameters");
    expect(error.issues[0]!.field).toBe("defaultAction");
  });
});
