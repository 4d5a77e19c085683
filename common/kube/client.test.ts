import { createServer, type Server, type Socket } from "node:net";
import { KubeConfig } from "@kubernetes/client-node";
import { afterEach, describe, expect, it } from "vitest";
import { KubeApiError, KubeClient } from "./client.ts";
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

function clientFor(server: string, timeoutMs?: number): KubeClient {
  const kc = new KubeConfig();
  kc.loadFromOptions({
    // Plain http needs skipTLSVerify in client-node; what fails here is the connection itself.
    clusters: [{ name: "c", server, skipTLSVerify: true }],
    users: [{ name: "u", token: "t" }],
    contexts: [{ name: "c", cluster: "c", user: "u" }],
    currentContext: "c",
  });
  return new KubeClient(kc, { timeoutMs });
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
