import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { request } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  ArtifactDigestMismatchError,
  ArtifactFetchError,
  ArtifactLimitError,
  ArtifactStore,
  buildArtifact,
  fetchArtifact,
  type Artifact,
  type StoredArtifact,
} from "../../../common/artifact/index.ts";
import {
  PUBLISHED_PER_SOURCE,
  SourceServer,
  signWebhookPayload,
  webhookPath,
  type WebhookTrigger,
} from "./index.ts";

let tmp: string;
let server: SourceServer;
let base: string;
let artifact: Artifact;
let stored: StoredArtifact;
let store: ArtifactStore;
let tree: string;
let ready = false;

beforeAll(async () => {
  tmp = await mkdtemp(join(tmpdir(), "sluice-server-"));
  tree = join(tmp, "tree");
  await mkdir(join(tree, "nfs"), { recursive: true });
  await writeFile(join(tree, "chain.yaml"), "kind: ServiceChain\n");
  await writeFile(join(tree, "nfs/fw.c"), "int fw;\n");
  artifact = await buildArtifact(tree);
  store = new ArtifactStore(join(tmp, "store"));
  stored = await store.put("team-a", "repo", artifact);
  server = new SourceServer({ store, ready: () => ready, maxBodyBytes: 4096 });
  server.publishArtifact("team-a", "repo", artifact.digest);
  base = (await server.listen(0, "127.0.0.1")).url;
});
afterAll(async () => {
  await server.close();
  await rm(tmp, { recursive: true, force: true });
});

/** A request with the path sent exactly as given (fetch would normalize `..` away). */
function rawRequest(
  method: string,
  path: string,
  body?: Buffer,
  headers: Record<string, string> = {},
): Promise<{ status: number; body: string }> {
  const url = new URL(base);
  return new Promise((resolve, reject) => {
    const req = request({ host: url.hostname, port: url.port, method, path, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString() }));
    });
    req.on("error", reject);
    req.end(body);
  });
}

describe("health", () => {
  it("/healthz is always ok; /readyz follows the readiness check", async () => {
    expect((await fetch(`${base}/healthz`)).status).toBe(200);
    ready = false;
    expect((await fetch(`${base}/readyz`)).status).toBe(503);
    ready = true;
    expect((await fetch(`${base}/readyz`)).status).toBe(200);
  });

  it("extra routes such as /metrics can be added", async () => {
    server.route("GET", "/metrics", (_req, res) => {
      res.writeHead(200, { "Content-Type": "text/plain" });
      res.end("sluice_up 1\n");
    });
    expect(await (await fetch(`${base}/metrics`)).text()).toBe("sluice_up 1\n");
  });
});

describe("artifacts over HTTP", () => {
  it("serves a stored artifact byte for byte", async () => {
    const res = await fetch(`${base}${stored.urlPath}`);
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toBe("application/gzip");
    expect(res.headers.get("etag")).toBe(`"${artifact.digest}"`);
    expect(Buffer.from(await res.arrayBuffer())).toEqual(artifact.tarball);
    const head = await fetch(`${base}${stored.urlPath}`, { method: "HEAD" });
    expect(head.headers.get("content-length")).toBe(String(artifact.tarball.length));
  });

  it.each([
    `/artifacts/team-a/repo/${"0".repeat(64)}.tar.gz`,
    `/artifacts/team-a/other/HEX.tar.gz`,
    "/artifacts/../../etc/passwd",
    "/artifacts/team-a/../../../../etc/passwd.tar.gz",
    "/artifacts/team-a/%2e%2e/HEX.tar.gz",
    "/artifacts/../store/team-a/HEX.tar.gz",
    "/artifacts/team-a/repo/HEX.tar.gz/..",
    "/artifacts/team-a%2frepo/HEX.tar.gz",
    "/artifacts/team-a/repo%2FHEX.tar.gz",
    "/artifacts/team-a/repo/../repo/HEX.tar.gz",
    "/artifacts//team-a/repo/HEX.tar.gz",
    "/artifacts/team-a/repo/HEX.tar.gz%00",
    "/artifacts/TEAM-A/repo/HEX.tar.gz",
  ])("%s is 404", async (path) => {
    const hex = artifact.digest.slice(7);
    const res = await rawRequest("GET", path.replace("HEX", hex));
    expect(res.status).toBe(404);
    expect(res.body).not.toContain("root:");
  });

  it("an artifact in the store that no GitSource published is 404; it is served once published", async () => {
    await writeFile(join(tree, "rejected.yaml"), "kind: Rejected\n");
    const rejected = await buildArtifact(tree);
    const put = await store.put("team-a", "repo", rejected);
    expect((await rawRequest("GET", put.urlPath)).status).toBe(404);
    expect((await rawRequest("HEAD", put.urlPath)).status).toBe(404);
    // The same bytes under another source that never published them stay hidden too.
    const elsewhere = await store.put("team-b", "repo", artifact);
    expect((await rawRequest("GET", elsewhere.urlPath)).status).toBe(404);

    server.publishArtifact("team-a", "repo", rejected.digest);
    expect((await rawRequest("GET", put.urlPath)).status).toBe(200);
    // The one published before stays served for nodes still rolling out.
    expect((await rawRequest("GET", stored.urlPath)).status).toBe(200);
  });

  it(`keeps the last ${PUBLISHED_PER_SOURCE} published per source and withdraws them with the source`, async () => {
    const digests = Array.from(
      { length: PUBLISHED_PER_SOURCE + 1 },
      (_, i) => `sha256:${String(i).repeat(64)}`,
    );
    const other = new SourceServer({ store });
    for (const d of [artifact.digest, ...digests]) other.publishArtifact("team-a", "repo", d);
    const url = (await other.listen(0, "127.0.0.1")).url;
    try {
      // The oldest (the real artifact) fell out: 404 although the store still holds it.
      expect((await fetch(`${url}${stored.urlPath}`)).status).toBe(404);
      other.publishArtifact("team-a", "repo", artifact.digest);
      expect((await fetch(`${url}${stored.urlPath}`)).status).toBe(200);
      other.withdrawArtifacts("team-a", "repo");
      expect((await fetch(`${url}${stored.urlPath}`)).status).toBe(404);
    } finally {
      await other.close();
    }
  });

  it("fetchArtifact downloads, verifies and extracts", async () => {
    const dir = join(tmp, "fetched");
    const result = await fetchArtifact(`${base}${stored.urlPath}`, artifact.digest, dir);
    expect(result).toMatchObject({ files: 2, digest: artifact.digest });
    expect(await readFile(join(dir, "nfs/fw.c"), "utf8")).toBe("int fw;\n");
  });

  it("a digest mismatch is refused and nothing is extracted", async () => {
    const dir = join(tmp, "mismatch");
    const wrong = `sha256:${"ab".repeat(32)}`;
    const err = await fetchArtifact(`${base}${stored.urlPath}`, wrong, dir).catch((e) => e);
    expect(err).toBeInstanceOf(ArtifactDigestMismatchError);
    expect(err).toMatchObject({ expected: wrong, actual: artifact.digest });
    expect(existsSync(dir)).toBe(false);
  });

  it("a missing artifact is an ArtifactFetchError with the status", async () => {
    const missing = `${base}/artifacts/team-a/repo/${"0".repeat(64)}.tar.gz`;
    await expect(
      fetchArtifact(missing, `sha256:${"0".repeat(64)}`, join(tmp, "missing")),
    ).rejects.toMatchObject({
      constructor: ArtifactFetchError,
      status: 404,
    });
  });

  it("a download larger than the limits allow is cut off", async () => {
    const err = await fetchArtifact(`${base}${stored.urlPath}`, artifact.digest, join(tmp, "small"), {
      limits: { maxFileBytes: 10, maxTotalBytes: 10, maxFiles: 0 },
    }).catch((e) => e);
    expect(err).toBeInstanceOf(ArtifactLimitError);
  });
});

describe("webhooks", () => {
  const token = "webhook-token-1";
  const body = Buffer.from(JSON.stringify({ ref: "refs/heads/main" }));
  const post = (path: string, payload: Buffer, signature?: string, event = "push") =>
    rawRequest("POST", path, payload, {
      "Content-Type": "application/json",
      "X-GitHub-Event": event,
      "X-GitHub-Delivery": "d-1",
      ...(signature ? { "X-Hub-Signature-256": signature } : {}),
    });
  const tick = () => new Promise((r) => setTimeout(r, 50));

  const salt = "0123456789abcdef0123456789abcdef";

  it("the path is keyed with the salt: stable for one token and salt, different when either changes", () => {
    expect(webhookPath(token, salt)).toMatch(/^\/hook\/[0-9a-f]{32}$/);
    expect(webhookPath(token, salt)).toBe(webhookPath(token, salt));
    expect(webhookPath(token, salt)).not.toContain(token);
    expect(webhookPath("other", salt)).not.toBe(webhookPath(token, salt));
    // Two sources sharing a token get different paths.
    expect(webhookPath(token, "fedcba9876543210fedcba9876543210")).not.toBe(webhookPath(token, salt));
    // Nothing of the token's plain hash shows (the unsalted path of earlier versions).
    const unsalted = createHash("sha256").update(token).digest("hex");
    expect(webhookPath(token, salt)).not.toContain(unsalted.slice(0, 8));
  });

  it("a correctly signed delivery triggers the callback; a bad or missing signature does nothing", async () => {
    const triggers: WebhookTrigger[] = [];
    const hook = server.registerWebhook(token, salt, (t) => void triggers.push(t));
    expect((await post(hook.path, body, signWebhookPayload(token, body))).status).toBe(200);
    await tick();
    expect(triggers).toHaveLength(1);
    expect(triggers[0]).toMatchObject({ event: "push", delivery: "d-1" });
    expect(triggers[0]!.payload).toEqual(body);

    expect((await post(hook.path, body, signWebhookPayload("wrong-token", body))).status).toBe(401);
    expect((await post(hook.path, Buffer.from("{}"), signWebhookPayload(token, body))).status).toBe(401);
    expect((await post(hook.path, body)).status).toBe(401);
    expect((await post(hook.path, body, "sha256=zz")).status).toBe(401);
    expect((await post(hook.path, body, signWebhookPayload(token, body), "ping")).status).toBe(200);
    await tick();
    expect(triggers).toHaveLength(1);
    hook.unregister();
    expect((await post(hook.path, body, signWebhookPayload(token, body))).status).toBe(404);
  });

  it("answers before a slow handler finishes, and a failing handler does not break the server", async () => {
    let finished = false;
    const slow = server.registerWebhook("slow-token", salt, async () => {
      await new Promise((r) => setTimeout(r, 3_000));
      finished = true;
    });
    const failing = server.registerWebhook("slow-token", salt, () => {
      throw new Error("handler bug");
    });
    const started = Date.now();
    expect((await post(slow.path, body, signWebhookPayload("slow-token", body))).status).toBe(200);
    expect(Date.now() - started).toBeLessThan(1_000);
    expect(finished).toBe(false);
    expect((await fetch(`${base}/healthz`)).status).toBe(200);
    slow.unregister();
    failing.unregister();
  });

  it("rejects unknown hooks, other methods and oversized bodies", async () => {
    const hook = server.registerWebhook(token, salt, () => undefined);
    expect((await post(`/hook/${"0".repeat(32)}`, body, signWebhookPayload(token, body))).status).toBe(404);
    expect((await rawRequest("GET", hook.path)).status).toBe(405);
    const big = Buffer.alloc(8192, 0x20);
    expect((await post(hook.path, big, signWebhookPayload(token, big))).status).toBe(413);
    hook.unregister();
  });
});
