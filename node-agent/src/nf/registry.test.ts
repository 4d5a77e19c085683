import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { BPF_DIR } from "../compile/compile.ts";
import { topTalkers } from "./flowmon.ts";
import { decodeRatelimitEntry } from "./ratelimit.ts";
import { formatPath } from "../../../common/api/builtins/index.ts";
import { BUILTIN_NFS, configureBuiltinNf, getBuiltinNf } from "./registry.ts";
import { encodeRodataValue } from "./types.ts";

describe("built-in NF registry", () => {
  it.each(Object.values(BUILTIN_NFS))("$name: entry exists and defines each program it lists", (nf) => {
    const entry = join(BPF_DIR, nf.entry);
    expect(existsSync(entry)).toBe(true);
    expect(nf.entry.startsWith(`${nf.sourceDir}/`)).toBe(true);
    const source = readFileSync(entry, "utf8");
    expect(nf.programs).toEqual({ xdp: `${nf.name}_xdp`, tc: `${nf.name}_tc` });
    expect(source).toContain(`SEC("xdp")\nint ${nf.name}_xdp(`);
    expect(source).toContain(`SEC("tc")\nint ${nf.name}_tc(`);
  });

  it.each(Object.values(BUILTIN_NFS))(
    "$name: configures with all defaults and fills every table map",
    (nf) => {
      const result = configureBuiltinNf(nf.name);
      expect(result.ok).toBe(true);
      if (!result.ok) return;
      expect(Object.keys(result.value.mapContents).sort()).toEqual([...nf.tableMaps].sort());
      for (const map of nf.tableMaps) expect(nf.maps[map]).toBeDefined();
    },
  );

  it("ratelimit defaults to 1000 packets/s with a burst of 100", () => {
    const result = configureBuiltinNf("ratelimit");
    if (!result.ok) throw result.error;
    expect(result.value.params).toEqual({ rate: 1000, burst: 100 });
    expect(result.value.rodata).toEqual([
      { variable: "ratelimit_rate", type: "u32", value: 1000n },
      { variable: "ratelimit_burst", type: "u32", value: 100n },
    ]);
  });

  it.each([
    [{ rate: 0 }, "rate"],
    [{ rate: 10, burst: "5" }, "burst"],
    [{ rate: 1.5 }, "rate"],
    [{ rat: 10 }, ""],
  ])("ratelimit parameters %j are refused at %s", (parameters, field) => {
    const result = configureBuiltinNf("ratelimit", { parameters });
    expect(result.ok).toBe(false);
    if (result.ok) return;
    expect(result.error.part).toBe("parameters");
    expect(result.error.issues[0]!.field).toBe(field);
    expect(result.error.message).toMatch(/^ratelimit parameters: /);
    expect(result.error.reason).toBe("InvalidSpec");
  });

  it("tables given to an NF without tables are refused", () => {
    const result = configureBuiltinNf("flowmon", { tables: { rules: [] } });
    expect(result.ok).toBe(false);
  });

  it("an unknown built-in is refused, listing the known ones", () => {
    expect(getBuiltinNf("nat")).toBeUndefined();
    const result = configureBuiltinNf("nat");
    expect(result.ok).toBe(false);
    if (result.ok) return;
    expect(result.error.part).toBe("name");
    expect(result.error.reason).toBe("BuiltinNotFound");
    expect(result.error.message).toContain("firewall, ratelimit, flowmon, noop");
  });

  it("formats zod paths the way people write them", () => {
    expect(formatPath(["rules", 3, "src"])).toBe("rules[3].src");
    expect(formatPath([])).toBe("");
  });

  it("encodes .rodata values little-endian at their C size", () => {
    expect(encodeRodataValue({ variable: "x", type: "u32", value: 1000n }).toString("hex")).toBe("e8030000");
    expect(encodeRodataValue({ variable: "x", type: "u64", value: 1n << 40n }).toString("hex")).toBe(
      "0000000000010000",
    );
  });
});

function flowKey(
  src: string,
  dst: string,
  proto: number,
  sport: number,
  dport: number,
  family: 4 | 6,
): Buffer {
  const key = Buffer.alloc(40);
  Buffer.from(src, "hex").copy(key, 0);
  Buffer.from(dst, "hex").copy(key, 16);
  key.writeUInt16BE(sport, 32);
  key.writeUInt16BE(dport, 34);
  key[36] = proto;
  key[37] = family;
  return key;
}

function counters(packets: number, bytes: number): Buffer {
  const value = Buffer.alloc(32);
  value.writeBigUInt64LE(BigInt(packets), 0);
  value.writeBigUInt64LE(BigInt(bytes), 8);
  value.writeBigUInt64LE(5n, 16);
  value.writeBigUInt64LE(9n, 24);
  return value;
}

describe("decoders", () => {
  const v4 = (last: string) => `00000000000000000000ffff0a0000${last}`;
  const entries = [
    { key: flowKey(v4("01"), v4("02"), 17, 1234, 53, 4), value: counters(3, 180) },
    {
      key: flowKey("fd000000000000000000000000000001", "fd000000000000000000000000000002", 6, 40000, 443, 6),
      value: counters(10, 9000),
    },
    { key: flowKey(v4("03"), v4("02"), 1, 0, 0, 4), value: counters(50, 3000) },
  ];

  it("flowmon top talkers by bytes, with addresses as text", () => {
    expect(topTalkers(entries, { limit: 2 })).toEqual([
      {
        family: 6,
        src: "fd00::1",
        dst: "fd00::2",
        proto: 6,
        sport: 40000,
        dport: 443,
        packets: 10,
        bytes: 9000,
        firstSeenNs: 5n,
        lastSeenNs: 9n,
      },
      {
        family: 4,
        src: "10.0.0.3",
        dst: "10.0.0.2",
        proto: 1,
        sport: 0,
        dport: 0,
        packets: 50,
        bytes: 3000,
        firstSeenNs: 5n,
        lastSeenNs: 9n,
      },
    ]);
  });

  it("flowmon top talkers by packets", () => {
    expect(topTalkers(entries, { by: "packets" }).map((f) => f.packets)).toEqual([50, 10, 3]);
  });

  it("ratelimit buckets decode the source of either family", () => {
    const tat = Buffer.alloc(8);
    tat.writeBigUInt64LE(123n);
    expect(decodeRatelimitEntry(Buffer.from(v4("07"), "hex"), tat)).toEqual({
      source: "10.0.0.7",
      family: 4,
      tatNs: 123n,
    });
    expect(decodeRatelimitEntry(Buffer.from("20010db8000000000000000000000001", "hex"), tat).source).toBe(
      "2001:db8::1",
    );
  });
});
