import { describe, expect, it } from "vitest";
import type { NodeChainStatus } from "../../../common/api/index.ts";
import { nodeHealth, resolveMaxUnavailable, revisionCounts } from "./rollout.ts";

const now = new Date("2025-03-01T10:00:00Z");
const ready = (at = "2025-03-01T09:59:00Z") => [
  { type: "Ready", status: "True" as const, reason: "Succeeded", message: "", lastTransitionTime: at },
];

function status(s: Partial<NodeChainStatus>): NodeChainStatus {
  return {
    observedGeneration: 2,
    phase: "Ready",
    revision: "r2",
    conditions: ready(),
    selfTest: { passed: 3, failed: 0 },
    ...s,
  };
}

describe("nodeHealth", () => {
  it.each([
    { name: "live, Ready and tested on the asked revision: available", s: status({}), kind: "available" },
    { name: "no report yet: pending", s: undefined, kind: "pending" },
    {
      name: "a report for the previous generation: pending",
      s: status({ observedGeneration: 1 }),
      kind: "pending",
    },
    {
      name: "a Failed report for the previous generation does not fail the new one",
      s: status({ observedGeneration: 1, phase: "Failed" }),
      kind: "pending",
    },
    { name: "still running the old revision: pending", s: status({ revision: "r1" }), kind: "pending" },
    {
      name: "Ready condition False: pending",
      s: status({ conditions: [{ ...ready()[0]!, status: "False" }] }),
      kind: "pending",
    },
    {
      name: "a failed self-test: pending",
      s: status({ selfTest: { passed: 2, failed: 1 } }),
      kind: "pending",
    },
    { name: "phase Testing: pending", s: status({ phase: "Testing" }), kind: "pending" },
    {
      name: "Failed for this generation: failed, with the agent's reason",
      s: status({
        phase: "Failed",
        revision: "r1",
        lastError: { reason: "VerifierRejected", message: "R1 !read_ok" },
      }),
      kind: "failed",
    },
  ])("$name", ({ s, kind }) => {
    expect(nodeHealth({ revision: "r2", generation: 2, status: s }, 0, now).kind).toBe(kind);
  });

  it("waits out minReadySeconds from the Ready condition's transition", () => {
    const state = {
      revision: "r2",
      generation: 2,
      status: status({ conditions: ready("2025-03-01T09:59:50Z") }),
    };
    expect(nodeHealth(state, 30, now)).toEqual({
      kind: "warming",
      availableAt: new Date("2025-03-01T10:00:20Z"),
    });
    expect(nodeHealth(state, 10, now)).toEqual({ kind: "available" });
  });

  it("reports the agent's reason and message for a failure", () => {
    const state = {
      revision: "r2",
      generation: 2,
      status: status({ phase: "Failed", lastError: { reason: "CompileFailed", message: "fw.c:3: error" } }),
    };
    expect(nodeHealth(state, 0, now)).toEqual({
      kind: "failed",
      reason: "CompileFailed",
      message: "fw.c:3: error",
    });
  });
});

describe("resolveMaxUnavailable", () => {
  it.each([
    [1, 10, 1],
    [3, 2, 3],
    ["25%", 10, 2],
    ["50%", 4, 2],
    ["10%", 3, 1],
    ["100%", 7, 7],
  ] as const)("%s of %i nodes is %i", (value, desired, expected) => {
    expect(resolveMaxUnavailable(value, desired)).toBe(expected);
  });
});

describe("revisionCounts", () => {
  it("counts the Ready nodes that run a revision fused, and keeps one reason a node runs it linked", () => {
    const plan = { revision: "r2", interfaces: ["eth0"], hook: "xdp" as const, functions: [], tests: [] };
    const counts = revisionCounts(
      {
        selected: ["a", "b", "c"],
        nodeChains: new Map([
          ["a", { revision: "r2", generation: 2, status: status({ mode: "fused" }) }],
          ["b", { revision: "r2", generation: 2, status: status({ mode: "fused" }) }],
          [
            "c",
            {
              revision: "r2",
              generation: 2,
              status: status({ mode: "linked", modeReason: "ttl-guard: no ttl_guard.h next to its source" }),
            },
          ],
        ]),
        target: plan,
      },
      new Map(),
    );
    expect(counts).toEqual([
      {
        revision: "r2",
        nodes: 3,
        ready: 3,
        failed: 0,
        inProgress: 0,
        pending: 0,
        fused: 2,
        linkedReason: "ttl-guard: no ttl_guard.h next to its source",
      },
    ]);
  });
});
