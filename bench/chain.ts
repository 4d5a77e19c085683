/**
 * Chains assembled directly from the libbpf layer, following the data-plane contract (root ->
 * slot 0 of its one-slot array -> NF 0 -> ... through the revision's shared prog array), for
 * the figures that must not depend on the chain manager: hop cost, chain length, linked vs
 * fused, and the cost of loading one NF.
 */
import { BpfMap, BpfObject, type BpfProgram, u32 } from "../node-agent/src/libbpf/index.ts";
import { ChainContract, type MapContents } from "../node-agent/src/nf/index.ts";

/** One NF of a hand-built chain. */
export interface NfPart {
  /** Compiled object. */
  path: string;
  /** Program to load (the XDP one). */
  program: string;
  /** The NF's own `.rodata` settings (the chain's sluice_* ones are set here). */
  rodata?: Readonly<Record<string, number | bigint | boolean>>;
  /** Table contents to write after load. */
  tables?: MapContents;
  /** The NF's own maps to reuse by name (state carried over from another revision). */
  reuseMaps?: Readonly<Record<string, BpfMap>>;
}

/** The two maps every NF of a revision shares. */
export interface SharedMaps {
  progs: BpfMap;
  stats: BpfMap;
}

/** Creates a chain's stats map (`sluice_stats`), as the contract defines it. */
export function createStats(): BpfMap {
  return BpfMap.create({ name: ChainContract.statsMap, ...ChainContract.maps.sluice_stats });
}

/** Packets counted in `stats[index]`, summed over CPUs. */
export function packetsAt(stats: BpfMap, index: number): bigint {
  return (stats.lookupPerCpu(u32(index)) ?? []).reduce((sum, v) => sum + v.readBigUInt64LE(0), 0n);
}

/** Creates a revision's prog array and a chain's stats map, as the contract defines them. */
export function createSharedMaps(): SharedMaps {
  const progs = BpfMap.create({ name: ChainContract.progsMap, ...ChainContract.maps.sluice_progs });
  try {
    return { progs, stats: createStats() };
  } catch (err) {
    progs.close();
    throw err;
  }
}

/**
 * Loads NF `index` of an `n`-NF chain: the chain settings in `.rodata`, the shared maps reused,
 * only the XDP program loaded. The caller owns the object.
 */
export function loadNf(part: NfPart, index: number, n: number, shared: SharedMaps): BpfObject {
  return BpfObject.load({
    path: part.path,
    programs: [part.program],
    rodata: {
      ...part.rodata,
      [ChainContract.rodata.nextSlot]: index + 1,
      [ChainContract.rodata.isLast]: index === n - 1 ? 1 : 0,
      [ChainContract.rodata.nfIndex]: index,
    },
    reuseMaps: {
      ...part.reuseMaps,
      [ChainContract.progsMap]: shared.progs,
      [ChainContract.statsMap]: shared.stats,
    },
  });
}

/** Writes `tables` into the object's maps. */
export function fillTables(object: BpfObject, tables: MapContents | undefined): void {
  for (const [name, entries] of Object.entries(tables ?? {})) {
    const map = object.map(name);
    for (const { key, value } of entries) map.update(key, value);
  }
}

/**
 * One revision: its own prog array holding its NFs, the chain's stats map reused. Owns the
 * prog array and the NF objects; `close()` releases them (the stats map stays the caller's).
 */
export class Revision {
  readonly progs: BpfMap;
  readonly nfs: BpfObject[] = [];
  readonly #programs: string[];

  private constructor(progs: BpfMap, programs: string[]) {
    this.progs = progs;
    this.#programs = programs;
  }

  /** Loads `parts` into a fresh prog array that reuses `stats`; closes what it opened on failure. */
  static load(parts: readonly NfPart[], stats: BpfMap): Revision {
    const progs = BpfMap.create({ name: ChainContract.progsMap, ...ChainContract.maps.sluice_progs });
    const revision = new Revision(
      progs,
      parts.map((p) => p.program),
    );
    try {
      parts.forEach((part, i) => {
        const nf = loadNf(part, i, parts.length, { progs, stats });
        revision.nfs.push(nf);
        fillTables(nf, part.tables);
        progs.update(u32(i), u32(nf.program(part.program).fd));
      });
      return revision;
    } catch (err) {
      revision.close();
      throw err;
    }
  }

  /** NF 0's program: what the root's slot 0 holds while this revision is live. */
  get first(): BpfProgram | undefined {
    const name = this.#programs[0];
    return name === undefined ? undefined : this.nfs[0]?.program(name);
  }

  /** Releases the NF objects and the prog array. Idempotent. */
  close(): void {
    for (const nf of this.nfs) nf.close();
    this.nfs.length = 0;
    this.progs.close();
  }
}

/** A loaded root object: the XDP root program and its one-slot array. Owns the object. */
export class Root {
  readonly object: BpfObject;

  /** `options`: `.rodata` settings and maps to reuse (per-function time: the scratch map). */
  constructor(path: string, options: Pick<NfPart, "rodata" | "reuseMaps"> = {}) {
    this.object = BpfObject.load({
      path,
      programs: [ChainContract.root.programs.xdp],
      ...(options.rodata ? { rodata: options.rodata } : {}),
      ...(options.reuseMaps ? { reuseMaps: options.reuseMaps } : {}),
    });
  }

  /** The root's XDP program: the chain's entry, as on the hook. */
  get program(): BpfProgram {
    return this.object.program(ChainContract.root.programs.xdp);
  }

  /** The one-slot array whose slot 0 decides which revision runs. */
  get array(): BpfMap {
    return this.object.map(ChainContract.root.progArray);
  }

  /** The atomic step of a switch: slot 0 now holds `revision`'s NF 0. */
  switchTo(revision: Revision): void {
    const first = revision.first;
    if (!first) throw new Error("switch to an empty revision");
    this.array.update(u32(0), u32(first.fd));
  }

  /** Packets that found slot 0 empty (they passed uninspected), summed over CPUs. */
  misses(): bigint {
    const values = this.object.map(ChainContract.root.statsMap).lookupPerCpu(u32(0)) ?? [];
    return values.reduce((sum, v) => sum + v.readBigUInt64LE(0), 0n);
  }

  close(): void {
    this.object.close();
  }
}

/**
 * A root program and behind it one revision of NFs (possibly none: then every packet misses
 * the tail call and passes). Owns every fd; `close()` releases them all.
 */
export class HandChain {
  readonly root: Root;
  readonly revision: Revision;
  readonly stats: BpfMap;

  private constructor(root: Root, revision: Revision, stats: BpfMap) {
    this.root = root;
    this.revision = revision;
    this.stats = stats;
  }

  /** Loads the root and the NFs and links them. Closes what it opened if a step fails. */
  static build(
    rootPath: string,
    parts: readonly NfPart[],
    rootOptions: Pick<NfPart, "rodata" | "reuseMaps"> = {},
  ): HandChain {
    const stats = createStats();
    let root: Root | undefined;
    let revision: Revision | undefined;
    try {
      root = new Root(rootPath, rootOptions);
      revision = Revision.load(parts, stats);
      if (parts.length > 0) root.switchTo(revision);
      return new HandChain(root, revision, stats);
    } catch (err) {
      revision?.close();
      root?.close();
      stats.close();
      throw err;
    }
  }

  /** The root's XDP program: the chain's entry, as on the hook. */
  get entry(): BpfProgram {
    return this.root.program;
  }

  /** Releases every object and map fd (nothing here is pinned). Idempotent. */
  close(): void {
    this.revision.close();
    this.root.close();
    this.stats.close();
  }
}
