/**
 * Rollouts that are interrupted, end to end (same testbed as rollout.test.ts: a real apiserver,
 * three agent processes on three network-namespace nodes, an operator process, a Git repository):
 *
 * - agents SIGKILLed mid-rollout and started again converge, and no packet is lost;
 * - an operator SIGKILLed mid-rollout and started again resumes the rollout where it stood;
 * - a canary pauses after its node until the promote annotation names the revision, then the
 *   rollout goes on.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { PROMOTE_ANNOTATION } from "../../common/api/meta.ts";
import { createTestNamespace, kubectlOk } from "../cluster/harness.ts";
import {
  CHAIN,
  conditionOf,
  nodeState,
  rolloutRecord,
  settled,
  Testbed,
  type FlowResult,
  type NodeState,
  type RunningFlow,
} from "./harness.ts";

const namespace = createTestNamespace("e2e-recovery");
let bed: Testbed;
let failed = false;

beforeAll(async () => {
  // A node counts as updated 2 s after it reports Ready: the tests act between two nodes' turns
  // without racing the rollout, however late a loaded machine delivers the watch events.
  bed = await Testbed.start({ namespace, rollout: { minReadySeconds: 2 } });
  await bed.waitForRollout(undefined, 180_000);
});

afterEach((ctx) => {
  if (ctx.task.result?.state === "fail") failed = true;
});

afterAll(async () => {
  await bed?.stop({ keepLogs: failed });
});

const sleep = (ms: number) => new Promise((ok) => setTimeout(ok, ms));

let rate = 200_000;
/** Commits a new ratelimit rate (new programs on every node) and returns the revision it makes. */
async function commitNewRate(previous: string): Promise<string> {
  rate -= 1_000;
  (bed.functionSpec("ratelimit").parameters as Record<string, unknown>).rate = rate;
  const { sha } = await bed.commit(`ratelimit: ${rate} packets/s per source`);
  const revision = await bed.waitForPlan(sha);
  expect(revision).not.toBe(previous);
  return revision;
}

let minTtl = 2;
/**
 * Commits a new MIN_TTL for the custom ttl-guard: a compile-time define, so every node compiles
 * the NF anew (clang, a few hundred ms) before it switches. Returns the revision it makes.
 */
async function commitNewMinTtl(previous: string): Promise<string> {
  minTtl++;
  (bed.functionSpec("ttl-guard").parameters as Record<string, unknown>).MIN_TTL = minTtl;
  const { sha } = await bed.commit(`ttl-guard: drop packets with a TTL below ${minTtl}`);
  const revision = await bed.waitForPlan(sha);
  expect(revision).not.toBe(previous);
  return revision;
}

/** Where the node stands now, by its NodeChain. */
function stateOf(nodeIndex: number): NodeState {
  const nc = bed.nodeChains.get(`${CHAIN}.${bed.node(nodeIndex).name}`);
  if (!nc) throw new Error(`no NodeChain for ${bed.node(nodeIndex).name}`);
  return nodeState(nc);
}

async function withTraffic(during: (flows: RunningFlow[]) => Promise<void>): Promise<FlowResult[]> {
  const flows = await bed.startFlows();
  try {
    await during(flows);
  } catch (err) {
    for (const f of flows) f.abort();
    throw err;
  }
  return Promise.all(flows.map((f) => f.stop()));
}

function expectNoLoss(results: FlowResult[]): void {
  const summary = results
    .map((r) => `${r.node}: sent ${r.sent}, received ${r.received}, missing ${r.missingSample.join(",")}`)
    .join("\n");
  for (const r of results) {
    expect(r.sent, summary).toBeGreaterThan(0);
    expect(r.lost, summary).toBe(0);
  }
}

/** The rollout of `target` since event `from` moved one node at a time, every node in the end. */
function expectOneAtATime(from: number, target: string): void {
  // The history is whole: the watch never had to start over and skip changes.
  expect(bed.nodeChains.relists).toBe(0);
  const record = rolloutRecord(bed.nodeChains.events, from, target);
  expect(record.maxInTransition, JSON.stringify(record.worst)).toBeLessThanOrEqual(1);
  expect(record.steps.map((s) => s.node)).toEqual(bed.nodes.map((n) => n.name));
}

describe("agents killed mid-rollout", () => {
  it("converge when started again: the rollout waits for them, adopts what they pinned, and no packet is lost", async () => {
    const good = await bed.waitForRollout();
    const from = bed.nodeChains.events.length;
    const [, second, third] = bed.nodes;
    let target = "";
    let thirdKilledIn = "";
    let flows: RunningFlow[] = [];
    const results = await withTraffic(async (running) => {
      flows = running;
      target = await commitNewMinTtl(good);

      // 1. The second node's agent dies while the first node switches: when its turn comes,
      // nobody is there to take it. The rollout must wait for it, without moving the third node.
      await bed.nodeChains.waitFor("first node moved", () => stateOf(0).wanted === target, 30_000);
      expect((await bed.killAgent(second!)).signal).toBe("SIGKILL");
      await bed.nodeChains.waitFor("second node moved", () => stateOf(1).wanted === target, 60_000);
      await sleep(3_000);
      expect(settled(stateOf(1))).toBe(false);
      expect(stateOf(2).wanted).toBe(good);
      const waiting = bed.serviceChains.get(CHAIN)!;
      expect(conditionOf(waiting, "Progressing")?.status).toBe("True");
      expect(conditionOf(waiting, "Ready")?.status).toBe("False");
      await bed.startAgent(second!);
      await bed.nodeChains.waitFor(
        "second node live",
        () => settled(stateOf(1)) && stateOf(1).live === target,
        60_000,
      );

      // 2. The third node's agent dies while it works on the new revision: a random moment
      // within the first 100 ms after its NodeChain asks for it (it compiles, then switches).
      await bed.nodeChains.waitFor("third node moved", () => stateOf(2).wanted === target, 60_000);
      const movedAt = bed.nodeChains.events.length;
      const delay = Math.floor(Math.random() * 100);
      await sleep(delay);
      expect((await bed.killAgent(third!)).signal).toBe("SIGKILL");
      await sleep(1_000);
      // What the dead agent got to say about the new revision, for the record.
      const said = bed.nodeChains.events
        .slice(movedAt)
        .map((e) => nodeState(e.object))
        .filter((s) => s.node === third!.name && s.wanted === target && s.observedGeneration === s.generation)
        .map((s) => `${s.phase}${s.live === target ? " (live)" : ""}`);
      thirdKilledIn = `${delay} ms after its NodeChain asked for ${target}; it had reported: ${said.join(", ") || "nothing"}; its log ends with ${JSON.stringify(await third!.agent!.lastMessages(2))}`;
      await bed.startAgent(third!);
      await bed.waitForRollout(target, 120_000);
      await sleep(500);
    });
    console.log(`third agent killed ${thirdKilledIn}`);
    expectNoLoss(results);
    expectOneAtATime(from, target);

    for (const node of [second!, third!]) {
      // The new agent took the pinned chain over instead of building it anew...
      const log = await node.agent!.log();
      expect(log).toContain('"msg":"adopted pinned chain"');
      expect(log).not.toContain("removing adopted chain");
    }
    // ...so the state of the chain went on: flowmon counted every packet of every flow.
    for (const [i, flow] of flows.entries()) {
      expect(bed.flowmonRecord(flow)?.packets, flow.node).toBe(results[i]!.sent);
    }
  });
});

describe("the operator killed mid-rollout", () => {
  it("resumes the rollout where it stood once started again", async () => {
    const good = await bed.waitForRollout();
    const from = bed.nodeChains.events.length;
    let target = "";
    let secondWhileDown: NodeState | undefined;
    const results = await withTraffic(async () => {
      target = await commitNewRate(good);
      await bed.nodeChains.waitFor("second node moved", () => stateOf(1).wanted === target, 60_000);
      expect((await bed.operator!.kill("SIGKILL")).signal).toBe("SIGKILL");

      // Without the operator nobody moves the third node. (The second one cannot fetch the new
      // artifact from the operator either: its agent reports Pending and retries.)
      await sleep(3_000);
      secondWhileDown = stateOf(1);
      expect(stateOf(2).wanted).toBe(good);
      expect(settled(stateOf(2))).toBe(true);
      expect(secondWhileDown.phase).not.toBe("Failed");

      await bed.startOperator();
      await bed.waitForRollout(target, 120_000);
      await sleep(500);
    });
    console.log(`while the operator was down the second node said: ${JSON.stringify(secondWhileDown)}`);
    expectNoLoss(results);
    expectOneAtATime(from, target);
    // The rollout never halted: a node waiting for the operator is not a node that failed.
    const serviceChainFrom = bed.serviceChains.events.findIndex((e) => e.object.status?.revision === target);
    for (const e of bed.serviceChains.events.slice(serviceChainFrom)) {
      expect(e.object.status?.failedRevision ?? "", JSON.stringify(conditionOf(e.object, "Degraded"))).toBe(
        "",
      );
    }
    // One rollout resumed, not started over: each node was asked for the revision once.
    const asked = new Map<string, Set<number>>();
    for (const e of bed.nodeChains.events.slice(from)) {
      const s = nodeState(e.object);
      if (s.wanted !== target) continue;
      if (!asked.has(s.node)) asked.set(s.node, new Set());
      asked.get(s.node)!.add(s.generation);
    }
    for (const node of bed.nodes) expect(asked.get(node.name)?.size, node.name).toBe(1);
  });
});

describe("a canary with pause", () => {
  it("stops after the canary node until the promote annotation names the revision, then rolls out the rest", async () => {
    bed.chainSpec().rollout = { ...(bed.chainSpec().rollout as object), canary: { nodes: 1, pause: true } };
    // Turning the canary on rolls nothing (rollout settings are nothing a node runs); the next
    // commit that changes a function is the first to go through it.
    const good = await bed.commitRolloutSettings(
      "edge: canary on one node, then wait for a promotion",
      (rollout) => rollout?.canary?.pause === true,
    );

    const from = bed.nodeChains.events.length;
    let target = "";
    const [canary, ...rest] = bed.nodes.map((n) => n.name);
    const results = await withTraffic(async () => {
      target = await commitNewRate(good);
      const paused = await bed.serviceChains.waitFor(
        "paused after the canary",
        (all) => {
          const sc = all.get(CHAIN);
          return (
            sc?.status?.revision === target && conditionOf(sc, "Progressing")?.reason === "CanaryPaused" && sc
          );
        },
        60_000,
      );
      expect(conditionOf(paused, "Ready")?.status).toBe("False");
      expect(conditionOf(paused, "Ready")?.message).toContain(`${PROMOTE_ANNOTATION}=${target}`);
      expect(stateOf(0)).toMatchObject({ node: canary, wanted: target, live: target, phase: "Ready" });

      // Paused means paused.
      await sleep(3_000);
      for (const i of [1, 2]) expect(stateOf(i)).toMatchObject({ wanted: good, live: good, phase: "Ready" });
      const shown = await kubectlOk(["get", "servicechains", "-n", namespace]);
      expect(shown).toMatch(new RegExp(`^${CHAIN}\\s+False\\s+${target}\\s+1/3\\s`, "m"));

      await kubectlOk([
        "annotate",
        "servicechain",
        CHAIN,
        "-n",
        namespace,
        `${PROMOTE_ANNOTATION}=${target}`,
        "--overwrite",
      ]);
      await bed.waitForRollout(target, 120_000);
      await sleep(500);
    });
    expectNoLoss(results);
    expectOneAtATime(from, target);
    const record = rolloutRecord(bed.nodeChains.events, from, target);
    expect(record.steps[0]!.node).toBe(canary);
    for (const node of rest) expect(record.steps.find((s) => s.node === node)).toBeDefined();
    await kubectlOk([
      "wait",
      "--for=condition=Ready",
      `servicechain/${CHAIN}`,
      "-n",
      namespace,
      "--timeout=30s",
    ]);
  });
});
