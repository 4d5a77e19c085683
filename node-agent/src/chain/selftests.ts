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
import { clearState } from "./nfload.ts";
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
      },
      vectors,
    );
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
