/**
 * Node-scoped agents: the agent of one node may write the status only of that node's NodeChains.
 * RBAC cannot say so (it grants `patch nodechains/status` for every NodeChain or none), so the
 * chart ships a ValidatingAdmissionPolicy that the API server evaluates on every status write of
 * the agent's ServiceAccount, comparing the NodeChain's `spec.nodeName` with the node name the
 * API server put into the token's identity when the token was bound to a Node or to a Pod on a
 * node (what the kubelet mounts into the agent's pod).
 *
 * Everything here is the real kube-apiserver: the chart's ServiceAccounts, RBAC and policy are
 * rendered with helm and applied, tokens come from the TokenRequest API, and the writes are the
 * merge patches of the status subresource the agent sends (common/kube/client.ts).
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { KubeApiError, KubeClient, type KubeObject } from "../../common/kube/client.ts";
import { StoreResources } from "../../common/kube/store.ts";
import { nodeChainName, nodeLabelValue } from "../../operator/src/servicechain/plan.ts";
import { NODE_LABEL, type NodeChainPhase } from "../../common/api/index.ts";
import { type Manifest, parseManifests, renderChart, serviceAccountKubeConfig } from "./chart-support.ts";
import { createTestNamespace, kubeConfig, kubectl, kubectlOk } from "./harness.ts";
import { NODE_NAME_EXTRA } from "./identities.ts";
import { installCrds } from "./sluice-support.ts";

const namespace = createTestNamespace("node-scope");
const suffix = namespace.slice(-6);
const nodeA = `scope-a-${suffix}`;
const nodeB = `scope-b-${suffix}`;
const chain = "edge";
const NodeChainResource = StoreResources.NodeChain!;

/** The chart as installed by default (the policy on), and as installed with it turned off. */
const scoped = { release: "scoped", rendered: "", agentSA: "", operatorSA: "", policy: "" };
const unscoped = { release: "unscoped", rendered: "", agentSA: "" };

const chartTemplates = [
  "templates/serviceaccounts.yaml",
  "templates/operator-rbac.yaml",
  "templates/agent-rbac.yaml",
  "templates/agent-admission.yaml",
];

function serviceAccountOf(manifests: readonly Manifest[], component: string): string {
  const found = manifests.filter(
    (m) => m.kind === "ServiceAccount" && m.metadata.labels?.["app.kubernetes.io/component"] === component,
  );
  if (found.length !== 1) throw new Error(`the chart rendered ${found.length} ${component} ServiceAccounts`);
  return found[0]!.metadata.name;
}

/** The NodeChain of `chain` on `node`, as the operator plans it. */
function plannedNodeChain(node: string, revision: string): KubeObject {
  return {
    apiVersion: "sluice.dev/v1alpha1",
    kind: "NodeChain",
    metadata: {
      name: nodeChainName(chain, node),
      namespace,
      labels: { [NODE_LABEL]: nodeLabelValue(node) },
    },
    spec: {
      nodeName: node,
      chain,
      revision,
      interfaces: ["eth0"],
      hook: "xdp",
      functions: [{ name: "pass", networkFunction: "pass", source: { builtin: "noop" } }],
    },
  };
}

/** What the API server answered to one status write. */
type Outcome = { allowed: true } | { allowed: false; status: number; message: string };

/** The status patch an agent sends when a chain went live (or failed), as `client`. */
async function reportStatus(client: KubeClient, node: string, phase: NodeChainPhase): Promise<Outcome> {
  try {
    await client.patchStatus(NodeChainResource, namespace, nodeChainName(chain, node), {
      observedGeneration: 1,
      phase,
    });
    return { allowed: true };
  } catch (err) {
    if (!(err instanceof KubeApiError)) throw err;
    return { allowed: false, status: err.status, message: err.message };
  }
}

/** The phase `kubectl get` shows for the NodeChain of `node`. */
async function phaseOf(node: string): Promise<string> {
  return kubectlOk([
    "get",
    "nodechain",
    nodeChainName(chain, node),
    "-n",
    namespace,
    "-o",
    "jsonpath={.status.phase}",
  ]);
}

const agentClient = async (sa: string, bound: { boundToNode?: string; boundToPod?: string } = {}) =>
  new KubeClient(await serviceAccountKubeConfig(namespace, sa, bound));

beforeAll(async () => {
  await installCrds();
  for (const [release, values] of [
    [scoped, {}],
    [unscoped, { agent: { nodeScopedStatus: { enabled: false } } }],
  ] as const) {
    // Turned off, the policy template renders nothing (and helm refuses to show it).
    const showOnly = release === scoped ? chartTemplates : chartTemplates.slice(0, -1);
    release.rendered = await renderChart(release.release, namespace, { values, showOnly });
    const manifests = parseManifests(release.rendered);
    release.agentSA = serviceAccountOf(manifests, "agent");
    if (release === scoped) {
      scoped.operatorSA = serviceAccountOf(manifests, "operator");
      scoped.policy = manifests.find((m) => m.kind === "ValidatingAdmissionPolicy")?.metadata.name ?? "";
    }
    await kubectlOk(["apply", "--server-side", "-f", "-"], { input: release.rendered });
  }
  for (const node of [nodeA, nodeB]) {
    await kubectlOk(["apply", "-f", "-"], {
      input: JSON.stringify({ apiVersion: "v1", kind: "Node", metadata: { name: node } }),
    });
  }
  // The operator plans a NodeChain for each node, with its own token (not node-bound).
  const operator = new KubeClient(await serviceAccountKubeConfig(namespace, scoped.operatorSA));
  for (const node of [nodeA, nodeB]) {
    await operator.apply(NodeChainResource, plannedNodeChain(node, "rev-1"), { fieldManager: "sluice" });
  }
  // The API server picks up a new policy from its informer, a moment after it is stored: wait
  // until a write the policy refuses is refused (or fail, naming the policy).
  const unbound = await agentClient(scoped.agentSA);
  const deadline = Date.now() + 30_000;
  for (;;) {
    const outcome = await reportStatus(unbound, nodeA, "Pending");
    if (!outcome.allowed && outcome.status !== 403) {
      throw new Error(`unexpected answer while waiting for the policy: ${outcome.message}`);
    }
    if (!outcome.allowed) break;
    if (Date.now() > deadline) {
      throw new Error(
        `ValidatingAdmissionPolicy "${scoped.policy || "(not rendered)"}" took no effect within 30 s: an agent token bound to no node still writes NodeChain status`,
      );
    }
    await new Promise((ok) => setTimeout(ok, 250));
  }
}, 120_000);

afterAll(async () => {
  // The policy, its binding and the ClusterRoles are cluster-scoped: they outlive the namespace.
  for (const release of [scoped, unscoped]) {
    if (release.rendered) {
      await kubectl(["delete", "--ignore-not-found", "--wait=false", "-f", "-"], { input: release.rendered });
    }
  }
  await kubectl(["delete", "node", nodeA, nodeB, "--ignore-not-found", "--wait=false"]);
});

describe("the token the agent runs with", () => {
  it("names the node it is bound to, whether bound to the Node or to a pod on that node", async () => {
    const pod = `agent-${suffix}`;
    await kubectlOk(["apply", "-f", "-"], {
      input: JSON.stringify({
        apiVersion: "v1",
        kind: "Pod",
        metadata: { name: pod, namespace },
        spec: {
          nodeName: nodeA,
          serviceAccountName: scoped.agentSA,
          automountServiceAccountToken: false,
          containers: [{ name: "agent", image: "sluice-agent:0.1.0" }],
        },
      }),
    });
    const whoAmI = async (client: KubeClient) =>
      (
        await client.request<{
          status: { userInfo: { username: string; extra?: Record<string, string[]> } };
        }>("POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews", {
          body: { apiVersion: "authentication.k8s.io/v1", kind: "SelfSubjectReview" },
        })
      ).status.userInfo;
    const user = `system:serviceaccount:${namespace}:${scoped.agentSA}`;
    const boundToNode = await whoAmI(await agentClient(scoped.agentSA, { boundToNode: nodeA }));
    const boundToPod = await whoAmI(await agentClient(scoped.agentSA, { boundToPod: pod }));
    const unbound = await whoAmI(await agentClient(scoped.agentSA));
    expect(boundToNode.username).toBe(user);
    expect(boundToNode.extra?.[NODE_NAME_EXTRA]).toEqual([nodeA]);
    // What the kubelet mounts into the DaemonSet's pod: bound to the pod, which is on nodeA.
    expect(boundToPod.username).toBe(user);
    expect(boundToPod.extra?.[NODE_NAME_EXTRA]).toEqual([nodeA]);
    expect(unbound.extra?.[NODE_NAME_EXTRA]).toBeUndefined();

    // That pod token writes its own node's status and no other's.
    const podAgent = await agentClient(scoped.agentSA, { boundToPod: pod });
    expect(await reportStatus(podAgent, nodeA, "Ready")).toEqual({ allowed: true });
    expect(await reportStatus(podAgent, nodeB, "Failed")).toMatchObject({ allowed: false, status: 403 });
  });
});

describe("with the chart's node-scoped status policy", () => {
  it("lets the agent of node A write the status of node A's NodeChain", async () => {
    const agentA = await agentClient(scoped.agentSA, { boundToNode: nodeA });
    expect(await reportStatus(agentA, nodeA, "Failed")).toEqual({ allowed: true });
    expect(await phaseOf(nodeA)).toBe("Failed");
    expect(await reportStatus(agentA, nodeA, "Ready")).toEqual({ allowed: true });
    expect(await phaseOf(nodeA)).toBe("Ready");
  });

  it("refuses the agent of node A a status write on node B's NodeChain, and says why", async () => {
    const before = await phaseOf(nodeB);
    const agentA = await agentClient(scoped.agentSA, { boundToNode: nodeA });
    const outcome = await reportStatus(agentA, nodeB, before === "Ready" ? "Failed" : "Ready");
    expect(outcome).toMatchObject({ allowed: false, status: 403 });
    const message = (outcome as { message: string }).message;
    expect(message).toContain(`ValidatingAdmissionPolicy '${scoped.policy}'`);
    expect(message).toContain(
      `sluice agent of node ${nodeA} may write the status only of its own node's NodeChains; ${nodeChainName(chain, nodeB)} belongs to node ${nodeB}`,
    );
    expect(await phaseOf(nodeB)).toBe(before);
    // Node B's own agent still can.
    const agentB = await agentClient(scoped.agentSA, { boundToNode: nodeB });
    expect(await reportStatus(agentB, nodeB, "Ready")).toEqual({ allowed: true });
    expect(await phaseOf(nodeB)).toBe("Ready");
  });

  it("refuses every status write of an agent token bound to no node", async () => {
    const unbound = await agentClient(scoped.agentSA);
    for (const node of [nodeA, nodeB]) {
      const outcome = await reportStatus(unbound, node, "Failed");
      expect(outcome).toMatchObject({ allowed: false, status: 403 });
      expect((outcome as { message: string }).message).toContain("this token names no node");
    }
  });

  it("leaves the operator and people alone: the operator plans every node, an admin writes any status", async () => {
    const operator = new KubeClient(await serviceAccountKubeConfig(namespace, scoped.operatorSA));
    for (const node of [nodeA, nodeB]) {
      const applied = await operator.apply(NodeChainResource, plannedNodeChain(node, "rev-2"), {
        fieldManager: "sluice",
      });
      expect((applied.spec as { revision: string }).revision).toBe("rev-2");
    }
    const admin = new KubeClient(kubeConfig());
    expect(await reportStatus(admin, nodeB, "Failed")).toEqual({ allowed: true });
    expect(await phaseOf(nodeB)).toBe("Failed");
  });

  it("without it (agent.nodeScopedStatus.enabled=false) RBAC alone lets node A's agent write node B's status", async () => {
    // The hole the policy closes: any node's agent could mark any node Ready or Failed. The
    // policy of the first release does not reach this release's agent either.
    const otherAgentA = await agentClient(unscoped.agentSA, { boundToNode: nodeA });
    expect(await reportStatus(otherAgentA, nodeB, "Ready")).toEqual({ allowed: true });
    expect(await phaseOf(nodeB)).toBe("Ready");
  });
});
