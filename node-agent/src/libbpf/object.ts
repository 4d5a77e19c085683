import { existsSync, statSync } from "node:fs";
import { basename } from "node:path";
import { BpfError, BpfSpecError, NotSupportedError, VerifierError } from "./errors.ts";
import {
  addressOf,
  allocNative,
  cString,
  freeNative,
  lastErrno,
  lib,
  nativeView,
  objectLoadOnWorker,
  OPTS_SIZE,
  type Ptr,
  quietly,
  readCString,
  withLibbpfLog,
  withQuietLibbpf,
} from "./ffi.ts";
import { progTypeName } from "./constants.ts";
import { BpfMap, type MapDefinition } from "./map.ts";
import { BpfProgram } from "./program.ts";

/** A value for a `const volatile` variable: integers for 1/2/4/8-byte variables, bytes for any size. */
export type RodataValue = number | bigint | boolean | Uint8Array;

/** A program found in an object file, before load. */
export interface ProgramSpec {
  /** Function name in the C source (`fw_xdp`). */
  name: string;
  /** ELF section (`xdp`, `tc`). */
  section: string;
  /** `enum bpf_prog_type` number, as libbpf derived it from the section. */
  type: number;
  /** `xdp`, `sched_cls`, ... */
  typeName: string;
  /** Whether `load()` loads it. */
  autoload: boolean;
}

/** A map declared by an object file, before load (or as adopted through {@link BpfObject.reuseMap}). */
export interface ObjectMapSpec extends MapDefinition {
  /** Map name (`fw_rules`; internal maps are named like `<object>.rodata`). */
  name: string;
  /** `.rodata`, `.data`, `.bss` and `.kconfig` maps that libbpf creates for globals. */
  internal: boolean;
}

/** A `const volatile` global in `.rodata`. */
export interface RodataVariable {
  name: string;
  /** Byte offset inside `.rodata`. */
  offset: number;
  /** Size in bytes. */
  size: number;
}

/** Options of {@link BpfObject.open}. */
export interface BpfObjectOpenOptions {
  /** Object name (prefix of internal map names); default: the file's base name. */
  objectName?: string;
  /** Where maps declared with `LIBBPF_PIN_BY_NAME` are pinned and looked up; default /sys/fs/bpf. */
  pinRootPath?: string;
  /**
   * The kernel BTF that CO-RE relocations resolve against; default {@link KERNEL_BTF_PATH}.
   * Given explicitly, libbpf looks no further: without it, a type missing from vmlinux sends
   * libbpf through every kernel module's BTF, which it can reach only by id
   * (`BPF_BTF_GET_NEXT_ID`), and that needs CAP_SYS_ADMIN: the load fails with EPERM for an
   * agent with the chart's capabilities. So a type only a module defines counts as missing,
   * the same for an agent on a node and for `sluice validate` as root. `null`: libbpf's own
   * search, modules included (needs CAP_SYS_ADMIN when it reaches them). Externs (`__ksym`,
   * also weak ones) that vmlinux lacks still send libbpf 1.1 to module BTF, with no option to
   * stop it: without CAP_SYS_ADMIN such an object fails to load ("failed to iterate BTF
   * objects" in the libbpf log).
   */
  kernelBtfPath?: string | null;
}

/** The running kernel's BTF. */
export const KERNEL_BTF_PATH = "/sys/kernel/btf/vmlinux";

let kernelBtf: string | null | undefined;
/** {@link KERNEL_BTF_PATH} where the kernel has it; else libbpf's own search. */
function defaultKernelBtf(): string | null {
  kernelBtf ??= existsSync(KERNEL_BTF_PATH) ? KERNEL_BTF_PATH : null;
  return kernelBtf;
}

/** Everything needed to load an object in one call: see {@link BpfObject.load}. */
export interface BpfObjectSpec extends BpfObjectOpenOptions {
  /** Path of the compiled ELF object. */
  path: string;
  /** Programs to load; default all. Others stay unloaded (e.g. the tc half of an XDP chain's NF). */
  programs?: readonly string[];
  /** `.rodata` values by variable name. */
  rodata?: Readonly<Record<string, RodataValue>>;
  /** Existing maps to use instead of creating new ones, by map name (see {@link BpfObject.reuseMap}). */
  reuseMaps?: Readonly<Record<string, BpfMap | number>>;
  /** Bytes of verifier log kept per program on a rejection; default 1 MiB. */
  logSize?: number;
}

const DEFAULT_LOG_SIZE = 1 << 20;

/** Per-program verifier log buffers of one load. */
interface LoadLogs {
  size: number;
  programs: { prog: Ptr; name: string; buf: Ptr }[];
}

/** Detaches and frees the log buffers of a load. */
function freeLogs(logs: LoadLogs): void {
  for (const { prog, buf } of logs.programs) {
    lib.programSetLogBuf(prog, null, 0);
    freeNative(buf);
  }
  logs.programs = [];
}
const BTF_KIND_VAR = 14;
const BTF_KIND_DATASEC = 15;

/**
 * `.rodata` layouts read from objects' BTF, by file (see {@link fileStamp}): a switch opens the
 * same few files again and again, and reading the layout through libbpf's BTF calls costs
 * 40-70 µs per open, about a tenth of a small NF's whole load. Most recently used last.
 */
const rodataLayouts = new Map<string, { stamp: string; layout: ReadonlyMap<string, RodataVariable> }>();
const RODATA_LAYOUTS_KEPT = 64;

/**
 * A file written this recently may be written again within the same tick of the file
 * system's clock and keep its stamp (same size, same times): such a file is not cached.
 */
const RACY_MS = 100;

/**
 * Identifies one version of a file: device, inode, size and times. Undefined if it cannot be
 * read or was changed less than RACY_MS ago (see there).
 */
function fileStamp(path: string): string | undefined {
  try {
    const st = statSync(path, { bigint: true });
    const changedMs = Number((st.mtimeNs > st.ctimeNs ? st.mtimeNs : st.ctimeNs) / 1_000_000n);
    if (Date.now() - changedMs < RACY_MS) return undefined;
    return `${st.dev}:${st.ino}:${st.size}:${st.mtimeNs}:${st.ctimeNs}`;
  } catch {
    return undefined;
  }
}

/**
 * A BPF ELF object opened with libbpf, then loaded into the kernel.
 *
 * Life cycle: `open` (nothing in the kernel yet) -> optional `setRodata` / `reuseMap` /
 * `selectPrograms` -> `load` (maps created or reused, programs verified) -> use `program()` /
 * `map()` -> `close()`. {@link BpfObject.load} does it all from a spec and closes what it opened
 * if any step fails.
 *
 * Ownership: the object owns the libbpf `bpf_object` and, through it, every program and map fd it
 * created. Handles from `program()` / `map()` borrow those fds and turn invalid at `close()`;
 * `dup()` them to keep them longer. Fds given to `reuseMap` stay owned by the caller (libbpf
 * duplicates them). Pins outlive the object.
 */
export class BpfObject {
  /** Path of the ELF file. */
  readonly path: string;
  /** Object name (prefix of internal map names). */
  readonly name: string;
  #obj: Ptr | null;
  #state: "opened" | "loading" | "loaded" | "failed" = "opened";
  #rodata: ReadonlyMap<string, RodataVariable> | undefined;
  /** The file as it was when opened (see fileStamp): the key of its cached `.rodata` layout. */
  readonly #stamp: string | undefined;
  readonly #programs = new Map<string, BpfProgram>();
  readonly #maps = new Map<string, BpfMap>();

  private constructor(path: string, obj: Ptr, stamp: string | undefined) {
    this.path = path;
    this.#obj = obj;
    this.#stamp = stamp;
    this.name = lib.objectName(obj) as string;
  }

  /** Opens (parses) an ELF object; nothing reaches the kernel yet. */
  static open(path: string, options: BpfObjectOpenOptions = {}): BpfObject {
    const opts = Buffer.alloc(OPTS_SIZE.objectOpen);
    opts.writeBigUInt64LE(BigInt(OPTS_SIZE.objectOpen), 0);
    const objectName = options.objectName === undefined ? undefined : cString(options.objectName);
    const pinRoot = options.pinRootPath === undefined ? undefined : cString(options.pinRootPath);
    const btfPath = options.kernelBtfPath === undefined ? defaultKernelBtf() : options.kernelBtfPath;
    // libbpf copies the strings at open.
    const btf = btfPath === null ? undefined : cString(btfPath);
    if (objectName) opts.writeBigUInt64LE(addressOf(objectName), 8);
    if (pinRoot) opts.writeBigUInt64LE(addressOf(pinRoot), 24);
    if (btf) opts.writeBigUInt64LE(addressOf(btf), 48);
    // Taken before libbpf reads the file: a file replaced meanwhile gets a stamp of its own.
    const stamp = fileStamp(path);
    const obj = quietly(() => lib.objectOpenFile(path, opts) as Ptr | null);
    if (obj) return new BpfObject(path, obj, stamp);
    // Open again with printing on, for the reason libbpf gives.
    return withLibbpfLog((lines) => {
      const again = lib.objectOpenFile(path, opts) as Ptr | null;
      if (!again) {
        const errno = lastErrno();
        throw new BpfError(
          `object ${basename(path)}`,
          "open",
          errno,
          lines.at(-1)?.replace(/^libbpf: /, ""),
          lines,
        );
      }
      return new BpfObject(path, again, stamp);
    });
  }

  /**
   * Opens, configures and loads an object in one step. If any step fails, whatever was opened is
   * closed before the error propagates: a {@link VerifierError} for a rejected program, a
   * {@link BpfSpecError} when the spec names something the object lacks, a {@link BpfError}
   * otherwise.
   */
  static load(spec: BpfObjectSpec): BpfObject {
    const object = BpfObject.open(spec.path, spec);
    try {
      if (spec.programs) object.selectPrograms(spec.programs);
      if (spec.rodata) object.setRodata(spec.rodata);
      for (const [name, map] of Object.entries(spec.reuseMaps ?? {})) object.reuseMap(name, map);
      object.load(spec.logSize === undefined ? {} : { logSize: spec.logSize });
      return object;
    } catch (err) {
      object.close();
      throw err;
    }
  }

  /** True once `load()` succeeded. */
  get loaded(): boolean {
    return this.#state === "loaded";
  }

  /** Programs in the object, in ELF order. */
  programSpecs(): ProgramSpec[] {
    const obj = this.#handle();
    const specs: ProgramSpec[] = [];
    for (
      let p = lib.objectNextProgram(obj, null) as Ptr | null;
      p;
      p = lib.objectNextProgram(obj, p) as Ptr | null
    ) {
      const type = lib.programType(p) as number;
      specs.push({
        name: lib.programName(p) as string,
        section: lib.programSectionName(p) as string,
        type,
        typeName: progTypeName(type),
        autoload: lib.programAutoload(p) as boolean,
      });
    }
    return specs;
  }

  /**
   * Maps the object declares, with their definitions. Before load these are the definitions from
   * the ELF file (after `reuseMap`, the reused map's); compare them with an existing map before
   * reusing it, because libbpf adopts a reused map's definition without checking.
   */
  mapSpecs(): ObjectMapSpec[] {
    const obj = this.#handle();
    const specs: ObjectMapSpec[] = [];
    for (let m = lib.objectNextMap(obj, null) as Ptr | null; m; m = lib.objectNextMap(obj, m) as Ptr | null) {
      specs.push({
        name: lib.mapName(m) as string,
        type: lib.mapType(m) as number,
        keySize: lib.mapKeySize(m) as number,
        valueSize: lib.mapValueSize(m) as number,
        maxEntries: lib.mapMaxEntries(m) as number,
        flags: lib.mapFlags(m) as number,
        internal: lib.mapIsInternal(m) as boolean,
      });
    }
    return specs;
  }

  /** The `const volatile` variables of `.rodata` (from the object's BTF); empty if it has none. */
  rodataVariables(): RodataVariable[] {
    return [...this.#rodataLayout().values()];
  }

  /**
   * Sets `const volatile` variables before load. The verifier then sees them as constants (dead
   * branches are pruned, a tail-call index becomes a direct jump).
   */
  setRodata(values: Readonly<Record<string, RodataValue>>): void {
    this.#requireState("opened", "set .rodata");
    const layout = this.#rodataLayout();
    const entries = Object.entries(values);
    if (entries.length === 0) return;
    const map = lib.objectFindMapByName(this.#handle(), ".rodata") as Ptr | null;
    const sizeOut = new BigUint64Array(1);
    const data = map ? (lib.mapInitialValue(map, sizeOut) as Ptr | null) : null;
    if (!data)
      throw new BpfSpecError(
        `object ${this.name}: has no .rodata to set ${entries.map(([n]) => n).join(", ")}`,
      );
    const rodata = nativeView(data, Number(sizeOut[0]));
    for (const [name, value] of entries) {
      const variable = layout.get(name);
      if (!variable) {
        const known = [...layout.keys()].join(", ") || "none";
        throw new BpfSpecError(`object ${this.name}: no .rodata variable ${name} (variables: ${known})`);
      }
      writeValue(rodata, variable, value, this.name);
    }
  }

  /**
   * Makes map `name` use an existing map instead of creating one (libbpf duplicates the fd: the
   * caller keeps ownership of `map`). libbpf adopts the existing map's definition; compare
   * definitions first if a mismatch must be refused.
   */
  reuseMap(name: string, map: BpfMap | number): void {
    this.#requireState("opened", `reuse map ${name}`);
    const m = this.#findMap(name);
    const fd = typeof map === "number" ? map : map.fd;
    const ret = lib.mapReuseFd(m, fd) as number;
    if (ret < 0) throw new BpfError(`map ${name}`, `reuse fd ${fd}`, -ret);
  }

  /**
   * Gives map `name` `maxEntries` entries instead of what the object declares (before load;
   * not for a reused map, which keeps its own).
   */
  setMaxEntries(name: string, maxEntries: number): void {
    this.#requireState("opened", `resize map ${name}`);
    const ret = lib.mapSetMaxEntries(this.#findMap(name), maxEntries) as number;
    if (ret < 0) throw new BpfError(`map ${name}`, `set max entries ${maxEntries}`, -ret);
  }

  /** Loads only the named programs (each must exist); the others are skipped by `load()`. */
  selectPrograms(names: readonly string[]): void {
    this.#requireState("opened", "select programs");
    const obj = this.#handle();
    const wanted = new Set(names);
    for (
      let p = lib.objectNextProgram(obj, null) as Ptr | null;
      p;
      p = lib.objectNextProgram(obj, p) as Ptr | null
    ) {
      const name = lib.programName(p) as string;
      lib.programSetAutoload(p, wanted.delete(name));
    }
    if (wanted.size > 0) {
      const known = this.programSpecs()
        .map((p) => p.name)
        .join(", ");
      throw new BpfSpecError(
        `object ${this.name}: no program ${[...wanted].join(", ")} (programs: ${known})`,
      );
    }
  }

  /**
   * Creates (or reuses) the maps and loads the selected programs. A rejected program raises a
   * {@link VerifierError} with the tail of its verifier log. A failed load cannot be retried on
   * the same object: close it and open again.
   */
  load(options: { logSize?: number } = {}): void {
    const logs = this.#beginLoad(options.logSize);
    try {
      withLibbpfLog((lines) => {
        const ret = lib.objectLoad(this.#handle()) as number;
        this.#endLoad(ret, lines, logs);
      });
    } finally {
      this.#loadDone(logs);
    }
  }

  /**
   * `load()` on a worker thread, so that several objects verify at once on several cores.
   * libbpf prints nothing meanwhile (see withQuietLibbpf): a rejected program still raises a
   * {@link VerifierError} with its log, but other failures carry only the errno; repeat the load
   * synchronously (on a new object) to learn what libbpf had to say.
   */
  async loadAsync(options: { logSize?: number } = {}): Promise<void> {
    const obj = this.#handle();
    const logs = this.#beginLoad(options.logSize);
    try {
      const ret = await withQuietLibbpf(() => objectLoadOnWorker(obj));
      this.#endLoad(ret, [], logs);
    } finally {
      this.#loadDone(logs);
    }
  }

  /**
   * Gives every program to load a log buffer: libbpf loads with logging off and, on a
   * rejection, reloads that program with logging into its buffer, so a non-empty buffer names
   * the culprit. The memory is native because libbpf keeps the pointer until the load ends.
   */
  #beginLoad(logSize = DEFAULT_LOG_SIZE): LoadLogs {
    this.#requireState("opened", "load");
    const obj = this.#handle();
    const logs: LoadLogs = { size: logSize, programs: [] };
    try {
      for (
        let p = lib.objectNextProgram(obj, null) as Ptr | null;
        p;
        p = lib.objectNextProgram(obj, p) as Ptr | null
      ) {
        if (!(lib.programAutoload(p) as boolean)) continue;
        const buf = allocNative(logSize);
        logs.programs.push({ prog: p, name: lib.programName(p) as string, buf });
        nativeView(buf, 1)[0] = 0;
        lib.programSetLogBuf(p, buf, logSize);
      }
    } catch (err) {
      freeLogs(logs);
      throw err;
    }
    this.#state = "loading";
    return logs;
  }

  /** Frees the load's log buffers; a load that ended without a verdict (an exception) failed. */
  #loadDone(logs: LoadLogs): void {
    freeLogs(logs);
    if (this.#state === "loading") this.#state = "failed";
  }

  #endLoad(ret: number, lines: readonly string[], logs: LoadLogs): void {
    if (ret === 0) {
      this.#state = "loaded";
      return;
    }
    this.#state = "failed";
    throw this.#loadError(-ret || lastErrno(), lines, logs.programs, logs.size);
  }

  /** A loaded program by name (borrowed fd, valid until `close()`). */
  program(name: string): BpfProgram {
    this.#requireState("loaded", `program ${name}`);
    let prog = this.#programs.get(name);
    if (!prog) {
      const p = this.#findProgram(name);
      const fd = lib.programFd(p) as number;
      if (fd < 0)
        throw new BpfSpecError(`object ${this.name}: program ${name} was not loaded (not selected)`);
      prog = BpfProgram.fromFd(fd, { owned: false, name });
      this.#programs.set(name, prog);
    }
    return prog;
  }

  /** Every loaded program. */
  programs(): BpfProgram[] {
    return this.programSpecs()
      .filter((p) => p.autoload)
      .map((p) => this.program(p.name));
  }

  /**
   * A map by name (borrowed fd, valid until `close()`). Internal maps are found by section
   * name too (`.rodata`, `.bss`, `.data`).
   */
  map(name: string): BpfMap {
    this.#requireState("loaded", `map ${name}`);
    let map = this.#maps.get(name);
    if (!map) {
      const m = this.#findMap(name);
      map = BpfMap.fromFd(lib.mapFd(m) as number, { owned: false, name: lib.mapName(m) as string });
      this.#maps.set(name, map);
    }
    return map;
  }

  /** Every map of the object. */
  maps(): BpfMap[] {
    return this.mapSpecs().map((m) => this.map(m.name));
  }

  /** Releases the libbpf object: its program and map fds close (pinned or referenced objects live on). Idempotent. */
  close(): void {
    // A worker thread is inside libbpf with this object: freeing it now would pull the memory
    // from under it. Await loadAsync() first.
    if (this.#state === "loading") throw new Error(`object ${this.name}: closed while it is being loaded`);
    for (const handle of [...this.#programs.values(), ...this.#maps.values()]) handle.close();
    this.#programs.clear();
    this.#maps.clear();
    if (this.#obj) lib.objectClose(this.#obj);
    this.#obj = null;
  }

  #handle(): Ptr {
    if (!this.#obj) throw new Error(`object ${this.name}: used after close`);
    return this.#obj;
  }

  #requireState(state: "opened" | "loaded", what: string): void {
    this.#handle();
    if (this.#state !== state) {
      const now =
        this.#state === "failed"
          ? "its load failed"
          : this.#state === "loaded"
            ? "it is loaded"
            : this.#state === "loading"
              ? "it is being loaded"
              : "it is not loaded";
      throw new BpfSpecError(`object ${this.name}: cannot ${what}: ${now}`);
    }
  }

  #findProgram(name: string): Ptr {
    const obj = this.#handle();
    for (
      let p = lib.objectNextProgram(obj, null) as Ptr | null;
      p;
      p = lib.objectNextProgram(obj, p) as Ptr | null
    ) {
      if ((lib.programName(p) as string) === name) return p;
    }
    const known = this.programSpecs()
      .map((p) => p.name)
      .join(", ");
    throw new BpfSpecError(`object ${this.name}: no program ${name} (programs: ${known})`);
  }

  #findMap(name: string): Ptr {
    const m = lib.objectFindMapByName(this.#handle(), name) as Ptr | null;
    if (m) return m;
    const known = this.mapSpecs()
      .map((s) => s.name)
      .join(", ");
    throw new BpfSpecError(`object ${this.name}: no map ${name} (maps: ${known})`);
  }

  /**
   * The `.rodata` datasec of the object's BTF: variable name -> offset and size. Read once per
   * version of the file (see rodataLayouts), since an object is opened anew for every load.
   */
  #rodataLayout(): ReadonlyMap<string, RodataVariable> {
    if (this.#rodata) return this.#rodata;
    const cached = rodataLayouts.get(this.path);
    if (cached && this.#stamp !== undefined && cached.stamp === this.#stamp) {
      rodataLayouts.delete(this.path);
      rodataLayouts.set(this.path, cached);
      this.#rodata = cached.layout;
      return cached.layout;
    }
    const layout = this.#readRodataLayout();
    this.#rodata = layout;
    if (this.#stamp !== undefined) {
      rodataLayouts.delete(this.path);
      rodataLayouts.set(this.path, { stamp: this.#stamp, layout });
      while (rodataLayouts.size > RODATA_LAYOUTS_KEPT)
        rodataLayouts.delete(rodataLayouts.keys().next().value!);
    }
    return layout;
  }

  #readRodataLayout(): Map<string, RodataVariable> {
    const layout = new Map<string, RodataVariable>();
    const btf = lib.objectBtf(this.#handle()) as Ptr | null;
    const id = btf ? (lib.btfFindByNameKind(btf, ".rodata", BTF_KIND_DATASEC) as number) : -1;
    if (btf && id > 0) {
      const sec = lib.btfTypeById(btf, id) as Ptr;
      // struct btf_type { u32 name_off; u32 info; u32 size; } + vlen * btf_var_secinfo { u32 type, offset, size; }
      const vlen = nativeView(sec, 12).readUInt32LE(4) & 0xffff;
      const vars = nativeView(sec, 12 + vlen * 12);
      for (let i = 0; i < vlen; i++) {
        const at = 12 + i * 12;
        const varType = lib.btfTypeById(btf, vars.readUInt32LE(at)) as Ptr | null;
        if (!varType) continue;
        const header = nativeView(varType, 12);
        if (((header.readUInt32LE(4) >>> 24) & 0x1f) !== BTF_KIND_VAR) continue;
        const name = lib.btfNameByOffset(btf, header.readUInt32LE(0)) as string;
        layout.set(
          name,
          Object.freeze({ name, offset: vars.readUInt32LE(at + 4), size: vars.readUInt32LE(at + 8) }),
        );
      }
    }
    return layout;
  }

  #loadError(
    errno: number,
    lines: readonly string[],
    logs: readonly { name: string; buf: Ptr }[],
    logSize: number,
  ): Error {
    for (const { name, buf } of logs) {
      const log = readCString(buf, logSize);
      if (log.trim() !== "") return new VerifierError(name, errno, log, lines);
    }
    const detail = (pattern: RegExp) => lines.find((l) => pattern.test(l))?.replace(/^libbpf: /, "");
    const progLine = lines.find((l) => /prog '[^']+': (BPF program load failed|failed to load)/.test(l));
    const progName = progLine?.match(/prog '([^']+)'/)?.[1];
    if (progName) {
      if (errno === 95 || errno === 524) return new NotSupportedError(`loading program ${progName}`, errno);
      return new BpfError(`program ${progName}`, "load", errno, detail(/BPF program load failed/), lines);
    }
    const mapLine = lines.find((l) => /map '[^']+': (failed|can't)/.test(l));
    const mapName = mapLine?.match(/map '([^']+)'/)?.[1];
    if (mapName)
      return new BpfError(`map ${mapName}`, "create", errno, mapLine?.replace(/^libbpf: /, ""), lines);
    return new BpfError(`object ${this.name}`, "load", errno, lines.at(-1)?.replace(/^libbpf: /, ""), lines);
  }
}

/** Encodes `value` into `.rodata` at the variable's place, refusing a size mismatch. */
function writeValue(rodata: Buffer, variable: RodataVariable, value: RodataValue, objectName: string): void {
  const { name, offset, size } = variable;
  const where = `object ${objectName}: .rodata ${name}`;
  if (value instanceof Uint8Array) {
    if (value.length !== size)
      throw new BpfSpecError(`${where}: is ${size} bytes, value has ${value.length}`);
    rodata.set(value, offset);
    return;
  }
  if (![1, 2, 4, 8].includes(size)) throw new BpfSpecError(`${where}: is ${size} bytes; pass the bytes`);
  if (typeof value === "number" && size <= 4 && Number.isInteger(value)) {
    // The common case (every chain setting), without BigInt arithmetic.
    const bits = size * 8;
    if (value >= 2 ** bits || value < -(2 ** (bits - 1)))
      throw new BpfSpecError(`${where}: ${value} does not fit in ${size} bytes`);
    rodata.writeUIntLE(value < 0 ? value + 2 ** bits : value, offset, size);
    return;
  }
  const n = typeof value === "boolean" ? (value ? 1n : 0n) : BigInt(value);
  const bits = BigInt(size * 8);
  if (n >= 1n << bits || n < -(1n << (bits - 1n)))
    throw new BpfSpecError(`${where}: ${n} does not fit in ${size} bytes`);
  const unsigned = BigInt.asUintN(size * 8, n);
  for (let i = 0; i < size; i++) rodata[offset + i] = Number((unsigned >> BigInt(8 * i)) & 0xffn);
}
