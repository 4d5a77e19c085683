import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterEach, describe, expect, it, vi } from "vitest";
import { LiveHistory, LiveView, type LiveMarker, type NodeReadings } from "../../common/liveview/index.ts";
import { MemoryStore } from "../../common/store.ts";
import { clusterLiveReaders, type NodeRateSource } from "./liveview.ts";
import { agentAddressOf, NodeRates } from "./noderates.ts";

const NS = "net";

async function nodeChain(store: MemoryStore, node: string, revision: string) {
  await store.apply({
    apiVersion: "sluice.dev/v1alpha1",
    kind: "NodeChain",
    metadata: { name: `edge-${node}`, namespace: NS },
    spec: {
      nodeName: node,
      chain: "edge",
      revision,
      interfaces: ["eth0"],
      hook: "xdp",
      functions: [
        { name: "firewall", networkFunction: "firewall", source: { builtin: "firewall" } },
        { name: "flowmon", networkFunction: "flowmon", source: { builtin: "flowmon" } },
      ],
    },
  });
}

describe("the operator's cluster view", () => {
  it("shows every node's chain, each rollout node by node, and marks switches, failures and halts", async () => {
    const store = new MemoryStore();
    const markers: LiveMarker[] = [];
    const { read, rollouts } = clusterLiveReaders({ store, mark: (m) => markers.push(m) });
    await store.apply({
      apiVersion: "sluice.dev/v1alpha1",
      kind: "ServiceChain",
      metadata: { name: "edge", namespace: NS },
      spec: {
        functions: [{ name: "firewall" }, { name: "flowmon" }],
        attachment: { interfaces: ["eth0"], hook: "xdp" },
      },
    });
    const ready = (reason: string, message: string) => [
      {
        type: "Ready",
        status: reason === "RolloutComplete" ? ("True" as const) : ("False" as const),
        reason,
        message,
        lastTransitionTime: new Date().toISOString(),
      },
    ];
    await store.patchStatus("ServiceChain", NS, "edge", {
      revision: "r1",
      conditions: ready("RolloutComplete", "3/3"),
    });
    for (const node of ["n1", "n2", "n3"]) {
      await nodeChain(store, node, "r1");
      await store.patchStatus("NodeChain", NS, `edge-${node}`, { phase: "Ready", revision: "r1" });
    }
    expect((await read()).map((r) => [r.node, r.chain, r.revision, r.phase])).toEqual([
      ["n1", "net/edge", "r1", "Ready"],
      ["n2", "net/edge", "r1", "Ready"],
      ["n3", "net/edge", "r1", "Ready"],
    ]);
    await rollouts();
    // Each node's first revision is a switch too, marked as its status changed.
    expect(markers.map((m) => [m.kind, m.node, m.message])).toEqual([
      ["switch", "n1", "from nothing"],
      ["switch", "n2", "from nothing"],
      ["switch", "n3", "from nothing"],
    ]);
    markers.length = 0;

    // r2 rolls out: n1 takes it, n2 fails it (the verifier's message), the rollout halts.
    await store.patchStatus("ServiceChain", NS, "edge", {
      revision: "r2",
      conditions: ready("RollingOut", "1/3"),
    });
    expect((await rollouts())[0]).toMatchObject({ chain: "net/edge", revision: "r2", reason: "RollingOut" });
    await nodeChain(store, "n1", "r2");
    await store.patchStatus("NodeChain", NS, "edge-n1", { phase: "Ready", revision: "r2" });
    await nodeChain(store, "n2", "r2");
    await store.patchStatus("NodeChain", NS, "edge-n2", {
      phase: "Failed",
      revision: "r1",
      lastError: { reason: "VerifierRejected", message: "R2 invalid mem access 'scalar'\nmore log" },
    });
    await store.patchStatus("ServiceChain", NS, "edge", {
      conditions: ready("NodesFailed", "node n2 failed revision r2: VerifierRejected"),
    });
    const readings = await read();
    const view = (await rollouts())[0]!;
    expect(view.nodes).toEqual([
      { node: "n1", revision: "r2", phase: "Ready" },
      {
        node: "n2",
        revision: "r1",
        phase: "Failed",
        message: "VerifierRejected: R2 invalid mem access 'scalar'",
      },
      { node: "n3", revision: "r1", phase: "Ready" },
    ]);
    expect(readings.find((r) => r.node === "n2")).toMatchObject({
      noCounters: true,
      lastError: { reason: "VerifierRejected" },
    });
    expect(markers.map((m) => [m.kind, m.node ?? "", m.revision])).toEqual([
      ["rollout-started", "", "r2"],
      ["switch", "n1", "r2"],
      ["switch-failed", "n2", "r2"],
      ["rollout-halted", "", "r2"],
    ]);
  });
});

describe("the operator's cluster view, with each node's agent asked for its rates", () => {
  let agentServer: Server | undefined;
  afterEach(async () => {
    agentServer?.closeAllConnections();
    await new Promise((r) => agentServer?.close(r) ?? r(undefined));
  });

  it("draws a node's rates from its agent's counters and names a node whose agent does not answer", async () => {
    // n1's agent: a live view whose last reading counts 1000 packets more each time.
    let packets = 0n;
    const agentView = new LiveView({
      title: "n1",
      intervalMs: 50,
      read: async () => [
        {
          node: "n1",
          chain: "net_edge",
          ref: "net/edge",
          hook: "xdp",
          revision: "r1",
          phase: "Ready",
          lastSwitch: "2026-12-04T10:00:00.000Z",
          functions: [
            { name: "firewall", packets: (packets += 1000n), drops: 0n, passes: packets, errors: 0n },
            { name: "flowmon", packets, drops: 10n, passes: packets - 10n, errors: 0n },
          ],
          rootMisses: packets / 100n,
          runTimeAbsent: "kernel.bpf_stats_enabled is 0",
          maps: [{ nf: "flowmon", map: "flowmon_flows", entries: 60_000, maxEntries: 65_536 }],
        },
      ],
    });
    const routes = new Map(agentView.routes());
    agentServer = createServer((req, res) => routes.get((req.url ?? "/").split("?")[0]!)!(req, res));
    await new Promise<void>((r) => agentServer!.listen(0, "127.0.0.1", r));
    const port = (agentServer.address() as AddressInfo).port;
    agentView.start();

    const store = new MemoryStore();
    for (const [node, address] of [
      ["n1", "127.0.0.1"],
      // Nothing listens there: n2's agent is down.
      ["n2", "127.0.0.2"],
    ] as const) {
      await store.apply({ apiVersion: "v1", kind: "Node", metadata: { name: node } });
      await store.patchStatus("Node", undefined, node, { addresses: [{ type: "InternalIP", address }] });
      await nodeChain(store, node, "r1");
      await store.patchStatus("NodeChain", NS, `edge-${node}`, { phase: "Ready", revision: "r1" });
    }
    const rates = new NodeRates({ store, port, watched: () => true, timeoutMs: 1_000 });
    const { read, stop } = clusterLiveReaders({ store, mark: () => undefined, rates });
    try {
      await new Promise((r) => setTimeout(r, 120));
      await rates.round(true);
      const first = await read();
      await new Promise((r) => setTimeout(r, 120));
      await rates.round(true);
      const second = await read();
      const n1 = second.find((r) => r.node === "n1")!;
      expect(n1.noCounters).toBeUndefined();
      expect(n1.functions.map((f) => f.name)).toEqual(["firewall", "flowmon"]);
      expect(n1.functions[0]!.packets).toBeGreaterThan(
        first.find((r) => r.node === "n1")!.functions[0]!.packets,
      );
      expect(n1.runTimeAbsent).toBe("kernel.bpf_stats_enabled is 0");
      expect(n1.lastSwitch).toBe("2026-12-04T10:00:00.000Z");
      expect(n1.sampledAtMs).toBeGreaterThan(0);
      const n2 = second.find((r) => r.node === "n2")!;
      expect(n2.noCounters).toBe(true);
      expect(n2.countersAbsent).toMatch(
        /did not answer: http:\/\/127\.0\.0\.2:\d+\/live\/readings\?watched=1: ECONNREFUSED/,
      );
      // Two failures in a row are not yet silence; ten seconds without an answer are.
      expect(rates.silentFor("n2")).toBeUndefined();
      expect(rates.silentFor("n2", Date.now() + 11_000)).toBeGreaterThanOrEqual(11);
      expect(rates.silentFor("n1", Date.now() + 11_000)).toBeUndefined();

      const history = new LiveHistory("cluster");
      history.record(Date.now(), first);
      history.record(Date.now() + 1000, second);
      const point = history.snapshot().points.at(-1)!;
      expect(point.functions["n1/net/edge/firewall"]![0]).toBeGreaterThan(0);
      expect(point.functions["n2/net/edge/firewall"]).toBeUndefined();
      // The node's own problems are the cluster page's too: read off the agent's counters and maps.
      expect(
        history
          .snapshot()
          .problems.map((p) => `${p.node} ${p.kind}`)
          .sort(),
      ).toEqual(["n1 map-near-full", "n1 tail-call-misses"]);
    } finally {
      stop();
      agentView.stop();
    }
  });

  it("finds the agent at the Node's InternalIP, else its ExternalIP, bracketing IPv6", () => {
    const node = (addresses: Array<{ type: string; address: string }>) => ({ status: { addresses } });
    expect(
      agentAddressOf(
        node([
          { type: "Hostname", address: "n1" },
          { type: "ExternalIP", address: "203.0.113.9" },
          { type: "InternalIP", address: "10.0.0.5" },
        ]),
      ),
    ).toBe("10.0.0.5");
    expect(agentAddressOf(node([{ type: "ExternalIP", address: "203.0.113.9" }]))).toBe("203.0.113.9");
    expect(agentAddressOf(node([{ type: "InternalIP", address: "fd00::5" }]))).toBe("[fd00::5]");
    expect(agentAddressOf({ metadata: { name: "n1" } })).toBeUndefined();
  });
});

describe("the commit behind each node's revision on the operator's page", () => {
  it("is the GitSource commit a plan was first seen with, kept for nodes still on an older plan", async () => {
    const store = new MemoryStore();
    const asked: string[] = [];
    const { read, stop } = clusterLiveReaders({
      store,
      mark: () => undefined,
      commitOf: async (source, revision) => {
        asked.push(`${source.namespace}/${source.name} ${revision}`);
        return { sha: revision.slice(-40), message: `subject of ${revision.slice(-40, -34)}` };
      },
    });
    const sha = (c: string) => `main@sha1:${c.repeat(40)}`;
    await store.apply({
      apiVersion: "sluice.dev/v1alpha1",
      kind: "GitSource",
      metadata: { name: "repo", namespace: NS },
      spec: { url: "https://git.example/net.git", interval: "1h" },
    });
    await store.apply({
      apiVersion: "sluice.dev/v1alpha1",
      kind: "ServiceChain",
      metadata: { name: "edge", namespace: NS },
      spec: {
        functions: [{ name: "firewall" }, { name: "flowmon" }],
        attachment: { interfaces: ["eth0"], hook: "xdp" },
      },
    });
    const source = async (artifact: string, plan: string) => {
      await store.patchStatus("GitSource", NS, "repo", {
        artifact: {
          revision: artifact,
          digest: `sha256:${"0".repeat(64)}`,
          url: "http://x/a.tar.gz",
          lastUpdateTime: new Date().toISOString(),
        },
        inventory: [{ kind: "ServiceChain", name: "edge" }],
      });
      await store.patchStatus("ServiceChain", NS, "edge", { revision: plan });
    };
    for (const node of ["n1", "n2"]) {
      await nodeChain(store, node, "r1");
      await store.patchStatus("NodeChain", NS, `edge-${node}`, { phase: "Ready", revision: "r1" });
    }
    await source(sha("a"), "r1");
    const commitsOf = async () =>
      (await read()).map((r) => `${r.node} ${r.revision} ${r.commit?.message ?? "-"}`);
    expect(await commitsOf()).toEqual(["n1 r1 subject of aaaaaa", "n2 r1 subject of aaaaaa"]);
    // A new commit makes plan r2; n1 switched, n2 not yet.
    await source(sha("b"), "r2");
    await store.patchStatus("NodeChain", NS, "edge-n1", { phase: "Ready", revision: "r2" });
    expect(await commitsOf()).toEqual(["n1 r2 subject of bbbbbb", "n2 r1 subject of aaaaaa"]);
    expect(asked).toEqual([`${NS}/repo ${sha("a")}`, `${NS}/repo ${sha("b")}`]);
    stop();
  });
});

describe("problems on the operator's page, from the nodes' counters", () => {
  afterEach(() => vi.useRealTimers());

  it("a function whose drops jumped after its node switched, and a node whose counters stopped", async () => {
    vi.useFakeTimers({ toFake: ["Date"], now: 1_800_000_000_000 });
    const store = new MemoryStore();
    await nodeChain(store, "n1", "r1");
    await store.patchStatus("NodeChain", NS, "edge-n1", { phase: "Ready", revision: "r1" });
    const history = new LiveHistory("cluster");
    // n1's agent as the operator last heard it: counters and when they were read.
    let sample: { atMs: number; readings: NodeReadings["chains"] } | undefined;
    const rates: NodeRateSource = {
      report: () => (sample ? { sample, lastOkMs: sample.atMs, firstAskedMs: 0, failures: 0 } : undefined),
      silentFor: () => undefined,
    };
    const { read, stop } = clusterLiveReaders({ store, mark: (m) => history.mark(m), rates });
    let packets = 0n;
    let drops = 0n;
    const second = async (perSecond: bigint, dropsPerSecond: bigint) => {
      vi.setSystemTime(Date.now() + 1_000);
      packets += perSecond;
      drops += dropsPerSecond;
      sample = {
        atMs: Date.now(),
        readings: [
          {
            node: "n1",
            chain: "net_edge",
            ref: `${NS}/edge`,
            hook: "xdp",
            revision: "r1",
            phase: "Ready",
            functions: [
              { name: "firewall", packets, drops: 0n, passes: packets - drops, errors: 0n },
              { name: "flowmon", packets: packets - drops, drops, passes: packets - drops, errors: 0n },
            ],
            rootMisses: 0n,
          },
        ],
      };
      history.record(Date.now(), await read());
    };
    for (let i = 0; i < 30; i++) await second(100n, 0n);
    await store.patchStatus("NodeChain", NS, "edge-n1", { phase: "Ready", revision: "r2" });
    for (let i = 0; i < 6; i++) await second(100n, 80n);
    const problems = () => history.snapshot().problems.map((p) => `${p.node} ${p.kind} ${p.nf ?? ""}`.trim());
    expect(problems()).toEqual(["n1 drop-rate-jump flowmon"]);
    for (let i = 0; i < 12; i++) await second(0n, 0n);
    expect(problems()).toContain("n1 counters-stopped");
    stop();
  });
});
