/**
 * Self-tests of the chains: each chain's vectors run on its private test instance (see
 * testinstance.ts) before anything of a new revision or new tables goes live.
 */
import { sameMapDefinition, u32, type BpfMap } from "../libbpf/index.ts";
import type { ProgramHook } from "../packet/index.ts";
import {
  assertSelfTestPassed,
  hasVectors,
  runSelfTest,
  type SelfTestReport,
  type SelfTestVectors,
} from "../selftest/index.ts";
import { loadFused } from "./fused.ts";
import { clearScratch, clearState, closeNfs, type LoadedNf } from "./nfload.ts";
import { replaceEntries } from "./tables.ts";
import type { ChainSpec } from "./spec.ts";
import type { StatsReader } from "./status.ts";
import { TestInstance } from "./testinstance.ts";

/** A fused self-test program kept between self-tests, with dups of its maps by `<nf>\0<map>`. */
interface KeptFused {
  key: string;
  instance: TestInstance;
  nfs: LoadedNf[];
  maps: Map<string, BpfMap>;
}

/** Fused self-test programs kept per chain: the current one and the one before. */
const KEPT_FUSED = 2;

function disposeFused(kept: KeptFused): void {
  closeNfs(kept.nfs);
  for (const map of kept.maps.values()) map.close();
  kept.maps.clear();
}

/** The self-test instances of a manager's chains, one per chain. Owned by the manager: `close()`. */
export class SelfTests {
  readonly #instances = new Map<string, TestInstance>();
  /** Each fused chain's self-test program (see #fusedProgram). */
  readonly #fused = new Map<string, KeptFused[]>();
  readonly #stats: StatsReader;

  constructor(stats: StatsReader) {
    this.#stats = stats;
  }

  /**
   * Makes the chain's self-test instance run the spec (its own prog array, stats and state
   * maps; NFs loaded the same way for an earlier self-test are reused) and runs every vector;
   * throws SelfTestError on a mismatch. Nothing live is touched. Without vectors nothing is
   * loaded and the result is undefined.
   */
  async run(spec: ChainSpec, hook: ProgramHook): Promise<SelfTestReport | undefined> {
    const vectors: SelfTestVectors = {
      chain: spec.tests ?? [],
      nf: new Map(spec.functions.map((nf) => [nf.name, nf.tests ?? []])),
    };
    if (!hasVectors(vectors)) return undefined;
    const instance = this.#instance(spec.name, hook);
    if (spec.fused) return this.#runFused(spec, hook, instance, vectors);
    const nfs = await instance.prepare(spec.functions);
    const order = spec.functions.map((nf) => nf.name);
    const report = runSelfTest(
      {
        hook,
        order,
        program: (i) => nfs[i]!.program,
        readEnded: () => new Map(order.map((name, i) => [name, this.#stats.read(instance.stats, i)])),
        isolate: (i) => {
          const next = nfs[i + 1];
          if (!next) return () => undefined;
          instance.progs.delete(u32(i + 1));
          return () => instance.progs.update(u32(i + 1), u32(next.program.fd));
        },
        resetState: () => clearState(nfs),
        forgetPacket: () => clearScratch(instance.scratch),
      },
      vectors,
    );
    assertSelfTestPassed(report);
    return report;
  }

  /**
   * A fused chain's self-test: each NF's own vectors on the NF alone, as in a linked chain (the
   * NF's code is the same; fused and linked decide alike), and the chain's vectors on the fused
   * program itself, loaded with maps of its own.
   */
  async #runFused(
    spec: ChainSpec,
    hook: ProgramHook,
    instance: TestInstance,
    vectors: SelfTestVectors,
  ): Promise<SelfTestReport> {
    const order = spec.functions.map((nf) => nf.name);
    const reports: SelfTestReport[] = [];
    const own: SelfTestVectors = { chain: [], nf: vectors.nf };
    if (hasVectors(own)) {
      const nfs = await instance.prepare(spec.functions);
      reports.push(
        runSelfTest(
          {
            hook,
            order,
            program: (i) => nfs[i]!.program,
            readEnded: () => new Map(order.map((name, i) => [name, this.#stats.read(instance.stats, i)])),
            isolate: (i) => {
              const next = nfs[i + 1];
              if (!next) return () => undefined;
              instance.progs.delete(u32(i + 1));
              return () => instance.progs.update(u32(i + 1), u32(next.program.fd));
            },
            resetState: () => clearState(nfs),
            forgetPacket: () => clearScratch(instance.scratch),
          },
          own,
        ),
      );
    }
    if ((vectors.chain ?? []).length > 0) {
      const fused = await this.#fusedProgram(spec, hook, instance);
      {
        reports.push(
          runSelfTest(
            {
              hook,
              order,
              program: () => fused[0]!.program,
              readEnded: () => new Map(order.map((name, i) => [name, this.#stats.read(instance.stats, i)])),
              isolate: () => () => undefined,
              resetState: () => clearState(fused),
            },
            { chain: vectors.chain ?? [] },
          ),
        );
      }
    }
    const results = reports.flatMap((r) => r.results).sort((a, b) => Number(a.passed) - Number(b.passed));
    const report: SelfTestReport = {
      passed: reports.reduce((n, r) => n + r.passed, 0),
      failed: reports.reduce((n, r) => n + r.failed, 0),
      results,
      durationMs: reports.reduce((n, r) => n + r.durationMs, 0),
    };
    assertSelfTestPassed(report);
    return report;
  }

  /**
   * The fused program the chain's vectors run on, with the spec's tables. Kept between
   * self-tests like the linked NFs of the test instance: loaded again only when the fused object,
   * a parameter or the set of tables changed, and then on the kept state maps (emptied before
   * every vector anyway), so that a switch does not create and free large maps every time.
   */
  async #fusedProgram(spec: ChainSpec, hook: ProgramHook, instance: TestInstance): Promise<LoadedNf[]> {
    const key = JSON.stringify([
      hook,
      spec.fused!.objectPath,
      spec.functions.map((f) => [
        f.name,
        Object.entries(f.rodata ?? {}).map(([k, v]) => [k, String(v)]),
        Object.keys(f.tables ?? {}).sort(),
      ]),
    ]);
    let list = this.#fused.get(spec.name) ?? [];
    if (list.some((k) => k.instance !== instance)) {
      for (const k of list) disposeFused(k);
      list = [];
    }
    let kept = list.find((k) => k.key === key);
    if (!kept) {
      // State maps of the latest kept program: every vector empties them first anyway.
      const maps = list.at(-1)?.maps ?? new Map<string, BpfMap>();
      const nfs = await loadFused(
        {
          hook,
          functions: spec.functions,
          statsIndexes: spec.functions.map((_, i) => i),
          progs: instance.progs,
          stats: instance.stats,
          useMap: (nf, map) => {
            const found = maps.get(`${nf}\0${map.name}`);
            return found && sameMapDefinition(found.definition(), map) ? found : undefined;
          },
        },
        spec.fused!,
      );
      const fresh = new Map<string, BpfMap>();
      try {
        for (const nf of nfs)
          for (const [name, map] of nf.maps) fresh.set(`${nf.spec.name}\0${name}`, map.dup());
      } catch (err) {
        for (const map of fresh.values()) map.close();
        closeNfs(nfs);
        throw err;
      }
      kept = { key, instance, nfs, maps: fresh };
      list.push(kept);
    } else {
      list = [...list.filter((k) => k !== kept), kept];
    }
    // The current program and the one before (a rollback returns to it).
    while (list.length > KEPT_FUSED) disposeFused(list.shift()!);
    this.#fused.set(spec.name, list);
    for (const nf of kept.nfs) {
      for (const [table, entries] of Object.entries(nf.spec.tables ?? {})) {
        const map = nf.maps.get(table);
        if (map) replaceEntries(map, entries);
      }
    }
    return kept.nfs;
  }

  /** Closes the instance of chain `name`. */
  drop(name: string): void {
    for (const kept of this.#fused.get(name) ?? []) disposeFused(kept);
    this.#fused.delete(name);
    this.#instances.get(name)?.close();
    this.#instances.delete(name);
  }

  close(): void {
    for (const list of this.#fused.values()) for (const kept of list) disposeFused(kept);
    this.#fused.clear();
    for (const instance of this.#instances.values()) instance.close();
    this.#instances.clear();
  }

  /** The self-test instance of chain `name` for `hook` (another hook's is closed). */
  #instance(name: string, hook: ProgramHook): TestInstance {
    let instance = this.#instances.get(name);
    if (instance?.hook !== hook) {
      instance?.close();
      instance = new TestInstance(hook);
      this.#instances.set(name, instance);
    }
    return instance;
  }
}
