/**
 * The node agent's metrics endpoint on the running kernel: a scrape reads the same per-NF
 * counters as the chain manager's status, after real traffic crossed the chain. The manager
 * runs as the chart runs the agent (see chart-manager.ts); the endpoint serves what its
 * status reported last.
 */
import { readFileSync, writeFileSync } from "node:fs";
import { expect, test } from "vitest";
import { METRICS_CONTENT_TYPE } from "../../common/metrics.ts";
import { BpfStatsSession } from "../../node-agent/src/agent/kstats.ts";
import { AgentCounters, startMetricsServer } from "../../node-agent/src/agent/metrics.ts";
import { checkScrape } from "../support/scrape.ts";
import { CHART_AGENT_CAP_MASK } from "../support/sluice.ts";
import type { ChainStatus } from "../../node-agent/src/chain/index.ts";
import { createChainTestbed, useBuiltinObjects } from "./chain-testbed.ts";
import { builtinChain } from "./fixtures/chains.ts";
import { testScope } from "./harness.ts";
import { ping, udpFlow } from "./traffic.ts";

const STATS_SYSCTL = "/proc/sys/kernel/bpf_stats_enabled";
const objects = useBuiltinObjects();

/** The value of the one sample line `name{labels}`; fails when it is missing. */
function sample(text: string, series: string): string {
  const line = text.split("\n").find((l) => l.startsWith(`${series} `));
  expect(line, `${series} in the scrape`).toBeDefined();
  return line!.slice(series.length + 1);
}

test("a scrape reports per-NF packets, drops and passes, and the live revision", async () => {
  const { scope, net, bpffs, manager } = await createChainTestbed(objects);
  let chains: ChainStatus[] = [];
  const counters = new AgentCounters();
  // The scraper is root here: it may turn BPF statistics on (the chart's agent may not).
  const stats = new BpfStatsSession();
  scope.defer(() => stats.close());
  const metrics = await startMetricsServer({
    port: 0,
    list: () => chains,
    counters,
    kernel: { root: bpffs.path, stats },
  });
  scope.defer(() => metrics.close());

  await manager.apply(
    builtinChain(objects, {
      name: "edge",
      revision: "r1",
      hook: "xdp",
      interfaces: [net.b.ifname],
      functions: [
        { builtin: "firewall", tables: { rules: [{ action: "deny", protocol: "icmp" }] } },
        { builtin: "flowmon" },
      ],
    }),
  );
  counters.record({ ok: true });
  counters.record({ ok: false, reason: "VerifierRejected" });

  // A first scrape turns statistics on; run time is counted from then on.
  chains = await manager.list();
  await (await fetch(`http://127.0.0.1:${metrics.port}/metrics`)).text();
  expect(stats.holding || readFileSync(STATS_SYSCTL, "utf8").trim() === "1").toBe(true);

  const pings = await ping(net.a.ns, net.b.ip, 3, { timeoutMs: 150, intervalMs: 5 });
  const flow = await udpFlow({
    from: { ns: net.a.ns.name, ip: net.a.ip },
    to: { ns: net.b.ns.name, ip: net.b.ip },
    count: 200,
    rate: 20_000,
  });
  expect(pings.received).toBe(0);
  expect(flow).toMatchObject({ sent: 200, received: 200 });

  chains = await manager.list();
  const res = await fetch(`http://127.0.0.1:${metrics.port}/metrics`);
  expect(res.status).toBe(200);
  expect(res.headers.get("content-type")).toBe(METRICS_CONTENT_TYPE);
  const text = await res.text();

  expect(sample(text, 'sluice_nf_packets_total{chain="edge",nf="firewall"}')).toBe("203");
  expect(sample(text, 'sluice_nf_verdicts_total{chain="edge",nf="firewall",verdict="drop"}')).toBe("3");
  expect(sample(text, 'sluice_nf_verdicts_total{chain="edge",nf="firewall",verdict="pass"}')).toBe("200");
  expect(sample(text, 'sluice_nf_packets_total{chain="edge",nf="flowmon"}')).toBe("200");
  expect(sample(text, 'sluice_nf_verdicts_total{chain="edge",nf="flowmon",verdict="pass"}')).toBe("200");
  expect(sample(text, 'sluice_nf_verdicts_total{chain="edge",nf="flowmon",verdict="error"}')).toBe("0");
  // The bytes of every frame that reached flowmon: at least the 200 UDP payloads with headers.
  expect(Number(sample(text, 'sluice_nf_bytes_total{chain="edge",nf="flowmon"}'))).toBeGreaterThanOrEqual(
    200 * (14 + 20 + 8 + 64),
  );
  expect(sample(text, 'sluice_chain_info{chain="edge",revision="r1",hook="xdp"}')).toBe("1");
  expect(sample(text, 'sluice_chain_root_misses_total{chain="edge"}')).toBe("0");
  expect(sample(text, "sluice_agent_switches_total")).toBe("1");
  expect(sample(text, 'sluice_agent_switch_failures_total{reason="VerifierRejected"}')).toBe("1");
  expect(text).toContain("# TYPE sluice_nf_packets_total counter\n");

  // Kernel figures: every packet ran the chain; its time includes the tail-called functions.
  const scraped = checkScrape(text);
  expect(scraped.problems).toEqual([]);
  expect(scraped.value("sluice_bpf_stats_enabled", { reason: stats.holding ? "fd" : "sysctl" })).toBe(1);
  expect(scraped.value("sluice_chain_runs_total", { chain: "edge" })).toBeGreaterThanOrEqual(203);
  expect(scraped.value("sluice_chain_run_time_seconds_total", { chain: "edge" })).toBeGreaterThan(0);
  // flowmon's flow table holds the UDP flow (one direction reached the chain) and says its capacity.
  const flows = scraped.family("sluice_map_entries")?.metrics.find((m) => m.labels?.nf === "flowmon");
  expect(Number(flows?.value)).toBeGreaterThanOrEqual(1);
  expect(
    scraped.value("sluice_map_max_entries", { chain: "edge", nf: "flowmon", map: flows!.labels!.map! }),
  ).toBeGreaterThan(1);
  expect(scraped.seriesCount).toBeLessThan(500);

  expect((await fetch(`http://127.0.0.1:${metrics.port}/other`)).status).toBe(404);
});

test("BPF statistics stay on while they are read and are let go after an idle period", async () => {
  if (readFileSync(STATS_SYSCTL, "utf8").trim() === "1")
    throw new Error("kernel.bpf_stats_enabled is 1 on this host: the session's own hold cannot be observed");
  const stats = new BpfStatsSession(300);
  try {
    expect(stats.want()).toEqual({ counting: true, by: "fd" });
    expect(stats.holding).toBe(true);
    await new Promise((r) => setTimeout(r, 150));
    // Read again within the idle period: still held.
    expect(stats.want()).toEqual({ counting: true, by: "fd" });
    await new Promise((r) => setTimeout(r, 1_000));
    expect(stats.holding).toBe(false);
    // Wanted again: held again.
    expect(stats.want()).toEqual({ counting: true, by: "fd" });
  } finally {
    stats.close();
  }
  expect(stats.holding).toBe(false);
});

test("an agent with the chart's capabilities reports run time when the node's kernel.bpf_stats_enabled is 1, and says how to get it when 0", async () => {
  const scope = testScope();
  // The sysctl is the host's: set by this test (as the node's administrator), then put back.
  const before = readFileSync(STATS_SYSCTL, "utf8").trim();
  scope.defer(() => writeFileSync(STATS_SYSCTL, before));
  const { net, manager: agent } = await createChainTestbed(objects, { scope });
  await agent.apply(
    builtinChain(objects, {
      name: "edge",
      revision: "r1",
      hook: "xdp",
      interfaces: [net.b.ifname],
      functions: [{ builtin: "flowmon" }],
    }),
  );
  const traffic = async () =>
    expect(
      await udpFlow({
        from: { ns: net.a.ns.name, ip: net.a.ip },
        to: { ns: net.b.ns.name, ip: net.b.ip },
        count: 100,
        rate: 20_000,
      }),
    ).toMatchObject({ sent: 100, received: 100 });

  // Sysctl 0: BPF_ENABLE_STATS is refused (no CAP_SYS_ADMIN), the figure is absent and the
  // reason names both ways to count run time.
  writeFileSync(STATS_SYSCTL, "0");
  await traffic();
  const off = checkScrape(await agent.scrape());
  expect(off.problems).toEqual([]);
  const enabled = off.family("sluice_bpf_stats_enabled")?.metrics ?? [];
  expect(enabled).toHaveLength(1);
  expect(Number(enabled[0]!.value)).toBe(0);
  expect(enabled[0]!.labels?.reason).toMatch(/^BPF_ENABLE_STATS needs CAP_SYS_ADMIN/);
  expect(enabled[0]!.labels?.reason).toContain("give the agent CAP_SYS_ADMIN");
  expect(enabled[0]!.labels?.reason).toContain("kernel.bpf_stats_enabled=1");
  expect(off.value("sluice_chain_run_time_seconds_total", { chain: "edge" })).toBeUndefined();
  expect(off.value("sluice_chain_runs_total", { chain: "edge" })).toBeUndefined();
  // The rest of the scrape is there: packets were counted.
  expect(off.value("sluice_nf_packets_total", { chain: "edge", nf: "flowmon" })).toBeGreaterThanOrEqual(100);

  // Sysctl 1: the same agent process counts from the kernel's own statistics, and says so.
  writeFileSync(STATS_SYSCTL, "1");
  await traffic();
  // One scrape is read once per 250 ms: this one reads anew.
  await new Promise((r) => setTimeout(r, 300));
  const on = checkScrape(await agent.scrape());
  expect(on.problems).toEqual([]);
  expect(on.family("sluice_bpf_stats_enabled")?.metrics).toHaveLength(1);
  expect(on.value("sluice_bpf_stats_enabled", { reason: "sysctl" })).toBe(1);
  expect(on.value("sluice_chain_runs_total", { chain: "edge" })).toBeGreaterThanOrEqual(100);
  expect(on.value("sluice_chain_run_time_seconds_total", { chain: "edge" })).toBeGreaterThan(0);
  // All of it read by a process with exactly the chart's capabilities.
  expect(agent.threadCaps().every((caps) => caps === CHART_AGENT_CAP_MASK)).toBe(true);
});
