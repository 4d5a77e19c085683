import { describe, expect, it } from "vitest";
import { API_VERSION, NetworkFunction, ServiceChain } from "../../../common/api/index.ts";
import { KubeNode } from "../../../common/store.ts";
import { resolvePlan, type PlanResult } from "./plan.ts";

const NS = "net";

function node(name: string, options: { segments?: string; ip?: string; pool?: string } = {}): KubeNode {
  return KubeNode.parse({
    apiVersion: "v1",
    kind: "Node",
    metadata: {
      name,
      labels: { pool: options.pool ?? "fabric" },
      ...(options.segments !== undefined && {
        annotations: { "sluice.dev/overlay-segments": options.segments },
      }),
    },
    status: {
      addresses: [
        { type: "Hostname", address: name },
        ...(options.ip ? [{ type: "InternalIP", address: options.ip }] : []),
      ],
    },
  });
}

function plan(nodes: KubeNode[], tables?: unknown): PlanResult {
  const overlay = NetworkFunction.parse({
    apiVersion: API_VERSION,
    kind: "NetworkFunction",
    metadata: { name: "overlay", namespace: NS },
    spec: { hooks: ["xdp"], source: { builtin: "overlay" }, ...(tables !== undefined && { tables }) },
  });
  const router = NetworkFunction.parse({
    apiVersion: API_VERSION,
    kind: "NetworkFunction",
    metadata: { name: "router", namespace: NS },
    spec: { hooks: ["xdp"], source: { builtin: "router" } },
  });
  const chain = ServiceChain.parse({
    apiVersion: API_VERSION,
    kind: "ServiceChain",
    metadata: { name: "fabric", namespace: NS },
    spec: {
      functions: [{ name: "overlay" }, { name: "router" }],
      attachment: { interfaces: ["eth0", "host*"], hook: "xdp" },
      nodeSelector: { matchLabels: { pool: "fabric" } },
    },
  });
  return resolvePlan({
    chain,
    functions: new Map([
      ["overlay", overlay],
      ["router", router],
    ]),
    sources: new Map(),
    nodes,
  });
}

function segmentsOf(result: PlanResult): unknown {
  if (!result.ok) throw new Error(result.message);
  return result.plan.functions[0]!.tables?.segments;
}

describe("the overlay's segment table from the cluster", () => {
  it("holds the segments of every selected node at its InternalIP, after the function's own", () => {
    const nodes = [
      node("b", { segments: "10.1.2.0/24", ip: "192.168.0.2" }),
      node("a", { segments: "10.1.1.0/24, fd00:1::/64", ip: "192.168.0.1" }),
      node("c", { ip: "192.168.0.3" }), // hosts nothing
      node("d", { segments: "10.1.4.0/24", ip: "192.168.0.4", pool: "other" }), // not selected
    ];
    const own = { segments: [{ prefix: "10.9.0.0/16", node: "203.0.113.9" }] };
    expect(segmentsOf(plan(nodes, own))).toEqual([
      { prefix: "10.9.0.0/16", node: "203.0.113.9" },
      { prefix: "10.1.1.0/24", node: "192.168.0.1" },
      { prefix: "fd00:1::/64", node: "192.168.0.1" },
      { prefix: "10.1.2.0/24", node: "192.168.0.2" },
    ]);
    // The router is left alone.
    const result = plan(nodes);
    expect(result.ok && result.plan.functions[1]!.tables).toBeUndefined();
  });

  it("moves the revision when a node's segments change, and only then", () => {
    const revision = (nodes: KubeNode[]) => {
      const result = plan(nodes);
      if (!result.ok) throw new Error(result.message);
      return result.plan.revision;
    };
    const a = node("a", { segments: "10.1.1.0/24", ip: "192.168.0.1" });
    const base = revision([a]);
    expect(revision([a, node("c", { ip: "192.168.0.3" })])).toBe(base);
    expect(revision([node("a", { segments: "10.1.1.0/25", ip: "192.168.0.1" })])).not.toBe(base);
    expect(revision([node("a", { segments: "10.1.1.0/24", ip: "192.168.0.7" })])).not.toBe(base);
  });

  it.each([
    [
      "an annotation that is not a CIDR list",
      [node("a", { segments: "10.1.1.0/24, ten", ip: "192.168.0.1" })],
      'Node a: metadata.annotations[sluice.dev/overlay-segments]: "ten" is not an IPv4 or IPv6 address',
    ],
    [
      "a node without an IPv4 InternalIP",
      [node("a", { segments: "10.1.1.0/24" })],
      "Node a: status.addresses: no IPv4 InternalIP",
    ],
    [
      "one segment on two nodes",
      [
        node("a", { segments: "10.1.1.0/24", ip: "192.168.0.1" }),
        node("b", { segments: "10.1.1.0/24", ip: "192.168.0.2" }),
      ],
      "NetworkFunction overlay with the segments of the chain's nodes: overlay tables: segments[1].prefix: 10.1.1.0/24 is already segments[0] (hosted by 192.168.0.1)",
    ],
  ])("stalls the chain on %s, naming the node and field", (_, nodes, message) => {
    const result = plan(nodes);
    expect(result.ok).toBe(false);
    if (result.ok) return;
    expect(result.reason).toBe("InvalidSpec");
    expect(result.stalled).toBe(true);
    expect(result.message).toContain(message);
  });
});
