import { describe, expect, it } from "vitest";
import { MapType, type MapDefinition } from "../libbpf/index.ts";
import type { NfLoadSpec } from "./spec.ts";
import { checkTables } from "./tables.ts";

const entry = (key: number, value: number) => ({
  key: Buffer.from([key, 0, 0, 0]),
  value: Buffer.from([value]),
});
const maps: Record<string, MapDefinition> = {
  rules: { type: MapType.HASH, keySize: 4, valueSize: 1, maxEntries: 2, flags: 0 },
  percpu: { type: MapType.PERCPU_HASH, keySize: 4, valueSize: 1, maxEntries: 2, flags: 0 },
};
const spec = (tables: NfLoadSpec["tables"]): NfLoadSpec => ({
  name: "fw",
  objectPath: "/nonexistent/fw.o",
  programName: "fw_xdp",
  tables,
});
const check = (tables: NfLoadSpec["tables"]) => () =>
  checkTables(spec(tables), (m) => maps[m], Object.keys(maps));

describe("checkTables refuses tables the NF's maps cannot hold, naming the field", () => {
  it.each([
    [
      "a map the NF does not have",
      { missing: [entry(0, 1)] },
      "fw: tables: no map missing in the NF (its maps: rules, percpu)",
      "tables.missing",
    ],
    [
      "a per-CPU map",
      { percpu: [entry(0, 1)] },
      "fw: tables: map percpu is per-CPU; tables fill only shared maps",
      "tables.percpu",
    ],
    [
      "more entries than the map holds",
      { rules: [entry(0, 1), entry(1, 1), entry(2, 1)] },
      "fw: tables: 3 entries for map rules of 2",
      "tables.rules",
    ],
    [
      "an entry of the wrong size",
      { rules: [entry(0, 1), { key: Buffer.alloc(2), value: Buffer.alloc(1) }] },
      "fw: tables: rules[1]: key 2 / value 1 bytes; the map has 4 / 1",
      "tables.rules[1]",
    ],
  ])("%s", (_what, tables, message, path) => {
    expect(check(tables)).toThrow(
      expect.objectContaining({ name: "ChainSpecError", reason: "InvalidSpec", retry: "stall", message }),
    );
    expect(check(tables)).toThrow(expect.objectContaining({ issues: [expect.objectContaining({ path })] }));
  });

  it("accepts tables that fit", () => {
    expect(check({ rules: [entry(0, 1), entry(1, 2)] })).not.toThrow();
  });
});
