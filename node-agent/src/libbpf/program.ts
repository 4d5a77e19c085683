import { addressOf, closeFd, dupFd, lib, OPTS_SIZE } from "./ffi.ts";
import { progTypeName } from "./constants.ts";
import { failure, fixedName, objInfo, openPinned, pinFd } from "./sys.ts";

/** What the kernel reports about a program (`struct bpf_prog_info`). */
export interface ProgInfo {
  /** Kernel-wide id. */
  id: number;
  /** Name as the kernel keeps it (at most 15 characters). */
  name: string;
  /** `enum bpf_prog_type` number, see {@link ProgType}. */
  type: number;
  /** Hex digest of the program's instructions: equal tags mean equal programs. */
  tag: string;
  /** Ids of the maps the program uses. */
  mapIds: number[];
  /** Load time, ns since boot. */
  loadTimeNs: bigint;
  /** Cumulative run time and run count (only counted while bpf_stats are enabled). */
  runTimeNs: bigint;
  runCount: bigint;
  /**
   * Instructions the verifier processed when the program was loaded (0 before kernel 5.16).
   * Verification time grows with it: it is what a chain switch mostly waits for.
   */
  verifiedInsns: number;
}

/** Arguments of {@link BpfProgram.testRun}. */
export interface TestRunOptions {
  /** Packet (or other input) bytes. */
  data: Uint8Array;
  /**
   * Capture the output packet: `true` for room of the input size + 256 bytes (room for
   * head adjustments), or the buffer size in bytes. Default: no output.
   */
  dataOut?: boolean | number;
  /** Times to run; the reported duration is the average per run. Default 1. */
  repeat?: number;
  /** Program context in (`struct xdp_md` / `struct __sk_buff`), optional. */
  ctxIn?: Uint8Array;
  /** `BPF_F_TEST_*` flags. */
  flags?: number;
  /** CPU to run on (with `BPF_F_TEST_RUN_ON_CPU`). */
  cpu?: number;
}

/** Outcome of one BPF_PROG_TEST_RUN. */
export interface TestRunResult {
  /** The program's return value (an XDP action, a tc action, ...). */
  retval: number;
  /** Average duration of one run, in ns, as the kernel measured it. */
  durationNs: number;
  /** The packet after the program, when asked for. */
  dataOut?: Buffer;
}

const PROG_INFO_SIZE = 232;

/**
 * A loaded BPF program seen through a file descriptor.
 *
 * Ownership: a program from {@link BpfProgram.fromPin} or {@link BpfProgram.fromFd} with
 * `owned: true` owns its fd and `close()` closes it. A program
 * handed out by a loaded {@link BpfObject} borrows libbpf's fd (`close()` does nothing; valid
 * until the object closes; {@link BpfProgram.dup} to keep it longer). The program stays in the
 * kernel while an fd, a pin, a link or a prog-array slot refers to it.
 */
export class BpfProgram {
  /** Full name (from the object), or the kernel's 15-character name. */
  readonly name: string;
  readonly id: number;
  /** `enum bpf_prog_type` number. */
  readonly type: number;
  readonly tag: string;
  #fd: number;
  readonly #owned: boolean;
  readonly #subject: string;

  private constructor(fd: number, owned: boolean, info: ProgInfo, name: string) {
    this.#fd = fd;
    this.#owned = owned;
    this.name = name;
    this.id = info.id;
    this.type = info.type;
    this.tag = info.tag;
    this.#subject = `program ${name}`;
  }

  /**
   * Wraps an existing program fd. With `owned: true` the handle closes `fd` (also when reading
   * its info fails); otherwise the caller keeps ownership.
   */
  static fromFd(fd: number, options: { owned: boolean; name?: string }): BpfProgram {
    try {
      const info = readProgInfo(fd, options.name ? `program ${options.name}` : `program fd ${fd}`, false);
      return new BpfProgram(fd, options.owned, info, options.name ?? info.name);
    } catch (err) {
      if (options.owned) closeFd(fd);
      throw err;
    }
  }

  /** Opens a program pinned on bpffs; the handle owns the new fd. */
  static fromPin(path: string, name?: string): BpfProgram {
    const fd = openPinned(path, `program ${name ?? path}`);
    return BpfProgram.fromFd(fd, name === undefined ? { owned: true } : { owned: true, name });
  }

  /** The program's fd (borrowed: do not close it). */
  get fd(): number {
    if (this.#fd < 0) throw new Error(`${this.#subject}: used after close`);
    return this.#fd;
  }

  /** `xdp`, `sched_cls`, ... */
  get typeName(): string {
    return progTypeName(this.type);
  }

  /** Fresh info from the kernel, with the ids of the maps the program uses. */
  info(): ProgInfo {
    return readProgInfo(this.fd, this.#subject, true);
  }

  /**
   * Runs the program once (or `repeat` times) on `data` with BPF_PROG_TEST_RUN, in the kernel,
   * without attaching it: maps are read and written for real.
   */
  testRun(options: TestRunOptions): TestRunResult {
    const { data } = options;
    const outSize =
      options.dataOut === undefined || options.dataOut === false
        ? 0
        : options.dataOut === true
          ? data.length + 256
          : options.dataOut;
    const out = outSize > 0 ? Buffer.alloc(outSize) : undefined;
    const opts = testRunOpts.fill(0);
    opts.writeBigUInt64LE(BigInt(OPTS_SIZE.testRun), 0);
    opts.writeBigUInt64LE(data.length > 0 ? addressOf(data) : 0n, 8);
    opts.writeBigUInt64LE(out ? addressOf(out) : 0n, 16);
    opts.writeUInt32LE(data.length, 24);
    opts.writeUInt32LE(outSize, 28);
    if (options.ctxIn && options.ctxIn.length > 0) {
      opts.writeBigUInt64LE(addressOf(options.ctxIn), 32);
      opts.writeUInt32LE(options.ctxIn.length, 48);
    }
    opts.writeInt32LE(options.repeat ?? 1, 60);
    opts.writeUInt32LE(options.flags ?? 0, 68);
    opts.writeUInt32LE(options.cpu ?? 0, 72);
    // `data` and `out` stay referenced by this frame until the call returns.
    const ret = lib.progTestRunOpts(this.fd, opts) as number;
    if (ret !== 0) throw failure(ret, this.#subject, "test run");
    const result: TestRunResult = { retval: opts.readUInt32LE(56), durationNs: opts.readUInt32LE(64) };
    if (out) result.dataOut = out.subarray(0, opts.readUInt32LE(28));
    return result;
  }

  /** Pins the program at `path` (parent directories are created). */
  pin(path: string): void {
    pinFd(this.fd, path, this.#subject);
  }

  /** A new handle on the same program with its own fd, owned by the caller. */
  dup(): BpfProgram {
    return new BpfProgram(dupFd(this.fd), true, this.#snapshot(), this.name);
  }

  /** Closes the fd when the handle owns it; idempotent. */
  close(): void {
    if (this.#fd >= 0 && this.#owned) closeFd(this.#fd);
    this.#fd = -1;
  }

  #snapshot(): ProgInfo {
    return {
      id: this.id,
      name: this.name,
      type: this.type,
      tag: this.tag,
      mapIds: [],
      loadTimeNs: 0n,
      runTimeNs: 0n,
      runCount: 0n,
      verifiedInsns: 0,
    };
  }
}

const testRunOpts = Buffer.alloc(OPTS_SIZE.testRun);
const progInfoBuf = Buffer.alloc(PROG_INFO_SIZE);

/** `bpf_obj_get_info_by_fd` for a program; with `withMaps` also the ids of its maps. */
export function readProgInfo(fd: number, subject: string, withMaps: boolean): ProgInfo {
  progInfoBuf.fill(0);
  let b = objInfo(fd, progInfoBuf, subject);
  const mapCount = b.readUInt32LE(52);
  let mapIds: number[] = [];
  if (withMaps && mapCount > 0) {
    const ids = new Uint32Array(mapCount);
    progInfoBuf.fill(0);
    progInfoBuf.writeUInt32LE(mapCount, 52);
    progInfoBuf.writeBigUInt64LE(addressOf(new Uint8Array(ids.buffer)), 56);
    b = objInfo(fd, progInfoBuf, subject);
    mapIds = Array.from(ids.subarray(0, Math.min(mapCount, b.readUInt32LE(52))));
  }
  return {
    type: b.readUInt32LE(0),
    id: b.readUInt32LE(4),
    tag: b.subarray(8, 16).toString("hex"),
    loadTimeNs: b.readBigUInt64LE(40),
    name: fixedName(b, 64),
    runTimeNs: b.readBigUInt64LE(192),
    runCount: b.readBigUInt64LE(200),
    verifiedInsns: b.readUInt32LE(216),
    mapIds,
  };
}
