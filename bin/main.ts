import { parseArgs } from "node:util";

/** Exit codes a script can rely on. */
export const ExitCode = {
  Ok: 0,
  /** The command ran and found a problem (invalid manifests, failed vectors). */
  Failed: 1,
  /** The command line itself is wrong. */
  Usage: 2,
  /** Something this host lacks (root, bpffs, clang, a kernel feature). */
  Environment: 3,
} as const;

const usage = `sluice — GitOps for chains of eBPF network functions

Usage:
  sluice run --source <git url or directory> [--ref BRANCH] [--tag T | --semver R | --commit SHA]
             [--path DIR] [--name local] [--interval 10s] [--port 9470] [--data-dir DIR]
             [--bpffs-root DIR] [--netns NS] [--webhook-token T]
  sluice status [--json | --watch] [--port 9470]
  sluice operator [--kubeconfig FILE] [--namespace NS[,NS...]] [--port 8080] [--data-dir DIR] [--advertise-url URL]
                  [--allow-cross-namespace] [--allow-file-sources] [--allowed-git-hosts HOST[,HOST...]]
                  [--leader-elect [--leader-elect-namespace NS] [--leader-elect-lease NAME]
                   [--leader-elect-id ID] [--leader-elect-duration 15s]]
  sluice agent --node-name NAME [--kubeconfig FILE] [--netns NS] [--bpffs-root DIR] [--cache-dir DIR]
               [--metrics-port 9471 (0: off)] [--metrics-address 127.0.0.1 (an IP of the node; 0.0.0.0: all)]
  sluice validate <dir> [--no-load] [--cache-dir DIR] [--json]
                  manifests, plans, compile, verifier; nothing is attached (for CI)
  sluice test <dir> [--cache-dir DIR] [--json]
                  validate, then run every NF and chain test vector in the kernel
  sluice help

Operator flags for clusters shared by teams (all off by default):
  --allow-cross-namespace   a GitSource may apply objects into other namespaces than its own
                            (off: an object naming another namespace invalidates the revision)
  --allow-file-sources      follow file:// GitSource URLs, which read the operator's own disk
  --allowed-git-hosts H,... follow only URLs on these hosts (host, host:port or *.domain)

--netns NS (run, agent): drive the interfaces of network namespace NS (a name under /run/netns
  or a path) from outside it. Entering a namespace needs CAP_SYS_ADMIN, so this is for root only;
  with just CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN (as the Helm chart runs the agent), start
  sluice inside the namespace instead: nsenter --net=/run/netns/NS sluice run ...

Exit codes: 0 ok, 1 the command found a problem, 2 bad usage, 3 this host lacks something.
`;

/** Runs one sluice command; returns the exit code. */
export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  switch (command) {
    case "operator":
      return operator(rest);
    case "agent":
      return agent(rest);
    case "run":
      return run(rest);
    case "status":
      return status(rest);
    case "validate":
      return (await import("./validate.ts")).validate(rest);
    case "test":
      return (await import("./validate.ts")).test(rest);
    case undefined:
    case "help":
    case "--help":
    case "-h":
      process.stdout.write(usage);
      return command === undefined ? ExitCode.Usage : ExitCode.Ok;
    default:
      process.stderr.write(`sluice: unknown command ${JSON.stringify(command)}\n\n${usage}`);
      return ExitCode.Usage;
  }
}

async function operator(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      kubeconfig: { type: "string" },
      namespace: { type: "string" },
      port: { type: "string", default: "8080" },
      host: { type: "string" },
      "data-dir": { type: "string", default: "/var/lib/sluice" },
      "advertise-url": { type: "string" },
      "leader-elect": { type: "boolean", default: false },
      "leader-elect-namespace": { type: "string", default: process.env.POD_NAMESPACE },
      "leader-elect-lease": { type: "string", default: "sluice-operator" },
      "leader-elect-id": { type: "string" },
      "leader-elect-duration": { type: "string", default: "15s" },
      "allow-cross-namespace": { type: "boolean", default: false },
      "allow-file-sources": { type: "boolean", default: false },
      "allowed-git-hosts": { type: "string" },
      help: { type: "boolean", short: "h", default: false },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(usage);
    return ExitCode.Ok;
  }
  const list = (value: string | undefined) =>
    value
      ?.split(",")
      .map((v) => v.trim())
      .filter(Boolean);
  const port = Number(values.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    process.stderr.write(`sluice operator: --port: ${values.port} is not a port number\n`);
    return ExitCode.Usage;
  }
  const { parseDuration } = await import("../common/api/meta.ts");
  const { leaderTimings } = await import("../common/kube/leader.ts");
  const leaseMs = parseDuration(values["leader-elect-duration"]);
  if (values["leader-elect"] && !(leaseMs >= 3_000)) {
    process.stderr.write("sluice operator: --leader-elect-duration: give a duration of at least 3s\n");
    return ExitCode.Usage;
  }
  const leaseNamespace = values["leader-elect-namespace"];
  if (values["leader-elect"] && !leaseNamespace) {
    process.stderr.write(
      "sluice operator: --leader-elect needs --leader-elect-namespace (or POD_NAMESPACE)\n",
    );
    return ExitCode.Usage;
  }
  const { startOperator } = await import("../operator/src/operator.ts");
  const { rootLogger } = await import("../common/log.ts");
  const running = await startOperator({
    kubeconfig: values.kubeconfig,
    namespace: list(values.namespace),
    sources: {
      allowCrossNamespace: values["allow-cross-namespace"],
      allowFileSources: values["allow-file-sources"],
      allowedGitHosts: list(values["allowed-git-hosts"]),
    },
    port,
    host: values.host,
    dataDir: values["data-dir"],
    advertiseUrl: values["advertise-url"],
    leaderElection:
      values["leader-elect"] && leaseNamespace
        ? {
            namespace: leaseNamespace,
            leaseName: values["leader-elect-lease"],
            identity: values["leader-elect-id"],
            ...leaderTimings(leaseMs),
          }
        : undefined,
  });
  await waitForSignal();
  rootLogger.info("stopping operator");
  await running.stop();
  return ExitCode.Ok;
}

async function run(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      source: { type: "string" },
      ref: { type: "string" },
      tag: { type: "string" },
      semver: { type: "string" },
      commit: { type: "string" },
      path: { type: "string", default: "." },
      name: { type: "string", default: "local" },
      interval: { type: "string", default: "10s" },
      port: { type: "string", default: "9470" },
      "data-dir": { type: "string", default: "/var/lib/sluice" },
      "bpffs-root": { type: "string" },
      netns: { type: "string" },
      "webhook-token": { type: "string" },
    },
    strict: true,
  });
  if (!values.source) {
    process.stderr.write(
      "sluice run: --source is required (a Git URL or a directory with a Git repository)\n",
    );
    return ExitCode.Usage;
  }
  const port = Number(values.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    process.stderr.write(`sluice run: --port: ${values.port} is not a port number\n`);
    return ExitCode.Usage;
  }
  const refs = (["tag", "semver", "commit"] as const).filter((k) => values[k] !== undefined);
  if (refs.length + (values.ref ? 1 : 0) > 1) {
    process.stderr.write("sluice run: give at most one of --ref, --tag, --semver, --commit\n");
    return ExitCode.Usage;
  }
  const ref = values.ref ? { branch: values.ref } : refs[0] ? { [refs[0]]: values[refs[0]] } : undefined;
  const { startSingleHost } = await import("./run.ts");
  const { cliLogger } = await import("./format.ts");
  const log = cliLogger();
  let host;
  try {
    host = await startSingleHost({
      source: values.source,
      ref,
      path: values.path,
      name: values.name,
      interval: values.interval,
      port,
      dataDir: values["data-dir"],
      bpffsRoot: values["bpffs-root"],
      netns: values.netns,
      webhookToken: values["webhook-token"],
      log,
    });
  } catch (err) {
    process.stderr.write(`sluice run: ${err instanceof Error ? err.message : String(err)}\n`);
    const { HostNotReadyError } = await import("./run.ts");
    return err instanceof HostNotReadyError ? ExitCode.Environment : ExitCode.Failed;
  }
  process.stderr.write(
    `sluice run: following ${values.source}; status at ${host.url}/status (sluice status --port ${host.port})\n`,
  );
  await waitForSignal();
  process.stderr.write("sluice run: stopping; chains stay pinned and forwarding\n");
  await host.stop();
  return ExitCode.Ok;
}

async function status(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      json: { type: "boolean", default: false },
      watch: { type: "boolean", default: false },
      port: { type: "string", default: "9470" },
    },
    strict: true,
  });
  const { fetchStatus, formatStatus } = await import("./format.ts");
  if (values.watch) {
    // Redraws the table every second until Ctrl-C; rates come from the endpoint's own samples.
    let stop = false;
    void waitForSignal().then(() => (stop = true));
    while (!stop) {
      const got = await fetchStatus(values.port);
      process.stdout.write(
        "\x1b[H\x1b[2J" + (got.ok ? formatStatus(got.doc) : `sluice status: ${got.error}\n`),
      );
      await new Promise((r) => setTimeout(r, 1000));
    }
    return ExitCode.Ok;
  }
  const got = await fetchStatus(values.port);
  if (!got.ok) {
    process.stderr.write(`sluice status: ${got.error}\n`);
    return ExitCode.Environment;
  }
  if (values.json) {
    process.stdout.write(JSON.stringify(got.doc, null, 2) + "\n");
    return ExitCode.Ok;
  }
  process.stdout.write(formatStatus(got.doc));
  return ExitCode.Ok;
}

async function agent(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      "node-name": { type: "string", default: process.env.NODE_NAME },
      kubeconfig: { type: "string" },
      netns: { type: "string" },
      "bpffs-root": { type: "string" },
      "cache-dir": { type: "string", default: "/var/cache/sluice" },
      "metrics-port": { type: "string", default: "9471" },
      // Loopback unless told: the agent lives in the host network, where "every address"
      // includes the node's outside interfaces.
      "metrics-address": { type: "string" },
    },
    strict: true,
  });
  const nodeName = values["node-name"];
  if (!nodeName) {
    process.stderr.write("sluice agent: --node-name (or NODE_NAME) is required\n");
    return ExitCode.Usage;
  }
  const metricsPort = Number(values["metrics-port"]);
  if (!Number.isInteger(metricsPort) || metricsPort < 0 || metricsPort > 65535) {
    process.stderr.write(`sluice agent: --metrics-port: ${values["metrics-port"]} is not a port number\n`);
    return ExitCode.Usage;
  }
  const { DEFAULT_AGENT_METRICS_ADDRESS, MetricsAddressError, parseMetricsAddress } =
    await import("../node-agent/src/agent/metrics.ts");
  let metricsAddress: string;
  try {
    metricsAddress = parseMetricsAddress(values["metrics-address"] ?? DEFAULT_AGENT_METRICS_ADDRESS);
  } catch (err) {
    if (!(err instanceof MetricsAddressError)) throw err;
    process.stderr.write(`sluice agent: --metrics-address: ${err.message}\n`);
    return ExitCode.Usage;
  }
  const { KubeClient } = await import("../common/kube/client.ts");
  const { KubeStore } = await import("../common/kube/store.ts");
  const { NODE_LABEL } = await import("../common/api/index.ts");
  const { startAgent } = await import("../node-agent/src/agent/run.ts");
  const { rootLogger } = await import("../common/log.ts");
  const client = values.kubeconfig ? KubeClient.fromFile(values.kubeconfig) : KubeClient.fromDefault();
  const log = rootLogger.child({ component: "agent" });
  // The agent sees only its own node's NodeChains: its cost does not grow with the cluster.
  const store = new KubeStore(client, log, { labelSelectors: { NodeChain: `${NODE_LABEL}=${nodeName}` } });
  const running = await startAgent({
    nodeName,
    store,
    bpffsRoot: values["bpffs-root"],
    cacheDir: values["cache-dir"],
    netns: values.netns,
    metricsPort,
    metricsAddress,
    logger: log,
  });
  await waitForSignal();
  rootLogger.info("stopping agent; chains stay pinned and forwarding");
  await running.stop();
  await store.stop();
  return ExitCode.Ok;
}

function waitForSignal(): Promise<void> {
  return new Promise((resolve) => {
    process.once("SIGINT", () => resolve());
    process.once("SIGTERM", () => resolve());
  });
}
