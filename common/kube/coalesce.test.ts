import { describe, expect, it } from "vitest";
import { WriteCoalescer } from "./coalesce.ts";

describe("WriteCoalescer", () => {
  it("lets one routine write per interval through per key, and says how long the next waits", () => {
    let now = 10_000;
    const c = new WriteCoalescer(1000, () => now);
    expect(c.admit("a", false)).toEqual({ write: true });
    c.wrote("a");
    now += 300;
    expect(c.admit("a", false)).toEqual({ write: false, retryInMs: 700 });
    // Another key has its own interval.
    expect(c.admit("b", false)).toEqual({ write: true });
    now += 700;
    expect(c.admit("a", false)).toEqual({ write: true });
  });

  it("always lets an urgent write through, and counts the interval from it", () => {
    let now = 0;
    const c = new WriteCoalescer(1000, () => now);
    c.wrote("a");
    now = 10;
    expect(c.admit("a", true)).toEqual({ write: true });
    c.wrote("a");
    now = 900;
    expect(c.admit("a", false)).toEqual({ write: false, retryInMs: 110 });
  });

  it("starts afresh for a forgotten key, and an interval of 0 holds nothing back", () => {
    let now = 0;
    const c = new WriteCoalescer(1000, () => now);
    c.wrote("a");
    c.forget("a");
    expect(c.admit("a", false)).toEqual({ write: true });
    const none = new WriteCoalescer(0, () => now);
    none.wrote("a");
    now = 1;
    expect(none.admit("a", false)).toEqual({ write: true });
  });
});
