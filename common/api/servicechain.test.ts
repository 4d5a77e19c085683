import { describe, expect, it } from "vitest";
import { exampleServiceChain, withField } from "./examples.ts";
import { parseSluiceObject } from "./index.ts";
import { chainFunctionName, MAX_CHAIN_LENGTH, nodesSummary, ServiceChain } from "./servicechain.ts";

const functions = (n: number) => Array.from({ length: n }, (_, i) => ({ name: `nf-${i}` }));

describe("ServiceChain", () => {
  it("parses the example and fills in rollout defaults", () => {
    const sc = ServiceChain.parse(exampleServiceChain());
    expect(sc.spec.functions.map(chainFunctionName)).toEqual(["firewall", "tagger", "firewall-2"]);
    expect(sc.spec.rollout).toEqual({
      maxUnavailable: "25%",
      canary: { nodes: 1, pause: true },
      paused: false,
      minReadySeconds: 0,
      progressDeadlineSeconds: 600,
      autoRollback: true,
    });
    expect(sc.status).toEqual({ observedGeneration: -1 });
  });

  it("defaults the whole rollout when it is left out", () => {
    const sc = ServiceChain.parse(withField(exampleServiceChain(), "spec.rollout", undefined));
    expect(sc.spec.rollout).toEqual({
      maxUnavailable: 1,
      paused: false,
      minReadySeconds: 0,
      progressDeadlineSeconds: 600,
      autoRollback: true,
    });
  });

  it(`accepts ${MAX_CHAIN_LENGTH} functions, the most 33 tail calls allow`, () => {
    expect(
      ServiceChain.safeParse(withField(exampleServiceChain(), "spec.functions", functions(MAX_CHAIN_LENGTH)))
        .success,
    ).toBe(true);
  });

  it.each([1, 3, "1%", "25%", "100%"])("accepts maxUnavailable %s", (value) => {
    expect(
      ServiceChain.safeParse(withField(exampleServiceChain(), "spec.rollout.maxUnavailable", value)).success,
    ).toBe(true);
  });

  it.each([
    ["an empty chain", "spec.functions", [], "spec.functions", "at least one function"],
    ["33 functions", "spec.functions", functions(33), "spec.functions", "at most 32 functions"],
    [
      "one function twice without alias",
      "spec.functions[2].alias",
      undefined,
      "spec.functions[2].name",
      '"firewall" is already used',
    ],
    [
      "an alias taken by another function",
      "spec.functions[2].alias",
      "tagger",
      "spec.functions[2].alias",
      '"tagger" is already used',
    ],
    ["a bad function name", "spec.functions[1].name", "Tagger", "spec.functions[1].name", "DNS-1123 label"],
    [
      "no interfaces",
      "spec.attachment.interfaces",
      [],
      "spec.attachment.interfaces",
      "at least one interface",
    ],
    [
      "an interface name of 16 characters",
      "spec.attachment.interfaces[0]",
      "eth0123456789abc",
      "spec.attachment.interfaces[0]",
      "at most 15",
    ],
    [
      "an interface with a slash",
      "spec.attachment.interfaces[0]",
      "eth0/1",
      "spec.attachment.interfaces[0]",
      "without '/'",
    ],
    [
      "a repeated interface",
      "spec.attachment.interfaces[1]",
      "eth0",
      "spec.attachment.interfaces[1]",
      'duplicate interface "eth0"',
    ],
    ["an unknown hook", "spec.attachment.hook", "tc", "spec.attachment.hook", '"xdp"'],
    ["maxUnavailable 0", "spec.rollout.maxUnavailable", 0, "spec.rollout.maxUnavailable", "at least 1"],
    [
      "maxUnavailable 0%",
      "spec.rollout.maxUnavailable",
      "0%",
      "spec.rollout.maxUnavailable",
      "percentage from 1% to 100%",
    ],
    [
      "maxUnavailable 101%",
      "spec.rollout.maxUnavailable",
      "101%",
      "spec.rollout.maxUnavailable",
      "percentage",
    ],
    [
      "maxUnavailable in words",
      "spec.rollout.maxUnavailable",
      "all",
      "spec.rollout.maxUnavailable",
      "percentage",
    ],
    [
      "a fractional maxUnavailable",
      "spec.rollout.maxUnavailable",
      1.5,
      "spec.rollout.maxUnavailable",
      "whole number",
    ],
    ["zero canary nodes", "spec.rollout.canary.nodes", 0, "spec.rollout.canary.nodes", ""],
    [
      "a zero progress deadline",
      "spec.rollout.progressDeadlineSeconds",
      0,
      "spec.rollout.progressDeadlineSeconds",
      "",
    ],
    ["a negative minReadySeconds", "spec.rollout.minReadySeconds", -1, "spec.rollout.minReadySeconds", ""],
    [
      "an unknown rollout field",
      "spec.rollout.strategy",
      "bluegreen",
      "spec.rollout",
      'unknown field "strategy"',
    ],
    [
      "a bad label key",
      "spec.nodeSelector.matchLabels",
      { "bad key": "x" },
      'spec.nodeSelector.matchLabels["bad key"]',
      "label key",
    ],
    [
      "a bad label value",
      "spec.nodeSelector.matchLabels",
      { zone: "a b" },
      "spec.nodeSelector.matchLabels.zone",
      "label value",
    ],
    [
      "In without values",
      "spec.nodeSelector.matchExpressions",
      [{ key: "zone", operator: "In" }],
      "spec.nodeSelector.matchExpressions[0].values",
      "at least one value",
    ],
    [
      "Exists with values",
      "spec.nodeSelector.matchExpressions",
      [{ key: "zone", operator: "Exists", values: ["a"] }],
      "spec.nodeSelector.matchExpressions[0].values",
      "takes no values",
    ],
    ["a name of 64 characters", "metadata.name", "a".repeat(64), "metadata.name", "at most 63"],
  ])("rejects %s at %s", (_, field, value, path, message) => {
    const result = parseSluiceObject(withField(exampleServiceChain(), field, value));
    expect(result.ok).toBe(false);
    if (result.ok) return;
    expect(result.error.issues).toContainEqual({ path, message: expect.stringContaining(message) });
  });

  it("parses a status written by the operator", () => {
    const sc = ServiceChain.parse({
      ...exampleServiceChain(),
      status: {
        observedGeneration: 2,
        revision: "3f2a9c1d0b7e",
        lastGoodRevision: "1a2b3c4d5e6f",
        nodes: { desired: 3, updated: 2, ready: 1, failed: 1, summary: "1/3" },
        failedNodes: [{ node: "node-2", reason: "VerifierRejected", message: "R1 invalid mem access" }],
        conditions: [
          {
            type: "Degraded",
            status: "True",
            reason: "NodesFailed",
            message: "1 node failed",
            lastTransitionTime: "2025-01-02T03:04:05Z",
          },
        ],
      },
    });
    expect(sc.status.nodes?.summary).toBe(nodesSummary({ ready: 1, desired: 3 }));
  });
});
