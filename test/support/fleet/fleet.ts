/**
 * A fleet of simulated nodes on a real kube-apiserver + etcd, driven by one real operator:
 *
 * - a throwaway API server and etcd of their own (the cluster tests' start-up), so that the API
 *   server's own metrics count only this fleet's requests;
 * - N Nodes kept alive by kwok (Ready condition, node leases renewed);
 * - the chart's ServiceAccounts and RBAC (helm template), the operator as the compiled
 *   `bin/sluice.mjs operator` with leader election, its own TokenRequest token, as the chart's
 *   non-root user;
 * - N simulated agents (the real `NodeAgent`, each with a token bound to its Node) in a few
 *   worker processes, each on a recording, simulated data plane (`simulated-agents.ts`);
 * - a Git repository served by `git daemon` with one ServiceChain over every node.
 *
 * Used by `npm run bench:scale` and by the cluster test `test/cluster/scale.test.ts`.
 */
import { execFile, fork, spawn, type ChildProcess } from "node:child_process";
import { chmod, chown, mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { CoreV1Api, CustomObjectsApi, KubeConfig, type V1Node } from "@kubernetes/client-node";
import parsePrometheusTextFormat from "parse-prometheus-text-format";
import { parseAllDocuments } from "yaml";
import { z } from "zod";
import type { NodeChain } from "../../../common/api/index.ts";
import { KubeClient } from "../../../common/kube/client.ts";
import { KubeStore } from "../../../common/kube/store.ts";
import { rootLogger } from "../../../common/log.ts";
import clusterSetup from "../../cluster/global-setup.ts";
import { createTestRepo, startGitDaemon, type GitServer, type TestRepo } from "../git-servers.ts";
import { asChartOperator, CHART_OPERATOR_UID, repoRoot, SLUICE_BIN } from "../sluice.ts";
import {
  rssOf,
  type RecordedSwitch,
  type SimulatedAgentSpec,
  type WorkerReply,
  type WorkerRequest,
} from "./simulated-agents.ts";

const execFileAsync = promisify(execFile);
const workerModule = fileURLToPath(new URL("./simulated-agents-worker.ts", import.meta.url));

/** The namespace of the fleet's release, GitSource and chain. */
export const FLEET_NAMESPACE = "fleet";
/** Label of the fleet's Nodes: kwok manages them, the chain selects them. */
export const FLEET_LABEL = "sluice.dev/fleet";
const RELEASE = "fleet";
const CHAIN = "edge";
const SOURCE = "net";

/** How to build the fleet. */
export interface FleetOptions {
  nodes: number;
  /** Worker processes the simulated agents share (default: one per 250 agents, at least 2). */
  workers?: number;
  /** Time one simulated switch takes. */
  switchMs: number;
  /** Rollout settings of the first commit. */
  maxUnavailable: string;
  /** Progress lines (the bench prints them; the test does not). */
  say?: (line: string) => void;
  /** Write a V8 CPU profile of the operator into this directory when it stops (`--cpu-prof`). */
  operatorProfileDir?: string;
}

/** Requests and latency as the API server's own metrics count them between two scrapes. */
export interface ApiWindow {
  /** Mutating requests (POST, PUT, PATCH, APPLY, DELETE) by `resource[/subresource]`. */
  writes: Record<string, number>;
  /** Mutating requests by the operator's resources (everything but NodeChain status). */
  operatorWrites: number;
  /** Mutating requests by the agents (NodeChain status). */
  agentWrites: number;
  /** 99th percentile of mutating requests' duration (bucket upper bound), ms. */
  p99Ms: number;
  /** Mutating requests counted in that histogram. */
  mutating: number;
}

/** One NodeChain as seen by the fleet's watch, at the time of the event. */
interface NodeChainSeen {
  revision: string;
  generation: number;
  statusRevision?: string;
  phase?: string;
  observedGeneration?: number;
}

/** The greatest number of nodes unavailable at once, from the NodeChain watch. */
export interface UnavailabilityTrace {
  max: number;
  /** When (epoch ms) the maximum was seen, and which nodes. */
  at: number;
  nodes: string[];
}

const sleep = (ms: number) => new Promise((ok) => setTimeout(ok, ms));

/** `sluice <args>` as the images start it: `node bin/sluice.mjs <args>`, Node's flags from NODE_OPTIONS. */
function imageArgv(args: readonly string[]): string[] {
  return [process.execPath, SLUICE_BIN, ...args];
}

/**
 * The chart's NODE_OPTIONS, followed by any the fleet itself was started with (a heap snapshot
 * signal or a profile for a diagnosis: `NODE_OPTIONS=... npm run bench:scale`); without those,
 * exactly the chart's.
 */
function withOwnNodeOptions(chart: string): string {
  return [chart, process.env.NODE_OPTIONS ?? ""].join(" ").trim();
}

/** What the fleet reads of a rendered Deployment or DaemonSet: its first container's env. */
const ChartWorkload = z.object({
  kind: z.string(),
  spec: z.object({
    template: z.object({
      spec: z.object({
        containers: z.array(
          z.object({ env: z.array(z.object({ name: z.string(), value: z.string().optional() })).optional() }),
        ),
      }),
    }),
  }),
});

/** A running fleet; {@link Fleet.stop} takes everything down. */
export class Fleet {
  private readonly cleanups: (() => Promise<void> | void)[] = [];
  private readonly workers: ChildProcess[] = [];
  private readonly replies = new Map<ChildProcess, ((reply: WorkerReply) => void)[]>();
  private operator: ChildProcess | undefined;
  private operatorPeakMb = 0;
  private operatorSampler: NodeJS.Timeout | undefined;
  private repo!: TestRepo;
  private git!: GitServer;
  private admin!: KubeConfig;
  private custom!: CustomObjectsApi;
  private core!: CoreV1Api;
  private server = "";
  private adminToken = "";
  private caPem = "";
  private binDir = "";
  private adminKubeconfig = "";
  /** NODE_OPTIONS of the chart's operator and agent containers (empty when the chart sets none). */
  private nodeOptions = { operator: "", agent: "" };
  /** NodeChain state by node, from the fleet's own watch. */
  readonly seen = new Map<string, NodeChainSeen>();
  /** Unavailable-node tracking, while armed. */
  private trace: UnavailabilityTrace | undefined;
  private traceBaseline = new Set<string>();
  readonly nodeNames: string[];
  private readonly say: (line: string) => void;
  private nfVersion = 1;
  private maxUnavailable: string;

  private constructor(private readonly options: FleetOptions) {
    this.nodeNames = Array.from({ length: options.nodes }, (_, i) => `fleet-${String(i).padStart(5, "0")}`);
    this.say = options.say ?? (() => {});
    this.maxUnavailable = options.maxUnavailable;
  }

  /** Brings the fleet up and waits until every node runs the first revision. */
  static async start(options: FleetOptions): Promise<Fleet> {
    const fleet = new Fleet(options);
    try {
      await fleet.bringUp();
    } catch (err) {
      await fleet.stop();
      throw err;
    }
    return fleet;
  }

  private async bringUp(): Promise<void> {
    const began = Date.now();
    const work = await mkdtemp(join(tmpdir(), "sluice-fleet-"));
    this.cleanups.push(() => rm(work, { recursive: true, force: true }));

    const provided: Record<string, string> = {};
    const teardown = await clusterSetup({
      provide: (key: string, value: string) => (provided[key] = value),
    } as unknown as Parameters<typeof clusterSetup>[0]);
    this.cleanups.push(teardown);
    this.binDir = provided.clusterBinDir!;
    this.server = provided.clusterServer!;
    const adminKubeconfig = provided.clusterKubeconfig!;
    this.adminKubeconfig = adminKubeconfig;
    this.admin = new KubeConfig();
    this.admin.loadFromFile(adminKubeconfig);
    this.adminToken = this.admin.getCurrentUser()?.token ?? "";
    this.caPem = Buffer.from(this.admin.getCurrentCluster()!.caData!, "base64").toString("utf8");
    this.custom = this.admin.makeApiClient(CustomObjectsApi);
    this.core = this.admin.makeApiClient(CoreV1Api);
    const kubectl = (args: string[], input?: string) => this.kubectl(adminKubeconfig, args, input);

    await kubectl(["apply", "--server-side", "-f", join(repoRoot, "crds")]);
    await kubectl(["create", "namespace", FLEET_NAMESPACE]);
    await kubectl([
      "wait",
      "--for=condition=Established",
      "crd/gitsources.sluice.dev",
      "crd/networkfunctions.sluice.dev",
      "crd/servicechains.sluice.dev",
      "crd/nodechains.sluice.dev",
      "--timeout=30s",
    ]);
    const identities = await this.installChartIdentities(kubectl);
    this.say(`cluster and chart identities ready (${Date.now() - began} ms)`);

    // Nodes, then kwok to keep them alive.
    let t = Date.now();
    await inParallel(this.nodeNames, 32, (name) =>
      this.core.createNode({ body: { metadata: { name, labels: { [FLEET_LABEL]: "true" } } } }),
    );
    await this.startKwok(work, adminKubeconfig);
    await this.until(
      `${this.nodeNames.length} Nodes Ready`,
      120_000 + this.nodeNames.length * 30,
      async () => {
        const nodes = await this.core.listNode({ labelSelector: `${FLEET_LABEL}=true` });
        return nodes.items.filter(isReady).length === this.nodeNames.length;
      },
    );
    this.say(`${this.nodeNames.length} Nodes Ready under kwok (${Date.now() - t} ms)`);

    // One token per node, bound to that Node, as the kubelet gives the chart's agent pod.
    t = Date.now();
    const tokens = await inParallel(this.nodeNames, 32, (node) =>
      this.token(identities.agent, { kind: "Node", apiVersion: "v1", name: node }),
    );
    this.say(`${tokens.length} node-bound agent tokens (${Date.now() - t} ms)`);

    // The repository and its first commit.
    this.repo = await createTestRepo({ name: "fleet" });
    this.cleanups.push(() => this.repo.cleanup());
    await chmod(this.repo.serveRoot, 0o755);
    this.git = await startGitDaemon(this.repo.serveRoot);
    this.cleanups.push(() => this.git.stop());
    await this.repo.commit({
      "deploy/nf/ttl-guard/ttl_guard.bpf.c": await readFile(
        join(repoRoot, "examples/gitops/network/nfs/ttl-guard/ttl_guard.bpf.c"),
      ),
      "deploy/functions.yaml": this.functionYaml(),
      "deploy/chain.yaml": this.chainYaml(),
      "deploy/README.md": "# the fleet's network\n",
    });

    // The operator: non-root, its own token, leader election.
    await this.startOperator(work, identities);
    await this.applyObject({
      apiVersion: "sluice.dev/v1alpha1",
      kind: "GitSource",
      metadata: { name: SOURCE, namespace: FLEET_NAMESPACE },
      spec: { url: this.git.url("fleet"), path: "deploy", interval: "1h" },
    });

    // The simulated agents.
    t = Date.now();
    await this.startWatch();
    const workerCount = this.options.workers ?? Math.max(2, Math.ceil(this.nodeNames.length / 250));
    const caData = Buffer.from(this.caPem).toString("base64");
    const starts: Promise<WorkerReply>[] = [];
    for (let w = 0; w < workerCount; w++) {
      const agents: SimulatedAgentSpec[] = this.nodeNames
        .map((node, i) => ({ node, token: tokens[i]! }))
        .filter((_, i) => i % workerCount === w);
      const worker = this.startWorker();
      starts.push(
        this.ask(worker, {
          type: "start",
          server: this.server,
          caData,
          agents,
          cacheDir: join(work, `agent-cache-${w}`),
          switchMs: this.options.switchMs,
        }),
      );
    }
    for (const reply of await Promise.all(starts)) if (reply.type === "error") throw new Error(reply.message);
    this.say(`${this.nodeNames.length} simulated agents in ${workerCount} workers (${Date.now() - t} ms)`);

    t = Date.now();
    await this.untilAllLive(undefined, 60_000 + this.nodeNames.length * 200);
    this.say(
      `first revision live on every node (${Date.now() - t} ms; fleet up in ${Date.now() - began} ms)`,
    );
  }

  // ---------------------------------------------------------------------------------------------
  // What a scenario does

  /**
   * Commits `files` (paths under deploy/), asks for a sync now, and waits until the GitSource has
   * applied that commit; returns the epoch ms when it was seen applied.
   */
  async commit(files: Record<string, string>): Promise<number> {
    const sha = await this.repo.commit(
      Object.fromEntries(Object.entries(files).map(([p, c]) => [`deploy/${p}`, c])),
    );
    await this.kubectl(this.adminKubeconfig, [
      "annotate",
      "--overwrite",
      "gitsource",
      SOURCE,
      "-n",
      FLEET_NAMESPACE,
      `sluice.dev/reconcile-at=${new Date().toISOString()}`,
    ]);
    let appliedAt = 0;
    await this.until(
      `commit ${sha.slice(0, 8)} applied`,
      // A large fleet keeps the operator and the API server busy: a sync waits its turn.
      60_000 + this.nodeNames.length * 10,
      async () => {
        const gs = (await this.custom.getNamespacedCustomObject({
          group: "sluice.dev",
          version: "v1alpha1",
          namespace: FLEET_NAMESPACE,
          plural: "gitsources",
          name: SOURCE,
        })) as { status?: { lastAppliedRevision?: string } };
        appliedAt = Date.now();
        return gs.status?.lastAppliedRevision === `main@sha1:${sha}`;
      },
      50,
    );
    return appliedAt;
  }

  /** A commit that changes what every node runs (the NF's compile-time parameter). */
  commitFunctionChange(): Promise<number> {
    this.nfVersion++;
    return this.commit({ "functions.yaml": this.functionYaml() });
  }

  /** A commit that changes only a file no function uses. */
  commitUnrelated(text: string): Promise<number> {
    return this.commit({ "README.md": `# the fleet's network\n\n${text}\n` });
  }

  /** A commit that changes only the rollout settings. */
  commitRollout(maxUnavailable: string): Promise<number> {
    this.maxUnavailable = maxUnavailable;
    return this.commit({ "chain.yaml": this.chainYaml() });
  }

  /** The ServiceChain's status as the operator wrote it. */
  async chainStatus(): Promise<{
    revision?: string;
    lastGoodRevision?: string;
    failedRevision?: string;
    observedGeneration?: number;
    generation?: number;
  }> {
    const sc = (await this.custom.getNamespacedCustomObject({
      group: "sluice.dev",
      version: "v1alpha1",
      namespace: FLEET_NAMESPACE,
      plural: "servicechains",
      name: CHAIN,
    })) as {
      metadata: { generation?: number };
      status?: {
        revision?: string;
        lastGoodRevision?: string;
        failedRevision?: string;
        observedGeneration?: number;
      };
    };
    return { ...sc.status, generation: sc.metadata.generation };
  }

  /** Waits until the chain plans a revision other than `than`; returns it. */
  async nextRevision(
    than: string | undefined,
    timeoutMs = 60_000 + this.nodeNames.length * 10,
  ): Promise<string> {
    let revision: string | undefined;
    await this.until("a new revision planned", timeoutMs, async () => {
      revision = (await this.chainStatus()).revision;
      return revision !== undefined && revision !== than;
    });
    return revision!;
  }

  /**
   * Waits until every node's NodeChain asks for and reports `revision` (any one revision when
   * undefined) Ready at its generation; returns the epoch ms when it was seen.
   */
  async untilAllLive(revision: string | undefined, timeoutMs: number): Promise<number> {
    let doneAt = 0;
    await this.until(
      `every node live on ${revision ?? "one revision"}`,
      timeoutMs,
      () => {
        doneAt = Date.now();
        if (this.seen.size < this.nodeNames.length) return Promise.resolve(false);
        const want = revision ?? this.seen.values().next().value?.revision;
        for (const nc of this.seen.values()) if (!liveOn(nc, want)) return Promise.resolve(false);
        return Promise.resolve(true);
      },
      50,
    );
    return doneAt;
  }

  /** The revision every node runs now (undefined when they differ). */
  currentRevision(): string | undefined {
    const revisions = new Set([...this.seen.values()].map((nc) => nc.revision));
    return revisions.size === 1 ? [...revisions][0] : undefined;
  }

  /** Makes the next new revision fail on `nodes` (their simulated data plane refuses it). */
  async failOn(nodes: readonly string[]): Promise<void> {
    await Promise.all(this.workers.map((w) => this.ask(w, { type: "fail", nodes: [...nodes] })));
  }

  /** Every switch the simulated data planes recorded, and the workers' memory. */
  async history(): Promise<{ switches: RecordedSwitch[]; workerPeakRssMb: number[] }> {
    const replies = await Promise.all(this.workers.map((w) => this.ask(w, { type: "history" })));
    const switches: RecordedSwitch[] = [];
    const peaks: number[] = [];
    for (const r of replies) {
      if (r.type !== "history") throw new Error(`worker answered ${JSON.stringify(r).slice(0, 500)}`);
      switches.push(...r.switches);
      peaks.push(r.peakRssMb);
    }
    return { switches: switches.sort((a, b) => a.start - b.start), workerPeakRssMb: peaks };
  }

  /**
   * Starts counting nodes unavailable at once from the NodeChain watch: a node is unavailable
   * from the event that gives its NodeChain a revision it does not run Ready yet until the event
   * that reports it Ready on it. Nodes unavailable already when armed (a failed node) are left out.
   */
  armUnavailabilityTrace(): void {
    this.traceBaseline = new Set(
      [...this.seen.entries()].filter(([, nc]) => !liveOn(nc, nc.revision)).map(([n]) => n),
    );
    this.trace = { max: 0, at: Date.now(), nodes: [] };
  }

  /** Stops counting; returns the largest count seen. */
  takeUnavailabilityTrace(): UnavailabilityTrace {
    const trace = this.trace ?? { max: 0, at: 0, nodes: [] };
    this.trace = undefined;
    return trace;
  }

  /** The operator's peak resident memory so far (VmHWM), MiB. */
  operatorPeakRssMb(): number {
    this.sampleOperator();
    return this.operatorPeakMb;
  }

  /** The API server's metrics now. */
  async scrapeApiServer(): Promise<string> {
    const res = await this.adminFetch("/metrics");
    return res;
  }

  /** Mutating requests and their latency between two scrapes. */
  apiWindow(before: string, after: string): ApiWindow {
    return apiWindow(before, after);
  }

  /** Resident memory of one real `sluice agent` process on one more Node of the fleet. */
  async realAgentRssMb(settleMs = 8_000): Promise<{ rssMb: number; peakMb: number }> {
    const node = "fleet-real-agent";
    await this.core.createNode({ body: { metadata: { name: node, labels: { [FLEET_LABEL]: "real" } } } });
    const work = await mkdtemp(join(tmpdir(), "sluice-fleet-agent-"));
    const bpffs = `/sys/fs/bpf/sluice-fleet-${process.pid}`;
    try {
      const identitySa = "fleet-sluice-agent";
      const token = await this.token(identitySa, { kind: "Node", apiVersion: "v1", name: node });
      const kubeconfig = join(work, "agent.kubeconfig");
      await writeFile(kubeconfig, this.kubeconfigText(`agent-${node}`, token), { mode: 0o600 });
      const { asChartAgent } = await import("../sluice.ts");
      const [file, ...args] = asChartAgent(
        imageArgv([
          "agent",
          `--kubeconfig=${kubeconfig}`,
          `--node-name=${node}`,
          // Metrics and the live view on, as the chart runs it.
          `--metrics-port=${await freeLoopbackPort()}`,
          "--metrics-address=127.0.0.1",
          `--cache-dir=${join(work, "cache")}`,
          `--bpffs-root=${bpffs}`,
        ]),
      );
      const child = spawn(file!, args, {
        stdio: ["ignore", "pipe", "pipe"],
        env: {
          ...process.env,
          SLUICE_LOG_LEVEL: "warn",
          NODE_OPTIONS: withOwnNodeOptions(this.nodeOptions.agent),
        },
      });
      let output = "";
      child.stdout!.on("data", (b: Buffer) => (output += b.toString()));
      child.stderr!.on("data", (b: Buffer) => (output += b.toString()));
      try {
        await sleep(settleMs);
        if (child.exitCode !== null)
          throw new Error(`sluice agent exited ${child.exitCode}: ${output.slice(-2000)}`);
        return { rssMb: rssOf(child.pid!, "VmRSS"), peakMb: rssOf(child.pid!, "VmHWM") };
      } finally {
        if (child.exitCode === null && child.signalCode === null) {
          const exited = new Promise((ok) => child.once("exit", ok));
          child.kill("SIGTERM");
          await exited;
        }
      }
    } finally {
      await rm(work, { recursive: true, force: true });
      await rm(bpffs, { recursive: true, force: true });
      await this.core.deleteNode({ name: node }).catch(() => {});
    }
  }

  /** Takes everything down, in reverse order of bring-up. */
  async stop(): Promise<void> {
    clearInterval(this.operatorSampler);
    for (const w of this.workers) {
      if (w.connected) w.send({ type: "stop" } satisfies WorkerRequest);
    }
    await Promise.all(
      this.workers.map((w) =>
        w.exitCode === null && w.signalCode === null
          ? Promise.race([
              new Promise((ok) => w.once("exit", ok)),
              sleep(10_000).then(() => w.kill("SIGKILL")),
            ])
          : undefined,
      ),
    );
    if (this.operator && this.operator.exitCode === null) {
      this.operator.kill("SIGTERM");
      await Promise.race([new Promise((ok) => this.operator!.once("exit", ok)), sleep(10_000)]);
      this.operator.kill("SIGKILL");
    }
    for (const cleanup of this.cleanups.reverse()) {
      try {
        await cleanup();
      } catch {
        // Best effort: everything else still goes.
      }
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Bring-up helpers

  private functionYaml(): string {
    return `apiVersion: sluice.dev/v1alpha1
kind: NetworkFunction
metadata:
  name: ttl-guard
spec:
  hooks: [xdp]
  source:
    sourceRef: { name: ${SOURCE} }
    path: nf/ttl-guard/ttl_guard.bpf.c
  parameters:
    MIN_TTL: ${this.nfVersion + 1}
`;
  }

  private chainYaml(): string {
    return `apiVersion: sluice.dev/v1alpha1
kind: ServiceChain
metadata:
  name: ${CHAIN}
spec:
  functions:
    - name: ttl-guard
  attachment:
    interfaces: [lo]
    hook: xdp
  nodeSelector:
    matchLabels:
      ${FLEET_LABEL}: "true"
  rollout:
    maxUnavailable: "${this.maxUnavailable}"
    autoRollback: true
`;
  }

  private async kubectl(kubeconfig: string, args: string[], input?: string): Promise<string> {
    return new Promise((ok, fail) => {
      const child = execFile(
        join(this.binDir, "kubectl"),
        [`--kubeconfig=${kubeconfig}`, ...args],
        { maxBuffer: 64 << 20, timeout: 120_000 },
        (err, stdout, stderr) =>
          err ? fail(new Error(`kubectl ${args.join(" ")}: ${stderr || err.message}`)) : ok(stdout),
      );
      child.stdin?.end(input ?? "");
    });
  }

  private async installChartIdentities(
    kubectl: (args: string[], input?: string) => Promise<string>,
  ): Promise<{ operator: string; agent: string; lease: string }> {
    const version = JSON.parse(await kubectl(["version", "-o", "json"])) as {
      serverVersion: { gitVersion: string };
    };
    const rendered = await this.renderChart(version.serverVersion.gitVersion, [
      "serviceaccounts",
      "operator-rbac",
      "agent-rbac",
      "agent-admission",
    ]);
    const docs = parseAllDocuments(rendered)
      .map(
        (d) =>
          d.toJS() as {
            kind?: string;
            metadata?: { name: string; labels?: Record<string, string> };
            rules?: { resources?: string[]; resourceNames?: string[] }[];
          } | null,
      )
      .filter((d) => d !== null);
    const account = (component: string) =>
      docs.find(
        (d) =>
          d.kind === "ServiceAccount" && d.metadata?.labels?.["app.kubernetes.io/component"] === component,
      )?.metadata?.name;
    const lease = docs
      .filter((d) => d.kind === "Role")
      .flatMap((d) => d.rules ?? [])
      .find((r) => r.resources?.includes("leases") && r.resourceNames?.length)?.resourceNames?.[0];
    const operator = account("operator");
    const agent = account("agent");
    if (!operator || !agent || !lease)
      throw new Error("the chart rendered no operator or agent ServiceAccount or Lease");
    await kubectl(["apply", "--server-side", "-f", "-"], rendered);
    this.nodeOptions = await this.chartNodeOptions(version.serverVersion.gitVersion);
    return { operator, agent, lease };
  }

  /**
   * NODE_OPTIONS of the chart's operator Deployment and agent DaemonSet, as rendered: the fleet
   * starts both processes as their images do (`node bin/sluice.mjs <command>`, where the
   * `#!` line's flags do not apply) with these in the environment, so that their memory is
   * measured with the V8 settings they are deployed with.
   */
  private async chartNodeOptions(kubeVersion: string): Promise<{ operator: string; agent: string }> {
    const rendered = await this.renderChart(kubeVersion, ["operator-deployment", "agent-daemonset"]);
    const options = (kind: string): string => {
      const doc = parseAllDocuments(rendered)
        .map((d) => ChartWorkload.safeParse(d.toJS()).data)
        .find((d) => d?.kind === kind);
      if (!doc) throw new Error(`the chart rendered no ${kind}`);
      const env = doc.spec.template.spec.containers[0]?.env ?? [];
      return env.find((e) => e.name === "NODE_OPTIONS")?.value ?? "";
    };
    return { operator: options("Deployment"), agent: options("DaemonSet") };
  }

  /** The chart's `templates` (names without `.yaml`), rendered by helm for the fleet's release. */
  private async renderChart(kubeVersion: string, templates: readonly string[]): Promise<string> {
    const { stdout } = await execFileAsync(
      join(this.binDir, "helm"),
      [
        "template",
        RELEASE,
        join(repoRoot, "charts/sluice"),
        `--namespace=${FLEET_NAMESPACE}`,
        `--kube-version=${kubeVersion}`,
        ...templates.flatMap((t) => ["--show-only", `templates/${t}.yaml`]),
      ],
      { maxBuffer: 16 << 20 },
    );
    return stdout;
  }

  private async token(
    serviceAccount: string,
    boundObjectRef?: { kind: string; apiVersion: string; name: string },
  ): Promise<string> {
    const request = await this.core.createNamespacedServiceAccountToken({
      name: serviceAccount,
      namespace: FLEET_NAMESPACE,
      body: { spec: { audiences: [], expirationSeconds: 3600, ...(boundObjectRef && { boundObjectRef }) } },
    });
    const token = request.status?.token;
    if (!token) throw new Error(`TokenRequest for ${serviceAccount} gave no token`);
    return token;
  }

  private kubeconfigText(user: string, token: string): string {
    const kc = new KubeConfig();
    kc.loadFromOptions({
      clusters: [{ name: "fleet", server: this.server, caData: Buffer.from(this.caPem).toString("base64") }],
      users: [{ name: user, token }],
      contexts: [{ name: user, cluster: "fleet", user }],
      currentContext: user,
    });
    return kc.exportConfig();
  }

  private async startKwok(work: string, kubeconfig: string): Promise<void> {
    const config = join(work, "kwok.yaml");
    await writeFile(config, KWOK_STAGES);
    const log = join(work, "kwok.log");
    const { openSync, closeSync } = await import("node:fs");
    const fd = openSync(log, "a");
    const child = spawn(
      "setpriv",
      [
        "--pdeathsig",
        "KILL",
        "--",
        join(this.binDir, "kwok"),
        `--kubeconfig=${kubeconfig}`,
        `--config=${config}`,
        `--manage-nodes-with-label-selector=${FLEET_LABEL}`,
        "--node-lease-duration-seconds=40",
        "--node-ip=127.0.0.1",
      ],
      { stdio: ["ignore", fd, fd] },
    );
    closeSync(fd);
    this.cleanups.push(async () => {
      if (child.exitCode === null) {
        child.kill("SIGTERM");
        await Promise.race([new Promise((ok) => child.once("exit", ok)), sleep(5_000)]);
        child.kill("SIGKILL");
      }
    });
    await sleep(200);
    if (child.exitCode !== null)
      throw new Error(`kwok exited ${child.exitCode}: ${await readFile(log, "utf8")}`);
  }

  private async startOperator(work: string, identities: { operator: string; lease: string }): Promise<void> {
    const dir = join(work, "operator");
    await mkdir(join(dir, "data"), { recursive: true });
    const kubeconfig = join(dir, "operator.kubeconfig");
    await writeFile(kubeconfig, this.kubeconfigText("operator", await this.token(identities.operator)), {
      mode: 0o600,
    });
    for (const p of [dir, join(dir, "data"), kubeconfig])
      await chown(p, CHART_OPERATOR_UID, CHART_OPERATOR_UID);
    await chmod(work, 0o755);
    const port = await freeLoopbackPort();
    const profile = this.options.operatorProfileDir;
    if (profile) {
      await mkdir(profile, { recursive: true });
      await chown(profile, CHART_OPERATOR_UID, CHART_OPERATOR_UID);
    }
    const [node, ...sluice] = imageArgv([
      "operator",
      `--kubeconfig=${kubeconfig}`,
      `--namespace=${FLEET_NAMESPACE}`,
      `--port=${port}`,
      "--host=127.0.0.1",
      `--data-dir=${join(dir, "data")}`,
      `--advertise-url=http://127.0.0.1:${port}`,
      "--leader-elect",
      `--leader-elect-namespace=${FLEET_NAMESPACE}`,
      `--leader-elect-lease=${identities.lease}`,
      "--leader-elect-id=fleet-operator-0",
    ]);
    const [file, ...args] = asChartOperator([
      node!,
      ...(profile ? ["--cpu-prof", `--cpu-prof-dir=${profile}`] : []),
      ...sluice,
    ]);
    const { openSync, closeSync } = await import("node:fs");
    const fd = openSync(join(work, "operator.log"), "a");
    this.operator = spawn(file!, args, {
      stdio: ["ignore", fd, fd],
      env: {
        ...process.env,
        SLUICE_LOG_LEVEL: "warn",
        HOME: dir,
        NODE_OPTIONS: withOwnNodeOptions(this.nodeOptions.operator),
      },
    });
    closeSync(fd);
    this.operatorLog = join(work, "operator.log");
    this.operatorSampler = setInterval(() => this.sampleOperator(), 500);
  }

  /** Where the operator logs (pino JSON), for a failure's message. */
  operatorLog = "";

  private sampleOperator(): void {
    const pid = this.operator?.pid;
    if (pid === undefined || this.operator?.exitCode !== null) return;
    try {
      this.operatorPeakMb = Math.max(this.operatorPeakMb, rssOf(pid, "VmHWM"));
    } catch {
      // The process is gone.
    }
  }

  private startWorker(): ChildProcess {
    const worker = fork(workerModule, [], {
      execArgv: ["--import", "tsx"],
      stdio: ["ignore", "inherit", "inherit", "ipc"],
      env: { ...process.env, SLUICE_LOG_LEVEL: process.env.SLUICE_FLEET_LOG_LEVEL ?? "silent" },
    });
    this.workers.push(worker);
    this.replies.set(worker, []);
    worker.on("message", (reply: WorkerReply) => this.replies.get(worker)!.shift()?.(reply));
    worker.on("exit", (code, signal) => {
      for (const waiting of this.replies.get(worker)!.splice(0))
        waiting({ type: "error", message: `worker exited (${code ?? signal})` });
    });
    return worker;
  }

  /** Sends `request` and waits for the worker's reply (a worker answers in order). */
  private ask(worker: ChildProcess, request: WorkerRequest): Promise<WorkerReply> {
    return new Promise((ok) => {
      this.replies.get(worker)!.push(ok);
      worker.send(request);
    });
  }

  private async adminFetch(path: string): Promise<string> {
    const https = await import("node:https");
    return new Promise((ok, fail) => {
      const req = https.get(
        `${this.server}${path}`,
        { ca: this.caPem, headers: { authorization: `Bearer ${this.adminToken}` }, timeout: 30_000 },
        (res) => {
          const chunks: Buffer[] = [];
          res.on("data", (c: Buffer) => chunks.push(c));
          res.on("end", () => ok(Buffer.concat(chunks).toString("utf8")));
        },
      );
      req.on("error", fail);
    });
  }

  /** Follows the fleet's NodeChains with an informer of its own (admin), tracking unavailable nodes. */
  private async startWatch(): Promise<void> {
    const store = new KubeStore(new KubeClient(this.admin), rootLogger.child({ component: "fleet-watch" }), {
      namespace: FLEET_NAMESPACE,
    });
    this.cleanups.push(() => store.stop());
    store.watch("NodeChain", (event) => this.onNodeChain(event.type, event.object));
    await store.startWatching("NodeChain");
  }

  private onNodeChain(type: "changed" | "deleted", nc: NodeChain): void {
    const node = nc.spec.nodeName;
    if (type === "deleted") {
      this.seen.delete(node);
      return;
    }
    const state: NodeChainSeen = {
      revision: nc.spec.revision,
      generation: nc.metadata.generation ?? 0,
      statusRevision: nc.status.revision,
      phase: nc.status.phase,
      observedGeneration: nc.status.observedGeneration,
    };
    this.seen.set(node, state);
    if (this.trace) {
      const unavailable = [...this.seen.entries()]
        .filter(([n, s]) => !this.traceBaseline.has(n) && !liveOn(s, s.revision))
        .map(([n]) => n);
      if (unavailable.length > this.trace.max)
        this.trace = { max: unavailable.length, at: Date.now(), nodes: unavailable };
    }
  }

  private async applyObject(obj: object): Promise<void> {
    await this.custom.createNamespacedCustomObject({
      group: "sluice.dev",
      version: "v1alpha1",
      namespace: FLEET_NAMESPACE,
      plural: "gitsources",
      body: obj,
    });
  }

  /** Where the GitSource, the chain and the NodeChains stand: for a failure's message. */
  async describe(): Promise<string> {
    const get = async (plural: string, name: string) =>
      JSON.stringify(
        (
          (await this.custom
            .getNamespacedCustomObject({
              group: "sluice.dev",
              version: "v1alpha1",
              namespace: FLEET_NAMESPACE,
              plural,
              name,
            })
            .catch((err: unknown) => ({ status: String(err) }))) as { status?: unknown }
        ).status ?? null,
      ).slice(0, 3000);
    const byState = new Map<string, number>();
    for (const nc of this.seen.values()) {
      const key = `${nc.revision} -> ${nc.statusRevision ?? "-"} ${nc.phase ?? "-"} gen ${nc.generation}/${nc.observedGeneration ?? "-"}`;
      byState.set(key, (byState.get(key) ?? 0) + 1);
    }
    const sample = JSON.stringify(
      (
        (await this.custom
          .listNamespacedCustomObject({
            group: "sluice.dev",
            version: "v1alpha1",
            namespace: FLEET_NAMESPACE,
            plural: "nodechains",
            limit: 1,
          })
          .catch(() => ({}))) as { items?: { status?: unknown }[] }
      ).items?.[0]?.status ?? null,
    ).slice(0, 2000);
    return [
      `GitSource status: ${await get("gitsources", SOURCE)}`,
      `ServiceChain status: ${await get("servicechains", CHAIN)}`,
      `NodeChains seen (${this.seen.size}): ${JSON.stringify(Object.fromEntries(byState))}`,
      `a NodeChain's status: ${sample}`,
    ].join("\n");
  }

  private async until(
    what: string,
    timeoutMs: number,
    probe: () => Promise<boolean>,
    everyMs = 250,
  ): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (await probe()) return;
      if (this.operator && this.operator.exitCode !== null) {
        throw new Error(
          `the operator exited (${this.operator.exitCode}) while waiting for ${what}: ${await tailOf(this.operatorLog)}`,
        );
      }
      if (Date.now() > deadline) {
        throw new Error(
          `not ${what} within ${timeoutMs} ms\n${await this.describe()}\noperator log tail:\n${await tailOf(this.operatorLog)}`,
        );
      }
      await sleep(everyMs);
    }
  }
}

/** Whether a NodeChain runs `revision` Ready at its generation. */
function liveOn(nc: NodeChainSeen, revision: string | undefined): boolean {
  return (
    revision !== undefined &&
    nc.revision === revision &&
    nc.statusRevision === revision &&
    nc.phase === "Ready" &&
    nc.observedGeneration === nc.generation
  );
}

function isReady(node: V1Node): boolean {
  return node.status?.conditions?.some((c) => c.type === "Ready" && c.status === "True") ?? false;
}

async function tailOf(path: string): Promise<string> {
  if (!path) return "(no log)";
  const text = await readFile(path, "utf8").catch(() => "");
  return text.trimEnd().split("\n").slice(-20).join("\n");
}

async function freeLoopbackPort(): Promise<number> {
  const net = await import("node:net");
  return new Promise((ok, fail) => {
    const s = net.createServer();
    s.once("error", fail);
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as import("node:net").AddressInfo).port;
      s.close(() => ok(port));
    });
  });
}

/** The most switches in progress at once in `switches`. */
export function maxConcurrentSwitches(switches: readonly RecordedSwitch[]): number {
  const edges = switches.flatMap((s) => [
    { t: s.start, d: 1 },
    { t: s.end, d: -1 },
  ]);
  // An end and a start at the same millisecond do not overlap.
  edges.sort((a, b) => a.t - b.t || a.d - b.d);
  let now = 0;
  let max = 0;
  for (const e of edges) max = Math.max(max, (now += e.d));
  return max;
}

/** Runs `task` over `items`, `concurrency` at a time; results in the order of `items`. */
export async function inParallel<T, R>(
  items: readonly T[],
  concurrency: number,
  task: (item: T) => Promise<R>,
): Promise<R[]> {
  const results: R[] = new Array(items.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(concurrency, items.length) }, async () => {
      for (let i = next++; i < items.length; i = next++) results[i] = await task(items[i]!);
    }),
  );
  return results;
}

const MUTATING = new Set(["POST", "PUT", "PATCH", "APPLY", "DELETE"]);

/** Mutating requests and their latency between two scrapes of the API server's /metrics. */
export function apiWindow(before: string, after: string): ApiWindow {
  const counts = (text: string) => {
    const out = new Map<string, number>();
    const buckets = new Map<string, number>();
    for (const family of parsePrometheusTextFormat(text)) {
      if (family.name === "apiserver_request_total") {
        for (const m of family.metrics) {
          const l = m.labels ?? {};
          if (!MUTATING.has(l.verb ?? "")) continue;
          const key = `${l.resource ?? ""}${l.subresource ? `/${l.subresource}` : ""}`;
          out.set(key, (out.get(key) ?? 0) + Number(m.value ?? 0));
        }
      }
    }
    // The parser leaves out a histogram's labels: its bucket lines are read here.
    for (const line of text.split("\n")) {
      if (!line.startsWith("apiserver_request_duration_seconds_bucket{")) continue;
      const verb = /[{,]verb="([^"]*)"/.exec(line)?.[1] ?? "";
      const le = /[{,]le="([^"]*)"/.exec(line)?.[1];
      if (!MUTATING.has(verb) || le === undefined) continue;
      buckets.set(le, (buckets.get(le) ?? 0) + Number(line.slice(line.lastIndexOf(" ") + 1)));
    }
    return { out, buckets };
  };
  const a = counts(before);
  const b = counts(after);
  const writes: Record<string, number> = {};
  for (const [key, n] of b.out) {
    const d = n - (a.out.get(key) ?? 0);
    if (d > 0) writes[key] = d;
  }
  const bound = (le: string) => (le === "+Inf" ? Infinity : Number(le));
  const bounds = [...b.buckets.keys()].sort((x, y) => bound(x) - bound(y));
  const delta = bounds.map((le) => ({
    le: bound(le),
    n: (b.buckets.get(le) ?? 0) - (a.buckets.get(le) ?? 0),
  }));
  const total = delta.at(-1)?.n ?? 0;
  const p99 = delta.find((d) => d.n >= total * 0.99)?.le ?? 0;
  const agentWrites = writes["nodechains/status"] ?? 0;
  // What the operator writes: NodeChains, ServiceChain and GitSource status, Events. Nodes and
  // Leases are kwok's, TokenRequests the fleet's own.
  const operatorResources = [
    "nodechains",
    "servicechains/status",
    "servicechains",
    "gitsources/status",
    "events",
  ];
  const operatorWrites = operatorResources.reduce((sum, r) => sum + (writes[r] ?? 0), 0);
  return { writes, operatorWrites, agentWrites, p99Ms: Math.round(p99 * 1000), mutating: total };
}

/**
 * kwok's stages for the fleet's Nodes: made Ready at once, and their status kept fresh now and
 * then; their Leases are renewed by kwok itself (`--node-lease-duration-seconds`).
 */
const KWOK_STAGES = `apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: node-initialize
spec:
  resourceRef:
    apiGroup: v1
    kind: Node
  selector:
    matchExpressions:
    - key: '.status.conditions.[] | select( .type == "Ready" ) | .status'
      operator: 'NotIn'
      values: ['True']
  next:
    statusTemplate: |
      {{ $now := Now }}
      conditions:
      {{ range NodeConditions }}
      - lastHeartbeatTime: {{ $now | Quote }}
        lastTransitionTime: {{ $now | Quote }}
        message: {{ .message | Quote }}
        reason: {{ .reason | Quote }}
        status: {{ .status | Quote }}
        type: {{ .type | Quote }}
      {{ end }}
      addresses:
      - address: {{ NodeIP | Quote }}
        type: InternalIP
      - address: {{ NodeName | Quote }}
        type: Hostname
      allocatable: { cpu: "1k", memory: 1Ti, pods: "1M" }
      capacity: { cpu: "1k", memory: 1Ti, pods: "1M" }
      phase: Running
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: node-heartbeat
spec:
  resourceRef:
    apiGroup: v1
    kind: Node
  selector:
    matchExpressions:
    - key: '.status.conditions.[] | select( .type == "Ready" ) | .status'
      operator: 'In'
      values: ['True']
  delay:
    durationMilliseconds: 600000
    jitterDurationMilliseconds: 610000
  next:
    statusTemplate: |
      {{ $now := Now }}
      conditions:
      {{ range NodeConditions }}
      - lastHeartbeatTime: {{ $now | Quote }}
        lastTransitionTime: {{ $now | Quote }}
        message: {{ .message | Quote }}
        reason: {{ .reason | Quote }}
        status: {{ .status | Quote }}
        type: {{ .type | Quote }}
      {{ end }}
`;
