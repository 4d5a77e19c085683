import { accessSync, constants, existsSync, statSync, statfsSync } from "node:fs";
import { randomBytes } from "node:crypto";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { hostname } from "node:os";
import { setTimeout as sleep } from "node:timers/promises";
import { delimiter, dirname, join, resolve } from "node:path";
import koffi from "koffi";
import { API_VERSION, ConditionType, findCondition, GitSource, NODE_LABEL } from "../common/api/index.ts";
import { ArtifactStore } from "../common/artifact/index.ts";
import type { Logger } from "../common/log.ts";
import { MemoryStore } from "../common/store.ts";
import { NodeAgent, pinName, type DataPlane } from "../node-agent/src/agent/agent.ts";
import { AgentCounters, agentRegistry } from "../node-agent/src/agent/metrics.ts";
import { BpfStatsSession } from "../node-agent/src/agent/kstats.ts";
import { metricsHandler } from "../common/metrics.ts";
import { gitCommitInfo, LiveView, type CommitInfo } from "../common/liveview/index.ts";
import { agentLiveReader } from "../node-agent/src/agent/liveview.ts";
import {
  ChainManager,
  DEFAULT_BPFFS_ROOT,
  type ApplyResult,
  type ChainStatus,
} from "../node-agent/src/chain/index.ts";
import { netnsPath } from "../node-agent/src/netns/index.ts";
import { startControlPlane, type ControlPlane } from "../operator/src/controlplane.ts";
import { UsageError } from "./cli.ts";
import { SourceServer } from "../operator/src/server/index.ts";

/** What `sluice run` is asked to follow and where it keeps its state. */
export interface SingleHostOptions {
  /** Git URL, or a directory holding a Git repository. */
  source: string;
  ref?: { branch?: string; tag?: string; semver?: string; commit?: string };
  path?: string;
  interval?: string;
  /**
   * Name of the GitSource this host follows (default `local`): NetworkFunctions whose C source
   * lives in the repository name it in `source.sourceRef`.
   */
  name?: string;
  /** Status endpoint port on 127.0.0.1 (0 picks one). */
  port: number;
  dataDir: string;
  bpffsRoot?: string;
  /** Network namespace of the interfaces (the demo puts its "node" in one). */
  netns?: string;
  /** Token for push webhooks on the status endpoint. */
  webhookToken?: string;
  /** Per-function time of 1 in this many packets (`--time-functions`); 0 or absent: off. */
  timeSample?: number;
  /** Keep the revision a switch replaced loaded (`--keep-standby-revision`); absent: on. */
  keepStandby?: boolean;
  log: Logger;
}

/** A running single-host sluice. */
export interface SingleHost {
  url: string;
  port: number;
  store: MemoryStore;
  agent: NodeAgent;
  manager: ChainManager;
  controlPlane: ControlPlane;
  /** The node name this host runs as. */
  nodeName: string;
  /** What `sluice status` shows: chains with counters and rates, and the GitOps objects' status. */
  status(): Promise<SingleHostStatus>;
  /** Stops following Git; chains stay pinned and forwarding. */
  stop(): Promise<void>;
}

/** Counters of one NF, with rates over the last second or so. */
export interface NfStatusDoc {
  name: string;
  /** Decimal strings: the kernel's 64-bit counters do not fit a JSON number. */
  packets: string;
  bytes: string;
  drops: string;
  passes: string;
  errors: string;
  /** Per second, over `rateWindowMs`; absent until two samples exist. */
  packetsPerSecond?: number;
  dropsPerSecond?: number;
  bytesPerSecond?: number;
}

/** The last time the data plane converged a chain. */
export interface LastApplyDoc {
  action: ApplyResult["action"];
  revision: string;
  at: string;
  totalMs: number;
  loadMs: number;
  selfTestMs: number;
  /** The atomic switch itself (one prog-array slot). */
  flipUs: number;
  /** `<nf>/<map>` whose state carried over. */
  carriedMaps: string[];
  /** `<nf>/<map>` that started empty, with why. */
  recreatedMaps: Array<{ map: string; reason: string }>;
}

/** The status document served at GET /status. */
export interface SingleHostStatus {
  node: string;
  /**
   * `Syncing`: Git has not been read yet, and chains pinned by an earlier run are left exactly as
   * they are; `Running`: the agent follows what Git says.
   */
  phase: "Syncing" | "Running";
  source: {
    name: string;
    url: string;
    revision?: string;
    ready?: string;
    message?: string;
    /** Path on this endpoint that takes push webhooks signed with `--webhook-token`. */
    webhookPath?: string;
  };
  /** Every ServiceChain from Git, also those that never reached the data plane. */
  serviceChains: Array<{
    name: string;
    revision?: string;
    ready?: string;
    reason?: string;
    message?: string;
  }>;
  /** Chains running in the kernel of this host. */
  chains: Array<{
    name: string;
    revision: string;
    hook: string;
    interfaces: Array<{ name: string; xdpMode?: string }>;
    ready?: string;
    message?: string;
    lastApply?: LastApplyDoc;
    /** Window the rates were measured over. */
    rateWindowMs?: number;
    nfs: NfStatusDoc[];
  }>;
  time: string;
}

/** The salt in `file`, made (16 random bytes, hex) on first use. */
async function keptWebhookSalt(file: string): Promise<string> {
  const kept = await readFile(file, "utf8").catch(() => "");
  if (/^[0-9a-f]{32}$/.test(kept.trim())) return kept.trim();
  const salt = randomBytes(16).toString("hex");
  await writeFile(file, `${salt}\n`, { mode: 0o600 });
  return salt;
}

/** This host lacks something `sluice run` needs; the message names each missing piece. */
export class HostNotReadyError extends Error {
  override name = "HostNotReadyError";
  constructor(readonly missing: string[]) {
    super(`this host lacks:\n  - ${missing.join("\n  - ")}`);
  }
}

/** The name of this host as a Kubernetes node name (DNS-1123 subdomain). */
export function localNodeName(): string {
  const name = hostname()
    .toLowerCase()
    .replace(/[^a-z0-9.-]/g, "-")
    .replace(/^[^a-z0-9]+|[^a-z0-9]+$/g, "");
  return name.slice(0, 253) || "localhost";
}

/**
 * Turns a `--source` into a Git URL: URLs pass through; a directory must hold a Git repository
 * (its working tree is not read: commits are what sluice follows, as in a cluster).
 */
export function sourceUrl(source: string): string {
  if (/^(https?|ssh|git|file):\/\//.test(source)) return source;
  const dir = resolve(source);
  if (!existsSync(dir) || !statSync(dir).isDirectory()) {
    throw new UsageError(`--source ${source}: neither a Git URL nor a directory`);
  }
  if (!existsSync(join(dir, ".git")) && !existsSync(join(dir, "HEAD"))) {
    throw new UsageError(
      `--source ${source}: ${dir} is not a Git repository (sluice follows commits; run git init and commit first)`,
    );
  }
  return `file://${dir}`;
}

const BPF_FS_MAGIC = 0xcafe4a11;

/**
 * What this host lacks to run chains (root, bpffs under the pin root, clang, libbpf, the
 * namespace): checked up front so that a user reads one list instead of a failed first load.
 */
export function missingForSingleHost(options: { bpffsRoot?: string; netns?: string }): string[] {
  const missing: string[] = [];
  if (process.getuid?.() !== 0) missing.push("root privileges (sluice run loads BPF programs)");
  let dir = options.bpffsRoot ?? DEFAULT_BPFFS_ROOT;
  while (!existsSync(dir) && dirname(dir) !== dir) dir = dirname(dir);
  let bpffs = false;
  try {
    bpffs = statfsSync(dir).type === BPF_FS_MAGIC;
  } catch {
    bpffs = false;
  }
  if (!bpffs) missing.push(`bpffs at ${dir} (mount -t bpf bpf /sys/fs/bpf)`);
  const onPath = (binary: string) =>
    (process.env.PATH ?? "").split(delimiter).some((d) => {
      try {
        accessSync(join(d, binary), constants.X_OK);
        return true;
      } catch {
        return false;
      }
    });
  if (!onPath("clang")) missing.push("clang on PATH (Debian package clang)");
  try {
    koffi.load("libbpf.so.1");
  } catch {
    missing.push("libbpf.so.1 (Debian package libbpf1)");
  }
  if (options.netns && !existsSync(netnsPath(options.netns)))
    missing.push(`network namespace ${options.netns} (${netnsPath(options.netns)})`);
  return missing;
}

/**
 * Runs the whole pipeline on one host without Kubernetes: the same GitSource and ServiceChain
 * controllers and the same node agent as in a cluster, with a memory store between them and
 * this host as the only node. Throws {@link HostNotReadyError} when the host cannot run chains.
 */
export async function startSingleHost(options: SingleHostOptions): Promise<SingleHost> {
  const { log } = options;
  const missing = missingForSingleHost(options);
  if (missing.length > 0) throw new HostNotReadyError(missing);
  const sourceName = options.name ?? "local";
  const nodeName = localNodeName();
  const gitSourceInput = {
    apiVersion: API_VERSION,
    kind: "GitSource",
    metadata: { name: sourceName, namespace: "default" },
    spec: {
      url: sourceUrl(options.source),
      ref: options.ref && Object.keys(options.ref).length ? options.ref : { branch: "main" },
      path: options.path ?? ".",
      interval: options.interval ?? "10s",
      ...(options.webhookToken ? { webhookSecretRef: { name: "local-webhook" } } : {}),
    },
  };
  const checked = GitSource.safeParse(gitSourceInput);
  if (!checked.success) {
    const issue = checked.error.issues[0]!;
    const field = issue.path[0] === "metadata" ? "name" : String(issue.path[1] ?? "source");
    throw new UsageError(`--${field}: ${issue.message}`);
  }
  const gitSource = checked.data;

  const store = new MemoryStore();
  await mkdir(options.dataDir, { recursive: true });
  const cacheDir = join(options.dataDir, "cache");
  await mkdir(cacheDir, { recursive: true });
  const artifacts = new ArtifactStore(join(options.dataDir, "artifacts"));
  const server = new SourceServer({ store: artifacts, logger: log });
  const listening = await server.listen(options.port, "127.0.0.1");
  const url = `http://127.0.0.1:${listening.port}`;

  const agentLog = log.child({ component: "agent", node: nodeName });
  const manager = new ChainManager({
    root: options.bpffsRoot,
    netns: options.netns,
    cacheDir,
    logger: agentLog,
    ...(options.timeSample ? { timeSample: options.timeSample } : {}),
    ...(options.keepStandby !== undefined ? { keepStandby: options.keepStandby } : {}),
  });
  // The agent's data plane is the chain manager; what it last did per chain is kept for status.
  const lastApply = new Map<string, LastApplyDoc>();
  const dataPlane: DataPlane = {
    apply: async (spec) => {
      const result = await manager.apply(spec);
      agentCounters.recordApply(result);
      if (result.action === "created" || result.action === "switched") {
        const liveAt = Date.now();
        void commitOf(result.revision).then((commit) => {
          if (commit?.timeMs)
            agentCounters.commitToLive.observe({ chain: result.chain }, (liveAt - commit.timeMs) / 1000);
        });
      }
      lastApply.set(result.chain, {
        action: result.action,
        revision: result.revision,
        at: new Date().toISOString(),
        totalMs: Math.round(result.timings.totalMs),
        loadMs: Math.round(result.timings.loadMs),
        selfTestMs: Math.round(result.timings.selfTestMs),
        flipUs: Math.round(result.timings.flipUs),
        carriedMaps: result.carriedMaps.map((m) => `${m.nf}/${m.map}`),
        recreatedMaps: result.recreatedMaps.map((m) => ({ map: `${m.nf}/${m.map}`, reason: m.reason })),
      });
      return result;
    },
    adopt: () => manager.adopt(),
    remove: async (name) => {
      lastApply.delete(name);
      await manager.remove(name);
    },
  };
  const agentCounters = new AgentCounters();
  // The commit behind a chain revision (a digest of the plan): the one the GitSource had applied
  // when the revision was first seen, read from the GitSource's clone.
  const gitWorkDir = join(options.dataDir, "git", "default", sourceName);
  const commits = new Map<string, Promise<CommitInfo | undefined>>();
  const commitOf = (chainRevision: string): Promise<CommitInfo | undefined> => {
    let commit = commits.get(chainRevision);
    if (!commit) {
      commit = store
        .get("GitSource", "default", sourceName)
        .then((source) => source?.status?.lastAppliedRevision)
        .then((revision) => (revision ? gitCommitInfo(gitWorkDir, revision) : undefined))
        .catch(() => undefined);
      commits.set(chainRevision, commit);
    }
    return commit;
  };
  const agent = new NodeAgent({
    nodeName,
    store,
    dataPlane,
    cacheDir,
    netns: options.netns,
    log: agentLog,
    onSwitch: agentCounters.record,
  });

  const controlPlane = startControlPlane({
    store,
    artifacts,
    server,
    advertiseUrl: url,
    dataDir: options.dataDir,
    // One host, one user: a local directory is the usual source, and there are no tenants.
    policy: { allowFileSources: true, allowCrossNamespace: true },
    // Status lives in memory here: the salt is kept on disk so the hook path survives restarts.
    newWebhookSalt: () => keptWebhookSalt(join(options.dataDir, "webhook-salt")),
    readSecret: async (_namespace, name) =>
      name === "local-webhook" && options.webhookToken ? { token: options.webhookToken } : undefined,
    event: (obj, type, reason, message) => {
      const l = log.child({ kind: obj.kind, name: obj.metadata.name });
      if (type === "Warning") l.warn({ reason }, message);
      else l.info({ reason }, message);
    },
    log,
  });
  try {
    await store.apply({
      apiVersion: "v1",
      kind: "Node",
      metadata: {
        name: nodeName,
        labels: {
          "kubernetes.io/hostname": nodeName,
          "kubernetes.io/os": "linux",
          "sluice.dev/single-host": "true",
        },
      },
    });
    await store.apply(gitSource);
  } catch (err) {
    await controlPlane.stop();
    manager.close();
    await server.close();
    throw err;
  }
  // The memory store starts empty: an agent started now would find no NodeChain for the chains
  // an earlier run pinned and remove them (traffic unfiltered, counters gone) until Git is read.
  // So the agent takes over only once the store holds what Git wants.
  let phase: SingleHostStatus["phase"] = "Syncing";
  let stopping = false;
  const agentStarted = (async () => {
    while (!stopping && !(await firstSyncDone(store, sourceName))) await sleep(100);
    if (stopping) return;
    await agent.start();
    phase = "Running";
  })();
  agentStarted.catch((err: unknown) => log.error({ err }, "agent did not start"));

  const rates = new RateSampler(() => manager.list());
  const host: SingleHost = {
    url,
    port: listening.port,
    store,
    agent,
    manager,
    controlPlane,
    nodeName,
    status: async () =>
      singleHostStatus({
        store,
        nodeName,
        phase,
        source: gitSource,
        chains: manager.list(),
        lastApply,
        rates,
      }),
    async stop() {
      stopping = true;
      rates.stop();
      liveView.stop();
      bpfStats.close();
      await controlPlane.stop();
      await agentStarted.catch(() => undefined);
      await agent.stop();
      manager.close();
      await server.close();
    },
  };
  server.route("GET", "/status", async (_req, res) => {
    const body = JSON.stringify(await host.status());
    res.writeHead(200, { "content-type": "application/json" });
    res.end(body);
  });
  const bpfStats = new BpfStatsSession();
  const agentMetrics = agentRegistry({
    list: () => manager.list(),
    counters: agentCounters,
    node: nodeName,
    kernel: { root: options.bpffsRoot ?? DEFAULT_BPFFS_ROOT, stats: bpfStats },
    processMetrics: true,
  });
  server.route("GET", "/metrics", metricsHandler(agentMetrics));
  // The live view at / : graphs of every chain, markers where revisions changed.
  const liveView = new LiveView({
    title: nodeName,
    read: agentLiveReader({
      node: nodeName,
      list: () => manager.list(),
      store,
      bpffsRoot: options.bpffsRoot ?? DEFAULT_BPFFS_ROOT,
      stats: bpfStats,
      mark: (marker) => liveView.history.mark(marker),
      commitOf,
      lastSwitch: (chain) => lastApply.get(chain)?.at,
    }),
    log,
  });
  try {
    for (const [path, handler] of liveView.routes()) server.route("GET", path, handler);
    liveView.start();
  } catch (err) {
    // Chains matter more than their graphs: without the page's files, sluice runs without it.
    log.warn({ err }, "live view not served");
  }
  log.info({ url, node: nodeName, selector: `${NODE_LABEL}=${nodeName}` }, "single-host sluice running");
  return host;
}

/**
 * Git has been read and planned: the GitSource applied a revision and every ServiceChain came to
 * a verdict at its generation (so the NodeChains it wants exist, or it says why not). A chain
 * whose reconcile only waited (its GitSource still applying, an artifact not yet readable) has
 * its status written at that generation too, but no Ready condition for it: the agent must not
 * start then, or it would remove the chains it adopted before their NodeChains exist.
 */
async function firstSyncDone(store: MemoryStore, sourceName: string): Promise<boolean> {
  const source = await store.get("GitSource", "default", sourceName);
  if (findCondition(source?.status.conditions, ConditionType.Ready)?.status !== "True") return false;
  const chains = await store.list("ServiceChain");
  return chains.every((sc) => {
    const generation = sc.metadata.generation;
    const ready = findCondition(sc.status.conditions, ConditionType.Ready);
    return sc.status.observedGeneration === generation && ready?.observedGeneration === generation;
  });
}

interface CounterSample {
  atMs: number;
  /** `<chain>/<nf>` -> packets, drops, bytes. */
  counters: Map<string, [bigint, bigint, bigint]>;
}

/**
 * Keeps the counters of a recent moment so that a status request can answer with rates at
 * once: one sample a second, the two newest kept. Reading the counters is a map lookup per
 * CPU, cheap enough to do all the time.
 */
class RateSampler {
  readonly #samples: CounterSample[] = [];
  readonly #timer: NodeJS.Timeout;

  constructor(private readonly read: () => ChainStatus[]) {
    this.#timer = setInterval(() => this.#take(), 1000);
    this.#timer.unref();
    this.#take();
  }

  #take(): void {
    try {
      this.#samples.push(sampleOf(this.read(), Date.now()));
      if (this.#samples.length > 2) this.#samples.shift();
    } catch {
      // A chain being switched or removed right now: the next tick samples again.
    }
  }

  /** The newest sample at least half a second older than `nowMs`. */
  reference(nowMs: number): CounterSample | undefined {
    return [...this.#samples].reverse().find((s) => nowMs - s.atMs >= 500);
  }

  stop(): void {
    clearInterval(this.#timer);
  }
}

function sampleOf(chains: ChainStatus[], atMs: number): CounterSample {
  const counters = new Map<string, [bigint, bigint, bigint]>();
  for (const c of chains)
    for (const nf of c.nfs)
      counters.set(`${c.name}/${nf.name}`, [nf.counters.packets, nf.counters.drops, nf.counters.bytes]);
  return { atMs, counters };
}

/** Per second from two readings; a counter that went backwards (a chain made anew) has no rate. */
function perSecond(now: bigint, before: bigint | undefined, windowMs: number): number | undefined {
  if (before === undefined || now < before) return undefined;
  return Math.round((Number(now - before) * 1000) / windowMs);
}

async function singleHostStatus(input: {
  store: MemoryStore;
  nodeName: string;
  phase: SingleHostStatus["phase"];
  source: GitSource;
  chains: ChainStatus[];
  lastApply: ReadonlyMap<string, LastApplyDoc>;
  rates: RateSampler;
}): Promise<SingleHostStatus> {
  const { store, chains } = input;
  const nowMs = Date.now();
  const reference = input.rates.reference(nowMs);
  const windowMs = reference ? nowMs - reference.atMs : undefined;
  const source = await store.get("GitSource", "default", input.source.metadata.name);
  const sourceStatus = source?.status;
  const sourceReady = findCondition(sourceStatus?.conditions, ConditionType.Ready);
  const nodeChains = await store.list("NodeChain");
  const serviceChains = (await store.list("ServiceChain")).map((sc) => {
    const ready = findCondition(sc.status.conditions, ConditionType.Ready);
    return {
      name: `${sc.metadata.namespace ?? "default"}/${sc.metadata.name}`,
      revision: sc.status.revision,
      ready: ready?.status,
      reason: ready?.reason,
      message: ready?.message,
    };
  });
  return {
    node: input.nodeName,
    phase: input.phase,
    source: {
      name: input.source.metadata.name,
      url: input.source.spec.url,
      revision: sourceStatus?.artifact?.revision,
      ready: sourceReady?.status,
      message: sourceReady?.message,
      ...(sourceStatus?.webhookPath ? { webhookPath: sourceStatus.webhookPath } : {}),
    },
    serviceChains,
    chains: chains.map((c) => {
      const nodeChain = nodeChains.find((o) => pinName(o) === c.name);
      const ready = findCondition(nodeChain?.status.conditions, ConditionType.Ready);
      const last = input.lastApply.get(c.name);
      return {
        name: c.name,
        revision: c.revision,
        hook: c.hook,
        interfaces: c.interfaces.map((i) => ({ name: i.name, ...(i.xdpMode ? { xdpMode: i.xdpMode } : {}) })),
        ready: ready?.status,
        message: ready?.message,
        ...(last ? { lastApply: last } : {}),
        ...(windowMs !== undefined ? { rateWindowMs: windowMs } : {}),
        nfs: c.nfs.map((nf): NfStatusDoc => {
          const before = reference?.counters.get(`${c.name}/${nf.name}`);
          const doc: NfStatusDoc = {
            name: nf.name,
            packets: String(nf.counters.packets),
            bytes: String(nf.counters.bytes),
            drops: String(nf.counters.drops),
            passes: String(nf.counters.passes),
            errors: String(nf.counters.errors),
          };
          if (windowMs !== undefined && before) {
            doc.packetsPerSecond = perSecond(nf.counters.packets, before[0], windowMs);
            doc.dropsPerSecond = perSecond(nf.counters.drops, before[1], windowMs);
            doc.bytesPerSecond = perSecond(nf.counters.bytes, before[2], windowMs);
          }
          return doc;
        }),
      };
    }),
    time: new Date(nowMs).toISOString(),
  };
}
