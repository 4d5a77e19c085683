/**
 * A fused chain decides exactly as the same chain linked: for every built-in NF and the example
 * NF of bpf/examples, alone and in chains, on XDP and tc, every test vector of the examples and a
 * set of packets of every kind (IPv4, IPv6, TCP, UDP, ICMP, VLAN, ARP, truncated, TTL 1, payloads
 * that hit signatures) give the same return codes, the same output packet, the same counters per
 * NF and the same state-map keys, run with BPF_PROG_TEST_RUN.
 */
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { beforeAll, describe, expect, test } from "vitest";
import { parseAllDocuments } from "yaml";
import type { TestVector } from "../../common/api/testvector.ts";
import { fusionSourceOf, loadFused, planFused } from "../../node-agent/src/chain/fused.ts";
import {
  clearState,
  closeNfs,
  createProgArray,
  createStatsMap,
  fillProgArray,
  HASH_LIKE,
  loadNfs,
  type LoadedNf,
} from "../../node-agent/src/chain/nfload.ts";
import type { NfLoadSpec } from "../../node-agent/src/chain/spec.ts";
import type { BpfMap } from "../../node-agent/src/libbpf/index.ts";
import { StatsReader } from "../../node-agent/src/chain/status.ts";
import { fillTables } from "../../node-agent/src/chain/tables.ts";
import { BPF_DIR, compile } from "../../node-agent/src/compile/index.ts";
import { BUILTIN_NFS, decodeFlowEntry, type BuiltinNfName } from "../../node-agent/src/nf/index.ts";
import { buildPacket, returnCodeToVerdict, type ProgramHook } from "../../node-agent/src/packet/index.ts";
import { createChainTestbed, useBuiltinObjects } from "./chain-testbed.ts";
import { builtinChain, builtinNf, type BuiltinUse } from "./fixtures/chains.ts";
import { repoRoot } from "./harness.ts";
import { udpFlow } from "./traffic.ts";

const objects = useBuiltinObjects();
let portblockObject: string;
const stats = new StatsReader();

beforeAll(async () => {
  portblockObject = (
    await compile({
      sourceRoot: join(BPF_DIR, "examples/portblock"),
      entry: "portblock.bpf.c",
      cacheDir: objects.cacheDir,
    })
  ).objectPath;
}, 120_000);

/** A packet with how often it is sent in a row. */
interface Probe {
  name: string;
  data: Buffer;
  count: number;
  /** The verdict a test vector expects of it (chain vectors, or NF vectors of a lone NF). */
  verdict?: string;
}

const A = "10.0.0.1";
const B = "10.0.0.2";

function vlanTagged(frame: Buffer): Buffer {
  return Buffer.concat([frame.subarray(0, 12), Buffer.from([0x81, 0x00, 0x00, 0x07]), frame.subarray(12)]);
}

const arp = Buffer.concat([
  Buffer.from("ffffffffffff020000000001", "hex"),
  Buffer.from("0806", "hex"),
  Buffer.from("0001080006040001020000000001", "hex"),
  Buffer.from([10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 10, 0, 0, 2]),
]);

const probes: Probe[] = [
  {
    name: "udp dns",
    data: buildPacket({ ipv4: { src: A, dst: B }, udp: { sport: 40000, dport: 53 } }),
    count: 3,
  },
  {
    name: "tcp syn ssh",
    data: buildPacket({ ipv4: { src: A, dst: B }, tcp: { sport: 40000, dport: 22, flags: ["syn"] } }),
    count: 3,
  },
  {
    name: "tcp web with a signature",
    data: buildPacket({
      ipv4: { src: A, dst: B },
      tcp: { sport: 40000, dport: 443 },
      payload: "GET /etc/passwd",
    }),
    count: 2,
  },
  { name: "icmp echo", data: buildPacket({ ipv4: { src: A, dst: B }, icmp: {} }), count: 2 },
  {
    name: "ipv6 udp",
    data: buildPacket({ ipv6: { src: "fd00::1", dst: "fd00::2" }, udp: { sport: 1000, dport: 9000 } }),
    count: 3,
  },
  {
    name: "ipv6 tcp memcached",
    data: buildPacket({ ipv6: { src: "fd00::1", dst: "fd00::2" }, tcp: { sport: 1000, dport: 11211 } }),
    count: 2,
  },
  {
    name: "udp memcached",
    data: buildPacket({ ipv4: { src: "192.0.2.9", dst: B }, udp: { sport: 1000, dport: 11211 } }),
    count: 2,
  },
  {
    name: "ttl 1",
    data: buildPacket({ ipv4: { src: A, dst: B, ttl: 1 }, udp: { sport: 5000, dport: 9000 } }),
    count: 1,
  },
  {
    name: "vlan udp",
    data: vlanTagged(buildPacket({ ipv4: { src: A, dst: B }, udp: { sport: 1, dport: 53 } })),
    count: 2,
  },
  { name: "arp", data: arp, count: 2 },
  {
    name: "truncated ipv4",
    data: buildPacket({ ipv4: { src: A, dst: B }, udp: { sport: 1, dport: 2 } }).subarray(0, 24),
    count: 1,
  },
];

function vectorProbes(vectors: readonly TestVector[]): Probe[] {
  return vectors.map((v) => ({
    name: `vector: ${v.name}`,
    data: buildPacket(v.packet),
    count: v.count ?? 1,
    verdict: v.expect.verdict,
  }));
}

/** What one run of a probe showed. */
interface Outcome {
  verdicts: string[];
  output: string;
  counters: Record<string, string>;
  stateKeys: Record<string, string[]>;
}

interface Instance {
  nfs: LoadedNf[];
  stats: BpfMap;
  close(): void;
}

async function load(hook: ProgramHook, functions: NfLoadSpec[], mode: "linked" | "fused"): Promise<Instance> {
  const progs = createProgArray();
  const statsMap = createStatsMap();
  const options = { hook, functions, statsIndexes: functions.map((_, i) => i), progs, stats: statsMap };
  let nfs: LoadedNf[];
  if (mode === "linked") {
    nfs = loadNfs(options);
  } else {
    const planned = await planFused(hook, functions, objects.cacheDir);
    if (!planned.ok) throw new Error(`not fused: ${planned.reason}`);
    nfs = await loadFused(options, planned.plan);
  }
  fillTables(nfs);
  fillProgArray(progs, nfs);
  return {
    nfs,
    stats: statsMap,
    close: () => {
      closeNfs(nfs);
      progs.close();
      statsMap.close();
    },
  };
}

function runProbe(hook: ProgramHook, instance: Instance, probe: Probe): Outcome {
  const { nfs, stats: statsMap } = instance;
  clearState(nfs);
  const before = nfs.map((_, i) => stats.read(statsMap, i));
  const verdicts: string[] = [];
  let output = "";
  for (let k = 0; k < probe.count; k++) {
    try {
      const r = nfs[0]!.program.testRun({ data: probe.data, dataOut: true });
      verdicts.push(returnCodeToVerdict(hook, r.retval) ?? `code ${r.retval}`);
      output = r.dataOut?.toString("hex") ?? "";
    } catch (err) {
      // The kernel refuses some frames before any program runs (a tc test run of a truncated
      // IPv4 header): the same both ways.
      verdicts.push(`refused: ${(err as Error).message.replace(/program \w+: /, "")}`);
    }
  }
  const counters: Record<string, string> = {};
  nfs.forEach((nf, i) => {
    const after = stats.read(statsMap, i);
    const b = before[i]!;
    counters[nf.spec.name] =
      `packets=${after.packets - b.packets} bytes=${after.bytes - b.bytes} passes=${after.passes - b.passes} ` +
      `drops=${after.drops - b.drops} errors=${after.errors - b.errors}`;
  });
  const stateKeys: Record<string, string[]> = {};
  for (const nf of nfs) {
    for (const [name, map] of nf.maps) {
      if (nf.origins.get(name)?.kind === "table" || !HASH_LIKE.has(map.type)) continue;
      stateKeys[`${nf.spec.name}/${name}`] = [...map.keys()].map((k) => k.toString("hex")).sort();
    }
  }
  return { verdicts, output, counters, stateKeys };
}

/** Runs every probe through the chain linked and fused and expects the same outcomes. */
async function expectSameBothWays(
  hook: ProgramHook,
  functions: NfLoadSpec[],
  extra: Probe[] = [],
): Promise<void> {
  const linked = await load(hook, functions, "linked");
  let fused: Instance | undefined;
  try {
    fused = await load(hook, functions, "fused");
    for (const probe of [...probes, ...extra]) {
      const l = runProbe(hook, linked, probe);
      const f = runProbe(hook, fused, probe);
      expect(f, `${hook} ${functions.map((nf) => nf.name).join(">")}: ${probe.name}`).toEqual(l);
      if (probe.verdict !== undefined) expect(f.verdicts.at(-1), probe.name).toBe(probe.verdict);
    }
  } finally {
    fused?.close();
    linked.close();
  }
}

const signatures = [
  { id: 101, content: "/etc/passwd" },
  { id: 102, content: "|de ad be ef|", offset: 0, depth: 8 },
  { id: 104, content: "curious", action: "alert" },
];
const rules = {
  rules: [
    { action: "deny", protocol: "icmp" },
    { action: "deny", protocol: "tcp", dport: 22 },
    { action: "allow", src: "10.0.0.0/8" },
  ],
};

/** Each built-in in a few configurations. */
/** l4lb services on the probes' destinations: their packets are rewritten to a backend. */
const l4lbServices = {
  services: [
    {
      vip: B,
      port: 53,
      proto: "udp",
      backends: [{ address: "10.0.1.1" }, { address: "10.0.1.2", port: 5353 }],
    },
    { vip: B, port: 22, proto: "tcp", backends: [{ address: "10.0.1.3" }] },
    { vip: "fd00::2", port: 9000, proto: "udp", backends: [{ address: "fd00:1::1" }] },
  ],
};

const builtinUses: Record<BuiltinNfName, BuiltinUse[]> = {
  firewall: [
    { builtin: "firewall", tables: rules },
    { builtin: "firewall", parameters: { defaultAction: "deny", nonIpAction: "deny" }, tables: rules },
  ],
  ratelimit: [{ builtin: "ratelimit", parameters: { rate: 1, burst: 2 } }],
  flowmon: [{ builtin: "flowmon" }],
  noop: [{ builtin: "noop" }],
  ips: [
    { builtin: "ips", tables: { signatures } },
    { builtin: "ips", parameters: { synFloodThreshold: 1, mode: "detect" }, tables: { signatures } },
  ],
  router: [
    { builtin: "router" },
    { builtin: "router", parameters: { families: "ipv6", decrementTtl: false } },
  ],
  l4lb: [
    { builtin: "l4lb", tables: l4lbServices },
    { builtin: "l4lb", parameters: { affinity: false }, tables: l4lbServices },
  ],
} as Record<BuiltinNfName, BuiltinUse[]>;

function portblock(name = "portblock", port = 11211): NfLoadSpec {
  return {
    name,
    objectPath: portblockObject,
    rodata: { portblock_port: port },
    fusion: fusionSourceOf(join(BPF_DIR, "examples/portblock"), "portblock.bpf.c"),
  };
}

const HOOKS: ProgramHook[] = ["xdp", "tc"];

describe.each(HOOKS)("fused = linked on %s", (hook) => {
  test("every built-in NF alone, in each configuration", async () => {
    const names = Object.keys(BUILTIN_NFS) as BuiltinNfName[];
    for (const name of names) {
      const uses = builtinUses[name] ?? [{ builtin: name }];
      for (const use of uses) await expectSameBothWays(hook, [builtinNf(objects, use)]);
    }
  });

  test("the example NF alone (bpf/examples/portblock)", async () => {
    await expectSameBothWays(hook, [portblock()]);
    await expectSameBothWays(hook, [portblock("pb", 53)]);
  });

  test("chains: every NF's walk can end anywhere, counted where it ends", async () => {
    const chains: NfLoadSpec[][] = [
      [
        builtinNf(objects, { builtin: "l4lb", tables: l4lbServices }),
        builtinNf(objects, { builtin: "firewall", tables: rules }),
        builtinNf(objects, { builtin: "flowmon" }),
      ],
      [
        builtinNf(objects, { builtin: "firewall", tables: rules }),
        builtinNf(objects, { builtin: "ratelimit", parameters: { rate: 1, burst: 2 } }),
        builtinNf(objects, { builtin: "flowmon" }),
      ],
      [
        builtinNf(objects, { builtin: "noop", name: "n0" }),
        builtinNf(objects, { builtin: "flowmon" }),
        builtinNf(objects, { builtin: "noop", name: "n1" }),
        builtinNf(objects, { builtin: "noop", name: "n2" }),
      ],
      [
        builtinNf(objects, { builtin: "ips", tables: { signatures } }),
        portblock(),
        builtinNf(objects, { builtin: "firewall", parameters: { defaultAction: "deny" }, tables: rules }),
        builtinNf(objects, { builtin: "ratelimit", parameters: { rate: 1, burst: 1 } }),
        builtinNf(objects, { builtin: "flowmon" }),
        builtinNf(objects, { builtin: "router" }),
      ],
    ];
    for (const chain of chains) await expectSameBothWays(hook, chain);
  });
});

/** Two custom NFs that both declare a map `hits` and a parameter `knob` (a name clash). */
async function clashingNfs(): Promise<NfLoadSpec[]> {
  const specs: NfLoadSpec[] = [];
  for (const [stem, knob, verdict] of [
    ["alpha", 1, "SLUICE_CONTINUE"],
    ["beta", 2, "(*v >= 2 ? SLUICE_DROP : SLUICE_CONTINUE)"],
  ] as const) {
    const dir = join(objects.cacheDir, "clash", stem);
    mkdirSync(dir, { recursive: true });
    writeFileSync(
      join(dir, `${stem}.h`),
      `#ifndef ${stem.toUpperCase()}_H
#define ${stem.toUpperCase()}_H
#include "sluice.h"
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16);
	__type(key, __u32);
	__type(value, __u64);
} hits SEC(".maps");
const volatile __u32 knob = 0;
static __always_inline enum sluice_verdict ${stem}_process(const struct sluice_pkt *pkt, int parsed)
{
	__u32 key = knob;
	__u64 one = 1, *v = bpf_map_lookup_elem(&hits, &key);

	if (!v) {
		bpf_map_update_elem(&hits, &key, &one, BPF_NOEXIST);
		return SLUICE_CONTINUE;
	}
	__sync_fetch_and_add(v, 1);
	return ${verdict};
}
#endif
`,
    );
    writeFileSync(
      join(dir, `${stem}.bpf.c`),
      `#include "sluice.h"
#include "${stem}.h"
SEC("xdp")
int ${stem}_xdp(struct xdp_md *ctx)
{
	struct sluice_pkt pkt;
	int parsed = SLUICE_PARSE(ctx, &pkt);

	return SLUICE_EXIT(ctx, ${stem}_process(&pkt, parsed));
}
SEC("tc")
int ${stem}_tc(struct __sk_buff *skb)
{
	struct sluice_pkt pkt;
	int parsed = SLUICE_PARSE(skb, &pkt);

	return SLUICE_EXIT(skb, ${stem}_process(&pkt, parsed));
}
char LICENSE[] SEC("license") = "Dual BSD/GPL";
`,
    );
    const compiled = await compile({ sourceRoot: dir, entry: `${stem}.bpf.c`, cacheDir: objects.cacheDir });
    specs.push({
      name: stem,
      objectPath: compiled.objectPath,
      rodata: { knob },
      fusion: fusionSourceOf(dir, `${stem}.bpf.c`),
    });
  }
  return specs;
}

describe.each(HOOKS)("name clashes on %s", (hook) => {
  test("two NFs that both name a map and a parameter keep their own map and setting fused", async () => {
    // stateKeys compares each NF's own map: fused, alpha's hits holds key 1 and beta's key 2.
    await expectSameBothWays(hook, await clashingNfs());
  });
});

/** The NetworkFunctions and ServiceChains of the example repository. */
function exampleManifests(): { kind: string; metadata: { name: string }; spec: Record<string, unknown> }[] {
  const docs = [];
  for (const file of [
    "network/functions.yaml",
    "network/chain.yaml",
    "security/functions.yaml",
    "security/chain.yaml",
  ]) {
    const text = readFileSync(join(repoRoot, "examples/gitops", file), "utf8");
    for (const doc of parseAllDocuments(text)) docs.push(doc.toJSON());
  }
  return docs;
}

describe("the example repository's vectors", () => {
  test("every vector of every built-in NetworkFunction gives the same result both ways, as it expects", async () => {
    const manifests = exampleManifests();
    let vectors = 0;
    for (const nf of manifests.filter((m) => m.kind === "NetworkFunction")) {
      const source = nf.spec.source as { builtin?: BuiltinNfName };
      if (!source.builtin) continue;
      const tests = (nf.spec.tests ?? []) as TestVector[];
      vectors += tests.length;
      const hooks = ((nf.spec.hooks as string[] | undefined) ?? ["xdp"]).map((h) =>
        h === "xdp" ? "xdp" : "tc",
      );
      const use: BuiltinUse = {
        builtin: source.builtin,
        name: nf.metadata.name,
        parameters: nf.spec.parameters,
        tables: nf.spec.tables,
      };
      for (const hook of new Set(hooks) as Set<ProgramHook>) {
        await expectSameBothWays(hook, [builtinNf(objects, use)], vectorProbes(tests));
      }
    }
    expect(vectors).toBeGreaterThan(5);
  });

  test("a chain with an NF that lacks the inline contract says why it cannot be fused", async () => {
    const dir = join(repoRoot, "examples/gitops/network/nfs/ttl-guard");
    const ttlGuard: NfLoadSpec = {
      name: "ttl-guard",
      objectPath: (await compile({ sourceRoot: dir, entry: "ttl_guard.bpf.c", cacheDir: objects.cacheDir }))
        .objectPath,
      fusion: fusionSourceOf(dir, "ttl_guard.bpf.c", { MIN_TTL: "2" }),
    };
    const planned = await planFused(
      "xdp",
      [builtinNf(objects, { builtin: "flowmon" }), ttlGuard],
      objects.cacheDir,
    );
    expect(planned).toEqual({
      ok: false,
      reason:
        "ttl-guard: no ttl_guard.h next to its source (the inline contract: ttl_guard.h with ttl_guard_process)",
    });
  });

  test("a built-in used twice with maps of its own says why it cannot be fused", async () => {
    const planned = await planFused(
      "tc",
      [
        builtinNf(objects, { builtin: "ips", name: "signatures" }),
        builtinNf(objects, { builtin: "ips", name: "scan-guard", parameters: { synFloodThreshold: 5 } }),
      ],
      objects.cacheDir,
    );
    expect(planned.ok).toBe(false);
    expect(!planned.ok && planned.reason).toMatch(/signatures and scan-guard share one source/);
  });
});

describe("the chain manager's modes (as the chart runs it)", () => {
  test("auto fuses a chain that follows the inline contract, runs one that cannot be fused linked and says why; fused refuses it", async () => {
    const { net, manager, startManager } = await createChainTestbed(objects);
    // Each NF names its program, as the agent does for a built-in.
    const edge = (revision: string, mode: "auto" | "fused" | "linked", functions: BuiltinUse[]) => {
      const spec = builtinChain(objects, {
        name: "edge",
        revision,
        hook: "xdp",
        interfaces: [net.b.ifname],
        xdpMode: "generic",
        mode,
        functions,
        tests: [
          {
            name: "udp crosses the chain",
            packet: { ipv4: { src: net.a.ip, dst: net.b.ip }, udp: { sport: 1, dport: 53 } },
            expect: { verdict: "pass" },
          },
        ],
      });
      return {
        ...spec,
        functions: spec.functions.map((f) => ({ ...f, programName: `${f.fusion!.stem}_xdp` })),
      };
    };
    const three: BuiltinUse[] = [
      { builtin: "firewall", tables: rules },
      { builtin: "ratelimit", parameters: { rate: 1_000_000, burst: 1_000_000 } },
      { builtin: "flowmon" },
    ];
    const fused = await manager.apply(edge("r1", "auto", three));
    expect(fused).toMatchObject({ action: "created", mode: "fused" });
    expect(fused.modeReason).toBeUndefined();
    expect(fused.selfTest).toMatchObject({ passed: 1, failed: 0 });
    // One program runs every NF.
    expect(new Set(fused.programIds.slice(1)).size).toBe(1);
    expect(
      await udpFlow({
        from: { ns: net.a.ns.name, ip: net.a.ip },
        to: { ns: net.b.ns.name, ip: net.b.ip },
        count: 200,
        rate: 2000,
      }),
    ).toMatchObject({ lost: 0 });
    const counted = (await manager.status("edge"))!.nfs.map((nf) => [nf.name, nf.counters.packets]);
    expect(counted).toEqual([
      ["firewall", 200n],
      ["ratelimit", 200n],
      ["flowmon", 200n],
    ]);

    // flowmon stays in the chain: its flows carry over fused -> linked -> fused.
    const twice: BuiltinUse[] = [
      { builtin: "flowmon" },
      { builtin: "ips", name: "signatures", tables: { signatures } },
      { builtin: "ips", name: "scan-guard", parameters: { synFloodThreshold: 100 } },
    ];
    const linked = await manager.apply(edge("r2", "auto", twice));
    expect(linked).toMatchObject({ action: "switched", mode: "linked" });
    expect(linked.modeReason).toMatch(/signatures and scan-guard share one source/);
    await expect(manager.apply(edge("r3", "fused", twice))).rejects.toThrow(/mode fused: .*share one source/);
    expect((await manager.status("edge"))!.revision).toBe("r2");

    expect(linked.carriedMaps).toContainEqual({ nf: "flowmon", map: "flowmon_flows" });

    // Back to fused: the flow flowmon counted in the first fused revision is still there.
    const back = await manager.apply(edge("r4", "auto", three));
    expect(back).toMatchObject({ action: "switched", mode: "fused" });
    expect(back.carriedMaps).toContainEqual({ nf: "flowmon", map: "flowmon_flows" });
    const flows = (await manager.readTable("edge", "flowmon", "flowmon_flows")).map((e) =>
      decodeFlowEntry(e.key, e.value),
    );
    expect(flows.map((f) => f.packets)).toEqual([200]);

    // A new agent process adopts the fused chain from its pins and switches it again.
    await manager.close();
    const restarted = await startManager();
    expect(await restarted.adopt()).toEqual([
      expect.objectContaining({ name: "edge", outcome: "adopted", revision: "r4", repairs: [] }),
    ]);
    expect((await restarted.status("edge"))!.nfs.map((nf) => [nf.name, nf.counters.packets])).toEqual(
      counted,
    );
    const again = await restarted.apply(
      edge("r5", "auto", [...three.slice(0, 2), { builtin: "noop" }, { builtin: "flowmon" }]),
    );
    expect(again).toMatchObject({ action: "switched", mode: "fused" });
    expect(again.carriedMaps).toContainEqual({ nf: "flowmon", map: "flowmon_flows" });
  });
});
