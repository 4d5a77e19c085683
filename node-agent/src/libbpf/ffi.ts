/**
 * The raw bindings: libbpf.so.1 and the few libc calls the library needs, declared once through
 * koffi. Nothing here owns a kernel object; the classes in this folder do.
 *
 * Conventions that keep calls cheap (a trivial call costs well under 1 µs):
 * - option structs are plain Buffers filled by hand with the libbpf 1.1 layout (sizes checked
 *   against the installed headers), passed as `void *`: no koffi struct marshalling per call;
 * - pointers are BigInt (koffi 3); a pointer API that fails returns null and sets errno;
 * - integer APIs return `-errno`.
 */
import koffi, { type LibraryHandle } from "koffi";
import { rootLogger } from "../../../common/log.ts";
import { BpfError } from "./errors.ts";

const log = rootLogger.child({ component: "libbpf" });

/** libbpf's shared object; the agent depends on the 1.x ABI. */
export const LIBBPF_SONAME = "libbpf.so.1";

const libbpf = koffi.load(LIBBPF_SONAME);
const libc = koffi.load("libc.so.6");

/** A C pointer as koffi 3 hands it over (null for NULL). */
export type Ptr = bigint;

// Declaring with `void *` everywhere keeps koffi from decoding or copying: Buffers and typed
// arrays are passed as pointers to their memory, BigInts as raw addresses.
/* eslint-disable @typescript-eslint/no-explicit-any -- koffi's function type is untyped by design */
type Fn = (...args: any[]) => any;
/* eslint-enable @typescript-eslint/no-explicit-any */
const fn = (lib: LibraryHandle, proto: string): Fn => lib.func(proto) as Fn;

/** libbpf.so.1 functions used by this library (signatures as in libbpf 1.1). */
export const lib = {
  // bpf_object / bpf_program / bpf_map (libbpf.h)
  objectOpenFile: fn(libbpf, "void *bpf_object__open_file(const char *path, void *opts)"),
  objectLoad: fn(libbpf, "int bpf_object__load(void *obj)"),
  objectClose: fn(libbpf, "void bpf_object__close(void *obj)"),
  objectName: fn(libbpf, "const char *bpf_object__name(void *obj)"),
  objectBtf: fn(libbpf, "void *bpf_object__btf(void *obj)"),
  objectNextProgram: fn(libbpf, "void *bpf_object__next_program(void *obj, void *prev)"),
  objectNextMap: fn(libbpf, "void *bpf_object__next_map(void *obj, void *prev)"),
  objectFindMapByName: fn(libbpf, "void *bpf_object__find_map_by_name(void *obj, const char *name)"),
  programName: fn(libbpf, "const char *bpf_program__name(void *prog)"),
  programSectionName: fn(libbpf, "const char *bpf_program__section_name(void *prog)"),
  programType: fn(libbpf, "uint32_t bpf_program__type(void *prog)"),
  programFd: fn(libbpf, "int bpf_program__fd(void *prog)"),
  programAutoload: fn(libbpf, "bool bpf_program__autoload(void *prog)"),
  programSetAutoload: fn(libbpf, "int bpf_program__set_autoload(void *prog, bool autoload)"),
  programSetLogBuf: fn(libbpf, "int bpf_program__set_log_buf(void *prog, void *buf, size_t size)"),
  mapName: fn(libbpf, "const char *bpf_map__name(void *map)"),
  mapFd: fn(libbpf, "int bpf_map__fd(void *map)"),
  mapType: fn(libbpf, "uint32_t bpf_map__type(void *map)"),
  mapKeySize: fn(libbpf, "uint32_t bpf_map__key_size(void *map)"),
  mapValueSize: fn(libbpf, "uint32_t bpf_map__value_size(void *map)"),
  mapMaxEntries: fn(libbpf, "uint32_t bpf_map__max_entries(void *map)"),
  mapFlags: fn(libbpf, "uint32_t bpf_map__map_flags(void *map)"),
  mapIsInternal: fn(libbpf, "bool bpf_map__is_internal(void *map)"),
  mapReuseFd: fn(libbpf, "int bpf_map__reuse_fd(void *map, int fd)"),
  mapSetMaxEntries: fn(libbpf, "int bpf_map__set_max_entries(void *map, uint32_t max_entries)"),
  mapInitialValue: fn(libbpf, "void *bpf_map__initial_value(void *map, void *psize)"),
  btfFindByNameKind: fn(libbpf, "int32_t btf__find_by_name_kind(void *btf, const char *name, uint32_t kind)"),
  btfTypeById: fn(libbpf, "void *btf__type_by_id(void *btf, uint32_t id)"),
  btfNameByOffset: fn(libbpf, "const char *btf__name_by_offset(void *btf, uint32_t offset)"),
  numPossibleCpus: fn(libbpf, "int libbpf_num_possible_cpus(void)"),
  setPrint: fn(libbpf, "void *libbpf_set_print(void *fn)"),
  // Low-level syscall wrappers (bpf.h)
  mapCreate: fn(
    libbpf,
    "int bpf_map_create(uint32_t type, const char *name, uint32_t key_size, uint32_t value_size, uint32_t max_entries, void *opts)",
  ),
  mapLookupElem: fn(libbpf, "int bpf_map_lookup_elem(int fd, void *key, void *value)"),
  mapUpdateElem: fn(libbpf, "int bpf_map_update_elem(int fd, void *key, void *value, uint64_t flags)"),
  mapDeleteElem: fn(libbpf, "int bpf_map_delete_elem(int fd, void *key)"),
  mapGetNextKey: fn(libbpf, "int bpf_map_get_next_key(int fd, void *key, void *next_key)"),
  objPin: fn(libbpf, "int bpf_obj_pin(int fd, const char *path)"),
  objGet: fn(libbpf, "int bpf_obj_get(const char *path)"),
  objGetInfoByFd: fn(libbpf, "int bpf_obj_get_info_by_fd(int fd, void *info, void *info_len)"),
  progGetFdById: fn(libbpf, "int bpf_prog_get_fd_by_id(uint32_t id)"),
  mapGetFdById: fn(libbpf, "int bpf_map_get_fd_by_id(uint32_t id)"),
  linkGetFdById: fn(libbpf, "int bpf_link_get_fd_by_id(uint32_t id)"),
  progGetNextId: fn(libbpf, "int bpf_prog_get_next_id(uint32_t start, void *next)"),
  mapGetNextId: fn(libbpf, "int bpf_map_get_next_id(uint32_t start, void *next)"),
  linkGetNextId: fn(libbpf, "int bpf_link_get_next_id(uint32_t start, void *next)"),
  progTestRunOpts: fn(libbpf, "int bpf_prog_test_run_opts(int fd, void *opts)"),
  linkCreate: fn(libbpf, "int bpf_link_create(int prog_fd, int target_fd, uint32_t attach_type, void *opts)"),
  linkUpdate: fn(libbpf, "int bpf_link_update(int link_fd, int new_prog_fd, void *opts)"),
  linkDetach: fn(libbpf, "int bpf_link_detach(int link_fd)"),
  xdpQuery: fn(libbpf, "int bpf_xdp_query(int ifindex, int flags, void *opts)"),
};

/**
 * `bpf_object__load` on one of koffi's worker threads (the main thread stays free meanwhile);
 * resolves with its return value (0 or -errno). See {@link withQuietLibbpf} about printing.
 */
export function objectLoadOnWorker(obj: Ptr): Promise<number> {
  const load = lib.objectLoad as unknown as {
    async: (obj: Ptr, done: (err: unknown, result: number) => void) => void;
  };
  return new Promise<number>((resolve, reject) => {
    load.async(obj, (err, result) => {
      if (err) reject(err instanceof Error ? err : new Error(String(err)));
      else resolve(result);
    });
  });
}

/** libc functions used by this library. */
export const libcFns = {
  close: fn(libc, "int close(int fd)"),
  fcntl: fn(libc, "int fcntl(int fd, int cmd, ...)"),
  vsnprintf: fn(libc, "int vsnprintf(void *buf, size_t size, void *fmt, void *ap)"),
  malloc: fn(libc, "void *malloc(size_t size)"),
  free: fn(libc, "void free(void *ptr)"),
};

/** Sizes of libbpf 1.1's option structs; `sz` must carry exactly these values. */
export const OPTS_SIZE = {
  objectOpen: 80,
  testRun: 80,
  linkCreate: 64,
  linkUpdate: 16,
  mapCreate: 48,
  xdpQuery: 32,
} as const;

/** The address of a Buffer's memory, for pointer fields inside option structs. */
export function addressOf(buf: Uint8Array): bigint {
  return koffi.address(buf);
}

/** errno of the last failed libc/libbpf call on this thread. */
export function lastErrno(): number {
  return koffi.errno();
}

/** A NUL-terminated C string in a Buffer, to point at from an option struct. */
export function cString(text: string): Buffer {
  return Buffer.from(`${text}\0`, "utf8");
}

/**
 * Allocates native memory that does not move (libbpf may keep the pointer across calls). The
 * memory is not cleared: libc's malloc, because `koffi.alloc` zeroes it, and zeroing the 1 MiB
 * verifier log buffer of a load cost about 20 µs per program, for a buffer the kernel writes
 * only when a program is rejected. Untouched pages of it take no memory either.
 */
export function allocNative(size: number): Ptr {
  const ptr = libcFns.malloc(size) as Ptr | null;
  if (!ptr) throw new BpfError(`${size} bytes`, "allocate", 12);
  return ptr;
}

/** Frees memory from {@link allocNative}. */
export function freeNative(ptr: Ptr): void {
  libcFns.free(ptr);
}

/** A view of native memory (no copy), valid while the memory lives. */
export function nativeView(ptr: Ptr, size: number): Buffer {
  return Buffer.from(koffi.view(ptr, size));
}

/** Reads a NUL-terminated string of at most `max` bytes from native memory. */
export function readCString(ptr: Ptr, max: number): string {
  const view = nativeView(ptr, max);
  const end = view.indexOf(0);
  return view.toString("utf8", 0, end < 0 ? max : end);
}

/** Closes a file descriptor; errors are ignored because nothing useful can follow them. */
export function closeFd(fd: number): void {
  if (fd >= 0) libcFns.close(fd);
}

const F_DUPFD_CLOEXEC = 1030;

/** Duplicates a file descriptor (close-on-exec); the caller owns the copy. */
export function dupFd(fd: number): number {
  const copy = libcFns.fcntl(fd, F_DUPFD_CLOEXEC, "int", 0) as number;
  if (copy < 0) throw new BpfError(`fd ${fd}`, "dup", lastErrno());
  return copy;
}

// ---------------------------------------------------------------------------------------------
// libbpf's print callback.
//
// libbpf reports why something failed (a map it could not create, a relocation it could not
// resolve) only through its print callback. One persistent callback is registered for the whole
// process; DEBUG lines are dropped first thing because libbpf prints dozens per load and each
// JavaScript callback costs ~2 µs. Warnings go to the capture of the running operation (see
// withLibbpfLog) or, outside one, to the logger.

const LIBBPF_WARN = 0;
const LIBBPF_DEBUG = 2;
const printBuf = Buffer.alloc(8192);
let capture: string[] | null = null;
const keepDebug = process.env.SLUICE_LIBBPF_DEBUG === "1";

function onLibbpfPrint(level: number, fmt: Ptr, args: Ptr): number {
  if (level === LIBBPF_DEBUG && !keepDebug) return 0;
  const n = libcFns.vsnprintf(printBuf, printBuf.length, fmt, args) as number;
  if (n <= 0) return 0;
  const text = printBuf.toString("utf8", 0, Math.min(n, printBuf.length - 1)).trimEnd();
  if (capture) capture.push(text);
  else if (level === LIBBPF_WARN) log.warn({ libbpf: text }, "libbpf warning");
  else log.debug({ libbpf: text }, "libbpf");
  return 0;
}

const PrintFn = koffi.proto("int sluice_libbpf_print_fn(int level, void *fmt, void *args)");
/** Registered once and never unregistered: libbpf keeps the pointer for the process lifetime. */
const printCallback = koffi.register(onLibbpfPrint, koffi.pointer(PrintFn));
lib.setPrint(printCallback);

/**
 * Runs `body` while collecting libbpf's WARN/INFO output into the array it receives, so that an
 * error raised by `body` can carry the reason libbpf printed. Nested captures each see their own
 * lines. Printing is on for the body even while quiet loads run (see {@link withQuietLibbpf}).
 */
export function withLibbpfLog<T>(body: (lines: string[]) => T): T {
  const outer = capture;
  const lines: string[] = [];
  capture = lines;
  openCaptures++;
  applyPrint();
  try {
    return body(lines);
  } finally {
    capture = outer;
    openCaptures--;
    applyPrint();
  }
}

/** Quiet runs under way ({@link withQuietLibbpf}, {@link quietly}) and open captures. */
let quietRuns = 0;
let openCaptures = 0;
let printing = true;

/** Printing is off while something runs quietly, unless a capture wants the lines. */
function applyPrint(): void {
  const wanted = quietRuns === 0 || openCaptures > 0;
  if (wanted === printing) return;
  lib.setPrint(wanted ? printCallback : null);
  printing = wanted;
}

/**
 * Runs `body`, which calls libbpf on worker threads (koffi's `.async`), with libbpf's printing
 * off. A print from a worker thread is handed to the main thread and the worker waits for it:
 * a few debug lines per object load took longer than the load itself, and they would land in
 * whichever capture the main thread has open. Whoever loads quietly learns why a load failed by
 * repeating it on the main thread (see {@link withLibbpfLog}). Nests; synchronous captures on
 * the main thread meanwhile still see their own lines.
 */
export async function withQuietLibbpf<T>(body: () => Promise<T>): Promise<T> {
  quietRuns++;
  applyPrint();
  try {
    return await body();
  } finally {
    quietRuns--;
    applyPrint();
  }
}

/**
 * Runs `body` with libbpf's printing off: for calls that print many debug lines and usually
 * succeed (opening an object prints about a hundred, each a call into JavaScript). On a failure
 * the caller repeats the call inside {@link withLibbpfLog} to learn libbpf's reason.
 */
export function quietly<T>(body: () => T): T {
  quietRuns++;
  applyPrint();
  try {
    return body();
  } finally {
    quietRuns--;
    applyPrint();
  }
}
