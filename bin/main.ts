import {
  commandUsage,
  ExitCode,
  isCommand,
  parseCommandLine,
  parsePort,
  parseChainManagerFlags,
  usage,
  UsageError,
  usageError,
} from "./cli.ts";
import { holdOpen, kubeconfigProblem, startFailed, waitForSignal } from "./lifecycle.ts";

export { ExitCode } from "./cli.ts";

/** Runs one sluice command; returns the exit code. */
export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  switch (command) {
    case "operator":
      return operator(rest);
    case "agent":
      return (await import("./agent.ts")).agent(rest);
    case "run":
      return run(rest);
    case "status":
      return status(rest);
    case "validate":
      return (await import("./validate.ts")).validate(rest);
    case "test":
      return (await import("./validate.ts")).test(rest);
    case "help":
      return help(rest);
    case "--help":
    case "-h":
      process.stdout.write(usage);
      return ExitCode.Ok;
    case undefined:
      return usageError(undefined, "give a command");
    default:
      return usageError(
        undefined,
        command.startsWith("-")
          ? `unknown option ${JSON.stringify(command)}: options follow the command`
          : `unknown command ${JSON.stringify(command)}`,
      );
  }
}

/** `sluice help [command]`: the usage of every command, or of one. */
function help(argv: string[]): number {
  const line = parseCommandLine("help", argv, {}, { positionals: true });
  if (typeof line === "number") return line;
  const [name, ...more] = line.positionals;
  if (more.length > 0) return usageError("help", `unexpected argument ${JSON.stringify(more[0])}`);
  if (name === undefined) {
    process.stdout.write(usage);
    return ExitCode.Ok;
  }
  if (!isCommand(name)) return usageError("help", `unknown command ${JSON.stringify(name)}`);
  process.stdout.write(commandUsage[name]);
  return ExitCode.Ok;
}

async function operator(argv: string[]): Promise<number> {
  const line = parseCommandLine("operator", argv, {
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
    "agent-metrics-port": { type: "string" },
    "agent-rates-idle-interval": { type: "string", default: "0s" },
  });
  if (typeof line === "number") return line;
  const { values } = line;
  const list = (value: string | undefined) =>
    value
      ?.split(",")
      .map((v) => v.trim())
      .filter(Boolean);
  const port = parsePort(values.port);
  if (port === undefined) return usageError("operator", `--port: ${values.port} is not a port number`);
  const { parseDuration } = await import("../common/api/meta.ts");
  const agentMetricsPort =
    values["agent-metrics-port"] === undefined ? undefined : parsePort(values["agent-metrics-port"]);
  if (values["agent-metrics-port"] !== undefined && !agentMetricsPort)
    return usageError(
      "operator",
      `--agent-metrics-port: ${values["agent-metrics-port"]} is not a port number`,
    );
  const ratesIdleMs = parseDuration(values["agent-rates-idle-interval"]);
  if (!(ratesIdleMs >= 0))
    return usageError("operator", "--agent-rates-idle-interval: give a duration such as 10s (0s: off)");
  const { leaderTimings } = await import("../common/kube/leader.ts");
  const leaseMs = parseDuration(values["leader-elect-duration"]);
  if (values["leader-elect"] && !(leaseMs >= 3_000)) {
    return usageError("operator", "--leader-elect-duration: give a duration of at least 3s");
  }
  const leaseNamespace = values["leader-elect-namespace"];
  if (values["leader-elect"] && !leaseNamespace) {
    return usageError("operator", "--leader-elect needs --leader-elect-namespace (or POD_NAMESPACE)");
  }
  const noKubeconfig = await kubeconfigProblem("operator", values.kubeconfig);
  if (noKubeconfig !== undefined) return noKubeconfig;
  const { startOperator } = await import("../operator/src/operator.ts");
  const { rootLogger } = await import("../common/log.ts");
  const release = holdOpen();
  let running;
  try {
    running = await startOperator({
      kubeconfig: values.kubeconfig,
      namespace: list(values.namespace),
      sources: {
        allowCrossNamespace: values["allow-cross-namespace"],
        allowFileSources: values["allow-file-sources"],
        allowedGitHosts: list(values["allowed-git-hosts"]),
      },
      port,
      host: values.host,
      ...(agentMetricsPort ? { agentMetricsPort, agentRatesIdleIntervalMs: ratesIdleMs } : {}),
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
  } catch (err) {
    release();
    return startFailed("operator", err);
  }
  await waitForSignal();
  rootLogger.info("stopping operator");
  await running.stop();
  release();
  return ExitCode.Ok;
}

async function run(argv: string[]): Promise<number> {
  const line = parseCommandLine("run", argv, {
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
    "time-functions": { type: "string", default: "0" },
    "keep-standby-revision": { type: "string", default: "true" },
  });
  if (typeof line === "number") return line;
  const { values } = line;
  if (!values.source) {
    return usageError("run", "--source is required (a Git URL or a directory with a Git repository)");
  }
  const port = parsePort(values.port);
  if (port === undefined) return usageError("run", `--port: ${values.port} is not a port number`);
  const chainFlags = parseChainManagerFlags("run", values);
  if (typeof chainFlags === "number") return chainFlags;
  const { timeSample, keepStandby } = chainFlags;
  const refs = (["tag", "semver", "commit"] as const).filter((k) => values[k] !== undefined);
  if (refs.length + (values.ref ? 1 : 0) > 1) {
    return usageError("run", "give at most one of --ref, --tag, --semver, --commit");
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
      timeSample,
      keepStandby,
      log,
    });
  } catch (err) {
    if (err instanceof UsageError) return usageError("run", err.message);
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
  const line = parseCommandLine("status", argv, {
    json: { type: "boolean", default: false },
    watch: { type: "boolean", default: false },
    port: { type: "string", default: "9470" },
  });
  if (typeof line === "number") return line;
  const { values } = line;
  if (parsePort(values.port) === undefined) {
    return usageError("status", `--port: ${values.port} is not a port number`);
  }
  if (values.json && values.watch) return usageError("status", "give one of --json and --watch");
  const { fetchStatus, formatStatus } = await import("./format.ts");
  if (values.watch) {
    // Redraws the table every second until Ctrl-C; rates come from the endpoint's own samples,
    // sparklines from the live view's history and then from each reading.
    const { fetchLiveSnapshot, RateHistory } = await import("./sparkline.ts");
    const history = new RateHistory();
    let seeded = false;
    let stop = false;
    void waitForSignal().then(() => (stop = true));
    while (!stop) {
      const got = await fetchStatus(values.port);
      if (got.ok && !seeded) {
        const snapshot = await fetchLiveSnapshot(values.port);
        if (snapshot) history.seed(snapshot, got.doc.node);
        seeded = true;
      } else if (got.ok) history.add(got.doc);
      process.stdout.write(
        "\x1b[H\x1b[2J" + (got.ok ? formatStatus(got.doc, history) : `sluice status: ${got.error}\n`),
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
