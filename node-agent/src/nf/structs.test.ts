import { execFile } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";
import {
  OVERLAY_MAX_NODES,
  OVERLAY_MAX_SEGMENTS,
  OVERLAY_OVERHEAD,
} from "../../../common/api/builtins/index.ts";
import { BPF_DIR, BPF_INCLUDE_DIR, systemIncludeArgs } from "../compile/compile.ts";
import {
  OVERLAY_COUNTERS,
  OVERLAY_REMOTE_LAYOUT,
  OVERLAY_SEGMENT_KEY_LAYOUT,
  OverlayCounter,
} from "./overlay.ts";
import { BUILTIN_NFS } from "./registry.ts";
import { ChainContract } from "./types.ts";
import {
  FIREWALL_MAX_RULES,
  FLOWMON_MAX_FLOWS,
  FirewallAction,
  IPS_BUCKETS,
  IPS_MAX_CONTENT,
  IPS_MAX_HIT_KEYS,
  IPS_MAX_SIGNATURES,
  IPS_MAX_SOURCES,
  IPS_MIN_CONTENT,
  IPS_PREFIX_WORDS,
  IPS_SCAN_MAX,
  IpsAction,
  IpsHitKey,
  IpsSigFlag,
  L4LB_MAX_BACKENDS,
  L4LB_MAX_FLOWS,
  L4LB_MAX_SERVICES,
  L4LB_RING_MAX,
  L4lbBackendFlag,
  FirewallMatch,
  RATELIMIT_MAX_SOURCES,
  SLUICE_MAX_NFS,
  SLUICE_PROGS_ENTRIES,
  SLUICE_STATS_ENTRIES,
  STRUCT_LAYOUTS,
  decodePerCpuNfStats,
} from "./structs.ts";

const run = promisify(execFile);

/** Compile `lines` for the BPF target, syntax only; resolves with clang's stderr ("" when clean). */
async function clangCheck(lines: string[]): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "sluice-structs-"));
  try {
    const file = join(dir, "check.c");
    await writeFile(file, lines.join("\n"));
    const clang = process.env.SLUICE_CLANG ?? "clang";
    const includes = ["-I", BPF_INCLUDE_DIR, "-I", join(BPF_DIR, "nf"), ...(await systemIncludeArgs(clang))];
    return await run(clang, ["-target", "bpf", "-fsyntax-only", ...includes, file]).then(
      () => "",
      (err: { stderr?: string }) => err.stderr ?? String(err),
    );
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/**
 * The TypeScript mirror and the C headers must agree byte for byte. clang checks it: every
 * size, offset and constant becomes a _Static_assert in a BPF-target translation unit.
 */
describe("TypeScript mirror of the C structs", () => {
  it("sizes, offsets and constants match the headers (checked by clang)", async () => {
    const asserts: string[] = [];
    for (const layout of [...STRUCT_LAYOUTS, OVERLAY_SEGMENT_KEY_LAYOUT, OVERLAY_REMOTE_LAYOUT]) {
      asserts.push(`_Static_assert(sizeof(${layout.name}) == ${layout.size}, "sizeof ${layout.name}");`);
      for (const [field, offset] of Object.entries(layout.offsets)) {
        asserts.push(
          `_Static_assert(__builtin_offsetof(${layout.name}, ${field}) == ${offset}, "${layout.name}.${field}");`,
        );
      }
    }
    const constants: Record<string, number> = {
      SLUICE_MAX_NFS,
      SLUICE_PROGS_ENTRIES,
      SLUICE_STATS_ENTRIES,
      FIREWALL_MAX_RULES,
      RATELIMIT_MAX_SOURCES,
      FLOWMON_MAX_FLOWS,
      FIREWALL_ALLOW: FirewallAction.ALLOW,
      FIREWALL_DENY: FirewallAction.DENY,
      IPS_MAX_SIGNATURES,
      IPS_MAX_CONTENT,
      IPS_MIN_CONTENT,
      IPS_SCAN_MAX,
      IPS_PREFIX_WORDS,
      IPS_BUCKETS,
      IPS_MAX_SOURCES,
      IPS_MAX_HIT_KEYS,
      IPS_ALERT: IpsAction.ALERT,
      IPS_DROP: IpsAction.DROP,
      IPS_HIT_SYN_FLOOD: IpsHitKey.SYN_FLOOD,
      IPS_HIT_PORT_SCAN: IpsHitKey.PORT_SCAN,
      IPS_HIT_SCAN_BUDGET: IpsHitKey.SCAN_BUDGET,
      L4LB_MAX_SERVICES,
      L4LB_MAX_BACKENDS,
      L4LB_RING_MAX,
      L4LB_MAX_FLOWS,
      L4LB_BACKEND_HEALTHY: L4lbBackendFlag.HEALTHY,
      OVERLAY_MAX_SEGMENTS,
      OVERLAY_MAX_NODES,
      OVERLAY_OVERHEAD,
      OVERLAY_COUNTERS,
      ...Object.fromEntries(Object.entries(OverlayCounter).map(([name, key]) => [`OVERLAY_${name}`, key])),
      ...Object.fromEntries(Object.entries(IpsSigFlag).map(([name, bit]) => [`IPS_SIG_${name}`, bit])),
      ...Object.fromEntries(
        Object.entries(FirewallMatch).map(([name, bit]) => [`FIREWALL_MATCH_${name}`, bit]),
      ),
    };
    for (const [name, value] of Object.entries(constants)) {
      asserts.push(`_Static_assert(${name} == ${value}, "${name}");`);
    }
    const stderr = await clangCheck([
      "#include <sluice_types.h>",
      "#include <firewall/firewall_types.h>",
      "#include <ratelimit/ratelimit_types.h>",
      "#include <flowmon/flowmon_types.h>",
      "#include <ips/ips_types.h>",
      "#include <l4lb/l4lb_types.h>",
      "#include <overlay/overlay_types.h>",
      ...asserts,
    ]);
    expect(stderr).toBe("");
  });

  it("map definitions in the registry match the C map declarations", async () => {
    // A BTF-defined map encodes its numbers in types: __uint(x, N) is `int (*x)[N]`,
    // __type(x, T) is `T *x`. sizeof recovers them at compile time.
    const asserts: string[] = [];
    const owners = [...Object.values(BUILTIN_NFS), { name: "sluice.h", maps: ChainContract.maps }];
    for (const nf of owners) {
      for (const [map, def] of Object.entries(nf.maps)) {
        const numbers: [string, string, number][] = [
          ["type", `sizeof(*${map}.type) / sizeof(int)`, def.type],
          ["max_entries", `sizeof(*${map}.max_entries) / sizeof(int)`, def.maxEntries],
          ["key size", `sizeof(*${map}.key)`, def.keySize],
          ["value size", `sizeof(*${map}.value)`, def.valueSize],
        ];
        if (def.flags !== 0) numbers.push(["flags", `sizeof(*${map}.map_flags) / sizeof(int)`, def.flags]);
        for (const [what, expr, value] of numbers) {
          asserts.push(`_Static_assert(${expr} == ${value}, "${nf.name}: ${map} ${what}");`);
        }
      }
    }
    expect(asserts.length).toBeGreaterThan(0);
    const stderr = await clangCheck([
      "#include <firewall/firewall.h>",
      "#include <ratelimit/ratelimit.h>",
      "#include <flowmon/flowmon.h>",
      "#include <ips/ips.h>",
      "#include <l4lb/l4lb.h>",
      "#include <overlay/overlay.h>",
      ...asserts,
    ]);
    expect(stderr).toBe("");
  });

  it("per-CPU stats are summed over CPUs", () => {
    const cpus = 3;
    const buffer = Buffer.alloc(40 * cpus);
    for (let cpu = 0; cpu < cpus; cpu++) {
      [1n, 100n, 1n, 0n, 0n].forEach((v, i) =>
        buffer.writeBigUInt64LE(v * BigInt(cpu + 1), cpu * 40 + i * 8),
      );
    }
    expect(decodePerCpuNfStats(buffer, cpus)).toEqual({
      packets: 6n,
      bytes: 600n,
      drops: 6n,
      passes: 0n,
      errors: 0n,
    });
    expect(() => decodePerCpuNfStats(buffer, 4)).toThrow(RangeError);
  });
});
