import { describe, expect, it } from "vitest";
import { escapeLabelValue, formatMetrics, formatValue, LabeledCounter, MetricNameError } from "./metrics.ts";

describe("Prometheus text format", () => {
  it("writes HELP and TYPE lines, then one line per sample", () => {
    const text = formatMetrics([
      {
        name: "sluice_nf_packets_total",
        help: "Packets that reached the NF.",
        type: "counter",
        samples: [
          { labels: { chain: "default_edge", nf: "firewall" }, value: 1003n },
          { labels: { chain: "default_edge", nf: "flowmon" }, value: 1000n },
        ],
      },
      { name: "sluice_leader", help: "1 while this replica leads.", type: "gauge", samples: [{ value: 1 }] },
    ]);
    expect(text).toBe(
      [
        "# HELP sluice_nf_packets_total Packets that reached the NF.",
        "# TYPE sluice_nf_packets_total counter",
        'sluice_nf_packets_total{chain="default_edge",nf="firewall"} 1003',
        'sluice_nf_packets_total{chain="default_edge",nf="flowmon"} 1000',
        "# HELP sluice_leader 1 while this replica leads.",
        "# TYPE sluice_leader gauge",
        "sluice_leader 1",
        "",
      ].join("\n"),
    );
  });

  it("escapes backslash, quote and line feed in label values, and backslash and line feed in HELP", () => {
    expect(escapeLabelValue('a\\b"c\nd')).toBe('a\\\\b\\"c\\nd');
    const text = formatMetrics([
      {
        name: "x_total",
        help: 'one\\two\nthree "quoted"',
        type: "counter",
        samples: [{ labels: { reason: 'bad "spec"\n' }, value: 2 }],
      },
    ]);
    expect(text).toContain('# HELP x_total one\\\\two\\nthree "quoted"\n');
    expect(text).toContain('x_total{reason="bad \\"spec\\"\\n"} 2\n');
  });

  it("spells special values and keeps bigints exact", () => {
    expect(formatValue(NaN)).toBe("NaN");
    expect(formatValue(Infinity)).toBe("+Inf");
    expect(formatValue(-Infinity)).toBe("-Inf");
    expect(formatValue(0.25)).toBe("0.25");
    expect(formatValue(2n ** 64n - 1n)).toBe("18446744073709551615");
  });

  it("writes summary suffixes and an empty family as HELP/TYPE only", () => {
    const sum = new LabeledCounter();
    const count = new LabeledCounter();
    sum.inc({ controller: "gitsource" }, 0.5);
    sum.inc({ controller: "gitsource" }, 0.25);
    count.inc({ controller: "gitsource" });
    count.inc({ controller: "gitsource" });
    const text = formatMetrics([
      {
        name: "sluice_reconcile_duration_seconds",
        help: "Reconcile time.",
        type: "summary",
        samples: [...sum.samples("_sum"), ...count.samples("_count")],
      },
      { name: "empty_total", help: "Nothing yet.", type: "counter", samples: [] },
    ]);
    expect(text).toContain('sluice_reconcile_duration_seconds_sum{controller="gitsource"} 0.75\n');
    expect(text).toContain('sluice_reconcile_duration_seconds_count{controller="gitsource"} 2\n');
    expect(text.endsWith("# TYPE empty_total counter\n")).toBe(true);
  });

  it("counts per label set regardless of label order", () => {
    const c = new LabeledCounter();
    c.inc({ a: "1", b: "2" });
    c.inc({ b: "2", a: "1" }, 3);
    c.inc({ a: "x", b: "2" });
    expect(c.get({ b: "2", a: "1" })).toBe(4);
    expect(c.get({ a: "none" })).toBe(0);
    expect(c.samples()).toHaveLength(2);
  });

  it("refuses names the format does not allow", () => {
    expect(() => formatMetrics([{ name: "bad-name", help: "", type: "gauge", samples: [] }])).toThrow(
      MetricNameError,
    );
    expect(() =>
      formatMetrics([
        { name: "ok", help: "", type: "gauge", samples: [{ labels: { "1x": "v" }, value: 1 }] },
      ]),
    ).toThrow(MetricNameError);
  });
});
