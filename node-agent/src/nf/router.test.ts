import { describe, expect, it } from "vitest";
import { configureBuiltinNf } from "./registry.ts";

function rodata(parameters?: unknown): Record<string, bigint> {
  const result = configureBuiltinNf("router", { parameters });
  if (!result.ok) throw result.error;
  return Object.fromEntries(result.value.rodata.map((s) => [s.variable, s.value]));
}

function refused(parameters: unknown): string[] {
  const result = configureBuiltinNf("router", { parameters });
  if (result.ok) throw new Error("expected the parameters to be refused");
  return result.error.issues.map(({ field, message }) => `${field}: ${message}`);
}

describe("router parameters", () => {
  it("forwards both families and decrements the TTL by default", () => {
    expect(rodata()).toEqual({ router_families: 3n, router_decrement_ttl: 1n });
  });

  it("turns the families and the TTL switch into .rodata settings", () => {
    expect(rodata({ families: "ipv6", decrementTtl: false })).toEqual({
      router_families: 2n,
      router_decrement_ttl: 0n,
    });
    expect(rodata({ families: "ipv4" })).toMatchObject({ router_families: 1n });
  });

  it("refuses unknown families, a list, a non-boolean TTL switch and unknown fields", () => {
    expect(refused({ families: "ipx" })[0]).toMatch(/^families: /);
    expect(refused({ families: ["ipv4"] })[0]).toMatch(/^families: /);
    expect(refused({ decrementTtl: "yes" })[0]).toMatch(/^decrementTtl: /);
    expect(refused({ routes: [] })[0]).toMatch(/routes/);
  });

  it("has no tables: routes and neighbours come from the kernel", () => {
    const result = configureBuiltinNf("router", { tables: { routes: [] } });
    expect(result.ok).toBe(false);
    const ok = configureBuiltinNf("router");
    expect(ok.ok && ok.value.mapContents).toEqual({});
  });
});
