/**
 * The repository's npm scripts as the deployed tests run them — the way a user does before
 * `helm install`: `npm run images`, then `npm run cluster -- up`.
 */
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { repoRoot } from "../support/sluice.ts";

/** A script of the repository failed; the message carries the tail of what it printed. */
export class DeployedSetupError extends Error {
  override name = "DeployedSetupError";
}

/**
 * Runs `npm run <script> -- args` from the repository root. Its stderr (progress) streams to
 * ours; resolves with stdout and how long it took, rejects with the tail of stderr.
 */
export function runNpm(
  script: string,
  args: readonly string[],
): Promise<{ stdout: string; seconds: number }> {
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

/**
 * Builds the images and starts (or reuses) the local cluster; call in `beforeAll` of a file that
 * needs the node, with the kubeconfig path the global setup provided. The global setup takes the
 * cluster down after the last file.
 */
export async function startCluster(expectedKubeconfig: string): Promise<void> {
  const images = await runNpm("images", []);
  console.log(`deployed: npm run images took ${images.seconds} s`);
  const up = await runNpm("cluster", ["up"]);
  const kubeconfig = up.stdout.trim().split("\n").at(-1) ?? "";
  if (kubeconfig !== expectedKubeconfig || !existsSync(kubeconfig)) {
    throw new DeployedSetupError(
      `npm run cluster -- up printed "${kubeconfig}" as its last line, not the kubeconfig ${expectedKubeconfig}`,
    );
  }
  console.log(`deployed: npm run cluster -- up took ${up.seconds} s`);
}
