import { createServer as createHttpServer, type IncomingMessage } from "node:http";
import { createServer, type Server, type Socket } from "node:net";
import { KubeConfig } from "@kubernetes/client-node";
import { afterEach, describe, expect, it } from "vitest";
import { KubeApiError, KubeClient } from "./client.ts";
import { retryDelayMs, parseRetryAfter, DEFAULT_RETRY, type RetryPolicy } from "./retry.ts";
import { StoreResources } from "./store.ts";

/**
 * How the client fails when the API server cannot answer: what the cluster tests cannot make a
 * real API server do. (Answers of a real one, 404 and 403 included, are in test/cluster.)
 */

const servers: Server[] = [];
const sockets: Socket[] = [];
afterEach(async () => {
  for (const s of sockets.splice(0)) s.destroy();
  await Promise.all(servers.splice(0).map((s) => new Promise((resolve) => s.close(resolve))));
});

function clientFor(server: string, timeoutMs?: number, retry?: Partial<RetryPolicy>): KubeClient {
  const kc = new KubeConfig();
  kc.loadFromOptions({
    // Plain http needs skipTLSVerify in client-node; what fails here is the connection itself.
    clusters: [{ name: "c", server, skipTLSVerify: true }],
    users: [{ name: "u", token: "t" }],
    contexts: [{ name: "c", cluster: "c", user: "u" }],
    currentContext: "c",
  });
  return new KubeClient(kc, { timeoutMs, retry });
}

/** A TCP port that accepts connections and never answers (a hung API server). */
async function silentServer(): Promise<number> {
  const server = createServer((socket) => void sockets.push(socket));
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return (server.address() as { port: number }).port;
}

/** A port nothing listens on. */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

describe("KubeClient when the API server does not answer", () => {
  it("fails a request to a closed port with reason ConnectionError, naming the request", async () => {
    const client = clientFor(`http://127.0.0.1:${await closedPort()}`);
    const err = await client.get(StoreResources.NodeChain!, "ns", "edge").catch((e: unknown) => e);
    expect(err).toBeInstanceOf(KubeApiError);
    expect(err).toMatchObject({ status: 0, reason: "ConnectionError" });
    expect((err as Error).message).toMatch(/nodechains\/edge: .*ECONNREFUSED/);
  });

  it("gives up on a server that never answers with reason Timeout", async () => {
    const client = clientFor(`http://127.0.0.1:${await silentServer()}`, 300);
    const err = await client
      .patchStatus(StoreResources.NodeChain!, "ns", "edge", { phase: "Ready" })
      .catch((e: unknown) => e);
    expect(err).toMatchObject({ status: 0, reason: "Timeout" });
  });

  it("times out a raw request the same way", async () => {
    const client = clientFor(`http://127.0.0.1:${await silentServer()}`, 300);
    const err = await client.request("GET", "/version").catch((e: unknown) => e);
    expect(err).toMatchObject({ status: 0, reason: "Timeout" });
  });
});

const discovery = {
  kind: "APIResourceList",
  groupVersion: "sluice.dev/v1alpha1",
  resources: [{ name: "nodechains", namespaced: true, kind: "NodeChain", verbs: ["get", "create"] }],
};

/**
 * A stand-in API server (a real HTTP server on loopback, not a Kubernetes one): it answers each
 * request with the next of `answers` (the last one repeats) and records what it was asked;
 * the group's discovery document is answered apart.
 */
async function scriptedServer(
  answers: { status: number; headers?: Record<string, string>; body?: unknown }[],
): Promise<{ url: string; requests: { method: string; url: string; at: number; port: number }[] }> {
  const requests: { method: string; url: string; at: number; port: number }[] = [];
  const server = createHttpServer((req: IncomingMessage, res) => {
    req.resume();
    if (req.url === "/apis/sluice.dev/v1alpha1") {
      // client-node reads the group's resource list once to learn that NodeChains are namespaced.
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify(discovery));
      return;
    }
    const answer = answers[Math.min(requests.length, answers.length - 1)]!;
    requests.push({
      method: req.method ?? "",
      url: req.url ?? "",
      at: Date.now(),
      port: req.socket.remotePort ?? 0,
    });
    res.writeHead(answer.status, { "content-type": "application/json", ...answer.headers });
    res.end(JSON.stringify(answer.body ?? {}));
  });
  servers.push(server as unknown as Server);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { url: `http://127.0.0.1:${(server.address() as { port: number }).port}`, requests };
}

const tooMany = (retryAfter?: string) => ({
  status: 429,
  headers: retryAfter === undefined ? {} : ({ "retry-after": retryAfter } as Record<string, string>),
  body: { kind: "Status", reason: "TooManyRequests", message: "too many requests, please try again later" },
});
const nodeChain = {
  status: 200,
  body: { apiVersion: "sluice.dev/v1alpha1", kind: "NodeChain", metadata: { name: "edge", namespace: "ns" } },
};

describe("KubeClient when the API server is overloaded", () => {
  it("keeps its connection to the API server alive between requests", async () => {
    const api = await scriptedServer([nodeChain]);
    const client = clientFor(api.url);
    for (let i = 0; i < 5; i++) await client.get(StoreResources.NodeChain!, "ns", "edge");
    expect(api.requests).toHaveLength(5);
    expect(new Set(api.requests.map((r) => r.port)).size).toBe(1);
  });

  it("waits out Retry-After after a 429 and then gets the answer", async () => {
    const api = await scriptedServer([tooMany("1"), nodeChain]);
    const client = clientFor(api.url);
    const retries: { status: number; delayMs: number }[] = [];
    client.onRetry = (_what, err, delayMs) => retries.push({ status: err.status, delayMs });
    const obj = await client.get(StoreResources.NodeChain!, "ns", "edge");
    expect(obj?.metadata?.name).toBe("edge");
    expect(api.requests).toHaveLength(2);
    expect(retries).toEqual([{ status: 429, delayMs: expect.any(Number) }]);
    expect(retries[0]!.delayMs).toBeGreaterThanOrEqual(1000);
    expect(api.requests[1]!.at - api.requests[0]!.at).toBeGreaterThanOrEqual(950);
  });

  it("retries 503 on a status patch and gives up after the policy's retries", async () => {
    const unavailable = {
      status: 503,
      body: { kind: "Status", reason: "ServiceUnavailable", message: "etcd" },
    };
    const api = await scriptedServer([unavailable]);
    const client = clientFor(api.url, undefined, { retries: 3, baseMs: 40, maxMs: 1000 });
    const err = await client
      .patchStatus(StoreResources.NodeChain!, "ns", "edge", { phase: "Ready" })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(KubeApiError);
    expect(err).toMatchObject({ status: 503, reason: "ServiceUnavailable" });
    expect(api.requests.map((r) => r.method)).toEqual(["PATCH", "PATCH", "PATCH", "PATCH"]);
  });

  it("does not repeat a create after a 500 without Retry-After, but does after a 429", async () => {
    const failing = await scriptedServer([{ status: 500, body: { reason: "InternalError" } }, nodeChain]);
    const err = await clientFor(failing.url)
      .create(StoreResources.NodeChain!, { metadata: { name: "edge", namespace: "ns" } })
      .catch((e: unknown) => e);
    expect(err).toMatchObject({ status: 500 });
    expect(failing.requests).toHaveLength(1);

    const limited = await scriptedServer([tooMany("0"), nodeChain]);
    await clientFor(limited.url).create(StoreResources.NodeChain!, {
      metadata: { name: "edge", namespace: "ns" },
    });
    expect(limited.requests.map((r) => r.method)).toEqual(["POST", "POST"]);
  });

  it("answers 404 and 409 at once, without retrying", async () => {
    const api = await scriptedServer([{ status: 409, body: { reason: "Conflict", message: "changed" } }]);
    const err = await clientFor(api.url)
      .replace(StoreResources.NodeChain!, {
        metadata: { name: "edge", namespace: "ns", resourceVersion: "1" },
      })
      .catch((e: unknown) => e);
    expect(err).toMatchObject({ status: 409, reason: "Conflict" });
    expect(api.requests).toHaveLength(1);
  });
});

describe("retryDelayMs", () => {
  const policy = { ...DEFAULT_RETRY, baseMs: 100, maxMs: 1000 };
  const top = () => 0.999999;
  it.each([
    { name: "429 without Retry-After: up to baseMs on the first retry", status: 429, attempt: 1, max: 100 },
    { name: "the cap doubles per retry", status: 503, attempt: 3, max: 400 },
    { name: "and stops at maxMs", status: 500, attempt: 5, max: 1000 },
  ])("$name", ({ status, attempt, max }) => {
    const d = retryDelayMs({ status, idempotent: true }, attempt, policy, top)!;
    expect(d).toBeLessThanOrEqual(max);
    expect(d).toBeGreaterThan(max * 0.9);
    expect(retryDelayMs({ status, idempotent: true }, attempt, policy, () => 0)).toBe(1);
  });

  it.each([400, 401, 403, 404, 409, 410, 422, 0])("does not retry status %i", (status) => {
    expect(retryDelayMs({ status, idempotent: true }, 1, policy)).toBeUndefined();
  });

  it("never waits less than Retry-After, and gives up on one longer than maxRetryAfterMs", () => {
    for (const r of [0, 0.5, 0.999]) {
      const d = retryDelayMs({ status: 429, retryAfterMs: 3000, idempotent: false }, 2, policy, () => r)!;
      expect(d).toBeGreaterThanOrEqual(3000);
      expect(d).toBeLessThanOrEqual(3200);
    }
    expect(retryDelayMs({ status: 429, retryAfterMs: 120_000, idempotent: true }, 1, policy)).toBeUndefined();
  });

  it("tries an idempotent call once more after a failed connection, a create not at all", () => {
    const failed = { status: 0, connectionFailed: true };
    expect(retryDelayMs({ ...failed, idempotent: true }, 1, policy)).toBeLessThanOrEqual(policy.baseMs);
    expect(retryDelayMs({ ...failed, idempotent: true }, 2, policy)).toBeUndefined();
    expect(retryDelayMs({ ...failed, idempotent: false }, 1, policy)).toBeUndefined();
  });

  it("stops after the policy's retries", () => {
    expect(retryDelayMs({ status: 429, idempotent: true }, policy.retries + 1, policy)).toBeUndefined();
  });

  it("reads Retry-After as seconds or as an HTTP date", () => {
    const now = Date.parse("2026-01-01T00:00:00Z");
    expect(parseRetryAfter("2", now)).toBe(2000);
    expect(parseRetryAfter("Thu, 01 Jan 2026 00:00:05 GMT", now)).toBe(5000);
    expect(parseRetryAfter("soon", now)).toBeUndefined();
    expect(parseRetryAfter(undefined, now)).toBeUndefined();
  });
});
