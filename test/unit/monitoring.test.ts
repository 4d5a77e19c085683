/**
 * The chart's Grafana dashboard and alert rules query only metrics that sluice exports: a
 * renamed metric would otherwise leave an empty panel or an alert that can never fire.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { parse } from "yaml";
import { BpfStatsSession } from "../../node-agent/src/agent/kstats.ts";
import { AgentCounters, agentRegistry } from "../../node-agent/src/agent/metrics.ts";
import { OperatorMetrics } from "../../operator/src/metrics.ts";
import { repoRoot } from "../support/sluice.ts";

const files = join(repoRoot, "charts/sluice/files");

/** Names of every family the agent and the operator export (from their TYPE lines). */
async function exportedNames(): Promise<Set<string>> {
  const stats = new BpfStatsSession();
  try {
    const agent = agentRegistry({
      list: () => [],
      counters: new AgentCounters(),
      node: "n1",
      kernel: { root: "/nonexistent", stats },
    });
    const operator = new OperatorMetrics(() => true);
    operator.observeServiceChains(async () => []);
    const text = (await agent.metrics()) + (await operator.registry.metrics());
    return new Set([...text.matchAll(/^# TYPE (\S+) (\S+)$/gm)].map((m) => m[1]!));
  } finally {
    stats.close();
  }
}

/** `sluice_*` names in a PromQL expression, without a histogram's `_bucket`/`_sum`/`_count`. */
function metricsIn(expr: string): string[] {
  return [...expr.matchAll(/\bsluice_[a-z0-9_]+/g)].map((m) => m[0].replace(/_(bucket|sum|count)$/, ""));
}

describe("the chart's monitoring", () => {
  it("dashboard panels and annotations query exported metrics", async () => {
    const names = await exportedNames();
    const dashboard = JSON.parse(readFileSync(join(files, "grafana-dashboard.json"), "utf8")) as {
      panels: Array<{ title: string; targets: Array<{ expr: string }> }>;
      annotations: { list: Array<{ name: string; expr: string }> };
    };
    const exprs = [
      ...dashboard.panels.flatMap((p) => p.targets.map((t) => [p.title, t.expr] as const)),
      ...dashboard.annotations.list.map((a) => [a.name, a.expr] as const),
    ];
    expect(exprs.length).toBeGreaterThan(10);
    for (const [title, expr] of exprs) {
      expect(metricsIn(expr).length, `${title} queries a sluice metric`).toBeGreaterThan(0);
      for (const name of metricsIn(expr)) expect(names, `${title}: ${name}`).toContain(name);
    }
  });

  it("alerts cover missed tail calls, halted rollouts and silent agents, on exported metrics", async () => {
    const names = await exportedNames();
    // The file is rendered with Helm's tpl: put the default selector in as Helm would.
    const text = readFileSync(join(files, "prometheus-rules.yaml"), "utf8")
      .replace("{{ .Values.monitoring.prometheusRule.agentUpSelector }}", 'job="sluice-agent"')
      .replace(/\{\{`(.*?)`\}\}/g, "$1");
    const rules = (
      parse(text) as { groups: Array<{ rules: Array<{ alert: string; expr: string }> }> }
    ).groups.flatMap((g) => g.rules);
    expect(rules.map((r) => r.alert)).toEqual(
      expect.arrayContaining(["SluiceTailCallMisses", "SluiceRolloutHalted", "SluiceAgentNotReporting"]),
    );
    for (const rule of rules)
      for (const name of metricsIn(rule.expr)) expect(names, `${rule.alert}: ${name}`).toContain(name);
  });
});
