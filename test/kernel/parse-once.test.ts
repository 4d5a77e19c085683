/**
 * A linked chain parses a packet once: the first NF that parses leaves the result for the NFs
 * after it. What a user must never see is an NF deciding on another packet's headers: here the
 * first NF (noop) does not parse, so the firewall after it parses every packet and leaves the
 * result for flowmon; packets the firewall drops and packets it passes alternate, so a result
 * left by a dropped packet and taken by the next one would drop an allowed packet, pass a denied
 * one or count a flow that never got through.
 *
 * The chain sits on the receiving veth end (namespace B); both ends know each other's MAC, so no
 * ARP crosses the chain and counts are exact. The manager runs as the chart runs the agent.
 */
import { describe, expect, test } from "vitest";
import { decodeFlowEntry } from "../../node-agent/src/nf/index.ts";
import { createChainTestbed, useBuiltinObjects } from "./chain-testbed.ts";
import { builtinChain } from "./fixtures/chains.ts";
import { startUdpFlow } from "./traffic.ts";

const objects = useBuiltinObjects();

const DENIED_PORT = 9009;
const ALLOWED_PORT = 9007;

describe("parse once per linked chain", () => {
  test.each(["xdp", "tc-ingress"] as const)(
    "on %s, every NF decides on its own packet: denied and allowed packets alternate, none is mistaken for the other",
    async (hook) => {
      const { net, manager } = await createChainTestbed(objects);
      const a = net.a.ip;
      const b = net.b.ip;
      const spec = (revision: string) =>
        builtinChain(objects, {
          name: "once",
          revision,
          hook,
          interfaces: [net.b.ifname],
          functions: [
            { builtin: "noop" },
            {
              builtin: "firewall",
              tables: {
                rules: [
                  { action: "deny", protocol: "udp", dport: DENIED_PORT },
                  ...(revision === "r2" ? [{ action: "deny", protocol: "tcp", dport: 1 }] : []),
                ],
              },
              // Run on the firewall alone (entered at its own program, after the chain's vectors):
              // no result of an earlier packet may be taken there either.
              tests: [
                {
                  name: "denied, alone",
                  packet: { ipv4: { src: a, dst: b }, udp: { sport: 7, dport: DENIED_PORT } },
                  count: 3,
                  expect: { verdict: "drop", dropped: 3 },
                },
                {
                  name: "allowed, alone",
                  packet: { ipv4: { src: a, dst: b }, udp: { sport: 7, dport: ALLOWED_PORT } },
                  count: 3,
                  expect: { verdict: "pass", passed: 3 },
                },
              ],
            },
            { builtin: "flowmon" },
          ],
          tests: [
            {
              name: "a denied packet",
              packet: { ipv4: { src: a, dst: b }, udp: { sport: 5, dport: DENIED_PORT } },
              expect: { verdict: "drop", counters: { firewall: { drops: 1 }, flowmon: { packets: 0 } } },
            },
            {
              name: "an allowed one",
              packet: { ipv4: { src: a, dst: b }, udp: { sport: 5, dport: ALLOWED_PORT } },
              expect: { verdict: "pass", counters: { firewall: { drops: 0 }, flowmon: { passes: 1 } } },
            },
            {
              name: "a denied one again",
              packet: { ipv4: { src: a, dst: b }, udp: { sport: 6, dport: DENIED_PORT } },
              expect: { verdict: "drop", counters: { firewall: { drops: 1 }, flowmon: { packets: 0 } } },
            },
          ],
        });
      // The second self-test (a new rule) runs the firewall's vectors alone on an instance whose
      // last packet was a chain vector's.
      for (const revision of ["r1", "r2"]) {
        const result = await manager.apply(spec(revision));
        expect(result.selfTest).toMatchObject({ passed: 5, failed: 0 });
      }

      const flow = (port: number) =>
        startUdpFlow({
          from: { ns: net.a.ns.name, ip: a },
          to: { ns: net.b.ns.name, ip: b },
          count: 3000,
          rate: 15_000,
          port,
        });
      const [denied, allowed] = await Promise.all([flow(DENIED_PORT), flow(ALLOWED_PORT)]);
      const [deniedResult, allowedResult] = await Promise.all([denied.done(), allowed.done()]);

      expect(allowedResult).toMatchObject({ sent: 3000, received: 3000, lost: 0 });
      expect(deniedResult).toMatchObject({ sent: 3000, received: 0 });
      const flows = (await manager.readTable("once", "flowmon", "flowmon_flows")).map(({ key, value }) =>
        decodeFlowEntry(key, value),
      );
      expect(flows).toHaveLength(1);
      expect(flows[0]).toMatchObject({ src: a, dst: b, proto: 17, dport: ALLOWED_PORT, packets: 3000 });
      const counters = Object.fromEntries(
        (await manager.status("once"))!.nfs.map((nf) => [nf.name, nf.counters]),
      );
      expect(counters.firewall).toMatchObject({ packets: 6000n, drops: 3000n, passes: 3000n });
      expect(counters.flowmon).toMatchObject({ packets: 3000n, passes: 3000n });
    },
  );
});
