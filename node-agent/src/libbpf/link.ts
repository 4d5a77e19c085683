import { NotSupportedError } from "./errors.ts";
import { closeFd, lib, OPTS_SIZE } from "./ffi.ts";
import { AttachType, BPF_F_REPLACE, linkTypeName, XdpFlags } from "./constants.ts";
import type { BpfProgram } from "./program.ts";
import { check, failure, objInfo, openPinned, pinFd } from "./sys.ts";

/**
 * How an XDP program runs: `native` in the driver (fast; veth supports it when the peer MTU is
 * at most 3506 for non-frags programs) or `generic` in the core network stack (works on any
 * device, slower). Falling back from one to the other is the caller's decision.
 */
export type XdpMode = "native" | "generic";

/** Which tcx hook a program attaches to. */
export type TcxDirection = "ingress" | "egress";

/** What the kernel reports about a link (`struct bpf_link_info`). */
export interface LinkInfo {
  id: number;
  /** `enum bpf_link_type` number ({@link LinkType}). */
  type: number;
  /** `xdp`, `tcx`, ... */
  typeName: string;
  /** Id of the program the link runs now (0 once the link is detached). */
  progId: number;
  /** Interface index, for xdp and tcx links (0 once detached). */
  ifindex?: number;
  /** Attach type, for tcx links ({@link AttachType}.TCX_INGRESS / TCX_EGRESS). */
  attachType?: number;
}

/** What is attached to an interface's XDP hook (`bpf_xdp_query`). */
export interface XdpQueryResult {
  /** Mode of the attachment; `none` when nothing is attached. */
  mode: "none" | "native" | "generic" | "offload" | "multi";
  /** Id of the attached program (0 if none; for `multi`, see the per-mode ids). */
  progId: number;
  /** Id of the program in native mode, 0 if none. */
  nativeProgId: number;
  /** Id of the program in generic mode, 0 if none. */
  genericProgId: number;
}

const LINK_INFO_SIZE = 48;
const LINK_TYPE_XDP = 6;
const LINK_TYPE_TCX = 11;

/**
 * A bpf_link: an attachment of a program to a hook that belongs to whoever holds it.
 *
 * Ownership: every handle owns its fd (links are created here, opened from a pin, or
 * wrapped with `owned: true`). Closing the last fd of an unpinned link detaches it; a pinned link
 * stays attached until its pin is removed and every fd is closed, or until {@link detach}.
 * Attaching and `if_nametoindex` happen in the calling thread's network namespace: enter the
 * interface's namespace first (see `withNetns`).
 */
export class BpfLink {
  readonly id: number;
  /** `enum bpf_link_type` number. */
  readonly type: number;
  /** XDP mode, known when the link was created by this process; undefined otherwise. */
  readonly xdpMode: XdpMode | undefined;
  #fd: number;
  readonly #owned: boolean;
  readonly #subject: string;

  private constructor(fd: number, owned: boolean, info: LinkInfo, xdpMode: XdpMode | undefined) {
    this.#fd = fd;
    this.#owned = owned;
    this.id = info.id;
    this.type = info.type;
    this.xdpMode = xdpMode;
    this.#subject = `link ${info.id} (${info.typeName})`;
  }

  /**
   * Attaches `prog` (an XDP program) to interface `ifindex` in `mode` through a bpf_link.
   * Errors: EEXIST when a program is attached through netlink, EBUSY when another link holds the
   * hook, {@link NotSupportedError} when the device cannot run it in `mode` (no native XDP in the
   * driver, or an MTU too large for native XDP): the cue to fall back to `generic` if wanted.
   */
  static attachXdp(prog: BpfProgram, ifindex: number, mode: XdpMode): BpfLink {
    const flags = mode === "native" ? XdpFlags.DRV_MODE : XdpFlags.SKB_MODE;
    const fd = createLink(prog, ifindex, AttachType.XDP, flags, `attach xdp ${mode} to ifindex ${ifindex}`);
    return BpfLink.#wrapNew(fd, mode);
  }

  /** Attaches `prog` (a sched_cls program) to the tcx ingress or egress hook of `ifindex`. */
  static attachTcx(prog: BpfProgram, ifindex: number, direction: TcxDirection): BpfLink {
    const attachType = direction === "ingress" ? AttachType.TCX_INGRESS : AttachType.TCX_EGRESS;
    const fd = createLink(prog, ifindex, attachType, 0, `attach tcx ${direction} to ifindex ${ifindex}`);
    return BpfLink.#wrapNew(fd, undefined);
  }

  /** Wraps an existing link fd; with `owned: true` the handle closes it (also on failure here). */
  static fromFd(fd: number, options: { owned: boolean }): BpfLink {
    try {
      return new BpfLink(fd, options.owned, readLinkInfo(fd, `link fd ${fd}`), undefined);
    } catch (err) {
      if (options.owned) closeFd(fd);
      throw err;
    }
  }

  /** Opens a link pinned on bpffs; the handle owns the new fd. */
  static fromPin(path: string): BpfLink {
    return BpfLink.fromFd(openPinned(path, `link ${path}`), { owned: true });
  }

  static #wrapNew(fd: number, mode: XdpMode | undefined): BpfLink {
    try {
      return new BpfLink(fd, true, readLinkInfo(fd, `link fd ${fd}`), mode);
    } catch (err) {
      closeFd(fd);
      throw err;
    }
  }

  /** The link's fd (borrowed: do not close it). */
  get fd(): number {
    if (this.#fd < 0) throw new Error(`${this.#subject}: used after close`);
    return this.#fd;
  }

  /** Current program id, interface and attach type as the kernel reports them. */
  info(): LinkInfo {
    return readLinkInfo(this.fd, this.#subject);
  }

  /**
   * Atomically replaces the link's program (`bpf_link_update`): packets see the old program or
   * the new one, never nothing. With `expectedProgFd` the update fails with EPERM unless that
   * program is the one attached now (compare-and-swap between agents).
   */
  update(prog: BpfProgram, options: { expectedProgFd?: number } = {}): void {
    const opts = linkUpdateOpts.fill(0);
    opts.writeBigUInt64LE(BigInt(OPTS_SIZE.linkUpdate), 0);
    if (options.expectedProgFd !== undefined) {
      opts.writeUInt32LE(BPF_F_REPLACE, 8);
      opts.writeUInt32LE(options.expectedProgFd, 12);
    }
    const ret = lib.linkUpdate(this.fd, prog.fd, opts) as number;
    if (ret !== 0) throw failure(ret, this.#subject, `update to program ${prog.name}`);
  }

  /** Pins the link at `path` (parent directories are created): it then outlives this process. */
  pin(path: string): void {
    pinFd(this.fd, path, this.#subject);
  }

  /**
   * Detaches the program from its hook now, even if the link is pinned or other fds exist. The
   * link object remains (defunct) until its pins and fds are gone.
   */
  detach(): void {
    check(lib.linkDetach(this.fd) as number, this.#subject, "detach");
  }

  /** Closes the fd; an unpinned link with no other fd is detached by the kernel. Idempotent. */
  close(): void {
    if (this.#fd >= 0 && this.#owned) closeFd(this.#fd);
    this.#fd = -1;
  }
}

const linkCreateOpts = Buffer.alloc(OPTS_SIZE.linkCreate);
const linkUpdateOpts = Buffer.alloc(OPTS_SIZE.linkUpdate);
const linkInfoBuf = Buffer.alloc(LINK_INFO_SIZE);
const xdpQueryOpts = Buffer.alloc(OPTS_SIZE.xdpQuery);

function createLink(
  prog: BpfProgram,
  ifindex: number,
  attachType: number,
  flags: number,
  op: string,
): number {
  const opts = linkCreateOpts.fill(0);
  opts.writeBigUInt64LE(BigInt(OPTS_SIZE.linkCreate), 0);
  opts.writeUInt32LE(flags, 8);
  const fd = lib.linkCreate(prog.fd, ifindex, attachType, opts) as number;
  if (fd >= 0) return fd;
  const errno = -fd;
  if (errno === 95 || errno === 524) {
    const feature =
      attachType !== AttachType.XDP
        ? `tcx on ifindex ${ifindex}`
        : `${flags === XdpFlags.DRV_MODE ? "native" : "generic"} XDP on ifindex ${ifindex}`;
    throw new NotSupportedError(feature, errno);
  }
  if (errno === 34 && flags === XdpFlags.DRV_MODE) {
    // ERANGE: the driver cannot run XDP at this MTU (veth: peer MTU above 3506 for non-frags programs).
    throw new NotSupportedError(`native XDP on ifindex ${ifindex} at its current MTU`, errno);
  }
  throw failure(fd, `program ${prog.name}`, op);
}

/** `bpf_obj_get_info_by_fd` for a link. */
export function readLinkInfo(fd: number, subject: string): LinkInfo {
  linkInfoBuf.fill(0);
  const b = objInfo(fd, linkInfoBuf, subject);
  const type = b.readUInt32LE(0);
  const info: LinkInfo = {
    type,
    typeName: linkTypeName(type),
    id: b.readUInt32LE(4),
    progId: b.readUInt32LE(8),
  };
  if (type === LINK_TYPE_XDP) info.ifindex = b.readUInt32LE(16);
  if (type === LINK_TYPE_TCX) {
    info.ifindex = b.readUInt32LE(16);
    info.attachType = b.readUInt32LE(20);
  }
  return info;
}

const XDP_ATTACH_MODES = ["none", "native", "generic", "offload", "multi"] as const;

/**
 * What is attached to the XDP hook of `ifindex` (links and netlink attachments alike). Runs in
 * the calling thread's network namespace.
 */
export function xdpQuery(ifindex: number): XdpQueryResult {
  const opts = xdpQueryOpts.fill(0);
  opts.writeBigUInt64LE(BigInt(OPTS_SIZE.xdpQuery), 0);
  check(lib.xdpQuery(ifindex, 0, opts) as number, `ifindex ${ifindex}`, "query xdp");
  return {
    mode: XDP_ATTACH_MODES[opts.readUInt8(24)] ?? "none",
    progId: opts.readUInt32LE(8),
    nativeProgId: opts.readUInt32LE(12),
    genericProgId: opts.readUInt32LE(20),
  };
}
