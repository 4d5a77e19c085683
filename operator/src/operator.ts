import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import { ArtifactStore } from "../../common/artifact/index.ts";
import { rootLogger, type Logger } from "../../common/log.ts";
import type { Store, StoreKind } from "../../common/store.ts";
import { startControlPlane, type ControlPlane } from "./controlplane.ts";
import type { SourcePolicy } from "./gitsource/policy.ts";
import { CoreResources, KubeClient, type KubeObject } from "../../common/kube/client.ts";
import { EventRecorder } from "../../common/kube/events.ts";
import { LeaderElector, type LeaderElectionConfig } from "../../common/kube/leader.ts";
import { KubeStore } from "../../common/kube/store.ts";
import { gitCommitInfo, LiveView } from "../../common/liveview/index.ts";
import { clusterLiveReaders } from "./liveview.ts";
import { NodeRates } from "./noderates.ts";
import { OperatorMetrics } from "./metrics.ts";
import { SourceServer } from "./server/index.ts";

/** How the operator process is set up (`sluice operator` flags map onto this). */
export interface OperatorOptions {
  /** kubeconfig file; default: $KUBECONFIG, ~/.kube/config, or the in-cluster service account. */
  kubeconfig?: string;
  /** Watch one namespace (or these namespaces) only; default all. */
  namespace?: string | readonly string[];
  /**
   * What GitSources may reach. Default: a GitSource applies only into its own namespace and
   * follows no `file://` URL (`--allow-cross-namespace`, `--allow-file-sources` and
   * `--allowed-git-hosts` change that).
   */
  sources?: SourcePolicy;
  /** Port of the HTTP endpoint (artifacts, webhooks, health, metrics). */
  port: number;
  /** Address to listen on. */
  host?: string;
  /**
   * The agents' metrics port: the cluster live view asks each node's agent there (at the Node's
   * InternalIP) for its chains' counters. Absent: the page shows no per-node rates.
   */
  agentMetricsPort?: number;
  /** How often agents are asked while no page is open (ms; default 10 s); 0: only while one is. */
  agentRatesIdleIntervalMs?: number;
  /** Directory for artifacts and working clones. */
  dataDir: string;
  /** URL agents use to reach the HTTP endpoint; default http://<host>:<port>. */
  advertiseUrl?: string;
  /** Reconciles running at once per controller. */
  concurrency?: number;
  /**
   * Run the controllers only while holding this Lease, so that several replicas can run and
   * one of them acts. Without it the controllers start at once (a single replica).
   */
  leaderElection?: LeaderElectionConfig;
  logger?: Logger;
}

/** A running operator; `stop()` ends it cleanly. */
export interface RunningOperator {
  url: string;
  port: number;
  store: Store;
  stop(): Promise<void>;
}

/** Kinds the controllers watch; each gets one informer, shared by every controller. */
const WATCHED_KINDS: StoreKind[] = ["GitSource", "NetworkFunction", "ServiceChain", "NodeChain", "Node"];

/**
 * Starts the operator: the HTTP endpoint, the informers and the controllers. Reconciles are
 * idempotent, so a restart (or a watch that replays every object) only repeats no-ops, and a
 * rollout picks up where the NodeChains' status says it stands.
 */
export async function startOperator(options: OperatorOptions): Promise<RunningOperator> {
  const log = options.logger ?? rootLogger.child({ component: "operator" });
  const client = options.kubeconfig ? KubeClient.fromFile(options.kubeconfig) : KubeClient.fromDefault();
  const elector = options.leaderElection && new LeaderElector(client, options.leaderElection, log);
  const store = new KubeStore(client, log, {
    namespace: options.namespace,
    freshKinds: ["GitSource", "ServiceChain"],
  });
  const recorder = new EventRecorder(client, "sluice-operator");
  await mkdir(options.dataDir, { recursive: true });
  const artifacts = new ArtifactStore(join(options.dataDir, "artifacts"));
  let ready = false;
  const server = new SourceServer({ store: artifacts, ready: () => ready, logger: log });
  let controlPlane: ControlPlane | undefined;
  // Leader: the replica that runs the controllers (the only one without leader election).
  const metrics = new OperatorMetrics(() => controlPlane !== undefined);
  metrics.observeServiceChains(() => store.list("ServiceChain"));
  metrics.observeKubeClient(client);
  server.route("GET", "/metrics", metrics.handler);
  // The cluster-wide live view at /: every chain on every node, and each rollout, from the caches.
  const rates = options.agentMetricsPort
    ? new NodeRates({
        store,
        port: options.agentMetricsPort,
        watched: () => liveView.history.watchers > 0,
        idleIntervalMs: options.agentRatesIdleIntervalMs,
        log,
      })
    : undefined;
  const cluster = clusterLiveReaders({
    store,
    mark: (marker) => liveView.history.mark(marker),
    // The GitSource controller's work directories (controlplane.ts: <dataDir>/git/<ns>/<name>).
    commitOf: (source, revision) =>
      gitCommitInfo(join(options.dataDir, "git", source.namespace, source.name), revision),
    ...(rates ? { rates } : {}),
  });
  const liveView: LiveView = new LiveView({
    title: "cluster",
    read: cluster.read,
    rollouts: cluster.rollouts,
    log,
  });
  try {
    for (const [path, handler] of liveView.routes()) server.route("GET", path, handler);
  } catch (err) {
    log.warn({ err }, "live view not served");
  }
  const listening = await server.listen(options.port, options.host ?? "0.0.0.0");
  const advertiseUrl =
    options.advertiseUrl ??
    `http://${options.host && options.host !== "0.0.0.0" ? options.host : "127.0.0.1"}:${listening.port}`;

  // Every cache is full before the first reconcile, so no controller acts on a partial view.
  await Promise.all(WATCHED_KINDS.map((kind) => store.startWatching(kind)));
  liveView.start();
  rates?.start();
  let stopping = false;
  // Only the leader (or the only replica) runs controllers; a follower keeps its caches warm and
  // answers /readyz with 503, so the Service sends artifact and webhook traffic to the leader.
  const lead = async (): Promise<void> => {
    if (stopping || controlPlane) return;
    const plane = startControlPlane({
      store,
      artifacts,
      server,
      advertiseUrl,
      dataDir: options.dataDir,
      policy: options.sources,
      readSecret: async (namespace, name) => {
        const secret = await client.get<KubeObject & { data?: Record<string, string> }>(
          CoreResources.Secret,
          namespace,
          name,
        );
        if (!secret) return undefined;
        return Object.fromEntries(
          Object.entries(secret.data ?? {}).map(([k, v]) => [k, Buffer.from(v, "base64").toString("utf8")]),
        );
      },
      event: (obj, type, reason, message) => {
        const objLog = log.child({
          kind: obj.kind,
          namespace: obj.metadata.namespace,
          name: obj.metadata.name,
        });
        void recorder.record(objLog, obj, type, reason, message);
      },
      log,
      concurrency: options.concurrency,
    });
    controlPlane = plane;
    metrics.observe(plane.gitSources);
    metrics.observe(plane.serviceChains);
    // The informers replayed every object before the watches above were registered: queue them.
    for (const kind of ["GitSource", "ServiceChain"] as const) {
      for (const obj of await store.list(kind)) {
        const key = `${obj.metadata.namespace ?? "default"}/${obj.metadata.name}`;
        (kind === "GitSource" ? plane.gitSources : plane.serviceChains).enqueue(key);
      }
    }
    ready = true;
    log.info({ url: advertiseUrl }, "operator started");
  };
  const stepDown = async (): Promise<void> => {
    ready = false;
    const running = controlPlane;
    controlPlane = undefined;
    await running?.stop();
  };
  // Starting and stopping are chained: a leadership lost and won again never runs two control planes.
  let transition = Promise.resolve();
  const inTurn = (step: () => Promise<void>): Promise<void> =>
    (transition = transition.then(step).catch((err) => log.error({ err }, "leadership change failed")));
  if (elector)
    elector.run({ onStartedLeading: () => inTurn(lead), onStoppedLeading: () => inTurn(stepDown) });
  else await lead();

  return {
    url: advertiseUrl,
    port: listening.port,
    store,
    async stop() {
      stopping = true;
      await inTurn(stepDown);
      // After the controllers: the Lease is released only once nothing of this replica acts.
      cluster.stop();
      rates?.stop();
      liveView.stop();
      await elector?.stop();
      await store.stop();
      await server.close();
    },
  };
}
