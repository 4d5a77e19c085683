import { describe, expect, it } from "vitest";
import { exampleNodeChain, withField } from "./examples.ts";
import { parseSluiceObject } from "./index.ts";
import { MAX_ERROR_LOG_LENGTH, NodeChain } from "./nodechain.ts";

describe("NodeChain", () => {
  it("parses a plan with each kind of resolved source, status Pending until the agent writes", () => {
    const nc = NodeChain.parse(exampleNodeChain());
    expect(nc.spec.functions.map((f) => Object.keys(f.source)[0])).toEqual(["builtin", "artifact", "inline"]);
    expect(nc.status).toEqual({ observedGeneration: -1, phase: "Pending" });
  });

  it("parses a status written by the agent", () => {
    const nc = NodeChain.parse({
      ...exampleNodeChain(),
      status: {
        observedGeneration: 4,
        phase: "Failed",
        revision: "1a2b3c4d5e6f",
        programIds: [101, 102, 103, 104],
        attachedInterfaces: ["eth0", "veth12ab"],
        selfTest: {
          passed: 1,
          failed: 1,
          results: [{ vector: "firewall/drops-ssh", passed: false, expected: "drop", got: "pass" }],
        },
        lastError: { reason: "SelfTestFailed", message: "1 of 2 vectors failed", log: "" },
        conditions: [
          {
            type: "Ready",
            status: "False",
            reason: "SelfTestFailed",
            message: "old revision still live",
            lastTransitionTime: "2025-01-02T03:04:05Z",
            observedGeneration: 4,
          },
        ],
      },
    });
    expect(nc.status.phase).toBe("Failed");
    expect(nc.status.revision).toBe("1a2b3c4d5e6f");
  });

  it.each([
    [
      "two source kinds",
      "spec.functions[0].source",
      { builtin: "firewall", inline: "x" },
      "spec.functions[0].source",
      "exactly one of builtin, artifact or inline",
    ],
    [
      "an artifact without digest",
      "spec.functions[1].source.artifact.digest",
      undefined,
      "spec.functions[1].source.artifact.digest",
      "is required",
    ],
    [
      "a bad digest",
      "spec.functions[1].source.artifact.digest",
      "md5:abc",
      "spec.functions[1].source.artifact.digest",
      "sha256:",
    ],
    ["a missing node name", "spec.nodeName", undefined, "spec.nodeName", "is required"],
    ["a revision with a space", "spec.revision", "a b", "spec.revision", "letters, digits"],
    ["no functions", "spec.functions", [], "spec.functions", ""],
    ["an unknown phase", "status.phase", "Running", "status.phase", '"Pending"'],
    [
      "a compiler log over the limit",
      "status.lastError",
      { reason: "CompileFailed", message: "", log: "x".repeat(MAX_ERROR_LOG_LENGTH + 1) },
      "status.lastError.log",
      "",
    ],
  ])("rejects %s at %s", (_, field, value, path, message) => {
    const result = parseSluiceObject(withField(exampleNodeChain(), field, value));
    expect(result.ok).toBe(false);
    if (result.ok) return;
    expect(result.error.issues).toContainEqual({ path, message: expect.stringContaining(message) });
  });
});
