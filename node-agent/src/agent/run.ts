import { mkdir } from "node:fs/promises";
import { NODE_LABEL } from "../../../common/api/index.ts";
import { rootLogger, type Logger } from "../../../common/log.ts";
import type { Store } from "../../../common/store.ts";
import { ChainManager } from "../chain/index.ts";
import { NodeAgent } from "./agent.ts";

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
  logger?: Logger;
}

/** A running agent. `stop()` leaves every chain pinned and forwarding. */
export interface RunningAgent {
  agent: NodeAgent;
  manager: ChainManager;
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
  });
  const agent = new NodeAgent({
    nodeName: options.nodeName,
    store: options.store,
    dataPlane: manager,
    cacheDir: options.cacheDir,
    netns: options.netns,
    log,
  });
  await agent.start();
  log.info({ selector: `${NODE_LABEL}=${options.nodeName}` }, "agent started");
  return {
    agent,
    manager,
    async stop() {
      await agent.stop();
      manager.close();
    },
  };
}
