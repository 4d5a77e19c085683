/**
 * Running a program (clang) confined to the files it needs, with bounded time and memory and no
 * network, without any capability the agent does not have.
 *
 * The agent runs with CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN only, and its container's seccomp
 * profile may refuse unshare(2): mount namespaces and chroot are out of reach. Landlock is not: an
 * unprivileged process may restrict itself (after PR_SET_NO_NEW_PRIVS), and the restriction is
 * inherited across execve. So the program is started through a small launcher, a second Node
 * process that, before it execs the program,
 *
 * 1. lowers its resource limits (address space, CPU seconds, file size, open files, no core),
 * 2. sets no_new_privs,
 * 3. applies a Landlock ruleset: read-only access to the given directories and files, execute
 *    only for the program and its shared libraries, write only to one output directory; on
 *    Landlock ABI 4 and later TCP bind/connect are refused, on ABI 6 and later signals and
 *    abstract Unix sockets are scoped to the sandbox,
 * 4. installs a seccomp filter that refuses socket(2), bpf(2), ptrace(2), perf_event_open(2),
 *    unshare(2), setns(2), mount(2) and a few more with EPERM, so that the program has no network
 *    at all and cannot use the capabilities it inherits (as uid 0 it keeps CAP_BPF and
 *    CAP_NET_ADMIN across execve, and only CAP_SETPCAP could take them away),
 *
 * and then calls execve(2) through koffi, so the confined process is the program itself (a
 * timeout kills it directly). Why a Node launcher rather than a tiny C one compiled at first
 * use: it needs no host C toolchain or linker in the agent image (clang there targets BPF), no
 * executable is written into a cache directory and run later with the agent's privileges, and
 * koffi is already how the agent talks to libc and libbpf. It costs one Node start-up (about
 * 50-90 ms) per compiler run; cached compiles never start it.
 */
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { realpath } from "node:fs/promises";
import { createRequire } from "node:module";

/** Limits set with setrlimit(2) in the launcher before the program starts. */
export interface ResourceLimits {
  /** RLIMIT_CPU: CPU seconds; the kernel sends SIGXCPU, then SIGKILL. */
  cpuSeconds: number;
  /** RLIMIT_AS: address space in bytes; allocations past it fail. */
  memoryBytes: number;
  /** RLIMIT_FSIZE: largest file the program may write, in bytes. */
  fileBytes: number;
  /** RLIMIT_NOFILE. */
  openFiles: number;
}

/** What the confined program may touch. Paths must exist; symlinks are resolved by the kernel. */
export interface SandboxPolicy {
  /** Directories (with everything below) and files the program may read. */
  read: readonly string[];
  /** Files the program may execute and read: the program itself and its shared libraries. */
  execute: readonly string[];
  /** Directories the program may create, write, truncate and remove regular files in. */
  write: readonly string[];
  /**
   * `required` (the default everywhere): refuse to run when the kernel has no usable Landlock.
   * `if-available`: run with only the resource limits and the seccomp filter when it has not.
   */
  landlock: "required" | "if-available";
  limits: ResourceLimits;
}

/** How one sandboxed run went wrong. */
export type SandboxFailure =
  /** Landlock is missing and the policy requires it. */
  | "unavailable"
  /** The launcher could not set up the sandbox or exec the program. */
  | "setup"
  /** The program exited with a non-zero status. */
  | "exit"
  /** The program was killed by a signal it did not get from us (a crash, SIGXCPU, ...). */
  | "signal"
  /** The wall-clock timeout ran out; the program was killed. */
  | "timeout"
  /** The caller aborted. */
  | "aborted"
  /** stdout or stderr went past `maxOutputBytes`; the program was killed. */
  | "output";

/** A sandboxed run did not succeed. `stderr` is whatever the program wrote (untrimmed). */
export class SandboxRunError extends Error {
  override name = "SandboxRunError";
  constructor(
    readonly failure: SandboxFailure,
    message: string,
    readonly stderr: string,
    readonly exitCode: number | null = null,
    readonly signal: NodeJS.Signals | null = null,
  ) {
    super(message);
  }
}

/** How to run the program. */
export interface SandboxRun {
  /** Absolute path of the program (execve does not search PATH). */
  program: string;
  /** argv[1..]; argv[0] is the program's base name. */
  args: readonly string[];
  cwd: string;
  /** The whole environment of the program: nothing of the agent's own is passed on. */
  env: Readonly<Record<string, string>>;
  timeoutMs: number;
  /** Largest stdout or stderr kept; past it the program is killed. */
  maxOutputBytes: number;
  signal?: AbortSignal;
}

// Landlock access rights (include/uapi/linux/landlock.h).
const FS = {
  EXECUTE: 1n << 0n,
  WRITE_FILE: 1n << 1n,
  READ_FILE: 1n << 2n,
  READ_DIR: 1n << 3n,
  REMOVE_FILE: 1n << 5n,
  MAKE_REG: 1n << 8n,
  TRUNCATE: 1n << 14n,
};

/** seccomp: syscalls refused with EPERM, per architecture (audit arch, numbers). */
const SECCOMP_DENY: Partial<Record<string, { arch: number; deny: Record<string, number> }>> = {
  x64: {
    arch: 0xc000003e,
    deny: {
      socket: 41,
      socketpair: 53,
      connect: 42,
      bind: 49,
      ptrace: 101,
      mount: 165,
      add_key: 248,
      request_key: 249,
      keyctl: 250,
      unshare: 272,
      perf_event_open: 298,
      setns: 308,
      process_vm_readv: 310,
      process_vm_writev: 311,
      bpf: 321,
      userfaultfd: 323,
      io_uring_setup: 425,
    },
  },
  arm64: {
    arch: 0xc00000b7,
    deny: {
      socket: 198,
      socketpair: 199,
      connect: 203,
      bind: 200,
      ptrace: 117,
      mount: 40,
      add_key: 217,
      request_key: 218,
      keyctl: 219,
      unshare: 97,
      perf_event_open: 241,
      setns: 268,
      process_vm_readv: 270,
      process_vm_writev: 271,
      bpf: 280,
      userfaultfd: 282,
      io_uring_setup: 425,
    },
  },
};

/** What the launcher reads from its first argument. */
interface LauncherConfig {
  koffi: string;
  preload?: string[];
  program: string;
  argv: string[];
  env: string[];
  landlock: SandboxPolicy["landlock"];
  rules: { path: string; dir: string; file: string }[];
  rlimits: [number, number][];
  seccomp: { arch: number; deny: number[]; x32: boolean } | null;
}

/** Marks the launcher's own messages on stderr, so they are never mistaken for the program's. */
const LAUNCHER_TAG = "sluice-sandbox: ";
const EXIT_UNAVAILABLE = 125;
const EXIT_SETUP = 126;

/**
 * Confinement, the first part of every confined Node process (`node -e`, configuration as JSON
 * in argv[1]): limits, no_new_privs, Landlock, seccomp, in that order. Plain JavaScript in a
 * string: it must run without the loader that runs this TypeScript, from sources and from the
 * bundle alike. Libraries named in `cfg.preload` are loaded before Landlock closes the file
 * system (as `preloaded[i]`). It talks only through its exit status and one tagged line on
 * stderr.
 */
const CONFINE = String.raw`
"use strict";
const fs = require("node:fs");
const fail = (code, message) => { fs.writeSync(2, "${LAUNCHER_TAG}" + message + "\n"); process.exit(code); };
let cfg, koffi;
try { cfg = JSON.parse(process.argv[1]); koffi = require(cfg.koffi); } catch (e) { fail(${EXIT_SETUP}, "cannot start: " + e.message); }
const libc = koffi.load("libc.so.6");
const syscall = libc.func("long syscall(long nr, ...)");
const prctl = libc.func("int prctl(int option, unsigned long a2, unsigned long a3, unsigned long a4, unsigned long a5)");
const setrlimit = libc.func("int setrlimit(int resource, void *rlim)");
const fcntl = libc.func("int fcntl(int fd, int cmd, int arg)");
const execve = libc.func("int execve(const char *path, const char **argv, const char **envp)");
const SockFilter = koffi.struct("sock_filter", { code: "uint16", jt: "uint8", jf: "uint8", k: "uint32" });
const SockFprog = koffi.struct("sock_fprog", { len: "uint16", filter: koffi.pointer(SockFilter) });
const setSeccomp = libc.func("prctl", "int", ["int", "unsigned long", koffi.pointer(SockFprog), "unsigned long", "unsigned long"]);
// The errno by its name (EPERM, ENOSYS, ...), as every other error of sluice names it.
const errnoNames = Object.fromEntries(Object.entries(require("node:os").constants.errno).map(([k, v]) => [v, k]));
const errno = () => { const n = koffi.errno(); return errnoNames[n] || String(n); };
let preloaded;
try { preloaded = (cfg.preload || []).map((name) => koffi.load(name)); } catch (e) { fail(${EXIT_SETUP}, "cannot load: " + e.message); }

for (const [resource, value] of cfg.rlimits) {
  const rlim = Buffer.alloc(16);
  rlim.writeBigUInt64LE(BigInt(value), 0);
  rlim.writeBigUInt64LE(BigInt(value), 8);
  if (setrlimit(resource, rlim) !== 0) fail(${EXIT_SETUP}, "setrlimit " + resource + ": " + errno());
}
if (prctl(38 /* PR_SET_NO_NEW_PRIVS */, 1, 0, 0, 0) !== 0) fail(${EXIT_SETUP}, "no_new_privs: " + errno());

const abi = Number(syscall(444, "void *", null, "size_t", 0, "uint32_t", 1 /* VERSION */));
if (abi < 1) {
  if (cfg.landlock === "required") fail(${EXIT_UNAVAILABLE}, "Landlock is not available (" + errno() + ")");
} else {
  let handled = (1n << 13n) - 1n;
  if (abi >= 2) handled |= 1n << 13n; // REFER
  if (abi >= 3) handled |= 1n << 14n; // TRUNCATE
  if (abi >= 5) handled |= 1n << 15n; // IOCTL_DEV
  const attr = Buffer.alloc(24);
  attr.writeBigUInt64LE(handled, 0);
  attr.writeBigUInt64LE(3n, 8); // BIND_TCP | CONNECT_TCP
  attr.writeBigUInt64LE(3n, 16); // SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL
  const ruleset = Number(syscall(444, "void *", attr, "size_t", abi >= 6 ? 24 : abi >= 4 ? 16 : 8, "uint32_t", 0));
  if (ruleset < 0) fail(${EXIT_SETUP}, "landlock_create_ruleset: " + errno());
  for (const rule of cfg.rules) {
    let fd;
    try { fd = fs.openSync(rule.path, 0o10000000 /* O_PATH */ | 0o2000000 /* O_CLOEXEC */); }
    catch (e) { fail(${EXIT_SETUP}, "cannot open " + rule.path + ": " + e.code); }
    const access = BigInt(fs.fstatSync(fd).isDirectory() ? rule.dir : rule.file) & handled;
    const beneath = Buffer.alloc(12); // struct landlock_path_beneath_attr is packed
    beneath.writeBigUInt64LE(access, 0);
    beneath.writeInt32LE(fd, 8);
    if (Number(syscall(445, "int", ruleset, "int", 1 /* PATH_BENEATH */, "void *", beneath, "uint32_t", 0)) !== 0)
      fail(${EXIT_SETUP}, "landlock_add_rule " + rule.path + ": " + errno());
    fs.closeSync(fd);
  }
  if (Number(syscall(446, "int", ruleset, "uint32_t", 0)) !== 0) fail(${EXIT_SETUP}, "landlock_restrict_self: " + errno());
  fs.closeSync(ruleset);
}

if (cfg.seccomp) {
  const LD_ABS = 0x20, JEQ = 0x15, JGE = 0x35, RET = 0x06;
  const KILL = 0x80000000, EPERM = 0x00050001, ALLOW = 0x7fff0000;
  const prog = [{ code: LD_ABS, jt: 0, jf: 0, k: 4 }, { code: JEQ, jt: 1, jf: 0, k: cfg.seccomp.arch }, { code: RET, jt: 0, jf: 0, k: KILL }, { code: LD_ABS, jt: 0, jf: 0, k: 0 }];
  if (cfg.seccomp.x32) prog.push({ code: JGE, jt: 0, jf: 1, k: 0x40000000 }, { code: RET, jt: 0, jf: 0, k: KILL });
  for (const nr of cfg.seccomp.deny) prog.push({ code: JEQ, jt: 0, jf: 1, k: nr }, { code: RET, jt: 0, jf: 0, k: EPERM });
  prog.push({ code: RET, jt: 0, jf: 0, k: ALLOW });
  const filter = koffi.alloc(SockFilter, prog.length);
  koffi.encode(filter, koffi.array(SockFilter, prog.length), prog);
  if (setSeccomp(22 /* PR_SET_SECCOMP */, 2 /* FILTER */, { len: prog.length, filter }, 0, 0) !== 0)
    fail(${EXIT_SETUP}, "seccomp: " + errno());
}
`;

/** The launcher: confinement, then execve of the program, so the confined process is it. */
const LAUNCHER =
  CONFINE +
  String.raw`
// Node marks its standard streams close-on-exec; the program must inherit them.
for (const fd of [0, 1, 2]) fcntl(fd, 2 /* F_SETFD */, 0);
execve(cfg.program, [...cfg.argv, null], [...cfg.env, null]);
fail(${EXIT_SETUP}, "execve " + cfg.program + ": " + errno());
`;

const RLIMIT = { CPU: 0, FSIZE: 1, CORE: 4, NOFILE: 7, AS: 9 };

const DIR_READ = FS.READ_FILE | FS.READ_DIR;
const DIR_WRITE = DIR_READ | FS.WRITE_FILE | FS.MAKE_REG | FS.REMOVE_FILE | FS.TRUNCATE;

let koffiPath: string | undefined;

function seccompConfig(): LauncherConfig["seccomp"] {
  const deny = SECCOMP_DENY[process.arch];
  return deny ? { arch: deny.arch, deny: Object.values(deny.deny), x32: process.arch === "x64" } : null;
}

/**
 * Starts a long-lived confined Node process that runs `script` after the confinement: no file
 * may be opened (an empty Landlock ruleset, where the kernel has Landlock), no socket, no bpf(),
 * no core dump; `preload` libraries are loaded before. It talks over its stdin and stdout. For
 * parsing untrusted bytes with a native library: a crash kills only this process, and code run
 * through a memory-safety bug in the library can reach nothing.
 */
export function spawnConfinedNode(script: string, preload: readonly string[]): ChildProcess {
  koffiPath ??= createRequire(import.meta.url).resolve("koffi");
  const config: LauncherConfig = {
    koffi: koffiPath,
    preload: [...preload],
    program: "",
    argv: [],
    env: [],
    landlock: "if-available",
    rules: [],
    rlimits: [
      [RLIMIT.CORE, 0],
      [RLIMIT.NOFILE, 256],
    ],
    seccomp: seccompConfig(),
  };
  return spawn(process.execPath, ["-e", CONFINE + script, JSON.stringify(config)], {
    env: {},
    stdio: ["pipe", "pipe", "pipe"],
  });
}

/**
 * Runs `run.program` confined by `policy` and resolves with its stderr when it exits with
 * status 0. Rejects with {@link SandboxRunError} otherwise; `failure` says why.
 */
export function runSandboxed(run: SandboxRun, policy: SandboxPolicy): Promise<string> {
  koffiPath ??= createRequire(import.meta.url).resolve("koffi");
  const config: LauncherConfig = {
    koffi: koffiPath,
    program: run.program,
    argv: [run.program.split("/").pop()!, ...run.args],
    env: Object.entries(run.env).map(([k, v]) => `${k}=${v}`),
    landlock: policy.landlock,
    rules: [
      ...policy.read.map((path) => ({ path, dir: String(DIR_READ), file: String(FS.READ_FILE) })),
      ...policy.execute.map((path) => ({
        path,
        dir: String(DIR_READ | FS.EXECUTE),
        file: String(FS.READ_FILE | FS.EXECUTE),
      })),
      ...policy.write.map((path) => ({ path, dir: String(DIR_WRITE), file: String(FS.READ_FILE) })),
    ],
    rlimits: [
      [RLIMIT.CPU, Math.max(1, Math.ceil(policy.limits.cpuSeconds))],
      [RLIMIT.AS, policy.limits.memoryBytes],
      [RLIMIT.FSIZE, policy.limits.fileBytes],
      [RLIMIT.NOFILE, policy.limits.openFiles],
      [RLIMIT.CORE, 0],
    ],
    seccomp: seccompConfig(),
  };
  return new Promise((resolvePromise, reject) => {
    execFile(
      process.execPath,
      ["-e", LAUNCHER, JSON.stringify(config)],
      {
        cwd: run.cwd,
        env: { ...run.env },
        timeout: run.timeoutMs,
        killSignal: "SIGKILL",
        signal: run.signal,
        maxBuffer: run.maxOutputBytes,
        encoding: "utf8",
      },
      (err, _stdout, stderr) => {
        if (!err) return resolvePromise(stderr);
        const code = (err as NodeJS.ErrnoException).code as unknown;
        const signal = (err as { signal?: NodeJS.Signals | null }).signal ?? null;
        const exitCode = typeof code === "number" ? code : null;
        const tagged = stderr
          .split("\n")
          .find((line) => line.startsWith(LAUNCHER_TAG))
          ?.slice(LAUNCHER_TAG.length);
        if (err.name === "AbortError") reject(new SandboxRunError("aborted", "aborted", stderr));
        else if (code === "ERR_CHILD_PROCESS_STDIO_MAXBUFFER")
          reject(
            new SandboxRunError("output", `output exceeded ${run.maxOutputBytes} bytes; killed`, stderr),
          );
        else if ((err as { killed?: boolean }).killed && signal === "SIGKILL")
          reject(new SandboxRunError("timeout", `killed after ${run.timeoutMs} ms`, stderr, null, signal));
        else if (exitCode === EXIT_UNAVAILABLE && tagged)
          reject(new SandboxRunError("unavailable", tagged, stderr, exitCode));
        else if (exitCode === EXIT_SETUP && tagged)
          reject(new SandboxRunError("setup", tagged, stderr, exitCode));
        else if (signal) reject(new SandboxRunError("signal", `killed by ${signal}`, stderr, null, signal));
        else if (typeof code === "string")
          reject(new SandboxRunError("setup", `cannot start the launcher: ${err.message}`, stderr));
        else reject(new SandboxRunError("exit", `exited with status ${exitCode}`, stderr, exitCode));
      },
    );
  });
}

/**
 * The files a dynamically linked `program` needs to run: itself (symlinks resolved), its shared
 * libraries and the dynamic loader, as the loader lists them (what ldd prints, without ldd:
 * with LD_TRACE_LOADED_OBJECTS set the loader prints the list and stops). These are what
 * {@link SandboxPolicy.execute} must hold for the program to start.
 */
export async function programFiles(program: string): Promise<string[]> {
  const trace = await new Promise<string>((resolvePromise) => {
    execFile(
      program,
      [],
      { encoding: "utf8", timeout: 30_000, env: { LD_TRACE_LOADED_OBJECTS: "1" } },
      (_err, stdout) => resolvePromise(stdout),
    );
  });
  const libraries = [...trace.matchAll(/(?:=> )?(\/\S+) \(0x/g)].map((m) => m[1]!);
  return [...new Set([await realpath(program), ...libraries])];
}
