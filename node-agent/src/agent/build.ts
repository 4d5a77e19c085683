import { createHash, randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir, rename, rm, writeFile } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import {
  Reason,
  type NodeChainSpec,
  type ResolvedFunction,
  type TestVector,
} from "../../../common/api/index.ts";
import { digestHex, fetchArtifact } from "../../../common/artifact/index.ts";
import { SluiceError, type FieldIssue } from "../../../common/errors.ts";
import { fusionSourceOf, type FusionSource } from "../chain/fused.ts";
import type { ChainSpec, NfLoadSpec, RodataValue, TableEntry } from "../chain/spec.ts";
import { BPF_DIR, compile, CompileError } from "../compile/index.ts";
import { listInterfaces } from "../netns/index.ts";
import { configureBuiltinNf, rodataValues } from "../nf/index.ts";

/**
 * A step of turning a plan into loadable objects failed. `reason` is the NodeChain condition
 * reason (CompileFailed, ArtifactFetchFailed, ...), `log` the compiler output when there is one.
 */
export class BuildError extends SluiceError {
  override name = "BuildError";
  constructor(reason: Reason, message: string, log?: string, issues: readonly FieldIssue[] = []) {
    // An artifact out of reach (the operator restarting) is waited for; anything else fails the
    // same way until the plan changes.
    super(reason, message, {
      retry: reason === Reason.ArtifactFetchFailed ? "wait" : "stall",
      issues,
      ...(log !== undefined && { log }),
    });
  }
}

/** Where the build keeps its caches, and how interfaces are found. */
export interface BuildOptions {
  /** Cache root: artifacts by digest, inline sources by hash, compiled objects by content hash. */
  cacheDir: string;
  /** Network namespace the node's interfaces live in (default: this process's). */
  netns?: string;
  /** Pin directory name of the chain on this node. */
  chainName: string;
  signal?: AbortSignal;
}

/** What the build produced, with how much work it took. */
export interface BuildResult {
  spec: ChainSpec;
  compiled: number;
  cached: number;
}

/**
 * Turns a NodeChain plan into a ChainSpec the chain manager can load: fetches artifacts (digest
 * verified), compiles every network function (content-addressed cache: an unchanged NF is never
 * compiled twice), turns built-in parameters and tables into `.rodata` values and map entries,
 * and resolves interface patterns against the interfaces of the node.
 */
export async function buildChainSpec(plan: NodeChainSpec, options: BuildOptions): Promise<BuildResult> {
  let compiled = 0;
  let cached = 0;
  const functions: NfLoadSpec[] = [];
  const hookProgram = plan.hook === "xdp" ? "xdp" : "tc";
  for (const [i, fn] of plan.functions.entries()) {
    const source = await sourceOf(fn, options);
    let result;
    try {
      result = await compile({
        sourceRoot: source.root,
        entry: source.entry,
        cacheDir: join(options.cacheDir, "objects"),
        defines: source.defines,
        signal: options.signal,
      });
    } catch (err) {
      if (err instanceof CompileError) {
        throw new BuildError(Reason.CompileFailed, `functions[${i}] ${fn.name}: ${err.message}`, err.stderr);
      }
      throw err;
    }
    if (result.cached) cached++;
    else compiled++;
    functions.push({
      name: fn.name,
      objectPath: result.objectPath,
      programName: source.programs?.[hookProgram],
      rodata: source.rodata,
      tables: source.tables ?? customTables(fn, i),
      ...(fn.tests?.length ? { tests: fn.tests } : {}),
      ...(source.fusion ? { fusion: source.fusion } : {}),
    });
  }
  const tests: TestVector[] = [...(plan.tests ?? [])];
  const spec: ChainSpec = {
    name: options.chainName,
    revision: plan.revision,
    hook: plan.hook,
    interfaces: resolveInterfaces(plan.interfaces, options.netns),
    functions,
    tests,
    mode: plan.mode ?? "auto",
  };
  return { spec, compiled, cached };
}

interface ResolvedSourceFiles {
  root: string;
  entry: string;
  defines?: Record<string, string>;
  programs?: { xdp?: string; tc?: string };
  rodata?: Record<string, RodataValue>;
  tables?: Record<string, TableEntry[]>;
  /** Where its inline contract lives (fused chains); none for inline C. */
  fusion?: FusionSource;
}

async function sourceOf(fn: ResolvedFunction, options: BuildOptions): Promise<ResolvedSourceFiles> {
  const src = fn.source;
  if ("builtin" in src) {
    const configured = configureBuiltinNf(src.builtin, { parameters: fn.parameters, tables: fn.tables });
    if (!configured.ok)
      throw new BuildError(configured.error.reason, `${fn.name}: ${configured.error.message}`);
    const nf = configured.value.nf;
    return {
      root: join(BPF_DIR, nf.sourceDir),
      entry: basename(nf.entry),
      programs: nf.programs,
      rodata: rodataValues(configured.value.rodata),
      tables: configured.value.mapContents,
      fusion: fusionSourceOf(join(BPF_DIR, nf.sourceDir), basename(nf.entry)),
    };
  }
  // Custom C: parameters become -D defines, so they are compile-time as the API says.
  const defines = Object.fromEntries(
    Object.entries(fn.parameters ?? {}).map(([k, v]) => [k, String(typeof v === "boolean" ? Number(v) : v)]),
  );
  if ("inline" in src) {
    const hash = createHash("sha256").update(src.inline).digest("hex");
    const dir = join(options.cacheDir, "inline", hash);
    if (!existsSync(join(dir, "nf.bpf.c"))) {
      await mkdir(dir, { recursive: true });
      await writeFile(join(dir, "nf.bpf.c.tmp"), src.inline);
      await rename(join(dir, "nf.bpf.c.tmp"), join(dir, "nf.bpf.c"));
    }
    return { root: dir, entry: "nf.bpf.c", defines };
  }
  const { url, digest, path } = src.artifact;
  const dir = await fetchCached(url, digest, options);
  // The entry's directory is the source root: its headers sit next to it.
  const root = join(dir, dirname(path));
  return { root, entry: basename(path), defines, fusion: fusionSourceOf(root, basename(path), defines) };
}

/**
 * Fetches under way by cache directory: chains that name the same artifact at once (several
 * chains of one commit on a node) share one download, and none replaces the tree another is
 * reading.
 */
const fetching = new Map<string, Promise<string>>();

/** Downloads and unpacks an artifact once per digest; the digest is checked before unpacking. */
async function fetchCached(url: string, digest: string, options: BuildOptions): Promise<string> {
  const hex = digestHex(digest);
  if (!hex) throw new BuildError(Reason.InvalidSpec, `invalid artifact digest ${digest}`);
  const dir = join(options.cacheDir, "artifacts", hex);
  if (existsSync(join(dir, ".complete"))) return join(dir, "tree");
  const pending = fetching.get(dir);
  if (pending) return pending;
  const run = fetchInto(dir, url, digest, options);
  fetching.set(dir, run);
  try {
    return await run;
  } finally {
    fetching.delete(dir);
  }
}

async function fetchInto(dir: string, url: string, digest: string, options: BuildOptions): Promise<string> {
  const tmp = `${dir}.tmp-${process.pid}-${randomBytes(6).toString("hex")}`;
  try {
    await fetchArtifact(url, digest, join(tmp, "tree"), { signal: options.signal });
    await writeFile(join(tmp, ".complete"), "");
    await rm(dir, { recursive: true, force: true });
    await mkdir(dirname(dir), { recursive: true });
    await rename(tmp, dir);
  } catch (err) {
    await rm(tmp, { recursive: true, force: true });
    // Artifact errors say themselves what they are: a fetch out of reach is waited for, a digest
    // mismatch stalls, an archive that does not unpack is retried. Errors of unpacking name the
    // file inside the archive, not the archive: the URL is added for status.
    if (err instanceof SluiceError) {
      if (err.message.includes(url)) throw err;
      throw new SluiceError(err.reason, `artifact ${url}: ${err.message}`, {
        retry: err.retry,
        issues: err.issues,
        retryAfterMs: err.retryAfterMs,
        cause: err,
      });
    }
    // Writing the cache failed (a full disk, say): may pass, retried.
    throw new SluiceError(
      Reason.ArtifactFetchFailed,
      `artifact ${url}: ${err instanceof Error ? err.message : String(err)}`,
      { retry: "backoff", cause: err },
    );
  }
  return join(dir, "tree");
}

/**
 * Tables of a custom NF: each entry is `{ key: "<hex>", value: "<hex>" }` in the map's own
 * byte layout (the loader checks the sizes against the map).
 */
function customTables(fn: ResolvedFunction, index: number): Record<string, TableEntry[]> | undefined {
  if (!fn.tables) return undefined;
  const out: Record<string, TableEntry[]> = {};
  for (const [table, entries] of Object.entries(fn.tables)) {
    out[table] = entries.map((entry, j) => {
      const where = `tables.${table}[${j}]`;
      const key = hexField(entry.key, index, `${where}.key`);
      const value = hexField(entry.value, index, `${where}.value`);
      return { key, value };
    });
  }
  return out;
}

/** `v` as bytes; `path` is the field inside function `index` of the plan (and of its NetworkFunction's spec). */
function hexField(v: unknown, index: number, path: string): Buffer {
  if (typeof v !== "string" || !/^([0-9a-fA-F]{2})+$/.test(v.replace(/\s/g, ""))) {
    const message = 'must be a hex string of whole bytes, like "0a000001"';
    throw new BuildError(Reason.InvalidSpec, `functions[${index}].${path}: ${message}`, undefined, [
      { path, message },
    ]);
  }
  return Buffer.from(v.replace(/\s/g, ""), "hex");
}

/** Matches names and glob patterns (`*`, `?`, `[...]`) against the node's interfaces. */
export function resolveInterfaces(patterns: readonly string[], netns?: string): string[] {
  const present = listInterfaces(netns);
  const chosen = new Set<string>();
  for (const pattern of patterns) {
    const re = globToRegExp(pattern);
    for (const name of present) if (re.test(name)) chosen.add(name);
  }
  if (chosen.size === 0) {
    throw new BuildError(
      Reason.InterfaceNotFound,
      `no interface matches ${patterns.join(", ")} (the node has ${present.join(", ")})`,
    );
  }
  return [...chosen].sort();
}

function globToRegExp(pattern: string): RegExp {
  let re = "";
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i]!;
    if (c === "*") re += ".*";
    else if (c === "?") re += ".";
    else if (c === "[") {
      const end = pattern.indexOf("]", i + 1);
      if (end < 0) re += "\\[";
      else {
        re += `[${pattern
          .slice(i + 1, end)
          .replace(/^!/, "^")
          .replace(/\\/g, "\\\\")}]`;
        i = end;
      }
    } else re += c.replace(/[.+^${}()|\\]/g, "\\$&");
  }
  return new RegExp(`^${re}$`);
}
