/**
 * Self-tests of the chains: each chain's vectors run on its private test instance (see
 * testinstance.ts) before anything of a new revision or new tables goes live.
 */
import { u32 } from "../libbpf/index.ts";
import type { ProgramHook } from "../packet/index.ts";
import {
  assertSelfTestPassed,
  hasVectors,
  runSelfTest,
  type SelfTestReport,
  type SelfTestVectors,
} from "../selftest/index.ts";
import { loadFused } from "./fused.ts";
import { clearScratch, clearState, closeNfs } from "./nfload.ts";
import { fillTables } from "./tables.ts";
import type { ChainSpec } from "./spec.ts";
import type { StatsReader } from "./status.ts";
import { TestInstance } from "./testinstance.ts";

/** The self-test instances of a manager's chains, one per chain. Owned by the manager: `close()`. */
export class SelfTests {
  readonly #instances = new Map<string, TestInstance>();
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
      const fused = await loadFused(
        {
          hook,
          functions: spec.functions,
          statsIndexes: spec.functions.map((_, i) => i),
          progs: instance.progs,
          stats: instance.stats,
        },
        spec.fused!,
      );
      try {
        fillTables(fused);
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
      } finally {
        closeNfs(fused);
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

  /** Closes the instance of chain `name`. */
  drop(name: string): void {
    this.#instances.get(name)?.close();
    this.#instances.delete(name);
  }

  close(): void {
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
