/**
 * Two teams on one operator and one real kube-apiserver: team-a and team-b each own a namespace,
 * a Secret with Git credentials, a GitSource and a repository on a smart-HTTP Git server. Nothing
 * team-a commits reaches team-b: an object naming team-b invalidates team-a's whole revision, a
 * GitSource planted in team-b never reads team-b's Secret (the server team-a's author controls
 * records every credential it is sent), `file://` needs an operator flag, webhook paths are
 * salted per source, and the artifact server answers only what a GitSource published.
 */
import { createHash, createHmac } from "node:crypto";
import { mkdir, mkdtemp, rm } from "node:fs/promises";
import { request } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildArtifact } from "../../common/artifact/index.ts";
import { startOperator, type RunningOperator } from "../../operator/src/operator.ts";
import {
  createTestRepo,
  git,
  startGitHttpServer,
  type GitHttpServer,
  type TestRepo,
} from "../support/git-servers.ts";
import { createTestNamespace, kubeconfigPath, kubectlOk } from "./harness.ts";
import { type Condition, type GitSourceView, installCrds, readyOf } from "./sluice-support.ts";

const teamA = createTestNamespace("team-a");
const teamB = createTestNamespace("team-b");
/** A third namespace, served by a second operator started with --allow-file-sources. */
const local = createTestNamespace("team-local");

const teamBCreds = { username: "team-b", password: "team-b-git-password-7c1e" };
const sharedHookToken = "one-token-for-both-teams";

const nf = (name: string, limit: number, namespace?: string) => `apiVersion: sluice.dev/v1alpha1
kind: NetworkFunction
metadata:
  name: ${name}
${namespace ? `  namespace: ${namespace}\n` : ""}spec:
  hooks: [xdp]
  source:
    builtin: ratelimit
  parameters:
    rate: ${limit}
`;

let tmp: string;
let operator: RunningOperator;
/** team-b's Git host: it demands team-b's credentials. */
let teamBHost: GitHttpServer;
/** A Git host team-a's author controls: it serves anyone and records every Authorization header. */
let attackerHost: GitHttpServer;
let repoA: TestRepo;
let repoB: TestRepo;
let goodA: string;

async function getSource(
  namespace: string,
  name: string,
): Promise<GitSourceView & { status?: { webhookSalt?: string } }> {
  return JSON.parse(await kubectlOk(["get", "gitsource", name, "-n", namespace, "-o", "json"]));
}

async function waitForSource(
  namespace: string,
  name: string,
  what: string,
  match: (gs: GitSourceView) => boolean,
  timeoutMs = 30_000,
): Promise<GitSourceView> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const gs = await getSource(namespace, name).catch(() => undefined);
    if (gs && match(gs)) return gs;
    if (Date.now() > deadline)
      throw new Error(
        `GitSource ${namespace}/${name} not ${what}: ${JSON.stringify(gs?.status?.conditions)}`,
      );
    await new Promise((ok) => setTimeout(ok, 100));
  }
}

const condition = (gs: GitSourceView, type: string): Condition | undefined =>
  gs.status?.conditions?.find((c) => c.type === type);

async function applySource(
  namespace: string,
  name: string,
  spec: Record<string, unknown>,
  labels?: Record<string, string>,
) {
  const obj = {
    apiVersion: "sluice.dev/v1alpha1",
    kind: "GitSource",
    metadata: { name, namespace, ...(labels ? { labels } : {}) },
    spec: { interval: "1h", ...spec },
  };
  await kubectlOk(["apply", "-f", "-"], { input: JSON.stringify(obj) });
}

/** Asks for a reconcile now; returns the annotation value status.lastHandledReconcileAt will show. */
async function reconcileNow(namespace: string, name: string): Promise<string> {
  const at = String(Date.now());
  await kubectlOk([
    "annotate",
    "--overwrite",
    `gitsource/${name}`,
    "-n",
    namespace,
    `sluice.dev/reconcile-at=${at}`,
  ]);
  return at;
}

/** Reconciles the source now and returns it once that reconcile has written its status. */
async function reconciled(namespace: string, name: string): Promise<GitSourceView> {
  const at = await reconcileNow(namespace, name);
  return waitForSource(
    namespace,
    name,
    `reconciled at ${at}`,
    (s) => s.status?.lastHandledReconcileAt === at,
  );
}

/** GET `path` exactly as given (fetch would normalize `..` away); resolves with the status. */
function rawGet(base: string, path: string): Promise<number> {
  const url = new URL(base);
  return new Promise((resolve, reject) => {
    const req = request({ host: url.hostname, port: url.port, path, method: "GET" }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on("error", reject);
    req.end();
  });
}

async function objectsIn(
  namespace: string,
  kinds = "networkfunctions,servicechains,gitsources",
): Promise<string[]> {
  const out = await kubectlOk(["get", kinds, "-n", namespace, "-o", "name"]);
  return out.trim().split("\n").filter(Boolean).sort();
}

/** Every Authorization header the attacker's server was sent. */
const leakedCredentials = () => attackerHost.requests.filter((r) => r.authorization !== undefined);

beforeAll(async () => {
  await installCrds();
  tmp = await mkdtemp(join(tmpdir(), "sluice-tenancy-"));
  const teamBRoot = join(tmp, "team-b-host");
  const attackerRoot = join(tmp, "attacker-host");
  await mkdir(teamBRoot);
  await mkdir(attackerRoot);
  repoB = await createTestRepo({ name: "b", serveRoot: teamBRoot });
  repoA = await createTestRepo({ name: "a", serveRoot: attackerRoot });
  await createTestRepo({ name: "loot", serveRoot: repoA.serveRoot }).then((r) =>
    r.commit({ "x.yaml": nf("loot", 1) }),
  );
  teamBHost = await startGitHttpServer(repoB.serveRoot, { basic: teamBCreds });
  attackerHost = await startGitHttpServer(repoA.serveRoot);

  for (const [namespace, creds] of [
    [teamA, { username: "team-a", password: "team-a-password" }],
    [teamB, teamBCreds],
  ] as const) {
    await kubectlOk([
      "create",
      "secret",
      "generic",
      "git",
      "-n",
      namespace,
      `--from-literal=username=${creds.username}`,
      `--from-literal=password=${creds.password}`,
    ]);
    await kubectlOk([
      "create",
      "secret",
      "generic",
      "hook",
      "-n",
      namespace,
      `--from-literal=token=${sharedHookToken}`,
    ]);
  }

  operator = await startOperator({
    kubeconfig: kubeconfigPath(),
    // One operator for both teams, with the defaults a shared cluster runs with.
    namespace: [teamA, teamB],
    port: 0,
    host: "127.0.0.1",
    dataDir: join(tmp, "operator"),
  });

  // team-b's own source, with its credentials: Ready, its function applied.
  const shaB = await repoB.commit({ "fw.yaml": nf("b-fw", 10) });
  await applySource(teamB, "app", {
    url: teamBHost.url("b"),
    secretRef: { name: "git" },
    webhookSecretRef: { name: "hook" },
  });
  await waitForSource(teamB, "app", "Ready", (gs) => gs.status?.lastAppliedRevision === `main@sha1:${shaB}`);

  // team-a's source, fine at first.
  goodA = await repoA.commit({ "fw.yaml": nf("a-fw", 1) });
  await applySource(teamA, "app", { url: attackerHost.url("a"), webhookSecretRef: { name: "hook" } });
  await waitForSource(teamA, "app", "Ready", (gs) => gs.status?.lastAppliedRevision === `main@sha1:${goodA}`);
});

afterAll(async () => {
  await operator?.stop();
  await teamBHost?.stop();
  await attackerHost?.stop();
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

describe("namespaces", () => {
  let bad: string;

  beforeAll(async () => {
    // team-a commits a GitSource into team-b that names team-b's Secret and points at team-a's
    // server, and an overwrite of team-b's function.
    bad = await repoA.commit({
      "fw.yaml": nf("a-fw", 2),
      "steal/source.yaml": `apiVersion: sluice.dev/v1alpha1
kind: GitSource
metadata:
  name: planted
  namespace: ${teamB}
spec:
  url: ${attackerHost.url("loot")}
  interval: 1h
  secretRef:
    name: git
`,
      "steal/fw.yaml": nf("b-fw", 666, teamB),
    });
    await reconciled(teamA, "app");
  });

  it("an object naming team-b makes team-a's whole revision invalid, naming file, document and metadata.namespace", async () => {
    const gs = await getSource(teamA, "app");
    const ready = readyOf(gs)!;
    expect(ready.status).toBe("False");
    expect(ready.reason).toBe("ManifestsInvalid");
    expect(ready.message).toMatch(new RegExp(`^revision main@sha1:${bad} rejected: `));
    expect(ready.message).toMatch(
      new RegExp(
        `steal/fw\\.yaml: document 1 \\(NetworkFunction b-fw\\): metadata\\.namespace: namespace ${teamB} is outside this GitSource's namespace ${teamA}`,
      ),
    );
    expect(ready.message).toMatch(/and 1 more error/);
    // Nothing of the revision is applied, not even team-a's own change.
    expect(gs.status?.lastAppliedRevision).toBe(`main@sha1:${goodA}`);
    expect(
      await kubectlOk([
        "get",
        "networkfunction",
        "a-fw",
        "-n",
        teamA,
        "-o",
        "jsonpath={.spec.parameters.rate}",
      ]),
    ).toBe("1");
    const events = await kubectlOk([
      "get",
      "events",
      "-n",
      teamA,
      "--field-selector",
      "involvedObject.name=app,type=Warning",
      "-o",
      "jsonpath={.items[*].reason}",
    ]);
    expect(events).toContain("ManifestsInvalid");
  });

  it("nothing lands in team-b: no planted GitSource, team-b's function untouched", async () => {
    // Long enough for a planted source to be reconciled (a sync here takes well under a second).
    await new Promise((ok) => setTimeout(ok, 2_000));
    expect(await objectsIn(teamB)).toEqual(["gitsource.sluice.dev/app", "networkfunction.sluice.dev/b-fw"]);
    const fw = JSON.parse(await kubectlOk(["get", "networkfunction", "b-fw", "-n", teamB, "-o", "json"]));
    expect(fw.spec.parameters.rate).toBe(10);
    expect(fw.metadata.labels["sluice.dev/source"]).toBe(`${teamB}.app`);
  });

  it("team-b's credentials never reach team-a's server", () => {
    expect(leakedCredentials()).toEqual([]);
    expect(attackerHost.requests.some((r) => r.path.startsWith("/loot.git"))).toBe(false);
  });

  it("a GitSource in team-b labelled as applied by team-a (left from an older version) is Stalled and reads no Secret", async () => {
    await applySource(
      teamB,
      "leftover",
      { url: attackerHost.url("loot"), secretRef: { name: "git" }, webhookSecretRef: { name: "hook" } },
      { "sluice.dev/source": `${teamA}.app` },
    );
    const gs = await waitForSource(
      teamB,
      "leftover",
      "Stalled",
      (s) => condition(s, "Stalled")?.status === "True",
    );
    expect(readyOf(gs)).toMatchObject({ status: "False", reason: "CrossNamespaceNotAllowed" });
    expect(readyOf(gs)!.message).toContain(`applied by GitSource ${teamA}.app of namespace ${teamA}`);
    expect(gs.status?.webhookPath).toBeUndefined();
    expect(leakedCredentials()).toEqual([]);
    expect(attackerHost.requests.some((r) => r.path.startsWith("/loot.git"))).toBe(false);
    await kubectlOk(["delete", "gitsource", "leftover", "-n", teamB]);
  });

  it("a secretRef naming another namespace is refused by the schema", async () => {
    const sha = await repoA.commit({
      "steal/source.yaml": `apiVersion: sluice.dev/v1alpha1
kind: GitSource
metadata:
  name: child
spec:
  url: ${attackerHost.url("loot")}
  secretRef:
    name: git
    namespace: ${teamB}
`,
      "steal/fw.yaml": null,
    });
    const gs = await reconciled(teamA, "app");
    expect(readyOf(gs)!.message).toMatch(new RegExp(`^revision main@sha1:${sha} rejected: `));
    expect(readyOf(gs)!.message).toMatch(
      /steal\/source\.yaml: document 1 \(GitSource child\): spec\.secretRef/,
    );
    expect(leakedCredentials()).toEqual([]);
  });

  it("a cluster-scoped object is refused, saying it is cluster-scoped", async () => {
    const sha = await repoA.commit({
      "steal/source.yaml": null,
      "steal/ns.yaml": "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: team-a-owns-this\n",
    });
    const gs = await reconciled(teamA, "app");
    expect(readyOf(gs)!.message).toMatch(new RegExp(`^revision main@sha1:${sha} rejected: `));
    expect(readyOf(gs)!.message).toMatch(
      /steal\/ns\.yaml: document 1 \(Namespace team-a-owns-this\): kind: Namespace is cluster-scoped/,
    );
  });

  it("team-a recovers once the commit stays in its namespace; prune never reaches team-b", async () => {
    const fixed = await repoA.commit({ "steal/ns.yaml": null, "fw.yaml": nf("a-fw", 3) });
    await reconcileNow(teamA, "app");
    await waitForSource(
      teamA,
      "app",
      "Ready at the fixed commit",
      (s) => s.status?.lastAppliedRevision === `main@sha1:${fixed}`,
    );
    expect(
      await kubectlOk([
        "get",
        "networkfunction",
        "a-fw",
        "-n",
        teamA,
        "-o",
        "jsonpath={.spec.parameters.rate}",
      ]),
    ).toBe("3");
    expect(await objectsIn(teamB)).toEqual(["gitsource.sluice.dev/app", "networkfunction.sluice.dev/b-fw"]);
  });
});

describe("file:// sources", () => {
  let localRepo: TestRepo;
  let permissive: RunningOperator | undefined;

  beforeAll(async () => {
    localRepo = await createTestRepo({ name: "local", serveRoot: join(tmp, "attacker-host") });
    await localRepo.commit({ "fw.yaml": nf("local-fw", 1) });
  });
  afterAll(async () => {
    await permissive?.stop();
  });

  it("are refused by default: Ready False, Stalled True, reason SourceNotAllowed naming the flag", async () => {
    // The URL of team-b's working clone on the operator's disk would read just as well.
    await applySource(teamA, "local", { url: localRepo.fileUrl, secretRef: { name: "git" } });
    const gs = await waitForSource(
      teamA,
      "local",
      "Stalled",
      (s) => condition(s, "Stalled")?.status === "True",
    );
    expect(readyOf(gs)).toMatchObject({ status: "False", reason: "SourceNotAllowed" });
    expect(readyOf(gs)!.message).toMatch(
      /file:\/\/ URLs read the operator's own disk .*--allow-file-sources/,
    );
    expect(gs.status?.artifact).toBeUndefined();
    const shown = await kubectlOk(["get", "gitsource", "local", "-n", teamA, "--no-headers"]);
    expect(shown).toMatch(/False/);
  });

  it("are followed by an operator started with --allow-file-sources", async () => {
    permissive = await startOperator({
      kubeconfig: kubeconfigPath(),
      namespace: local,
      port: 0,
      host: "127.0.0.1",
      dataDir: join(tmp, "permissive"),
      sources: { allowFileSources: true, allowedGitHosts: ["git.example.com", "*.example.org"] },
    });
    await applySource(local, "local", { url: localRepo.fileUrl });
    await kubectlOk(["wait", "--for=condition=Ready", "gitsource/local", "-n", local, "--timeout=30s"]);
    expect(await objectsIn(local, "networkfunctions")).toEqual(["networkfunction.sluice.dev/local-fw"]);
  });

  it("a host outside --allowed-git-hosts is refused before any Secret is read", async () => {
    await kubectlOk([
      "create",
      "secret",
      "generic",
      "git",
      "-n",
      local,
      "--from-literal=bearerToken=local-token",
    ]);
    await applySource(local, "elsewhere", { url: attackerHost.url("a"), secretRef: { name: "git" } });
    const gs = await waitForSource(
      local,
      "elsewhere",
      "Stalled",
      (s) => condition(s, "Stalled")?.status === "True",
    );
    expect(readyOf(gs)).toMatchObject({
      status: "False",
      reason: "SourceNotAllowed",
      message: `host 127.0.0.1:${attackerHost.port} is not among the operator's allowed Git hosts (git.example.com, *.example.org)`,
    });
    expect(leakedCredentials()).toEqual([]);
  });
});

describe("artifact server", () => {
  it("serves a published artifact and 404s everything else: unpublished revisions, other sources, traversal", async () => {
    const a = await getSource(teamA, "app");
    const b = await getSource(teamB, "app");
    const published = new URL(a.status!.artifact!.url).pathname;
    expect(await rawGet(operator.url, published)).toBe(200);

    // team-a's rejected commit was packed (the artifact store holds it) but never published.
    const checkout = join(tmp, "rejected-checkout");
    await git(tmp, "clone", "--quiet", repoA.bareDir, checkout);
    await git(checkout, "checkout", "--quiet", "HEAD~2");
    const rejected = await buildArtifact(checkout, ".");
    const rejectedPath = `/artifacts/${teamA}/app/${rejected.digest.slice(7)}.tar.gz`;
    expect(await rawGet(operator.url, rejectedPath)).toBe(404);

    const hexB = b.status!.artifact!.digest.slice(7);
    const paths = [
      // team-b's artifact under team-a's source.
      `/artifacts/${teamA}/app/${hexB}.tar.gz`,
      `/artifacts/${teamA}/../${teamB}/app/${hexB}.tar.gz`,
      `/artifacts/${teamA}/%2e%2e/${teamB}/app/${hexB}.tar.gz`,
      `/artifacts/${teamB}%2Fapp/${hexB}.tar.gz`,
      `/artifacts/${teamA}/app/..%2F..%2Fgit%2F${teamA}%2Fapp%2F.git%2Fconfig`,
      "/artifacts/../../../etc/passwd",
    ];
    for (const path of paths) expect(await rawGet(operator.url, path), path).toBe(404);
  });
});

describe("webhook paths", () => {
  const sign = (body: string) => `sha256=${createHmac("sha256", sharedHookToken).update(body).digest("hex")}`;
  const post = (base: string, path: string, body = "{}") =>
    fetch(new URL(path, base), {
      method: "POST",
      headers: { "X-GitHub-Event": "push", "X-Hub-Signature-256": sign(body) },
      body,
    });

  it("two sources with the same token get different salted paths that reveal nothing of the token", async () => {
    const a = await getSource(teamA, "app");
    const b = await getSource(teamB, "app");
    expect(a.status?.webhookPath).toMatch(/^\/hook\/[0-9a-f]{32}$/);
    expect(a.status?.webhookPath).not.toBe(b.status?.webhookPath);
    expect(a.status?.webhookSalt).toMatch(/^[0-9a-f]{32}$/);
    expect(b.status?.webhookSalt).toMatch(/^[0-9a-f]{32}$/);
    // Not the unsalted hash of the token an earlier version used.
    const unsalted = createHash("sha256").update(sharedHookToken).digest("hex").slice(0, 32);
    expect(a.status?.webhookPath).not.toBe(`/hook/${unsalted}`);
    expect(b.status?.webhookPath).not.toBe(`/hook/${unsalted}`);
    expect((await post(operator.url, a.status!.webhookPath!)).status).toBe(200);
    expect((await post(operator.url, `/hook/${unsalted}`)).status).toBe(404);
  });

  it("a path stays the same across an operator restart and answers there", async () => {
    const before = (await getSource(teamB, "app")).status!.webhookPath!;
    await operator.stop();
    operator = await startOperator({
      kubeconfig: kubeconfigPath(),
      namespace: [teamA, teamB],
      port: 0,
      host: "127.0.0.1",
      dataDir: join(tmp, "operator"),
    });
    const at = await reconcileNow(teamB, "app");
    await waitForSource(
      teamB,
      "app",
      "reconciled by the new operator",
      (s) => readyOf(s)?.status === "True" && s.status?.lastHandledReconcileAt === at,
    );
    expect((await getSource(teamB, "app")).status?.webhookPath).toBe(before);
    expect((await post(operator.url, before)).status).toBe(200);
  });

  it("a new token gives a new path; the old one is 404", async () => {
    const before = (await getSource(teamB, "app")).status!.webhookPath!;
    await kubectlOk(["delete", "secret", "hook", "-n", teamB]);
    await kubectlOk([
      "create",
      "secret",
      "generic",
      "hook",
      "-n",
      teamB,
      "--from-literal=token=a-new-token-for-b",
    ]);
    await reconcileNow(teamB, "app");
    const gs = await waitForSource(teamB, "app", "with a new path", (s) => s.status?.webhookPath !== before);
    expect(gs.status?.webhookPath).toMatch(/^\/hook\/[0-9a-f]{32}$/);
    expect((await post(operator.url, before)).status).toBe(404);
  });
});
