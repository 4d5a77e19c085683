import { afterEach, describe, expect, it } from "vitest";
import { API_VERSION, CHAIN_LABEL } from "../../../common/api/index.ts";
import { Controller, splitKey } from "../../../common/kube/controller.ts";
import { rootLogger } from "../../../common/log.ts";
import { MemoryStore } from "../../../common/store.ts";
import { MAX_WRITES_PER_PASS, reconcileServiceChain, serviceChainKeysFor } from "./reconciler.ts";

/**
 * One worker, two chains: a chain rolling out to a thousand nodes at once must not hold the
 * worker until it is done. Its reconciles write at most MAX_WRITES_PER_PASS NodeChains each and
 * queue the chain again behind the keys that wait, so a small chain's change goes through
 * within one pass of the big one.
 */

const NS = "default";
const BIG_NODES = 1000;
let controller: Controller | undefined;

afterEach(async () => {
  await controller?.stop();
  controller = undefined;
});

async function addChain(store: MemoryStore, name: string, pool: string): Promise<void> {
  await store.apply({
    apiVersion: API_VERSION,
    kind: "ServiceChain",
    metadata: { name, namespace: NS },
    spec: {
      functions: [{ name: "fw" }],
      attachment: { interfaces: ["eth0"], hook: "xdp" },
      nodeSelector: { matchLabels: { pool } },
      rollout: { maxUnavailable: "100%" },
    },
  });
}

describe("work queue fairness between chains", () => {
  it("a thousand-node rollout does not starve another chain's reconcile", async () => {
    const store = new MemoryStore();
    for (let i = 0; i < BIG_NODES; i++)
      await store.apply({
        apiVersion: "v1",
        kind: "Node",
        metadata: { name: `big-${String(i).padStart(4, "0")}`, labels: { pool: "big" } },
      });
    await store.apply({
      apiVersion: "v1",
      kind: "Node",
      metadata: { name: "small-0", labels: { pool: "small" } },
    });
    await store.apply({
      apiVersion: API_VERSION,
      kind: "NetworkFunction",
      metadata: { name: "fw", namespace: NS },
      spec: { hooks: ["xdp"], source: { builtin: "firewall" } },
    });
    await addChain(store, "big", "big");
    await addChain(store, "small", "small");

    const bigNodeChains = async () => (await store.list("NodeChain", NS, { [CHAIN_LABEL]: "big" })).length;
    /** How many of the big chain's NodeChains existed when each reconcile of `small` ended. */
    const smallSawBig: number[] = [];
    const reconciles: string[] = [];
    let smallDone: () => void;
    const smallReconciled = new Promise<void>((resolve) => (smallDone = resolve));
    let bigDone: () => void;
    const bigRolledOut = new Promise<void>((resolve) => (bigDone = resolve));

    controller = new Controller(
      "servicechain",
      async (key, log) => {
        const { namespace, name } = splitKey(key);
        const result = await reconcileServiceChain(
          { store, event: () => undefined, now: () => new Date() },
          namespace ?? NS,
          name,
          log,
        );
        reconciles.push(name);
        if (name === "small") {
          smallSawBig.push(await bigNodeChains());
          smallDone();
        }
        if ((await bigNodeChains()) === BIG_NODES) bigDone();
        return result;
      },
      rootLogger,
      1, // one worker: fairness comes from the queue, not from a second worker
    );
    // As in the control plane: every NodeChain written queues its chain again.
    for (const kind of ["ServiceChain", "NodeChain"] as const)
      store.watch(kind, (event) => {
        void serviceChainKeysFor(event, store).then((keys) => keys.forEach((k) => controller!.enqueue(k)));
      });
    controller.start();

    // The big chain's turn comes first; the small one waits behind it.
    controller.enqueue(`${NS}/big`);
    controller.enqueue(`${NS}/small`);
    await smallReconciled;
    await bigRolledOut;

    // The small chain went through after one pass of the big one, long before the big rollout
    // finished, and the big one did finish (all its nodes got their NodeChain).
    expect(reconciles.slice(0, 2)).toEqual(["big", "small"]);
    expect(smallSawBig[0]).toBe(MAX_WRITES_PER_PASS);
    expect(await bigNodeChains()).toBe(BIG_NODES);
    expect((await store.list("NodeChain", NS, { [CHAIN_LABEL]: "small" })).length).toBe(1);
  }, 60_000);
});
