import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { Dns1123Subdomain, LabelValue } from "../../../common/api/index.ts";
import {
  canonicalJson,
  nodeChainName,
  nodeLabelValue,
  planRevision,
  sameJson,
  selectNodes,
  type NodeInfo,
} from "./plan.ts";

describe("nodeChainName", () => {
  it("is <chain>.<node>, so that no two (chain, node) pairs share a name", () => {
    expect(nodeChainName("web", "node-1")).toBe("web.node-1");
    // With '-' these two would both be "a-b-c".
    expect(nodeChainName("a-b", "c")).not.toBe(nodeChainName("a", "b-c"));
  });

  it("stays a valid object name for the longest names, distinct per node", () => {
    const chain = "c".repeat(63);
    const nodeA = `${"n".repeat(60)}.${"x".repeat(63)}.${"y".repeat(63)}.${"z".repeat(60)}a`;
    const nodeB = `${nodeA.slice(0, -1)}b`;
    const a = nodeChainName(chain, nodeA);
    expect(a.length).toBeLessThanOrEqual(253);
    expect(Dns1123Subdomain.safeParse(a).success).toBe(true);
    expect(a).not.toBe(nodeChainName(chain, nodeB));
    expect(nodeChainName(chain, nodeA)).toBe(a);
  });
});

describe("nodeLabelValue", () => {
  it("is the node name when it fits a label value, a shortened form with a hash otherwise", () => {
    expect(nodeLabelValue("worker-1.example.com")).toBe("worker-1.example.com");
    const long = `${"w".repeat(50)}.${"e".repeat(50)}`;
    const value = nodeLabelValue(long);
    expect(LabelValue.safeParse(value).success).toBe(true);
    expect(value).not.toBe(nodeLabelValue(`${long}x`));
  });
});

describe("planRevision", () => {
  const body = {
    interfaces: ["eth0"],
    hook: "xdp" as const,
    functions: [
      { name: "fw", networkFunction: "fw", source: { builtin: "firewall" }, parameters: { A: 1, B: 2 } },
    ],
    tests: [],
  };

  it("is 16 hex digits and ignores the order of object keys", () => {
    const reordered = {
      tests: [],
      functions: [
        { parameters: { B: 2, A: 1 }, source: { builtin: "firewall" }, networkFunction: "fw", name: "fw" },
      ],
      hook: "xdp" as const,
      interfaces: ["eth0"],
    };
    expect(planRevision(body)).toMatch(/^[0-9a-f]{16}$/);
    expect(planRevision(reordered)).toBe(planRevision(body));
  });

  it("changes with anything in the plan, including the order of functions and interfaces", () => {
    const base = planRevision(body);
    expect(planRevision({ ...body, interfaces: ["eth1"] })).not.toBe(base);
    expect(planRevision({ ...body, hook: "tc-ingress" })).not.toBe(base);
    expect(planRevision({ ...body, functions: [{ ...body.functions[0]!, tables: { rules: [] } }] })).not.toBe(
      base,
    );
  });
});

describe("selectNodes", () => {
  const nodes: NodeInfo[] = [
    { name: "b", labels: { zone: "x", role: "edge" } },
    { name: "a", labels: { zone: "y", role: "edge" } },
    { name: "c", labels: { zone: "x" } },
    { name: "d", labels: { zone: "x", role: "edge" }, deleting: true },
  ];

  it("picks matching nodes in name order and leaves out nodes being deleted", () => {
    expect(selectNodes(undefined, nodes)).toEqual(["a", "b", "c"]);
    expect(selectNodes({ matchLabels: { role: "edge" } }, nodes)).toEqual(["a", "b"]);
    expect(selectNodes({ matchExpressions: [{ key: "role", operator: "DoesNotExist" }] }, nodes)).toEqual([
      "c",
    ]);
    expect(
      selectNodes(
        { matchLabels: { zone: "x" }, matchExpressions: [{ key: "role", operator: "In", values: ["edge"] }] },
        nodes,
      ),
    ).toEqual(["b"]);
  });
});

/** `value` rebuilt with every object's keys in reverse order and an undefined member added. */
function reordered(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(reordered);
  if (value === null || typeof value !== "object") return value;
  const out: Record<string, unknown> = { absent: undefined };
  for (const key of Object.keys(value).reverse())
    out[key] = reordered((value as Record<string, unknown>)[key]);
  if (Object.hasOwn(value, "absent")) out.absent = reordered((value as Record<string, unknown>).absent);
  return out;
}

describe("sameJson", () => {
  it.each([
    ["key order does not matter", { a: 1, b: { c: [1, 2] } }, { b: { c: [1, 2] }, a: 1 }, true],
    ["an undefined member counts as absent", { a: 1, b: undefined }, { a: 1 }, true],
    ["a changed leaf differs", { a: { b: "x" } }, { a: { b: "y" } }, false],
    ["an extra member differs", { a: 1 }, { a: 1, b: null }, false],
    ["a missing member differs", { a: 1, b: 2 }, { a: 1 }, false],
    ["array order matters", [1, 2], [2, 1], false],
    ["an array is not an object with index keys", [1], { 0: 1 }, false],
    ["a number is not its string", { a: 1 }, { a: "1" }, false],
    ["null is not an empty object", null, {}, false],
  ])("%s", (_name, a, b, same) => {
    expect(sameJson(a, b)).toBe(same);
    expect(sameJson(b, a)).toBe(same);
  });

  it("agrees with canonicalJson on JSON values and on reordered copies of them", () => {
    fc.assert(
      fc.property(fc.jsonValue(), fc.jsonValue(), (a, b) => {
        expect(sameJson(a, b)).toBe(canonicalJson(a) === canonicalJson(b));
        expect(sameJson(a, reordered(a))).toBe(true);
      }),
    );
  });
});
