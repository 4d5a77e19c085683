/**
 * Push webhooks on a real kube-apiserver: a GitSource with `spec.webhookSecretRef` gets a hook
 * path in status; a POST signed with the Secret's `token` (GitHub's X-Hub-Signature-256) makes
 * the operator sync at once, while the interval is an hour; a bad signature changes nothing.
 * Also measures how long a commit takes to become the Ready revision through a webhook.
 */
import { createHmac } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Watch } from "@kubernetes/client-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startOperator, type RunningOperator } from "../../operator/src/operator.ts";
import { createTestRepo, type TestRepo } from "../support/git-servers.ts";
import { createTestNamespace, kubeConfig, kubeconfigPath, kubectl, kubectlOk } from "./harness.ts";
import { type GitSourceView, installCrds, readyAt, readyOf } from "./sluice-support.ts";

const namespace = createTestNamespace("webhook");
const token = "hook-token-4f1c2b";

/**
 * Keeps the latest version of every GitSource in the namespace from a watch, so a test learns
 * of a status change the moment the API server sends it (no polling interval in the figures).
 */
class SourceWatch {
  private readonly latest = new Map<string, GitSourceView>();
  private waiters: Array<() => void> = [];
  private controller: AbortController | undefined;

  async start(): Promise<void> {
    const deadline = Date.now() + 20_000;
    for (;;) {
      let refused: { statusCode?: number; message?: string } | undefined;
      let started = false;
      const controller = await new Watch(kubeConfig()).watch(
        `/apis/sluice.dev/v1alpha1/namespaces/${namespace}/gitsources`,
        {},
        (_phase, obj: GitSourceView) => {
          this.latest.set(obj.metadata.name, obj);
          for (const wake of this.waiters.splice(0)) wake();
        },
        (err) => {
          if (!started) refused = err ?? { message: "closed at once" };
        },
      );
      if (refused === undefined) {
        started = true;
        this.controller = controller;
        return;
      }
      // Right after a CRD is Established its watch cache may still be starting (429).
      if (refused.statusCode !== 429 || Date.now() > deadline)
        throw new Error(`watch refused: ${refused.message}`);
      await new Promise((ok) => setTimeout(ok, 200));
    }
  }

  stop(): void {
    this.controller?.abort();
  }

  get(name: string): GitSourceView | undefined {
    return this.latest.get(name);
  }

  async waitFor(
    name: string,
    what: string,
    match: (gs: GitSourceView) => boolean,
    timeoutMs = 20_000,
  ): Promise<GitSourceView> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const gs = this.latest.get(name);
      if (gs && match(gs)) return gs;
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new Error(
          `GitSource ${name}: not ${what} within ${timeoutMs} ms; Ready: ${JSON.stringify(gs && readyOf(gs))}`,
        );
      }
      await new Promise<void>((wake) => {
        const timer = setTimeout(wake, left);
        this.waiters.push(() => (clearTimeout(timer), wake()));
      });
    }
  }
}

const nf = (name: string, limit: number) => `apiVersion: sluice.dev/v1alpha1
kind: NetworkFunction
metadata:
  name: ${name}
spec:
  hooks: [xdp]
  source:
    builtin: ratelimit
  parameters:
    rate: ${limit}
`;

/** A GitHub-style push payload for `sha`. */
const pushPayload = (repo: TestRepo, sha: string) =>
  JSON.stringify({ ref: `refs/heads/${repo.branch}`, after: sha, repository: { clone_url: repo.fileUrl } });

const sign = (key: string, body: string) => `sha256=${createHmac("sha256", key).update(body).digest("hex")}`;

let operator: RunningOperator;
let dataDir: string;
const watch = new SourceWatch();
const repos: TestRepo[] = [];

async function post(
  path: string,
  body: string,
  headers: Record<string, string>,
): Promise<{ status: number; text: string }> {
  const res = await fetch(new URL(path, operator.url), {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-GitHub-Event": "push", ...headers },
    body,
  });
  return { status: res.status, text: await res.text() };
}

async function applySource(name: string, spec: Record<string, unknown>): Promise<void> {
  const obj = { apiVersion: "sluice.dev/v1alpha1", kind: "GitSource", metadata: { name, namespace }, spec };
  await kubectlOk(["apply", "-f", "-"], { input: JSON.stringify(obj) });
}

async function limitOf(name: string): Promise<number> {
  const out = await kubectlOk([
    "get",
    "networkfunction",
    name,
    "-n",
    namespace,
    "-o",
    "jsonpath={.spec.parameters.rate}",
  ]);
  return Number(out);
}

beforeAll(async () => {
  await installCrds();
  await kubectlOk(["create", "secret", "generic", "hook", "-n", namespace, `--from-literal=token=${token}`]);
  dataDir = await mkdtemp(join(tmpdir(), "sluice-op-"));
  operator = await startOperator({
    kubeconfig: kubeconfigPath(),
    namespace,
    port: 0,
    host: "127.0.0.1",
    dataDir,
    // The repository is a local bare repository (file://, allowed only with this flag).
    sources: { allowFileSources: true },
  });
  await watch.start();
});

afterAll(async () => {
  watch.stop();
  await operator?.stop();
  for (const repo of repos) await repo.cleanup();
  if (dataDir) await rm(dataDir, { recursive: true, force: true });
});

describe("signed push webhooks", () => {
  let repo: TestRepo;
  let hookPath: string;

  beforeAll(async () => {
    repo = await createTestRepo({ name: "hooked" });
    repos.push(repo);
    const sha = await repo.commit({ "nf.yaml": nf("hooked", 1) });
    await applySource("hooked", { url: repo.fileUrl, interval: "1h", webhookSecretRef: { name: "hook" } });
    const gs = await watch.waitFor("hooked", "Ready", readyAt(`main@sha1:${sha}`));
    hookPath = gs.status!.webhookPath!;
  });

  it("status.webhookPath names the hook, keyed with the salt in status, without revealing the token", async () => {
    expect(hookPath).toMatch(/^\/hook\/[0-9a-f]{32}$/);
    const shown = await kubectlOk([
      "get",
      "gitsource",
      "hooked",
      "-n",
      namespace,
      "-o",
      "jsonpath={.status.webhookPath}",
    ]);
    expect(shown).toBe(hookPath);
    expect(JSON.stringify(watch.get("hooked"))).not.toContain(token);
  });

  it("a POST signed with the token syncs the new commit within a second, though the interval is an hour", async () => {
    const sha = await repo.commit({ "nf.yaml": nf("hooked", 2) });
    const body = pushPayload(repo, sha);
    const started = performance.now();
    const res = await post(hookPath, body, { "X-Hub-Signature-256": sign(token, body) });
    expect(res.status).toBe(200);
    await watch.waitFor("hooked", "Ready at the pushed commit", readyAt(`main@sha1:${sha}`), 1_000);
    expect(performance.now() - started).toBeLessThan(1_000);
    expect(await limitOf("hooked")).toBe(2);
  });

  it.each([
    { name: "a signature made with another token", signature: (body: string) => sign("not-the-token", body) },
    { name: "a signature of another body", signature: () => sign(token, "{}") },
    { name: "no signature", signature: () => undefined },
    { name: "a malformed signature", signature: () => "sha256=zz" },
  ])("$name gets 401 and no sync", async ({ signature }) => {
    const before = watch.get("hooked")!.status!.lastAppliedRevision;
    const sha = await repo.commit({ "nf.yaml": nf("hooked", 100 + Math.floor(Math.random() * 1000)) });
    const body = pushPayload(repo, sha);
    const value = signature(body);
    const res = await post(hookPath, body, value === undefined ? {} : { "X-Hub-Signature-256": value });
    expect(res.status).toBe(401);
    // A sync would take well under this (see the test above).
    await new Promise((ok) => setTimeout(ok, 1_200));
    expect(watch.get("hooked")!.status!.lastAppliedRevision).toBe(before);
    expect(
      await kubectlOk([
        "get",
        "gitsource",
        "hooked",
        "-n",
        namespace,
        "-o",
        "jsonpath={.status.lastAppliedRevision}",
      ]),
    ).toBe(before);
  });

  it("a ping delivery is answered and a path nobody registered is 404", async () => {
    const body = "{}";
    const ping = await post(hookPath, body, {
      "X-GitHub-Event": "ping",
      "X-Hub-Signature-256": sign(token, body),
    });
    expect(ping).toEqual({ status: 200, text: "pong\n" });
    const unknown = await post(`/hook/${"0".repeat(32)}`, body, { "X-Hub-Signature-256": sign(token, body) });
    expect(unknown.status).toBe(404);
  });

  it(`commit -> Ready at the new revision through the webhook: p50 over 10 commits`, async () => {
    const samples: number[] = [];
    for (let i = 0; i < 10; i++) {
      const sha = await repo.commit({ "nf.yaml": nf("hooked", 1_000 + i) });
      // The clock starts when the push is done: that is when a Git host sends its webhook.
      const pushed = performance.now();
      const body = pushPayload(repo, sha);
      const res = await post(hookPath, body, { "X-Hub-Signature-256": sign(token, body) });
      expect(res.status).toBe(200);
      await watch.waitFor("hooked", `Ready at commit ${i + 1}`, readyAt(`main@sha1:${sha}`), 5_000);
      samples.push(performance.now() - pushed);
    }
    const sorted = [...samples].sort((a, b) => a - b);
    const p50 = (sorted[4]! + sorted[5]!) / 2;
    console.log(
      `webhook push -> GitSource Ready at the new revision over ${samples.length} commits: ` +
        `p50 ${p50.toFixed(0)} ms, min ${sorted[0]!.toFixed(0)} ms, max ${sorted.at(-1)!.toFixed(0)} ms ` +
        `(samples: ${samples.map((s) => s.toFixed(0)).join(", ")})`,
    );
    expect(p50).toBeLessThan(1_000);
    expect(await limitOf("hooked")).toBe(1_009);
  });

  it("removing webhookSecretRef retires the hook: its path is gone from status and answers 404", async () => {
    await applySource("hooked", { url: repo.fileUrl, interval: "1h" });
    const gs = await watch.waitFor(
      "hooked",
      "without a webhook path",
      (s) => s.status?.webhookPath === undefined && readyOf(s)?.status === "True",
      5_000,
    );
    expect(gs.status?.webhookPath).toBeUndefined();
    const body = "{}";
    const res = await post(hookPath, body, { "X-Hub-Signature-256": sign(token, body) });
    expect(res.status).toBe(404);
  });

  it("a webhookSecretRef naming a missing Secret gives Ready False/SecretNotFound", async () => {
    await applySource("hooked", {
      url: repo.fileUrl,
      interval: "1h",
      webhookSecretRef: { name: "no-such-secret" },
    });
    const gs = await watch.waitFor(
      "hooked",
      "SecretNotFound",
      (s) => readyOf(s)?.reason === "SecretNotFound",
      5_000,
    );
    expect(readyOf(gs)?.status).toBe("False");
    expect(readyOf(gs)?.message).toContain("no-such-secret");
    const described = await kubectl(["describe", "gitsource", "hooked", "-n", namespace]);
    expect(described.stdout).toMatch(/SecretNotFound/);
  });
});
