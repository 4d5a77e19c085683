/**
 * What a user notices of the sluice process itself: how fast the command answers, and how much
 * memory the long-running commands hold on every node. Runs the compiled `sluice` as users do
 * (`bin/sluice.mjs` → dist/, so `npm run build` first). Needs root, bpffs, clang, libbpf and the
 * Kubernetes test binaries (for a throwaway kube-apiserver + etcd), as the e2e tests do.
 *
 *   node --import tsx bench/process.ts [--runs 20] [--idle 30] [--bin PATH/bin/sluice.mjs]
 *
 * - start: `node -e 0` (the floor), `sluice help`, `sluice validate examples/gitops/network`
 *   with a warm compile cache; run interleaved, `--runs` times each; median and minimum.
 * - idle RSS of `sluice operator` and `sluice agent` against a fresh API server with the CRDs,
 *   and of `sluice run` with the example chain live on a veth in its own namespace: VmRSS
 *   sampled every 0.5 s for `--idle` seconds; the median of the last 10 s, the maximum, and
 *   `process.memoryUsage()` of the process at the end.
 *
 * `--bin` measures another checkout's `bin/sluice.mjs` (for before/after figures).
 */
import { execFileSync, spawn, spawnSync } from "node:child_process";
import { cp, mkdir, mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { parseArgs } from "node:util";
import clusterSetup from "../test/cluster/global-setup.ts";
import { createBpffsDir, createNetns, repoRoot, run, TestScope } from "../test/kernel/harness.ts";
import { nodeFlagsOf } from "../test/support/sluice.ts";
import { table } from "./report.ts";
import { median } from "./stats.ts";

const { values } = parseArgs({
  options: {
    runs: { type: "string", default: "20" },
    idle: { type: "string", default: "30" },
    bin: { type: "string", default: join(repoRoot, "bin/sluice.mjs") },
  },
});
const runs = Number(values.runs);
const idleSeconds = Number(values.idle);
const bin = values.bin;
/** `node` with the flags of the command's first line, as an installed `sluice` starts. */
const node = [process.execPath, ...nodeFlagsOf(bin)];
const example = join(repoRoot, "examples/gitops/network");
const MB = 2 ** 20;

/** Each command `runs` times, interleaved so that load on the machine hits all alike. */
function timeCommands(commands: Record<string, string[]>): string[][] {
  const times: Record<string, number[]> = Object.fromEntries(Object.keys(commands).map((k) => [k, []]));
  for (let i = 0; i < runs; i++) {
    for (const [name, argv] of Object.entries(commands)) {
      const start = performance.now();
      const result = spawnSync(argv[0]!, argv.slice(1), { stdio: ["ignore", "ignore", "pipe"] });
      times[name]!.push(performance.now() - start);
      if (result.status !== 0) throw new Error(`${argv.join(" ")}: exit ${result.status}: ${result.stderr}`);
    }
  }
  return Object.entries(times).map(([name, t]) => [
    name,
    `${Math.round(median(t))} ms`,
    `${Math.round(Math.min(...t))} ms`,
  ]);
}

/**
 * Preloaded into a measured process: on SIGUSR2 it writes `process.memoryUsage()` to the file
 * named by SLUICE_BENCH_MEMORY (a listener also keeps SIGUSR2 from ending the process).
 */
const memoryProbe =
  "data:text/javascript," +
  encodeURIComponent(
    `import { writeFileSync } from "node:fs";
     process.on("SIGUSR2", () => writeFileSync(process.env.SLUICE_BENCH_MEMORY, JSON.stringify(process.memoryUsage())));`,
  );

function vmRssMB(pid: number): number {
  const status = execFileSync("cat", [`/proc/${pid}/status`], { encoding: "utf8" });
  return Number(/^VmRSS:\s+(\d+) kB/m.exec(status)?.[1]) / 1024;
}

/**
 * Starts `argv` (sluice arguments, optionally behind a wrapper), waits until `ready(output)`,
 * samples its RSS while idle, and stops it. Returns one table row.
 */
async function idleRss(
  name: string,
  args: string[],
  work: string,
  options: { wrap?: (argv: string[]) => string[]; ready?: (output: string) => boolean } = {},
): Promise<string[]> {
  const memoryFile = join(work, `${name.replace(/\W+/g, "-")}.memory.json`);
  const argv = [...node, "--import", memoryProbe, bin, ...args];
  const [file, ...rest] = options.wrap ? options.wrap(argv) : argv;
  const child = spawn(file!, rest, {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, SLUICE_LOG_LEVEL: "info", SLUICE_BENCH_MEMORY: memoryFile },
  });
  let output = "";
  child.stdout.on("data", (c: Buffer) => (output += c.toString()));
  child.stderr.on("data", (c: Buffer) => (output += c.toString()));
  const exited = new Promise((resolve) => child.once("exit", resolve));
  try {
    for (const deadline = Date.now() + 60_000; !(options.ready?.(output) ?? true); await sleep(200)) {
      if (child.exitCode !== null || Date.now() > deadline)
        throw new Error(`${name}: not ready (exit ${child.exitCode}):\n${output.slice(-2000)}`);
    }
    const samples: number[] = [];
    for (let i = 0; i < idleSeconds * 2; i++) {
      await sleep(500);
      if (child.exitCode !== null)
        throw new Error(`${name} exited ${child.exitCode}:\n${output.slice(-2000)}`);
      samples.push(vmRssMB(child.pid!));
    }
    child.kill("SIGUSR2");
    await sleep(500);
    const m = JSON.parse(await readFile(memoryFile, "utf8")) as NodeJS.MemoryUsage;
    return [
      name,
      `${median(samples.slice(-20)).toFixed(0)} MB`,
      `${Math.max(...samples).toFixed(0)} MB`,
      `${(m.heapUsed / MB).toFixed(0)} / ${(m.heapTotal / MB).toFixed(0)} MB`,
      `${(m.external / MB).toFixed(1)} MB`,
    ];
  } finally {
    child.kill("SIGINT");
    const timer = setTimeout(() => child.kill("SIGKILL"), 15_000);
    await exited;
    clearTimeout(timer);
  }
}

const scope = new TestScope();
try {
  const work = await mkdtemp(join(tmpdir(), "sluice-bench-process-"));
  scope.defer(() => rm(work, { recursive: true, force: true }));
  const cacheDir = join(work, "cache");
  const validate = [...node, bin, "validate", example, "--cache-dir", cacheDir];
  spawnSync(validate[0]!, validate.slice(1), { stdio: "ignore" }); // fills the compile cache
  const start = timeCommands({
    "node -e 0": [process.execPath, "-e", "0"],
    "sluice help": [...node, bin, "help"],
    "sluice validate (warm cache)": validate,
  });
  process.stdout.write(`${table(["command", "median", "min"], start)}\n\n`);

  const provided: Record<string, string> = {};
  const teardown = await clusterSetup({
    provide: (key: string, value: string) => (provided[key] = value),
  } as unknown as Parameters<typeof clusterSetup>[0]);
  scope.defer(teardown);
  const kubeconfig = provided.clusterKubeconfig!;
  execFileSync(join(provided.clusterBinDir!, "kubectl"), [
    ...["--kubeconfig", kubeconfig, "apply", "--server-side", "-f", join(repoRoot, "crds")],
  ]);
  const operatorData = join(work, "operator");
  await mkdir(operatorData);
  const rows = [
    await idleRss(
      "sluice operator",
      ["operator", "--kubeconfig", kubeconfig, "--data-dir", operatorData, "--port", "0"],
      work,
    ),
    await idleRss(
      "sluice agent",
      [
        ...["agent", "--kubeconfig", kubeconfig, "--node-name", "bench-node", "--metrics-port", "0"],
        ...["--cache-dir", join(work, "agent-cache"), "--bpffs-root", createBpffsDir(scope).path],
      ],
      work,
    ),
  ];

  // sluice run: the example chain live on a veth in a namespace of its own.
  const netns = await createNetns(scope, "bench");
  await run("ip", ["-n", netns.name, "link", "add", "sl-node0", "type", "veth", "peer", "name", "peer0"]);
  await run("ip", ["-n", netns.name, "link", "set", "sl-node0", "up"]);
  await run("ip", ["-n", netns.name, "link", "set", "peer0", "up"]);
  const source = join(work, "repo");
  await cp(join(repoRoot, "examples/gitops"), source, { recursive: true });
  const git = (...args: string[]) =>
    run("git", ["-C", source, "-c", "user.name=bench", "-c", "user.email=bench@localhost", ...args]);
  await git("init", "--quiet", "--initial-branch=main");
  await git("add", "-A");
  await git("commit", "--quiet", "-m", "examples/gitops");
  const runData = join(work, "run");
  await mkdir(runData);
  rows.push(
    await idleRss(
      "sluice run (chain live)",
      [
        ...["run", "--source", source, "--path", "network", "--name", "edge", "--port", "0"],
        ...["--data-dir", runData, "--bpffs-root", createBpffsDir(scope).path],
      ],
      work,
      {
        wrap: (argv) => ["nsenter", `--net=${netns.path}`, "--", ...argv],
        ready: (output) => output.includes("chain is live"),
      },
    ),
  );
  process.stdout.write(
    `${table(["process (idle)", "RSS median", "RSS max", "heap used / total", "external"], rows)}\n`,
  );
} finally {
  await scope.dispose();
}
