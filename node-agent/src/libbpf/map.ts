import { closeFd, dupFd, lib, OPTS_SIZE } from "./ffi.ts";
import { isPerCpuMapType, mapTypeName, UpdateFlags } from "./constants.ts";
import { check, failure, fixedName, numPossibleCpus, objInfo, openPinned, pinFd } from "./sys.ts";

/** What the kernel reports about a map (`struct bpf_map_info`). */
export interface MapInfo {
  /** Kernel-wide id (stable while the map lives). */
  id: number;
  /** `enum bpf_map_type` number, see {@link MapType}. */
  type: number;
  /** Map name as the kernel keeps it (at most 15 characters). */
  name: string;
  keySize: number;
  valueSize: number;
  maxEntries: number;
  /** `BPF_F_*` creation flags. */
  flags: number;
}

/** A map definition: what must match for one map to stand in for another. */
export interface MapDefinition {
  type: number;
  keySize: number;
  valueSize: number;
  maxEntries: number;
  flags: number;
}

/** Arguments of {@link BpfMap.create}. */
export interface MapCreateOptions extends MapDefinition {
  /** Name given to the kernel (truncated to 15 characters). */
  name: string;
  /** Inner map fd for map-in-map types. */
  innerMapFd?: number;
}

/** Key/value bytes: Buffers or any Uint8Array (little-endian layout, as the C structs). */
export type Bytes = Uint8Array;

const MAP_INFO_SIZE = 88;
const ENOENT = 2;

/** True when two definitions describe interchangeable maps (same type, sizes, entries, flags). */
export function sameMapDefinition(a: MapDefinition, b: MapDefinition): boolean {
  return (
    a.type === b.type &&
    a.keySize === b.keySize &&
    a.valueSize === b.valueSize &&
    a.maxEntries === b.maxEntries &&
    a.flags === b.flags
  );
}

/**
 * A BPF map seen through a file descriptor.
 *
 * Ownership: a map made by {@link BpfMap.create}, {@link BpfMap.fromPin} or
 * {@link BpfMap.fromFd} with `owned: true` owns its fd and `close()`
 * closes it. A map handed out by a loaded {@link BpfObject} borrows libbpf's fd: `close()` does
 * nothing and the handle is valid until the object is closed; call {@link BpfMap.dup} to keep the
 * map beyond that. A map lives in the kernel while any fd, pin or program refers to it.
 *
 * Keys and values are raw bytes of at least `keySize` / `valueSize` bytes (checked before every
 * call, because the kernel reads or writes that many bytes through the pointer).
 */
export class BpfMap {
  /** Name used in error messages: the name in the object, or the kernel's (15-char) name. */
  readonly name: string;
  readonly id: number;
  readonly type: number;
  readonly keySize: number;
  readonly valueSize: number;
  readonly maxEntries: number;
  readonly flags: number;
  #fd: number;
  readonly #owned: boolean;
  readonly #subject: string;
  /** Bytes a value occupies in a syscall buffer (all CPUs' slots for per-CPU maps). */
  readonly #valueBytes: number;

  private constructor(fd: number, owned: boolean, info: MapInfo, name: string) {
    this.#fd = fd;
    this.#owned = owned;
    this.name = name;
    this.id = info.id;
    this.type = info.type;
    this.keySize = info.keySize;
    this.valueSize = info.valueSize;
    this.maxEntries = info.maxEntries;
    this.flags = info.flags;
    this.#subject = `map ${name}`;
    this.#valueBytes = isPerCpuMapType(info.type)
      ? perCpuStride(info.valueSize) * numPossibleCpus()
      : info.valueSize;
  }

  /**
   * Wraps an existing map fd. With `owned: true` the new handle closes `fd`; otherwise the caller
   * keeps ownership and must keep it open while the handle is used. `name` overrides the
   * kernel's truncated name in messages. If reading the map info fails, an owned fd is closed.
   */
  static fromFd(fd: number, options: { owned: boolean; name?: string }): BpfMap {
    try {
      const info = readMapInfo(fd, options.name ? `map ${options.name}` : `map fd ${fd}`);
      return new BpfMap(fd, options.owned, info, options.name ?? info.name);
    } catch (err) {
      if (options.owned) closeFd(fd);
      throw err;
    }
  }

  /** Creates a new map (`bpf_map_create`); the handle owns it. */
  static create(options: MapCreateOptions): BpfMap {
    const opts = Buffer.alloc(OPTS_SIZE.mapCreate);
    opts.writeBigUInt64LE(BigInt(OPTS_SIZE.mapCreate), 0);
    opts.writeUInt32LE(options.innerMapFd ?? 0, 24);
    opts.writeUInt32LE(options.flags >>> 0, 28);
    const fd = lib.mapCreate(
      options.type,
      options.name.slice(0, 15),
      options.keySize,
      options.valueSize,
      options.maxEntries,
      opts,
    ) as number;
    check(fd, `map ${options.name}`, `create ${mapTypeName(options.type)}`);
    return BpfMap.fromFd(fd, { owned: true, name: options.name });
  }

  /** Opens a map pinned on bpffs; the handle owns the new fd. */
  static fromPin(path: string, name?: string): BpfMap {
    const fd = openPinned(path, `map ${name ?? path}`);
    return BpfMap.fromFd(fd, name === undefined ? { owned: true } : { owned: true, name });
  }

  /** The map's fd (borrowed: do not close it; see the class comment). */
  get fd(): number {
    if (this.#fd < 0) throw new Error(`${this.#subject}: used after close`);
    return this.#fd;
  }

  /** True for per-CPU maps, whose values are read with {@link lookupPerCpu}. */
  get perCpu(): boolean {
    return isPerCpuMapType(this.type);
  }

  /** The map's definition, to compare with another map before reusing it. */
  definition(): MapDefinition {
    return {
      type: this.type,
      keySize: this.keySize,
      valueSize: this.valueSize,
      maxEntries: this.maxEntries,
      flags: this.flags,
    };
  }

  /** Fresh info from the kernel (same fields as the handle, read again). */
  info(): MapInfo {
    return readMapInfo(this.fd, this.#subject);
  }

  /** The value stored under `key`, or undefined when there is none. Not for per-CPU maps. */
  lookup(key: Bytes): Buffer | undefined {
    const value = Buffer.alloc(this.valueSize);
    return this.lookupInto(key, value) ? value : undefined;
  }

  /**
   * Reads the value under `key` into `out` (at least `valueSize` bytes, or one slot per
   * possible CPU for per-CPU maps); returns false when there is no such key. Allocation-free,
   * for hot paths.
   */
  lookupInto(key: Bytes, out: Bytes): boolean {
    this.#checkKey(key);
    if (out.length < this.#valueBytes) {
      throw new RangeError(
        `${this.#subject}: lookup buffer has ${out.length} bytes, needs ${this.#valueBytes}`,
      );
    }
    const ret = lib.mapLookupElem(this.fd, key, out) as number;
    if (ret === 0) return true;
    if (ret === -ENOENT) return false;
    throw failure(ret, this.#subject, "lookup");
  }

  /**
   * Per-CPU maps: the value of `key` on each possible CPU (one Buffer of `valueSize` bytes per
   * CPU, index = CPU number), or undefined when there is no such key.
   */
  lookupPerCpu(key: Bytes): Buffer[] | undefined {
    if (!this.perCpu)
      throw new RangeError(`${this.#subject}: ${mapTypeName(this.type)} is not a per-CPU map`);
    const stride = perCpuStride(this.valueSize);
    const cpus = numPossibleCpus();
    const all = Buffer.alloc(stride * cpus);
    if (!this.lookupInto(key, all)) return undefined;
    const values: Buffer[] = [];
    for (let cpu = 0; cpu < cpus; cpu++)
      values.push(all.subarray(cpu * stride, cpu * stride + this.valueSize));
    return values;
  }

  /**
   * Stores `value` under `key`. `flags`: {@link UpdateFlags} (ANY by default). For a per-CPU map
   * `value` holds every CPU's slot (see {@link updatePerCpu}); for a prog array or map-in-map it
   * is a 4-byte fd.
   */
  update(key: Bytes, value: Bytes, flags: number = UpdateFlags.ANY): void {
    this.#checkKey(key);
    if (value.length < this.#valueBytes) {
      throw new RangeError(`${this.#subject}: value has ${value.length} bytes, needs ${this.#valueBytes}`);
    }
    const ret = lib.mapUpdateElem(this.fd, key, value, flags) as number;
    if (ret !== 0) throw failure(ret, this.#subject, "update");
  }

  /** Per-CPU maps: stores one value per possible CPU (missing CPUs get zeroes). */
  updatePerCpu(key: Bytes, values: readonly Bytes[], flags: number = UpdateFlags.ANY): void {
    const stride = perCpuStride(this.valueSize);
    const all = Buffer.alloc(stride * numPossibleCpus());
    values.forEach((v, cpu) => {
      if (cpu * stride < all.length) all.set(v.subarray(0, this.valueSize), cpu * stride);
    });
    this.update(key, all, flags);
  }

  /** Removes `key`; returns false when it was not there. */
  delete(key: Bytes): boolean {
    this.#checkKey(key);
    const ret = lib.mapDeleteElem(this.fd, key) as number;
    if (ret === 0) return true;
    if (ret === -ENOENT) return false;
    throw failure(ret, this.#subject, "delete");
  }

  /** The key after `key` (the first key when `key` is undefined), or undefined at the end. */
  nextKey(key: Bytes | undefined): Buffer | undefined {
    if (key) this.#checkKey(key);
    const next = Buffer.alloc(this.keySize);
    const ret = lib.mapGetNextKey(this.fd, key ?? null, next) as number;
    if (ret === 0) return next;
    if (ret === -ENOENT) return undefined;
    throw failure(ret, this.#subject, "next key");
  }

  /**
   * Iterates over the keys. Keys deleted concurrently may restart a hash map's walk from the
   * beginning (kernel semantics), so callers that delete while iterating should collect first.
   */
  *keys(): Generator<Buffer> {
    for (let key = this.nextKey(undefined); key; key = this.nextKey(key)) yield key;
  }

  /** Iterates over [key, value] pairs of a map that is not per-CPU (entries gone meanwhile are skipped). */
  *entries(): Generator<[Buffer, Buffer]> {
    for (const key of this.keys()) {
      const value = this.lookup(key);
      if (value) yield [key, value];
    }
  }

  /** Pins the map at `path` (parent directories are created). */
  pin(path: string): void {
    pinFd(this.fd, path, this.#subject);
  }

  /** A new handle on the same map with its own fd, owned by the caller. */
  dup(): BpfMap {
    return new BpfMap(dupFd(this.fd), true, this.#infoSnapshot(), this.name);
  }

  /** Closes the fd when the handle owns it; idempotent. */
  close(): void {
    if (this.#fd >= 0 && this.#owned) closeFd(this.#fd);
    this.#fd = -1;
  }

  #checkKey(key: Bytes): void {
    if (key.length < this.keySize)
      throw new RangeError(`${this.#subject}: key has ${key.length} bytes, needs ${this.keySize}`);
  }

  #infoSnapshot(): MapInfo {
    return { id: this.id, name: this.name, ...this.definition() };
  }
}

/** Per-CPU values are laid out with an 8-byte stride per CPU. */
function perCpuStride(valueSize: number): number {
  return (valueSize + 7) & ~7;
}

const mapInfoBuf = Buffer.alloc(MAP_INFO_SIZE);

/** `bpf_obj_get_info_by_fd` for a map. */
export function readMapInfo(fd: number, subject: string): MapInfo {
  mapInfoBuf.fill(0);
  const b = objInfo(fd, mapInfoBuf, subject);
  return {
    type: b.readUInt32LE(0),
    id: b.readUInt32LE(4),
    keySize: b.readUInt32LE(8),
    valueSize: b.readUInt32LE(12),
    maxEntries: b.readUInt32LE(16),
    flags: b.readUInt32LE(20),
    name: fixedName(b, 24),
  };
}

/** Little-endian u32 bytes: the usual key of arrays and prog arrays. */
export function u32(value: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(value >>> 0, 0);
  return b;
}

/** Little-endian u64 bytes. */
export function u64(value: number | bigint): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt(value), 0);
  return b;
}
