/** The demo's network: two hosts and the node between them, each a network namespace. */
import { existsSync, writeFileSync } from "node:fs";
import { withNetns } from "../../node-agent/src/netns/index.ts";
import { H1, H2, sh, type Cleanup } from "./support.ts";

/** The demo's namespaces and the interface the chain is attached to. */
export interface Topology {
  h1: string;
  node: string;
  h2: string;
  /** The node's interface facing h1: the chain's interface pattern `sl-node*` matches it. */
  chainIf: string;
}

/** Creates the three namespaces, the two veth pairs, addresses and routes. */
export async function createTopology(id: string, undo: Cleanup): Promise<Topology> {
  const t: Topology = { h1: `${id}-h1`, node: `${id}-node`, h2: `${id}-h2`, chainIf: "sl-node0" };
  for (const ns of [t.h1, t.node, t.h2]) {
    await sh("ip", ["netns", "add", ns]);
    undo.add(`namespace ${ns}`, () => sh("ip", ["netns", "del", ns]).then(() => undefined));
    // No IPv6 chatter (router solicitations, neighbour discovery) in the counters.
    withNetns(ns, () => {
      for (const conf of ["all", "default"]) {
        const knob = `/proc/sys/net/ipv6/conf/${conf}/disable_ipv6`;
        if (existsSync(knob)) writeFileSync(knob, "1");
      }
    });
  }
  await sh("ip", [
    "link",
    "add",
    t.chainIf,
    "netns",
    t.node,
    "type",
    "veth",
    "peer",
    "name",
    "eth0",
    "netns",
    t.h1,
  ]);
  await sh("ip", [
    "link",
    "add",
    "sl-h2",
    "netns",
    t.node,
    "type",
    "veth",
    "peer",
    "name",
    "eth0",
    "netns",
    t.h2,
  ]);
  const batch = (ns: string, lines: string[]) => sh("ip", ["-n", ns, "-batch", "-"], lines.join("\n") + "\n");
  await batch(t.h1, [
    "link set lo up",
    `addr add ${H1.ip}/24 dev eth0`,
    "link set eth0 up",
    `route add default via ${H1.gw}`,
  ]);
  await batch(t.h2, [
    "link set lo up",
    `addr add ${H2.ip}/24 dev eth0`,
    "link set eth0 up",
    `route add default via ${H2.gw}`,
  ]);
  await batch(t.node, [
    "link set lo up",
    `addr add ${H1.gw}/24 dev ${t.chainIf}`,
    `link set ${t.chainIf} up`,
    `addr add ${H2.gw}/24 dev sl-h2`,
    "link set sl-h2 up",
  ]);
  withNetns(t.node, () => writeFileSync("/proc/sys/net/ipv4/ip_forward", "1"));
  return t;
}
