import { describe, expect, it } from "vitest";
import { MemoryStore, type StoreEvent } from "./store.ts";

const chain = (name: string, spec: unknown) => ({
  apiVersion: "sluice.dev/v1alpha1",
  kind: "ServiceChain",
  metadata: { name, namespace: "default" },
  spec,
});

describe("MemoryStore", () => {
  it("grows generation only when the spec changes, and keeps status across applies", async () => {
    const store = new MemoryStore();
    const a = await store.apply(chain("web", { functions: ["fw"] }));
    expect(a.metadata.generation).toBe(1);
    await store.patchStatus("ServiceChain", "default", "web", { revision: "r1" });
    const b = await store.apply(chain("web", { functions: ["fw"] }));
    expect(b.metadata.generation).toBe(1);
    expect(b.status).toEqual({ revision: "r1" });
    const c = await store.apply(chain("web", { functions: ["fw", "rl"] }));
    expect(c.metadata.generation).toBe(2);
  });

  it("deletes owned objects with their owner and tells watchers in order", async () => {
    const store = new MemoryStore();
    const seen: string[] = [];
    store.watch("NodeChain", (e: StoreEvent) => seen.push(`${e.type} ${e.object.metadata.name}`));
    const owner = await store.apply(chain("web", {}));
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
      spec: {},
    });
    expect(await store.list("NodeChain", "default", { "sluice.dev/node": "node1" })).toHaveLength(1);
    expect(await store.list("NodeChain", "default", { "sluice.dev/node": "node2" })).toHaveLength(0);
    await store.delete("ServiceChain", "default", "web");
    expect(await store.list("NodeChain")).toHaveLength(0);
    expect(seen).toEqual(["changed web-node1", "deleted web-node1"]);
  });
});
