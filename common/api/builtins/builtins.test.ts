import { describe, expect, it } from "vitest";
import { BUILTIN_SCHEMAS, BuiltinConfigError, BuiltinNfName, checkBuiltinConfig } from "./index.ts";

describe("built-in schemas", () => {
  it.each(BuiltinNfName.options)("%s accepts no parameters and no tables (all defaults)", (name) => {
    expect(checkBuiltinConfig(name).ok).toBe(true);
    expect(BUILTIN_SCHEMAS[name].summary).not.toBe("");
  });

  it.each([
    ["an unknown name", "nat", {}, "BuiltinNotFound", "spec.source.builtin"],
    ["a rate of 0", "ratelimit", { parameters: { rate: 0 } }, "InvalidSpec", "spec.parameters.rate"],
    ["an unknown parameter", "ratelimit", { parameters: { rat: 1 } }, "InvalidSpec", "spec.parameters"],
    [
      "a rule with host bits",
      "firewall",
      { tables: { rules: [{ action: "deny" }, { action: "deny", src: "10.0.0.1/8" }] } },
      "InvalidSpec",
      "spec.tables.rules[1].src",
    ],
    ["tables for an NF without tables", "flowmon", { tables: { rules: [] } }, "InvalidSpec", "spec.tables"],
  ])("%s is refused with %s at its NetworkFunction field", (_, name, config, reason, path) => {
    const result = checkBuiltinConfig(name, config);
    expect(result.ok).toBe(false);
    if (result.ok) return;
    expect(result.error).toBeInstanceOf(BuiltinConfigError);
    expect(result.error.reason).toBe(reason);
    expect(BuiltinConfigError.specPath(result.error.part, result.error.issues[0]!)).toBe(path);
  });
});
