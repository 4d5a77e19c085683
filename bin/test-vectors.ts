/**
 * A private chain instance for `sluice validate` and `sluice test`: network functions loaded
 * through the verifier with their own prog array, stats map and fresh maps, never pinned and
 * never attached, exactly like the chain manager's self-test instance. Test vectors run on it
 * with BPF_PROG_TEST_RUN.
 */
import type { ChainSpec } from "../node-agent/src/chain/spec.ts";
import {
  clearState,
  closeNfs,
  createProgArray,
  createStatsMap,
  fillProgArray,
  loadNfs,
  type LoadedNf,
} from "../node-agent/src/chain/nfload.ts";
import { fillTables } from "../node-agent/src/chain/tables.ts";
import type { EndedCounters } from "../node-agent/src/chain/counters.ts";
import { numPossibleCpus, u32, type BpfMap } from "../node-agent/src/libbpf/index.ts";
import { decodePerCpuNfStats, NF_STATS_LAYOUT } from "../node-agent/src/nf/structs.ts";
import { programHook, type ProgramHook } from "../node-agent/src/packet/index.ts";
import { runSelfTest, type SelfTestReport, type SelfTestVectors } from "../node-agent/src/selftest/index.ts";

/**
 * Network functions loaded into the kernel as one chain that nothing can reach but
 * BPF_PROG_TEST_RUN. The caller owns it and must {@link close} it.
 */
export class PrivateChain {
  readonly #hook: ProgramHook;
  readonly #nfs: LoadedNf[];
  readonly #progs: BpfMap;
  readonly #stats: BpfMap;
  readonly #statsBuf = Buffer.alloc(((NF_STATS_LAYOUT.size + 7) & ~7) * numPossibleCpus());

  private constructor(hook: ProgramHook, nfs: LoadedNf[], progs: BpfMap, stats: BpfMap) {
    this.#hook = hook;
    this.#nfs = nfs;
    this.#progs = progs;
    this.#stats = stats;
  }

  /**
   * Loads every function of `spec` (its interfaces are ignored), writes the tables and links
   * the functions by tail calls. Throws what the loader throws: VerifierError with the verifier
   * log, NfContractError, ChainSpecError, BpfError (EPERM without privileges). Nothing stays
   * open when it throws.
   */
  static load(spec: Pick<ChainSpec, "hook" | "functions">): PrivateChain {
    const hook = programHook(spec.hook);
    const progs = createProgArray();
    let stats: BpfMap | undefined;
    let nfs: LoadedNf[] = [];
    try {
      stats = createStatsMap();
      nfs = loadNfs({
        hook,
        functions: spec.functions,
        statsIndexes: spec.functions.map((_, i) => i),
        progs,
        stats,
      });
      fillTables(nfs);
      fillProgArray(progs, nfs);
      return new PrivateChain(hook, nfs, progs, stats);
    } catch (err) {
      closeNfs(nfs);
      stats?.close();
      progs.close();
      throw err;
    }
  }

  /**
   * Runs `vectors` as the agent's self-test does: each function's own on that function alone,
   * the chain's entering at the first function, every vector from empty state.
   */
  run(vectors: SelfTestVectors): SelfTestReport {
    const order = this.#nfs.map((nf) => nf.spec.name);
    return runSelfTest(
      {
        hook: this.#hook,
        order,
        program: (i) => this.#nfs[i]!.program,
        readEnded: () => new Map(order.map((name, i) => [name, this.#readStats(i)])),
        isolate: (i) => {
          const next = this.#nfs[i + 1];
          if (!next) return () => undefined;
          this.#progs.delete(u32(i + 1));
          return () => this.#progs.update(u32(i + 1), u32(next.program.fd));
        },
        resetState: () => clearState(this.#nfs),
      },
      vectors,
    );
  }

  /** Closes every program and map of the instance. */
  close(): void {
    closeNfs(this.#nfs);
    this.#progs.close();
    this.#stats.close();
  }

  #readStats(index: number): EndedCounters {
    if (!this.#stats.lookupInto(u32(index), this.#statsBuf))
      return { packets: 0n, bytes: 0n, drops: 0n, passes: 0n, errors: 0n };
    return decodePerCpuNfStats(this.#statsBuf, numPossibleCpus());
  }
}
