/**
 * The chain manager: turns a ChainSpec into kernel objects and keeps them converged.
 *
 * A chain is a root program attached to the hook that tail-calls slot 0 of its one-slot prog
 * array; slot 0 holds NF 0 of the live revision, and every revision has its own prog array. A
 * new revision is loaded and self-tested next to the live one, then switched in with one update
 * of that slot: every packet sees all of the old revision or all of the new one. State that must
 * outlive this process (programs, maps, links, what is live) is pinned on bpffs (see layout.ts),
 * so a new process adopts running chains without touching traffic.
 *
 * A change of hook cannot be one slot update (another hook is another root program): the new
 * hook's root is attached, already pointing at the new revision, before the old hook's links are
 * detached, so no packet passes unfiltered; maps carry over as in any switch. While both are
 * attached, XDP and tc-ingress on one interface both process a received packet (XDP first): it
 * is dropped if either revision drops it and counted by both (see hookchange.ts).
 *
 * The steps live in their own files: switch.ts (a switch on the same hook), hookchange.ts,
 * inplace.ts (table, interface and label changes), revision.ts (build and release of a
 * revision, which maps carry over), attach.ts (root and links), adopt.ts (taking over what is
 * pinned), status.ts, selftests.ts. This class holds the chains and runs calls for one chain
 * one at a time.
 *
 * Capabilities: CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN are all it needs (what the Helm chart
 * gives the agent). It holds fds of what it created and opens what it adopts by pin; it never
 * opens a BPF object by id nor enumerates ids, which the kernel allows only with CAP_SYS_ADMIN.
 */
import { existsSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { rootLogger } from "../../../common/log.ts";
import { compile, BPF_DIR } from "../compile/index.ts";
import { ChainContract } from "../nf/types.ts";
import { adoptChain, adoptIfPinned, describeAdopted } from "./adopt.ts";
import { closeChain, destroyChain, type Chain, type ManagerContext } from "./chain.ts";
import { specDigests } from "./digests.ts";
import { ChainStateError } from "./errors.ts";
import { changeHook } from "./hookchange.ts";
import { liveMap, updateInPlace } from "./inplace.ts";
import { chainPaths } from "./layout.ts";
import { SelfTests } from "./selftests.ts";
import { KeyedQueue } from "./serialize.ts";
import { validateChainSpec, type ChainSpec } from "./spec.ts";
import { chainStatus, StatsReader } from "./status.ts";
import { withMode } from "./mode.ts";
import { switchRevision } from "./switch.ts";
import {
  DEFAULT_BPFFS_ROOT,
  type AdoptedChain,
  type ApplyResult,
  type ChainManagerOptions,
  type ChainStatus,
} from "./types.ts";

export {
  DEFAULT_BPFFS_ROOT,
  type AdoptedChain,
  type ApplyResult,
  type ChainManagerOptions,
  type ChainStatus,
  type InterfaceStatus,
  type NfMapRef,
  type NfStatus,
  type RecreatedMap,
  type SwitchPhase,
} from "./types.ts";

/**
 * Owns the chains pinned under one bpffs directory (one manager per agent process).
 *
 * Ownership: the manager holds fds of every chain it created or adopted and closes them in
 * `close()`; the kernel objects live on through their pins (traffic keeps flowing). `remove()`
 * detaches and unpins a chain. Calls for one chain run one at a time, in call order.
 */
export class ChainManager {
  readonly root: string;
  readonly #options: ChainManagerOptions;
  readonly #chains = new Map<string, Chain>();
  readonly #queue = new KeyedQueue();
  readonly #stats = new StatsReader();
  /** Each chain's self-test instance, kept between self-tests (see testinstance.ts). */
  readonly #selfTests = new SelfTests(this.#stats);
  readonly #ctx: ManagerContext;
  /** How each chain's live revision runs (see mode.ts), as its last switch found. */
  readonly #modes = new Map<string, { mode: "linked" | "fused"; modeReason?: string }>();
  #rootObject: Promise<string> | undefined;

  constructor(options: ChainManagerOptions = {}) {
    this.#options = options;
    this.root = options.root ?? DEFAULT_BPFFS_ROOT;
    this.#ctx = {
      root: this.root,
      netns: options.netns,
      log: (options.logger ?? rootLogger).child({ component: "chain" }),
      chains: this.#chains,
      selfTests: this.#selfTests,
      timeSample: options.timeSample ?? 0,
      keepStandby: options.keepStandby ?? true,
      phase: (phase, chain) => options.onPhase?.(phase, chain),
    };
    if (options.rootObjectPath) this.#rootObject = Promise.resolve(options.rootObjectPath);
  }

  /**
   * Converges chain `spec.name` to `spec`. A new or changed chain is built next to the live one,
   * self-tested and switched in atomically; a table-only change is written in place; a change of
   * hook attaches the new hook before detaching the old (a packet arriving meanwhile may be
   * processed by both an XDP and a tc-ingress chain, never by neither). Any failure leaves the
   * chain that ran before running, untouched, and throws: ChainSpecError, NfContractError,
   * VerifierError / BpfError (with the verifier log), SelfTestError, NotSupportedError,
   * AttachError, NetnsError.
   */
  async apply(spec: ChainSpec): Promise<ApplyResult> {
    validateChainSpec(spec);
    return this.#queue.run(spec.name, () => this.#apply(spec));
  }

  /**
   * Finds the chains pinned under the root and takes them over as they run: nothing is detached
   * or reloaded. Leftovers of a switch or a change of hook that a crash interrupted are cleaned
   * up (a half-built revision is unpinned) or completed (new maps moved into place); a chain
   * whose creation was interrupted before it was attached anywhere is removed.
   */
  async adopt(): Promise<AdoptedChain[]> {
    if (!existsSync(this.root)) return [];
    const found: AdoptedChain[] = [];
    for (const entry of readdirSync(this.root, { withFileTypes: true })) {
      if (!entry.isDirectory()) continue;
      const name = entry.name;
      const adopted = await this.#queue.run(name, () => {
        const known = this.#chains.get(name);
        if (known) return describeAdopted(known, []);
        return adoptChain(this.#ctx, name);
      });
      found.push(adopted);
    }
    return found;
  }

  /** Detaches chain `name` from every interface and unpins all of it. No-op for an unknown chain. */
  remove(name: string): Promise<void> {
    return this.#queue.run(name, () => {
      const chain = this.#chains.get(name) ?? adoptIfPinned(this.#ctx, name);
      if (chain) destroyChain(this.#ctx, chain);
      else rmSync(chainPaths(this.root, name).dir, { recursive: true, force: true });
      this.#selfTests.drop(name);
      this.#modes.delete(name);
    });
  }

  /** What runs for chain `name` now, with counters; undefined for a chain this manager does not hold. */
  status(name: string): ChainStatus | undefined {
    const chain = this.#chains.get(name);
    return chain ? chainStatus(chain, this.#stats) : undefined;
  }

  /** Status of every chain this manager holds. */
  list(): ChainStatus[] {
    return [...this.#chains.values()].map((chain) => chainStatus(chain, this.#stats));
  }

  /**
   * Every entry of NF-owned map `map` of NF `nf` in the live revision of `chain` (for decoders
   * such as flowmon's top talkers). Throws ChainStateError when there is no such map.
   */
  readTable(chain: string, nf: string, map: string): { key: Buffer; value: Buffer }[] {
    const held = this.#chains.get(chain);
    if (!held) throw new ChainStateError(`chain ${chain}: no live revision`);
    const entries: { key: Buffer; value: Buffer }[] = [];
    for (const [key, value] of liveMap(held, nf, map).entries()) entries.push({ key, value });
    return entries;
  }

  /** Closes every fd; pins stay and traffic keeps flowing. The manager is unusable afterwards. */
  close(): void {
    for (const chain of this.#chains.values()) closeChain(chain);
    this.#chains.clear();
    this.#selfTests.close();
  }

  async #apply(spec: ChainSpec): Promise<ApplyResult> {
    const started = performance.now();
    const chain = this.#chains.get(spec.name) ?? adoptIfPinned(this.#ctx, spec.name);
    const digests = specDigests(spec);
    if (chain && chain.meta.hook !== spec.hook) {
      const rootObjectPath = await this.#rootObjectPath();
      return this.#keepMode(
        await withMode(
          (planned) => changeHook(this.#ctx, rootObjectPath, chain, planned, digests, started),
          spec,
          this.#cacheDir(),
          chain.log,
        ),
      );
    }
    if (chain?.live && chain.live.meta.codeDigest === digests.code) {
      const mode = this.#modes.get(spec.name) ?? { mode: chain.live.meta.mode ?? "linked" };
      return { ...(await updateInPlace(this.#ctx, chain, spec, digests, started)), ...mode };
    }
    const rootObjectPath = chain ? undefined : await this.#rootObjectPath();
    return this.#keepMode(
      await withMode(
        (planned) => switchRevision(this.#ctx, chain, planned, digests, rootObjectPath, started),
        spec,
        this.#cacheDir(),
        chain?.log ?? this.#ctx.log,
      ),
    );
  }

  /** Remembers how a chain's live revision runs, for the results of in-place updates. */
  #keepMode(result: ApplyResult): ApplyResult {
    const { mode, modeReason } = result;
    if (mode) this.#modes.set(result.chain, { mode, ...(modeReason ? { modeReason } : {}) });
    return result;
  }

  /** Where compiled objects (the root, fused programs) are cached. */
  #cacheDir(): string {
    return this.#options.cacheDir ?? join(tmpdir(), "sluice-cache");
  }

  /** The compiled root object: given in the options, or compiled into the cache on first use. */
  #rootObjectPath(): Promise<string> {
    if (!this.#rootObject) {
      const cacheDir = this.#options.cacheDir ?? join(tmpdir(), "sluice-cache");
      this.#rootObject = compile({ sourceRoot: BPF_DIR, entry: ChainContract.root.entry, cacheDir }).then(
        (r) => r.objectPath,
      );
      this.#rootObject.catch(() => (this.#rootObject = undefined));
    }
    return this.#rootObject;
  }
}
