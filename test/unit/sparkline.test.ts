import { describe, expect, it } from "vitest";
import { formatStatus } from "../../bin/format.ts";
import type { SingleHostStatus } from "../../bin/run.ts";
import { RateHistory, SPARK_SECONDS, sparkline } from "../../bin/sparkline.ts";

const doc = (packetsPerSecond: number, dropsPerSecond: number): SingleHostStatus => ({
  node: "n1",
  phase: "Running",
  source: { name: "edge", url: "file:///repo", revision: "main@sha1:" + "a".repeat(40), ready: "True" },
  serviceChains: [],
  chains: [
    {
      name: "default_edge",
      revision: "r1",
      hook: "xdp",
      interfaces: [{ name: "eth0", xdpMode: "native" }],
      ready: "True",
      nfs: [
        {
          name: "firewall",
          packets: "10",
          bytes: "600",
          drops: "1",
          passes: "9",
          errors: "0",
          packetsPerSecond,
          dropsPerSecond,
        },
      ],
    },
  ],
  time: new Date().toISOString(),
});

describe("sluice status --watch sparklines", () => {
  it("scale bars to the largest value and pad the start", () => {
    expect(sparkline([0, 50, 100], 5)).toBe("  ▁▅█");
    expect(sparkline([0, 0, 0], 3)).toBe("▁▁▁");
    expect(sparkline([undefined, 7], 2)).toBe(" █");
    expect(sparkline(Array.from({ length: 100 }, (_, i) => i))).toHaveLength(SPARK_SECONDS);
  });

  it("start from the live view's history and follow each reading", () => {
    const history = new RateHistory();
    history.seed(
      {
        title: "n1",
        chains: [],
        markers: [],
        problems: [],
        points: [0, 1, 2].map((t) => ({
          t,
          functions: { "n1/default_edge/firewall": [100, 0, 100, 0] },
          nsPerPacket: {},
        })),
      },
      "n1",
    );
    history.add(doc(100, 100));
    const lines = history.lines("default_edge", "firewall");
    expect(lines.packets.trimStart()).toBe("████");
    expect(lines.drops.trimStart()).toBe("▁▁▁█");
    const table = formatStatus(doc(100, 100), history);
    expect(table).toContain(`PKT/S LAST ${SPARK_SECONDS} S`);
    expect(table).toMatch(/firewall .*████ .*▁▁▁█$/m);
  });
});
