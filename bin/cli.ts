/**
 * What every sluice command shares: exit codes, each command's usage text, and one way to parse
 * a command line. A user's mistake on the command line gets one line naming it and the command's
 * usage (exit 2), never a stack trace; `--help` and `-h` print the usage (exit 0).
 */
import { parseArgs, type ParseArgsConfig } from "node:util";

/** The flags a command takes, as `parseArgs` describes them. */
type Flags = NonNullable<ParseArgsConfig["options"]>;

/** Exit codes a script can rely on. */
export const ExitCode = {
  Ok: 0,
  /** The command ran and found a problem (invalid manifests, failed vectors). */
  Failed: 1,
  /** The command line itself is wrong. */
  Usage: 2,
  /** Something this host lacks (root, bpffs, clang, a kernel feature, a kubeconfig). */
  Environment: 3,
} as const;

/** Usage of each command, as `sluice <command> --help` prints it. */
export const commandUsage = {
  run: `usage: sluice run --source <git url or directory> [--ref BRANCH] [--tag T | --semver R | --commit SHA]
                  [--path DIR] [--name local] [--interval 10s] [--port 9470] [--data-dir DIR]
                  [--bpffs-root DIR] [--netns NS] [--webhook-token T] [--time-functions N]
                  [--keep-standby-revision true|false]
  Follows a Git repository and runs its chains on this host, without a cluster.
  --time-functions N times 1 in N packets (a power of two) in each function, for the mean ns
  per packet per function on the live view and /metrics; 0 (the default) is off, at no cost.
  --keep-standby-revision (default true) keeps the revision a switch replaced loaded, so that
  a switch back to it loads nothing; it costs one more revision's programs and tables per chain.
`,
  status: `usage: sluice status [--json | --watch] [--port 9470]
  Shows the chains of a running \`sluice run\`, with per-function rates.
`,
  operator: `usage: sluice operator [--kubeconfig FILE] [--namespace NS[,NS...]] [--port 8080] [--data-dir DIR]
                       [--advertise-url URL] [--allow-cross-namespace] [--allow-file-sources]
                       [--allowed-git-hosts HOST[,HOST...]]
                       [--agent-metrics-port PORT [--agent-rates-idle-interval 0s]]
                       [--leader-elect [--leader-elect-namespace NS] [--leader-elect-lease NAME]
                        [--leader-elect-id ID] [--leader-elect-duration 15s]]
  The control plane in a cluster: GitSource sync, apply and prune, chain planning and rollout.
  The kubeconfig is --kubeconfig, else $KUBECONFIG, else ~/.kube/config, else the pod's
  service account.

  The live view at / shows every chain on every node; with --agent-metrics-port (the agents'
  --metrics-port) it asks each node's agent, at the Node's InternalIP, for its rates: every
  second while a page is open, and otherwise only every --agent-rates-idle-interval if it is
  not 0s (the default: nobody looking, no request).

  Flags for clusters shared by teams (all off by default):
    --allow-cross-namespace   a GitSource may apply objects into other namespaces than its own
                              (off: an object naming another namespace invalidates the revision)
    --allow-file-sources      follow file:// GitSource URLs, which read the operator's own disk
    --allowed-git-hosts H,... follow only URLs on these hosts (host, host:port or *.domain)
`,
  agent: `usage: sluice agent --node-name NAME [--kubeconfig FILE] [--netns NS] [--bpffs-root DIR]
                    [--cache-dir DIR] [--metrics-port 9471 (0: off)]
                    [--metrics-address 127.0.0.1 (an IP of the node; 0.0.0.0: all)]
                    [--time-functions N (1 in N packets timed per function; 0: off)]
                    [--keep-standby-revision true|false (default true)]
  The data plane on one node: compiles, loads, tests and switches the NodeChains of this node.
  --keep-standby-revision keeps the revision a switch replaced loaded, so that a switch back to
  it (a rollback) loads nothing; it costs one more revision's programs and tables per chain.
  --node-name defaults to $NODE_NAME; the kubeconfig is found as for \`sluice operator\`.
`,
  validate: `usage: sluice validate <dir> [--no-load] [--cache-dir DIR] [--json]
  Manifests, plans, compile, verifier; nothing is attached (for CI).
`,
  test: `usage: sluice test <dir> [--cache-dir DIR] [--json]
  Validate, then run every function and chain test vector in the kernel.
`,
  help: `usage: sluice help [command]
  Shows the usage of every command, or of one.
`,
} as const;

/** A sluice command's name. */
export type CommandName = keyof typeof commandUsage;

/** True when `name` is a sluice command. */
export function isCommand(name: string): name is CommandName {
  return Object.hasOwn(commandUsage, name);
}

/** Usage of the whole CLI, as `sluice help` prints it. */
export const usage = `sluice — GitOps for chains of eBPF network functions

${Object.values(commandUsage).join("\n")}
--netns NS (run, agent): drive the interfaces of network namespace NS (a name under /run/netns
  or a path) from outside it. Entering a namespace needs CAP_SYS_ADMIN, so this is for root only;
  with just CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN (as the Helm chart runs the agent), start
  sluice inside the namespace instead: nsenter --net=/run/netns/NS sluice run ...

Exit codes: 0 ok, 1 the command found a problem, 2 bad usage, 3 this host lacks something.
`;

/**
 * A flag's value that the command refused once it looked at it (a `--source` that is no
 * repository, a `--name` that is no object name): reported as a usage error, exit 2.
 */
export class UsageError extends Error {
  override name = "UsageError";
}

/**
 * Reports a usage error: one line naming the problem, then the command's usage, on stderr.
 * Returns the exit code to end with.
 */
export function usageError(command: CommandName | undefined, problem: string): number {
  const prefix = command ? `sluice ${command}` : "sluice";
  const text = command ? commandUsage[command] : usage;
  process.stderr.write(`${prefix}: ${problem}\n\n${text}`);
  return ExitCode.Usage;
}

/** The flags and positional arguments of a command line that parsed. */
export type CommandLine<O extends Flags> = ReturnType<
  typeof parseArgs<{ args: string[]; options: O; strict: true; allowPositionals: true }>
>;

/**
 * Parses `argv` for `command`. Returns the parsed flags, or an exit code when the command should
 * end now: 0 after printing the usage for `--help`/`-h`, 2 after a usage error. Positional
 * arguments are refused unless `positionals` is set.
 */
export function parseCommandLine<const O extends Flags>(
  command: CommandName,
  argv: string[],
  options: O,
  { positionals = false }: { positionals?: boolean } = {},
): CommandLine<O> | number {
  // Asking for help wins over any mistake next to it; `--` ends the flags.
  const flags = argv.includes("--") ? argv.slice(0, argv.indexOf("--")) : argv;
  if (flags.includes("--help") || flags.includes("-h")) {
    process.stdout.write(commandUsage[command]);
    return ExitCode.Ok;
  }
  let parsed: CommandLine<O>;
  try {
    parsed = parseArgs({ args: argv, options, strict: true, allowPositionals: true });
  } catch (err) {
    const problem = parseArgsProblem(err);
    if (problem === undefined) throw err;
    return usageError(command, problem);
  }
  if (!positionals && parsed.positionals.length > 0) {
    return usageError(command, `unexpected argument ${JSON.stringify(parsed.positionals[0])}`);
  }
  return parsed;
}

/**
 * The first sentence of one of `parseArgs`'s errors ("unknown option '--bogus'"); its second
 * sentence is advice about `--` that rarely applies. Undefined for any other error.
 */
function parseArgsProblem(err: unknown): string | undefined {
  const code = errorCode(err);
  if (!(err instanceof TypeError) || code === undefined || !code.startsWith("ERR_PARSE_ARGS_")) {
    return undefined;
  }
  const first = err.message.split(/\.\s/)[0]!.replace(/\.$/, "");
  return first.charAt(0).toLowerCase() + first.slice(1);
}

/** Parses a TCP port flag; undefined when it is not a port number (0 means "any" or "off"). */
export function parsePort(text: string): number | undefined {
  const port = Number(text);
  return /^\d+$/.test(text) && port <= 65535 ? port : undefined;
}

/** Most packets one sample of `--time-functions` stands for. */
export const MAX_TIME_SAMPLE = 1 << 20;

/**
 * `--time-functions N`: time 1 in N packets in each function, N a power of two (1: every
 * packet) up to {@link MAX_TIME_SAMPLE}; `0` is off. Undefined when `text` is none of these.
 */
export function parseTimeSample(text: string): number | undefined {
  const n = Number(text);
  if (!/^\d+$/.test(text) || n > MAX_TIME_SAMPLE) return undefined;
  return n === 0 || (n & (n - 1)) === 0 ? n : undefined;
}

/**
 * `--keep-standby-revision true|false`: whether a switch keeps the revision it replaced loaded
 * (ChainManagerOptions.keepStandby). Undefined for anything else.
 */
export function parseOnOff(text: string): boolean | undefined {
  return text === "true" ? true : text === "false" ? false : undefined;
}

/** What `--time-functions` takes, for usage errors. */
export const TIME_SAMPLE_HELP = `a power of two up to ${MAX_TIME_SAMPLE} (time 1 in N packets), or 0 (off)`;

/**
 * The chain manager's flags that `sluice agent` and `sluice run` share (`--time-functions`,
 * `--keep-standby-revision`), or the exit code of the usage error naming the bad one.
 */
export function parseChainManagerFlags(
  command: CommandName,
  values: { "time-functions": string; "keep-standby-revision": string },
): { timeSample: number; keepStandby: boolean } | number {
  const timeSample = parseTimeSample(values["time-functions"]);
  if (timeSample === undefined) {
    return usageError(command, `--time-functions: ${values["time-functions"]} is not ${TIME_SAMPLE_HELP}`);
  }
  const keepStandby = parseOnOff(values["keep-standby-revision"]);
  if (keepStandby === undefined) {
    return usageError(
      command,
      `--keep-standby-revision: ${values["keep-standby-revision"]} is not true or false`,
    );
  }
  return { timeSample, keepStandby };
}

/**
 * What the host refused while a long-running command started (a port in use, a path that is
 * not there or not allowed): an error from the operating system carrying a code such as
 * `EADDRINUSE`, which the user fixes by changing a flag or the host, not the code. Returns its
 * message for one line, or undefined for anything else, which is a bug and keeps its stack.
 */
export function hostProblem(err: unknown): string | undefined {
  const code = errorCode(err);
  return err instanceof Error && code !== undefined && /^E[A-Z]+$/.test(code) ? err.message : undefined;
}

/** The `code` of a Node error (`ENOENT`, `ERR_PARSE_ARGS_UNKNOWN_OPTION`), if it has one. */
export function errorCode(err: unknown): string | undefined {
  return err instanceof Error && "code" in err && typeof err.code === "string" ? err.code : undefined;
}
