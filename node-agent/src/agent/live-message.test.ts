import { describe, expect, it } from "vitest";
import { liveMessage } from "./agent.ts";

describe("the Ready message of a live revision", () => {
  it.each([
    {
      name: "says where the revision runs",
      result: { revision: "r2", programIds: [1, 2], attachedInterfaces: ["eth0", "eth1"] },
      message: "revision r2 is live on eth0, eth1",
    },
    {
      name: "says why a chain that asked for auto runs linked",
      result: {
        revision: "r4",
        programIds: [1, 2, 3],
        attachedInterfaces: ["eth0"],
        mode: "linked" as const,
        modeReason: "ttl-guard: no ttl_guard.h next to its source",
      },
      message: "revision r4 is live on eth0; runs linked: ttl-guard: no ttl_guard.h next to its source",
    },
    {
      name: "names each map that started empty, and why",
      result: {
        revision: "r3",
        programIds: [1, 2],
        attachedInterfaces: ["eth0"],
        hookChange: { from: "xdp", to: "tc-ingress" },
        recreatedMaps: [
          { nf: "counter", map: "counter_hits", reason: "definition changed: max entries 4 -> 8" },
        ],
      },
      message:
        "revision r3 is live on eth0; moved from hook xdp to tc-ingress; state not carried over, these maps started empty: counter/counter_hits (definition changed: max entries 4 -> 8)",
    },
  ])("$name", ({ result, message }) => {
    expect(liveMessage(result)).toBe(message);
  });
});
