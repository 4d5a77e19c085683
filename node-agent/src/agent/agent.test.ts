import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { NODE_LABEL, Reason, type NodeChainStatus } from "../../../common/api/index.ts";
import { MemoryStore } from "../../../common/store.ts";
import { ChainStateError, NfContractError } from "../chain/errors.ts";
import { CompileSandboxUnavailableError, ToolchainError } from "../compile/errors.ts";
import { BpfSpecError } from "../libbpf/errors.ts";
import { describeFailure, NodeAgent, type DataPlane } from "./agent.ts";

/**
 * Retries of a NodeChain that fails for a transient reason: an artifact server that answers 503
 * is asked again later and later, the NodeChain waits (Pending, ArtifactFetchFailed) meanwhile,
 * and a new spec is tried at once rather than after the pending retry.
 */

const node = "node-1";
const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** An artifact server that is down: every request gets 503; the times of requests are kept. */
async function unavailableArtifactServer(): Promise<{ url: string; requests: number[] }> {
  const requests: number[] = [];
  const server: Server = createServer((_req, res) => {
    requests.push(performance.now());
    res.writeHead(503).end("operator restarting");
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  cleanups.push(() => new Promise<void>((resolve) => server.close(() => resolve())));
  const { port } = server.address() as AddressInfo;
  return { url: `http://127.0.0.1:${port}/artifacts/network.tar.gz`, requests };
}

/** An artifact server that serves bytes that are not the plan's artifact; requests are counted. */
async function wrongArtifactServer(): Promise<{ url: string; requests: number[] }> {
  const requests: number[] = [];
  const server: Server = createServer((_req, res) => {
    requests.push(performance.now());
    res.writeHead(200).end("some other tree");
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  cleanups.push(() => new Promise<void>((resolve) => server.close(() => resolve())));
  const { port } = server.address() as AddressInfo;
  return { url: `http://127.0.0.1:${port}/artifacts/network.tar.gz`, requests };
}

function nodeChain(url: string, revision: string) {
  return {
    apiVersion: "sluice.dev/v1alpha1" as const,
    kind: "NodeChain" as const,
    metadata: { name: `edge-${node}`, namespace: "sluice-system", labels: { [NODE_LABEL]: node } },
    spec: {
      nodeName: node,
      chain: "edge",
      revision,
      interfaces: ["eth0"],
      hook: "xdp" as const,
      functions: [
        {
          name: "tagger",
          networkFunction: "tagger",
          source: { artifact: { url, digest: `sha256:${"ab".repeat(32)}`, path: "nfs/tagger/tagger.c" } },
        },
      ],
    },
  };
}

/** The data plane is never reached: every attempt fails fetching the artifact. */
const unreachedDataPlane: DataPlane = {
  apply: () => Promise.reject(new Error("the data plane must not be reached")),
  adopt: () => Promise.resolve([]),
  remove: () => Promise.resolve(),
};

async function startAgent(store: MemoryStore, backoff: { baseMs: number; maxMs: number }) {
  const cacheDir = await mkdtemp(join(tmpdir(), "sluice-agent-"));
  cleanups.push(() => rm(cacheDir, { recursive: true, force: true }));
  const lines: Array<{ msg?: string; retryInMs?: number }> = [];
  const log = pino(
    { level: "info" },
    { write: (line: string) => void lines.push(JSON.parse(line) as (typeof lines)[number]) },
  );
  const statuses: NodeChainStatus[] = [];
  const agent = new NodeAgent({
    onStatus: (_name, status) => statuses.push(status),
    nodeName: node,
    store,
    dataPlane: unreachedDataPlane,
    cacheDir,
    log,
    retryBackoff: backoff,
  });
  await agent.start();
  cleanups.push(() => agent.stop());
  return { agent, lines, statuses };
}

async function until(what: string, check: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`not ${what} within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

describe("a NodeChain whose artifact cannot be fetched", () => {
  it("is retried with growing delay and waits as Pending/ArtifactFetchFailed meanwhile", async () => {
    const server = await unavailableArtifactServer();
    const store = new MemoryStore();
    await store.apply(nodeChain(server.url, "rev-1"));
    const { lines, statuses } = await startAgent(store, { baseMs: 200, maxMs: 60_000 });

    await until("asked four times", () => server.requests.length >= 4, 20_000);
    const gaps = server.requests.slice(1, 4).map((t, i) => t - server.requests[i]!);
    // Each retry comes no sooner than its backoff (200, 400, 800 ms): the agent's own status
    // writes start no extra attempts. Timers may fire a millisecond early.
    gaps.forEach((gap, i) =>
      expect(gap, `gap ${i} of ${gaps.join(", ")}`).toBeGreaterThanOrEqual(200 * 2 ** i - 5),
    );
    const delays = lines.filter((l) => l.retryInMs !== undefined).map((l) => l.retryInMs);
    expect(delays.slice(0, 3)).toEqual([200, 400, 800]);

    // Every attempt ends Pending (waiting for the artifact), never Failed: a rollout waits for the node.
    const outcomes = statuses.filter((s) => s.phase !== "Loading").slice(0, 3);
    expect(outcomes.map((s) => [s.phase, s.lastError?.reason])).toEqual(
      Array(3).fill(["Pending", Reason.ArtifactFetchFailed]),
    );
  });

  it("is tried at once when its spec changes, not after the pending retry", async () => {
    const server = await unavailableArtifactServer();
    const store = new MemoryStore();
    await store.apply(nodeChain(server.url, "rev-1"));
    await startAgent(store, { baseMs: 10 * 60_000, maxMs: 10 * 60_000 });
    await until("asked once", () => server.requests.length >= 1, 20_000);

    await store.apply(nodeChain(server.url, "rev-2"));
    // The first retry is ten minutes away; a new generation does not wait for it.
    await until("asked for the new revision", () => server.requests.length >= 2, 20_000);
  });
});

describe("errors the build and the data plane raise themselves", () => {
  it.each([
    [
      "an NF that breaks the chain contract",
      new NfContractError("fw", "no program fw_xdp"),
      "fw: no program fw_xdp",
    ],
    [
      "pinned chain state that cannot be read",
      new ChainStateError("chain meta: empty or damaged"),
      "chain meta: empty or damaged",
    ],
    [
      "a spec the object does not match",
      new BpfSpecError("object fw: no map rules"),
      "object fw: no map rules",
    ],
  ])("%s stalls with LoadFailed: retrying fails the same way", (_what, err, message) => {
    expect(describeFailure(err)).toEqual({ reason: Reason.LoadFailed, message, retry: "stall" });
  });

  it("a node without clang fails with CompileFailed and is retried: the node may be fixed", () => {
    const err = new ToolchainError('clang not found: "clang" is not in PATH');
    expect(describeFailure(err)).toMatchObject({ reason: Reason.CompileFailed, retry: "backoff" });
  });

  it("a node without Landlock for the compiler sandbox stalls with NotSupported", () => {
    const err = new CompileSandboxUnavailableError("cannot compile in the sandbox: no Landlock");
    expect(describeFailure(err)).toMatchObject({ reason: Reason.NotSupported, retry: "stall" });
  });
});

describe("a NodeChain that fails in a way a retry would repeat", () => {
  const conditionsOf = (status: NodeChainStatus | undefined) =>
    Object.fromEntries((status?.conditions ?? []).map((c) => [c.type, `${c.status}/${c.reason}`]));

  it("is Stalled with its reason, not retried, and tried again without Stalled when its spec changes", async () => {
    const wrong = await wrongArtifactServer();
    const store = new MemoryStore();
    await store.apply(nodeChain(wrong.url, "rev-1"));
    const { agent, statuses } = await startAgent(store, { baseMs: 50, maxMs: 50 });

    await until("failed", () => statuses.some((s) => s.phase === "Failed"), 20_000);
    await agent.idle();
    expect(statuses.at(-1)?.lastError?.reason).toBe(Reason.DigestMismatch);
    const stored = await store.get("NodeChain", "sluice-system", `edge-${node}`);
    expect(conditionsOf(stored?.status)).toEqual({
      Ready: `False/${Reason.DigestMismatch}`,
      Stalled: `True/${Reason.DigestMismatch}`,
    });
    // Many backoff periods later the artifact has still been asked for once.
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect(wrong.requests).toHaveLength(1);

    // A new plan is tried at once; while it waits for its artifact it is Reconciling, not Stalled.
    const down = await unavailableArtifactServer();
    await store.apply(nodeChain(down.url, "rev-2"));
    await until("asked for the new revision", () => down.requests.length >= 1, 20_000);
    await until("pending", () => statuses.some((s) => s.phase === "Pending"), 20_000);
    // The status of that attempt (retries every 50 ms write newer ones).
    expect(conditionsOf(statuses.find((s) => s.phase === "Pending"))).toEqual({
      Ready: `False/${Reason.ArtifactFetchFailed}`,
      Reconciling: `True/${Reason.ArtifactFetchFailed}`,
    });
  });
});
