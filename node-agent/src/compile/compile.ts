import { execFile } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import {
  mkdir,
  open,
  readFile,
  realpath,
  rename,
  rm,
  stat,
  symlink,
  utimes,
  writeFile,
} from "node:fs/promises";
import { delimiter, dirname, isAbsolute, join, resolve, sep } from "node:path";
import { fileURLToPath } from "node:url";
import { rootLogger } from "../../../common/log.ts";
import {
  CompileError,
  CompileSandboxUnavailableError,
  ToolchainError,
  sanitizeCompilerOutput,
} from "./errors.ts";
import { SourceTreeError, treeDigest } from "./digest.ts";
import { checkObjectOpens } from "./objectcheck.ts";
import { programFiles, runSandboxed, SandboxRunError, type SandboxPolicy } from "./sandbox.ts";

const log = rootLogger.child({ component: "compile" });

/**
 * The package's `bpf/` directory (C sources of the root program and the built-in NFs). Found by
 * walking up from this module: it sits at a different depth in the sources
 * (`node-agent/src/compile/`) than in the build (`dist/chunks/`), installed or not.
 */
export const BPF_DIR: string = findBpfDir(dirname(fileURLToPath(import.meta.url)));

function findBpfDir(from: string): string {
  for (let dir = from; ; dir = dirname(dir)) {
    if (existsSync(join(dir, "bpf", "include", "sluice.h"))) return join(dir, "bpf") + sep;
    if (dirname(dir) === dir) throw new Error(`sluice is incomplete: no bpf/include/sluice.h above ${from}`);
  }
}

/** The chain contract headers every NF includes (`sluice.h`). */
export const BPF_INCLUDE_DIR: string = join(BPF_DIR, "include");

/**
 * Flags every NF is compiled with. -mcpu=v3 gives 32-bit jumps and atomics (clang 14 goes no
 * further). No -Werror: a warning in an NF the verifier accepts should not block a rollout; it
 * is returned in `warnings` and shown in status instead (the built-in NFs compile without any).
 */
export const CLANG_FLAGS: readonly string[] = [
  "-O2",
  "-g",
  "-target",
  "bpf",
  "-mcpu=v3",
  "-Wall",
  "-fno-color-diagnostics",
];

/**
 * The system headers a network function may include, each a directory below the system include
 * directory: libbpf's `<bpf/...>` (libbpf-dev) and the kernel's UAPI `<linux/...>`,
 * `<asm-generic/...>` (linux-libc-dev). `<asm/...>` comes from the multiarch directory
 * (`/usr/include/x86_64-linux-gnu/asm`). Nothing else of the host: no libc, no `/usr/local`.
 */
export const SYSTEM_HEADER_DIRS: readonly string[] = ["bpf", "linux", "asm-generic"];

/** Bounds on one compile. */
export interface CompileLimits {
  /** Kill clang after this many milliseconds of wall time (also its CPU-time limit). */
  timeoutMs: number;
  /** clang's address-space limit (RLIMIT_AS), in bytes. */
  memoryBytes: number;
  /** Largest file in the source tree; larger ones are refused before clang runs. */
  maxSourceFileBytes: number;
  /** Largest source tree, all files together. */
  maxSourceBytes: number;
  /** Most files in the source tree. */
  maxSourceFiles: number;
}

/** Defaults: far above what an NF needs (a generated vmlinux.h is 3-5 MB), far below harm. */
export const DEFAULT_COMPILE_LIMITS: Readonly<CompileLimits> = Object.freeze({
  timeoutMs: 60_000,
  memoryBytes: 2 * 1024 ** 3,
  maxSourceFileBytes: 8 * 1024 ** 2,
  maxSourceBytes: 32 * 1024 ** 2,
  maxSourceFiles: 2_000,
});

/** What to compile and where to keep the result. */
export interface CompileOptions {
  /**
   * Directory whose whole tree goes into the cache key (the NF's directory, or the root of a
   * source artifact). clang runs here, so diagnostics name files relative to it, and it is all
   * clang may read besides sluice's headers, the system headers of {@link SYSTEM_HEADER_DIRS}
   * and `includeDirs`: absolute includes, `..` out of it and symlinks out of it fail.
   */
  sourceRoot: string;
  /** The C file to compile, relative to `sourceRoot`. */
  entry: string;
  /** Directory for compiled objects; created if missing. Safe to share between processes. */
  cacheDir: string;
  /** Compile-time defines (`-DNAME=value`); `true` is `-DNAME`. Part of the cache key. */
  defines?: Readonly<Record<string, string | number | boolean>>;
  /** More include directories (absolute, or relative to `sourceRoot`); hashed into the key. */
  includeDirs?: readonly string[];
  /** clang to run; default `$SLUICE_CLANG` or `clang` on PATH. */
  clang?: string;
  /** Kill clang after this many milliseconds (default {@link DEFAULT_COMPILE_LIMITS}). */
  timeoutMs?: number;
  /** Other bounds; unset ones come from {@link DEFAULT_COMPILE_LIMITS}. */
  limits?: Partial<CompileLimits>;
  /**
   * `required` (default): clang runs only inside a Landlock sandbox, and a node without Landlock
   * fails with {@link CompileSandboxUnavailableError}. `if-available`: without Landlock, clang runs
   * with only the resource limits, the seccomp filter and the include-path restrictions. Default
   * from the environment variable `SLUICE_COMPILE_LANDLOCK`.
   */
  landlock?: "required" | "if-available";
  signal?: AbortSignal;
}

/** A compiled object. */
export interface CompileResult {
  /** The ELF object in the cache directory (never written in place: safe to open at any time). */
  objectPath: string;
  /** True when the object came from the cache and clang did not run. */
  cached: boolean;
  /** Wall time of this call, including hashing the sources. */
  durationMs: number;
  /** Content hash naming the object: sources, includes, entry, defines, flags, toolchain. */
  cacheKey: string;
  /** clang's warnings (trimmed), empty when there were none. */
  warnings: string;
}

const DEFINE_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
const ELF_MAGIC = Buffer.from([0x7f, 0x45, 0x4c, 0x46]);
/** 2: compiled in the sandbox, with only the named system headers. Older objects are rebuilt. */
const KEY_FORMAT = 2;
/** clang output kept before trimming; past it clang is killed (a flood of warnings). */
const MAX_OUTPUT_BYTES = 1024 * 1024;

interface Toolchain {
  /** `clang --version`, the toolchain part of the key. */
  version: string;
  /** Digest of the system headers NFs may include, which change without clang changing. */
  helpersDigest: string;
  /** e.g. `/usr/include/x86_64-linux-gnu`, where `<asm/types.h>` lives for `<linux/bpf.h>`. */
  multiarchInclude: string | undefined;
  /** The compiler binary itself (symlinks resolved): what the sandbox executes. */
  program: string;
  /** Its shared libraries and dynamic loader, the only other files it may execute. */
  libraries: string[];
  /** clang's resource directory (its own freestanding headers such as `<stdint.h>`). */
  resourceDir: string | undefined;
  /** Each allowed system header directory: include name (`linux`, `asm`) → real directory. */
  systemHeaders: Record<string, string>;
}

const toolchains = new Map<string, Promise<Toolchain>>();
const inFlight = new Map<string, Promise<CompileResult>>();

/**
 * Compile an NF's C source to a BPF object with the project's fixed flags, reusing the cached
 * object when the inputs are unchanged.
 *
 * clang runs sandboxed (see `sandbox.ts`): it reads only `sourceRoot`, sluice's headers and
 * {@link SYSTEM_HEADER_DIRS}, writes only a private output directory, has no network, and is
 * bounded by {@link CompileLimits}; its output is cleaned with `sanitizeCompilerOutput`. A new
 * object is opened once by libbpf in a confined checker process before it is cached.
 *
 * Throws {@link CompileError} when the source does not compile (clang's cleaned stderr attached),
 * crosses a limit, times out, crashes clang, or yields an object libbpf cannot open safely;
 * {@link CompileSandboxUnavailableError} when the node has no usable Landlock (and `landlock` is
 * `required`); {@link ToolchainError} when clang itself is missing or cannot be started.
 * Concurrent calls for the same inputs share one clang run; processes sharing a cache directory
 * never see a partial object (the object is renamed into place).
 */
export async function compile(options: CompileOptions): Promise<CompileResult> {
  const started = performance.now();
  const clang = options.clang ?? process.env.SLUICE_CLANG ?? "clang";
  const limits: CompileLimits = {
    ...DEFAULT_COMPILE_LIMITS,
    ...(options.timeoutMs !== undefined && { timeoutMs: options.timeoutMs }),
    ...options.limits,
  };
  const landlock = options.landlock ?? landlockFromEnv();
  const sourceRoot = resolve(options.sourceRoot);
  const includeDirs = [
    BPF_INCLUDE_DIR,
    ...(options.includeDirs ?? []).map((dir) => resolve(sourceRoot, dir)),
  ];
  if (isAbsolute(options.entry) || options.entry.split(/[\\/]/).includes("..")) {
    throw new CompileError(options.entry, "tree", "the entry must be a path inside the source root");
  }
  const defineArgs = defineFlags(options.entry, options.defines ?? {});

  const toolchain = await toolchainFor(clang);
  const treeLimits = {
    maxFiles: limits.maxSourceFiles,
    maxBytes: limits.maxSourceBytes,
    maxFileBytes: limits.maxSourceFileBytes,
  };
  let digests: string[];
  try {
    digests = await Promise.all([sourceRoot, ...includeDirs].map((dir) => treeDigest(dir, treeLimits)));
  } catch (err) {
    if (err instanceof SourceTreeError)
      throw new CompileError(options.entry, err.overLimit ? "limit" : "tree", err.message);
    throw err;
  }
  const [sourceDigest, ...includeDigests] = digests;
  const cacheKey = createHash("sha256")
    .update(
      JSON.stringify({
        format: KEY_FORMAT,
        entry: options.entry,
        flags: [...CLANG_FLAGS, ...defineArgs],
        sourceDigest,
        includeDigests,
        toolchain: [toolchain.version, toolchain.helpersDigest],
      }),
    )
    .digest("hex");

  const objectPath = join(resolve(options.cacheDir), `${cacheKey}.o`);
  const pending = inFlight.get(objectPath);
  if (pending) return { ...(await pending), cached: true, durationMs: performance.now() - started };

  const run = (async (): Promise<CompileResult> => {
    const hit = await readCached(objectPath);
    if (hit !== undefined) {
      log.debug({ entry: options.entry, cacheKey }, "compile cache hit");
      return { objectPath, cached: true, durationMs: performance.now() - started, cacheKey, warnings: hit };
    }
    const cacheDir = resolve(options.cacheDir);
    await mkdir(cacheDir, { recursive: true });
    // clang may write only here: a directory of its own, renamed from once it succeeded.
    const outDir = join(cacheDir, `.build-${process.pid}-${randomBytes(6).toString("hex")}`);
    try {
      await mkdir(outDir);
      const headers = await systemHeaderDir(cacheDir, toolchain);
      const args = [
        ...CLANG_FLAGS,
        "-nostdlibinc",
        ...includeDirs.flatMap((dir) => ["-I", dir]),
        "-isystem",
        headers,
        ...defineArgs,
        "-c",
        options.entry,
        "-o",
        join(outDir, "object.o"),
      ];
      const policy: SandboxPolicy = {
        read: [
          sourceRoot,
          ...includeDirs,
          headers,
          ...Object.values(toolchain.systemHeaders),
          ...(toolchain.resourceDir ? [toolchain.resourceDir] : []),
          ...(await existing(["/etc/ld.so.cache"])),
        ],
        execute: [toolchain.program, ...toolchain.libraries],
        write: [outDir],
        landlock,
        limits: {
          cpuSeconds: limits.timeoutMs / 1000 + 1,
          memoryBytes: limits.memoryBytes,
          fileBytes: 256 * 1024 * 1024,
          openFiles: 1024,
        },
      };
      const stderr = await runClang(toolchain.program, args, policy, {
        cwd: sourceRoot,
        entry: options.entry,
        timeoutMs: limits.timeoutMs,
        signal: options.signal,
        clean: (text) => sanitizeCompilerOutput(text, sourceRoot, { [`${headers}/`]: "" }),
      });
      const warnings = stderr;
      const check = await checkObjectOpens(join(outDir, "object.o"));
      if (!check.ok) throw new CompileError(options.entry, "object", check.message);
      // The warnings file goes first: whoever sees the object also finds its warnings.
      if (warnings) await writeAtomically(`${objectPath}.warnings`, warnings);
      await rename(join(outDir, "object.o"), objectPath);
      const durationMs = performance.now() - started;
      log.info({ entry: options.entry, cacheKey, durationMs: Math.round(durationMs) }, "compiled");
      return { objectPath, cached: false, durationMs, cacheKey, warnings };
    } finally {
      await rm(outDir, { recursive: true, force: true });
    }
  })();
  inFlight.set(objectPath, run);
  try {
    return await run;
  } finally {
    inFlight.delete(objectPath);
  }
}

/** The cached object's warnings ("" for none), or undefined when there is no usable object. */
async function readCached(objectPath: string): Promise<string | undefined> {
  let handle;
  try {
    handle = await open(objectPath, "r");
  } catch {
    return undefined;
  }
  try {
    const magic = Buffer.alloc(4);
    const { bytesRead } = await handle.read(magic, 0, 4, 0);
    if (bytesRead !== 4 || !magic.equals(ELF_MAGIC)) return undefined;
  } finally {
    await handle.close();
  }
  // Touch it, so that a cache sweep by age keeps what is in use.
  const now = new Date();
  await utimes(objectPath, now, now).catch(() => undefined);
  return readFile(`${objectPath}.warnings`, "utf8").catch(() => "");
}

async function writeAtomically(path: string, content: string): Promise<void> {
  const tmp = `${path}.tmp-${process.pid}-${randomBytes(6).toString("hex")}`;
  await writeFile(tmp, content);
  await rename(tmp, path);
}

function defineFlags(entry: string, defines: Readonly<Record<string, string | number | boolean>>): string[] {
  return Object.keys(defines)
    .sort()
    .flatMap((name) => {
      const value = defines[name]!;
      if (!DEFINE_NAME.test(name)) throw new CompileError(entry, "source", `invalid define name "${name}"`);
      if (value === false) return [];
      if (value === true) return [`-D${name}`];
      const text = String(value);
      if (/[\r\n]/.test(text))
        throw new CompileError(entry, "source", `define ${name} contains a line break`);
      return [`-D${name}=${text}`];
    });
}

function landlockFromEnv(): "required" | "if-available" {
  const value = process.env.SLUICE_COMPILE_LANDLOCK;
  if (value === undefined || value === "" || value === "required") return "required";
  if (value === "if-available") return "if-available";
  throw new ToolchainError(`SLUICE_COMPILE_LANDLOCK must be "required" or "if-available", not "${value}"`);
}

async function existing(paths: string[]): Promise<string[]> {
  const found = await Promise.all(
    paths.map((path) =>
      stat(path).then(
        () => path,
        () => undefined,
      ),
    ),
  );
  return found.filter((path): path is string => path !== undefined);
}

/**
 * A directory that holds only symlinks to the allowed system header directories
 * ({@link SYSTEM_HEADER_DIRS} and the multiarch `asm`): clang's only system include path, so
 * `<stdio.h>` or `<../../etc/x>` find nothing. One per cache directory and header set, made
 * atomically.
 */
async function systemHeaderDir(cacheDir: string, toolchain: Toolchain): Promise<string> {
  const links = Object.entries(toolchain.systemHeaders).sort(([a], [b]) => (a < b ? -1 : 1));
  const id = createHash("sha256").update(JSON.stringify(links)).digest("hex").slice(0, 16);
  const dir = join(cacheDir, `.system-include-${id}`);
  if (
    await stat(dir).then(
      () => true,
      () => false,
    )
  )
    return dir;
  const tmp = `${dir}.tmp-${process.pid}-${randomBytes(6).toString("hex")}`;
  await mkdir(tmp);
  for (const [name, target] of links) await symlink(target, join(tmp, name));
  await rename(tmp, dir).catch(async (err: NodeJS.ErrnoException) => {
    await rm(tmp, { recursive: true, force: true });
    if (err.code !== "EEXIST" && err.code !== "ENOTEMPTY") throw err;
  });
  return dir;
}

interface ClangRun {
  cwd: string;
  entry: string;
  timeoutMs: number;
  signal: AbortSignal | undefined;
  /** Makes clang's stderr safe and short for status (see `sanitizeCompilerOutput`). */
  clean: (stderr: string) => string;
}

/**
 * Runs clang in the sandbox; resolves with its cleaned stderr (warnings) or rejects with a
 * CompileError (the source, a limit, a crash), a CompileSandboxUnavailableError or a
 * ToolchainError.
 */
async function runClang(
  clang: string,
  args: string[],
  policy: SandboxPolicy,
  run: ClangRun,
): Promise<string> {
  try {
    return run.clean(
      await runSandboxed(
        {
          program: clang,
          args,
          cwd: run.cwd,
          env: { PATH: "/usr/bin:/bin", LANG: "C", LC_ALL: "C", TMPDIR: policy.write[0]! },
          timeoutMs: run.timeoutMs,
          maxOutputBytes: MAX_OUTPUT_BYTES,
          signal: run.signal,
        },
        policy,
      ),
    );
  } catch (err) {
    if (!(err instanceof SandboxRunError)) throw err;
    const stderr = run.clean(err.stderr);
    switch (err.failure) {
      case "unavailable":
        throw new CompileSandboxUnavailableError(
          `cannot compile in the sandbox: ${err.message}; the kernel needs Landlock (CONFIG_SECURITY_LANDLOCK and "landlock" in the lsm= list), or set SLUICE_COMPILE_LANDLOCK=if-available to compile without it`,
        );
      case "setup":
        throw new ToolchainError(`cannot start ${clang} in the compiler sandbox: ${err.message}`);
      case "aborted":
        throw new CompileError(run.entry, "aborted", stderr);
      case "timeout":
        throw new CompileError(
          run.entry,
          "timeout",
          `${stderr}\nclang killed after ${run.timeoutMs} ms`.trim(),
        );
      case "output":
        throw new CompileError(
          run.entry,
          "limit",
          `${stderr}\nclang wrote more than ${MAX_OUTPUT_BYTES} bytes of diagnostics and was stopped`.trim(),
        );
      case "signal": {
        const cpu = err.signal === "SIGXCPU" || err.signal === "SIGKILL";
        const memory = /out of memory|bad_alloc|Cannot allocate memory/i.test(err.stderr);
        if (cpu || memory) {
          const what = cpu ? "its CPU-time limit" : `its memory limit (${policy.limits.memoryBytes} bytes)`;
          throw new CompileError(run.entry, "limit", `${stderr}\nclang stopped: it reached ${what}`.trim());
        }
        throw new CompileError(run.entry, "crash", `${stderr}\nclang was killed by ${err.signal}`.trim());
      }
      case "exit":
        if (/out of memory|bad_alloc|Cannot allocate memory/i.test(err.stderr))
          throw new CompileError(
            run.entry,
            "limit",
            `${stderr}\nclang stopped: it reached its memory limit`.trim(),
            err.exitCode,
          );
        throw new CompileError(run.entry, "source", stderr, err.exitCode);
    }
  }
}

/**
 * The system include flags BPF sources need besides `-I bpf/include`: `<linux/bpf.h>` includes
 * `<asm/types.h>`, which lives in the multiarch directory (e.g. x86_64-linux-gnu).
 */
export async function systemIncludeArgs(clang = process.env.SLUICE_CLANG ?? "clang"): Promise<string[]> {
  const { multiarchInclude } = await toolchainFor(clang);
  return multiarchInclude ? ["-idirafter", multiarchInclude] : [];
}

function toolchainFor(clang: string): Promise<Toolchain> {
  let toolchain = toolchains.get(clang);
  if (!toolchain) {
    toolchain = probeToolchain(clang);
    toolchains.set(clang, toolchain);
    // A failed probe (clang not installed yet) is retried on the next compile.
    toolchain.catch(() => toolchains.delete(clang));
  }
  return toolchain;
}

async function probeToolchain(clang: string): Promise<Toolchain> {
  const output = (args: string[], env?: NodeJS.ProcessEnv): Promise<string> =>
    new Promise((resolvePromise, reject) => {
      execFile(clang, args, { encoding: "utf8", timeout: 30_000, env }, (err, stdout) => {
        if (err) {
          const missing = (err as NodeJS.ErrnoException).code === "ENOENT";
          reject(
            new ToolchainError(
              missing
                ? `clang not found: "${clang}" (install clang, or set SLUICE_CLANG)`
                : `${clang} ${args.join(" ")}: ${err.message}`,
            ),
          );
        } else resolvePromise(stdout.trim());
      });
    });
  const version = await output(["--version"]);
  const multiarch = await output(["-print-multiarch"]).catch(() => "");
  const multiarchInclude = multiarch ? `/usr/include/${multiarch}` : undefined;
  const resourceDir = (await output(["-print-resource-dir"]).catch(() => "")) || undefined;
  const [program = "", ...libraries] = await programFiles(await findProgram(clang));
  const systemHeaders: Record<string, string> = {};
  for (const name of SYSTEM_HEADER_DIRS) systemHeaders[name] = join("/usr/include", name);
  if (multiarchInclude) systemHeaders.asm = join(multiarchInclude, "asm");
  for (const [name, dir] of Object.entries(systemHeaders)) {
    const real = await realpath(dir).catch(() => undefined);
    if (real) systemHeaders[name] = real;
    else delete systemHeaders[name];
  }
  const helpersDigest = createHash("sha256")
    .update(
      JSON.stringify(
        await Promise.all(
          Object.entries(systemHeaders)
            .sort(([a], [b]) => (a < b ? -1 : 1))
            .map(async ([name, dir]) => [name, await treeDigest(dir).catch(() => "none")]),
        ),
      ),
    )
    .digest("hex");
  return { version, helpersDigest, multiarchInclude, program, libraries, resourceDir, systemHeaders };
}

/** The absolute path execve needs: `clang` is looked up in PATH as the shell would. */
async function findProgram(name: string): Promise<string> {
  if (name.includes("/")) return resolve(name);
  for (const dir of (process.env.PATH ?? "/usr/bin:/bin").split(delimiter)) {
    const candidate = join(dir || ".", name);
    if (
      await stat(candidate).then(
        (s) => s.isFile(),
        () => false,
      )
    )
      return resolve(candidate);
  }
  throw new ToolchainError(`clang not found: "${name}" is not in PATH (install clang, or set SLUICE_CLANG)`);
}
