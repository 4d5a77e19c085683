/**
 * `npm run images` as a user runs it on a machine without a Docker engine or a registry: the
 * images exist under the names and tag the Helm chart expects, carry compiled JavaScript and
 * production dependencies only, and run `sluice` the way the chart runs them (the operator as
 * uid 65532 with no capabilities, the agent as uid 0 with CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN
 * only, both on a read-only root filesystem with a writable /tmp), through runc, the runtime
 * the cluster's containerd uses.
 */
import { execFile, spawn } from "node:child_process";
import { existsSync, readdirSync, statSync } from "node:fs";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";
import { promisify } from "node:util";
import { parse } from "yaml";
import { beforeAll, describe, expect, test } from "vitest";
import { CHART_AGENT_CAPS, repoRoot } from "../support/sluice.ts";

const exec = promisify(execFile);

/** The tag `npm run images` gives the operator and agent images: the chart's appVersion. */
const appVersion = String(
  (parse(await readFile(join(repoRoot, "charts/sluice/Chart.yaml"), "utf8")) as { appVersion: unknown })
    .appVersion,
);
const OPERATOR_IMAGE = `localhost/sluice-operator:${appVersion}`;
const AGENT_IMAGE = `localhost/sluice-agent:${appVersion}`;
const PAUSE_IMAGE = "localhost/sluice-pause:3.10";

/** What the Dockerfiles leave out of the images: the development toolchain. */
const DEV_PACKAGES = ["tsx", "typescript", "esbuild", "@esbuild", "vitest", "eslint", "prettier"];

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `npm run images`, as the README says, and returns its output and how long it took. */
function npmRunImages(): Promise<Run & { seconds: number }> {
  const start = performance.now();
  return new Promise((resolve, reject) => {
    const child = spawn("npm", ["run", "--silent", "images"], {
      cwd: repoRoot,
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    child.on("error", reject);
    child.on("close", (code) =>
      resolve({ code: code ?? -1, stdout, stderr, seconds: (performance.now() - start) / 1000 }),
    );
  });
}

/** Global flags that point buildah at the storage `npm run images` builds into. */
let storageFlags: string[] = [];

async function buildah(...args: string[]): Promise<string> {
  const { stdout } = await exec("buildah", [...storageFlags, ...args], { maxBuffer: 64 << 20 });
  return stdout.trim();
}

/** The parts of an image's configuration a container runtime uses to start it. */
interface ImageConfig {
  Env?: string[];
  WorkingDir?: string;
  Entrypoint?: string[];
  User?: string;
}

async function imageConfig(image: string): Promise<ImageConfig> {
  const inspected = JSON.parse(await buildah("inspect", "--type", "image", image)) as {
    OCIv1: { config: ImageConfig };
  };
  return inspected.OCIv1.config;
}

/** An image's root filesystem, mounted read-write for inspection; `close()` removes it. */
async function mountImage(image: string): Promise<{ root: string; close: () => Promise<void> }> {
  const container = await buildah("from", "--pull=false", image);
  try {
    const root = await buildah("mount", container);
    return {
      root,
      close: async () => {
        await buildah("umount", container);
        await buildah("rm", container);
      },
    };
  } catch (err) {
    await buildah("rm", container);
    throw err;
  }
}

/** How a container of the chart runs: its user, capabilities, extra mounts and command. */
interface ChartContainer {
  uid: number;
  capabilities: string[];
  /** Arguments after the image's entrypoint, like a pod's `args`. */
  args?: string[];
  /** Replaces the entrypoint, like a pod's `command`. */
  command?: string[];
  /** Read-only bind mounts, host path → container path. */
  binds?: Record<string, string>;
}

/**
 * Runs a container of `image` with runc as the chart's pod spec would have containerd run it:
 * read-only root filesystem, a tmpfs at /tmp (the chart's emptyDir), the image's environment
 * with HOME=/tmp, the given uid and exactly the given capabilities, no privilege escalation,
 * and its own network namespace.
 */
async function runAsChart(image: string, container: ChartContainer): Promise<Run> {
  const config = await imageConfig(image);
  const rootfs = await mountImage(image);
  const bundle = await mkdtemp(join(tmpdir(), "sluice-image-run-"));
  const id = basename(bundle);
  try {
    await exec("runc", ["spec", "--bundle", bundle]);
    const spec = JSON.parse(await readFile(join(bundle, "config.json"), "utf8")) as {
      root: { path: string; readonly: boolean };
      process: Record<string, unknown>;
      mounts: Record<string, unknown>[];
    };
    spec.root = { path: rootfs.root, readonly: true };
    const env = (config.Env ?? []).filter((entry) => !entry.startsWith("HOME="));
    const caps = container.capabilities.map((cap) => `CAP_${cap}`);
    spec.process = {
      ...spec.process,
      terminal: false,
      user: { uid: container.uid, gid: container.uid },
      args: container.command ?? [...(config.Entrypoint ?? []), ...(container.args ?? [])],
      env: [...env, "HOME=/tmp"],
      cwd: config.WorkingDir || "/",
      capabilities: { bounding: caps, effective: caps, permitted: caps, inheritable: [], ambient: [] },
      noNewPrivileges: true,
    };
    spec.mounts.push({
      destination: "/tmp",
      type: "tmpfs",
      source: "tmpfs",
      options: ["nosuid", "nodev", "mode=1777"],
    });
    for (const [from, to] of Object.entries(container.binds ?? {})) {
      spec.mounts.push({ destination: to, type: "bind", source: from, options: ["rbind", "ro"] });
    }
    await writeFile(join(bundle, "config.json"), JSON.stringify(spec));
    return await new Promise<Run>((resolve, reject) => {
      execFile("runc", ["run", "--bundle", bundle, id], { maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
        const code = err === null ? 0 : typeof err.code === "number" ? err.code : undefined;
        if (code === undefined) reject(err ?? new Error("runc run failed"));
        else resolve({ code, stdout, stderr });
      });
    });
  } finally {
    await exec("runc", ["delete", "--force", id]).catch(() => undefined);
    await rootfs.close();
    await rm(bundle, { recursive: true, force: true });
  }
}

/** Files under `dir` (not following node_modules) whose names end in `.ts` but not `.d.ts`. */
function typeScriptSources(dir: string): string[] {
  const found: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory() && entry.name !== "node_modules") found.push(...typeScriptSources(path));
    else if (entry.isFile() && entry.name.endsWith(".ts") && !entry.name.endsWith(".d.ts")) found.push(path);
  }
  return found;
}

let firstRun: Run & { seconds: number };
let archives: string[];

beforeAll(async () => {
  firstRun = await npmRunImages();
  if (firstRun.code !== 0)
    throw new Error(`npm run images failed (exit ${firstRun.code}):\n${firstRun.stderr}`);
  archives = firstRun.stdout.trim().split("\n").slice(-3);
  const { stdout } = await exec("bash", [join(repoRoot, "scripts/images.sh"), "--storage-flags"]);
  storageFlags = stdout.trim().split("\n");
}, 60 * 60_000);

describe("npm run images", () => {
  test("prints an OCI archive per image, named by the image it holds", async () => {
    expect(archives.map((path) => basename(path))).toEqual([
      "sluice-operator.tar",
      "sluice-agent.tar",
      "sluice-pause.tar",
    ]);
    const refs: string[] = [];
    for (const archive of archives) {
      expect(statSync(archive).size).toBeGreaterThan(0);
      const { stdout } = await exec("tar", ["-xOf", archive, "index.json"]);
      const index = JSON.parse(stdout) as { manifests: { annotations?: Record<string, string> }[] };
      refs.push(...index.manifests.map((m) => m.annotations?.["org.opencontainers.image.ref.name"] ?? ""));
    }
    expect(refs).toEqual([OPERATOR_IMAGE, AGENT_IMAGE, PAUSE_IMAGE]);
  });

  test("builds the images under the chart's names, tagged with the chart's appVersion", async () => {
    const names = (await buildah("images", "--format", "{{.Name}}:{{.Tag}}")).split("\n");
    expect(names).toEqual(expect.arrayContaining([OPERATOR_IMAGE, AGENT_IMAGE, PAUSE_IMAGE]));
  });

  test("with nothing changed, a second run takes seconds and rewrites no archive", async () => {
    const before = archives.map((path) => statSync(path).mtimeMs);
    const again = await npmRunImages();
    expect(again.code, again.stderr).toBe(0);
    expect(again.seconds).toBeLessThan(15);
    expect(again.stdout.trim().split("\n").slice(-3)).toEqual(archives);
    expect(archives.map((path) => statSync(path).mtimeMs)).toEqual(before);
  }, 120_000);
});

describe.each([
  { image: OPERATOR_IMAGE, bpf: false },
  { image: AGENT_IMAGE, bpf: true },
])("$image", ({ image, bpf }) => {
  test("carries the compiled CLI and production dependencies, no TypeScript or build tools", async () => {
    const rootfs = await mountImage(image);
    try {
      const app = join(rootfs.root, "opt/sluice");
      expect(existsSync(join(app, "dist/main.js"))).toBe(true);
      expect(existsSync(join(app, "node_modules/koffi/package.json"))).toBe(true);
      expect(typeScriptSources(app)).toEqual([]);
      const installed = DEV_PACKAGES.filter((name) => existsSync(join(app, "node_modules", name)));
      expect(installed).toEqual([]);
      expect(existsSync(join(app, "bpf/include/sluice.h"))).toBe(bpf);
    } finally {
      await rootfs.close();
    }
  });
});

describe("as the chart runs them", () => {
  test("the operator image runs `sluice help` as uid 65532 with no capabilities", async () => {
    const run = await runAsChart(OPERATOR_IMAGE, { uid: 65532, capabilities: [], args: ["help"] });
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toContain("sluice operator");
  });

  const agentCaps = Object.keys(CHART_AGENT_CAPS).map((cap) => cap.replace(/^CAP_/, ""));

  test("the agent image runs `sluice help` as uid 0 with only the chart's capabilities", async () => {
    const run = await runAsChart(AGENT_IMAGE, { uid: 0, capabilities: agentCaps, args: ["help"] });
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toContain("sluice agent");
  });

  test("the agent image has clang and the headers, and compiles every built-in network function with them", async () => {
    const clang = await runAsChart(AGENT_IMAGE, {
      uid: 0,
      capabilities: agentCaps,
      command: ["clang", "--version"],
    });
    expect(clang.code, clang.stderr).toBe(0);
    expect(clang.stdout).toMatch(/clang version \d+/);

    // The agent image's command runs only `sluice agent` (its entry has no operator code, so no
    // `sluice validate`); this compiles what the agent compiles, with the image's clang, the
    // chain header it ships and the system headers it installs. The Helm test proves the agent
    // itself compiles and loads the example chain on the node.
    const script = [
      "set -e",
      "multiarch=$(clang -print-multiarch)",
      "n=0",
      "for c in /opt/sluice/bpf/nf/*/*.bpf.c; do",
      '  clang -O2 -g -target bpf -I /opt/sluice/bpf/include -I "$(dirname "$c")" -idirafter "/usr/include/$multiarch" -c "$c" -o /tmp/nf.o',
      "  n=$((n + 1))",
      "done",
      'echo "$n functions compiled"',
    ].join("\n");
    const compiled = await runAsChart(AGENT_IMAGE, {
      uid: 0,
      capabilities: agentCaps,
      command: ["sh", "-c", script],
    });
    expect(compiled.code, compiled.stderr + compiled.stdout).toBe(0);
    const count = /\b(\d+) functions compiled\b/.exec(compiled.stdout);
    expect(Number(count?.[1] ?? 0), compiled.stdout).toBeGreaterThanOrEqual(4);
  }, 120_000);

  test("the operator's and the agent's own code loads: without a cluster they stop at the kubeconfig", async () => {
    const runs = [
      await runAsChart(OPERATOR_IMAGE, {
        uid: 65532,
        capabilities: [],
        args: ["operator", "--kubeconfig", "/missing/kubeconfig"],
      }),
      await runAsChart(AGENT_IMAGE, {
        uid: 0,
        capabilities: agentCaps,
        args: ["agent", "--node-name", "node-1", "--kubeconfig", "/missing/kubeconfig"],
      }),
    ];
    for (const run of runs) {
      expect(run.code).not.toBe(0);
      expect(run.stderr + run.stdout).toContain("/missing/kubeconfig");
      expect(run.stderr + run.stdout).not.toMatch(/ERR_MODULE_NOT_FOUND|Cannot find (package|module)/);
    }
  });

  test("the pause image starts its static binary", async () => {
    const run = await runAsChart(PAUSE_IMAGE, { uid: 65535, capabilities: [], args: ["-v"] });
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toContain("sluice-pause");
  });
});
