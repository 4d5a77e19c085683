/**
 * The root program and its links: loading a root for a hook, attaching it to interfaces (XDP
 * native with generic fallback, tcx ingress or egress), detaching, and keeping a chain's links
 * and its meta in step with the spec's interfaces.
 */
import { rmSync } from "node:fs";
import type { Logger } from "../../../common/log.ts";
import {
  BpfError,
  BpfLink,
  BpfObject,
  NotSupportedError,
  type BpfMap,
  type BpfProgram,
} from "../libbpf/index.ts";
import { ifIndex, withNetns } from "../netns/index.ts";
import { ChainContract } from "../nf/types.ts";
import { programHook } from "../packet/index.ts";
import type { AttachedLink, Chain } from "./chain.ts";
import { AttachError } from "./errors.ts";
import { writeMeta } from "./meta.ts";
import type { ChainSpec, Hook, XdpMode } from "./spec.ts";

/** The objects of a root program: the program, its one-slot prog array, its miss counter (own fds). */
export interface RootObjects {
  rootProg: BpfProgram;
  rootArray: BpfMap;
  rootStats: BpfMap;
}

/**
 * Loads the root program for `hook` with a new, empty prog array; counting misses into
 * `rootStats` when given (a change of hook keeps the chain's counter), else into a new map.
 * With `time.timeSample` > 0 the root picks 1 in that many packets for per-function time and
 * stamps their start in `time.scratch` (the chain's scratch map). The caller owns the result.
 */
export function loadRoot(
  rootObjectPath: string,
  hook: Hook,
  rootStats?: BpfMap,
  time?: { scratch: BpfMap; timeSample: number },
): RootObjects {
  const rootName = ChainContract.root.programs[programHook(hook)];
  const reuseMaps: Record<string, BpfMap> = {};
  if (rootStats) reuseMaps[ChainContract.root.statsMap] = rootStats;
  if (time) reuseMaps[ChainContract.scratchMap] = time.scratch;
  const object = BpfObject.load({
    path: rootObjectPath,
    programs: [rootName],
    ...(Object.keys(reuseMaps).length > 0 ? { reuseMaps } : {}),
    ...(time && time.timeSample > 0
      ? { rodata: { [ChainContract.rodata.timeSample]: time.timeSample } }
      : {}),
  });
  const handles: { close(): void }[] = [];
  try {
    const rootProg = object.program(rootName).dup();
    handles.push(rootProg);
    const rootArray = object.map(ChainContract.root.progArray).dup();
    handles.push(rootArray);
    const stats = object.map(ChainContract.root.statsMap).dup();
    return { rootProg, rootArray, rootStats: stats };
  } catch (err) {
    for (const handle of handles) handle.close();
    throw err;
  } finally {
    object.close();
  }
}

export function closeRoot(root: RootObjects): void {
  root.rootProg.close();
  root.rootArray.close();
  root.rootStats.close();
}

/**
 * Attaches `rootProg` to `ifname` on `hook` (unpinned: the caller pins or closes the link). In
 * XDP's `auto` mode native is tried first, generic where the device cannot run native XDP.
 * Throws AttachError, naming a hook that another program holds.
 */
export function attachRoot(
  rootProg: BpfProgram,
  hook: Hook,
  ifname: string,
  xdpMode: XdpMode,
  netns: string | undefined,
  log: Logger,
): AttachedLink {
  const inNetns = <T>(fn: () => T): T => (netns ? withNetns(netns, fn) : fn());
  const ifindex = ifIndex(ifname, netns);
  let link: BpfLink;
  try {
    link = inNetns(() => {
      if (hook === "tc-ingress" || hook === "tc-egress") {
        return BpfLink.attachTcx(rootProg, ifindex, hook === "tc-ingress" ? "ingress" : "egress");
      }
      if (xdpMode !== "auto") return BpfLink.attachXdp(rootProg, ifindex, xdpMode);
      try {
        return BpfLink.attachXdp(rootProg, ifindex, "native");
      } catch (err) {
        if (!(err instanceof NotSupportedError)) throw err;
        log.info({ ifname, reason: err.message }, "native XDP not available: attaching in generic mode");
        return BpfLink.attachXdp(rootProg, ifindex, "generic");
      }
    });
  } catch (err) {
    if (err instanceof BpfError) {
      const holder = err.code === "EBUSY" || err.code === "EEXIST" ? " (another program holds the hook)" : "";
      throw new AttachError(ifname, `${err.message}${holder}`, { cause: err });
    }
    throw err;
  }
  return { link, ifindex, mode: link.xdpMode };
}

/** Detaches a link now (its pin may stay) and closes the handle. */
export function detachLink(link: BpfLink, log: Logger): void {
  try {
    link.detach();
  } catch (err) {
    log.warn({ err, linkId: link.id }, "detach failed; unpinning the link");
  }
  link.close();
}

/** Attaches the chain's root to `ifname`, pins the link and records it in the chain meta (in memory). */
export function attach(chain: Chain, ifname: string, xdpMode: XdpMode, netns: string | undefined): void {
  const attached = attachRoot(chain.rootProg, chain.meta.hook, ifname, xdpMode, netns, chain.log);
  try {
    attached.link.pin(chain.paths.link(ifname));
  } catch (err) {
    attached.link.close();
    throw err;
  }
  chain.links.set(ifname, attached);
  chain.meta.interfaces[ifname] = {
    ifindex: attached.ifindex,
    ...(attached.mode ? { mode: attached.mode } : {}),
  };
}

/** Detaches the chain from `ifname` and unpins the link. */
export function detach(chain: Chain, ifname: string): void {
  const attached = chain.links.get(ifname);
  if (attached) detachLink(attached.link, chain.log);
  rmSync(chain.paths.link(ifname), { force: true });
  chain.links.delete(ifname);
  delete chain.meta.interfaces[ifname];
}

/** Attaches the root to every interface of `spec` that has no link yet; all or none. */
export function attachMissing(chain: Chain, spec: ChainSpec, netns: string | undefined): string[] {
  const attached: string[] = [];
  try {
    for (const ifname of spec.interfaces) {
      const existing = chain.links.get(ifname);
      if (existing && existing.link.info().ifindex) continue;
      // A link whose device went away is defunct: attach to the interface of that name anew.
      if (existing) detach(chain, ifname);
      attach(chain, ifname, spec.xdpMode ?? "auto", netns);
      attached.push(ifname);
    }
  } catch (err) {
    for (const ifname of attached) detach(chain, ifname);
    throw err;
  }
  return attached;
}

/** Detaches interfaces that `spec` no longer names. */
export function detachUnwanted(chain: Chain, spec: ChainSpec): string[] {
  const wanted = new Set(spec.interfaces);
  const detached = [...chain.links.keys()].filter((ifname) => !wanted.has(ifname));
  for (const ifname of detached) detach(chain, ifname);
  return detached;
}

/**
 * XDP links whose mode the spec no longer accepts are attached again in the right mode. XDP
 * cannot run native and generic programs on one device at once, so packets pass that interface
 * without the chain for the moment between detach and attach.
 */
export function reattachModes(chain: Chain, spec: ChainSpec, netns: string | undefined): string[] {
  if (spec.hook !== "xdp") return [];
  const wanted = spec.xdpMode ?? "auto";
  chain.meta.xdpMode = wanted;
  if (wanted === "auto") return [];
  const redo = [...chain.links].filter(([, l]) => l.mode !== undefined && l.mode !== wanted).map(([n]) => n);
  for (const ifname of redo) {
    detach(chain, ifname);
    attach(chain, ifname, wanted, netns);
  }
  return redo;
}

/** Writes the chain meta (interfaces and attach mode) to its pinned map. */
export function writeChainMeta(chain: Chain, spec: ChainSpec): void {
  chain.meta.xdpMode = spec.xdpMode ?? "auto";
  writeMeta(chain.metaMap, chain.meta);
}
