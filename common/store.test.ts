import { describe, expect, it } from "vitest";
import { MemoryStore, statusPatch, type StoreEvent } from "./store.ts";

const chain = (name: string, functions: string[]) => ({
  apiVersion: "sluice.dev/v1alpha1" as const,
  kind: "ServiceChain" as const,
  metadata: { name, namespace: "default" },
  spec: {
    functions: functions.map((f) => ({ name: f })),
    attachment: { interfaces: ["eth0"], hook: "xdp" as const },
  },
});

describe("MemoryStore", () => {
  it("grows generation only when the spec changes, and keeps status across applies", async () => {
    const store = new MemoryStore();
    const a = await store.apply(chain("web", ["fw"]));
    expect(a.metadata.generation).toBe(1);
    await store.patchStatus("ServiceChain", "default", "web", { revision: "r1" });
    const b = await store.apply(chain("web", ["fw"]));
    expect(b.metadata.generation).toBe(1);
    expect(b.status).toEqual({ observedGeneration: -1, revision: "r1" });
    const c = await store.apply(chain("web", ["fw", "rl"]));
    expect(c.metadata.generation).toBe(2);
  });

  it("refuses an object or a status its schema refuses, naming the field", async () => {
    const store = new MemoryStore();
    await expect(
      store.apply({ ...chain("web", ["fw"]), spec: { ...chain("web", ["fw"]).spec, functions: [] } }),
    ).rejects.toMatchObject({ name: "InvalidObjectError", issues: [{ path: "spec.functions" }] });
    await store.apply(chain("web", ["fw"]));
    await expect(
      store.patchStatus("ServiceChain", "default", "web", { observedGeneration: -7 }),
    ).rejects.toMatchObject({ reason: "InvalidSpec", issues: [{ path: "status.observedGeneration" }] });
  });

  it("removes a status field patched with null and keeps one left out", async () => {
    const store = new MemoryStore();
    await store.apply(chain("web", ["fw"]));
    await store.patchStatus("ServiceChain", "default", "web", { revision: "r1", failedRevision: "r0" });
    const after = await store.patchStatus("ServiceChain", "default", "web", { failedRevision: null });
    expect(after.status).toEqual({ observedGeneration: -1, revision: "r1" });
  });

  it("deletes owned objects with their owner and tells watchers in order", async () => {
    const store = new MemoryStore();
    const seen: string[] = [];
    store.watch("NodeChain", (e: StoreEvent) => seen.push(`${e.type} ${e.object.metadata.name}`));
    const owner = await store.apply(chain("web", ["fw"]));
    await store.apply({
      apiVersion: "sluice.dev/v1alpha1",
      kind: "NodeChain",
      metadata: {
        name: "web-node1",
        namespace: "default",
        labels: { "sluice.dev/node": "node1" },
        ownerReferences: [
          { apiVersion: "sluice.dev/v1alpha1", kind: "ServiceChain", name: "web", uid: owner.metadata.uid! },
        ],
      },
      spec: {
        nodeName: "node1",
        chain: "web",
        revision: "r1",
        interfaces: ["eth0"],
        hook: "xdp",
        functions: [{ name: "fw", networkFunction: "fw", source: { builtin: "firewall" } }],
      },
    });
    expect(await store.list("NodeChain", "default", { "sluice.dev/node": "node1" })).toHaveLength(1);
    expect(await store.list("NodeChain", "default", { "sluice.dev/node": "node2" })).toHaveLength(0);
    await store.delete("ServiceChain", "default", "web");
    expect(await store.list("NodeChain")).toHaveLength(0);
    expect(seen).toEqual(["changed web-node1", "deleted web-node1"]);
  });

  it("statusPatch removes what the new status leaves out", () => {
    expect(
      statusPatch<"ServiceChain">(
        { observedGeneration: 1, revision: "r1", failedRevision: "r0" },
        { observedGeneration: 2, revision: "r2", failedRevision: undefined },
      ),
    ).toEqual({ observedGeneration: 2, revision: "r2", failedRevision: null });
  });
});
