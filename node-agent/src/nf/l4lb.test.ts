import { describe, expect, it } from "vitest";
import { decodeL4lbFlow, encodeL4lbService, maglevTable } from "./l4lb.ts";
import { configureBuiltinNf } from "./registry.ts";
import { L4LB_SERVICE_LAYOUT } from "./structs.ts";

const names = (n: number) => Array.from({ length: n }, (_, i) => `10.1.0.${i + 1}:8080`);

function shares(table: Int16Array, n: number): number[] {
  const counts = new Array<number>(n).fill(0);
  for (const owner of table) counts[owner]!++;
  return counts;
}

/** Fraction of entries whose backend (by name) differs between two tables. */
function moved(before: Int16Array, beforeNames: string[], after: Int16Array, afterNames: string[]): number {
  let changed = 0;
  for (let i = 0; i < before.length; i++) if (beforeNames[before[i]!] !== afterNames[after[i]!]) changed++;
  return changed / before.length;
}

function refused(config: { parameters?: unknown; tables?: unknown }): string[] {
  const result = configureBuiltinNf("l4lb", config);
  if (result.ok) throw new Error("expected the configuration to be refused");
  return result.error.issues.map(({ field, message }) => `${field}: ${message}`);
}

describe("Maglev lookup table", () => {
  it.each([
    [4, 65537],
    [10, 65537],
    [7, 251],
  ])("%i backends share %i entries evenly (each size/n or one more)", (n, size) => {
    const counts = shares(maglevTable(names(n), size), n);
    const even = Math.floor(size / n);
    for (const count of counts) expect(count === even || count === even + 1).toBe(true);
  });

  it("gives weighted backends their share: weights 1, 2, 1 take a quarter, a half and a quarter", () => {
    const counts = shares(maglevTable(names(3), 65537, undefined, [1, 2, 1]), 3);
    expect(counts.map((c) => Math.round((c / 65537) * 1000) / 1000)).toEqual([0.25, 0.5, 0.25]);
  });

  it("does not depend on the order of the backends", () => {
    const list = names(5);
    const reversed = [...list].reverse();
    const a = maglevTable(list, 4093);
    const b = maglevTable(reversed, 4093);
    for (let i = 0; i < a.length; i++) expect(list[a[i]!]).toBe(reversed[b[i]!]);
  });

  it("removing one of 10 backends moves about its share of entries, and only a little of the others'", () => {
    const before = names(10);
    const after = before.filter((_, i) => i !== 3);
    const a = maglevTable(before, 65537);
    const b = maglevTable(after, 65537);
    const fraction = moved(a, before, b, after);
    // Its own 10% must move; Maglev moves a few percent of the others' too (the paper's figure 11).
    expect(fraction).toBeGreaterThanOrEqual(0.1);
    expect(fraction).toBeLessThan(0.1 + 0.03);
  });

  it("an unhealthy backend is left out, and taking it back restores the same table", () => {
    const list = names(4);
    const all = maglevTable(list, 1021);
    const without = maglevTable(list, 1021, [true, false, true, true]);
    expect(without.includes(1)).toBe(false);
    expect(shares(without, 4)[1]).toBe(0);
    expect(maglevTable(list, 1021, [true, true, true, true])).toEqual(all);
  });
});

describe("l4lb service table", () => {
  const service = {
    vip: "10.96.0.10",
    port: 80,
    backends: [{ address: "10.1.0.1", port: 8080 }, { address: "10.1.0.2" }],
    tableSize: 251,
  };

  it("encodes a service: key vip/port/proto, backends with health, the ring of healthy ones", () => {
    const result = configureBuiltinNf("l4lb", {
      tables: { services: [service], health: [{ address: "10.1.0.2", healthy: false }] },
    });
    if (!result.ok) throw result.error;
    const [entry] = result.value.mapContents.l4lb_services!;
    expect(entry!.key.toString("hex")).toBe(
      "00000000000000000000ffff0a60000a" + "0050" + "06" + "0000000000",
    );
    const value = entry!.value;
    expect(value.length).toBe(L4LB_SERVICE_LAYOUT.size);
    expect(value.readUInt32LE(0)).toBe(251);
    expect(value.readUInt16LE(4)).toBe(2); // backends
    expect(value.readUInt16LE(6)).toBe(1); // healthy
    expect(value.readUInt16BE(8 + 16)).toBe(8080);
    expect(value[8 + 18]).toBe(1);
    expect(value.readUInt16BE(8 + 24 + 16)).toBe(80); // the service's port by default
    expect(value[8 + 24 + 18]).toBe(0);
    const ring = value.subarray(L4LB_SERVICE_LAYOUT.offsets.ring!, L4LB_SERVICE_LAYOUT.offsets.ring! + 251);
    expect(new Set(ring)).toEqual(new Set([0]));
  });

  it("encodes IPv6 services and backends", () => {
    const value = encodeL4lbService(
      {
        vip: "fd00::10",
        port: 53,
        proto: "udp",
        backends: [{ address: "fd01::1", weight: 1 }],
        tableSize: 7,
      },
      [],
    );
    expect(value.subarray(8, 24).toString("hex")).toBe("fd010000000000000000000000000001");
  });

  it("decodes a remembered flow", () => {
    const key = Buffer.alloc(40);
    Buffer.from("00000000000000000000ffff0a000001", "hex").copy(key, 0);
    Buffer.from("00000000000000000000ffff0a60000a", "hex").copy(key, 16);
    key.writeUInt16BE(40000, 32);
    key.writeUInt16BE(80, 34);
    key[36] = 6;
    key[37] = 4;
    const value = Buffer.alloc(24);
    Buffer.from("00000000000000000000ffff0a010001", "hex").copy(value, 0);
    value.writeUInt16BE(8080, 16);
    expect(decodeL4lbFlow({ key, value })).toMatchObject({
      flow: { src: "10.0.0.1", dst: "10.96.0.10", sport: 40000, dport: 80, proto: 6 },
      backend: "10.1.0.1",
      backendPort: 8080,
    });
  });

  it("turns affinity into its .rodata setting", () => {
    const on = configureBuiltinNf("l4lb");
    const off = configureBuiltinNf("l4lb", { parameters: { affinity: false } });
    if (!on.ok || !off.ok) throw new Error("refused");
    expect(on.value.rodata).toEqual([{ variable: "l4lb_affinity", type: "u32", value: 1n }]);
    expect(off.value.rodata).toEqual([{ variable: "l4lb_affinity", type: "u32", value: 0n }]);
  });

  it.each([
    [
      "a table size that is not a prime",
      { services: [{ ...service, tableSize: 65536 }] },
      /^services\[0\]\.tableSize: must be a prime/,
    ],
    [
      "a table size above 65537",
      { services: [{ ...service, tableSize: 65539 }] },
      /^services\[0\]\.tableSize: /,
    ],
    [
      "a vip that is no address",
      { services: [{ ...service, vip: "10.96.0" }] },
      /^services\[0\]\.vip: must be an IPv4 or IPv6 address/,
    ],
    ["port 0", { services: [{ ...service, port: 0 }] }, /^services\[0\]\.port: /],
    [
      "a protocol other than tcp/udp",
      { services: [{ ...service, proto: "icmp" }] },
      /^services\[0\]\.proto: /,
    ],
    [
      "a weight of 0",
      { services: [{ ...service, backends: [{ address: "10.1.0.1", weight: 0 }] }] },
      /^services\[0\]\.backends\[0\]\.weight: /,
    ],
    [
      "an IPv6 backend of an IPv4 vip",
      { services: [{ ...service, backends: [{ address: "fd00::1" }] }] },
      /^services\[0\]\.backends\[0\]\.address: is IPv6, the vip 10\.96\.0\.10 IPv4/,
    ],
    [
      "the same backend twice",
      { services: [{ ...service, backends: [{ address: "10.1.0.1", port: 80 }, { address: "10.1.0.1" }] }] },
      /^services\[0\]\.backends\[1\]: 10\.1\.0\.1:80 is also backends\[0\]/,
    ],
    [
      "the same vip, port and protocol twice",
      { services: [service, { ...service, backends: [] }] },
      /^services\[1\]\.vip: tcp 10\.96\.0\.10:80 is also services\[0\]/,
    ],
    [
      "health for an address that is no backend",
      { services: [service], health: [{ address: "10.1.0.9", healthy: false }] },
      /^health\[0\]\.address: 10\.1\.0\.9 is no backend of any service/,
    ],
    [
      "health without its verdict",
      { services: [service], health: [{ address: "10.1.0.1" }] },
      /^health\[0\]\.healthy: /,
    ],
    [
      "more backends than table entries",
      {
        services: [
          {
            ...service,
            tableSize: 2,
            backends: [{ address: "10.1.0.1" }, { address: "10.1.0.2" }, { address: "10.1.0.3" }],
          },
        ],
      },
      /^services\[0\]\.tableSize: 2 entries cannot hold 3 backends/,
    ],
    ["an unknown field", { services: [{ ...service, weight: 2 }] }, /^services\[0\]: .*weight/],
  ])("refuses %s, naming the field", (_, tables, expected) => {
    expect(refused({ tables })[0]).toMatch(expected);
  });

  it("refuses a non-boolean affinity and unknown parameters", () => {
    expect(refused({ parameters: { affinity: "yes" } })[0]).toMatch(/^affinity: /);
    expect(refused({ parameters: { tableSize: 7 } })[0]).toMatch(/tableSize/);
  });
});
