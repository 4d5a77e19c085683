import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { ArtifactStore } from "../../../common/artifact/index.ts";
import { rootLogger } from "../../../common/log.ts";
import { MemoryStore, type StoreKind } from "../../../common/store.ts";
import { createTestRepo, type TestRepo } from "../../../test/support/git-servers.ts";
import type { SourcePolicy } from "./policy.ts";
import { reconcileGitSource, SOURCE_LABEL, type GitSourceDeps } from "./reconciler.ts";

const nf = (name: string, namespace?: string) => `apiVersion: sluice.dev/v1alpha1
kind: NetworkFunction
metadata:
  name: ${name}
${namespace ? `  namespace: ${namespace}\n` : ""}spec:
  hooks: [xdp]
  source:
    builtin: noop
`;

interface Harness {
  store: MemoryStore;
  deps: GitSourceDeps;
  secretsRead: string[];
  published: string[];
  events: string[];
  /** Registered webhook paths by `<namespace>/<name>`. */
  hooks: Map<string, string>;
}

let tmp: string;
let repo: TestRepo;

beforeAll(async () => {
  tmp = await mkdtemp(join(tmpdir(), "sluice-gs-"));
});
afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
});

let h: Harness;
let run = 0;
beforeEach(async () => {
  run++;
  repo = await createTestRepo({ name: "tenant", serveRoot: tmp });
  const store = new MemoryStore();
  const secretsRead: string[] = [];
  const published: string[] = [];
  const events: string[] = [];
  const hooks = new Map<string, string>();
  h = {
    hooks,
    store,
    secretsRead,
    published,
    events,
    deps: {
      store,
      artifacts: new ArtifactStore(join(tmp, `artifacts-${run}`)),
      artifactBaseUrl: "http://127.0.0.1:1",
      workRoot: join(tmp, `git-${run}`),
      readSecret: async (namespace, name) => {
        secretsRead.push(`${namespace}/${name}`);
        return { token: `token-of-${namespace}`, username: "u", password: "p" };
      },
      ensureWebhook: (namespace, name, hook) => {
        if (!hook) {
          hooks.delete(`${namespace}/${name}`);
          return undefined;
        }
        const path = `/hook/${hook.salt}-${hook.token}`;
        hooks.set(`${namespace}/${name}`, path);
        return path;
      },
      publishArtifact: (namespace, name, digest) => published.push(`${namespace}/${name}@${digest}`),
      event: (_obj, type, reason, message) => events.push(`${type} ${reason}: ${message}`),
    },
  };
});

afterEach(async () => {
  await repo.cleanup();
});

async function source(
  namespace: string,
  name: string,
  spec: Record<string, unknown>,
  labels?: Record<string, string>,
): Promise<void> {
  await h.store.apply({
    apiVersion: "sluice.dev/v1alpha1",
    kind: "GitSource",
    metadata: { name, namespace, generation: 1, ...(labels ? { labels } : {}) },
    spec: { url: repo.fileUrl, interval: "1h", ...spec },
  });
}

async function reconcile(namespace: string, name: string, policy: SourcePolicy = { allowFileSources: true }) {
  await reconcileGitSource({ ...h.deps, policy }, namespace, name, rootLogger);
  const gs = (await h.store.get("GitSource", namespace, name))!;
  const status = gs.status as {
    conditions?: { type: string; status: string; reason: string; message: string }[];
    inventory?: { kind: string; namespace?: string; name: string }[];
    webhookPath?: string;
    webhookSalt?: string;
    lastAppliedRevision?: string;
  };
  const cond = (type: string) => status.conditions?.find((c) => c.type === type);
  return { status, ready: cond("Ready"), stalled: cond("Stalled") };
}

const names = async (kind: StoreKind, namespace: string) =>
  (await h.store.list(kind, namespace)).map((o) => o.metadata.name).sort();

describe("GitSource tenancy", () => {
  it("an object naming another namespace invalidates the whole revision: nothing applied anywhere", async () => {
    await repo.commit({ "a.yaml": nf("mine"), "b.yaml": nf("theirs", "team-b") });
    await source("team-a", "app", {});
    const { ready, status } = await reconcile("team-a", "app");
    expect(ready).toMatchObject({ status: "False", reason: "ManifestsInvalid" });
    expect(ready!.message).toMatch(
      /b\.yaml: document 1 \(NetworkFunction theirs\): metadata\.namespace: namespace team-b is outside this GitSource's namespace team-a/,
    );
    expect(await names("NetworkFunction", "team-a")).toEqual([]);
    expect(await names("NetworkFunction", "team-b")).toEqual([]);
    expect(status.lastAppliedRevision).toBeUndefined();
    expect(h.published).toEqual([]);
  });

  it("with allowCrossNamespace the same revision applies into both namespaces", async () => {
    await repo.commit({ "a.yaml": nf("mine"), "b.yaml": nf("theirs", "team-b") });
    await source("team-a", "app", {});
    const { ready } = await reconcile("team-a", "app", { allowFileSources: true, allowCrossNamespace: true });
    expect(ready).toMatchObject({ status: "True" });
    expect(await names("NetworkFunction", "team-b")).toEqual(["theirs"]);
  });

  it("a GitSource planted from another namespace is stalled before any Secret is read", async () => {
    await repo.commit({ "a.yaml": nf("mine") });
    await source(
      "team-b",
      "planted",
      { secretRef: { name: "team-b-git" }, webhookSecretRef: { name: "team-b-hook" } },
      { [SOURCE_LABEL]: "team-a.app" },
    );
    const { ready, stalled } = await reconcile("team-b", "planted");
    expect(ready).toMatchObject({ status: "False", reason: "CrossNamespaceNotAllowed" });
    expect(stalled).toMatchObject({ status: "True", reason: "CrossNamespaceNotAllowed" });
    expect(ready!.message).toMatch(/applied by GitSource team-a\.app of namespace team-a/);
    expect(h.secretsRead).toEqual([]);
    expect(await names("NetworkFunction", "team-b")).toEqual([]);
  });

  it("a GitSource from a GitSource of its own namespace reads its namespace's Secret", async () => {
    await repo.commit({ "a.yaml": nf("mine") });
    await source("team-a", "child", { webhookSecretRef: { name: "hook" } }, { [SOURCE_LABEL]: "team-a.app" });
    const { ready } = await reconcile("team-a", "child");
    expect(ready).toMatchObject({ status: "True" });
    expect(h.secretsRead).toEqual(["team-a/hook"]);
  });

  it("prune deletes only objects of its own namespace that still carry its label", async () => {
    await repo.commit({ "a.yaml": nf("kept") });
    await source("team-a", "app", {});
    for (const [namespace, name, label] of [
      ["team-a", "gone", "team-a.app"],
      ["team-a", "taken-over", "team-a.other"],
      ["team-b", "elsewhere", "team-a.app"],
    ] as const) {
      await h.store.apply({
        apiVersion: "sluice.dev/v1alpha1",
        kind: "NetworkFunction",
        metadata: { name, namespace, labels: { [SOURCE_LABEL]: label } },
        spec: { hooks: ["xdp"], source: { builtin: "noop" } },
      });
    }
    // An inventory that names objects out of reach (written by an older version, or by hand).
    await h.store.patchStatus("GitSource", "team-a", "app", {
      inventory: [
        { kind: "NetworkFunction", namespace: "team-a", name: "gone" },
        { kind: "NetworkFunction", namespace: "team-a", name: "taken-over" },
        { kind: "NetworkFunction", namespace: "team-b", name: "elsewhere" },
      ],
    });
    const { ready } = await reconcile("team-a", "app");
    expect(ready).toMatchObject({ status: "True" });
    expect(await names("NetworkFunction", "team-a")).toEqual(["kept", "taken-over"]);
    expect(await names("NetworkFunction", "team-b")).toEqual(["elsewhere"]);
    expect(h.events.join("\n")).toMatch(/PruneSkipped: not pruned: .*team-a\/taken-over.*team-b\/elsewhere/);
  });
});

describe("GitSource URLs", () => {
  it("file:// is refused by default with Stalled/SourceNotAllowed, before any Secret is read", async () => {
    await repo.commit({ "a.yaml": nf("mine") });
    await source("team-a", "local", { secretRef: { name: "creds" }, webhookSecretRef: { name: "hook" } });
    h.hooks.set("team-a/local", "/hook/registered-while-it-was-allowed");
    const { ready, stalled } = await reconcile("team-a", "local", {});
    expect(ready).toMatchObject({ status: "False", reason: "SourceNotAllowed" });
    expect(stalled).toMatchObject({ status: "True", reason: "SourceNotAllowed" });
    expect(ready!.message).toMatch(/file:\/\/ URLs .* --allow-file-sources/);
    expect(h.hooks.size).toBe(0);
    expect(h.secretsRead).toEqual([]);
    expect(await names("NetworkFunction", "team-a")).toEqual([]);
  });

  it("a host outside the allow-list is refused", async () => {
    await source("team-a", "remote", { url: "https://evil.example.net/repo.git" });
    const { ready } = await reconcile("team-a", "remote", { allowedGitHosts: ["git.example.com"] });
    expect(ready).toMatchObject({ status: "False", reason: "SourceNotAllowed" });
    expect(ready!.message).toBe(
      "host evil.example.net is not among the operator's allowed Git hosts (git.example.com)",
    );
  });
});

describe("webhook salt", () => {
  it("is random per source, kept in status across reconciles, and dropped with webhookSecretRef", async () => {
    await repo.commit({ "a.yaml": nf("mine") });
    await source("team-a", "one", { webhookSecretRef: { name: "hook" } });
    await source("team-a", "two", { webhookSecretRef: { name: "hook" } });
    const one = await reconcile("team-a", "one");
    const two = await reconcile("team-a", "two");
    expect(one.status.webhookSalt).toMatch(/^[0-9a-f]{32}$/);
    expect(two.status.webhookSalt).not.toBe(one.status.webhookSalt);
    expect(two.status.webhookPath).not.toBe(one.status.webhookPath);
    // A later reconcile (or a restarted operator, which reads status) keeps the path.
    const again = await reconcile("team-a", "one");
    expect(again.status.webhookPath).toBe(one.status.webhookPath);

    await source("team-a", "one", {});
    const off = await reconcile("team-a", "one");
    expect(off.status.webhookPath).toBeUndefined();
    expect(off.status.webhookSalt).toBeUndefined();
    await source("team-a", "one", { webhookSecretRef: { name: "hook" } });
    const on = await reconcile("team-a", "one");
    expect(on.status.webhookSalt).not.toBe(one.status.webhookSalt);
  });
});

describe("webhook salt source", () => {
  it("a kept salt (single-host mode keeps one on disk) gives the same path in a fresh store", async () => {
    await repo.commit({ "a.yaml": nf("mine") });
    const kept = "00112233445566778899aabbccddeeff";
    h.deps.newWebhookSalt = async () => kept;
    await source("default", "local", { webhookSecretRef: { name: "hook" } });
    const first = await reconcile("default", "local");
    expect(first.status.webhookSalt).toBe(kept);
    // A restart of `sluice run`: an empty memory store, the same salt from disk, the same path.
    h.store = new MemoryStore();
    h.deps.store = h.store;
    await source("default", "local", { webhookSecretRef: { name: "hook" } });
    const second = await reconcile("default", "local");
    expect(second.status.webhookPath).toBe(first.status.webhookPath);
  });
});

describe("published artifacts", () => {
  it("only an applied revision's artifact is published", async () => {
    const good = await repo.commit({ "a.yaml": nf("mine"), "b.yaml": null });
    await source("team-a", "app", {});
    await reconcile("team-a", "app");
    expect(h.published).toHaveLength(1);
    expect(h.published[0]).toMatch(/^team-a\/app@sha256:[0-9a-f]{64}$/);
    await repo.commit({ "b.yaml": nf("theirs", "team-b") });
    await h.store.apply({
      ...(await h.store.get("GitSource", "team-a", "app"))!,
      metadata: { name: "app", namespace: "team-a", generation: 2 },
    });
    const { ready, status } = await reconcile("team-a", "app");
    expect(ready).toMatchObject({ status: "False", reason: "ManifestsInvalid" });
    expect(status.lastAppliedRevision).toBe(`main@sha1:${good}`);
    expect(h.published).toHaveLength(1);
  });
});

describe("GitSource manifests", () => {
  it("a NetworkFunction naming a built-in no built-in has: Ready=False/ManifestsInvalid led by BuiltinNotFound, nothing applied", async () => {
    await repo.commit({ "a.yaml": nf("fw"), "b.yaml": nf("nat").replace("builtin: noop", "builtin: nat") });
    await source("team-a", "app", {});
    const { ready, stalled, status } = await reconcile("team-a", "app");
    expect(ready).toMatchObject({ status: "False", reason: "ManifestsInvalid" });
    expect(ready!.message).toMatch(
      /rejected: BuiltinNotFound: b\.yaml: document 1 \(NetworkFunction nat\): spec\.source\.builtin: no built-in network function "nat"/,
    );
    // The next commit may fix it: the source keeps following the repository.
    expect(stalled).toBeUndefined();
    expect(h.events).toContainEqual(
      expect.stringMatching(/^Warning ManifestsInvalid: .*BuiltinNotFound: b\.yaml/),
    );
    expect(await names("NetworkFunction", "team-a")).toEqual([]);
    expect(status.lastAppliedRevision).toBeUndefined();
  });

  it("a manifest that is merely invalid keeps the message without a second reason", async () => {
    await repo.commit({ "a.yaml": nf("fw").replace("hooks: [xdp]", "hooks: [nope]") });
    await source("team-a", "app", {});
    const { ready } = await reconcile("team-a", "app");
    expect(ready).toMatchObject({ status: "False", reason: "ManifestsInvalid" });
    expect(ready!.message).toMatch(/rejected: a\.yaml: document 1/);
  });
});
