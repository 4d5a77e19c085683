/**
 * The sluice command line as a user meets it when they get it wrong: every command answers
 * `--help` and `-h` with its usage (exit 0); a mistake on the command line exits 2 with one line
 * naming it and the command's usage; a missing or unreadable kubeconfig ends `sluice operator`
 * and `sluice agent` with one line (exit 3). None of it ever shows a stack trace. The compiled
 * command runs in a child process, as users run it.
 */
import { execFile, spawn } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { commandUsage, type CommandName, usage } from "../../bin/cli.ts";
import { asChartAgent, repoRoot, sluiceArgv } from "../support/sluice.ts";
import { BPFFS_TEST_ROOT } from "./global-setup.ts";

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

let work: string;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "sluice-cli-usage-"));
});

afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

/**
 * Runs `sluice args` with no kubeconfig anywhere it would look (no $KUBECONFIG, an empty home,
 * outside a pod) unless `env` gives one.
 */
function sluice(args: readonly string[], env: Record<string, string> = {}): Promise<Run> {
  // `sluice agent` as the chart runs it: CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN only.
  const [file, ...argv] = args[0] === "agent" ? asChartAgent(sluiceArgv(args)) : sluiceArgv(args);
  const base = { ...process.env };
  delete base.KUBECONFIG;
  delete base.KUBERNETES_SERVICE_HOST;
  delete base.NODE_NAME;
  return new Promise((resolve, reject) => {
    execFile(
      file!,
      argv,
      { cwd: repoRoot, timeout: 30_000, env: { ...base, HOME: work, ...env } },
      (err, stdout, stderr) => {
        if (err && typeof err.code !== "number") reject(err);
        else resolve({ code: err ? (err.code as number) : 0, stdout, stderr });
      },
    );
  });
}

/** A stack frame as Node prints it ("    at main (file:line)"). */
const STACK_FRAME = /^\s+at /m;

const commands = Object.keys(commandUsage) as CommandName[];

/** Arguments that make a command otherwise valid, so only the flag under test is wrong. */
const required: Record<CommandName, string[]> = {
  run: ["--source", "."],
  status: [],
  operator: [],
  agent: ["--node-name", "node-1"],
  validate: ["."],
  test: ["."],
  help: [],
};

describe("every command answers --help and -h with its usage and exit 0", () => {
  const cases = commands.flatMap((command): [CommandName, string][] => [
    [command, "--help"],
    [command, "-h"],
  ]);
  it.each(cases)("sluice %s %s", async (command, flag) => {
    const run = await sluice([command, ...required[command], flag]);
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toBe(commandUsage[command]);
    expect(run.stderr).toBe("");
  });

  it("sluice help, --help and -h print every command's usage", async () => {
    for (const args of [["help"], ["--help"], ["-h"]]) {
      const run = await sluice(args);
      expect(run.code, run.stderr).toBe(0);
      expect(run.stdout).toBe(usage);
      for (const command of commands) expect(run.stdout).toContain(commandUsage[command]);
    }
  });

  it("sluice help <command> prints that command's usage", async () => {
    const run = await sluice(["help", "agent"]);
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toBe(commandUsage.agent);
  });
});

/** Asserts a usage error: exit 2, one line naming `problem`, the usage, no stack trace. */
function expectUsageError(run: Run, prefix: string, problem: RegExp, text: string): void {
  expect(run.code, run.stderr).toBe(2);
  expect(run.stdout).toBe("");
  expect(run.stderr).not.toMatch(STACK_FRAME);
  const [line, blank, ...rest] = run.stderr.split("\n");
  expect(line).toMatch(new RegExp(`^${prefix}: `));
  expect(line).toMatch(problem);
  expect(blank).toBe("");
  expect(rest.join("\n")).toBe(text);
}

describe("a usage error exits 2 with one line naming it and the command's usage", () => {
  it.each(commands)("sluice %s --bogus names the unknown option", async (command) => {
    const run = await sluice([command, ...required[command], "--bogus"]);
    expectUsageError(run, `sluice ${command}`, /unknown option '--bogus'/, commandUsage[command]);
  });

  const invalid: [what: string, args: string[], command: CommandName, problem: RegExp][] = [
    ["a flag without its value", ["run", "--source"], "run", /option '--source <value>' argument missing/],
    [
      "a port that is no port",
      ["run", "--source", ".", "--port", "http"],
      "run",
      /--port: http is not a port/,
    ],
    ["a required flag left out", ["run"], "run", /--source is required/],
    [
      "a --source that is neither a URL nor a directory",
      ["run", "--source", "/no/such/repository"],
      "run",
      /--source \/no\/such\/repository: neither a Git URL nor a directory/,
    ],
    [
      "a --name that is no object name",
      ["run", "--source", repoRoot, "--name", "Not_A_Name"],
      "run",
      /^sluice run: --name: /,
    ],
    [
      "a --time-functions that is no power of two",
      ["run", "--source", ".", "--time-functions", "3"],
      "run",
      /--time-functions: 3 is not a power of two/,
    ],
    [
      "an agent's --time-functions that is no number",
      ["agent", "--node-name", "n", "--time-functions", "on"],
      "agent",
      /--time-functions: on is not a power of two/,
    ],
    [
      "a --keep-standby-revision that is neither true nor false",
      ["run", "--source", ".", "--keep-standby-revision", "no"],
      "run",
      /--keep-standby-revision: no is not true or false/,
    ],
    [
      "an agent's --keep-standby-revision that is neither true nor false",
      ["agent", "--node-name", "n", "--keep-standby-revision", "off"],
      "agent",
      /--keep-standby-revision: off is not true or false/,
    ],
    ["two refs at once", ["run", "--source", ".", "--tag", "v1", "--commit", "abc"], "run", /at most one of/],
    ["a value given to a switch", ["status", "--json=yes"], "status", /'--json' does not take an argument/],
    ["an argument a command does not take", ["status", "extra"], "status", /unexpected argument "extra"/],
    ["an agent without a node name", ["agent"], "agent", /--node-name \(or NODE_NAME\) is required/],
    [
      "a metrics port out of range",
      ["agent", "--node-name", "n", "--metrics-port", "70000"],
      "agent",
      /70000/,
    ],
    [
      "a short leader lease",
      ["operator", "--leader-elect", "--leader-elect-duration", "1s"],
      "operator",
      /3s/,
    ],
    ["validate without a directory", ["validate"], "validate", /give exactly one directory/],
    [
      "test with a flag only validate takes",
      ["test", ".", "--no-load"],
      "test",
      /unknown option '--no-load'/,
    ],
    ["help for a command that does not exist", ["help", "deploy"], "help", /unknown command "deploy"/],
  ];
  it.each(invalid)("%s", async (_what, args, command, problem) => {
    expectUsageError(await sluice(args), `sluice ${command}`, problem, commandUsage[command]);
  });

  it.each([
    [[], /give a command/],
    [["deploy"], /unknown command "deploy"/],
    [["--bogus"], /unknown option "--bogus"/],
  ])("sluice %j shows the whole usage", async (args, problem) => {
    expectUsageError(await sluice(args), "sluice", problem, usage);
  });
});

describe("operator and agent without a usable kubeconfig stop with one line and exit 3", () => {
  const starts: [command: string, args: string[]][] = [
    ["operator", ["operator"]],
    ["agent", ["agent", "--node-name", "node-1"]],
  ];

  it.each(starts)("sluice %s with no kubeconfig anywhere says where it looked", async (command, args) => {
    const run = await sluice(args);
    expect(run.code, run.stderr).toBe(3);
    expect(run.stderr).toBe(
      `sluice ${command}: no kubeconfig: give --kubeconfig FILE, set $KUBECONFIG, create ~/.kube/config, or run in a pod with a service account\n`,
    );
  });

  it.each(starts)(
    "sluice %s names a kubeconfig that is missing, a directory or not one",
    async (command, args) => {
      const garbage = join(work, "garbage");
      await writeFile(garbage, "not: [a kubeconfig");
      const noCluster = join(work, "no-cluster");
      await writeFile(noCluster, "apiVersion: v1\nkind: Config\nclusters: []\n");
      const cases: [flags: string[], env: Record<string, string>, message: string][] = [
        [
          ["--kubeconfig", "/missing/kubeconfig"],
          {},
          "cannot read kubeconfig /missing/kubeconfig (--kubeconfig): no such file",
        ],
        [["--kubeconfig", work], {}, `cannot read kubeconfig ${work} (--kubeconfig): a directory`],
        [
          [],
          { KUBECONFIG: "/missing/kubeconfig" },
          "cannot read kubeconfig /missing/kubeconfig ($KUBECONFIG): no such file",
        ],
        [["--kubeconfig", garbage], {}, `kubeconfig ${garbage} (--kubeconfig) is not valid: `],
        [
          ["--kubeconfig", noCluster],
          {},
          `kubeconfig ${noCluster} (--kubeconfig) has no current context with a cluster`,
        ],
      ];
      for (const [flags, env, message] of cases) {
        const run = await sluice([...args, ...flags], env);
        expect(run.code, run.stderr).toBe(3);
        expect(run.stderr).not.toMatch(STACK_FRAME);
        expect(run.stderr.split("\n")).toHaveLength(2); // one line and its newline
        expect(run.stderr).toContain(`sluice ${command}: ${message}`);
      }
    },
  );
});

describe("an agent whose API server is not reachable yet", () => {
  it("keeps retrying instead of ending without a word, and stops at SIGTERM", async () => {
    // Nothing listens on port 1: every list and watch fails at once and is retried later.
    const kubeconfig = join(work, "unreachable");
    await writeFile(
      kubeconfig,
      `apiVersion: v1
kind: Config
clusters: [{ name: c, cluster: { server: "https://127.0.0.1:1", insecure-skip-tls-verify: true } }]
users: [{ name: u, user: { token: t } }]
contexts: [{ name: x, context: { cluster: c, user: u } }]
current-context: x
`,
    );
    const [file, ...argv] = asChartAgent(
      sluiceArgv([
        "agent",
        "--node-name",
        "node-1",
        "--kubeconfig",
        kubeconfig,
        "--metrics-port",
        "0",
        "--bpffs-root",
        join(BPFFS_TEST_ROOT, `cli-usage-${process.pid}`),
        "--cache-dir",
        join(work, "cache"),
      ]),
    );
    const child = spawn(file!, argv, {
      cwd: repoRoot,
      stdio: ["ignore", "pipe", "pipe"],
      // Its log says when it retries (vitest's environment would silence it).
      env: { ...process.env, SLUICE_LOG_LEVEL: "warn" },
    });
    let output = "";
    child.stdout.on("data", (chunk: Buffer) => (output += chunk.toString()));
    child.stderr.on("data", (chunk: Buffer) => (output += chunk.toString()));
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
      child.once("exit", (code, signal) => resolve({ code, signal })),
    );
    try {
      // Three failed watches: the agent outlived the retry timers that used to be its last work.
      for (const deadline = Date.now() + 30_000; (output.match(/watch failed/g) ?? []).length < 3;) {
        if (child.exitCode !== null) throw new Error(`the agent ended with ${child.exitCode}:\n${output}`);
        if (Date.now() > deadline) throw new Error(`the agent did not retry within 30 s:\n${output}`);
        await new Promise((ok) => setTimeout(ok, 100));
      }
      expect(child.exitCode).toBeNull();
    } finally {
      child.kill("SIGTERM");
    }
    // Still starting, it ends by the signal itself; once started, it stops cleanly with 0.
    expect([
      { code: 0, signal: null },
      { code: null, signal: "SIGTERM" },
    ]).toContainEqual(await exited);
  });
});
