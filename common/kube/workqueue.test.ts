import { describe, expect, it } from "vitest";
import { WorkQueue } from "./workqueue.ts";

describe("WorkQueue", () => {
  it("hands out a key added many times only once", async () => {
    const q = new WorkQueue();
    q.add("a");
    q.add("a");
    q.add("b");
    expect(await q.get()).toBe("a");
    expect(await q.get()).toBe("b");
    expect(q.length).toBe(0);
  });

  it("never processes one key twice at once, and reruns a key added while it was processing", async () => {
    const q = new WorkQueue();
    q.add("a");
    const first = await q.get();
    q.add("a"); // arrives while "a" is being reconciled
    expect(q.length).toBe(0);
    q.done(first!);
    expect(q.length).toBe(1);
    expect(await q.get()).toBe("a");
  });

  it("puts a key added while it was processing behind the keys already waiting (round robin)", async () => {
    const q = new WorkQueue();
    q.add("big");
    const big = await q.get();
    q.add("big"); // its next pass, asked for during this one
    q.add("small");
    q.add("other");
    q.done(big!);
    expect([await q.get(), await q.get(), await q.get()]).toEqual(["small", "other", "big"]);
  });

  it("keeps the earliest deadline of delayed adds", async () => {
    const q = new WorkQueue();
    q.addAfter("a", 10_000);
    q.addAfter("a", 20);
    const started = Date.now();
    expect(await q.get()).toBe("a");
    expect(Date.now() - started).toBeLessThan(5_000);
  });

  it("backs off exponentially on repeated failures and resets after forget", () => {
    const q = new WorkQueue({ baseMs: 100, maxMs: 1_000 });
    expect([1, 2, 3, 4, 5].map(() => q.addRateLimited("a"))).toEqual([100, 200, 400, 800, 1_000]);
    q.forget("a");
    expect(q.addRateLimited("a")).toBe(100);
    q.shutdown();
  });

  it("returns undefined to waiting workers after shutdown", async () => {
    const q = new WorkQueue();
    const waiting = q.get();
    q.shutdown();
    expect(await waiting).toBeUndefined();
  });
});
