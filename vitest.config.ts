import { defineConfig } from "vitest/config";

/**
 * Four test projects. `unit` needs no privileges; `kernel` loads real BPF into the running
 * kernel; `cluster` talks to a real kube-apiserver + etcd; `e2e` uses all of them at once.
 * Kernel and e2e files run one at a time, and after the unprivileged and cluster projects (which
 * run together): they share the kernel, and a 2-core machine, with everything else.
 */
export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: "unit",
          sequence: { groupOrder: 0 },
          include: [
            "operator/**/*.test.ts",
            "node-agent/**/*.test.ts",
            "common/**/*.test.ts",
            "test/unit/**/*.test.ts",
          ],
          testTimeout: 20_000,
        },
      },
      {
        test: {
          name: "kernel",
          sequence: { groupOrder: 1 },
          include: ["test/kernel/**/*.test.ts"],
          globalSetup: ["test/support/dist-fresh.ts", "test/kernel/global-setup.ts"],
          fileParallelism: false,
          testTimeout: 120_000,
          hookTimeout: 120_000,
        },
      },
      {
        test: {
          name: "cluster",
          sequence: { groupOrder: 0 },
          include: ["test/cluster/**/*.test.ts"],
          globalSetup: ["test/support/dist-fresh.ts", "test/cluster/global-setup.ts"],
          testTimeout: 120_000,
          hookTimeout: 120_000,
        },
      },
      {
        test: {
          name: "e2e",
          sequence: { groupOrder: 2 },
          include: ["test/e2e/**/*.test.ts"],
          globalSetup: [
            "test/support/dist-fresh.ts",
            "test/kernel/global-setup.ts",
            "test/cluster/global-setup.ts",
          ],
          fileParallelism: false,
          testTimeout: 300_000,
          hookTimeout: 300_000,
        },
      },
      {
        // The chart installed with Helm on a local node whose kubelet runs the built images
        // (`npm run images`, `npm run cluster -- up`, from the first test file that needs them:
        // see its global setup); last, as the node changes host-wide kernel settings. A cold
        // image build runs inside a hook, hence the long hook timeout.
        test: {
          name: "deployed",
          sequence: { groupOrder: 3 },
          include: ["test/deployed/**/*.test.ts"],
          globalSetup: ["test/deployed/global-setup.ts"],
          fileParallelism: false,
          testTimeout: 600_000,
          hookTimeout: 1_800_000,
        },
      },
    ],
  },
});
