/**
 * Global setup of the `deployed` project: a clean slate before, and the local cluster taken down
 * after (`npm run cluster -- down`, which also undoes what the kubelet changed on the host).
 *
 * The cluster itself is started by the first test file that needs it ({@link startCluster}):
 * vitest runs every project's global setup before the first test of any project, and a node
 * started here would run — with the kubelet's kernel settings (`kernel.panic_on_oops=1`), its
 * kube-proxy rules and its CPU use — under every kernel and end-to-end test before it.
 */
import { dirname } from "node:path";
import type { TestProject } from "vitest/node";
import { API_SERVER, hostFootprint } from "./node.ts";
import { DeployedSetupError, runNpm } from "./scripts.ts";

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

/** vitest globalSetup: take down a cluster a killed run left, provide where the next one will be. */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  if (process.getuid?.() !== 0) {
    throw new DeployedSetupError("the deployed tests need root (containerd, kubelet, BPF); run them as root");
  }
  // A cluster left by a killed run (or started by hand) would carry its releases and pinned
  // chains into this one.
  await runNpm("cluster", ["down"]);
  const lastLine = (text: string): string => text.trim().split("\n").at(-1) ?? "";
  const kubeconfig = lastLine((await runNpm("cluster", ["kubeconfig"])).stdout);
  project.provide("clusterKubeconfig", kubeconfig);
  project.provide("clusterBinDir", lastLine((await runNpm("testbin", [])).stdout));
  project.provide("clusterServer", API_SERVER);
  const clusterDirs = [dirname(kubeconfig), "/run/sluice-kind"];
  const before = await hostFootprint(clusterDirs);
  return async () => {
    const down = await runNpm("cluster", ["down"]);
    console.log(`deployed: npm run cluster -- down took ${down.seconds} s`);
    // Everything `up` and the tests changed on this shared host is undone.
    const after = await hostFootprint(clusterDirs);
    const changed = Object.keys(before).filter((key) => before[key] !== after[key]);
    if (changed.length > 0) {
      throw new DeployedSetupError(
        `npm run cluster -- down left the host changed: ${changed
          .map((key) => `${key}: ${JSON.stringify(before[key])} before, ${JSON.stringify(after[key])} after`)
          .join("; ")}`,
      );
    }
  };
}
