import { execFile } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir, open, readFile, rename, rm, utimes, writeFile } from "node:fs/promises";
import { dirname, isAbsolute, join, resolve, sep } from "node:path";
import { fileURLToPath } from "node:url";
import { rootLogger } from "../../../common/log.ts";
import { CompileError, ToolchainError, trimCompilerOutput } from "./errors.ts";
import { SourceTreeError, treeDigest } from "./digest.ts";

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

/** What to compile and where to keep the result. */
export interface CompileOptions {
  /**
   * Directory whose whole tree goes into the cache key (the NF's directory, or the root of a
   * source artifact). clang runs here, so diagnostics name files relative to it.
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
  /** Kill clang after this many milliseconds (default 120 000). */
  timeoutMs?: number;
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
const KEY_FORMAT = 1;

interface Toolchain {
  /** `clang --version`, the toolchain part of the key. */
  version: string;
  /** Digest of the libbpf headers (bpf_helpers.h, ...), which change without clang changing. */
  helpersDigest: string;
  /** e.g. `/usr/include/x86_64-linux-gnu`, where `<asm/types.h>` lives for `<linux/bpf.h>`. */
  multiarchInclude: string | undefined;
}

const toolchains = new Map<string, Promise<Toolchain>>();
const inFlight = new Map<string, Promise<CompileResult>>();

/**
 * Compile an NF's C source to a BPF object with the project's fixed flags, reusing the cached
 * object when the inputs are unchanged.
 *
 * Throws {@link CompileError} when the source does not compile (clang's stderr attached), times
 * out or cannot be read, and {@link ToolchainError} when clang itself is missing. Concurrent
 * calls for the same inputs share one clang run; processes sharing a cache directory never see a
 * partial object (clang writes a temporary file that is renamed into place).
 */
export async function compile(options: CompileOptions): Promise<CompileResult> {
  const started = performance.now();
  const clang = options.clang ?? process.env.SLUICE_CLANG ?? "clang";
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
  let digests: string[];
  try {
    digests = await Promise.all([sourceRoot, ...includeDirs].map((dir) => treeDigest(dir)));
  } catch (err) {
    if (err instanceof SourceTreeError) throw new CompileError(options.entry, "tree", err.message);
    throw err;
  }
  const [sourceDigest, ...includeDigests] = digests;

  const args = [
    ...CLANG_FLAGS,
    ...includeDirs.flatMap((dir) => ["-I", dir]),
    ...(await systemIncludeArgs(clang)),
    ...defineArgs,
  ];
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
    await mkdir(resolve(options.cacheDir), { recursive: true });
    const tmpPath = `${objectPath}.tmp-${process.pid}-${randomBytes(6).toString("hex")}`;
    try {
      const stderr = await runClang(clang, [...args, "-c", options.entry, "-o", tmpPath], {
        cwd: sourceRoot,
        entry: options.entry,
        timeoutMs: options.timeoutMs ?? 120_000,
        signal: options.signal,
      });
      const warnings = trimCompilerOutput(stderr);
      // The warnings file goes first: whoever sees the object also finds its warnings.
      if (warnings) await writeAtomically(`${objectPath}.warnings`, warnings);
      await rename(tmpPath, objectPath);
      const durationMs = performance.now() - started;
      log.info({ entry: options.entry, cacheKey, durationMs: Math.round(durationMs) }, "compiled");
      return { objectPath, cached: false, durationMs, cacheKey, warnings };
    } finally {
      await rm(tmpPath, { force: true });
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

interface ClangRun {
  cwd: string;
  entry: string;
  timeoutMs: number;
  signal: AbortSignal | undefined;
}

/** Run clang; resolve with its stderr (warnings) or reject with a CompileError. */
function runClang(clang: string, args: string[], run: ClangRun): Promise<string> {
  return new Promise((resolvePromise, reject) => {
    execFile(
      clang,
      args,
      {
        cwd: run.cwd,
        timeout: run.timeoutMs,
        signal: run.signal,
        maxBuffer: 16 * 1024 * 1024,
        encoding: "utf8",
      },
      (err, _stdout, stderr) => {
        if (!err) return resolvePromise(stderr);
        const code = (err as NodeJS.ErrnoException).code;
        if (code === "ENOENT")
          return reject(
            new ToolchainError(`clang not found: "${clang}" (install clang, or set SLUICE_CLANG)`),
          );
        if (err.name === "AbortError")
          return reject(new CompileError(run.entry, "aborted", trimCompilerOutput(stderr)));
        if ((err as { killed?: boolean }).killed) {
          return reject(
            new CompileError(
              run.entry,
              "timeout",
              trimCompilerOutput(`${stderr}\nclang killed after ${run.timeoutMs} ms`),
            ),
          );
        }
        const exitCode = typeof code === "number" ? code : null;
        reject(new CompileError(run.entry, "source", trimCompilerOutput(stderr), exitCode));
      },
    );
  });
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
  const output = (args: string[]): Promise<string> =>
    new Promise((resolvePromise, reject) => {
      execFile(clang, args, { encoding: "utf8", timeout: 30_000 }, (err, stdout) => {
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
  const helpersDigest = await treeDigest("/usr/include/bpf").catch(() => "none");
  return { version, helpersDigest, multiarchInclude };
}
