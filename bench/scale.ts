/**
 * Rollouts at fleet scale against a real kube-apiserver + etcd:
 *
 *   npm run bench:scale -- [--nodes 1000] [--workers N] [--switch-ms 50] [--json]
 *                          [--profile-operator DIR]   (a V8 CPU profile of the operator)
 *
 * Brings up a fleet (test/support/fleet/fleet.ts): N Nodes kept alive by kwok, N simulated
 * agents (the real agent code on a recording, simulated data plane that takes `--switch-ms` per
 * switch) in a few worker processes, one real `sluice operator` with leader election. Then:
 *
 * - rollout_s: a commit that changes the NF, maxUnavailable 10%: from the commit applied until
 *   every NodeChain reports the new revision Ready;
 * - rollout_s_100: the same with maxUnavailable 100% (set by a commit of its own, which rolls
 *   nothing);
 * - halt_s: maxUnavailable 10% again, a new revision that fails on one node a quarter into the
 *   rollout order; from the commit applied until every node is back on the last good revision;
 * - operator_rss_mb: the operator's peak resident memory (VmHWM) over the run;
 * - agent_rss_mb: one real `sluice agent` process on one more Node, after it settled;
 * - api_writes_per_node: mutating requests of the operator and of the agents during the rollout
 *   (the API server's apiserver_request_total), per node;
 * - apiserver_p99_ms: 99th percentile (histogram bucket bound) of mutating requests during the
 *   rollout, from apiserver_request_duration_seconds;
 * - max_unavailable: the most nodes unavailable at once during the 10% rollout (NodeChain watch),
 *   and the most switches in progress at once (the recorders' timestamps).
 *
 * Needs root (the operator runs as the chart's user), the test binaries (kwok included) and a
 * current dist/ (`npm run build`).
 */
import { parseArgs } from "node:util";
import { Fleet, maxConcurrentSwitches, type ApiWindow } from "../test/support/fleet/fleet.ts";

const { values } = parseArgs({
  options: {
    nodes: { type: "string", default: "1000" },
    workers: { type: "string" },
    "switch-ms": { type: "string", default: "50" },
    json: { type: "boolean", default: false },
    "profile-operator": { type: "string" },
  },
});
const nodes = Number(values.nodes);
const switchMs = Number(values["switch-ms"]);
const say = (line: string) => process.stderr.write(`scale: ${line}\n`);
/** How long one rollout may take before the run fails: 10 min, more for a fleet past 5,000 nodes. */
const rolloutTimeoutMs = Math.max(600_000, nodes * 120);

async function rollout(
  fleet: Fleet,
  change: () => Promise<number>,
): Promise<{ seconds: number; window: ApiWindow; revision: string; maxUnavailable: number }> {
  const before = fleet.currentRevision();
  const metricsBefore = await fleet.scrapeApiServer();
  fleet.armUnavailabilityTrace();
  const appliedAt = await change();
  const revision = await fleet.nextRevision(before);
  const doneAt = await fleet.untilAllLive(revision, rolloutTimeoutMs);
  const trace = fleet.takeUnavailabilityTrace();
  const window = fleet.apiWindow(metricsBefore, await fleet.scrapeApiServer());
  return { seconds: (doneAt - appliedAt) / 1000, window, revision, maxUnavailable: trace.max };
}

async function main(): Promise<void> {
  const fleet = await Fleet.start({
    nodes,
    switchMs,
    maxUnavailable: "10%",
    ...(values.workers ? { workers: Number(values.workers) } : {}),
    ...(values["profile-operator"] ? { operatorProfileDir: values["profile-operator"] } : {}),
    say,
  });
  try {
    const startedAt = Date.now();
    const ten = await rollout(fleet, () => fleet.commitFunctionChange());
    say(`rollout at 10%: ${ten.seconds} s, max ${ten.maxUnavailable} unavailable`);
    const switchesTen = (await fleet.history()).switches.filter((s) => s.start >= startedAt);

    await fleet.commitRollout("100%");
    const all = await rollout(fleet, () => fleet.commitFunctionChange());
    say(`rollout at 100%: ${all.seconds} s`);

    await fleet.commitRollout("10%");
    const good = fleet.currentRevision()!;
    const failing = fleet.nodeNames[Math.floor(nodes / 4)]!;
    await fleet.failOn([failing]);
    const haltBefore = await fleet.scrapeApiServer();
    const appliedAt = await fleet.commitFunctionChange();
    await fleet.nextRevision(good);
    await new Promise((ok) => setTimeout(ok, 500));
    const backAt = await fleet.untilAllLive(good, rolloutTimeoutMs);
    const haltWindow = fleet.apiWindow(haltBefore, await fleet.scrapeApiServer());
    const halt = (backAt - appliedAt) / 1000;
    const status = await fleet.chainStatus();
    say(`halt and rollback: ${halt} s (failedRevision ${status.failedRevision})`);

    const agent = await fleet.realAgentRssMb();
    const figures = {
      nodes,
      switch_ms: switchMs,
      rollout_s: ten.seconds,
      rollout_s_100: all.seconds,
      halt_s: halt,
      operator_rss_mb: fleet.operatorPeakRssMb(),
      agent_rss_mb: agent.rssMb,
      api_writes_per_node: round((ten.window.operatorWrites + ten.window.agentWrites) / nodes),
      api_writes_per_node_operator: round(ten.window.operatorWrites / nodes),
      api_writes_per_node_agents: round(ten.window.agentWrites / nodes),
      api_writes_per_node_100: round((all.window.operatorWrites + all.window.agentWrites) / nodes),
      api_writes_per_node_halt: round((haltWindow.operatorWrites + haltWindow.agentWrites) / nodes),
      apiserver_p99_ms: ten.window.p99Ms,
      apiserver_p99_ms_100: all.window.p99Ms,
      max_unavailable: ten.maxUnavailable,
      max_unavailable_allowed: Math.max(1, Math.floor(nodes / 10)),
      max_concurrent_switches: maxConcurrentSwitches(switchesTen),
      writes_by_resource: ten.window.writes,
    };
    if (values.json) process.stdout.write(`${JSON.stringify(figures, null, 2)}\n`);
    else for (const [k, v] of Object.entries(figures)) process.stdout.write(`${k}: ${JSON.stringify(v)}\n`);
  } finally {
    await fleet.stop();
  }
}

const round = (n: number) => Math.round(n * 100) / 100;

await main();
