/**
 * ServiceChain status that stays readable on many nodes, on a real kube-apiserver: the operator
 * runs in this process; the nodes' reports are written into the NodeChains' status the way their
 * agents write them (these nodes have no agent). Status counts nodes per revision and phase and
 * names only the first five failures; `kubectl get servicechains` shows READY, REVISION, NODES,
 * UP-TO-DATE and FAILED; the per-node detail is in `kubectl get nodechains`.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CustomObjectsApi, PatchStrategy, setHeaderOptions } from "@kubernetes/client-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startOperator, type RunningOperator } from "../../operator/src/operator.ts";
import { createTestNamespace, kubeConfig, kubeconfigPath, kubectlOk } from "./harness.ts";
import { installCrds } from "./sluice-support.ts";

const namespace = createTestNamespace("scstatus");
const api = kubeConfig().makeApiClient(CustomObjectsApi);
const NODES = 12;
/** Cluster-scoped, so named after the namespace; only this file's chain selects them. */
const nodes = Array.from({ length: NODES }, (_, i) => `${namespace}-${String(i).padStart(2, "0")}`);
const selectorLabel = "sluice.dev/test-status-summary";
const group = { group: "sluice.dev", version: "v1alpha1", namespace };

interface NodeChainView {
  metadata: { name: string; generation: number };
  spec: { nodeName: string; revision: string };
  status?: { phase?: string; observedGeneration?: number };
}

interface ServiceChainStatusView {
  revision?: string;
  nodes?: { desired: number; updated: number; ready: number; failed: number; summary?: string };
  revisions?: {
    revision: string;
    nodes: number;
    ready: number;
    failed: number;
    inProgress: number;
    pending: number;
  }[];
  failedNodes?: { node: string; reason: string; message?: string }[];
  conditions?: { type: string; status: string; reason: string; message: string }[];
}

async function nodeChains(): Promise<NodeChainView[]> {
  const list = (await api.listNamespacedCustomObject({ ...group, plural: "nodechains" })) as {
    items: NodeChainView[];
  };
  return list.items.sort((a, b) => a.spec.nodeName.localeCompare(b.spec.nodeName));
}

async function chainStatus(): Promise<ServiceChainStatusView> {
  const sc = (await api.getNamespacedCustomObject({ ...group, plural: "servicechains", name: "edge" })) as {
    status?: ServiceChainStatusView;
  };
  return sc.status ?? {};
}

async function until<T>(what: string, read: () => Promise<T>, match: (v: T) => boolean, timeoutMs = 30_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await read();
    if (match(value)) return value;
    if (Date.now() > deadline)
      throw new Error(`not ${what} within ${timeoutMs} ms: ${JSON.stringify(value)}`);
    await new Promise((ok) => setTimeout(ok, 100));
  }
}

/** What a node's agent writes into its NodeChain's status once it switched in, or refused, the plan. */
async function report(nc: NodeChainView, outcome: "Ready" | "Failed" | "Compiling"): Promise<void> {
  const at = new Date().toISOString().replace(/\.\d{3}Z$/, "Z");
  const generation = nc.metadata.generation;
  const status =
    outcome === "Ready"
      ? {
          observedGeneration: generation,
          phase: "Ready",
          revision: nc.spec.revision,
          selfTest: { passed: 1, failed: 0 },
          conditions: [
            {
              type: "Ready",
              status: "True",
              reason: "Succeeded",
              message: "live",
              lastTransitionTime: at,
              observedGeneration: generation,
            },
          ],
        }
      : outcome === "Compiling"
        ? { observedGeneration: generation, phase: "Compiling" }
        : {
            observedGeneration: generation,
            phase: "Failed",
            lastError: {
              reason: "VerifierRejected",
              // A verifier's complaint is long; status keeps a trimmed copy.
              message: `R1 invalid mem access 'scalar'\n${"; processed 4096 insns ".repeat(150)}`,
            },
            conditions: [
              {
                type: "Ready",
                status: "False",
                reason: "VerifierRejected",
                message: "kept the old chain",
                lastTransitionTime: at,
                observedGeneration: generation,
              },
            ],
          };
  await api.patchNamespacedCustomObjectStatus(
    { ...group, plural: "nodechains", name: nc.metadata.name, body: { status } },
    setHeaderOptions("Content-Type", PatchStrategy.MergePatch),
  );
}

let operator: RunningOperator;
let dataDir: string;

beforeAll(async () => {
  await installCrds();
  for (const node of nodes) {
    await kubectlOk(["apply", "-f", "-"], {
      input: JSON.stringify({
        apiVersion: "v1",
        kind: "Node",
        metadata: { name: node, labels: { [selectorLabel]: namespace } },
      }),
    });
  }
  dataDir = await mkdtemp(join(tmpdir(), "sluice-op-"));
  operator = await startOperator({
    kubeconfig: kubeconfigPath(),
    namespace,
    port: 0,
    host: "127.0.0.1",
    dataDir: join(dataDir, "operator"),
  });
});

afterAll(async () => {
  await operator?.stop();
  for (const node of nodes) await kubectlOk(["delete", "node", node, "--ignore-not-found", "--wait=false"]);
  if (dataDir) await rm(dataDir, { recursive: true, force: true });
});

describe("ServiceChain status on many nodes", () => {
  it("counts nodes per revision and phase, names the first 5 failures, and kubectl get shows the summary", async () => {
    await kubectlOk(["apply", "-n", namespace, "-f", "-"], {
      input: JSON.stringify({
        apiVersion: "v1",
        kind: "List",
        items: [
          {
            apiVersion: "sluice.dev/v1alpha1",
            kind: "NetworkFunction",
            metadata: { name: "fw" },
            spec: { hooks: ["xdp"], source: { builtin: "firewall" } },
          },
          {
            apiVersion: "sluice.dev/v1alpha1",
            kind: "ServiceChain",
            metadata: { name: "edge" },
            spec: {
              functions: [{ name: "fw" }],
              attachment: { interfaces: ["eth0"], hook: "xdp" },
              nodeSelector: { matchLabels: { [selectorLabel]: namespace } },
              rollout: { maxUnavailable: "100%" },
            },
          },
        ],
      }),
    });
    const planned = await until("a NodeChain on every node", nodeChains, (l) => l.length === NODES);
    const revision = planned[0]!.spec.revision;
    await until("counted as pending", chainStatus, (s) => s.revisions?.[0]?.pending === NODES);

    // 7 nodes refuse the revision, 2 are still compiling, 3 run it.
    for (const [i, nc] of planned.entries())
      await report(nc, i < 7 ? "Failed" : i < 9 ? "Compiling" : "Ready");
    const status = await until(
      "halted with every report counted",
      chainStatus,
      (s) => s.nodes?.failed === 7 && s.revisions?.[0]?.ready === 3,
    );
    expect(status.revision).toBe(revision);
    expect(status.nodes).toEqual({
      desired: NODES,
      updated: NODES,
      ready: 3,
      failed: 7,
      summary: `3/${NODES}`,
    });
    expect(status.revisions).toEqual([
      { revision, nodes: NODES, ready: 3, failed: 7, inProgress: 2, pending: 0 },
    ]);
    expect(status.failedNodes?.map((f) => f.node)).toEqual(nodes.slice(0, 5));
    for (const f of status.failedNodes ?? []) {
      expect(f.reason).toBe("VerifierRejected");
      expect(f.message!.length).toBeLessThanOrEqual(512);
    }
    const degraded = status.conditions?.find((c) => c.type === "Degraded");
    expect(degraded).toMatchObject({ status: "True", reason: "NodesFailed" });
    expect(degraded?.message).toContain("and 2 more failed nodes");
    expect(JSON.stringify(status).length).toBeLessThan(10_000);

    // What a user types.
    const table = await kubectlOk(["get", "servicechains", "-n", namespace]);
    const [header, row] = table.trim().split("\n");
    expect(header!.split(/\s+/)).toEqual([
      "NAME",
      "READY",
      "REVISION",
      "NODES",
      "UP-TO-DATE",
      "FAILED",
      "AGE",
    ]);
    expect(row!.split(/\s+/).slice(0, 6)).toEqual(["edge", "False", revision, `3/${NODES}`, `${NODES}`, "7"]);
    // The per-node detail is one command further.
    const perNode = await kubectlOk(["get", "nodechains", "-n", namespace, "--no-headers"]);
    expect(perNode.trim().split("\n")).toHaveLength(NODES);
    expect(perNode).toContain("Failed");
  });
});
