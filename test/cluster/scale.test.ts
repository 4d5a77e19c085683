/**
 * A hundred nodes on a real kube-apiserver + etcd of their own (so that the API server's metrics
 * count only this fleet): Nodes kept Ready by kwok, the real operator (`sluice operator`, leader
 * election, the chart's identity and user), and a hundred simulated agents — the real agent code
 * with node-bound tokens, on a recording, simulated data plane that takes 50 ms per switch and
 * fails on a chosen node. What a user of a fleet relies on:
 *
 * - only real changes roll: a commit of an unrelated file, or of rollout settings alone, writes
 *   no NodeChain and switches no node;
 * - a change rolls to every node with never more than maxUnavailable nodes unavailable at once
 *   (from the NodeChain watch, and from the switches the simulated data planes recorded);
 * - the rollout costs at most 3 API writes per node (operator and agents together);
 * - a node that fails the new revision halts the rollout, and autoRollback returns every node
 *   that moved to the last good revision; nodes after the halt never see the failed revision.
 *
 * The 1,000-node figures come from `npm run bench:scale` (bench/README.md).
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Fleet, maxConcurrentSwitches } from "../support/fleet/fleet.ts";

const NODES = 100;
/** maxUnavailable 10% of 100 nodes. */
const MAX_UNAVAILABLE = 10;
const WRITE_BUDGET_PER_NODE = 3;

let fleet: Fleet;

beforeAll(async () => {
  fleet = await Fleet.start({ nodes: NODES, switchMs: 50, maxUnavailable: "10%", workers: 2 });
}, 240_000);

afterAll(async () => {
  await fleet?.stop();
}, 60_000);

/** Time for the operator to react to a new artifact (a watch event away), were it to write. */
const settle = () => new Promise((ok) => setTimeout(ok, 3_000));

describe("a hundred simulated nodes on the real API server", () => {
  it("a commit of an unrelated file or of rollout settings alone writes no NodeChain and switches no node", async () => {
    const revision = fleet.currentRevision();
    expect(revision).toBeDefined();
    const switchesBefore = (await fleet.history()).switches.length;
    const before = await fleet.scrapeApiServer();
    await fleet.commitUnrelated("the fleet's edge routers");
    await fleet.commitRollout("20%");
    await settle();
    const window = fleet.apiWindow(before, await fleet.scrapeApiServer());
    expect(window.writes.nodechains ?? 0).toBe(0);
    expect(window.writes["nodechains/status"] ?? 0).toBe(0);
    expect((await fleet.history()).switches.length).toBe(switchesBefore);
    expect(fleet.currentRevision()).toBe(revision);
    // The settings commit was taken: the chain observed its new generation.
    const status = await fleet.chainStatus();
    expect(status.observedGeneration).toBe(status.generation);
    await fleet.commitRollout("10%");
  }, 120_000);

  it("a change rolls to every node, never more than maxUnavailable at once, within 3 API writes per node", async () => {
    const from = fleet.currentRevision();
    const startedAt = Date.now();
    const before = await fleet.scrapeApiServer();
    fleet.armUnavailabilityTrace();
    await fleet.commitFunctionChange();
    const revision = await fleet.nextRevision(from);
    await fleet.untilAllLive(revision, 90_000);
    const trace = fleet.takeUnavailabilityTrace();
    const window = fleet.apiWindow(before, await fleet.scrapeApiServer());

    expect(trace.max, `unavailable at once: ${trace.nodes.join(", ")}`).toBeLessThanOrEqual(MAX_UNAVAILABLE);
    const switches = (await fleet.history()).switches.filter((s) => s.start >= startedAt);
    expect(maxConcurrentSwitches(switches)).toBeLessThanOrEqual(MAX_UNAVAILABLE);
    // Every node switched once, to the new revision.
    expect(
      switches
        .filter((s) => s.revision === revision && s.ok)
        .map((s) => s.node)
        .sort(),
    ).toEqual([...fleet.nodeNames].sort());
    const perNode = (window.operatorWrites + window.agentWrites) / NODES;
    expect(perNode, JSON.stringify(window.writes)).toBeLessThanOrEqual(WRITE_BUDGET_PER_NODE);
  }, 120_000);

  it("a node failing the new revision halts the rollout and autoRollback returns every moved node to the last good one", async () => {
    const good = fleet.currentRevision()!;
    const failing = fleet.nodeNames[25]!;
    await fleet.failOn([failing]);
    const startedAt = Date.now();
    await fleet.commitFunctionChange();
    const bad = await fleet.nextRevision(good);
    await fleet.untilAllLive(good, 90_000);
    const status = await fleet.chainStatus();
    expect(status.failedRevision).toBe(bad);
    expect(status.lastGoodRevision).toBe(good);

    const switches = (await fleet.history()).switches.filter((s) => s.start >= startedAt);
    expect(switches.find((s) => s.node === failing && s.revision === bad)?.ok).toBe(false);
    const moved = new Set(switches.filter((s) => s.revision === bad && s.ok).map((s) => s.node));
    expect(moved.size).toBeGreaterThan(0);
    // Every node that ran the failed revision switched back to the good one after it.
    for (const node of moved) {
      const last = switches.filter((s) => s.node === node).at(-1)!;
      expect(last, node).toMatchObject({ revision: good, ok: true });
    }
    // The rollout stopped: the nodes after the failed one in rollout (name) order never got it.
    const index = fleet.nodeNames.indexOf(failing);
    const late = fleet.nodeNames.slice(index + 2 * MAX_UNAVAILABLE);
    expect(late.filter((n) => moved.has(n))).toEqual([]);
  }, 120_000);
});
