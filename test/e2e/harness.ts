/**
 * The end-to-end testbed: everything real, nothing in-process.
 *
 * - the kube-apiserver + etcd of the cluster global setup, with the sluice CRDs;
 * - N Node objects (no kubelet), and for each a network namespace that plays the node: its
 *   interface `sl-node<i>` is one end of a veth pair whose other end sits in a client namespace,
 *   so traffic from the client crosses the node's chain on its way in;
 * - the chart's ServiceAccounts and RBAC (`helm template`), and per process a kubeconfig with a
 *   TokenRequest token: the operator's for the operator, the agent's bound to its Node for each
 *   agent. The admin kubeconfig only sets up and checks;
 * - one `sluice agent` process per node, started inside the node's namespace (as a hostNetwork
 *   pod runs on its node) with exactly the chart agent's capabilities, its own `--bpffs-root`
 *   and `--cache-dir`. The node's loopback carries the API server's and the operator's ports to
 *   the host's (fixtures/loopback-pipe.mjs), so the agent reaches both at 127.0.0.1; the
 *   agent's metrics port (its live view's readings) comes back to the host at the node's own
 *   loopback address (its Node's InternalIP, 127.0.77.<60+i>), where the operator asks it;
 * - one `sluice operator` process as the chart runs it: uid 65532, no capabilities, following a
 *   GitSource on a repository served by `git daemon`, told about commits by a signed push
 *   webhook, as a Git host would;
 * - open-ended UDP flows through every node, and NodeChain history recorded from a watch.
 *
 * Every process is started through `setpriv --pdeathsig KILL`, so a test run that dies takes its
 * processes with it; namespaces and bpffs directories carry the test process id, so the kernel
 * global setup sweeps what a killed run left behind. {@link Testbed.stop} undoes everything,
 * also after a failed or half-done start.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { createHmac, randomInt } from "node:crypto";
import { closeSync, mkdirSync, openSync, readdirSync, readFileSync } from "node:fs";
import { chown, mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { setTimeout as sleep } from "node:timers/promises";
import { Watch } from "@kubernetes/client-node";
import { parse as parseYaml, parseAllDocuments, stringify as toYaml } from "yaml";
import { BpfMap } from "../../node-agent/src/libbpf/index.ts";
import { decodeFlowEntry, type FlowRecord } from "../../node-agent/src/nf/index.ts";
import { pinName } from "../../node-agent/src/agent/agent.ts";
import { kubeConfig, kubectl, kubectlOk } from "../cluster/harness.ts";
import {
  installChartIdentities,
  writeServiceAccountKubeConfig,
  type ChartIdentities,
} from "../cluster/identities.ts";
import { installCrds } from "../cluster/sluice-support.ts";
import { BPFFS_TEST_ROOT, createNetns, repoRoot, run, TestScope, type TestNetns } from "../kernel/harness.ts";
import { createTestRepo, freePort, startGitDaemon, type TestRepo } from "../support/git-servers.ts";
import {
  asChartAgent,
  asChartOperator,
  CHART_AGENT_CAP_MASK,
  CHART_OPERATOR_UID,
  effectiveCaps,
  processUids,
  sluiceArgv,
} from "../support/sluice.ts";

/** Name of the ServiceChain (and GitSource) of the example repository. */
export const CHAIN = "edge";
/** The example GitOps repository the testbed's repository starts from. */
const EXAMPLE_DIR = join(repoRoot, "examples/gitops/network");
const FIXTURES = join(repoRoot, "test/e2e/fixtures");
const WEBHOOK_TOKEN = "e2e-webhook-token";
/** Work directories are `<tmp>/sluice-e2e-<pid>-<random>`: the pid tells a stale one. */
const WORK_DIR_PREFIX = "sluice-e2e-";

// ---------------------------------------------------------------------------------------------
// Processes

/** How a process ended. */
export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/**
 * A `sluice <command>` process. Its log (pino JSON lines) goes to a file that restarts append to,
 * so a failure can show what the process said.
 */
export class SluiceProcess {
  readonly child: ChildProcess;
  readonly exited: Promise<Exit>;
  #exit: Exit | undefined;

  /**
   * Starts `argv`: `sluice <command>` behind wrappers that end in `setpriv --pdeathsig KILL`
   * and exec each other, so that the pid is the sluice process itself, and the kernel kills it
   * when the test process dies, whatever way it dies.
   */
  constructor(
    readonly name: string,
    argv: readonly string[],
    readonly logPath: string,
    env: NodeJS.ProcessEnv = {},
  ) {
    const log = openSync(logPath, "a");
    const [file, ...args] = argv;
    this.child = spawn(file!, args, {
      cwd: repoRoot,
      stdio: ["ignore", log, log],
      env: { ...process.env, SLUICE_LOG_LEVEL: process.env.SLUICE_E2E_LOG_LEVEL ?? "info", ...env },
    });
    closeSync(log);
    this.exited = new Promise<Exit>((resolve) => {
      this.child.once("exit", (code, signal) => resolve((this.#exit = { code, signal })));
      this.child.once("error", () => resolve((this.#exit = { code: -1, signal: null })));
    });
  }

  /** Whether the process has not exited yet. */
  get running(): boolean {
    return this.#exit === undefined;
  }

  /** Sends `signal` and waits for the process to end. */
  async kill(signal: NodeJS.Signals = "SIGKILL"): Promise<Exit> {
    if (this.running) this.child.kill(signal);
    return this.exited;
  }

  /** Everything the process (and its earlier incarnations) logged. */
  log(): Promise<string> {
    return readFile(this.logPath, "utf8").catch(() => "");
  }

  /** The last `lines` lines of the log. */
  async logTail(lines = 25): Promise<string> {
    const text = await readFile(this.logPath, "utf8").catch(() => "");
    return text.trimEnd().split("\n").slice(-lines).join("\n");
  }

  /** The `msg` (and revision) of the last `count` log lines: what the process was doing when it stopped. */
  async lastMessages(count = 3): Promise<string[]> {
    const lines = (await readFile(this.logPath, "utf8").catch(() => "")).trimEnd().split("\n");
    return lines.slice(-count).map((line) => {
      try {
        const entry = JSON.parse(line) as { msg?: unknown; revision?: unknown };
        return `${String(entry.msg)}${entry.revision ? ` (revision ${String(entry.revision)})` : ""}`;
      } catch {
        return line;
      }
    });
  }

  /** Waits until a log line matches `pattern` after character `from`; fails at once if the process exits. */
  async waitForLog(pattern: RegExp, timeoutMs: number, from = 0): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const text = readFileSync(this.logPath, "utf8").slice(from);
      if (pattern.test(text)) return;
      if (!this.running) {
        throw new Error(
          `${this.name} exited (${JSON.stringify(this.#exit)}) before logging ${pattern}:\n${await this.logTail()}`,
        );
      }
      if (Date.now() > deadline) {
        throw new Error(
          `${this.name} did not log ${pattern} within ${timeoutMs} ms:\n${await this.logTail()}`,
        );
      }
      await sleep(100);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Watches

/** The fields of a Kubernetes object the tests read. */
export interface ObjectView {
  metadata: {
    name: string;
    generation?: number;
    resourceVersion?: string;
    annotations?: Record<string, string>;
    labels?: Record<string, string>;
  };
}

/** A Condition as the API shows it. */
export interface ConditionView {
  type: string;
  status: string;
  reason: string;
  message: string;
}

/** A NodeChain as the tests read it. */
export interface NodeChainView extends ObjectView {
  spec: {
    nodeName: string;
    chain: string;
    revision: string;
    functions?: { name: string; source?: { artifact?: { digest: string } } }[];
  };
  status?: {
    observedGeneration?: number;
    phase?: string;
    revision?: string;
    lastError?: { reason: string; message: string; log?: string };
    conditions?: ConditionView[];
  };
}

/** A ServiceChain as the tests read it. */
/** The rollout settings of a ServiceChain's spec, as the tests read them. */
export interface RolloutView {
  maxUnavailable?: number | string;
  canary?: { nodes?: number; pause?: boolean };
}

export interface ServiceChainView extends ObjectView {
  spec?: { rollout?: RolloutView };
  status?: {
    observedGeneration?: number;
    revision?: string;
    lastGoodRevision?: string;
    failedRevision?: string;
    nodes?: { desired: number; updated: number; ready: number; failed: number; summary?: string };
    revisions?: {
      revision: string;
      nodes: number;
      ready: number;
      failed: number;
      inProgress: number;
      pending: number;
    }[];
    failedNodes?: { node: string; reason: string; message?: string }[];
    conditions?: ConditionView[];
  };
}

/** A GitSource as the tests read it. */
export interface GitSourceView extends ObjectView {
  status?: {
    lastAppliedRevision?: string;
    webhookPath?: string;
    artifact?: { revision: string; digest: string };
    conditions?: ConditionView[];
  };
}

/** One change seen by a watch, with the time the test process saw it (`Date.now()`). */
export interface WatchEvent<T> {
  t: number;
  type: string;
  object: T;
}

/** The condition `type` of an object's status. */
export function conditionOf(obj: { status?: { conditions?: ConditionView[] } } | undefined, type: string) {
  return obj?.status?.conditions?.find((c) => c.type === type);
}

/**
 * Every change of one resource in one namespace, in order, from a watch: `events` is the
 * history, `latest` the current view. A watch that ends is resumed from the last resourceVersion
 * seen, so the history has no holes (`resumes` counts them, `relists` counts the times the API
 * server had forgotten that version and the history may have missed a step).
 */
export class ResourceWatch<T extends ObjectView> {
  readonly events: WatchEvent<T>[] = [];
  readonly latest = new Map<string, T>();
  resumes = 0;
  relists = 0;
  #waiters: (() => void)[] = [];
  #controller: AbortController | undefined;
  #stopped = false;
  #resourceVersion: string | undefined;

  constructor(
    private readonly path: string,
    private readonly label: string,
  ) {}

  /** Starts watching; resolves once the API server accepted the watch. */
  async start(): Promise<void> {
    const deadline = Date.now() + 30_000;
    for (;;) {
      const refused = await this.#open();
      if (refused === undefined) return;
      // Right after a CRD is Established its watch cache may still be starting (429).
      if (Date.now() > deadline) throw new Error(`watch ${this.path} refused: ${refused}`);
      await sleep(250);
    }
  }

  /** Resolves with undefined once the watch runs, or with why it was refused. */
  async #open(): Promise<string | undefined> {
    let refused: string | undefined;
    let started = false;
    const params: Record<string, string | boolean> = { allowWatchBookmarks: true };
    if (this.#resourceVersion) params.resourceVersion = this.#resourceVersion;
    const controller = await new Watch(kubeConfig()).watch(
      this.path,
      params,
      (type, obj: T & { kind?: string; code?: number }) => {
        if (type === "ERROR") {
          // 410 Gone: the version we resume from is too old; start over from the current state.
          this.#resourceVersion = undefined;
          this.relists++;
          return;
        }
        this.#resourceVersion = obj.metadata?.resourceVersion ?? this.#resourceVersion;
        if (type === "BOOKMARK") return;
        this.events.push({ t: Date.now(), type, object: obj });
        if (type === "DELETED") this.latest.delete(obj.metadata.name);
        else this.latest.set(obj.metadata.name, obj);
        for (const wake of this.#waiters.splice(0)) wake();
      },
      (err: { message?: string } | null | undefined) => {
        if (!started) {
          refused = err?.message ?? "closed at once";
          return;
        }
        if (this.#stopped) return;
        this.resumes++;
        void this.#resume();
      },
    );
    if (refused !== undefined) return refused;
    started = true;
    this.#controller = controller;
    return undefined;
  }

  async #resume(): Promise<void> {
    while (!this.#stopped) {
      if ((await this.#open().catch((err: Error) => err.message)) === undefined) return;
      await sleep(250);
    }
  }

  /** Ends the watch; pending waits fail at once. */
  stop(): void {
    this.#stopped = true;
    this.#controller?.abort();
    for (const wake of this.#waiters.splice(0)) wake();
  }

  /** The latest version of object `name`, if it exists. */
  get(name: string): T | undefined {
    return this.latest.get(name);
  }

  /**
   * Waits until `check` returns something other than undefined/false for the current view, and
   * returns it (`check` may also throw to give up early). On timeout the error says what was
   * awaited and shows the current view.
   */
  async waitFor<R>(
    what: string,
    check: (latest: ReadonlyMap<string, T>) => R | undefined | false,
    timeoutMs: number,
  ): Promise<R> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const result = check(this.latest);
      if (result !== undefined && result !== false) return result;
      const left = deadline - Date.now();
      if (left <= 0 || this.#stopped) {
        throw new Error(
          `${this.label}: not ${what} within ${timeoutMs} ms; now:\n${JSON.stringify([...this.latest.values()].map(summarize), null, 1)}`,
        );
      }
      await new Promise<void>((wake) => {
        const timer = setTimeout(wake, Math.min(left, 1_000));
        this.#waiters.push(() => (clearTimeout(timer), wake()));
      });
    }
  }
}

/** The parts of an object worth printing when a wait times out. */
function summarize(obj: ObjectView & { spec?: unknown; status?: unknown }): unknown {
  const spec = obj.spec as { revision?: string; nodeName?: string } | undefined;
  const status = obj.status as Record<string, unknown> | undefined;
  return {
    name: obj.metadata.name,
    generation: obj.metadata.generation,
    ...(spec?.revision ? { specRevision: spec.revision } : {}),
    status: status && {
      ...status,
      lastGoodPlan: undefined,
      lastError: status.lastError && { ...(status.lastError as object), log: undefined },
    },
  };
}

// ---------------------------------------------------------------------------------------------
// NodeChain history

/** Where one node stands, as its NodeChain says. */
export interface NodeState {
  node: string;
  generation: number;
  /** What the operator asks for. */
  wanted: string;
  phase: string;
  /** What the agent reports live. */
  live: string;
  observedGeneration: number;
}

/** A NodeChain's state. */
export function nodeState(nc: NodeChainView): NodeState {
  return {
    node: nc.spec.nodeName,
    generation: nc.metadata.generation ?? 0,
    wanted: nc.spec.revision,
    phase: nc.status?.phase ?? "",
    live: nc.status?.revision ?? "",
    observedGeneration: nc.status?.observedGeneration ?? -1,
  };
}

/** Settled: the agent reports the wanted revision live and Ready for the current generation. */
export function settled(s: NodeState): boolean {
  return s.phase === "Ready" && s.live === s.wanted && s.observedGeneration === s.generation;
}

/** Node states after each recorded NodeChain change: the rollout as a timeline. */
export interface Snapshot {
  t: number;
  states: Map<string, NodeState>;
}

/** Replays a NodeChain history into one snapshot per event. */
export function timeline(events: readonly WatchEvent<NodeChainView>[]): Snapshot[] {
  const current = new Map<string, NodeState>();
  return events.map((e) => {
    const s = nodeState(e.object);
    if (e.type === "DELETED") current.delete(s.node);
    else current.set(s.node, s);
    return { t: e.t, states: new Map(current) };
  });
}

/** Nodes not settled in a snapshot. */
export function inTransition(snapshot: Snapshot): string[] {
  return [...snapshot.states.values()]
    .filter((s) => !settled(s))
    .map((s) => s.node)
    .sort();
}

/** How one node went to a revision during a rollout (times from the watch, `Date.now()`). */
export interface NodeStep {
  node: string;
  /** When its NodeChain first asked for the revision. */
  movedAt: number;
  /** When its agent first reported the revision live and Ready after that; undefined if never. */
  settledAt: number | undefined;
}

/** What the NodeChain history says about the rollout of `revision` from event `from` on. */
export interface RolloutRecord {
  /** Nodes in the order they were moved. */
  steps: NodeStep[];
  /** Most nodes in transition at once. */
  maxInTransition: number;
  /** A snapshot with that many, to show when an assertion fails. */
  worst: { t: number; nodes: string[] };
}

/** Reads a rollout out of the NodeChain history; see {@link RolloutRecord}. */
export function rolloutRecord(
  events: readonly WatchEvent<NodeChainView>[],
  from: number,
  revision: string,
): RolloutRecord {
  const snapshots = timeline(events).slice(from);
  const steps = new Map<string, NodeStep>();
  let worst = { t: 0, nodes: [] as string[] };
  for (const snap of snapshots) {
    const moving = inTransition(snap);
    if (moving.length > worst.nodes.length) worst = { t: snap.t, nodes: moving };
    for (const s of snap.states.values()) {
      if (s.wanted !== revision) continue;
      let step = steps.get(s.node);
      if (!step) steps.set(s.node, (step = { node: s.node, movedAt: snap.t, settledAt: undefined }));
      if (step.settledAt === undefined && settled(s)) step.settledAt = snap.t;
    }
  }
  return {
    steps: [...steps.values()].sort((a, b) => a.movedAt - b.movedAt),
    maxInTransition: worst.nodes.length,
    worst,
  };
}

// ---------------------------------------------------------------------------------------------
// Traffic

/** What a flow through one node saw. */
export interface FlowResult {
  node: string;
  sent: number;
  received: number;
  /** `sent - received`. */
  lost: number;
  /** Sends the client's kernel refused (not counted in `sent`). */
  sendFailures: number;
  /** Packets the receiving socket dropped (buffer full): loss caused by the receiver. */
  receiverDrops: number;
  missingSample: number[];
  durationMs: number;
}

/** A flow in progress from a node's client namespace to the node. */
export interface RunningFlow {
  node: string;
  src: string;
  dst: string;
  sport: number;
  dport: number;
  /** Stops the sender, waits for packets on their way, and returns the counts. */
  stop(): Promise<FlowResult>;
  /** Kills both ends (idempotent). */
  abort(): void;
}

interface LineProcess {
  child: ChildProcess;
  next<T>(what: string, timeoutMs: number): Promise<T>;
}

function spawnInNetns(ns: TestNetns, args: readonly (string | number)[]): LineProcess {
  const child = spawn(
    "setpriv",
    [
      "--pdeathsig",
      "KILL",
      "--",
      "nsenter",
      `--net=${ns.path}`,
      process.execPath,
      join(FIXTURES, "udp-stream.mjs"),
      ...args.map(String),
    ],
    { stdio: ["pipe", "pipe", "pipe"] },
  );
  let stderr = "";
  child.stderr!.on("data", (b: Buffer) => (stderr += b.toString()));
  child.stdin!.on("error", () => {});
  const lines: unknown[] = [];
  let wake: (() => void) | undefined;
  let exited = false;
  createInterface({ input: child.stdout! }).on("line", (line) => {
    lines.push(JSON.parse(line));
    wake?.();
  });
  child.on("exit", () => {
    exited = true;
    wake?.();
  });
  return {
    child,
    async next<T>(what: string, timeoutMs: number): Promise<T> {
      const deadline = Date.now() + timeoutMs;
      while (lines.length === 0) {
        if (exited) throw new Error(`udp-stream in ${ns.name} exited before ${what}: ${stderr.trim()}`);
        const left = deadline - Date.now();
        if (left <= 0) throw new Error(`udp-stream in ${ns.name}: no ${what} within ${timeoutMs} ms`);
        await new Promise<void>((r) => {
          const timer = setTimeout(r, left);
          wake = () => (clearTimeout(timer), r());
        });
      }
      return lines.shift() as T;
    },
  };
}

// ---------------------------------------------------------------------------------------------
// The testbed

/** One simulated node. */
export interface E2eNode {
  index: number;
  /** Name of the Node object. */
  name: string;
  /** The node: its interface `ifname` carries the chain, and the agent works inside it. */
  netns: TestNetns;
  /** Where the node's traffic comes from. */
  client: TestNetns;
  ifname: string;
  ip: string;
  clientIp: string;
  bpffsRoot: string;
  cacheDir: string;
  /** The agent's kubeconfig: the chart agent ServiceAccount's token, bound to this node. */
  kubeconfig: string;
  /** The Node's InternalIP: a host loopback address that carries {@link Testbed.agentMetricsPort} to the agent. */
  hostIp: string;
  agent: SluiceProcess | undefined;
}

/** Options of {@link Testbed.start}. */
export interface TestbedOptions {
  /** Namespace of every sluice object (the test file's own). */
  namespace: string;
  nodes?: number;
  /** Overrides of the ServiceChain's `spec.rollout`. */
  rollout?: Record<string, unknown>;
}

type Yaml = Record<string, unknown>;

/** The running testbed; see the module comment. */
export class Testbed {
  readonly nodes: E2eNode[] = [];
  readonly nodeChains: ResourceWatch<NodeChainView>;
  readonly serviceChains: ResourceWatch<ServiceChainView>;
  readonly gitSources: ResourceWatch<GitSourceView>;
  repo!: TestRepo;
  /** The repository's URL as the GitSource names it (served by `git daemon`). */
  repoUrl = "";
  /** The chart's ServiceAccounts and RBAC every process of the testbed runs with. */
  identities!: ChartIdentities;
  operator: SluiceProcess | undefined;
  operatorPort = 0;
  /** The agents' metrics port: in each node's namespace, and at each node's {@link E2eNode.hostIp}. */
  agentMetricsPort = 0;
  /** The operator's kubeconfig: the chart operator ServiceAccount's token. */
  operatorKubeconfig = "";
  webhookPath = "";
  readonly #scope = new TestScope();
  readonly #flows = new Set<RunningFlow>();
  #workDir = "";
  /** Process logs; kept after a failed test (see {@link stop}). */
  #logDir = "";
  #bpffsDir = "";
  /** Unix sockets that carry the host's control-plane ports to the nodes' loopbacks. */
  #loopbackDir = "";
  /** The operator's home and data, owned by the operator's user. */
  #operatorHome = "";
  /** What a node's loopback-pipe carries: the host's ports to the Unix sockets. */
  #loopbackPairs: string[] = [];
  /** The repository's manifests as the last commit left them. */
  #chain: Yaml = {};
  #functions: Yaml[] = [];

  private constructor(readonly options: TestbedOptions) {
    const ns = options.namespace;
    this.nodeChains = new ResourceWatch(
      `/apis/sluice.dev/v1alpha1/namespaces/${ns}/nodechains`,
      "NodeChains",
    );
    this.serviceChains = new ResourceWatch(
      `/apis/sluice.dev/v1alpha1/namespaces/${ns}/servicechains`,
      "ServiceChains",
    );
    this.gitSources = new ResourceWatch(
      `/apis/sluice.dev/v1alpha1/namespaces/${ns}/gitsources`,
      "GitSources",
    );
  }

  /** The namespace of every sluice object of this testbed. */
  get namespace(): string {
    return this.options.namespace;
  }

  /**
   * Brings everything up: CRDs, watches, nodes with their agents, the operator, the repository
   * and its GitSource, applied. The first rollout is then under way ({@link waitForRollout}).
   * On failure it undoes what it did and rethrows; otherwise call {@link stop} when done.
   */
  static async start(options: TestbedOptions): Promise<Testbed> {
    const bed = new Testbed(options);
    try {
      await bed.#start();
    } catch (err) {
      await bed.stop({ keepLogs: true }).catch(() => undefined);
      throw err;
    }
    return bed;
  }

  async #start(): Promise<void> {
    const { namespace } = this.options;
    const count = this.options.nodes ?? 3;
    await sweepStaleWorkDirs();
    this.#workDir = await mkdtemp(join(tmpdir(), `${WORK_DIR_PREFIX}${process.pid}-`));
    this.#scope.defer(() => rm(this.#workDir, { recursive: true, force: true }));
    this.#logDir = await mkdtemp(join(tmpdir(), `sluice-e2e-logs-${namespace}-`));
    // Named <pid>-... under the kernel tests' bpffs root, so a killed run's pins are swept.
    this.#bpffsDir = join(BPFFS_TEST_ROOT, `${process.pid}-e2e-${namespace}`);
    mkdirSync(this.#bpffsDir, { recursive: true });
    this.#scope.defer(() => rm(this.#bpffsDir, { recursive: true, force: true }));

    await installCrds();
    await Promise.all([this.nodeChains.start(), this.serviceChains.start(), this.gitSources.start()]);
    // As `helm install sluice -n <namespace>` with operator.watchNamespace=<namespace> makes them.
    this.identities = await installChartIdentities("sluice", namespace, { watchNamespace: namespace });
    this.#scope.defer(() => this.identities.remove());

    // The nodes reach the API server and the operator at the ports they have on the host.
    this.operatorPort = await freePort();
    this.agentMetricsPort = await freePort();
    const apiPort = Number(new URL(kubeConfig().getCurrentCluster()!.server).port);
    this.#loopbackDir = join(this.#workDir, "loopback");
    mkdirSync(this.#loopbackDir);
    const pipes = [
      { port: apiPort, socket: join(this.#loopbackDir, "apiserver.sock") },
      { port: this.operatorPort, socket: join(this.#loopbackDir, "operator.sock") },
    ];
    this.#loopbackPairs = pipes.map((p) => `tcp:${p.port}=unix:${p.socket}`);
    await this.#startLoopbackPipe(
      pipes.map((p) => `unix:${p.socket}=tcp:${p.port}`),
      undefined,
    );

    for (let i = 0; i < count; i++) this.nodes.push(await this.#createNode(i));
    // Each agent's metrics port, at its node's address on the host, as a node's IP is reached.
    await this.#startLoopbackPipe(
      this.nodes.map((n) => `tcp:${n.hostIp}:${this.agentMetricsPort}=unix:${this.#agentSocket(n.name)}`),
      undefined,
    );
    for (const node of this.nodes) await this.startAgent(node);

    await this.#prepareOperator();
    await this.startOperator();

    const gitRoot = join(this.#workDir, "git");
    mkdirSync(gitRoot);
    this.repo = await createTestRepo({ name: "network", serveRoot: gitRoot });
    // Over the network, as from a Git host: the operator's user cannot read the test's files.
    const daemon = await startGitDaemon(gitRoot);
    this.#scope.defer(() => daemon.stop());
    this.repoUrl = daemon.url("network");
    await this.#loadExample();
    const sha = await this.repo.commit(this.#manifests(), "network: the edge chain");
    await kubectlOk([
      "create",
      "secret",
      "generic",
      "webhook",
      "-n",
      namespace,
      `--from-literal=token=${WEBHOOK_TOKEN}`,
    ]);
    await kubectlOk(["apply", "-f", "-"], {
      input: JSON.stringify({
        apiVersion: "sluice.dev/v1alpha1",
        kind: "GitSource",
        metadata: { name: CHAIN, namespace },
        spec: {
          url: this.repoUrl,
          ref: { branch: "main" },
          path: "network",
          // Commits arrive by webhook; the interval is only the safety net.
          interval: "1h",
          webhookSecretRef: { name: "webhook" },
        },
      }),
    });
    const gs = await this.waitForApplied(sha, 60_000);
    this.webhookPath = gs.status!.webhookPath!;
  }

  /** A network namespace as the node, a client namespace, and a veth pair between them. */
  async #createNode(index: number): Promise<E2eNode> {
    const name = `${this.namespace}-node${index}`;
    const netns = await createNetns(this.#scope, `node${index}`);
    const client = await createNetns(this.#scope, `client${index}`);
    const ifname = `sl-node${index}`;
    const clientIfname = `sl-client${index}`;
    const subnet = 60 + index;
    const ip = `10.77.${subnet}.2`;
    const clientIp = `10.77.${subnet}.1`;
    await run("ip", [
      "link",
      "add",
      clientIfname,
      "netns",
      client.name,
      "type",
      "veth",
      "peer",
      "name",
      ifname,
      "netns",
      netns.name,
    ]);
    const macs: Record<string, string> = {};
    for (const [ns, dev, addr] of [
      [client, clientIfname, clientIp],
      [netns, ifname, ip],
    ] as const) {
      await run("ip", ["-n", ns.name, "-batch", "-"], `addr add ${addr}/24 dev ${dev}\nlink set ${dev} up\n`);
      const [link] = JSON.parse(await run("ip", ["-j", "-n", ns.name, "link", "show", "dev", dev])) as {
        address: string;
      }[];
      macs[dev] = link!.address;
    }
    // Static neighbours: no ARP in flight when a flow starts, so loss can only come from the chain.
    await run("ip", [
      "-n",
      client.name,
      "neigh",
      "replace",
      ip,
      "lladdr",
      macs[ifname]!,
      "dev",
      clientIfname,
      "nud",
      "permanent",
    ]);
    await run("ip", [
      "-n",
      netns.name,
      "neigh",
      "replace",
      clientIp,
      "lladdr",
      macs[clientIfname]!,
      "dev",
      ifname,
      "nud",
      "permanent",
    ]);

    await kubectlOk(["apply", "-f", "-"], {
      input: JSON.stringify({
        apiVersion: "v1",
        kind: "Node",
        metadata: {
          name,
          labels: {
            "kubernetes.io/os": "linux",
            "kubernetes.io/hostname": name,
            "sluice.dev/e2e": this.namespace,
          },
        },
      }),
    });
    this.#scope.defer(() =>
      kubectl(["delete", "node", name, "--ignore-not-found", "--wait=false"]).then(() => undefined),
    );
    // Where the operator reaches the node's agent, as the kubelet reports a node's address.
    const hostIp = `127.0.77.${60 + index}`;
    await kubectlOk([
      "patch",
      "node",
      name,
      "--subresource=status",
      "--type=merge",
      "-p",
      JSON.stringify({ status: { addresses: [{ type: "InternalIP", address: hostIp }] } }),
    ]);

    const bpffsRoot = join(this.#bpffsDir, name);
    const cacheDir = join(this.#workDir, `cache-${name}`);
    mkdirSync(bpffsRoot, { recursive: true });
    // The token the kubelet would mount into the agent pod on this node: bound to the Node.
    const kubeconfig = await writeServiceAccountKubeConfig(
      this.#workDir,
      `agent-${name}`,
      this.namespace,
      this.identities.agentServiceAccount,
      { boundToNode: name },
    );
    await this.#startLoopbackPipe(
      [...this.#loopbackPairs, `unix:${this.#agentSocket(name)}=tcp:${this.agentMetricsPort}`],
      netns,
    );
    return {
      index,
      name,
      netns,
      client,
      ifname,
      ip,
      clientIp,
      bpffsRoot,
      cacheDir,
      kubeconfig,
      hostIp,
      agent: undefined,
    };
  }

  /** The Unix socket that carries a node's agent metrics port to the host. */
  #agentSocket(node: string): string {
    return join(this.#loopbackDir, `agent-${node}.sock`);
  }

  /**
   * Starts fixtures/loopback-pipe.mjs with `pairs`, in `netns` or on the host, and waits until
   * it listens. It lives as long as the testbed.
   */
  async #startLoopbackPipe(pairs: readonly string[], netns: TestNetns | undefined): Promise<void> {
    const enter = netns ? ["nsenter", `--net=${netns.path}`] : [];
    const child = spawn(
      enter[0] ?? "setpriv",
      [
        ...enter.slice(1),
        ...(netns ? ["setpriv"] : []),
        "--pdeathsig",
        "KILL",
        "--",
        process.execPath,
        join(FIXTURES, "loopback-pipe.mjs"),
        ...pairs,
      ],
      { stdio: ["ignore", "pipe", "pipe"] },
    );
    this.#scope.defer(async () => {
      if (child.exitCode === null && child.signalCode === null) {
        const exited = new Promise((r) => child.once("exit", r));
        child.kill("SIGKILL");
        await exited;
      }
    });
    let stderr = "";
    child.stderr!.on("data", (b: Buffer) => (stderr += b.toString()));
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`loopback-pipe: not ready within 20 s: ${stderr}`)),
        20_000,
      );
      createInterface({ input: child.stdout! }).once("line", () => (clearTimeout(timer), resolve()));
      child.once(
        "exit",
        (code) => (clearTimeout(timer), reject(new Error(`loopback-pipe exited ${code}: ${stderr}`))),
      );
    });
  }

  /** Starts (or restarts) the agent of `node` and waits until it follows its NodeChains. */
  async startAgent(node: E2eNode): Promise<SluiceProcess> {
    if (node.agent?.running) throw new Error(`agent of ${node.name} is running already`);
    const logPath = join(this.#logDir, `agent-${node.name}.log`);
    const from = fileSize(logPath);
    // As the chart's DaemonSet runs it: inside its node's network namespace from the start (it
    // never calls setns, which would need CAP_SYS_ADMIN), with only CAP_BPF, CAP_PERFMON and
    // CAP_NET_ADMIN, and the node-bound ServiceAccount token.
    const agent = new SluiceProcess(
      `agent ${node.name}`,
      asChartAgent(
        sluiceArgv([
          "agent",
          "--node-name",
          node.name,
          "--kubeconfig",
          node.kubeconfig,
          "--bpffs-root",
          node.bpffsRoot,
          "--cache-dir",
          node.cacheDir,
          "--metrics-port",
          String(this.agentMetricsPort),
        ]),
        node.netns.path,
      ),
      logPath,
    );
    node.agent = agent;
    if (from === 0) this.#scope.defer(() => node.agent?.kill().then(() => undefined));
    await agent.waitForLog(/"msg":"agent started"/, 60_000, from);
    const caps = effectiveCaps(agent.child.pid!);
    if (caps !== CHART_AGENT_CAP_MASK) {
      throw new Error(
        `agent of ${node.name} runs with capabilities ${caps.toString(16)}, not the chart's ${CHART_AGENT_CAP_MASK.toString(16)}`,
      );
    }
    return agent;
  }

  /** SIGKILLs the agent of `node`: no goodbye, as when a node's agent crashes. */
  async killAgent(node: E2eNode): Promise<Exit> {
    return node.agent!.kill("SIGKILL");
  }

  /**
   * The operator's own directory, owned by its user as the chart's emptyDir volumes are (fsGroup):
   * its kubeconfig (the operator ServiceAccount's token), `data/` and a home for git.
   */
  async #prepareOperator(): Promise<void> {
    this.#operatorHome = await mkdtemp(join(tmpdir(), `${WORK_DIR_PREFIX}${process.pid}-operator-`));
    this.#scope.defer(() => rm(this.#operatorHome, { recursive: true, force: true }));
    await mkdir(join(this.#operatorHome, "data"));
    for (const dir of [this.#operatorHome, join(this.#operatorHome, "data")])
      await chown(dir, CHART_OPERATOR_UID, CHART_OPERATOR_UID);
    this.operatorKubeconfig = await writeServiceAccountKubeConfig(
      this.#operatorHome,
      "operator",
      this.namespace,
      this.identities.operatorServiceAccount,
      { owner: CHART_OPERATOR_UID },
    );
  }

  /** Starts (or restarts) the operator, on the same port and data directory every time. */
  async startOperator(): Promise<SluiceProcess> {
    if (this.operator?.running) throw new Error("the operator is running already");
    const logPath = join(this.#logDir, "operator.log");
    const first = this.operator === undefined;
    // As the chart's Deployment runs it: a non-root user without capabilities, with the
    // operator ServiceAccount's token.
    this.operator = new SluiceProcess(
      "operator",
      asChartOperator(
        sluiceArgv([
          "operator",
          "--kubeconfig",
          this.operatorKubeconfig,
          "--namespace",
          this.namespace,
          "--host",
          "127.0.0.1",
          "--port",
          String(this.operatorPort),
          "--data-dir",
          join(this.#operatorHome, "data"),
          "--agent-metrics-port",
          String(this.agentMetricsPort),
        ]),
      ),
      logPath,
      // git wants a writable home (the chart sets HOME=/tmp, an emptyDir).
      { HOME: this.#operatorHome },
    );
    if (first) this.#scope.defer(() => this.operator?.kill().then(() => undefined));
    const deadline = Date.now() + 60_000;
    for (;;) {
      const ok = await fetch(`http://127.0.0.1:${this.operatorPort}/readyz`, {
        signal: AbortSignal.timeout(2_000),
      })
        .then((r) => r.ok)
        .catch(() => false);
      if (ok) {
        const [uid] = processUids(this.operator.child.pid!);
        const caps = effectiveCaps(this.operator.child.pid!);
        if (uid !== CHART_OPERATOR_UID || caps !== 0n)
          throw new Error(`the operator runs as uid ${uid} with capabilities ${caps.toString(16)}`);
        return this.operator;
      }
      if (!this.operator.running || Date.now() > deadline) {
        throw new Error(`operator not ready on port ${this.operatorPort}:\n${await this.operator.logTail()}`);
      }
      await sleep(200);
    }
  }

  /**
   * Everything the testbed made goes: processes, flows, Node objects, namespaces, pins, files.
   * With `keepLogs` (a test failed) the process logs and the recorded histories stay, and their
   * directory is printed.
   */
  async stop(options: { keepLogs?: boolean } = {}): Promise<void> {
    for (const flow of this.#flows) flow.abort();
    this.nodeChains.stop();
    this.serviceChains.stop();
    this.gitSources.stop();
    try {
      await this.#scope.dispose();
    } finally {
      if (this.#logDir && options.keepLogs) {
        for (const [file, watch] of [
          ["nodechains.json", this.nodeChains],
          ["servicechains.json", this.serviceChains],
          ["gitsources.json", this.gitSources],
        ] as const) {
          await writeFile(join(this.#logDir, file), JSON.stringify(watch.events, null, 1)).catch(
            () => undefined,
          );
        }
        console.log(`e2e logs and histories kept in ${this.#logDir}`);
      } else if (this.#logDir) {
        await rm(this.#logDir, { recursive: true, force: true });
      }
    }
  }

  // ---- the Git repository ---------------------------------------------------------------------

  async #loadExample(): Promise<void> {
    const chain = parseYaml(readFileSync(join(EXAMPLE_DIR, "chain.yaml"), "utf8")) as Yaml;
    const spec = chain.spec as Yaml;
    // The testbed's nodes only: Node objects of other test files may still exist.
    spec.nodeSelector = { matchLabels: { "kubernetes.io/os": "linux", "sluice.dev/e2e": this.namespace } };
    spec.rollout = { ...(spec.rollout as Yaml), ...this.options.rollout };
    this.#chain = chain;
    this.#functions = parseAllDocuments(readFileSync(join(EXAMPLE_DIR, "functions.yaml"), "utf8")).map(
      (d) => d.toJS() as Yaml,
    );
  }

  #manifests(): Record<string, string> {
    const files: Record<string, string> = {
      "network/chain.yaml": toYaml(this.#chain),
      "network/functions.yaml": this.#functions.map((f) => toYaml(f)).join("---\n"),
    };
    for (const file of readdirSync(join(EXAMPLE_DIR, "nfs/ttl-guard"))) {
      files[`network/nfs/ttl-guard/${file}`] = readFileSync(join(EXAMPLE_DIR, "nfs/ttl-guard", file), "utf8");
    }
    return files;
  }

  /** The custom NF's C source as in the example repository. */
  static ttlGuardSource(): string {
    return readFileSync(join(EXAMPLE_DIR, "nfs/ttl-guard/ttl_guard.bpf.c"), "utf8");
  }

  /** The spec of NetworkFunction `name` in the repository, to change before {@link commit}. */
  functionSpec(name: string): Yaml {
    const nf = this.#functions.find((f) => (f.metadata as Yaml).name === name);
    if (!nf) throw new Error(`no NetworkFunction ${name} in the repository`);
    return nf.spec as Yaml;
  }

  /** The ServiceChain's spec in the repository, to change before {@link commit}. */
  chainSpec(): Yaml {
    return this.#chain.spec as Yaml;
  }

  /**
   * Commits the manifests as changed through {@link functionSpec} / {@link chainSpec}, plus
   * `extra` files, and delivers the push webhook. Returns the commit and when the push was done.
   */
  async commit(
    message: string,
    extra: Record<string, string | null> = {},
  ): Promise<{ sha: string; pushedAt: number }> {
    const sha = await this.repo.commit({ ...this.#manifests(), ...extra }, message);
    // The clock starts when the push is done: that is when a Git host sends its webhook.
    const pushedAt = Date.now();
    await this.sendWebhook(sha);
    return { sha, pushedAt };
  }

  /** POSTs a GitHub-style push event signed with the webhook token. */
  async sendWebhook(sha: string): Promise<void> {
    const body = JSON.stringify({
      ref: "refs/heads/main",
      after: sha,
      repository: { clone_url: this.repoUrl },
    });
    const signature = `sha256=${createHmac("sha256", WEBHOOK_TOKEN).update(body).digest("hex")}`;
    const res = await fetch(`http://127.0.0.1:${this.operatorPort}${this.webhookPath}`, {
      method: "POST",
      headers: {
        "content-type": "application/json",
        "x-github-event": "push",
        "x-hub-signature-256": signature,
      },
      body,
      signal: AbortSignal.timeout(10_000),
    });
    if (res.status !== 200) throw new Error(`webhook: HTTP ${res.status}: ${await res.text()}`);
  }

  // ---- waiting --------------------------------------------------------------------------------

  /** Waits until the GitSource applied commit `sha`. */
  waitForApplied(sha: string, timeoutMs = 30_000): Promise<GitSourceView> {
    return this.gitSources.waitFor(
      `applied at ${sha.slice(0, 8)}`,
      (all) => {
        const gs = all.get(CHAIN);
        return (
          gs?.status?.lastAppliedRevision === `main@sha1:${sha}` &&
          conditionOf(gs, "Ready")?.status === "True" &&
          gs
        );
      },
      timeoutMs,
    );
  }

  /**
   * Commits a change of the chain's rollout settings only and waits until the ServiceChain has
   * observed it (`observed` checks its spec). Rollout settings are nothing a node runs, so no
   * NodeChain may move: returns the revision, the same as before the commit.
   */
  async commitRolloutSettings(
    message: string,
    observed: (rollout: RolloutView | undefined) => boolean,
  ): Promise<string> {
    const before = await this.waitForRollout();
    const nodeChainEvents = this.nodeChains.events.length;
    const { sha } = await this.commit(message);
    await this.waitForApplied(sha, 60_000);
    await this.serviceChains.waitFor(
      "observed the new rollout settings",
      (all) => {
        const sc = all.get(CHAIN);
        return sc?.status?.observedGeneration === sc?.metadata.generation && observed(sc?.spec?.rollout);
      },
      60_000,
    );
    const after = await this.waitForRollout(before, 60_000);
    const moved = this.nodeChains.events
      .slice(nodeChainEvents)
      .filter((e) => e.object.spec.revision !== before)
      .map((e) => `${e.object.metadata.name}: ${e.object.spec.revision}`);
    if (moved.length > 0) throw new Error(`a rollout-settings commit moved NodeChains: ${moved.join(", ")}`);
    return after;
  }

  /**
   * Waits until commit `sha` is applied and the chain has a plan made from it, and returns that
   * plan's revision. A plan names the artifact its custom function is built from, so the plan
   * of a commit is the one whose NodeChains carry that commit's artifact digest (every commit
   * changes the artifact, and an unchanged tree gives the same digest and the same plan).
   */
  async waitForPlan(sha: string, timeoutMs = 60_000): Promise<string> {
    const gs = await this.waitForApplied(sha, timeoutMs);
    const digest = gs.status!.artifact!.digest;
    return this.nodeChains.waitFor(
      `planned from commit ${sha.slice(0, 8)} (artifact ${digest})`,
      () => {
        for (const e of this.nodeChains.events) {
          if (e.object.spec.functions?.some((f) => f.source?.artifact?.digest === digest))
            return e.object.spec.revision;
        }
        return undefined;
      },
      timeoutMs,
    );
  }

  /**
   * Waits until revision `revision` (default: whatever is planned) is Ready on every node: the
   * ServiceChain says Ready=True for it and every NodeChain reports it live and Ready.
   */
  async waitForRollout(revision?: string, timeoutMs = 120_000): Promise<string> {
    const sc = await this.serviceChains.waitFor(
      `Ready on ${revision ?? "its revision"}`,
      (all) => {
        const s = all.get(CHAIN);
        const failed = s?.status?.failedRevision;
        if (failed && failed === s.status?.revision && (revision === undefined || revision === failed)) {
          // Halted: it will not become Ready by waiting.
          throw new Error(
            `rollout of ${failed} halted: ${conditionOf(s, "Degraded")?.message ?? "(no message)"}`,
          );
        }
        return (
          s?.status?.revision !== undefined &&
          (revision === undefined || s.status.revision === revision) &&
          s.status.observedGeneration === s.metadata.generation &&
          conditionOf(s, "Ready")?.status === "True" &&
          s
        );
      },
      timeoutMs,
    );
    const rev = sc.status!.revision!;
    await this.nodeChains.waitFor(
      `live and Ready on ${rev} on every node`,
      (all) => {
        const states = [...all.values()].map(nodeState);
        return states.length === this.nodes.length && states.every((s) => settled(s) && s.wanted === rev);
      },
      timeoutMs,
    );
    return rev;
  }

  // ---- traffic and counters -------------------------------------------------------------------

  /** Starts a UDP flow from `node`'s client to the node, `rate` packets per second. */
  async startFlow(node: E2eNode, rate = 1_000): Promise<RunningFlow> {
    const magic = randomInt(1, 0x7fffffff).toString(16);
    const receiver = spawnInNetns(node.netns, ["recv", node.ip, magic]);
    let sender: LineProcess | undefined;
    const abort = () => {
      for (const p of [receiver, sender])
        if (p && p.child.exitCode === null && p.child.signalCode === null) p.child.kill("SIGKILL");
    };
    let flow: RunningFlow;
    try {
      const { port } = await receiver.next<{ port: number }>("ready line", 20_000);
      sender = spawnInNetns(node.client, ["send", node.ip, port, rate, magic]);
      const { sport } = await sender.next<{ sport: number }>("start line", 20_000);
      const s = sender;
      flow = {
        node: node.name,
        src: node.clientIp,
        dst: node.ip,
        sport,
        dport: port,
        abort,
        stop: async () => {
          try {
            s.child.stdin!.write("stop\n");
            const sent = await s.next<{ sent: number; failed: number; durationMs: number }>(
              "sender result",
              20_000,
            );
            // Packets still on their way (a loaded machine may hold some for a while).
            await sleep(500);
            receiver.child.stdin!.write("stop\n");
            const got = await receiver.next<{
              received: number;
              socketDrops: number;
              missingSample: number[];
            }>("receiver result", 20_000);
            return {
              node: node.name,
              sent: sent.sent,
              received: got.received,
              lost: sent.sent - got.received,
              sendFailures: sent.failed,
              receiverDrops: got.socketDrops,
              missingSample: got.missingSample,
              durationMs: sent.durationMs,
            };
          } finally {
            abort();
            this.#flows.delete(flow);
          }
        },
      };
    } catch (err) {
      abort();
      throw err;
    }
    this.#flows.add(flow);
    return flow;
  }

  /** One flow through every node. */
  startFlows(rate = 1_000): Promise<RunningFlow[]> {
    return Promise.all(this.nodes.map((n) => this.startFlow(n, rate)));
  }

  /** Pin directory of the chain on `node`, named as the agent names it. */
  chainPinDir(node: E2eNode): string {
    const nodeChain = {
      apiVersion: "sluice.dev/v1alpha1",
      kind: "NodeChain",
      metadata: { name: `${CHAIN}.${node.name}`, namespace: this.namespace },
      spec: { chain: CHAIN },
    };
    return join(node.bpffsRoot, pinName(nodeChain));
  }

  /**
   * flowmon's record of `flow` on its node, read from the chain's pinned `flowmon_flows` map:
   * the map the live revision uses, whichever process pinned it.
   */
  flowmonRecord(flow: RunningFlow): FlowRecord | undefined {
    const node = this.nodes.find((n) => n.name === flow.node)!;
    const map = BpfMap.fromPin(join(this.chainPinDir(node), "maps/flowmon/flowmon_flows"), "flowmon_flows");
    try {
      for (const [key, value] of map.entries()) {
        const record = decodeFlowEntry(key, value);
        if (
          record.src === flow.src &&
          record.dst === flow.dst &&
          record.sport === flow.sport &&
          record.dport === flow.dport &&
          record.proto === 17
        )
          return record;
      }
      return undefined;
    } finally {
      map.close();
    }
  }

  /** The node by index. */
  node(index: number): E2eNode {
    return this.nodes[index]!;
  }
}

/**
 * Removes work directories (caches, operator data, the Git repository) of test processes that
 * died without cleaning up, as a SIGKILLed run does; those of live processes are left alone.
 */
async function sweepStaleWorkDirs(): Promise<void> {
  for (const entry of readdirSync(tmpdir())) {
    const pid = Number(new RegExp(`^${WORK_DIR_PREFIX}(\\d+)-`).exec(entry)?.[1]);
    if (!Number.isInteger(pid) || pid <= 0 || processAlive(pid)) continue;
    await rm(join(tmpdir(), entry), { recursive: true, force: true });
  }
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** Length of a log file in characters (where {@link SluiceProcess.waitForLog} starts reading). */
function fileSize(path: string): number {
  try {
    return readFileSync(path, "utf8").length;
  } catch {
    return 0;
  }
}

/** Median of a list of numbers. */
export function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}
