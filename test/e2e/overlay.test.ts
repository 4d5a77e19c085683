/**
 * The overlay across the three agent nodes of the e2e testbed, as a user runs it: the example's
 * fabric chain (overlay → router on tc ingress of `sl-ul*` and `sl-host*`) is committed to the
 * repository next to the edge chain, each Node says which segment it hosts in its
 * `sluice.dev/overlay-segments` annotation and has an InternalIP on the underlay, and the
 * operator fills the overlay's table from them. The nodes share only an underlay bridge; host
 * i sits behind node i in 10.99.<i+1>.0/24 and no node has a route to another's segment.
 *
 * - the operator writes every node's segment, at its InternalIP, into each node's plan;
 * - hosts behind different nodes reach each other (UDP both ways, no loss), and the receiver
 *   sees the sender's packet itself: its addresses, its UDP length, the TTL one lower (the
 *   receiving node's router; the tunnel is one hop);
 * - MTU: the underlay and the hosts have 1500; a 1,450-byte packet crosses, a 1,451-byte one
 *   would need 1,501 on the underlay once wrapped: it is dropped, and the overlay counts it.
 *
 * Agents and operator run as the chart runs them (harness.ts checks their identities).
 */
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { parseAllDocuments, parse as parseYaml, stringify as toYaml } from "yaml";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { pinName } from "../../node-agent/src/agent/agent.ts";
import { BpfMap } from "../../node-agent/src/libbpf/index.ts";
import { withNetns } from "../../node-agent/src/netns/index.ts";
import { decodeOverlayCounters, type OverlayCounters } from "../../node-agent/src/nf/index.ts";
import { OVERLAY_COUNTERS } from "../../node-agent/src/nf/overlay.ts";
import { createTestNamespace, kubectlOk } from "../cluster/harness.ts";
import { udpCapture } from "../kernel/capture.ts";
import { createNetns, repoRoot, run, TestScope, type TestNetns } from "../kernel/harness.ts";
import { udpFlow } from "../kernel/traffic.ts";
import { conditionOf, nodeState, settled, Testbed, type E2eNode, type NodeChainView } from "./harness.ts";

const namespace = createTestNamespace("e2e-overlay");
const FABRIC = "fabric";
const EXAMPLE = join(repoRoot, "examples/gitops/fabric");

let bed: Testbed;
const scope = new TestScope();
let failed = false;

/** What the test adds to each node: a host behind it and an underlay address. */
interface FabricNode {
  node: E2eNode;
  host: TestNetns;
  hostIp: string;
  segment: string;
  underlayIp: string;
}
const fabric: FabricNode[] = [];

function sysctl(ns: TestNetns, knob: string, value: string): void {
  withNetns(ns.path, () => writeFileSync(`/proc/sys/net/${knob}`, value));
}

/** The underlay: a bridge in its own namespace, one port per node (`sl-ul<i>` on the node). */
async function buildFabric(): Promise<void> {
  const underlay = await createNetns(scope, "underlay");
  await run("ip", ["-n", underlay.name, "link", "add", "br0", "type", "bridge"]);
  await run("ip", ["-n", underlay.name, "link", "set", "br0", "up"]);
  for (const node of bed.nodes) {
    const i = node.index;
    const underlayIp = `10.88.0.${i + 1}`;
    const segment = `10.99.${i + 1}.0/24`;
    const hostIp = `10.99.${i + 1}.1`;
    const gateway = `10.99.${i + 1}.254`;
    await run("ip", [
      "link",
      "add",
      `sl-ul${i}`,
      "netns",
      node.netns.name,
      "type",
      "veth",
      "peer",
      "name",
      `ulp${i}`,
      "netns",
      underlay.name,
    ]);
    await run("ip", ["-n", underlay.name, "link", "set", `ulp${i}`, "master", "br0", "up"]);
    const host = await createNetns(scope, `host${i}`);
    await run("ip", [
      "link",
      "add",
      `sl-host${i}`,
      "netns",
      node.netns.name,
      "type",
      "veth",
      "peer",
      "name",
      "eth0",
      "netns",
      host.name,
    ]);
    await run(
      "ip",
      ["-n", node.netns.name, "-batch", "-"],
      `addr add ${underlayIp}/24 dev sl-ul${i}\nlink set sl-ul${i} up\naddr add ${gateway}/24 dev sl-host${i}\nlink set sl-host${i} up\n`,
    );
    await run(
      "ip",
      ["-n", host.name, "-batch", "-"],
      `addr add ${hostIp}/24 dev eth0\nlink set eth0 up\nroute add default via ${gateway}\n`,
    );
    // The node routes between its host and the underlay; it knows no other node's segment.
    sysctl(node.netns, "ipv4/ip_forward", "1");
    // What a node's kubelet reports, and what its operator-side owner annotates.
    await kubectlOk(["annotate", "node", node.name, "--overwrite", `sluice.dev/overlay-segments=${segment}`]);
    await kubectlOk([
      "patch",
      "node",
      node.name,
      "--subresource=status",
      "--type=merge",
      "-p",
      JSON.stringify({
        status: {
          addresses: [
            { type: "InternalIP", address: underlayIp },
            { type: "Hostname", address: node.name },
          ],
        },
      }),
    ]);
    fabric.push({ node, host, hostIp, segment, underlayIp });
  }
}

/** The example's fabric manifests, selecting this testbed's nodes. */
function fabricManifests(): Record<string, string> {
  const chain = parseYaml(readFileSync(join(EXAMPLE, "chain.yaml"), "utf8")) as {
    spec: Record<string, unknown>;
  };
  chain.spec.nodeSelector = { matchLabels: { "sluice.dev/e2e": namespace } };
  const functions = parseAllDocuments(readFileSync(join(EXAMPLE, "functions.yaml"), "utf8")).map((d) =>
    toYaml(d.toJS()),
  );
  return {
    "network/fabric/chain.yaml": toYaml(chain),
    "network/fabric/functions.yaml": functions.join("---\n"),
  };
}

/** Waits until the fabric chain is Ready on every node and returns its NodeChains. */
async function waitForFabric(timeoutMs: number): Promise<NodeChainView[]> {
  await bed.serviceChains.waitFor(
    "fabric Ready",
    (all) => {
      const sc = all.get(FABRIC);
      return (
        sc?.status?.revision !== undefined &&
        sc.status.observedGeneration === sc.metadata.generation &&
        conditionOf(sc, "Ready")?.status === "True" &&
        sc
      );
    },
    timeoutMs,
  );
  return bed.nodeChains.waitFor(
    "fabric live and Ready on every node",
    (all) => {
      const chains = [...all.values()].filter((nc) => nc.spec.chain === FABRIC);
      return (
        chains.length === bed.nodes.length &&
        chains.every((nc) => {
          const state = nodeState(nc);
          return settled(state) && state.wanted === nc.spec.revision;
        }) &&
        chains
      );
    },
    timeoutMs,
  );
}

/** The overlay's counters on `node`, from the fabric chain's pinned map. */
function overlayCounters(node: E2eNode): OverlayCounters {
  const pinDir = join(
    node.bpffsRoot,
    pinName({
      metadata: { name: `${FABRIC}.${node.name}`, namespace },
      spec: { chain: FABRIC },
    }),
  );
  const map = BpfMap.fromPin(join(pinDir, "maps/overlay/overlay_counters"), "overlay_counters");
  try {
    const entries = [];
    for (let counter = 0; counter < OVERLAY_COUNTERS; counter++) {
      const key = Buffer.alloc(4);
      key.writeUInt32LE(counter);
      entries.push({ key, value: Buffer.concat(map.lookupPerCpu(key) ?? []) });
    }
    return decodeOverlayCounters(entries);
  } finally {
    map.close();
  }
}

beforeAll(async () => {
  bed = await Testbed.start({ namespace });
  // The testbed's edge chain rolls out on sl-node* meanwhile; the fabric chain does not need it.
  await buildFabric();
  const { sha } = await bed.commit("network: the fabric chain", fabricManifests());
  await bed.waitForApplied(sha, 60_000);
  await waitForFabric(180_000);
}, 420_000);

afterEach((ctx) => {
  if (ctx.task.result?.state === "fail") failed = true;
});

afterAll(async () => {
  await bed?.stop({ keepLogs: failed });
  await scope.dispose();
});

describe("overlay + router across the three agent nodes", () => {
  it("the operator writes every node's segment, at its InternalIP, into each node's plan", async () => {
    const chains = await waitForFabric(10_000);
    const expected = [
      { prefix: "10.200.0.0/16", node: "192.0.2.10" }, // the example's own entry
      ...fabric.map((f) => ({ prefix: f.segment, node: f.underlayIp })),
    ];
    for (const nc of chains) {
      const stdout = await kubectlOk(["get", "nodechain", "-n", namespace, nc.metadata.name, "-o", "json"]);
      const { spec, status } = JSON.parse(stdout) as {
        spec: { functions: { name: string; tables?: { segments?: unknown } }[] };
        status: { mode?: string; modeReason?: string };
      };
      expect(spec.functions.find((f) => f.name === "overlay")?.tables?.segments).toEqual(expected);
      // Linked or fused (mode auto), the NodeChain says which and, when linked, why.
      expect(status.mode === "fused" || status.modeReason !== undefined).toBe(true);
    }
  });

  it("hosts behind different nodes reach each other, and the receiver sees the sender's packet", async () => {
    const pairs = [
      [fabric[0]!, fabric[1]!],
      [fabric[1]!, fabric[2]!],
      [fabric[2]!, fabric[0]!],
    ] as const;
    for (const [from, to] of pairs) {
      const before = { sent: overlayCounters(from.node), arrived: overlayCounters(to.node) };
      const cap = udpCapture(to.host.path);
      try {
        const port = 7300 + from.node.index;
        const flow = await udpFlow({
          from: { ns: from.host, ip: from.hostIp },
          to: { ns: to.host, ip: to.hostIp },
          count: 2_000,
          rate: 2_000,
          port,
          payloadSize: 100,
        });
        expect({ from: from.node.name, to: to.node.name, sent: flow.sent, lost: flow.lost }).toEqual({
          from: from.node.name,
          to: to.node.name,
          sent: 2_000,
          lost: 0,
        });
        await sleep(50);
        const seen = cap.datagrams(port);
        expect(seen.length).toBeGreaterThan(0);
        expect(new Set(seen.map((s) => JSON.stringify(s)))).toEqual(
          new Set([JSON.stringify({ family: 4, src: from.hostIp, dst: to.hostIp, ttl: 63, udpLength: 108 })]),
        );
      } finally {
        cap.close();
      }
      const after = { sent: overlayCounters(from.node), arrived: overlayCounters(to.node) };
      // Every packet crossed the tunnel (the first may have waited for the peer's ARP).
      const wrapped =
        after.sent.encapsulated + after.sent.noNeighbour - before.sent.encapsulated - before.sent.noNeighbour;
      expect(wrapped).toBe(2_000);
      expect(after.arrived.decapsulated - before.arrived.decapsulated).toBe(2_000);
    }
  });

  it("a packet that fits the underlay once wrapped crosses; one byte more is dropped and counted", async () => {
    const [from, to] = [fabric[0]!, fabric[2]!];
    const tooBigBefore = overlayCounters(from.node).tooBig;
    // 1,450 bytes of IP + 50 = 1,500, the underlay's MTU.
    const fits = await udpFlow({
      from: { ns: from.host, ip: from.hostIp },
      to: { ns: to.host, ip: to.hostIp },
      count: 50,
      rate: 500,
      port: 7400,
      payloadSize: 1450 - 28,
    });
    expect({ sent: fits.sent, lost: fits.lost }).toEqual({ sent: 50, lost: 0 });
    const tooBig = await udpFlow({
      from: { ns: from.host, ip: from.hostIp },
      to: { ns: to.host, ip: to.hostIp },
      count: 50,
      rate: 500,
      port: 7401,
      payloadSize: 1451 - 28,
    });
    expect({ sent: tooBig.sent, received: tooBig.received }).toEqual({ sent: 50, received: 0 });
    expect(overlayCounters(from.node).tooBig - tooBigBefore).toBe(50);
  });
});
