/**
 * A change of a chain's hook: another hook is another root program, so it cannot be one slot
 * update. The new hook's root is attached, already pointing at the new revision, before the old
 * hook's links are detached; the pins of the change live under handover/ until it completes,
 * and a crash in between is undone or completed by the next process (finishHandover).
 */
import { existsSync, mkdirSync, readdirSync, renameSync, rmSync } from "node:fs";
import { join } from "node:path";
import type { Logger } from "../../../common/log.ts";
import { BpfLink, BpfMap, BpfProgram, u32 } from "../libbpf/index.ts";
import { programHook } from "../packet/index.ts";
import { attachRoot, closeRoot, detach, detachLink, loadRoot, type RootObjects } from "./attach.ts";
import { KEY0, type AttachedLink, type Chain, type ManagerContext } from "./chain.ts";
import type { Digests } from "./digests.ts";
import { LINK_PREFIX, type ChainPaths } from "./layout.ts";
import { ChainMeta, createMetaMap, META_FORMAT, readMeta, writeMeta } from "./meta.ts";
import { buildRevision, discardRevision, goLive } from "./revision.ts";
import type { ChainSpec, Hook } from "./spec.ts";
import type { ApplyResult } from "./types.ts";

/**
 * Moves a chain to another hook without a moment unfiltered: the new revision is built for
 * the new hook next to the live one (maps carried over as in any switch, NFs keeping their
 * stats slots) and self-tested; a root program for the new hook, whose slot 0 already holds
 * the new revision, is attached to every interface; only then are the old hook's links
 * detached. Any failure before that leaves the old hook's chain as it was.
 *
 * What a packet may see: between the attach of the new hook and the detach of the old one
 * (milliseconds: each attach and detach takes a few) both chains run. On different directions (tc-ingress
 * and tc-egress, or XDP and tc-egress) a packet meets only one of them. XDP and tc-ingress on
 * the same interface both see a received packet, XDP first: during that window a packet is
 * processed by the XDP chain and, if that passes it, by the tc chain, so it is dropped if either
 * revision drops it (never unfiltered) and the NFs count it, and spend rate-limit tokens or
 * flow counters on it, twice.
 */
export async function changeHook(
  ctx: ManagerContext,
  rootObjectPath: string,
  chain: Chain,
  spec: ChainSpec,
  digests: Digests,
  started: number,
): Promise<ApplyResult> {
  const from = chain.meta.hook;
  const hook = programHook(spec.hook);
  chain.log.info({ from, to: spec.hook }, "hook changes: attaching the new hook before detaching the old");
  let selfTestMs = 0;
  const selfTesting = ctx.selfTests.run(spec, hook).finally(() => (selfTestMs = performance.now() - started));
  const building = buildRevision(chain, spec, digests, ctx.timeSample);
  const [testOutcome, buildOutcome] = await Promise.allSettled([selfTesting, building]);
  if (testOutcome.status === "rejected") {
    if (buildOutcome.status === "fulfilled") discardRevision(chain, buildOutcome.value);
    throw testOutcome.reason;
  }
  if (buildOutcome.status === "rejected") throw buildOutcome.reason;
  const built = buildOutcome.value;
  const selfTest = testOutcome.value;
  ctx.phase("self-tested", spec.name);
  const loadStarted = started + selfTestMs;

  const paths = chain.paths.handover;
  const xdpMode = spec.xdpMode ?? "auto";
  const target: ChainMeta = { format: META_FORMAT, hook: spec.hook, xdpMode, interfaces: {} };
  let root: RootObjects | undefined;
  let targetMeta: BpfMap | undefined;
  const links = new Map<string, AttachedLink>();
  let overlapStarted = 0;
  try {
    rmSync(paths.dir, { recursive: true, force: true });
    mkdirSync(paths.dir, { recursive: true });
    targetMeta = createMetaMap();
    writeMeta(targetMeta, target);
    targetMeta.pin(paths.meta);
    // The miss counter carries over: the new root counts into the old root's map.
    root = loadRoot(rootObjectPath, spec.hook, chain.rootStats, {
      scratch: chain.scratch,
      timeSample: ctx.timeSample,
    });
    root.rootArray.update(KEY0, u32(built.nfs[0]!.program.fd));
    root.rootProg.pin(paths.rootProg);
    root.rootArray.pin(paths.rootArray);
    root.rootStats.pin(paths.rootStats);
    overlapStarted = performance.now();
    for (const ifname of spec.interfaces) {
      const link = attachRoot(root.rootProg, spec.hook, ifname, xdpMode, ctx.netns, chain.log);
      links.set(ifname, link);
      link.link.pin(paths.link(ifname));
      target.interfaces[ifname] = { ifindex: link.ifindex, ...(link.mode ? { mode: link.mode } : {}) };
    }
  } catch (err) {
    for (const { link } of links.values()) detachLink(link, chain.log);
    if (root) closeRoot(root);
    targetMeta?.close();
    rmSync(paths.dir, { recursive: true, force: true });
    discardRevision(chain, built);
    throw err;
  }
  targetMeta.close();
  const loadMs = performance.now() - loadStarted;
  ctx.phase("built", spec.name);

  // The commit point: from here on a new process completes the change instead of undoing it.
  const flipStarted = performance.now();
  writeMeta(chain.metaMap, target);
  const detached = [...chain.links.keys()];
  for (const ifname of detached) detach(chain, ifname);
  const flipUs = (performance.now() - flipStarted) * 1000;
  const overlapUs = (performance.now() - overlapStarted) * 1000;
  chain.meta = target;
  ctx.phase("flipped", spec.name);

  renameSync(paths.rootProg, chain.paths.rootProg);
  renameSync(paths.rootArray, chain.paths.rootArray);
  renameSync(paths.rootStats, chain.paths.rootStats);
  for (const ifname of links.keys()) renameSync(paths.link(ifname), chain.paths.link(ifname));
  rmSync(paths.dir, { recursive: true, force: true });
  closeRoot(chain);
  Object.assign(chain, root);
  chain.links = links;
  // The replaced revision runs on the other hook's program type: it cannot serve as standby.
  goLive(ctx, chain, built, false);

  const result: ApplyResult = {
    action: "switched",
    chain: spec.name,
    revision: spec.revision,
    generation: built.generation,
    programIds: [chain.rootProg.id, ...chain.live!.programIds],
    attachedInterfaces: [...chain.links.keys()],
    carriedMaps: built.carried,
    recreatedMaps: built.recreated,
    interfaces: { attached: [...links.keys()], detached },
    hookChange: { from, to: spec.hook },
    ...(selfTest ? { selfTest } : {}),
    timings: { selfTestMs, loadMs, flipUs, overlapUs, totalMs: performance.now() - started },
  };
  chain.log.info(
    {
      revision: spec.revision,
      generation: built.generation,
      from,
      to: spec.hook,
      recreated: built.recreated.length,
      overlapUs: Math.round(overlapUs),
      totalMs: Math.round(result.timings.totalMs),
    },
    "revision live on the new hook",
  );
  return result;
}

/**
 * Undoes or completes a change of hook that a crash interrupted (see layout.ts): before its
 * commit (the chain meta still names the old hook) the new hook's links are detached and the
 * handover removed; after it, the old hook's links are detached and the handover pins renamed
 * into place. Either way the chain is left on one hook. Returns what was repaired.
 */
export function finishHandover(paths: ChainPaths, log: Logger): string[] {
  const handover = paths.handover;
  if (!existsSync(handover.dir)) return [];
  const chainMeta = BpfMap.fromPin(paths.meta, "sluice_meta");
  let hook: Hook;
  let target: Hook | undefined;
  try {
    hook = readMeta(chainMeta, ChainMeta, "chain meta").hook;
    if (existsSync(handover.meta)) {
      const targetMeta = BpfMap.fromPin(handover.meta, "sluice_meta");
      try {
        target = readMeta(targetMeta, ChainMeta, "handover meta").hook;
      } finally {
        targetMeta.close();
      }
    }
  } finally {
    chainMeta.close();
  }
  const linkPins = (dir: string) => readdirSync(dir).filter((entry) => entry.startsWith(LINK_PREFIX));
  if (target === undefined || target !== hook) {
    for (const entry of linkPins(handover.dir)) detachLink(BpfLink.fromPin(join(handover.dir, entry)), log);
    rmSync(handover.dir, { recursive: true, force: true });
    log.info({ hook, to: target }, "undid a change of hook that a crash interrupted");
    return [
      `undid the interrupted change of hook to ${target ?? "another hook"}: the chain stays on ${hook}`,
    ];
  }
  // Committed: every link of the chain directory that does not run the new root is the old hook's.
  const rootPin = existsSync(handover.rootProg) ? handover.rootProg : paths.rootProg;
  const newRoot = BpfProgram.fromPin(rootPin);
  const newRootId = newRoot.id;
  newRoot.close();
  for (const entry of linkPins(paths.dir)) {
    const link = BpfLink.fromPin(join(paths.dir, entry));
    if (link.info().progId === newRootId) {
      link.close();
      continue;
    }
    detachLink(link, log);
    rmSync(join(paths.dir, entry), { force: true });
  }
  for (const [from, to] of [
    [handover.rootProg, paths.rootProg],
    [handover.rootArray, paths.rootArray],
    [handover.rootStats, paths.rootStats],
  ] as const) {
    if (existsSync(from)) renameSync(from, to);
  }
  for (const entry of linkPins(handover.dir)) renameSync(join(handover.dir, entry), join(paths.dir, entry));
  rmSync(handover.dir, { recursive: true, force: true });
  log.info({ hook }, "completed a change of hook that a crash interrupted");
  return [`completed the interrupted change of hook to ${hook}`];
}
