/**
 * Only real changes roll, on a real kube-apiserver: the operator runs in this process and syncs
 * a real repository; a commit that changes only a file no function uses, and then one that
 * changes only the rollout settings, leave every NodeChain untouched (same resourceVersion),
 * while the artifact those NodeChains name stays served; a parameter change gives a new revision.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CustomObjectsApi } from "@kubernetes/client-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startOperator, type RunningOperator } from "../../operator/src/operator.ts";
import { createTestRepo, type TestRepo } from "../support/git-servers.ts";
import { createTestNamespace, kubeConfig, kubeconfigPath, kubectlOk } from "./harness.ts";
import { type GitSourceView, installCrds, readyAt, readyOf } from "./sluice-support.ts";

const namespace = createTestNamespace("revstable");
const api = kubeConfig().makeApiClient(CustomObjectsApi);
/** Cluster-scoped, so named after the namespace; only this file's chain selects them. */
const nodes = [`${namespace}-a`, `${namespace}-b`];
const selectorLabel = "sluice.dev/test-revision-stability";

interface NodeChainView {
  metadata: { name: string; resourceVersion: string; generation?: number };
  spec: {
    nodeName: string;
    revision: string;
    functions: { source: { artifact?: { url: string; digest: string } } }[];
  };
}

interface ServiceChainView {
  metadata: { generation?: number; resourceVersion: string };
  status?: { revision?: string; observedGeneration?: number };
}

async function nodeChains(): Promise<NodeChainView[]> {
  const list = (await api.listNamespacedCustomObject({
    group: "sluice.dev",
    version: "v1alpha1",
    namespace,
    plural: "nodechains",
  })) as { items: NodeChainView[] };
  return list.items.sort((a, b) => a.spec.nodeName.localeCompare(b.spec.nodeName));
}

async function serviceChain(): Promise<ServiceChainView> {
  return (await api.getNamespacedCustomObject({
    group: "sluice.dev",
    version: "v1alpha1",
    namespace,
    plural: "servicechains",
    name: "edge",
  })) as ServiceChainView;
}

async function source(): Promise<GitSourceView> {
  return (await api.getNamespacedCustomObject({
    group: "sluice.dev",
    version: "v1alpha1",
    namespace,
    plural: "gitsources",
    name: "net",
  })) as GitSourceView;
}

async function until<T>(
  what: string,
  read: () => Promise<T>,
  match: (v: T) => boolean,
  timeoutMs = 30_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await read();
    if (match(value)) return value;
    if (Date.now() > deadline)
      throw new Error(`not ${what} within ${timeoutMs} ms: ${JSON.stringify(value)}`);
    await new Promise((ok) => setTimeout(ok, 100));
  }
}

const fw = (limit: number) => `apiVersion: sluice.dev/v1alpha1
kind: NetworkFunction
metadata:
  name: fw
spec:
  hooks: [xdp]
  source:
    sourceRef: { name: net }
    path: nf/fw/fw.bpf.c
  parameters:
    LIMIT: ${limit}
`;

const chain = (maxUnavailable: string) => `apiVersion: sluice.dev/v1alpha1
kind: ServiceChain
metadata:
  name: edge
spec:
  functions:
    - name: fw
  attachment:
    interfaces: [eth0]
    hook: xdp
  nodeSelector:
    matchLabels:
      ${selectorLabel}: "${namespace}"
  rollout:
    maxUnavailable: "${maxUnavailable}"
`;

let operator: RunningOperator;
let dataDir: string;
let repo: TestRepo;

/** Commits `files`, asks for a sync now, and waits until the GitSource is Ready at that commit. */
async function commitAndSync(files: Record<string, string>): Promise<GitSourceView> {
  const sha = await repo.commit(files);
  await kubectlOk([
    "annotate",
    "--overwrite",
    "gitsource",
    "net",
    "-n",
    namespace,
    `sluice.dev/reconcile-at=${new Date().toISOString()}`,
  ]);
  return until("Ready at the new commit", source, readyAt(`main@sha1:${sha}`));
}

/** Time for the chain controller to react to a GitSource's new artifact (a watch event away). */
const settle = () => new Promise((ok) => setTimeout(ok, 2_000));

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
  repo = await createTestRepo({ name: "revstable" });
  operator = await startOperator({
    kubeconfig: kubeconfigPath(),
    namespace,
    port: 0,
    host: "127.0.0.1",
    dataDir: join(dataDir, "operator"),
    sources: { allowFileSources: true },
  });
});

afterAll(async () => {
  await operator?.stop();
  await repo?.cleanup();
  for (const node of nodes) await kubectlOk(["delete", "node", node, "--ignore-not-found", "--wait=false"]);
  await rm(dataDir, { recursive: true, force: true });
});

describe("only real changes roll", () => {
  it("unrelated files and rollout settings leave NodeChains untouched; a parameter change rolls a new revision", async () => {
    const first = await repo.commit({
      "deploy/fw.yaml": fw(1),
      "deploy/chain.yaml": chain("100%"),
      "deploy/nf/fw/fw.bpf.c": "// the firewall\n",
      "deploy/README.md": "# network\n",
    });
    const applied = { url: repo.fileUrl, path: "deploy", interval: "1h" };
    await kubectlOk(["apply", "-f", "-"], {
      input: JSON.stringify({
        apiVersion: "sluice.dev/v1alpha1",
        kind: "GitSource",
        metadata: { name: "net", namespace },
        spec: applied,
      }),
    });
    const synced = await until("Ready", source, readyAt(`main@sha1:${first}`));
    const before = await until(
      "on one revision on both nodes",
      nodeChains,
      (list) => list.length === 2 && list.every((nc) => nc.spec.revision === list[0]!.spec.revision),
    );
    const revision = before[0]!.spec.revision;
    const artifactUrl = before[0]!.spec.functions[0]!.source.artifact!.url;
    expect(before[0]!.spec.functions[0]!.source.artifact!.digest).toBe(synced.status?.artifact?.digest);
    const chainBefore = await until("planned", serviceChain, (sc) => sc.status?.revision === revision);

    // More commits that change only the README than the source keeps published artifacts for.
    for (let i = 1; i <= 6; i++) {
      const gs = await commitAndSync({ "deploy/README.md": `# network, take ${i}\n` });
      expect(gs.status?.artifact?.digest).not.toBe(synced.status?.artifact?.digest);
    }
    await settle();
    expect((await nodeChains()).map((nc) => nc.metadata.resourceVersion)).toEqual(
      before.map((nc) => nc.metadata.resourceVersion),
    );
    expect((await serviceChain()).status?.revision).toBe(revision);
    expect((await serviceChain()).metadata.resourceVersion).toBe(chainBefore.metadata.resourceVersion);
    // The artifact the NodeChains name is still served: an agent restarting now can fetch it.
    expect((await fetch(artifactUrl)).status).toBe(200);

    // Only the rollout settings change: the chain observes its new generation, no node moves.
    await commitAndSync({ "deploy/chain.yaml": chain("50%") });
    await until(
      "observed its new generation",
      serviceChain,
      (sc) =>
        sc.metadata.generation !== undefined &&
        sc.status?.observedGeneration === sc.metadata.generation &&
        sc.metadata.generation > 1,
    );
    await settle();
    expect((await nodeChains()).map((nc) => nc.metadata.resourceVersion)).toEqual(
      before.map((nc) => nc.metadata.resourceVersion),
    );
    expect((await serviceChain()).status?.revision).toBe(revision);

    // A parameter change is a new revision, with the artifact of that commit.
    const changed = await commitAndSync({ "deploy/fw.yaml": fw(2) });
    const sc = await until("on a new revision", serviceChain, (s) => s.status?.revision !== revision);
    const moved = await until("a node on the new revision", nodeChains, (list) =>
      list.some((nc) => nc.spec.revision === sc.status?.revision),
    );
    const onNew = moved.find((nc) => nc.spec.revision === sc.status?.revision)!;
    expect(onNew.spec.functions[0]!.source.artifact!.digest).toBe(changed.status?.artifact?.digest);
    expect(readyOf(changed)?.status).toBe("True");
  });
});
