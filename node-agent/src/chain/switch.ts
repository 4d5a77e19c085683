/**
 * A switch to a new revision on the same hook: the revision is built next to the live one while
 * its self-test runs (or, when it is exactly the chain's standby, the revision the last switch
 * replaced, that one is self-tested and pinned again: see standby.ts), new interfaces are
 * attached, and one update of the root's slot 0 switches every packet from all of the old
 * revision to all of the new one. A new chain is created the same way, on a skeleton of its
 * own, and attached last.
 */
import { u32 } from "../libbpf/index.ts";
import { programHook } from "../packet/index.ts";
import { attachMissing, detachUnwanted, reattachModes, writeChainMeta } from "./attach.ts";
import type { SelfTestReport } from "../selftest/index.ts";
import {
  createSkeleton,
  destroyChain,
  KEY0,
  releaseStandby,
  type BuiltRevision,
  type Chain,
  type ManagerContext,
} from "./chain.ts";
import type { Digests } from "./digests.ts";
import { buildRevision, discardRevision, goLive } from "./revision.ts";
import type { ChainSpec } from "./spec.ts";
import { reviveStandby, standbyMismatch, standbyPlanKey } from "./standby.ts";
import type { ApplyResult } from "./types.ts";

/**
 * Switches chain `existing` (or a new chain, created from `rootObjectPath`) to `spec`. Any
 * failure before the switch leaves what ran before as it was, and throws.
 */
export async function switchRevision(
  ctx: ManagerContext,
  existing: Chain | undefined,
  spec: ChainSpec,
  digests: Digests,
  rootObjectPath: string | undefined,
  started: number,
): Promise<ApplyResult> {
  const prepared =
    (existing && (await fromStandby(ctx, existing, spec, digests, started))) ??
    (await buildAndSelfTest(ctx, existing, spec, digests, rootObjectPath, started));
  const { chain, built, selfTest, selfTestMs, revisionMs } = prepared;
  ctx.phase("self-tested", spec.name);
  const loadStarted = started + selfTestMs;

  // New interfaces of a running chain are attached before the switch, so that a failure
  // leaves the old revision as it was; they run the old revision until the switch.
  let attached: string[] = [];
  if (existing) {
    try {
      attached = attachMissing(chain, spec, ctx.netns);
    } catch (err) {
      discardRevision(chain, built);
      throw err;
    }
  }
  const loadMs = performance.now() - loadStarted;
  ctx.phase("built", spec.name);

  const nf0 = u32(built.programs[0]!.fd);
  const flipStarted = performance.now();
  chain.rootArray.update(KEY0, nf0);
  const flipUs = (performance.now() - flipStarted) * 1000;
  ctx.phase("flipped", spec.name);

  const releaseStarted = performance.now();
  goLive(ctx, chain, built, ctx.keepStandby);
  const releaseMs = performance.now() - releaseStarted;

  let detached: string[] = [];
  try {
    if (existing) {
      detached = detachUnwanted(chain, spec);
      attached = [...attached, ...reattachModes(chain, spec, ctx.netns)];
    } else {
      attached = attachMissing(chain, spec, ctx.netns);
    }
  } catch (err) {
    if (!existing) destroyChain(ctx, chain);
    throw err;
  }
  if (attached.length > 0 || detached.length > 0) writeChainMeta(chain, spec);

  const result: ApplyResult = {
    action: existing ? "switched" : "created",
    chain: spec.name,
    revision: spec.revision,
    generation: built.generation,
    programIds: [chain.rootProg.id, ...chain.live!.programIds],
    attachedInterfaces: [...chain.links.keys()],
    carriedMaps: built.carried,
    recreatedMaps: built.recreated,
    interfaces: { attached, detached },
    ...(selfTest ? { selfTest } : {}),
    ...(prepared.fromStandby ? { fromStandby: true } : {}),
    timings: {
      selfTestMs,
      loadMs,
      flipUs,
      parts: {
        selfTestLoadMs: selfTestMs - (selfTest?.durationMs ?? 0),
        vectorsMs: selfTest?.durationMs ?? 0,
        nfLoadMs: built.loadMs,
        revisionMs,
        releaseMs,
      },
      totalMs: performance.now() - started,
    },
  };
  chain.log.info(
    {
      revision: spec.revision,
      generation: built.generation,
      action: result.action,
      recreated: built.recreated.length,
      fromStandby: prepared.fromStandby,
      flipUs: Math.round(flipUs),
      totalMs: Math.round(result.timings.totalMs),
    },
    "revision live",
  );
  return result;
}

/** A revision ready to be switched in, self-tested. */
interface Prepared {
  chain: Chain;
  built: BuiltRevision;
  selfTest: SelfTestReport | undefined;
  /** From the start of the apply until the self-test passed, ms. */
  selfTestMs: number;
  /** Building the revision apart from loading its NFs (see ApplyResult.timings.parts), ms. */
  revisionMs: number;
  /** The revision is the chain's standby, nothing was loaded for it. */
  fromStandby: boolean;
}

/**
 * The chain's standby as the revision `spec` asks for, self-tested, when it is exactly that
 * revision (see standby.ts); undefined otherwise (a standby that can never serve again is
 * released). A self-test failure throws and leaves the standby as it was.
 */
async function fromStandby(
  ctx: ManagerContext,
  chain: Chain,
  spec: ChainSpec,
  digests: Digests,
  started: number,
): Promise<Prepared | undefined> {
  const standby = chain.standby;
  if (!standby) return undefined;
  const mismatch = standbyMismatch(
    chain,
    standby,
    spec,
    digests,
    standbyPlanKey(spec, digests.code, ctx.timeSample),
  );
  if (mismatch) {
    if (mismatch.stale) {
      chain.log.info({ reason: mismatch.reason }, "standby revision released: it cannot serve again");
      releaseStandby(chain);
    }
    return undefined;
  }
  const selfTest = await ctx.selfTests.run(spec, programHook(spec.hook));
  const selfTestMs = performance.now() - started;
  let built: BuiltRevision;
  const reviveStarted = performance.now();
  try {
    built = reviveStandby(chain, spec, digests);
  } catch (err) {
    chain.log.warn({ err }, "standby revision could not be pinned again; building the revision");
    return undefined;
  }
  const revisionMs = performance.now() - reviveStarted;
  return { chain, built, selfTest, selfTestMs, revisionMs, fromStandby: true };
}

/**
 * Builds the revision next to the live one (on a new skeleton for a new chain) while its
 * self-test runs: their verifications share the cores; nothing is switched in before the
 * self-test passed. Any failure undoes the build and throws.
 */
async function buildAndSelfTest(
  ctx: ManagerContext,
  existing: Chain | undefined,
  spec: ChainSpec,
  digests: Digests,
  rootObjectPath: string | undefined,
  started: number,
): Promise<Prepared> {
  let selfTestMs = 0;
  let buildMs = 0;
  const selfTesting = ctx.selfTests
    .run(spec, programHook(spec.hook))
    .finally(() => (selfTestMs = performance.now() - started));
  const building = (async () => {
    const chain = existing ?? createSkeleton(ctx, spec, rootObjectPath!);
    try {
      const built = await buildRevision(chain, spec, digests, ctx.timeSample);
      buildMs = performance.now() - started;
      return { chain, built };
    } catch (err) {
      if (!existing) destroyChain(ctx, chain);
      throw err;
    }
  })();
  const [testOutcome, buildOutcome] = await Promise.allSettled([selfTesting, building]);
  if (testOutcome.status === "rejected") {
    if (buildOutcome.status === "fulfilled") {
      const { chain, built } = buildOutcome.value;
      discardRevision(chain, built);
      if (!existing) destroyChain(ctx, chain);
    }
    throw testOutcome.reason;
  }
  if (buildOutcome.status === "rejected") throw buildOutcome.reason;
  const { chain, built } = buildOutcome.value;
  return {
    chain,
    built,
    selfTest: testOutcome.value,
    selfTestMs,
    revisionMs: buildMs - built.loadMs,
    fromStandby: false,
  };
}
