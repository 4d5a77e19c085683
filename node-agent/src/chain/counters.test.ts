import { describe, expect, it } from "vitest";
import { deriveCounters, zeroEnded, type EndedCounters } from "./counters.ts";

const ended = (packets: number, drops: number, errors = 0): EndedCounters => ({
  ...zeroEnded(),
  packets: BigInt(packets),
  bytes: BigInt(packets * 100),
  drops: BigInt(drops),
  errors: BigInt(errors),
  passes: BigInt(packets - drops - errors),
});

describe("deriveCounters", () => {
  it("credits each NF with every packet that ended in it or after it", () => {
    // 10 packets: the firewall drops 3, the rate limiter drops 2, 5 reach the end of the chain.
    const got = deriveCounters(
      ["firewall", "ratelimit", "flowmon"],
      new Map([
        ["firewall", ended(3, 3)],
        ["ratelimit", ended(2, 2)],
        ["flowmon", ended(5, 0)],
      ]),
    );
    expect(got.get("firewall")).toMatchObject({ packets: 10n, drops: 3n, passes: 7n, bytes: 1000n });
    expect(got.get("ratelimit")).toMatchObject({ packets: 7n, drops: 2n, passes: 5n });
    expect(got.get("flowmon")).toMatchObject({ packets: 5n, drops: 0n, passes: 5n });
  });

  it("counts a missed tail call as an error of the NF that made it, and NFs never reached as zero", () => {
    const got = deriveCounters(["a", "b"], new Map([["a", ended(4, 0, 4)]]));
    expect(got.get("a")).toMatchObject({ packets: 4n, errors: 4n, passes: 0n });
    expect(got.get("b")).toMatchObject({ packets: 0n, passes: 0n });
  });
});
