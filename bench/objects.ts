/**
 * The objects the benchmark runs (root, the built-in NFs, the hand-fused program), compiled
 * with the agent's own compiler and cache, and the compile figures: a cold compile into a fresh
 * cache directory and cached compiles, with clang runs in the cached rounds counted by the
 * object file being replaced (a new inode) rather than trusted from the compiler's own `cached`
 * flag. (A counting wrapper around clang cannot work: clang runs in a sandbox that may write
 * only its output.)
 */
import { mkdtemp, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { BPF_DIR, compile } from "../node-agent/src/compile/index.ts";
import { BUILTIN_NFS } from "../node-agent/src/nf/index.ts";
import type { TestScope } from "../test/kernel/harness.ts";
import { median, since } from "./stats.ts";

/** Every object the benchmark loads, by role. */
export interface BenchObjects {
  root: string;
  noop: string;
  firewall: string;
  ratelimit: string;
  flowmon: string;
  ips: string;
  router: string;
  l4lb: string;
  overlay: string;
  fused: string;
  /** The root with an indirect hop (bench/roothop.ts). */
  rootIndirect: string;
}

/** Where each object's source is, in the form `compile()` takes. */
const SOURCES: Record<keyof BenchObjects, { sourceRoot: string; entry: string }> = {
  root: { sourceRoot: BPF_DIR, entry: "root/root.bpf.c" },
  noop: builtin("noop"),
  firewall: builtin("firewall"),
  ratelimit: builtin("ratelimit"),
  flowmon: builtin("flowmon"),
  ips: builtin("ips"),
  router: builtin("router"),
  l4lb: builtin("l4lb"),
  overlay: builtin("overlay"),
  // fused.bpf.c includes ../nf/*/ headers: its source root is the whole bpf/ tree.
  fused: { sourceRoot: BPF_DIR, entry: "bench/fused.bpf.c" },
  rootIndirect: { sourceRoot: BPF_DIR, entry: "bench/root_indirect.bpf.c" },
};

/** The NFs of the switched chain: their compile times make `compile_ms_cold` / `_cached`. */
export const CHAIN3 = ["firewall", "ratelimit", "flowmon"] as const;

function builtin(name: keyof typeof BUILTIN_NFS): { sourceRoot: string; entry: string } {
  const nf = BUILTIN_NFS[name];
  return { sourceRoot: join(BPF_DIR, nf.sourceDir), entry: nf.entry.slice(nf.sourceDir.length + 1) };
}

/** Compile figures. */
export interface CompileFigures {
  /** Wall time to compile firewall, ratelimit and flowmon one after the other into a fresh cache (median over rounds). */
  compile_ms_cold: number;
  /** The same three from a warm cache (median over repeats). */
  compile_ms_cached: number;
  /** clang runs during every cached compile of the run; anything but 0 is a cache miss. */
  compile_cached_compiles: number;
  /** Per object: median cold and cached compile time. */
  compile_per_object: Record<string, { cold_ms: number; cached_ms: number }>;
  /** clang runs during the cold rounds (one per object and round when the cache works). */
  compile_cold_compiles: number;
  compile_rounds: { cold: number; cached: number };
}

/**
 * Compiles every object `coldRounds` times into fresh cache directories (the last one stays as
 * the run's cache), then `cachedRounds` times from that cache. Returns the object paths and the
 * compile figures. Temporary directories are removed by `scope`.
 */
export async function compileObjects(
  scope: TestScope,
  rounds: { cold: number; cached: number },
  log: (msg: string) => void,
): Promise<{ objects: BenchObjects; figures: CompileFigures }> {
  const work = await mkdtemp(join(tmpdir(), "sluice-bench-"));
  scope.defer(() => rm(work, { recursive: true, force: true }));
  const clang = process.env.SLUICE_CLANG;
  let clangRuns = 0;
  const inode = async (path: string) => (await stat(path)).ino;
  const roles = Object.keys(SOURCES) as (keyof BenchObjects)[];
  const cold: Record<string, number[]> = Object.fromEntries(roles.map((r) => [r, []]));
  const cached: Record<string, number[]> = Object.fromEntries(roles.map((r) => [r, []]));
  const chainCold: number[] = [];
  const chainCached: number[] = [];
  const objects = {} as BenchObjects;

  let cacheDir = "";
  for (let round = 0; round < rounds.cold; round++) {
    cacheDir = join(work, `cache-${round}`);
    let chainMs = 0;
    for (const role of roles) {
      const started = performance.now();
      const result = await compile({ ...SOURCES[role], cacheDir, clang });
      const ms = since(started);
      clangRuns++;
      if (result.cached) throw new Error(`compile ${role}: a fresh cache directory reported a cache hit`);
      cold[role]?.push(ms);
      if ((CHAIN3 as readonly string[]).includes(role)) chainMs += ms;
      objects[role] = result.objectPath;
    }
    chainCold.push(chainMs);
    log(`compile: cold round ${round + 1}/${rounds.cold}: 3-NF chain ${chainMs.toFixed(0)} ms`);
  }
  const coldRuns = clangRuns;

  for (let round = 0; round < rounds.cached; round++) {
    let chainMs = 0;
    for (const role of roles) {
      const before = await inode(objects[role]);
      const started = performance.now();
      const result = await compile({ ...SOURCES[role], cacheDir, clang });
      const ms = since(started);
      if ((await inode(result.objectPath)) !== before) clangRuns++;
      cached[role]?.push(ms);
      if ((CHAIN3 as readonly string[]).includes(role)) chainMs += ms;
      if (result.objectPath !== objects[role])
        throw new Error(`compile ${role}: the cached object is not the one compiled before`);
    }
    chainCached.push(chainMs);
  }
  const cachedRuns = clangRuns - coldRuns;

  return {
    objects,
    figures: {
      compile_ms_cold: median(chainCold),
      compile_ms_cached: median(chainCached),
      compile_cached_compiles: cachedRuns,
      compile_per_object: Object.fromEntries(
        roles.map((r) => [r, { cold_ms: median(cold[r] ?? []), cached_ms: median(cached[r] ?? []) }]),
      ),
      compile_cold_compiles: coldRuns,
      compile_rounds: { ...rounds },
    },
  };
}
