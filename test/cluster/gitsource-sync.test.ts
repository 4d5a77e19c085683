/**
 * GitSource end to end on a real kube-apiserver: the operator runs in this process, watches
 * the test namespace, syncs real repositories (file://, git daemon, smart HTTP with Basic auth)
 * and applies NetworkFunctions and ServiceChains that a user then sees with kubectl.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CustomObjectsApi, PatchStrategy, Watch, setHeaderOptions } from "@kubernetes/client-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startOperator, type RunningOperator } from "../../operator/src/operator.ts";
import {
  createTestRepo,
  startGitDaemon,
  startGitHttpServer,
  type GitHttpServer,
  type GitServer,
  type TestRepo,
} from "../support/git-servers.ts";
import { createTestNamespace, kubeConfig, kubeconfigPath, kubectl, kubectlOk } from "./harness.ts";
import { type GitSourceView, installCrds, readyAt, readyOf } from "./sluice-support.ts";

const namespace = createTestNamespace("gitsource");

const api = kubeConfig().makeApiClient(CustomObjectsApi);

async function getSource(name: string): Promise<GitSourceView> {
  return (await api.getNamespacedCustomObject({
    group: "sluice.dev",
    version: "v1alpha1",
    namespace,
    plural: "gitsources",
    name,
  })) as GitSourceView;
}

/** Polls the GitSource until `match` holds; fails with its Ready condition after `timeoutMs`. */
async function waitForSource(
  name: string,
  what: string,
  match: (gs: GitSourceView) => boolean,
  timeoutMs = 20_000,
): Promise<GitSourceView> {
  const deadline = Date.now() + timeoutMs;
  let last: GitSourceView | undefined;
  for (;;) {
    last = await getSource(name);
    if (match(last)) return last;
    if (Date.now() > deadline) {
      throw new Error(
        `GitSource ${name}: not ${what} within ${timeoutMs} ms; Ready: ${JSON.stringify(readyOf(last))}`,
      );
    }
    await new Promise((ok) => setTimeout(ok, 50));
  }
}

const failedWith = (reason: string) => (gs: GitSourceView) =>
  readyOf(gs)?.status === "False" && readyOf(gs)?.reason === reason;

/** Applies a GitSource with kubectl, as a user would. */
async function applySource(name: string, spec: Record<string, unknown>): Promise<void> {
  const obj = { apiVersion: "sluice.dev/v1alpha1", kind: "GitSource", metadata: { name, namespace }, spec };
  await kubectlOk(["apply", "-f", "-"], { input: JSON.stringify(obj) });
}

/** Asks for a sync now, the way `sluice reconcile` or a user does. */
async function reconcileNow(name: string): Promise<string> {
  const at = new Date().toISOString();
  await kubectlOk([
    "annotate",
    "--overwrite",
    "gitsource",
    name,
    "-n",
    namespace,
    `sluice.dev/reconcile-at=${at}`,
  ]);
  return at;
}

/** Names of the objects of `plural` applied from source `name`, as kubectl lists them. */
async function appliedNames(plural: string, name: string): Promise<string[]> {
  const out = await kubectlOk([
    "get",
    plural,
    "-n",
    namespace,
    "-l",
    `sluice.dev/source=${namespace}.${name}`,
    "-o",
    "jsonpath={.items[*].metadata.name}",
  ]);
  return out.trim() === "" ? [] : out.trim().split(/\s+/).sort();
}

async function getJson(
  kind: string,
  name: string,
): Promise<{ spec: Record<string, unknown>; metadata: Record<string, unknown> }> {
  return JSON.parse(await kubectlOk(["get", kind, name, "-n", namespace, "-o", "json"]));
}

const nf = (name: string, extra = "") => `apiVersion: sluice.dev/v1alpha1
kind: NetworkFunction
metadata:
  name: ${name}
spec:
  hooks: [xdp]
  source:
    builtin: noop
${extra}`;

/** A ratelimit NetworkFunction: its typed `rate` parameter makes revisions that differ. */
const rateLimited = (name: string, rate: number) =>
  nf(name, `  parameters:\n    rate: ${rate}\n`).replace("builtin: noop", "builtin: ratelimit");

const chain = (name: string, functions: string[]) => `apiVersion: sluice.dev/v1alpha1
kind: ServiceChain
metadata:
  name: ${name}
spec:
  functions:
${functions.map((f) => `    - name: ${f}`).join("\n")}
  attachment:
    interfaces: [eth0]
    hook: xdp
`;

let operator: RunningOperator;
let dataDir: string;
let serveRoot: string;
let daemon: GitServer;
let httpServer: GitHttpServer;
const repos: TestRepo[] = [];

async function newRepo(name: string): Promise<TestRepo> {
  const repo = await createTestRepo({ name, serveRoot });
  repos.push(repo);
  return repo;
}

beforeAll(async () => {
  await installCrds();
  dataDir = await mkdtemp(join(tmpdir(), "sluice-op-"));
  serveRoot = await mkdtemp(join(tmpdir(), "sluice-srv-"));
  daemon = await startGitDaemon(serveRoot);
  httpServer = await startGitHttpServer(serveRoot, {
    basic: { username: "deploy", password: "s3cret-pass" },
  });
  operator = await startOperator({
    kubeconfig: kubeconfigPath(),
    namespace,
    port: 0,
    host: "127.0.0.1",
    dataDir: join(dataDir, "operator"),
    // These repositories are local bare repositories; a shared cluster refuses file:// by default.
    sources: { allowFileSources: true },
  });
});

afterAll(async () => {
  await operator?.stop();
  await daemon?.stop();
  await httpServer?.stop();
  for (const repo of repos) await repo.cleanup();
  await rm(serveRoot, { recursive: true, force: true });
  await rm(dataDir, { recursive: true, force: true });
});

describe("GitSource sync over each transport", () => {
  it("file://: kubectl wait --for=condition=Ready returns, kubectl get shows READY True, the revision and AGE, and the objects exist", async () => {
    const repo = await newRepo("file-src");
    const sha = await repo.commit({
      "deploy/nfs/fw.yaml": nf("file-fw"),
      "deploy/chain.yaml": chain("file-edge", ["file-fw"]),
      "README.md": "not a manifest\n",
    });
    await applySource("from-file", { url: repo.fileUrl, path: "deploy", interval: "1h" });
    await kubectlOk([
      "wait",
      "--for=condition=Ready",
      "gitsource/from-file",
      "-n",
      namespace,
      "--timeout=20s",
    ]);

    const revision = `main@sha1:${sha}`;
    const row = (await kubectlOk(["get", "gitsources", "from-file", "-n", namespace, "--no-headers"]))
      .trim()
      .split(/\s+/);
    expect(row.slice(0, 3)).toEqual(["from-file", "True", revision]);
    expect(row[3]).toMatch(/^\d+s$/);

    const gs = await getSource("from-file");
    expect(gs.status?.observedGeneration).toBe(gs.metadata.generation);
    expect(gs.status?.artifact?.digest).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(gs.status?.artifact?.url).toContain(operator.url);
    expect(gs.status?.inventory).toEqual(
      expect.arrayContaining([
        { kind: "NetworkFunction", namespace, name: "file-fw" },
        { kind: "ServiceChain", namespace, name: "file-edge" },
      ]),
    );
    expect(gs.status?.inventory).toHaveLength(2);
    expect(readyOf(gs)?.message).toContain(revision);

    expect(await appliedNames("networkfunctions", "from-file")).toEqual(["file-fw"]);
    expect(await appliedNames("servicechains", "from-file")).toEqual(["file-edge"]);
    const applied = await getJson("networkfunction", "file-fw");
    expect(applied.spec).toMatchObject({ hooks: ["xdp"], source: { builtin: "noop" } });

    // The artifact in status is served by the operator.
    const res = await fetch(gs.status!.artifact!.url);
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toBe("application/gzip");
  });

  it("git daemon (git://) syncs the same way", async () => {
    const repo = await newRepo("daemon-src");
    const sha = await repo.commit({ "nf.yaml": nf("daemon-fw") });
    await applySource("from-daemon", { url: daemon.url("daemon-src"), interval: "1h" });
    await waitForSource("from-daemon", "Ready", readyAt(`main@sha1:${sha}`));
    expect(await appliedNames("networkfunctions", "from-daemon")).toEqual(["daemon-fw"]);
  });

  it("smart HTTP with Basic auth: a missing Secret and wrong credentials give Ready False with a reason; the right ones sync", async () => {
    const repo = await newRepo("http-src");
    const sha = await repo.commit({ "nf.yaml": nf("http-fw") });
    const url = httpServer.url("http-src");

    await applySource("from-http", { url, interval: "1h", secretRef: { name: "git-creds" } });
    const missing = await waitForSource("from-http", "SecretNotFound", failedWith("SecretNotFound"));
    expect(readyOf(missing)?.message).toContain("git-creds");

    await kubectlOk(["apply", "-f", "-"], {
      input: JSON.stringify({
        apiVersion: "v1",
        kind: "Secret",
        metadata: { name: "git-creds", namespace },
        stringData: { username: "deploy", password: "wrong-pass" },
      }),
    });
    await reconcileNow("from-http");
    const denied = await waitForSource(
      "from-http",
      "AuthenticationFailed",
      failedWith("AuthenticationFailed"),
    );
    expect(readyOf(denied)?.message).toMatch(
      /authentication to http:\/\/127\.0\.0\.1:\d+\/http-src\.git failed/,
    );
    expect(JSON.stringify(denied)).not.toContain("wrong-pass");
    expect(httpServer.requests.some((r) => !r.authorized && r.authorization?.startsWith("Basic "))).toBe(
      true,
    );
    // kubectl shows why in the wide table.
    const wide = await kubectlOk([
      "get",
      "gitsource",
      "from-http",
      "-n",
      namespace,
      "-o",
      "wide",
      "--no-headers",
    ]);
    expect(wide).toMatch(/False/);
    expect(wide).toMatch(/authentication/);
    expect(await appliedNames("networkfunctions", "from-http")).toEqual([]);

    await kubectlOk([
      "patch",
      "secret",
      "git-creds",
      "-n",
      namespace,
      "--type=merge",
      "-p",
      '{"stringData":{"password":"s3cret-pass"}}',
    ]);
    await reconcileNow("from-http");
    await waitForSource("from-http", "Ready", readyAt(`main@sha1:${sha}`));
    expect(await appliedNames("networkfunctions", "from-http")).toEqual(["http-fw"]);
  });
});

describe("revisions", () => {
  let repo: TestRepo;
  const name = "revs";

  beforeAll(async () => {
    repo = await newRepo("revs");
  });

  it("a new commit becomes a new revision in status and in the applied objects (picked up on the interval)", async () => {
    const first = await repo.commit({
      "nfs/a.yaml": rateLimited("revs-a", 10),
      "nfs/b.yaml": nf("revs-b"),
      "chain.yaml": chain("revs-chain", ["revs-a", "revs-b"]),
    });
    await applySource(name, { url: daemon.url("revs"), interval: "1s" });
    await waitForSource(name, "Ready at the first commit", readyAt(`main@sha1:${first}`));
    expect((await getJson("networkfunction", "revs-a")).spec.parameters).toEqual({ rate: 10 });

    const second = await repo.commit({ "nfs/a.yaml": rateLimited("revs-a", 20) });
    await kubectlOk([
      "wait",
      `--for=jsonpath={.status.lastAppliedRevision}=main@sha1:${second}`,
      `gitsource/${name}`,
      "-n",
      namespace,
      "--timeout=20s",
    ]);
    const gs = await getSource(name);
    expect(gs.status?.artifact?.revision).toBe(`main@sha1:${second}`);
    expect(readyOf(gs)?.status).toBe("True");
    expect((await getJson("networkfunction", "revs-a")).spec.parameters).toEqual({ rate: 20 });
  });

  it("a commit with one bad document changes nothing and names the file, document and field; a later good commit recovers", async () => {
    const before = await getSource(name);
    const goodRevision = before.status!.lastAppliedRevision!;
    const goodDigest = before.status!.artifact!.digest;

    // Document 2 of chain.yaml has a hook that does not exist; document 1 and the other file are fine.
    const bad = await repo.commit({
      "nfs/a.yaml": rateLimited("revs-a", 30),
      "chain.yaml": `${chain("revs-chain", ["revs-a", "revs-b"])}---\n${chain("revs-chain-2", ["revs-a"]).replace("hook: xdp", "hook: kprobe")}`,
    });
    const failed = await waitForSource(name, "ManifestsInvalid", failedWith("ManifestsInvalid"));
    const message = readyOf(failed)!.message;
    expect(message).toContain(`main@sha1:${bad}`);
    expect(message).toContain("chain.yaml: document 2 (ServiceChain revs-chain-2): spec.attachment.hook:");
    // Nothing of the bad revision was applied, and status still points at the good one.
    expect(failed.status?.lastAppliedRevision).toBe(goodRevision);
    expect(failed.status?.artifact?.digest).toBe(goodDigest);
    expect((await getJson("networkfunction", "revs-a")).spec.parameters).toEqual({ rate: 20 });
    expect(await appliedNames("servicechains", name)).toEqual(["revs-chain"]);
    const events = await kubectlOk([
      "get",
      "events",
      "-n",
      namespace,
      "--field-selector",
      `involvedObject.name=${name},reason=ManifestsInvalid`,
      "-o",
      "jsonpath={.items[*].message}",
    ]);
    expect(events).toContain("document 2");

    const fixed = await repo.commit({
      "chain.yaml": `${chain("revs-chain", ["revs-a", "revs-b"])}---\n${chain("revs-chain-2", ["revs-a"])}`,
    });
    await waitForSource(name, "Ready again", readyAt(`main@sha1:${fixed}`));
    expect((await getJson("networkfunction", "revs-a")).spec.parameters).toEqual({ rate: 30 });
    expect(await appliedNames("servicechains", name)).toEqual(["revs-chain", "revs-chain-2"]);
  });

  it("removing a manifest prunes its object", async () => {
    const sha = await repo.commit({ "nfs/b.yaml": null, "chain.yaml": chain("revs-chain", ["revs-a"]) });
    const gs = await waitForSource(name, "Ready after removal", readyAt(`main@sha1:${sha}`));
    expect(readyOf(gs)?.message).toMatch(/pruned 2/);
    expect(await appliedNames("networkfunctions", name)).toEqual(["revs-a"]);
    expect(await appliedNames("servicechains", name)).toEqual(["revs-chain"]);
    expect((await kubectl(["get", "networkfunction", "revs-b", "-n", namespace])).stderr).toMatch(/NotFound/);
    expect(gs.status?.inventory?.map((e) => e.name).sort()).toEqual(["revs-a", "revs-chain"]);
  });

  it("a force-push back to an older commit is a new revision: status shows the older commit and its objects return", async () => {
    const log = (await repo.git("log", "--format=%H")).split("\n");
    // The first commit of this repository: revs-a rate 10, revs-b, chain of both.
    const oldest = log.at(-1)!;
    await repo.forcePush(oldest);
    await waitForSource(name, "Ready at the older commit", readyAt(`main@sha1:${oldest}`));
    expect((await getJson("networkfunction", "revs-a")).spec.parameters).toEqual({ rate: 10 });
    expect(await appliedNames("networkfunctions", name)).toEqual(["revs-a", "revs-b"]);
    expect(await appliedNames("servicechains", name)).toEqual(["revs-chain"]);
  });
});

describe("prune off", () => {
  it("with prune: false, removing a manifest keeps its object (and it leaves the inventory)", async () => {
    const repo = await newRepo("keep");
    const first = await repo.commit({ "a.yaml": nf("keep-a"), "b.yaml": nf("keep-b") });
    await applySource("keep", { url: repo.fileUrl, interval: "1h", prune: false });
    await waitForSource("keep", "Ready", readyAt(`main@sha1:${first}`));

    const second = await repo.commit({ "b.yaml": null });
    await reconcileNow("keep");
    const gs = await waitForSource("keep", "Ready after removal", readyAt(`main@sha1:${second}`));
    expect(gs.status?.inventory?.map((e) => e.name)).toEqual(["keep-a"]);
    expect(await appliedNames("networkfunctions", "keep")).toEqual(["keep-a", "keep-b"]);
  });
});

describe("reconcile-at annotation", () => {
  it("triggers a sync now (the interval is an hour) and is echoed in status.lastHandledReconcileAt", async () => {
    const repo = await newRepo("now");
    const first = await repo.commit({ "a.yaml": nf("now-a") });
    await applySource("now", { url: repo.fileUrl, interval: "1h" });
    await waitForSource("now", "Ready", readyAt(`main@sha1:${first}`));

    const second = await repo.commit({ "b.yaml": nf("now-b") });
    // Without a trigger nothing happens for an hour.
    await new Promise((ok) => setTimeout(ok, 1_500));
    expect((await getSource("now")).status?.lastAppliedRevision).toBe(`main@sha1:${first}`);

    const requestedAt = await reconcileNow("now");
    const started = Date.now();
    const gs = await waitForSource(
      "now",
      "Ready at the new commit with the annotation handled",
      (s) => readyAt(`main@sha1:${second}`)(s) && s.status?.lastHandledReconcileAt === requestedAt,
      5_000,
    );
    expect(Date.now() - started).toBeLessThan(5_000);
    expect(gs.status?.lastHandledReconcileAt).toBe(requestedAt);
    expect(await appliedNames("networkfunctions", "now")).toEqual(["now-a", "now-b"]);
    const shown = await kubectlOk([
      "get",
      "gitsource",
      "now",
      "-n",
      namespace,
      "-o",
      "jsonpath={.status.lastHandledReconcileAt}",
    ]);
    expect(shown).toBe(requestedAt);
  });
});

describe("changes that arrive while a reconcile runs", () => {
  it("a spec change during a reconcile is applied right after it, and prune still knows what that reconcile applied", async () => {
    const repo = await newRepo("busy");
    const sha = await repo.commit({
      "v0/a.yaml": nf("busy-a"),
      "v1/a.yaml": nf("busy-a"),
      "v1/b.yaml": nf("busy-b"),
      "v2/a.yaml": nf("busy-a"),
    });
    await applySource("busy", { url: repo.fileUrl, path: "v0", interval: "1h" });
    await waitForSource("busy", "Ready at v0", readyAt(`main@sha1:${sha}`));

    // Two edits in quick succession: the first starts a reconcile (applying busy-b), the second
    // lands while it runs (git alone takes longer than 30 ms) and queues another reconcile,
    // which runs as soon as the first has written its status. Whether the operator's watch has
    // delivered that status by then is a race, so the round is played a few times.
    const patch = (path: string) =>
      api.patchNamespacedCustomObject(
        {
          group: "sluice.dev",
          version: "v1alpha1",
          namespace,
          plural: "gitsources",
          name: "busy",
          body: { spec: { path } },
        },
        setHeaderOptions("Content-Type", PatchStrategy.MergePatch),
      );
    // Records every busy-b that appears, to show the race was actually played.
    let busyBAdded = 0;
    const watch = await new Watch(kubeConfig()).watch(
      `/apis/sluice.dev/v1alpha1/namespaces/${namespace}/networkfunctions`,
      { labelSelector: `sluice.dev/source=${namespace}.busy` },
      (phase, obj: { metadata?: { name?: string } }) => {
        if (phase === "ADDED" && obj.metadata?.name === "busy-b") busyBAdded++;
      },
      () => undefined,
    );
    for (let round = 1; round <= 4; round++) {
      await patch("v1");
      await new Promise((ok) => setTimeout(ok, 30));
      const last = (await patch("v2")) as GitSourceView;
      const gs = await waitForSource(
        "busy",
        `Ready at generation ${last.metadata.generation}`,
        (s) => readyOf(s)?.status === "True" && s.status?.observedGeneration === last.metadata.generation,
      );
      expect(
        gs.status?.inventory?.map((e) => e.name),
        `round ${round}`,
      ).toEqual(["busy-a"]);
      // busy-b came and went with path v1: it must not outlive it.
      expect(await appliedNames("networkfunctions", "busy"), `round ${round}`).toEqual(["busy-a"]);
    }
    watch.abort();
    expect(busyBAdded, "busy-b was applied in at least one round").toBeGreaterThan(0);
  });
});
