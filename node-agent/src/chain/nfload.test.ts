import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { nfTablesDigest } from "./digests.ts";
import { nfLoadDigest } from "./nfload.ts";
import type { NfLoadSpec } from "./spec.ts";

const dir = mkdtempSync(join(tmpdir(), "sluice-nfload-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function objectFile(name: string, contents: string): string {
  const path = join(dir, name);
  writeFileSync(path, contents);
  return path;
}

const objectA = objectFile("a.o", "object A");
const objectB = objectFile("b.o", "object B");
const entry = (key: number, value: number) => ({
  key: Buffer.from([key, 0, 0, 0]),
  value: Buffer.from([value]),
});

const base: NfLoadSpec = {
  name: "ratelimit",
  objectPath: objectA,
  programName: "ratelimit_xdp",
  rodata: { ratelimit_rate: 1000, ratelimit_burst: 100 },
  tables: { rules: [entry(0, 1)] },
};

describe("nfLoadDigest: whether an earlier load of an NF can serve again", () => {
  it("is the same for the same NF loaded the same way, whatever the order of its parameters", () => {
    const reordered = { ...base, rodata: { ratelimit_burst: 100, ratelimit_rate: 1000 } };
    expect(nfLoadDigest("xdp", reordered, 1, 3, 4)).toBe(nfLoadDigest("xdp", base, 1, 3, 4));
  });

  it("ignores table contents (they are written anew) but not which maps are tables", () => {
    const otherRules = { ...base, tables: { rules: [entry(0, 2), entry(1, 1)] } };
    const noTables = { ...base, tables: {} };
    expect(nfLoadDigest("xdp", otherRules, 1, 3, 4)).toBe(nfLoadDigest("xdp", base, 1, 3, 4));
    expect(nfLoadDigest("xdp", noTables, 1, 3, 4)).not.toBe(nfLoadDigest("xdp", base, 1, 3, 4));
  });

  it.each([
    ["another object", () => nfLoadDigest("xdp", { ...base, objectPath: objectB }, 1, 3, 4)],
    ["another program", () => nfLoadDigest("xdp", { ...base, programName: "other_xdp" }, 1, 3, 4)],
    [
      "another parameter value",
      () => nfLoadDigest("xdp", { ...base, rodata: { ...base.rodata, ratelimit_burst: 101 } }, 1, 3, 4),
    ],
    ["another hook", () => nfLoadDigest("tc", base, 1, 3, 4)],
    ["another place in the chain", () => nfLoadDigest("xdp", base, 0, 3, 4)],
    ["the last place instead of a middle one", () => nfLoadDigest("xdp", base, 1, 2, 4)],
    ["another counters slot", () => nfLoadDigest("xdp", base, 1, 3, 5)],
    ["per-function time on", () => nfLoadDigest("xdp", base, 1, 3, 4, 16)],
  ])("differs for %s", (_, other) => {
    expect(other()).not.toBe(nfLoadDigest("xdp", base, 1, 3, 4));
  });

  it("is what it was before per-function time existed while that is off", () => {
    expect(nfLoadDigest("xdp", base, 1, 3, 4, 0)).toBe(nfLoadDigest("xdp", base, 1, 3, 4));
  });

  it("notices an object rewritten in place with the same size", () => {
    const path = objectFile("rewritten.o", "version 1");
    const spec = { ...base, objectPath: path };
    const before = nfLoadDigest("xdp", spec, 1, 3, 4);
    writeFileSync(path, "version 2");
    expect(nfLoadDigest("xdp", spec, 1, 3, 4)).not.toBe(before);
  });
});

describe("nfTablesDigest", () => {
  it("depends on the entries, not on their order", () => {
    const a = { ...base, tables: { rules: [entry(0, 1), entry(1, 2)] } };
    const b = { ...base, tables: { rules: [entry(1, 2), entry(0, 1)] } };
    const c = { ...base, tables: { rules: [entry(0, 1), entry(1, 3)] } };
    expect(nfTablesDigest(a)).toBe(nfTablesDigest(b));
    expect(nfTablesDigest(a)).not.toBe(nfTablesDigest(c));
  });
});
