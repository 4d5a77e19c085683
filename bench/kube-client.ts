/**
 * The Kubernetes client on the requests sluice makes (get, list, server-side apply and status
 * merge patch of a NodeChain): sluice's `KubeClient` (`common/kube/client.ts`) against
 * @kubernetes/client-node's `KubernetesObjectApi` and `CustomObjectsApi` called directly, which
 * it wraps: the difference is the wrapper's own cost (errors, plain JSON answers). Before
 * `KubeClient` was built on client-node, the same comparison measured the hand-written client it
 * replaced (bench/README.md). Runs against a throwaway kube-apiserver + etcd with the CRDs (the
 * cluster tests' setup), the two interleaved per round so that load on the machine hits both
 * alike; median and p90 per request.
 *
 *   node --import tsx bench/kube-client.ts [--rounds 200]
 *
 * It also reports what each hands back for the object's `metadata.creationTimestamp`.
 */
import { execFileSync } from "node:child_process";
import { join } from "node:path";
import { parseArgs } from "node:util";
import {
  CustomObjectsApi,
  KubeConfig,
  KubernetesObjectApi,
  PatchStrategy,
  setHeaderOptions,
} from "@kubernetes/client-node";
import { GROUP, VERSION } from "../common/api/meta.ts";
import { KubeClient } from "../common/kube/client.ts";
import { StoreResources } from "../common/kube/store.ts";
import clusterSetup from "../test/cluster/global-setup.ts";
import { repoRoot } from "../test/kernel/harness.ts";
import { table } from "./report.ts";
import { median, percentile } from "./stats.ts";

const { values } = parseArgs({ options: { rounds: { type: "string", default: "200" } } });
const rounds = Number(values.rounds);

const provided: Record<string, string> = {};
const teardown = await clusterSetup({
  provide: (key: string, value: string) => (provided[key] = value),
} as unknown as Parameters<typeof clusterSetup>[0]);
try {
  const kubeconfig = provided.clusterKubeconfig!;
  execFileSync(join(provided.clusterBinDir!, "kubectl"), [
    ...["--kubeconfig", kubeconfig, "apply", "--server-side", "-f", join(repoRoot, "crds")],
  ]);
  const kc = new KubeConfig();
  kc.loadFromFile(kubeconfig);
  const own = new KubeClient(kc);
  const objects = KubernetesObjectApi.makeApiClient(kc);
  const custom = kc.makeApiClient(CustomObjectsApi);
  const res = StoreResources.NodeChain!;
  const namespace = "default";

  const nodeChain = (name: string, revision: string) => ({
    apiVersion: `${GROUP}/${VERSION}`,
    kind: "NodeChain",
    metadata: { name, namespace, labels: { "sluice.dev/node": "bench-node" } },
    spec: {
      nodeName: "bench-node",
      chain: "edge",
      revision,
      interfaces: ["eth0"],
      hook: "xdp",
      functions: [{ name: "noop", networkFunction: "noop", source: { builtin: "noop" } }],
    },
  });
  const status = (i: number) => ({ observedGeneration: i, phase: "Ready", revision: `r${i}` });

  // One object per client, so that neither answers from work the other did.
  await own.apply(res, nodeChain("own", "r0"));
  await objects.patch(
    nodeChain("objectapi", "r0"),
    undefined,
    undefined,
    "sluice",
    true,
    PatchStrategy.ServerSideApply,
  );

  type Step = (i: number) => Promise<unknown>;
  const steps: Record<string, { own: Step; library: Step }> = {
    get: {
      own: () => own.get(res, namespace, "own"),
      library: () =>
        objects.read({
          apiVersion: `${GROUP}/${VERSION}`,
          kind: "NodeChain",
          metadata: { name: "objectapi", namespace },
        }),
    },
    list: {
      own: () => own.list(res, namespace, { labelSelector: "sluice.dev/node=bench-node" }),
      library: () =>
        objects.list(
          `${GROUP}/${VERSION}`,
          "NodeChain",
          namespace,
          undefined,
          undefined,
          undefined,
          undefined,
          "sluice.dev/node=bench-node",
        ),
    },
    "apply (server-side)": {
      own: (i) => own.apply(res, nodeChain("own", `r${i}`)),
      library: (i) =>
        objects.patch(
          nodeChain("objectapi", `r${i}`),
          undefined,
          undefined,
          "sluice",
          true,
          PatchStrategy.ServerSideApply,
        ),
    },
    "status merge patch": {
      own: (i) => own.patchStatus(res, namespace, "own", status(i)),
      library: (i) =>
        custom.patchNamespacedCustomObjectStatus(
          {
            group: GROUP,
            version: VERSION,
            namespace,
            plural: res.plural,
            name: "objectapi",
            body: { status: status(i) },
          },
          setHeaderOptions("Content-Type", PatchStrategy.MergePatch),
        ),
    },
  };

  const times: Record<string, { own: number[]; library: number[] }> = {};
  for (const name of Object.keys(steps)) times[name] = { own: [], library: [] };
  for (let i = 1; i <= rounds; i++) {
    for (const [name, step] of Object.entries(steps)) {
      // Alternate which client goes first.
      const order = i % 2 ? (["own", "library"] as const) : (["library", "own"] as const);
      for (const which of order) {
        const start = performance.now();
        await step[which](i);
        times[name]![which].push(performance.now() - start);
      }
    }
  }
  const ms = (v: number) => `${v.toFixed(2)} ms`;
  const rows = Object.entries(times).map(([name, t]) => [
    name,
    ms(median(t.own)),
    ms(percentile(t.own, 90)),
    ms(median(t.library)),
    ms(percentile(t.library, 90)),
  ]);
  process.stdout.write(
    `${table(["request", "KubeClient median", "KubeClient p90", "client-node median", "client-node p90"], rows)}\n\n`,
  );

  const ownObject = await own.get(res, namespace, "own");
  const libraryObject = (await objects.read({
    apiVersion: `${GROUP}/${VERSION}`,
    kind: "NodeChain",
    metadata: { name: "objectapi", namespace },
  })) as { metadata?: { creationTimestamp?: unknown } };
  const describe = (v: unknown) => (v instanceof Date ? `Date ${v.toISOString()}` : JSON.stringify(v));
  process.stdout.write(
    `metadata.creationTimestamp: KubeClient ${describe(ownObject?.metadata?.creationTimestamp)}, ` +
      `client-node ${describe(libraryObject.metadata?.creationTimestamp)}\n`,
  );
} finally {
  await teardown();
}
