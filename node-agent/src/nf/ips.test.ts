import { describe, expect, it } from "vitest";
import { decodeIpsHits } from "./ips.ts";
import { configureBuiltinNf, type ConfiguredBuiltinNf } from "./registry.ts";
import {
  IPS_SIGNATURE_LAYOUT,
  IPS_TABLE_LAYOUT,
  IpsAction,
  IpsHitKey,
  IpsSigFlag,
  ipsBucketOf,
} from "./structs.ts";

function configure(tables: unknown, parameters?: unknown): ConfiguredBuiltinNf {
  const result = configureBuiltinNf("ips", { tables, parameters });
  if (!result.ok) throw result.error;
  return result.value;
}

function refused(tables: unknown, parameters?: unknown): { field: string; message: string }[] {
  const result = configureBuiltinNf("ips", { tables, parameters });
  if (result.ok) throw new Error("expected the configuration to be refused");
  return result.error.issues.map(({ field, message }) => ({ field, message }));
}

function tableOf(configured: ConfiguredBuiltinNf): Buffer {
  const entries = configured.mapContents.ips_signatures!;
  expect(entries).toHaveLength(1);
  return entries[0]!.value;
}

const sigAt = (i: number) => IPS_TABLE_LAYOUT.offsets.sigs! + i * IPS_SIGNATURE_LAYOUT.size;

/** Table index of the signature with `id`. */
function indexOf(table: Buffer, id: number): number {
  for (let i = 0; i < table.readUInt32LE(0); i++) if (table.readUInt32LE(sigAt(i) + 80) === id) return i;
  throw new Error(`no signature ${id}`);
}

/** [start, count] of the bucket of a case-folded two-byte prefix. */
function bucket(table: Buffer, prefix: string): [number, number] {
  const at =
    IPS_TABLE_LAYOUT.offsets.buckets! + ipsBucketOf(prefix.charCodeAt(0) | (prefix.charCodeAt(1) << 8)) * 2;
  return [table[at]!, table[at + 1]!];
}

describe("ips signature table", () => {
  it("no signatures is still one table entry (count 0), so clearing them is one atomic update", () => {
    const table = tableOf(configure({}));
    expect(table.length).toBe(IPS_TABLE_LAYOUT.size);
    expect(table.readUInt32LE(0)).toBe(0);
  });

  it("encodes content with |hex| blocks, folds nocase content and sets the prefilter bits", () => {
    const table = tableOf(
      configure({
        signatures: [
          { id: 7, content: "AB|0d 0a|", nocase: true, offset: 4, depth: 20, proto: "tcp", dstPort: "80-81" },
          { id: 9, content: "xy", action: "alert" },
        ],
      }),
    );
    expect(table.readUInt32LE(0)).toBe(2);
    const first = sigAt(indexOf(table, 7));
    expect(table.subarray(first, first + 4).toString("hex")).toBe("61620d0a");
    expect(table.readUInt16LE(first + 64)).toBe(4);
    expect(table.readUInt16LE(first + 66)).toBe(4);
    expect(table.readUInt16LE(first + 68)).toBe(20);
    expect([table.readUInt16LE(first + 74), table.readUInt16LE(first + 76)]).toEqual([80, 81]);
    expect([table.readUInt16LE(first + 70), table.readUInt16LE(first + 72)]).toEqual([0, 65535]);
    expect(table[first + 78]).toBe(6);
    expect(table[first + 79]).toBe(IpsSigFlag.NOCASE | IpsSigFlag.PROTO | IpsSigFlag.PORTS);
    expect(table.readUInt32LE(first + 80)).toBe(7);
    expect(table[first + 84]).toBe(IpsAction.DROP);
    expect(table[sigAt(indexOf(table, 9)) + 84]).toBe(IpsAction.ALERT);
    expect(table.readUInt16LE(sigAt(indexOf(table, 9)) + 68)).toBe(0);
    // Bits first | second << 8: "ab" in its four case variants (nocase), "xy" as written.
    const bits: number[] = [];
    for (let word = 0; word < 1024; word++) {
      const value = table.readBigUInt64LE(8 + word * 8);
      for (let bit = 0; bit < 64; bit++) if ((value >> BigInt(bit)) & 1n) bits.push(word * 64 + bit);
    }
    expect(bits).toEqual([0x4241, 0x4261, 0x6241, 0x6261, 0x7978]);
  });

  it("signatures are grouped by the bucket of their case-folded prefix, in the given order within one", () => {
    const table = tableOf(
      configure({
        signatures: [
          { id: 1, content: "xyz1" },
          { id: 2, content: "GET /a" },
          { id: 3, content: "xyz2" },
          { id: 4, content: "get /b", nocase: true },
        ],
      }),
    );
    const [xyStart, xyCount] = bucket(table, "xy");
    const [geStart, geCount] = bucket(table, "ge");
    expect(xyCount).toBe(2);
    expect(geCount).toBe(2);
    expect([indexOf(table, 1), indexOf(table, 3)]).toEqual([xyStart, xyStart + 1]);
    expect([indexOf(table, 2), indexOf(table, 4)]).toEqual([geStart, geStart + 1]);
  });

  it("parameters become .rodata settings", () => {
    const { rodata } = configure(
      {},
      { mode: "detect", synFloodThreshold: 50, portScanPorts: 20, portScanSeconds: 5 },
    );
    expect(Object.fromEntries(rodata.map((r) => [r.variable, r.value]))).toEqual({
      ips_detect_only: 1n,
      ips_syn_threshold: 50n,
      ips_scan_ports: 20n,
      ips_scan_window_ns: 5_000_000_000n,
      ips_scan_budget: 8192n,
      ips_budget_drop: 1n,
    });
  });

  it.each([
    [{ signatures: [{ id: 1, content: "a" }] }, "signatures[0].content", /content must be 2 to 64 bytes/],
    [{ signatures: [{ id: 1, content: "x".repeat(65) }] }, "signatures[0].content", /65 bytes/],
    [{ signatures: [{ id: 1, content: "ab|0g|" }] }, "signatures[0].content", /not hex bytes/],
    [{ signatures: [{ id: 1, content: "ab|0d" }] }, "signatures[0].content", /not closed/],
    [
      { signatures: [{ id: 1, content: "abcd", depth: 3 }] },
      "signatures[0].depth",
      /shorter than the 4-byte/,
    ],
    [{ signatures: [{ id: 1, content: "abcd", offset: 2046 }] }, "signatures[0].offset", /past the 2048/],
    [
      { signatures: [{ id: 1, content: "ab", proto: "icmp", dstPort: 80 }] },
      "signatures[0].proto",
      /tcp or udp/,
    ],
    [
      {
        signatures: [
          { id: 1, content: "ab" },
          { id: 1, content: "cd" },
        ],
      },
      "signatures[1].id",
      /also signatures\[0\]/,
    ],
    [{ signatures: [{ id: 0x80000001, content: "ab" }] }, "signatures[0].id", /<=2147483647/],
    [
      { signatures: Array.from({ length: 129 }, (_, i) => ({ id: i + 1, content: "ab" })) },
      "signatures",
      /128/,
    ],
  ])("hostile or bad tables are refused: %j at %s", (tables, field, message) => {
    const issues = refused(tables);
    expect(issues[0]!.field).toBe(field);
    expect(issues[0]!.message).toMatch(message);
  });

  it.each([
    [{ mode: "block" }, "mode"],
    [{ synFloodThreshold: -1 }, "synFloodThreshold"],
    [{ portScanPorts: 1 }, "portScanPorts"],
    [{ portScanPorts: 10_000 }, "portScanPorts"],
    [{ portScanSeconds: 0 }, "portScanSeconds"],
    [{ scanBudget: 0 }, "scanBudget"],
    [{ onScanBudget: "ignore" }, "onScanBudget"],
  ])("bad parameters are refused: %j", (parameters, field) => {
    expect(refused({}, parameters)[0]!.field).toBe(field);
  });

  it("hit counters decode by signature id and by stateful rule", () => {
    const entry = (id: number, count: number) => {
      const key = Buffer.alloc(4);
      key.writeUInt32LE(id);
      const value = Buffer.alloc(8);
      value.writeBigUInt64LE(BigInt(count));
      return { key, value };
    };
    expect(
      decodeIpsHits([
        entry(7, 3),
        entry(IpsHitKey.SYN_FLOOD, 40),
        entry(IpsHitKey.PORT_SCAN, 2),
        entry(IpsHitKey.SCAN_BUDGET, 1),
      ]),
    ).toEqual({ signatures: { 7: 3 }, synFlood: 40, portScan: 2, scanBudget: 1 });
  });
});
