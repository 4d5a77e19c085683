/**
 * Global setup of the `deployed` project: what a user does before `helm install`. It builds the
 * images (`npm run images`), starts the local one-node cluster whose kubelet runs them
 * (`npm run cluster -- up`), and tears the cluster down at the end (`npm run cluster -- down`).
 *
 * Nothing is skipped: a missing prerequisite (root, Go for the Kubernetes binaries, Debian
 * packages, bpffs) makes one of the two scripts fail, and this setup fails with its message.
 */
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import type { TestProject } from "vitest/node";
import { repoRoot } from "../support/sluice.ts";
import { API_SERVER } from "./node.ts";

declare module "vitest" {
  interface ProvidedContext {
    /** Path of a kubeconfig whose current context is cluster-admin on the test API server. */
    clusterKubeconfig: string;
    /** Directory holding the test binaries: kube-apiserver, etcd, kubectl, helm. */
    clusterBinDir: string;
    /** HTTPS URL of the test API server. */
    clusterServer: string;
  }
}

/** A script of the repository failed; the message carries the tail of what it printed. */
export class DeployedSetupError extends Error {
  override name = "DeployedSetupError";
}

/**
 * Runs `npm run <script> -- args` from the repository root, as a user would. Its stderr
 * (progress) streams to ours; resolves with stdout and how long it took.
 */
function runScript(script: string, args: readonly string[]): Promise<{ stdout: string; seconds: number }> {
  const started = performance.now();
  return new Promise((resolve, reject) => {
    const child = spawn("npm", ["run", "--silent", script, "--", ...args], {
      cwd: repoRoot,
      stdio: ["ignore", "pipe", "pipe"],
    });
    const out: Buffer[] = [];
    const err: string[] = [];
    child.stdout.on("data", (b: Buffer) => out.push(b));
    child.stderr.on("data", (b: Buffer) => {
      process.stderr.write(b);
      err.push(b.toString());
    });
    child.on("error", reject);
    child.on("close", (code) => {
      const stdout = Buffer.concat(out).toString("utf8");
      const seconds = Math.round((performance.now() - started) / 100) / 10;
      if (code === 0) resolve({ stdout, seconds });
      else {
        const tail = err.join("").trimEnd().split("\n").slice(-30).join("\n");
        reject(new DeployedSetupError(`npm run ${script} -- ${args.join(" ")} exited ${code}:\n${tail}`));
      }
    });
  });
}

/** vitest globalSetup: images, cluster up, provide the kubeconfig; the teardown takes it down. */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  if (process.getuid?.() !== 0) {
    throw new DeployedSetupError("the deployed tests need root (containerd, kubelet, BPF); run them as root");
  }
  const images = await runScript("images", []);
  console.log(`deployed: npm run images took ${images.seconds} s`);

  const teardown = async (): Promise<void> => {
    const down = await runScript("cluster", ["down"]);
    console.log(`deployed: npm run cluster -- down took ${down.seconds} s`);
  };
  try {
    // A clean slate: a cluster left by a killed run (or started by hand) would carry its
    // releases and pinned chains into this one.
    await runScript("cluster", ["down"]);
    const up = await runScript("cluster", ["up"]);
    const kubeconfig = up.stdout.trim().split("\n").at(-1) ?? "";
    if (!existsSync(kubeconfig)) {
      throw new DeployedSetupError(
        `cluster up did not print a kubeconfig path as its last line: ${up.stdout}`,
      );
    }
    const bin = (await runScript("testbin", [])).stdout.trim().split("\n").at(-1) ?? "";
    console.log(`deployed: npm run cluster -- up took ${up.seconds} s`);
    project.provide("clusterKubeconfig", kubeconfig);
    project.provide("clusterBinDir", bin);
    project.provide("clusterServer", API_SERVER);
  } catch (err) {
    await teardown().catch(() => undefined);
    throw err;
  }
  return teardown;
}
