import { describe, expect, it } from "vitest";
import { ChainSpecError, MAX_CHAIN_LENGTH, validateChainSpec, type ChainSpec } from "./spec.ts";

const spec = (overrides: Partial<ChainSpec> = {}): ChainSpec => ({
  name: "edge",
  revision: "r1",
  hook: "xdp",
  interfaces: ["eth0"],
  functions: [{ name: "firewall", objectPath: "/nowhere/firewall.o" }],
  ...overrides,
});

describe("validateChainSpec", () => {
  it("accepts a well-formed chain", () => {
    expect(() => validateChainSpec(spec())).not.toThrow();
  });

  it.each([
    [
      "a chain longer than the kernel's tail-call limit",
      {
        functions: Array.from({ length: MAX_CHAIN_LENGTH + 1 }, (_, i) => ({
          name: `nf${i}`,
          objectPath: "x.o",
        })),
      },
      /33 network functions; at most 32/,
    ],
    [
      "an NF named twice",
      {
        functions: [
          { name: "a", objectPath: "x.o" },
          { name: "a", objectPath: "y.o" },
        ],
      },
      /functions\[1\]\.name: a appears twice/,
    ],
    ["no interface", { interfaces: [] }, /at least one interface/],
    [
      "an interface name longer than 15 bytes",
      { interfaces: ["a-very-long-ifname"] },
      /interfaces\[0\]: "a-very-long-ifname" is not an interface name/,
    ],
    ["an interface name with a slash", { interfaces: ["eth0/1"] }, /not an interface name/],
    ["an interface named twice", { interfaces: ["eth0", "eth0"] }, /interfaces\[1\]: eth0 appears twice/],
    ["a chain name that is not a directory name", { name: "../up" }, /not a valid chain name/],
  ] as const)("refuses %s", (_, overrides, message) => {
    expect(() => validateChainSpec(spec(overrides as Partial<ChainSpec>))).toThrow(ChainSpecError);
    expect(() => validateChainSpec(spec(overrides as Partial<ChainSpec>))).toThrow(message);
  });
});
