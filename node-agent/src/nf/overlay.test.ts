import { describe, expect, it } from "vitest";
import { BuiltinConfigError } from "../../../common/api/builtins/index.ts";
import { decodeOverlayCounters, encodeSegmentKey } from "./overlay.ts";
import { configureBuiltinNf } from "./registry.ts";

function configured(config: { parameters?: unknown; tables?: unknown }) {
  const result = configureBuiltinNf("overlay", config);
  if (!result.ok) throw result.error;
  return result.value;
}

/** Each refused field as `spec.<part>.<field>: message`, as `sluice validate` shows it. */
function refused(config: { parameters?: unknown; tables?: unknown }): string[] {
  const result = configureBuiltinNf("overlay", config);
  if (result.ok) throw new Error("expected the configuration to be refused");
  return result.error.issues.map(
    (issue) => `${BuiltinConfigError.specPath(result.error.part, issue)}: ${issue.message}`,
  );
}

describe("overlay parameters and tables", () => {
  it("defaults to VNI 1 on the VXLAN port 4789 with an outer TTL of 64", () => {
    const rodata = Object.fromEntries(configured({}).rodata.map((s) => [s.variable, s.value]));
    expect(rodata).toEqual({ overlay_vni: 1n, overlay_port: 4789n, overlay_ttl: 64n });
  });

  it("writes each segment as an LPM key in the 16-byte space and each node once", () => {
    const { mapContents } = configured({
      tables: {
        segments: [
          { prefix: "10.1.0.0/24", node: "192.168.0.1" },
          { prefix: "fd00:1::/64", node: "192.168.0.1" },
          { prefix: "10.2.0.0/16", node: "192.168.0.2" },
        ],
      },
    });
    const segments = mapContents.overlay_segments!;
    expect(segments).toHaveLength(3);
    // IPv4 /24 = 96 + 24 bits of ::ffff:10.1.0.0.
    expect(segments[0]!.key.toString("hex")).toBe(`78000000${"00".repeat(10)}ffff0a010000`);
    expect(segments[0]!.value.toString("hex")).toBe("c0a8000100000000");
    expect(segments[1]!.key.readUInt32LE(0)).toBe(64);
    expect(mapContents.overlay_nodes!.map((e) => e.key.toString("hex"))).toEqual(["c0a80001", "c0a80002"]);
  });

  it.each([
    ["a VNI above 24 bits", { parameters: { vni: 1 << 24 } }, "spec.parameters.vni"],
    ["VNI 0", { parameters: { vni: 0 } }, "spec.parameters.vni"],
    ["port 0", { parameters: { port: 0 } }, "spec.parameters.port"],
    ["an unknown parameter", { parameters: { mtu: 1450 } }, "spec.parameters"],
    [
      "a prefix with host bits",
      { tables: { segments: [{ prefix: "10.1.0.1/24", node: "192.168.0.1" }] } },
      "spec.tables.segments[0].prefix",
    ],
    [
      "an IPv6 node address",
      { tables: { segments: [{ prefix: "10.1.0.0/24", node: "fd00::1" }] } },
      "spec.tables.segments[0].node",
    ],
    [
      "one segment on two nodes",
      {
        tables: {
          segments: [
            { prefix: "10.1.0.0/24", node: "192.168.0.1" },
            { prefix: "10.1.0.0/24", node: "192.168.0.2" },
          ],
        },
      },
      "spec.tables.segments[1].prefix",
    ],
  ])("refuses %s, naming the field", (_, config, path) => {
    const issues = refused(config);
    expect(issues[0]).toMatch(new RegExp(`^${path.replace(/[.[\]]/g, "\\$&")}: `));
  });

  it("says what is wrong with a bad node address and a duplicate segment", () => {
    expect(refused({ tables: { segments: [{ prefix: "10.1.0.0/24", node: "node-a" }] } })).toEqual([
      'spec.tables.segments[0].node: "node-a" is not an IPv4 address (the underlay between nodes is IPv4)',
    ]);
    const [duplicate] = refused({
      tables: {
        segments: [
          { prefix: "10.1.0.0/24", node: "192.168.0.1" },
          { prefix: "10.1.0.0/24", node: "192.168.0.2" },
        ],
      },
    });
    expect(duplicate).toContain("is already segments[0] (hosted by 192.168.0.1)");
  });

  it("keys IPv4 prefixes as IPv4-mapped blocks", () => {
    expect(encodeSegmentKey("0.0.0.0/0").readUInt32LE(0)).toBe(96);
    expect(encodeSegmentKey("10.0.0.7").readUInt32LE(0)).toBe(128);
  });

  it("sums the per-CPU counters", () => {
    const entry = (counter: number, ...perCpu: number[]) => {
      const key = Buffer.alloc(4);
      key.writeUInt32LE(counter);
      const value = Buffer.alloc(8 * perCpu.length);
      perCpu.forEach((n, cpu) => value.writeBigUInt64LE(BigInt(n), cpu * 8));
      return { key, value };
    };
    expect(decodeOverlayCounters([entry(0, 3, 4), entry(1, 1, 0), entry(2, 0, 2), entry(5, 0, 0)])).toEqual({
      encapsulated: 7,
      decapsulated: 1,
      tooBig: 2,
      noNeighbour: 0,
      noRoute: 0,
      foreign: 0,
    });
  });
});
