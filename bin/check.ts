/**
 * `sluice validate <dir>` and `sluice test <dir>`: the checks the operator and the agents make
 * on a revision, run on a directory before it is pushed (the command users put in their own
 * repository's CI). The directory plays the GitSource artifact: its manifests are loaded as the
 * operator loads them, `path` sources are its files, every network function is compiled and
 * loaded through the verifier as the agent would, in private instances that are never attached.
 */
import { mkdir, mkdtemp, rm, stat, symlink } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import { homedir, tmpdir } from "node:os";
import { join, posix, relative, resolve } from "node:path";
import {
  API_VERSION,
  ServiceChain,
  type ChainPlan,
  type Hook,
  type NetworkFunction,
  type SluiceObject,
  type TestVector,
} from "../common/api/index.ts";
import { ArtifactError, buildArtifact } from "../common/artifact/index.ts";
import { BuildError, buildChainSpec } from "../node-agent/src/agent/build.ts";
import type { ChainSpec, NfLoadSpec } from "../node-agent/src/chain/spec.ts";
import { parseDiagnostics, ToolchainError } from "../node-agent/src/compile/index.ts";
import { programHook, type ProgramHook } from "../node-agent/src/packet/index.ts";
import type { VectorResult } from "../node-agent/src/selftest/index.ts";
import { loadRevision } from "../operator/src/manifests/index.ts";
import { resolvePlan } from "../operator/src/servicechain/plan.ts";
import { ManifestIndex } from "./manifest-index.ts";
import { Progress } from "./progress.ts";
import type { PrivateChain } from "./test-vectors.ts";

/** This host cannot run the check (no clang, no libbpf, no privileges for BPF). */
export class EnvironmentError extends Error {
  override name = "EnvironmentError";
}

/** The command line names something that cannot be checked (no such directory). */
export class CheckUsageError extends Error {
  override name = "CheckUsageError";
}

/** One thing wrong with the directory, located as precisely as it can be. */
export interface Problem {
  /** `file:line` (relative to the directory), or a file, or the directory itself. */
  location: string;
  /** The object concerned, e.g. `NetworkFunction ttl-guard`; empty for a file-level problem. */
  subject: string;
  /** One line: the field path (when there is one) and what is wrong. */
  message: string;
  /** Several lines to show under it: the compiler's diagnostics or the verifier log's tail. */
  detail?: string;
}

/** The outcome of one test vector, as `sluice test` prints it. */
export interface VectorRow {
  /** `nf <name>` or `chain <name>` (with `<namespace>/` outside the default namespace). */
  of: string;
  /** The hook the vector ran on (a function's vectors run on each hook it supports). */
  hook: string;
  /** The vector's name as written in the manifest. */
  vector: string;
  passed: boolean;
  expected: string;
  got: string;
  /** `file:line` of the vector in its manifest. */
  location: string;
}

/** Everything a check found. */
export interface CheckReport {
  dir: string;
  files: number;
  functions: number;
  chains: number;
  /** Functions clang compiled in this run, and those found in the compile cache. */
  compiled: number;
  cached: number;
  /** Whether anything was loaded into the kernel (false with `--no-load`). */
  loaded: boolean;
  /** Program loads the verifier accepted (a function once per hook, a chain once). */
  verified: number;
  problems: Problem[];
  vectors: VectorRow[];
  /** Notes that are not problems (e.g. a chain not loaded because a function failed). */
  notes: string[];
}

/** Options of {@link checkDirectory}. */
export interface CheckOptions {
  /** The directory: manifests, and the files `path` sources name (the artifact root). */
  dir: string;
  /** Load everything through the verifier (false: stop after compiling). */
  load: boolean;
  /** Run the test vectors (needs `load`). */
  vectors: boolean;
  /** Where compiled objects are cached between runs. */
  cacheDir: string;
  progress: Progress;
}

const DEFAULT_NAMESPACE = "default";
/** A hook that runs each program type (both tc directions run the same program). */
const HOOK_OF: Record<ProgramHook, Hook> = { xdp: "xdp", tc: "tc-ingress" };

/** Default compile cache of the command line: `$SLUICE_CACHE_DIR`, else the user's cache directory. */
export function defaultCacheDir(): string {
  return (
    process.env.SLUICE_CACHE_DIR ?? join(process.env.XDG_CACHE_HOME ?? join(homedir(), ".cache"), "sluice")
  );
}

/**
 * Runs every check on `dir` and reports what it found. Throws {@link CheckUsageError} when
 * `dir` is not a directory and {@link EnvironmentError} when this host cannot compile or load.
 */
export async function checkDirectory(options: CheckOptions): Promise<CheckReport> {
  const dir = resolve(options.dir);
  const info = await stat(dir).catch(() => undefined);
  if (!info?.isDirectory()) throw new CheckUsageError(`${options.dir}: no such directory`);
  const report: CheckReport = {
    dir: options.dir,
    files: 0,
    functions: 0,
    chains: 0,
    compiled: 0,
    cached: 0,
    loaded: options.load,
    verified: 0,
    problems: [],
    vectors: [],
    notes: [],
  };

  // 1. Manifests, all or nothing, exactly as the operator loads a revision.
  const loaded = await loadRevision(dir, { defaultNamespace: DEFAULT_NAMESPACE });
  if (!loaded.ok) {
    for (const e of loaded.errors) {
      report.problems.push({
        location: e.line === undefined ? e.file : `${e.file}:${e.line}`,
        subject:
          e.kind && e.name ? `${e.kind} ${e.name}` : e.documentIndex > 0 ? `document ${e.documentIndex}` : "",
        message: e.path ? `${e.path}: ${e.message}` : e.message,
      });
    }
    return report;
  }
  report.files = loaded.files.length;
  if (loaded.objects.length === 0) {
    report.problems.push({
      location: options.dir,
      subject: "",
      message: `no sluice manifests (*.yaml with apiVersion ${API_VERSION}) in this directory`,
    });
    return report;
  }
  const index = await ManifestIndex.build(dir, loaded.files, DEFAULT_NAMESPACE);
  const session = new Session(dir, report, index, options);
  try {
    await session.run(loaded.objects);
  } finally {
    await session.close();
  }
  return report;
}

/** Why the kernel did not load something. */
interface Refusal {
  message: string;
  /** The verifier log's tail, or libbpf's messages. */
  detail?: string;
  /** The C line the verifier stopped at, as clang named the file. */
  source?: { file: string; line: number };
  /** The field of the function's spec at fault, when the loader named one (`tables.rules[3]`). */
  field?: string;
}

/** File name the build gives an inline source (clang's diagnostics name it). */
const INLINE_ENTRY = "nf.bpf.c";

/** One function as the later steps need it. */
interface FunctionState {
  nf: NetworkFunction;
  namespace: string;
  /** Loadable spec per program hook; absent until compiled (and when compiling failed). */
  specs: Map<ProgramHook, NfLoadSpec>;
  /** A problem was reported for it: chains that use it are not loaded. */
  failed: boolean;
}

/** The state of one check run: the local artifact, its server and the build cache. */
class Session {
  readonly #functions = new Map<string, FunctionState>();
  #server: Server | undefined;
  #artifact: { url: string; digest: string } | undefined;
  #buildCache: string | undefined;
  #loader: typeof import("./test-vectors.ts") | undefined;

  constructor(
    readonly dir: string,
    readonly report: CheckReport,
    readonly index: ManifestIndex,
    readonly options: CheckOptions,
  ) {}

  async run(objects: SluiceObject[]): Promise<void> {
    const functions = objects.filter((o): o is NetworkFunction => o.kind === "NetworkFunction");
    const chains = objects.filter((o): o is ServiceChain => o.kind === "ServiceChain");
    this.report.functions = functions.length;
    this.report.chains = chains.length;
    for (const nf of functions) {
      const namespace = nf.metadata.namespace ?? DEFAULT_NAMESPACE;
      this.#functions.set(`${namespace}/${nf.metadata.name}`, {
        nf,
        namespace,
        specs: new Map(),
        failed: false,
      });
    }

    // 2. What can be checked without compiling: source files, the artifact. (Built-in
    // parameters and tables were checked with the manifests, as the operator checks them.)
    if (functions.some((nf) => "path" in nf.spec.source)) await this.#serveArtifact();
    for (const state of this.#functions.values()) await this.#checkSourceFile(state);

    // 3. Plans: every chain resolved against the functions of its namespace.
    const plans = chains.map((chain) => ({ chain, plan: this.#plan(chain) }));

    // 4. Compile every function (one clang run each; the other hooks' builds hit the cache).
    this.#buildCache = await this.#prepareBuildCache();
    const progress = this.options.progress;
    const toCompile = [...this.#functions.values()].filter((s) => !s.failed);
    for (const [i, state] of toCompile.entries()) {
      const name = state.nf.metadata.name;
      progress.start(`compiling ${name} (${i + 1}/${toCompile.length})`);
      const started = performance.now();
      let ran = false;
      try {
        ran = await this.#compile(state);
      } finally {
        const seconds = ((performance.now() - started) / 1000).toFixed(1);
        const outcome = state.failed
          ? "does not compile"
          : ran
            ? `compiled in ${seconds} s`
            : "up to date (cache)";
        progress.done(`compile ${i + 1}/${toCompile.length} ${name}: ${outcome}`);
      }
    }
    progress.stop();
    if (!this.options.load) return;

    // 5. Each function alone, on each hook it supports, then each chain: verifier, then vectors.
    for (const state of this.#functions.values()) if (!state.failed) await this.#loadFunction(state);
    for (const { chain, plan } of plans) if (plan) await this.#loadChain(chain, plan);
  }

  async close(): Promise<void> {
    this.options.progress.stop();
    if (this.#server) {
      this.#server.closeAllConnections();
      await new Promise((done) => this.#server!.close(done));
    }
    if (this.#buildCache) await rm(this.#buildCache, { recursive: true, force: true });
  }

  #subject(kind: string, namespace: string, name: string): string {
    return `${kind} ${namespace === DEFAULT_NAMESPACE ? "" : `${namespace}/`}${name}`;
  }

  #where(kind: string, namespace: string, name: string, path = ""): string {
    const pos = this.index.locate(kind, namespace, name, path);
    return pos ? `${pos.file}:${pos.line}` : this.report.dir;
  }

  #fail(state: FunctionState, path: string, message: string, detail?: string, location?: string): void {
    state.failed = true;
    const { namespace } = state;
    const name = state.nf.metadata.name;
    this.report.problems.push({
      location: location ?? this.#where("NetworkFunction", namespace, name, path),
      subject: this.#subject("NetworkFunction", namespace, name),
      message: path ? `${path}: ${message}` : message,
      ...(detail ? { detail } : {}),
    });
  }

  /** A `path` source must name a file of the directory (the agent would find nothing else). */
  async #checkSourceFile(state: FunctionState): Promise<void> {
    const source = state.nf.spec.source;
    if (!("path" in source) || state.failed) return;
    const file = await stat(join(this.dir, source.path)).catch(() => undefined);
    if (!file?.isFile())
      this.#fail(state, "spec.source.path", `${source.path} is not a file in ${this.report.dir}`);
  }

  /**
   * Packs the directory as the operator packs a GitSource revision and serves it on loopback, so
   * that the agent's build step fetches, verifies and unpacks it as it would in a cluster.
   */
  async #serveArtifact(): Promise<void> {
    let artifact;
    try {
      artifact = await buildArtifact(this.dir);
    } catch (err) {
      if (!(err instanceof ArtifactError)) throw err;
      this.report.problems.push({ location: err.file ?? this.report.dir, subject: "", message: err.message });
      for (const state of this.#functions.values()) if ("path" in state.nf.spec.source) state.failed = true;
      return;
    }
    const server = createServer((req, res) => {
      if (req.url !== "/artifact.tar.gz") {
        res.writeHead(404).end();
        return;
      }
      res.writeHead(200, { "content-type": "application/gzip", "content-length": artifact.tarball.length });
      res.end(artifact.tarball);
    });
    await new Promise<void>((listening, failed) => {
      server.once("error", failed);
      server.listen(0, "127.0.0.1", () => listening());
    });
    this.#server = server;
    const { port } = server.address() as { port: number };
    this.#artifact = { url: `http://127.0.0.1:${port}/artifact.tar.gz`, digest: artifact.digest };
  }

  /**
   * A build cache for this run: compiled objects and inline sources are shared with later runs,
   * while the unpacked copy of the directory (an artifact by digest) goes away with the run.
   */
  async #prepareBuildCache(): Promise<string> {
    const persistent = resolve(this.options.cacheDir);
    const run = await mkdtemp(join(tmpdir(), "sluice-check-"));
    for (const sub of ["objects", "inline"]) {
      await mkdir(join(persistent, sub), { recursive: true });
      await symlink(join(persistent, sub), join(run, sub));
    }
    return run;
  }

  #plan(chain: ServiceChain): ChainPlan | undefined {
    const namespace = chain.metadata.namespace ?? DEFAULT_NAMESPACE;
    const name = chain.metadata.name;
    const functions = new Map(
      [...this.#functions.values()]
        .filter((s) => s.namespace === namespace)
        .map((s) => [s.nf.metadata.name, s.nf] as const),
    );
    const result = resolvePlan({
      chain,
      functions,
      sources: new Map(),
      ...(this.#artifact ? { localArtifact: this.#artifact } : {}),
    });
    if (result.ok) return result.plan;
    // Each problem names the chain entry it is about.
    for (const problem of result.problems) {
      this.report.problems.push({
        location: this.#where("ServiceChain", namespace, name, problem.path),
        subject: this.#subject("ServiceChain", namespace, name),
        message: `${problem.path}: ${problem.message}`,
      });
    }
    return undefined;
  }

  /** The plan of one function alone on `hook`: a one-function chain, resolved like any other. */
  #soloPlan(state: FunctionState, hook: Hook): ChainPlan {
    const chain = ServiceChain.parse({
      apiVersion: API_VERSION,
      kind: "ServiceChain",
      metadata: { name: "solo" },
      spec: {
        functions: [{ name: state.nf.metadata.name }],
        attachment: { interfaces: ["lo"], hook },
      },
    });
    const result = resolvePlan({
      chain,
      functions: new Map([[state.nf.metadata.name, state.nf]]),
      sources: new Map(),
      ...(this.#artifact ? { localArtifact: this.#artifact } : {}),
    });
    if (!result.ok) throw new Error(`planning ${state.nf.metadata.name} alone: ${result.message}`);
    return result.plan;
  }

  /**
   * Builds a plan as the agent does. The interfaces are set to `lo`, which every host has:
   * nothing is attached, and the build must not fail on interfaces of some other node.
   */
  async #build(plan: ChainPlan, chainName: string) {
    try {
      return await buildChainSpec(
        { ...plan, interfaces: ["lo"], nodeName: "local", chain: chainName },
        { cacheDir: this.#buildCache!, chainName },
      );
    } catch (err) {
      if (err instanceof ToolchainError) throw new EnvironmentError(err.message);
      throw err;
    }
  }

  /** Builds the function for each program type its hooks need; true when clang ran. */
  async #compile(state: FunctionState): Promise<boolean> {
    // One declared hook per program type: tc-ingress and tc-egress run the same program.
    const hooks = new Map<ProgramHook, Hook>();
    for (const hook of state.nf.spec.hooks)
      if (!hooks.has(programHook(hook))) hooks.set(programHook(hook), hook);
    let ran = false;
    for (const [programType, hook] of hooks) {
      try {
        const built = await this.#build(this.#soloPlan(state, hook), "solo");
        ran ||= built.compiled > 0;
        state.specs.set(programType, built.spec.functions[0]!);
      } catch (err) {
        if (!(err instanceof BuildError)) throw err;
        this.#buildFailed(state, err);
        return ran;
      }
    }
    if (ran) this.report.compiled++;
    else this.report.cached++;
    return ran;
  }

  #buildFailed(state: FunctionState, err: BuildError): void {
    if (err.reason === "CompileFailed") {
      const { location, detail } = this.#compilerOutput(state, err.log ?? "");
      const first = parseDiagnostics(err.log ?? "").find((d) => d.severity.endsWith("error"));
      const headline = first ? `${first.severity}: ${first.message}` : err.message;
      const where = this.#where("NetworkFunction", state.namespace, state.nf.metadata.name, "spec.source");
      this.#fail(state, "", `does not compile (source at ${where}): ${headline}`, detail, location);
      return;
    }
    // Table entries of custom functions are checked by the build; its issues name fields of
    // the function, which are the same in the NetworkFunction's spec.
    if (err.issues.length === 0) this.#fail(state, "", err.message);
    for (const issue of err.issues) this.#fail(state, `spec.${issue.path}`, issue.message);
  }

  /**
   * clang names files relative to the directory it ran in: the entry's directory inside the
   * unpacked artifact, or the cache directory of an inline source. Rewrites them as the user
   * knows them: relative to the checked directory, or the manifest line of the inline C.
   */
  #compilerOutput(state: FunctionState, stderr: string): { location: string | undefined; detail: string } {
    let location: string | undefined;
    const detail = stderr
      .split("\n")
      .map((line) => {
        const m = /^(In file included from )?([^\s:][^:]*):(\d+):(?:(\d+):)?(.*)$/.exec(line);
        if (!m) return line;
        const renamed = this.#sourcePosition(state, m[2]!, Number(m[3]), m[4]);
        if (!renamed) return line;
        if (!m[1] && location === undefined && /^ (fatal )?error:/.test(m[5]!))
          location = renamed.replace(/ \(inline.*$/, "");
        return `${m[1] ?? ""}${renamed}:${m[5]}`;
      })
      .join("\n");
    return { location, detail };
  }

  /**
   * `file:line[:column]` of a C source position as the user knows it, from the file name clang
   * used (relative to the directory it ran in); undefined when the file is not the user's.
   */
  #sourcePosition(state: FunctionState, file: string, line: number, column?: string): string | undefined {
    const source = state.nf.spec.source;
    if ("path" in source && !file.startsWith("/")) {
      return `${posix.normalize(posix.join(posix.dirname(source.path), file))}:${line}${column ? `:${column}` : ""}`;
    }
    if ("inline" in source && file === INLINE_ENTRY) {
      const pos = this.index.inlineSourceLine(state.namespace, state.nf.metadata.name, line);
      if (pos) return `${pos.file}:${pos.line} (inline C line ${line}${column ? `, column ${column}` : ""})`;
    }
    if (file.startsWith(`${this.#buildCache!}/`)) return relative(this.#buildCache!, file);
    return undefined;
  }

  /** The loader, imported on first use: it needs libbpf, which compiling alone does not. */
  async #loaderModule(): Promise<typeof import("./test-vectors.ts")> {
    if (!this.#loader) {
      try {
        this.#loader = await import("./test-vectors.ts");
      } catch (err) {
        throw new EnvironmentError(
          `cannot use libbpf (libbpf.so.1, Debian package libbpf1): ${err instanceof Error ? err.message : String(err)}`,
        );
      }
    }
    return this.#loader;
  }

  /** Loads `spec` privately; undefined (and a problem) when the kernel refuses it. */
  async #loadPrivate(
    spec: Pick<ChainSpec, "hook" | "functions">,
    onRefused: (refusal: Refusal) => void,
  ): Promise<PrivateChain | undefined> {
    const { PrivateChain } = await this.#loaderModule();
    const { BpfError, NotSupportedError, VerifierError } = await import("../node-agent/src/libbpf/index.ts");
    const { ChainSpecError, NfContractError } = await import("../node-agent/src/chain/index.ts");
    try {
      const chain = PrivateChain.load(spec);
      this.report.verified++;
      return chain;
    } catch (err) {
      if (err instanceof VerifierError) {
        // With BTF line info the log names the C line of each instruction: the last one is
        // where the verifier stopped.
        const lines = [...err.log.matchAll(/ @ (\S+):(\d+)$/gm)].at(-1);
        onRefused({
          message: `the verifier rejected program ${err.program} (${spec.hook}): ${err.verdict}`,
          detail: err.log,
          ...(lines ? { source: { file: lines[1]!, line: Number(lines[2]) } } : {}),
        });
      } else if (err instanceof NfContractError || err instanceof ChainSpecError) {
        const field = err instanceof ChainSpecError ? err.issues[0]?.path : undefined;
        onRefused({ message: err.message, ...(field !== undefined && { field }) });
      } else if (
        err instanceof BpfError &&
        (err.code === "EPERM" || err.code === "EACCES") &&
        err.subject.startsWith("map ")
      ) {
        throw new EnvironmentError(
          `loading BPF needs root (CAP_BPF and CAP_NET_ADMIN): ${err.message}; run as root, or validate with --no-load to stop after compiling`,
        );
      } else if (err instanceof NotSupportedError) {
        throw new EnvironmentError(err.message);
      } else if (err instanceof BpfError) {
        onRefused({
          message: `the kernel refused it (${spec.hook}): ${err.message}`,
          ...(err.libbpfLog.length > 0 ? { detail: err.libbpfLog.join("\n") } : {}),
        });
      } else throw err;
      return undefined;
    }
  }

  async #loadFunction(state: FunctionState): Promise<void> {
    const name = state.nf.metadata.name;
    const tests = state.nf.spec.tests ?? [];
    for (const [hook, spec] of state.specs) {
      const instance = await this.#loadPrivate({ hook: HOOK_OF[hook], functions: [spec] }, (refusal) => {
        const manifest = this.#where(
          "NetworkFunction",
          state.namespace,
          name,
          refusal.field?.startsWith("tables") ? "spec.tables" : "spec.source",
        );
        const at = refusal.source && this.#sourcePosition(state, refusal.source.file, refusal.source.line);
        // The verifier log names source files as clang saw them: show the user's paths.
        const detail = refusal.detail?.replace(/ @ (\S+):(\d+)$/gm, (whole, file: string, line: string) => {
          const renamed = this.#sourcePosition(state, file, Number(line));
          return renamed ? ` @ ${renamed}` : whole;
        });
        this.#fail(
          state,
          "",
          at ? `${refusal.message} (source at ${manifest})` : refusal.message,
          detail,
          at ?? manifest,
        );
      });
      if (!instance) return;
      try {
        if (this.options.vectors && tests.length > 0) {
          const report = instance.run({ nf: new Map([[spec.name, tests]]) });
          this.#rows(report.results, tests, {
            of: `nf ${state.namespace === DEFAULT_NAMESPACE ? "" : `${state.namespace}/`}${name}`,
            hook,
            prefix: `${spec.name}/`,
            locate: (i) => this.#where("NetworkFunction", state.namespace, name, `spec.tests[${i}]`),
          });
        }
      } finally {
        instance.close();
      }
    }
  }

  async #loadChain(chain: ServiceChain, plan: ChainPlan): Promise<void> {
    const namespace = chain.metadata.namespace ?? DEFAULT_NAMESPACE;
    const name = chain.metadata.name;
    const subject = this.#subject("ServiceChain", namespace, name);
    const broken = chain.spec.functions
      .map((f) => f.name)
      .filter((f) => this.#functions.get(`${namespace}/${f}`)?.failed);
    if (broken.length > 0) {
      this.report.notes.push(`${subject} not loaded: ${[...new Set(broken)].join(", ")} failed above`);
      return;
    }
    let built;
    try {
      built = await this.#build(plan, name);
    } catch (err) {
      if (!(err instanceof BuildError)) throw err;
      this.report.problems.push({
        location: this.#where("ServiceChain", namespace, name),
        subject,
        message: err.message,
      });
      return;
    }
    const instance = await this.#loadPrivate(built.spec, ({ message, detail }) => {
      this.report.problems.push({
        location: this.#where("ServiceChain", namespace, name, "spec.functions"),
        subject,
        message,
        ...(detail ? { detail } : {}),
      });
    });
    if (!instance) return;
    try {
      const tests = chain.spec.tests ?? [];
      if (this.options.vectors && tests.length > 0) {
        const report = instance.run({ chain: tests });
        this.#rows(report.results, tests, {
          of: `chain ${namespace === DEFAULT_NAMESPACE ? "" : `${namespace}/`}${name}`,
          hook: chain.spec.attachment.hook,
          prefix: "",
          locate: (i) => this.#where("ServiceChain", namespace, name, `spec.tests[${i}]`),
        });
      }
    } finally {
      instance.close();
    }
  }

  /** Adds the results in the order the vectors are written (the self-test puts failures first). */
  #rows(
    results: readonly VectorResult[],
    tests: readonly TestVector[],
    context: { of: string; hook: string; prefix: string; locate: (index: number) => string },
  ): void {
    const byName = new Map(results.map((r) => [r.vector.slice(context.prefix.length), r]));
    tests.forEach((vector, i) => {
      const result = byName.get(vector.name);
      if (!result) return;
      this.report.vectors.push({
        of: context.of,
        hook: context.hook,
        vector: vector.name,
        passed: result.passed,
        expected: result.expected,
        got: result.got,
        location: context.locate(i),
      });
    });
  }
}
