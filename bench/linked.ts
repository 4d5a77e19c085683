/**
 * What a linked chain costs against one hand-fused program now that its NFs parse a packet
 * once: firewall -> ratelimit -> flowmon linked by tail calls with the chain's scratch map
 * shared (the first NF parses and reads the clock, the others take both from the scratch), the
 * same chain with every NF parsing on its own (no scratch shared: how chains ran before), and
 * `bpf/bench/fused.bpf.c`, all entered through a root program and run in the same interleaved
 * rounds. Also the verified instructions of each NF loaded as the agent loads it (sharing on)
 * and as a lone program (sharing off), since a switch verifies NFs again.
 */
import { BpfObject, type BpfProgram } from "../node-agent/src/libbpf/index.ts";
import { objInfo } from "../node-agent/src/libbpf/sys.ts";
import { createScratchMap } from "../node-agent/src/chain/nfload.ts";
import { ChainContract } from "../node-agent/src/nf/index.ts";
import type { TestScope } from "../test/kernel/harness.ts";
import { createSharedMaps, HandChain, packetsAt, type NfPart } from "./chain.ts";
import type { BenchObjects } from "./objects.ts";
import { median, round } from "./stats.ts";
import {
  chain3Parts,
  expectWalk,
  fusedPart,
  measurePassing,
  sharedChain3Parts,
  type ProgramVariant,
} from "./testrun.ts";

/** Linked-chain figures. */
export interface LinkedFigures {
  /** Linked (parse shared) / hand-fused, both through a root: median over rounds of paired ratios. */
  linked_ratio: number;
  /** The same with every NF parsing on its own (no scratch shared). */
  linked_ratio_unshared: number;
  /** Medians, ns per packet. */
  linked_ns: { shared: number; unshared: number; fused: number };
  /** Verified instructions per NF, loaded as NF 1 of 3 with sharing on and off (`.rodata`). */
  verified_insns_shared: Record<string, number>;
  verified_insns_unshared: Record<string, number>;
  linked_repeat: number;
  linked_rounds: number;
}

const NFS = ["firewall", "ratelimit", "flowmon"] as const;

/** `bpf_prog_info.verified_insns` (offset 216). */
function verifiedInsns(prog: BpfProgram): number {
  return objInfo(prog.fd, Buffer.alloc(232), `program ${prog.name}`).readUInt32LE(216);
}

/** Verified instructions of each NF loaded as NF 1 of a 3-NF chain, sharing on or off. */
function measureVerified(objects: BenchObjects, share: boolean): Record<string, number> {
  const shared = createSharedMaps();
  const scratch = createScratchMap();
  try {
    const parts = share ? sharedChain3Parts(objects, scratch) : chain3Parts(objects);
    return Object.fromEntries(
      parts.map((part, i) => {
        const object = BpfObject.load({
          path: part.path,
          programs: [part.program],
          rodata: {
            ...part.rodata,
            [ChainContract.rodata.nextSlot]: 2,
            [ChainContract.rodata.isLast]: 0,
            [ChainContract.rodata.nfIndex]: 1,
          },
          reuseMaps: {
            ...part.reuseMaps,
            [ChainContract.progsMap]: shared.progs,
            [ChainContract.statsMap]: shared.stats,
          },
        });
        try {
          return [NFS[i], verifiedInsns(object.program(part.program))];
        } finally {
          object.close();
        }
      }),
    );
  } finally {
    scratch.close();
    shared.progs.close();
    shared.stats.close();
  }
}

/**
 * Builds the three variants, checks that each walks to its end, then measures `rounds`
 * interleaved rounds of `repeat` test runs each (order rotated per round).
 */
export function measureLinked(
  objects: BenchObjects,
  scope: TestScope,
  options: { repeat: number; rounds: number },
  log: (msg: string) => void,
): LinkedFigures {
  const scratch = createScratchMap();
  scope.defer(() => scratch.close());
  const chains: HandChain[] = [];
  const build = (parts: NfPart[]) => {
    const chain = HandChain.build(objects.root, parts);
    chains.push(chain);
    scope.defer(() => chain.close());
    return chain;
  };
  const shared = build(sharedChain3Parts(objects, scratch));
  const unshared = build(chain3Parts(objects));
  const fused = build([fusedPart(objects)]);
  expectWalk("linked, parse shared", shared.entry, () => packetsAt(shared.stats, 2));
  expectWalk("linked, unshared", unshared.entry, () => packetsAt(unshared.stats, 2));
  expectWalk("hand-fused", fused.entry, () => packetsAt(fused.stats, 0));

  const variants: ProgramVariant[] = [
    { name: "shared", prog: shared.entry, samples: [] },
    { name: "unshared", prog: unshared.entry, samples: [] },
    { name: "fused", prog: fused.entry, samples: [] },
  ];
  measurePassing(variants, options);
  log(`linked vs fused: ${options.rounds} rounds`);
  for (const chain of chains.splice(0)) chain.close();

  const s = (name: string) => variants.find((v) => v.name === name)!.samples;
  const ratio = (a: string) => round(median(s(a).map((x, i) => x / s("fused")[i]!)), 3);
  return {
    linked_ratio: ratio("shared"),
    linked_ratio_unshared: ratio("unshared"),
    linked_ns: {
      shared: round(median(s("shared")), 1),
      unshared: round(median(s("unshared")), 1),
      fused: round(median(s("fused")), 1),
    },
    verified_insns_shared: measureVerified(objects, true),
    verified_insns_unshared: measureVerified(objects, false),
    linked_repeat: options.repeat,
    linked_rounds: options.rounds,
  };
}
