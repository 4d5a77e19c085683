/**
 * How tests start `sluice` processes: the command users run, with the identity the Helm chart
 * gives it. One place, so that every test that drives the agent runs it with the chart's
 * capabilities (a path that needs more fails here, not on a user's node).
 */
import { readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

/** The repository root. */
export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), "../..");

/**
 * The `sluice` command as users start it: `bin/sluice.mjs`, which runs the compiled JavaScript in
 * `dist/` (`npm run build`; the kernel, cluster and e2e projects check that it is current).
 */
export const SLUICE_BIN = join(repoRoot, "bin/sluice.mjs");

/**
 * The Node.js flags of `bin/sluice.mjs`'s `#!/usr/bin/env -S node <flags>` line: what an
 * installed `sluice` runs with, so that tests starting `node bin/sluice.mjs` run the same.
 */
export const SLUICE_NODE_FLAGS: readonly string[] = nodeFlagsOf(SLUICE_BIN);

/** The Node.js flags on the `#!/usr/bin/env [-S] node <flags>` line of script `path`. */
export function nodeFlagsOf(path: string): string[] {
  const shebang = readFileSync(path, "utf8").split("\n", 1)[0] ?? "";
  const match = /^#!\/usr\/bin\/env (?:-S )?node((?: \S+)*)$/.exec(shebang);
  if (!match) throw new Error(`${path}: unexpected first line ${JSON.stringify(shebang)}`);
  return match[1]!.split(" ").filter(Boolean);
}

/** `argv` of `sluice <args>` (node, its flags and the command), ready for spawn/execFile. */
export function sluiceArgv(args: readonly string[]): string[] {
  return [process.execPath, ...SLUICE_NODE_FLAGS, SLUICE_BIN, ...args];
}

/**
 * The capabilities the chart's agent container has (charts/sluice/templates/agent-daemonset.yaml:
 * drop ALL, add BPF, PERFMON, NET_ADMIN), as capability numbers (linux/capability.h).
 */
export const CHART_AGENT_CAPS = { CAP_NET_ADMIN: 12, CAP_PERFMON: 38, CAP_BPF: 39 } as const;

/** The chart agent's capability set as the bit mask /proc/<pid>/status shows (`CapEff`). */
export const CHART_AGENT_CAP_MASK = Object.values(CHART_AGENT_CAPS).reduce(
  (mask, cap) => mask | (1n << BigInt(cap)),
  0n,
);

/**
 * `setpriv` arguments that run the rest of the command line as uid 0 with exactly the chart
 * agent's capabilities: every other capability leaves the bounding set, so exec gives root these
 * three as permitted and effective, and nothing can regain the rest. The process dies with the
 * test process (`--pdeathsig`).
 */
export const CHART_AGENT_SETPRIV: readonly string[] = [
  "setpriv",
  "--pdeathsig",
  "KILL",
  "--bounding-set=-all,+bpf,+perfmon,+net_admin",
  "--inh-caps=-all",
  "--",
];

/**
 * `argv` that runs `argv` as the chart runs the agent: in network namespace `netns` when given
 * (a name under /run/netns or a path; like a hostNetwork pod, the process starts there and
 * never calls setns), with exactly the chart agent's capabilities.
 */
export function asChartAgent(argv: readonly string[], netns?: string): string[] {
  const enter =
    netns === undefined
      ? []
      : ["nsenter", `--net=${netns.includes("/") ? netns : `/run/netns/${netns}`}`, "--"];
  return [...enter, ...CHART_AGENT_SETPRIV, ...argv];
}

/** The effective capability mask of process `pid` (`CapEff` in /proc/<pid>/status). */
export function effectiveCaps(pid: number): bigint {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const line = /^CapEff:\s*([0-9a-f]+)$/m.exec(status);
  if (!line) throw new Error(`/proc/${pid}/status has no CapEff line`);
  return BigInt(`0x${line[1]}`);
}

/** The user and group the chart's operator Deployment runs as (`runAsUser`, `runAsGroup`). */
export const CHART_OPERATOR_UID = 65532;

/**
 * `argv` that runs `argv` as the chart runs the operator: uid and gid {@link CHART_OPERATOR_UID}
 * with no supplementary groups, no capabilities in any set, and no way to gain any
 * (`allowPrivilegeEscalation: false` is no_new_privs). Files it reads must be readable by that
 * user, and its data directory writable. It dies with the test process.
 */
export function asChartOperator(argv: readonly string[]): string[] {
  return [
    "setpriv",
    "--pdeathsig",
    "KILL",
    `--reuid=${CHART_OPERATOR_UID}`,
    `--regid=${CHART_OPERATOR_UID}`,
    "--clear-groups",
    "--inh-caps=-all",
    "--bounding-set=-all",
    "--no-new-privs",
    "--",
    ...argv,
  ];
}

/** The real, effective, saved and filesystem uids of process `pid` (`Uid` in /proc/<pid>/status). */
export function processUids(pid: number): number[] {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const line = /^Uid:\s*(.+)$/m.exec(status);
  if (!line) throw new Error(`/proc/${pid}/status has no Uid line`);
  return line[1]!.trim().split(/\s+/).map(Number);
}
