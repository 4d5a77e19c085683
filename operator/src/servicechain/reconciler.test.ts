import { beforeEach, describe, expect, it } from "vitest";
import {
  API_VERSION,
  CHAIN_LABEL,
  NODE_LABEL,
  NodeChain,
  PROMOTE_ANNOTATION,
  ServiceChain,
  type NetworkFunctionSpec,
  type ServiceChainSpec,
} from "../../../common/api/index.ts";
import { WriteCoalescer } from "../../../common/kube/coalesce.ts";
import { rootLogger } from "../../../common/log.ts";
import { MemoryStore, type StoreKind, type StoreObject } from "../../../common/store.ts";
import { reconcileServiceChain, serviceChainKeysFor, type ServiceChainDeps } from "./reconciler.ts";

const NS = "default";
const digestA = `sha256:${"a".repeat(64)}`;
const digestB = `sha256:${"b".repeat(64)}`;

let store: MemoryStore;
let clock: Date;
let events: { type: string; reason: string; message: string }[];
let deps: ServiceChainDeps;

beforeEach(() => {
  store = new MemoryStore();
  clock = new Date("2025-03-01T10:00:00Z");
  events = [];
  deps = {
    store,
    now: () => clock,
    event: (_obj, type, reason, message) => events.push({ type, reason, message }),
  };
});

function tick(seconds: number): void {
  clock = new Date(clock.getTime() + seconds * 1000);
}

async function addNode(name: string, labels: Record<string, string> = {}): Promise<void> {
  await store.apply({ apiVersion: "v1", kind: "Node", metadata: { name, labels } });
}

async function addFunction(name: string, spec: Partial<NetworkFunctionSpec> = {}): Promise<void> {
  await store.apply({
    apiVersion: API_VERSION,
    kind: "NetworkFunction",
    metadata: { name, namespace: NS },
    spec: { hooks: ["xdp"], source: { builtin: "firewall" }, ...spec },
  });
}

async function addGitSource(name: string, digest?: string): Promise<void> {
  await store.apply({
    apiVersion: API_VERSION,
    kind: "GitSource",
    metadata: { name, namespace: NS },
    spec: { url: "https://example.com/net.git" },
  });
  if (digest) {
    await store.patchStatus("GitSource", NS, name, {
      observedGeneration: 1,
      artifact: {
        revision: `main@sha1:${digest.slice(7, 47)}`,
        digest,
        url: `http://sluice.example:8080/artifacts/${NS}/${name}/${digest.slice(7)}.tar.gz`,
        lastUpdateTime: "2025-03-01T09:00:00Z",
      },
    });
  }
}

async function addChain(
  spec: Partial<ServiceChainSpec> = {},
  annotations?: Record<string, string>,
  name = "web",
): Promise<void> {
  await store.apply({
    apiVersion: API_VERSION,
    kind: "ServiceChain",
    metadata: { name, namespace: NS, ...(annotations && { annotations }) },
    spec: { functions: [{ name: "fw" }], attachment: { interfaces: ["eth0"], hook: "xdp" }, ...spec },
  });
}

async function reconcile(name = "web"): Promise<{ requeueAfterMs?: number }> {
  return reconcileServiceChain(deps, NS, name, rootLogger);
}

async function chain(name = "web"): Promise<ServiceChain> {
  return ServiceChain.parse(await store.get("ServiceChain", NS, name));
}

async function nodeChains(name = "web"): Promise<NodeChain[]> {
  return (await store.list("NodeChain", NS, { [CHAIN_LABEL]: name })).map((o) => NodeChain.parse(o));
}

async function nodeChainOf(node: string, name = "web"): Promise<NodeChain | undefined> {
  return (await nodeChains(name)).find((nc) => nc.spec.nodeName === node);
}

function condition(sc: ServiceChain, type: string) {
  return sc.status.conditions?.find((c) => c.type === type);
}

/** What a node's agent would do with its NodeChain: switch it in, or fail it and keep the old one. */
type AgentOutcome = "ready" | "silent" | { fail: string; message?: string };

async function agent(node: string, outcome: AgentOutcome = "ready"): Promise<void> {
  if (outcome === "silent") return;
  for (const nc of await nodeChains()) {
    if (nc.spec.nodeName !== node) continue;
    if (nc.status.observedGeneration === nc.metadata.generation) continue;
    const at = clock.toISOString().replace(/\.\d{3}Z$/, "Z");
    if (outcome === "ready") {
      await store.patchStatus("NodeChain", NS, nc.metadata.name, {
        observedGeneration: nc.metadata.generation,
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
            observedGeneration: nc.metadata.generation,
          },
        ],
      });
    } else {
      await store.patchStatus("NodeChain", NS, nc.metadata.name, {
        observedGeneration: nc.metadata.generation,
        phase: "Failed",
        lastError: { reason: outcome.fail, message: outcome.message ?? "invalid mem access 'scalar'" },
        conditions: [
          {
            type: "Ready",
            status: "False",
            reason: outcome.fail,
            message: "kept the old chain",
            lastTransitionTime: at,
            observedGeneration: nc.metadata.generation,
          },
        ],
      });
    }
  }
}

/** Nodes whose NodeChain asks for `revision` but do not run it Ready yet. */
async function inTransition(revision: string): Promise<string[]> {
  return (await nodeChains())
    .filter((nc) => nc.spec.revision === revision)
    .filter(
      (nc) =>
        !(
          nc.status.revision === revision &&
          nc.status.phase === "Ready" &&
          nc.status.observedGeneration === nc.metadata.generation
        ),
    )
    .map((nc) => nc.spec.nodeName);
}

/**
 * Reconciles and lets agents answer until nothing changes, recording after every reconcile which
 * nodes are in transition to the chain's revision.
 */
async function rollOut(outcomes: Record<string, AgentOutcome> = {}, maxRounds = 20): Promise<string[][]> {
  const history: string[][] = [];
  for (let round = 0; round < maxRounds; round++) {
    await reconcile();
    const revision = (await chain()).status.revision;
    history.push(revision ? await inTransition(revision) : []);
    const before = JSON.stringify((await store.list("NodeChain", NS)).map((o) => o.metadata.resourceVersion));
    for (const node of (await store.list("Node")).map((n) => n.metadata.name))
      await agent(node, outcomes[node] ?? "ready");
    const after = JSON.stringify((await store.list("NodeChain", NS)).map((o) => o.metadata.resourceVersion));
    if (before === after) {
      await reconcile();
      break;
    }
  }
  return history;
}

async function threeNodes(): Promise<void> {
  for (const n of ["node-a", "node-b", "node-c"]) await addNode(n, { role: "edge" });
}

describe("planning", () => {
  it("writes one NodeChain per selected node with the resolved plan, labels and owner", async () => {
    await threeNodes();
    await addNode("db-1", { role: "db" });
    await addGitSource("repo", digestA);
    await addFunction("fw", {
      tables: { rules: [{ action: "deny", dport: 22 }] },
      parameters: { defaultAction: "deny" },
    });
    await addFunction("custom", {
      source: { path: "nf/custom.c", sourceRef: { kind: "GitSource", name: "repo" } },
    });
    await addFunction("raw", { source: { inline: "int x;" } });
    await addChain({
      functions: [{ name: "fw" }, { name: "custom", alias: "c1" }, { name: "raw" }],
      nodeSelector: { matchLabels: { role: "edge" } },
      rollout: {
        maxUnavailable: 3,
        paused: false,
        minReadySeconds: 0,
        progressDeadlineSeconds: 600,
        autoRollback: true,
      },
      tests: [
        {
          name: "ssh",
          packet: { ipv4: { src: "10.0.0.1", dst: "10.0.0.2" }, tcp: { sport: 1234, dport: 22 } },
          expect: { verdict: "drop" },
        },
      ],
    });
    await reconcile();

    const sc = await chain();
    const ncs = await nodeChains();
    expect(ncs.map((nc) => nc.spec.nodeName).sort()).toEqual(["node-a", "node-b", "node-c"]);
    const nc = ncs.find((n) => n.spec.nodeName === "node-a")!;
    expect(nc.metadata.name).toBe("web.node-a");
    expect(nc.metadata.labels).toEqual({ [CHAIN_LABEL]: "web", [NODE_LABEL]: "node-a" });
    const stored = await store.get("NodeChain", NS, "web.node-a");
    expect(stored?.metadata.ownerReferences).toEqual([
      {
        apiVersion: API_VERSION,
        kind: "ServiceChain",
        name: "web",
        uid: sc.metadata.uid,
        controller: true,
        blockOwnerDeletion: true,
      },
    ]);
    expect(nc.spec).toMatchObject({
      nodeName: "node-a",
      chain: "web",
      revision: sc.status.revision,
      interfaces: ["eth0"],
      hook: "xdp",
      tests: [expect.objectContaining({ name: "ssh" })],
    });
    expect(nc.spec.revision).toMatch(/^[0-9a-f]{16}$/);
    expect(nc.spec.functions).toEqual([
      {
        name: "fw",
        networkFunction: "fw",
        source: { builtin: "firewall" },
        parameters: { defaultAction: "deny" },
        tables: { rules: [{ action: "deny", dport: 22 }] },
      },
      {
        name: "c1",
        networkFunction: "custom",
        source: {
          artifact: {
            url: `http://sluice.example:8080/artifacts/default/repo/${"a".repeat(64)}.tar.gz`,
            digest: digestA,
            path: "nf/custom.c",
          },
        },
      },
      { name: "raw", networkFunction: "raw", source: { inline: "int x;" } },
    ]);
    // Every node gets the same plan: the revision does not depend on the node.
    expect(new Set(ncs.map((n) => n.spec.revision)).size).toBe(1);
  });

  it.each([
    {
      name: "a missing NetworkFunction sets Ready=False/FunctionNotFound",
      setup: async () => {},
      reason: "FunctionNotFound",
      message: /NetworkFunction fw not found/,
      stalled: false,
    },
    {
      name: "a GitSource without an artifact sets Ready=False/SourceNotReady",
      setup: async () => {
        await addGitSource("repo");
        await addFunction("fw", { source: { path: "fw.c", sourceRef: { kind: "GitSource", name: "repo" } } });
      },
      reason: "SourceNotReady",
      message: /GitSource repo of NetworkFunction fw has no artifact yet/,
      stalled: false,
    },
    {
      name: "a missing GitSource sets Ready=False/SourceNotReady",
      setup: async () => {
        await addFunction("fw", { source: { path: "fw.c", sourceRef: { kind: "GitSource", name: "repo" } } });
      },
      reason: "SourceNotReady",
      message: /GitSource repo of NetworkFunction fw not found/,
      stalled: false,
    },
    {
      name: "a built-in name no built-in has sets Ready=False/BuiltinNotFound and Stalled",
      setup: async () => {
        await addFunction("fw", { source: { builtin: "nat" } });
      },
      reason: "BuiltinNotFound",
      message: /NetworkFunction fw: no built-in network function "nat"/,
      stalled: true,
    },
    {
      name: "built-in parameters the built-in's schema refuses set Ready=False/InvalidSpec and Stalled",
      setup: async () => {
        await addFunction("fw", { source: { builtin: "ratelimit" }, parameters: { rate: 0 } });
      },
      reason: "InvalidSpec",
      message: /NetworkFunction fw: ratelimit parameters: rate: Too small/,
      stalled: true,
    },
    {
      name: "a function without the chain's hook sets Ready=False/HookNotSupported and Stalled",
      setup: async () => {
        await addFunction("fw", { hooks: ["tc-ingress"] });
      },
      reason: "HookNotSupported",
      message: /supports tc-ingress, not the chain's hook xdp/,
      stalled: true,
    },
  ])("$name, and writes no NodeChain", async ({ setup, reason, message, stalled }) => {
    await threeNodes();
    await setup();
    await addChain();
    await reconcile();
    const sc = await chain();
    expect(condition(sc, "Ready")).toMatchObject({
      status: "False",
      reason,
      message: expect.stringMatching(message),
    });
    expect(condition(sc, "Stalled")?.status).toBe(stalled ? "True" : undefined);
    expect(sc.status.observedGeneration).toBe(sc.metadata.generation);
    expect(await nodeChains()).toEqual([]);
    expect(events).toContainEqual(expect.objectContaining({ type: "Warning", reason }));
  });

  it("starts once the missing function appears", async () => {
    await addNode("node-a");
    await addChain();
    await reconcile();
    expect(await nodeChains()).toEqual([]);
    await addFunction("fw");
    expect(
      await serviceChainKeysFor(
        { type: "changed", object: (await store.get("NetworkFunction", NS, "fw"))! },
        store,
      ),
    ).toEqual(["default/web"]);
    await reconcile();
    expect((await nodeChains()).map((nc) => nc.spec.nodeName)).toEqual(["node-a"]);
  });

  it("a table-only change of a NetworkFunction gives a new revision with the new tables", async () => {
    await addNode("node-a");
    await addFunction("fw", { tables: { rules: [{ action: "deny", dport: 22 }] } });
    await addChain();
    await rollOut();
    const first = (await chain()).status.revision!;
    await addFunction("fw", {
      tables: {
        rules: [
          { action: "deny", dport: 22 },
          { action: "deny", dport: 23 },
        ],
      },
    });
    await rollOut();
    const sc = await chain();
    expect(sc.status.revision).not.toBe(first);
    const nc = await nodeChainOf("node-a");
    expect(nc?.spec.revision).toBe(sc.status.revision);
    expect(nc?.spec.functions[0]?.tables).toEqual({
      rules: [
        { action: "deny", dport: 22 },
        { action: "deny", dport: 23 },
      ],
    });
    expect(condition(sc, "Ready")?.status).toBe("True");
  });

  it("reconciling again writes nothing", async () => {
    await threeNodes();
    await addFunction("fw");
    await addChain({
      rollout: {
        maxUnavailable: 1,
        paused: false,
        minReadySeconds: 0,
        progressDeadlineSeconds: 600,
        autoRollback: true,
      },
    });
    const versions = async () =>
      [...(await store.list("NodeChain", NS)), ...(await store.list("ServiceChain", NS))].map(
        (o) => `${o.metadata.name}@${o.metadata.resourceVersion}`,
      );
    // Mid-rollout (one node in transition) and after it: both are fixed points.
    await reconcile();
    const mid = await versions();
    await reconcile();
    expect(await versions()).toEqual(mid);
    await rollOut();
    const done = await versions();
    const eventCount = events.length;
    await reconcile();
    await reconcile();
    expect(await versions()).toEqual(done);
    expect(events.length).toBe(eventCount);
  });

  it("waits while a GitSource of the chain applies a revision, so that one commit is one revision", async () => {
    await addNode("node-a");
    await addGitSource("repo", digestA);
    await addFunction("fw", { source: { path: "fw.c", sourceRef: { kind: "GitSource", name: "repo" } } });
    await addFunction("rl", { source: { builtin: "ratelimit" } });
    // The ratelimit function came from another source, as its label says.
    const rl = (await store.get("NetworkFunction", NS, "rl"))!;
    await store.apply({
      ...rl,
      metadata: { ...rl.metadata, labels: { "sluice.dev/source": `${NS}.other` } },
    });
    await addChain({ functions: [{ name: "fw" }, { name: "rl" }] });
    const asked: string[] = [];
    let busy = new Set<string>();
    deps.sourceApplying = (namespace, name, chainKey) => {
      asked.push(`${namespace}/${name} for ${chainKey}`);
      return busy.has(`${namespace}/${name}`);
    };
    for (const source of ["repo", "other"]) {
      busy = new Set([`${NS}/${source}`]);
      await reconcile();
      expect(await nodeChains(), source).toEqual([]);
      expect((await chain()).status.revision, source).toBeUndefined();
      expect(asked).toContain(`${NS}/${source} for ${NS}/web`);
    }
    busy = new Set();
    await reconcile();
    expect((await nodeChains()).map((nc) => nc.spec.nodeName)).toEqual(["node-a"]);
  });

  it("removes the NodeChains when the ServiceChain is deleted", async () => {
    await addNode("node-a");
    await addFunction("fw");
    await addChain();
    await reconcile();
    expect(await nodeChains()).toHaveLength(1);
    // Where no garbage collector follows owner references (an apiserver alone), the reconciler
    // removes them: here, a NodeChain the store would not collect.
    const nc = (await store.get("NodeChain", NS, "web.node-a"))!;
    await store.apply({ ...nc, metadata: { ...nc.metadata, ownerReferences: [] } });
    await store.delete("ServiceChain", NS, "web");
    await reconcile();
    expect(await nodeChains()).toEqual([]);
  });
});

describe("node selection", () => {
  it("gives a joining node its NodeChain and takes it from a leaving node", async () => {
    await addNode("node-a", { role: "edge" });
    await addNode("node-b", { role: "db" });
    await addFunction("fw");
    await addChain({ nodeSelector: { matchLabels: { role: "edge" } } });
    await rollOut();
    expect((await nodeChains()).map((nc) => nc.spec.nodeName)).toEqual(["node-a"]);

    await addNode("node-b", { role: "edge" });
    expect(
      await serviceChainKeysFor(
        { type: "changed", object: (await store.get("Node", undefined, "node-b"))! },
        store,
      ),
    ).toEqual(["default/web"]);
    await rollOut();
    expect((await nodeChains()).map((nc) => nc.spec.nodeName).sort()).toEqual(["node-a", "node-b"]);
    expect((await chain()).status.nodes).toMatchObject({ desired: 2, ready: 2, summary: "2/2" });

    await addNode("node-a", { role: "db" });
    // The node no longer matches, but it still has the chain: its chain must be reconciled.
    expect(
      await serviceChainKeysFor(
        { type: "changed", object: (await store.get("Node", undefined, "node-a"))! },
        store,
      ),
    ).toEqual(["default/web"]);
    await rollOut();
    expect((await nodeChains()).map((nc) => nc.spec.nodeName)).toEqual(["node-b"]);
    expect(condition(await chain(), "Ready")?.status).toBe("True");

    await store.delete("Node", undefined, "node-b");
    await reconcile();
    expect(await nodeChains()).toEqual([]);
    expect(condition(await chain(), "Ready")).toMatchObject({ status: "False", reason: "NoNodesSelected" });
  });
});

describe("progressive rollout", () => {
  const rollout = {
    maxUnavailable: 1 as number | string,
    paused: false,
    minReadySeconds: 0,
    progressDeadlineSeconds: 600,
    autoRollback: true,
  };

  it("moves 3 nodes one at a time with maxUnavailable=1 and then reports Ready", async () => {
    await threeNodes();
    await addFunction("fw");
    await addChain({ rollout });
    const history = await rollOut();
    expect(Math.max(...history.map((h) => h.length))).toBe(1);
    expect(history.filter((h) => h.length === 1).map((h) => h[0])).toEqual(["node-a", "node-b", "node-c"]);
    const sc = await chain();
    expect(condition(sc, "Ready")).toMatchObject({ status: "True", reason: "RolloutComplete" });
    expect(condition(sc, "Progressing")?.status).toBe("False");
    expect(condition(sc, "Degraded")?.status).toBe("False");
    expect(sc.status.nodes).toEqual({ desired: 3, updated: 3, ready: 3, failed: 0, summary: "3/3" });
    expect(sc.status.lastGoodRevision).toBe(sc.status.revision);
    expect(sc.status.lastGoodPlan?.revision).toBe(sc.status.revision);
    expect(events.map((e) => e.reason)).toContain("RolloutComplete");
  });

  it("while nodes are in transition, reports Progressing and Ready=False", async () => {
    await threeNodes();
    await addFunction("fw");
    await addChain({ rollout });
    await reconcile();
    const sc = await chain();
    expect(condition(sc, "Ready")).toMatchObject({ status: "False", reason: "RollingOut" });
    expect(condition(sc, "Progressing")).toMatchObject({ status: "True", reason: "RollingOut" });
    expect(condition(sc, "Reconciling")?.status).toBe("True");
    expect(sc.status.nodes).toMatchObject({ desired: 3, updated: 1, ready: 0, summary: "0/3" });
  });

  it("moves a percentage of the nodes at a time", async () => {
    for (const n of ["n1", "n2", "n3", "n4", "n5"]) await addNode(n);
    await addFunction("fw");
    await addChain({ rollout: { ...rollout, maxUnavailable: "40%" } });
    const history = await rollOut();
    // 40% of 5 nodes is 2.
    expect(Math.max(...history.map((h) => h.length))).toBe(2);
    expect(history[0]).toEqual(["n1", "n2"]);
    expect(condition(await chain(), "Ready")?.status).toBe("True");
  });

  it("a percentage rounds down but never below one node", async () => {
    await threeNodes();
    await addFunction("fw");
    await addChain({ rollout: { ...rollout, maxUnavailable: "10%" } });
    const history = await rollOut();
    expect(Math.max(...history.map((h) => h.length))).toBe(1);
    expect(condition(await chain(), "Ready")?.status).toBe("True");
  });

  it("a node failing the new revision halts the rollout and returns the moved nodes to the previous plan", async () => {
    await threeNodes();
    await addGitSource("repo", digestA);
    await addFunction("fw", {
      source: { path: "fw.c", sourceRef: { kind: "GitSource", name: "repo" } },
      tables: { rules: [{ action: "deny", dport: 22 }] },
    });
    await addChain({ rollout });
    await rollOut();
    const good = await chain();
    const v1 = good.status.revision!;
    const v1Spec = (await nodeChainOf("node-a"))!.spec;
    const untouched = (await store.get("NodeChain", NS, "web.node-c"))!.metadata.resourceVersion;

    // A new commit: the artifact of v1 is no longer the GitSource's current one.
    await addGitSource("repo", digestB);
    const history = await rollOut({
      "node-b": { fail: "VerifierRejected", message: "R1 invalid mem access 'scalar'" },
    });
    expect(Math.max(...history.map((h) => h.length))).toBe(1);

    const sc = await chain();
    const v2 = sc.status.revision!;
    expect(v2).not.toBe(v1);
    expect(condition(sc, "Degraded")).toMatchObject({ status: "True", reason: "RolledBack" });
    expect(condition(sc, "Degraded")?.message).toMatch(
      /node node-b failed revision [0-9a-f]{16}: VerifierRejected: R1 invalid mem access/,
    );
    expect(condition(sc, "Ready")?.status).toBe("False");
    expect(condition(sc, "Stalled")?.status).toBe("True");
    expect(sc.status.failedNodes).toEqual([
      { node: "node-b", reason: "VerifierRejected", message: "R1 invalid mem access 'scalar'" },
    ]);
    expect(sc.status.failedRevision).toBe(v2);
    expect(sc.status.lastGoodRevision).toBe(v1);
    // node-a (moved and fine) and node-b (failed) are back on v1's plan, with v1's artifact.
    for (const node of ["node-a", "node-b"]) {
      const spec = (await nodeChainOf(node))!.spec;
      expect(spec).toEqual({ ...v1Spec, nodeName: node });
      expect(spec.functions[0]?.source).toEqual({ artifact: expect.objectContaining({ digest: digestA }) });
    }
    // node-c was never moved.
    expect((await store.get("NodeChain", NS, "web.node-c"))!.metadata.resourceVersion).toBe(untouched);
    expect(events).toContainEqual(expect.objectContaining({ type: "Warning", reason: "RolledBack" }));

    // The failed revision is not tried again...
    tick(3600);
    await rollOut();
    expect(new Set((await nodeChains()).map((nc) => nc.spec.revision))).toEqual(new Set([v1]));
    expect(condition(await chain(), "Degraded")?.reason).toBe("RolledBack");

    // ...until the plan changes.
    await addFunction("fw", {
      source: { path: "fw.c", sourceRef: { kind: "GitSource", name: "repo" } },
      tables: { rules: [{ action: "deny", dport: 23 }] },
    });
    await rollOut();
    const fixed = await chain();
    expect(condition(fixed, "Ready")?.status).toBe("True");
    expect(condition(fixed, "Degraded")?.status).toBe("False");
    expect(fixed.status.failedNodes).toEqual([]);
    expect(fixed.status.failedRevision).toBe("");
    expect(new Set((await nodeChains()).map((nc) => nc.spec.revision))).toEqual(
      new Set([fixed.status.revision]),
    );
  });

  it("without autoRollback a failure halts the rollout and leaves moved nodes where they are", async () => {
    await threeNodes();
    await addFunction("fw", { tables: { rules: [{ action: "deny", dport: 22 }] } });
    await addChain({ rollout: { ...rollout, autoRollback: false } });
    await rollOut();
    const v1 = (await chain()).status.revision;
    await addFunction("fw", { tables: { rules: [{ action: "deny", dport: 23 }] } });
    await rollOut({ "node-b": { fail: "SelfTestFailed" } });
    const sc = await chain();
    expect(condition(sc, "Degraded")).toMatchObject({ status: "True", reason: "NodesFailed" });
    expect((await nodeChainOf("node-a"))?.spec.revision).toBe(sc.status.revision);
    expect((await nodeChainOf("node-b"))?.spec.revision).toBe(sc.status.revision);
    expect((await nodeChainOf("node-c"))?.spec.revision).toBe(v1);
    expect(sc.status.nodes).toMatchObject({ desired: 3, updated: 2, ready: 1, failed: 1 });
  });

  it("a revision superseded mid-rollout still counts against maxUnavailable", async () => {
    await threeNodes();
    await addFunction("fw", { tables: { rules: [{ action: "deny", dport: 1 }] } });
    await addChain({ rollout });
    await rollOut();
    const v1 = (await chain()).status.revision;
    await addFunction("fw", { tables: { rules: [{ action: "deny", dport: 2 }] } });
    await reconcile(); // node-a moves to v2 and has not switched yet
    await addFunction("fw", { tables: { rules: [{ action: "deny", dport: 3 }] } });
    await reconcile();
    const v3 = (await chain()).status.revision;
    // node-a goes straight on to v3 (it was unavailable anyway); nobody else moves.
    expect((await nodeChains()).map((nc) => nc.spec.revision)).toEqual([v3, v1, v1]);
    const unavailable = async () =>
      (await nodeChains()).filter(
        (nc) =>
          !(
            nc.status.revision === nc.spec.revision &&
            nc.status.phase === "Ready" &&
            nc.status.observedGeneration === nc.metadata.generation
          ),
      ).length;
    expect(await unavailable()).toBe(1);
    const history: number[] = [];
    for (let i = 0; i < 6; i++) {
      for (const n of ["node-a", "node-b", "node-c"]) await agent(n);
      await reconcile();
      history.push(await unavailable());
    }
    expect(Math.max(...history)).toBe(1);
    expect(condition(await chain(), "Ready")?.status).toBe("True");
  });

  it("a joining node that fails the good revision is reported, and nothing is rolled back", async () => {
    await addNode("node-a");
    await addFunction("fw");
    await addChain({ rollout });
    await rollOut();
    const v1 = (await chain()).status.revision;
    await addNode("node-b");
    await rollOut({ "node-b": { fail: "NotSupported", message: "kernel lacks tcx" } });
    const sc = await chain();
    expect(condition(sc, "Degraded")).toMatchObject({ status: "True", reason: "NodesFailed" });
    expect(condition(sc, "Degraded")?.message).toContain("node node-b: NotSupported: kernel lacks tcx");
    expect(condition(sc, "Stalled")).toBeUndefined();
    expect(sc.status.failedRevision).toBe("");
    expect(sc.status.nodes).toMatchObject({ desired: 2, ready: 1, failed: 1, summary: "1/2" });
    expect((await nodeChains()).map((nc) => nc.spec.revision)).toEqual([v1, v1]);
  });

  it("a first rollout that fails halts; there is nothing to return to", async () => {
    await threeNodes();
    await addFunction("fw");
    await addChain({ rollout });
    await rollOut({ "node-a": { fail: "CompileFailed", message: "fw.c:3: error" } });
    const sc = await chain();
    expect(condition(sc, "Degraded")).toMatchObject({ status: "True", reason: "NodesFailed" });
    expect(condition(sc, "Degraded")?.message).toMatch(/no earlier good revision/);
    expect((await nodeChains()).map((nc) => nc.spec.nodeName)).toEqual(["node-a"]);
  });

  it("a canary stops after its nodes and continues when promoted", async () => {
    for (const n of ["n1", "n2", "n3", "n4"]) await addNode(n);
    await addFunction("fw", { tables: { rules: [{ action: "deny", dport: 22 }] } });
    await addChain({ rollout: { ...rollout, maxUnavailable: 2, canary: { nodes: 1, pause: true } } });
    await rollOut();
    // The first revision goes through its canary too.
    const first = await chain();
    expect(condition(first, "Progressing")).toMatchObject({ status: "False", reason: "CanaryPaused" });
    await addChain(
      { rollout: { ...rollout, maxUnavailable: 2, canary: { nodes: 1, pause: true } } },
      { [PROMOTE_ANNOTATION]: first.status.revision! },
    );
    await rollOut();
    expect(condition(await chain(), "Ready")?.status).toBe("True");
    const v1 = (await chain()).status.revision;

    await addFunction("fw", { tables: { rules: [{ action: "deny", dport: 23 }] } });
    const history = await rollOut();
    let sc = await chain();
    const v2 = sc.status.revision!;
    expect(history.map((h) => h.length)).not.toContain(2);
    expect(
      (await nodeChains()).map(
        (nc) =>
          `${nc.spec.nodeName}:${nc.spec.revision === v2 ? "v2" : nc.spec.revision === v1 ? "v1" : "?"}`,
      ),
    ).toEqual(["n1:v2", "n2:v1", "n3:v1", "n4:v1"]);
    expect(condition(sc, "Ready")).toMatchObject({ status: "False", reason: "CanaryPaused" });
    expect(condition(sc, "Ready")?.message).toContain(`${PROMOTE_ANNOTATION}=${v2}`);
    expect(events).toContainEqual(expect.objectContaining({ reason: "CanaryPaused" }));

    // Still waiting after a long time: a paused canary has no deadline.
    tick(7200);
    await rollOut();
    expect((await nodeChains()).filter((nc) => nc.spec.revision === v2)).toHaveLength(1);
    expect(condition(await chain(), "Degraded")?.status).toBe("False");

    // An annotation naming an older revision promotes nothing.
    await addChain(
      { rollout: { ...rollout, maxUnavailable: 2, canary: { nodes: 1, pause: true } } },
      { [PROMOTE_ANNOTATION]: v1! },
    );
    await rollOut();
    expect((await nodeChains()).filter((nc) => nc.spec.revision === v2)).toHaveLength(1);

    await addChain(
      { rollout: { ...rollout, maxUnavailable: 2, canary: { nodes: 1, pause: true } } },
      { [PROMOTE_ANNOTATION]: v2 },
    );
    const after = await rollOut();
    expect(Math.max(...after.map((h) => h.length))).toBe(2);
    sc = await chain();
    expect(condition(sc, "Ready")).toMatchObject({ status: "True", reason: "RolloutComplete" });
    expect(sc.status.lastGoodRevision).toBe(v2);
  });

  it("a canary without pause continues once its nodes are ready", async () => {
    await threeNodes();
    await addFunction("fw");
    await addChain({ rollout: { ...rollout, maxUnavailable: 3, canary: { nodes: 1, pause: false } } });
    const history = await rollOut();
    expect(history[0]).toEqual(["node-a"]);
    expect(history[1]).toEqual(["node-b", "node-c"]);
    expect(condition(await chain(), "Ready")?.status).toBe("True");
  });

  it("paused moves no further node", async () => {
    await threeNodes();
    await addFunction("fw");
    await addChain({ rollout: { ...rollout, paused: true } });
    await rollOut();
    const sc = await chain();
    expect(await nodeChains()).toEqual([]);
    expect(condition(sc, "Progressing")).toMatchObject({ status: "False", reason: "RolloutPaused" });
    await addChain({ rollout });
    await rollOut();
    expect(condition(await chain(), "Ready")?.status).toBe("True");
  });

  it("a node that never becomes Ready exceeds the progress deadline and is rolled back", async () => {
    await threeNodes();
    await addFunction("fw", { tables: { rules: [{ action: "deny", dport: 22 }] } });
    await addChain({ rollout: { ...rollout, progressDeadlineSeconds: 60 } });
    await rollOut();
    const v1 = (await chain()).status.revision;
    await addFunction("fw", { tables: { rules: [{ action: "deny", dport: 23 }] } });
    await rollOut({ "node-b": "silent" });
    let sc = await chain();
    expect(condition(sc, "Progressing")?.status).toBe("True");
    tick(30);
    const { requeueAfterMs } = await reconcile();
    // The deadline counts from the last progress (node-b's move), not from this reconcile.
    expect(requeueAfterMs).toBe(30_000);
    tick(31);
    await reconcile();
    sc = await chain();
    expect(condition(sc, "Degraded")).toMatchObject({ status: "True", reason: "RolledBack" });
    expect(condition(sc, "Degraded")?.message).toMatch(/no progress within 60s \(node-b not Ready\)/);
    expect(sc.status.failedNodes).toEqual([
      expect.objectContaining({ node: "node-b", reason: "ProgressDeadlineExceeded" }),
    ]);
    expect((await nodeChains()).map((nc) => nc.spec.revision)).toEqual([v1, v1, v1]);
  });

  it("a node counts as updated only after minReadySeconds", async () => {
    await addNode("node-a");
    await addNode("node-b");
    await addFunction("fw");
    await addChain({ rollout: { ...rollout, minReadySeconds: 20 } });
    await reconcile();
    await agent("node-a");
    let result = await reconcile();
    // Ready, but not for long enough: node-b waits.
    expect(await nodeChainOf("node-b")).toBeUndefined();
    expect(result.requeueAfterMs).toBe(20_000);
    expect((await chain()).status.nodes).toMatchObject({ ready: 1, updated: 1 });
    tick(20);
    result = await reconcile();
    expect((await nodeChainOf("node-b"))?.spec.revision).toBe((await chain()).status.revision);
  });
});

describe("status at scale", () => {
  const defaults = { paused: false, minReadySeconds: 0, progressDeadlineSeconds: 600, autoRollback: true };

  async function nodes(n: number, labels: Record<string, string> = {}): Promise<string[]> {
    const names = Array.from({ length: n }, (_, i) => `node-${String(i).padStart(4, "0")}`);
    for (const name of names) await addNode(name, labels);
    return names;
  }

  /** Counts the status writes of ServiceChain `web` (a wrapper around the real store call). */
  function countStatusWrites(): { count: number } {
    const writes = { count: 0 };
    const patchStatus = store.patchStatus.bind(store);
    store.patchStatus = ((kind: StoreKind, ns: string | undefined, name: string, patch: never) => {
      if (kind === "ServiceChain" && name === "web") writes.count++;
      return patchStatus(kind, ns, name, patch);
    }) as typeof store.patchStatus;
    return writes;
  }

  it("summarizes nodes by revision and phase and names only the first 5 failures", async () => {
    const all = await nodes(12);
    await addFunction("fw", { tables: { rules: [{ action: "deny", dport: 1 }] } });
    await addChain({ rollout: { ...defaults, maxUnavailable: "100%" } });
    await rollOut();
    const v1 = (await chain()).status.revision!;
    await addFunction("fw", { tables: { rules: [{ action: "deny", dport: 2 }] } });
    await reconcile();
    const v2 = (await chain()).status.revision!;
    expect((await chain()).status.revisions).toEqual([
      { revision: v2, nodes: 12, ready: 0, failed: 0, inProgress: 0, pending: 12 },
    ]);
    // Every node has v2 now; 7 fail it, 2 are compiling, 3 have not answered yet.
    const failing = all.slice(0, 7);
    for (const node of failing) await agent(node, { fail: "VerifierRejected", message: "x".repeat(3000) });
    for (const node of all.slice(7, 9)) {
      const nc = (await nodeChainOf(node))!;
      await store.patchStatus("NodeChain", NS, nc.metadata.name, {
        observedGeneration: nc.metadata.generation,
        phase: "Compiling",
        revision: v1,
      });
    }
    await reconcile();
    const sc = await chain();
    expect(sc.status.nodes).toMatchObject({ desired: 12, failed: 7 });
    expect(sc.status.failedNodes?.map((f) => f.node)).toEqual(failing.slice(0, 5));
    expect(sc.status.failedNodes?.every((f) => (f.message?.length ?? 0) <= 512)).toBe(true);
    expect(condition(sc, "Degraded")?.message).toContain("and 2 more failed nodes");
    // Halted and rolled back: every node asks for v1 again; the counts say where each stands.
    expect(sc.status.revisions).toEqual([
      { revision: v1, nodes: 12, ready: 0, failed: 0, inProgress: 0, pending: 12 },
    ]);
    await rollOut();
    expect((await chain()).status.revisions).toEqual([
      { revision: v1, nodes: 12, ready: 12, failed: 0, inProgress: 0, pending: 0 },
    ]);
    expect(JSON.stringify((await chain()).status).length).toBeLessThan(10_000);
  });

  it("counts a rollout in progress per revision and phase", async () => {
    const all = await nodes(6);
    await addFunction("fw", { tables: { rules: [{ action: "deny", dport: 1 }] } });
    await addChain({ rollout: { ...defaults, maxUnavailable: 2 } });
    await rollOut();
    const v1 = (await chain()).status.revision!;
    await addFunction("fw", { tables: { rules: [{ action: "deny", dport: 2 }] } });
    await reconcile();
    await agent(all[0]!);
    const nc = (await nodeChainOf(all[1]!))!;
    await store.patchStatus("NodeChain", NS, nc.metadata.name, {
      observedGeneration: nc.metadata.generation,
      phase: "Testing",
      revision: v1,
    });
    await reconcile();
    const sc = await chain();
    // node 0 is Ready on v2, so one more node moves; node 1 is testing v2.
    expect(sc.status.revisions).toEqual([
      { revision: sc.status.revision, nodes: 3, ready: 1, failed: 0, inProgress: 1, pending: 1 },
      { revision: v1, nodes: 3, ready: 3, failed: 0, inProgress: 0, pending: 0 },
    ]);
    expect(sc.status.nodes).toMatchObject({ desired: 6, updated: 3, ready: 1, failed: 0, summary: "1/6" });
  });

  it("writes status at most once a second while rolling out, and the final state at once", async () => {
    const all = await nodes(6);
    deps.statusWrites = new WriteCoalescer(1000, () => clock.getTime());
    await addFunction("fw");
    await addChain({ rollout: { ...defaults, maxUnavailable: 1 } });
    const writes = countStatusWrites();
    // First reconcile: a new revision is a verdict, written at once.
    await reconcile();
    expect(writes.count).toBe(1);
    // Nodes answer within the same second: progress is held back, the reconcile asks to come back.
    await agent(all[0]!);
    const held = await reconcile();
    expect(writes.count).toBe(1);
    expect(held.requeueAfterMs).toBeGreaterThan(0);
    expect(held.requeueAfterMs).toBeLessThanOrEqual(1000);
    expect((await chain()).status.nodes).toMatchObject({ ready: 0 });
    // The NodeChain writes are not held back: node 1 got the revision.
    expect((await nodeChainOf(all[1]!))?.spec.revision).toBe((await chain()).status.revision);
    tick(0.2);
    await agent(all[1]!);
    await reconcile();
    expect(writes.count).toBe(1);
    // A second later the progress is written, as it is then.
    tick(0.8);
    await reconcile();
    expect(writes.count).toBe(2);
    expect((await chain()).status.nodes).toMatchObject({ ready: 2 });
    // Within the next second the rest finish: the final state does not wait.
    for (const node of all.slice(2)) {
      await agent(node);
      await reconcile();
    }
    const sc = await chain();
    expect(condition(sc, "Ready")?.status).toBe("True");
    expect(sc.status.nodes).toMatchObject({ ready: 6, updated: 6 });
    expect(writes.count).toBe(3);
  });

  it("a large rollout is written in passes of at most maxWritesPerPass NodeChains, each asking to go on", async () => {
    await nodes(25);
    deps.maxWritesPerPass = 10;
    await addFunction("fw");
    await addChain({ rollout: { ...defaults, maxUnavailable: "100%" } });
    const first = await reconcile();
    expect(first.requeueAfterMs).toBe(0);
    expect(await nodeChains()).toHaveLength(10);
    expect((await chain()).status.nodes).toMatchObject({ desired: 25, updated: 10 });
    await reconcile();
    const last = await reconcile();
    expect(await nodeChains()).toHaveLength(25);
    // All written: only the progress deadline asks for another look.
    expect(last.requeueAfterMs).toBe(600_000);
  });
});

describe("serviceChainKeysFor", () => {
  it("maps NodeChains, GitSources and ServiceChains to the chains to reconcile", async () => {
    await addNode("node-a");
    await addGitSource("repo", digestA);
    await addFunction("fw", { source: { path: "fw.c", sourceRef: { kind: "GitSource", name: "repo" } } });
    await addFunction("other");
    await addChain();
    await addChain({ functions: [{ name: "other" }] }, undefined, "api");
    await reconcile();
    const get = async (kind: StoreKind, name: string): Promise<StoreObject> =>
      (await store.get(kind, kind === "Node" ? undefined : NS, name))!;
    expect(
      await serviceChainKeysFor({ type: "changed", object: await get("GitSource", "repo") }, store),
    ).toEqual(["default/web"]);
    expect(
      await serviceChainKeysFor({ type: "changed", object: await get("NetworkFunction", "other") }, store),
    ).toEqual(["default/api"]);
    expect(
      await serviceChainKeysFor({ type: "changed", object: await get("NodeChain", "web.node-a") }, store),
    ).toEqual(["default/web"]);
    expect(
      await serviceChainKeysFor({ type: "changed", object: await get("ServiceChain", "api") }, store),
    ).toEqual(["default/api"]);
    const node = await get("Node", "node-a");
    expect((await serviceChainKeysFor({ type: "changed", object: node }, store)).sort()).toEqual([
      "default/api",
      "default/web",
    ]);
    expect(await serviceChainKeysFor({ type: "deleted", object: node }, store)).toEqual(["default/web"]);
  });
});
