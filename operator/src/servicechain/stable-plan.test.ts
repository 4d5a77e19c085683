import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { API_VERSION, CHAIN_LABEL, NodeChain, ServiceChain } from "../../../common/api/index.ts";
import { ArtifactStore, buildArtifact } from "../../../common/artifact/index.ts";
import { rootLogger } from "../../../common/log.ts";
import { MemoryStore } from "../../../common/store.ts";
import { SourceServer } from "../server/index.ts";
import { ArtifactReferences } from "./artifact-refs.ts";
import { reconcileServiceChain, type ServiceChainDeps } from "./reconciler.ts";

/**
 * The reconciler keeps NodeChains as they are when a new artifact leaves the files a chain uses
 * unchanged (no write at all), and the artifact those NodeChains name stays stored and served.
 */

const NS = "default";
const digest = (c: string) => `sha256:${c.repeat(64)}`;
const urlOf = (d: string) => `http://sluice.example:8080/artifacts/${NS}/repo/${d.slice(7)}.tar.gz`;

let store: MemoryStore;
let deps: ServiceChainDeps;
/** The tree of `nf/fw` in each artifact; an artifact missing here cannot be read yet. */
let trees: Map<string, string>;

beforeEach(async () => {
  store = new MemoryStore();
  trees = new Map();
  deps = {
    store,
    now: () => new Date("2025-03-01T10:00:00Z"),
    event: () => undefined,
    sourceTree: async (_ns, _name, d, dir) => (dir === "nf/fw" ? trees.get(d) : undefined),
  };
  for (const name of ["n1", "n2"])
    await store.apply({ apiVersion: "v1", kind: "Node", metadata: { name, labels: {} } });
  await store.apply({
    apiVersion: API_VERSION,
    kind: "GitSource",
    metadata: { name: "repo", namespace: NS },
    spec: { url: "https://example.com/net.git" },
  });
  await store.apply({
    apiVersion: API_VERSION,
    kind: "NetworkFunction",
    metadata: { name: "fw", namespace: NS },
    spec: { hooks: ["xdp"], source: { path: "nf/fw/fw.c", sourceRef: { kind: "GitSource", name: "repo" } } },
  });
  await store.apply({
    apiVersion: API_VERSION,
    kind: "ServiceChain",
    metadata: { name: "web", namespace: NS },
    spec: {
      functions: [{ name: "fw" }],
      attachment: { interfaces: ["eth0"], hook: "xdp" },
      rollout: { maxUnavailable: "100%" },
    },
  });
});

async function publish(d: string): Promise<void> {
  await store.patchStatus("GitSource", NS, "repo", {
    artifact: {
      revision: `main@sha1:${"1".repeat(40)}`,
      digest: d,
      url: urlOf(d),
      lastUpdateTime: "2025-03-01T09:00:00Z",
    },
  });
}

async function nodeChains(): Promise<NodeChain[]> {
  return (await store.list("NodeChain", NS, { [CHAIN_LABEL]: "web" }))
    .map((o) => NodeChain.parse(o))
    .sort((a, b) => a.spec.nodeName.localeCompare(b.spec.nodeName));
}

/** Every node's agent reports its NodeChain live and Ready. */
async function agentsReady(): Promise<void> {
  for (const nc of await nodeChains()) {
    await store.patchStatus("NodeChain", NS, nc.metadata.name, {
      observedGeneration: nc.metadata.generation,
      phase: "Ready",
      revision: nc.spec.revision,
      selfTest: { passed: 1, failed: 0 },
      conditions: [
        {
          type: "Ready",
          status: "True",
          reason: "Ready",
          message: "ok",
          lastTransitionTime: "2025-03-01T10:00:00Z",
        },
      ],
    });
  }
}

const reconcile = () => reconcileServiceChain(deps, NS, "web", rootLogger);
const artifactDigests = async () =>
  (await nodeChains()).map((nc) => {
    const src = nc.spec.functions[0]!.source;
    return "artifact" in src ? src.artifact.digest : undefined;
  });

describe("a new artifact with the same files", () => {
  it("writes no NodeChain and no status, and the NodeChains keep naming the artifact they were written with", async () => {
    trees.set(digest("a"), "tree-1");
    trees.set(digest("b"), "tree-1");
    trees.set(digest("c"), "tree-2");
    await publish(digest("a"));
    await reconcile();
    await agentsReady();
    await reconcile();
    const before = await nodeChains();
    const chainBefore = ServiceChain.parse(await store.get("ServiceChain", NS, "web"));
    expect(before).toHaveLength(2);
    expect(chainBefore.status.lastGoodRevision).toBe(before[0]!.spec.revision);

    // A commit that changed only a README: new artifact, same tree.
    await publish(digest("b"));
    await reconcile();
    await reconcile();
    expect((await nodeChains()).map((nc) => nc.metadata.resourceVersion)).toEqual(
      before.map((nc) => nc.metadata.resourceVersion),
    );
    expect(await artifactDigests()).toEqual([digest("a"), digest("a")]);
    const chainAfter = ServiceChain.parse(await store.get("ServiceChain", NS, "web"));
    expect(chainAfter.metadata.resourceVersion).toBe(chainBefore.metadata.resourceVersion);

    // The used files changed: a new revision, written with the new artifact.
    await publish(digest("c"));
    await reconcile();
    const after = await nodeChains();
    expect(after.every((nc) => nc.spec.revision !== before[0]!.spec.revision)).toBe(true);
    expect(await artifactDigests()).toEqual([digest("c"), digest("c")]);
  });

  it("writes the current artifact, same revision, when the one the NodeChains name can no longer be served", async () => {
    trees.set(digest("a"), "tree-1");
    trees.set(digest("b"), "tree-1");
    await publish(digest("a"));
    await reconcile();
    const before = await nodeChains();
    // A new operator that holds only the newest artifact.
    deps.artifactAvailable = async (_url, d) => d === digest("b");
    await publish(digest("b"));
    await reconcile();
    const after = await nodeChains();
    expect(after.map((nc) => nc.spec.revision)).toEqual(before.map((nc) => nc.spec.revision));
    expect(await artifactDigests()).toEqual([digest("b"), digest("b")]);
  });

  it("waits, writing nothing, while the artifact cannot be read", async () => {
    await publish(digest("d"));
    expect(await reconcile()).toEqual({ requeueAfterMs: expect.any(Number) });
    expect(await nodeChains()).toEqual([]);
    trees.set(digest("d"), "tree-1");
    await reconcile();
    expect(await nodeChains()).toHaveLength(2);
  });
});

describe("artifacts that live plans name", () => {
  let tmp: string;
  let server: SourceServer;
  afterEach(async () => {
    await server?.close();
    await rm(tmp, { recursive: true, force: true });
  });

  it("stay stored and served beyond the last few published, until no plan names them", async () => {
    tmp = await mkdtemp(join(tmpdir(), "sluice-refs-"));
    const artifacts = new ArtifactStore(join(tmp, "store"), { keep: 2 });
    server = new SourceServer({ store: artifacts });
    const base = (await server.listen(0, "127.0.0.1")).url;
    const references = new ArtifactReferences();
    const retained = (ns: string, name: string, d: string) => references.has(ns, name, d);
    artifacts.retain = retained;
    server.retainArtifacts(retained);

    const built = [];
    for (const text of ["one", "two", "three", "four", "five"]) {
      const dir = join(tmp, text);
      await mkdir(dir, { recursive: true });
      await writeFile(join(dir, "README.md"), text);
      built.push(await buildArtifact(dir));
    }
    const [first, ...rest] = built;
    const last = rest.pop()!;
    const url = (d: string) => `${base}/artifacts/${NS}/repo/${d.slice(7)}.tar.gz`;
    await artifacts.put(NS, "repo", first!);
    server.publishArtifact(NS, "repo", first!.digest);
    const plan = {
      revision: "r1",
      interfaces: ["eth0"],
      hook: "xdp" as const,
      functions: [
        {
          name: "fw",
          networkFunction: "fw",
          source: { artifact: { url: url(first!.digest), digest: first!.digest, path: "fw.c" } },
        },
      ],
    };
    references.set(`NodeChain/${NS}/web.n1`, [plan]);
    for (const a of rest) {
      // Commits are far apart in time; the store orders artifacts by file time.
      await new Promise((ok) => setTimeout(ok, 20));
      await artifacts.put(NS, "repo", a);
      server.publishArtifact(NS, "repo", a.digest);
    }
    expect((await fetch(url(first!.digest))).status).toBe(200);
    // The second is neither among the last two nor named by a plan.
    expect((await fetch(url(rest[0]!.digest))).status).toBe(404);

    // Once no plan names it, the next artifact stored drops it.
    references.delete(`NodeChain/${NS}/web.n1`);
    await new Promise((ok) => setTimeout(ok, 20));
    await artifacts.put(NS, "repo", last);
    server.publishArtifact(NS, "repo", last.digest);
    expect((await fetch(url(first!.digest))).status).toBe(404);
  });
});
