/**
 * The package users install: `npm pack` in the repository, `npm install -g` of the tarball into
 * an empty prefix (dependencies from the registry, as on a clean machine), then the installed
 * `sluice` from a directory outside the repository with a PATH that holds no development tools:
 * `help`, `validate` of the example (compiling from an empty cache, so the C headers must ship),
 * and `sluice run` with the chart agent's capabilities until its chain is live and its status
 * endpoint answers.
 */
import { execFile, spawn } from "node:child_process";
import { cp, mkdir, mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createBpffsDir, createNetns, repoRoot, run, TestScope, type TestNetns } from "../kernel/harness.ts";
import { asChartAgent, CHART_AGENT_CAP_MASK, effectiveCaps } from "../support/sluice.ts";

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

/** The environment of a user's shell: no npm_* variables of the test run, no node_modules/.bin. */
function cleanEnv(prefix: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (!/^npm_|^VITEST|^NODE_OPTIONS$|^INIT_CWD$/i.test(key)) env[key] = value;
  }
  const path = (process.env.PATH ?? "").split(":").filter((dir) => !dir.includes("node_modules"));
  env.PATH = [join(prefix, "bin"), ...path].join(":");
  return env;
}

function exec(file: string, args: readonly string[], cwd: string, env: NodeJS.ProcessEnv): Promise<Result> {
  return new Promise((resolve, reject) => {
    execFile(file, args, { cwd, env, timeout: 120_000, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      if (err && typeof err.code !== "number") reject(new Error(`${file} ${args.join(" ")}: ${err.message}`));
      else resolve({ code: err ? (err.code as number) : 0, stdout, stderr });
    });
  });
}

describe("the packed package, installed with npm install -g", () => {
  const scope = new TestScope();
  let work: string;
  let prefix: string;
  let env: NodeJS.ProcessEnv;
  /** The installed command, as `which sluice` finds it. */
  let sluice: string;

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), "sluice-package-"));
    scope.defer(() => rm(work, { recursive: true, force: true }));
    prefix = join(work, "prefix");
    env = cleanEnv(prefix);

    const packed = await exec("npm", ["pack", "--silent", "--pack-destination", work], repoRoot, env);
    expect(packed.code, packed.stderr).toBe(0);
    const tarball = (await readdir(work)).find((f) => /^sluice-.*\.tgz$/.test(f));
    expect(tarball, "npm pack wrote no sluice-*.tgz").toBeDefined();

    const installed = await exec(
      "npm",
      ["install", "--global", "--prefix", prefix, "--no-audit", "--no-fund", join(work, tarball!)],
      work,
      env,
    );
    expect(installed.code, installed.stderr).toBe(0);
    sluice = (await exec("sh", ["-c", "command -v sluice"], work, env)).stdout.trim();
  }, 240_000);

  afterAll(async () => {
    await scope.dispose();
  });

  it("installs a sluice command on the PATH that runs without the repository's tools", async () => {
    expect(sluice).toBe(join(prefix, "bin/sluice"));
    const help = await exec(sluice, ["help"], work, env);
    expect(help.code).toBe(0);
    expect(help.stdout).toContain("sluice — GitOps for chains of eBPF network functions");
    // What ships: the compiled code and the C headers, not the TypeScript sources or tsx.
    const pkg = join(prefix, "lib/node_modules/sluice");
    const shipped = await readdir(pkg);
    expect(shipped.sort()).toEqual(expect.arrayContaining(["bin", "bpf", "dist", "package.json"]));
    for (const absent of ["node-agent", "operator", "common", "test"]) expect(shipped).not.toContain(absent);
    // Everything but koffi (a native module) is bundled into dist/.
    const dependencies = await readdir(join(pkg, "node_modules"));
    for (const dev of ["tsx", "esbuild", "typescript", "@kubernetes"])
      expect(dependencies).not.toContain(dev);
    expect(dependencies).toContain("koffi");
  });

  it("validates the example repository: compiles with the shipped headers and loads through libbpf", async () => {
    const result = await exec(
      sluice,
      ["validate", join(repoRoot, "examples/gitops/network"), "--cache-dir", join(work, "cache")],
      work,
      env,
    );
    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout).toMatch(/ok: .*4 functions compiled \(0 from cache\)/);
  });

  it("sluice run with the chart agent's capabilities puts the example chain live and serves its status", async () => {
    const node: TestNetns = await createNetns(scope, "pkg");
    await run("ip", ["-n", node.name, "link", "add", "sl-node0", "type", "veth", "peer", "name", "peer0"]);
    await run("ip", ["-n", node.name, "link", "set", "sl-node0", "up"]);
    await run("ip", ["-n", node.name, "link", "set", "peer0", "up"]);
    const source = join(work, "repo");
    await cp(join(repoRoot, "examples/gitops"), source, { recursive: true });
    const git = (...args: string[]) =>
      run("git", ["-C", source, "-c", "user.name=test", "-c", "user.email=test@localhost", ...args]);
    await git("init", "--quiet", "--initial-branch=main");
    await git("add", "-A");
    await git("commit", "--quiet", "-m", "examples/gitops");
    const dataDir = join(work, "data");
    await mkdir(dataDir);
    const bpffs = createBpffsDir(scope);

    const argv = [
      sluice,
      ...["run", "--source", source, "--path", "network", "--name", "edge", "--port", "0"],
      ...["--data-dir", dataDir, "--bpffs-root", bpffs.path],
    ];
    const [file, ...args] = asChartAgent(argv, node.name);
    const child = spawn(file!, args, { cwd: work, env, stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    child.stdout.on("data", (chunk: Buffer) => (output += chunk.toString()));
    child.stderr.on("data", (chunk: Buffer) => (output += chunk.toString()));
    const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
    scope.defer(async () => {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill("SIGINT");
        const timer = setTimeout(() => child.kill("SIGKILL"), 15_000);
        await exited;
        clearTimeout(timer);
      }
    });

    // The status endpoint listens on loopback of the namespace sluice runs in: ask from there.
    const status = async (port: string) => {
      const got = await exec(
        "nsenter",
        [`--net=${node.path}`, sluice, "status", "--json", "--port", port],
        work,
        env,
      );
      expect(got.code, got.stderr).toBe(0);
      return JSON.parse(got.stdout) as { chains: { name: string; ready: string; interfaces?: unknown }[] };
    };
    let port: string | undefined;
    let last: unknown;
    for (const deadline = Date.now() + 60_000; Date.now() < deadline; await sleep(300)) {
      if (child.exitCode !== null) throw new Error(`sluice run exited with ${child.exitCode}:\n${output}`);
      port ??= /status at http:\/\/127\.0\.0\.1:(\d+)\/status/.exec(output)?.[1];
      if (port === undefined) continue;
      const doc = await status(port);
      last = doc;
      if (doc.chains.some((c) => c.name === "default_edge" && c.ready === "True")) break;
    }
    expect(port, `sluice run printed no status address:\n${output}`).toBeDefined();
    // By now nsenter and setpriv have exec'd node: it runs with exactly the chart's set.
    expect(effectiveCaps(child.pid!).toString(16)).toBe(CHART_AGENT_CAP_MASK.toString(16));
    expect(last, output).toMatchObject({
      chains: [expect.objectContaining({ name: "default_edge", ready: "True" })],
    });

    child.kill("SIGINT");
    expect(await exited).toBe(0);
  });
});
