/**
 * Cost of loading one NF as a chain switch does: open the object, set its `.rodata` (chain
 * settings and parameters, the parse shared along the chain), reuse the revision's shared maps
 * (prog array, stats, the chain's scratch map) and the NF's carried-over maps, load (verifier
 * included). The NFs are loaded in turn within each round.
 */
import { BpfMap, BpfObject, type BpfProgram } from "../node-agent/src/libbpf/index.ts";
import { objInfo } from "../node-agent/src/libbpf/sys.ts";
import { BUILTIN_NFS, ChainContract, configureBuiltinNf, rodataValues } from "../node-agent/src/nf/index.ts";
import type { TestScope } from "../test/kernel/harness.ts";
import { createSharedMaps, loadNf, type NfPart } from "./chain.ts";
import type { BenchObjects } from "./objects.ts";
import { BENCH_FIREWALL, BENCH_RATELIMIT } from "./testrun.ts";
import { median, percentile, round, since } from "./stats.ts";

/** NFs whose load time is measured. */
const LOADED = ["noop", "firewall", "ratelimit", "flowmon", "ips", "router", "l4lb", "overlay"] as const;

/** Load figures. */
export interface LoadFigures {
  /** Median open+load time per NF, ms. */
  load_ms_p50: Record<string, number>;
  /** 90th percentile per NF, ms. */
  load_ms_p90: Record<string, number>;
  /**
   * Of the load, the open alone (libbpf reads the ELF file, no syscall into BPF), median per NF,
   * ms. A switch does it ahead, while the main thread waits (node-agent/src/chain/objectpool.ts).
   */
  open_ms_p50: Record<string, number>;
  /** Instructions the verifier processed per NF (what most of the load time is spent on). */
  verified_insns: Record<string, number>;
  load_rounds: number;
}

/** Measures `rounds` loads of each NF as NF 1 of a 3-NF chain, its own maps carried over from a first load. */
export function measureLoads(
  objects: BenchObjects,
  scope: TestScope,
  rounds: number,
  log: (msg: string) => void,
): LoadFigures {
  const shared = createSharedMaps();
  // The chain's scratch map, as the chain manager gives it to every NF (nfload.ts): the NFs
  // then verify the way a packet's parse is taken from an NF before them too.
  const scratch = BpfMap.create({ name: ChainContract.scratchMap, ...ChainContract.maps.sluice_scratch });
  scope.defer(() => {
    shared.progs.close();
    shared.stats.close();
    scratch.close();
  });
  const configs = {
    firewall: BENCH_FIREWALL,
    ratelimit: BENCH_RATELIMIT,
    flowmon: {},
    noop: {},
    ips: {},
    router: {},
    l4lb: {},
    overlay: {},
  };
  const parts: Record<string, NfPart> = {};
  const carried: Record<string, BpfObject> = {};
  for (const name of LOADED) {
    const result = configureBuiltinNf(name, configs[name]);
    if (!result.ok) throw result.error;
    const part: NfPart = {
      path: objects[name],
      program: BUILTIN_NFS[name].programs.xdp as string,
      rodata: { ...rodataValues(result.value.rodata), [ChainContract.rodata.shareParse]: 1 },
      reuseMaps: { [ChainContract.scratchMap]: scratch },
    };
    parts[name] = part;
    // The "previous revision": its own maps are what the timed loads reuse.
    const first = loadNf(part, 1, 3, shared);
    carried[name] = first;
    scope.defer(() => first.close());
  }

  const samples: Record<string, number[]> = Object.fromEntries(LOADED.map((n) => [n, []]));
  const opens: Record<string, number[]> = Object.fromEntries(LOADED.map((n) => [n, []]));
  const verified: Record<string, number> = {};
  for (let r = 0; r < rounds; r++) {
    for (const name of LOADED) {
      const part = parts[name] as NfPart;
      const previous = carried[name] as BpfObject;
      const ownMaps = Object.fromEntries(
        Object.keys(BUILTIN_NFS[name].maps).map((map) => [map, previous.map(map)]),
      );
      const started = performance.now();
      const object = BpfObject.open(part.path);
      opens[name]?.push(since(started));
      try {
        object.selectPrograms([part.program]);
        object.setRodata({
          ...part.rodata,
          [ChainContract.rodata.nextSlot]: 2,
          [ChainContract.rodata.isLast]: 0,
          [ChainContract.rodata.nfIndex]: 1,
        });
        const reuse = {
          [ChainContract.progsMap]: shared.progs,
          [ChainContract.statsMap]: shared.stats,
          [ChainContract.scratchMap]: scratch,
          ...ownMaps,
        };
        for (const [map, existing] of Object.entries(reuse)) object.reuseMap(map, existing);
        object.load();
      } catch (err) {
        object.close();
        throw err;
      }
      samples[name]?.push(since(started));
      verified[name] ??= verifiedInsns(object.program(part.program));
      object.close();
    }
  }
  log(`load: ${rounds} rounds of ${LOADED.join(", ")}`);
  return {
    load_ms_p50: Object.fromEntries(LOADED.map((n) => [n, round(median(samples[n] ?? []), 3)])),
    load_ms_p90: Object.fromEntries(LOADED.map((n) => [n, round(percentile(samples[n] ?? [], 90), 3)])),
    open_ms_p50: Object.fromEntries(LOADED.map((n) => [n, round(median(opens[n] ?? []), 3)])),
    verified_insns: verified,
    load_rounds: rounds,
  };
}

/** `bpf_prog_info.verified_insns` (offset 216; the libbpf layer does not expose it yet). */
function verifiedInsns(prog: BpfProgram): number {
  return objInfo(prog.fd, Buffer.alloc(232), `program ${prog.name}`).readUInt32LE(216);
}
