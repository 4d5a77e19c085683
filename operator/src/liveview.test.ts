import { describe, expect, it } from "vitest";
import type { LiveMarker } from "../../common/liveview/index.ts";
import { MemoryStore } from "../../common/store.ts";
import { clusterLiveReaders } from "./liveview.ts";

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
