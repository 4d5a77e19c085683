/**
 * `sluice agent`: the data plane on one node, against the cluster's API server. Its own module
 * (and bin/agent-main.ts its own entry), so that the agent's build needs nothing of operator/.
 */
import { ExitCode, parseCommandLine, parsePort, parseChainManagerFlags, usageError } from "./cli.ts";
import { holdOpen, kubeconfigProblem, startFailed, waitForSignal } from "./lifecycle.ts";

/** Runs `sluice agent` until SIGINT or SIGTERM; returns the exit code. */
export async function agent(argv: string[]): Promise<number> {
  const line = parseCommandLine("agent", argv, {
    "node-name": { type: "string", default: process.env.NODE_NAME },
    kubeconfig: { type: "string" },
    netns: { type: "string" },
    "bpffs-root": { type: "string" },
    "cache-dir": { type: "string", default: "/var/cache/sluice" },
    "metrics-port": { type: "string", default: "9471" },
    // Loopback unless told: the agent lives in the host network, where "every address"
    // includes the node's outside interfaces.
    "metrics-address": { type: "string" },
    "time-functions": { type: "string", default: "0" },
    "keep-standby-revision": { type: "string", default: "true" },
  });
  if (typeof line === "number") return line;
  const { values } = line;
  const nodeName = values["node-name"];
  if (!nodeName) return usageError("agent", "--node-name (or NODE_NAME) is required");
  const metricsPort = parsePort(values["metrics-port"]);
  if (metricsPort === undefined) {
    return usageError("agent", `--metrics-port: ${values["metrics-port"]} is not a port number`);
  }
  const chainFlags = parseChainManagerFlags("agent", values);
  if (typeof chainFlags === "number") return chainFlags;
  const { timeSample, keepStandby } = chainFlags;
  const { DEFAULT_AGENT_METRICS_ADDRESS, MetricsAddressError, parseMetricsAddress } =
    await import("../node-agent/src/agent/metrics.ts");
  let metricsAddress: string;
  try {
    metricsAddress = parseMetricsAddress(values["metrics-address"] ?? DEFAULT_AGENT_METRICS_ADDRESS);
  } catch (err) {
    if (!(err instanceof MetricsAddressError)) throw err;
    return usageError("agent", `--metrics-address: ${err.message}`);
  }
  const noKubeconfig = await kubeconfigProblem("agent", values.kubeconfig);
  if (noKubeconfig !== undefined) return noKubeconfig;
  const { KubeClient } = await import("../common/kube/client.ts");
  const { KubeStore } = await import("../common/kube/store.ts");
  const { NODE_LABEL } = await import("../common/api/index.ts");
  const { startAgent } = await import("../node-agent/src/agent/run.ts");
  const { rootLogger } = await import("../common/log.ts");
  const client = values.kubeconfig ? KubeClient.fromFile(values.kubeconfig) : KubeClient.fromDefault();
  const log = rootLogger.child({ component: "agent" });
  // The agent sees only its own node's NodeChains: its cost does not grow with the cluster.
  const store = new KubeStore(client, log, { labelSelectors: { NodeChain: `${NODE_LABEL}=${nodeName}` } });
  const release = holdOpen();
  let running;
  try {
    running = await startAgent({
      nodeName,
      store,
      bpffsRoot: values["bpffs-root"],
      cacheDir: values["cache-dir"],
      netns: values.netns,
      metricsPort,
      metricsAddress,
      timeSample,
      keepStandby,
      logger: log,
    });
  } catch (err) {
    await store.stop();
    release();
    return startFailed("agent", err);
  }
  await waitForSignal();
  rootLogger.info("stopping agent; chains stay pinned and forwarding");
  await running.stop();
  await store.stop();
  release();
  return ExitCode.Ok;
}
