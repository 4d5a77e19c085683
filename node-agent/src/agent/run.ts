import { mkdir } from "node:fs/promises";
import { NODE_LABEL } from "../../../common/api/index.ts";
import { rootLogger, type Logger } from "../../../common/log.ts";
import type { Store } from "../../../common/store.ts";
import { ChainManager, DEFAULT_BPFFS_ROOT } from "../chain/index.ts";
import { LiveView, type LiveRoute } from "../../../common/liveview/index.ts";
import { BpfStatsSession } from "./kstats.ts";
import { agentLiveReader } from "./liveview.ts";
import { NodeAgent } from "./agent.ts";
import {
  AgentCounters,
  DEFAULT_AGENT_METRICS_ADDRESS,
  startMetricsServer,
  type MetricsServer,
} from "./metrics.ts";

/** How `sluice agent` runs (flags map onto this). */
export interface AgentProcessOptions {
  nodeName: string;
  /** Where NodeChains come from: the Kubernetes API in a cluster, memory in single-host mode. */
  store: Store;
  /** bpffs directory of this agent's chains (default /sys/fs/bpf/sluice). */
  bpffsRoot?: string;
  /** Compile and artifact cache. */
  cacheDir: string;
  /** Network namespace of the node's interfaces. */
  netns?: string;
  /** Port of `GET /metrics`; 0 or absent: no metrics endpoint. */
  metricsPort?: number;
  /**
   * The one IP address `GET /metrics` listens on (default loopback,
   * {@link DEFAULT_AGENT_METRICS_ADDRESS}); `0.0.0.0` or `::` for every address of the host.
   */
  metricsAddress?: string;
  /** Per-function time of 1 in this many packets (`--time-functions`); 0 or absent: off. */
  timeSample?: number;
  /** Keep the revision a switch replaced loaded (`--keep-standby-revision`); absent: on. */
  keepStandby?: boolean;
  logger?: Logger;
}

/** A running agent. `stop()` leaves every chain pinned and forwarding. */
export interface RunningAgent {
  agent: NodeAgent;
  manager: ChainManager;
  /** The metrics endpoint, when `metricsPort` asked for one. */
  metrics?: MetricsServer;
  stop(): Promise<void>;
}

/** Starts a node agent on a data plane backed by the kernel. */
export async function startAgent(options: AgentProcessOptions): Promise<RunningAgent> {
  const log = (options.logger ?? rootLogger).child({ component: "agent", node: options.nodeName });
  await mkdir(options.cacheDir, { recursive: true });
  const manager = new ChainManager({
    root: options.bpffsRoot,
    netns: options.netns,
    cacheDir: options.cacheDir,
    logger: log,
    ...(options.timeSample ? { timeSample: options.timeSample } : {}),
    ...(options.keepStandby !== undefined ? { keepStandby: options.keepStandby } : {}),
  });
  const counters = new AgentCounters();
  /** When each chain's live revision was switched in (by this process). */
  const switchedAt = new Map<string, string>();
  const stats = new BpfStatsSession();
  const agent = new NodeAgent({
    nodeName: options.nodeName,
    store: options.store,
    dataPlane: {
      apply: async (spec) => {
        const result = await manager.apply(spec);
        counters.recordApply(result);
        if (result.action === "created" || result.action === "switched")
          switchedAt.set(result.chain, new Date().toISOString());
        return result;
      },
      adopt: () => manager.adopt(),
      remove: (name) => manager.remove(name),
    },
    cacheDir: options.cacheDir,
    netns: options.netns,
    log,
    onSwitch: counters.record,
  });
  // The node's live view, next to /metrics: its chains' rates, switches and problems.
  const bpffsRoot = options.bpffsRoot ?? DEFAULT_BPFFS_ROOT;
  const liveView: LiveView = new LiveView({
    title: options.nodeName,
    read: agentLiveReader({
      node: options.nodeName,
      list: () => manager.list(),
      store: options.store,
      bpffsRoot,
      stats,
      mark: (marker) => liveView.history.mark(marker),
      rolloutMarkers: false,
      lastSwitch: (chain) => switchedAt.get(chain),
    }),
    log,
  });
  let liveRoutes: Array<[string, LiveRoute]> = [];
  if (options.metricsPort) {
    try {
      liveRoutes = liveView.routes();
      liveView.start();
    } catch (err) {
      log.warn({ err }, "live view not served");
    }
  }
  // Chains matter more than their metrics: a port in use (another agent on this host) is logged
  // and the agent runs without the endpoint rather than not at all.
  const metrics = options.metricsPort
    ? await startMetricsServer({
        port: options.metricsPort,
        host: options.metricsAddress,
        list: () => manager.list(),
        counters,
        node: options.nodeName,
        kernel: { root: bpffsRoot, stats },
        routes: liveRoutes,
        processMetrics: true,
        log,
      }).catch((err: unknown) => {
        log.error(
          {
            err,
            address: options.metricsAddress ?? DEFAULT_AGENT_METRICS_ADDRESS,
            port: options.metricsPort,
          },
          "metrics endpoint not started; running without it",
        );
        return undefined;
      })
    : undefined;
  try {
    await agent.start();
  } catch (err) {
    await metrics?.close();
    liveView.stop();
    stats.close();
    throw err;
  }
  log.info({ selector: `${NODE_LABEL}=${options.nodeName}` }, "agent started");
  return {
    agent,
    manager,
    ...(metrics ? { metrics } : {}),
    async stop() {
      await metrics?.close();
      liveView.stop();
      stats.close();
      await agent.stop();
      manager.close();
    },
  };
}
