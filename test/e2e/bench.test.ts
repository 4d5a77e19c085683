/**
 * The end-to-end figure: from a commit (pushed, then announced by a signed push webhook as a Git
 * host would) to the new revision switched in and reported Ready on all three nodes, on the same
 * testbed as rollout.test.ts. Each commit changes the ratelimit rate: new programs on every node,
 * each verified, self-tested and switched in. Measured one node at a time (maxUnavailable 1) and
 * all nodes at once (maxUnavailable 100%); the p50 of each is printed.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { createTestNamespace } from "../cluster/harness.ts";
import { median, nodeState, settled, Testbed } from "./harness.ts";

const namespace = createTestNamespace("e2e-bench");
let bed: Testbed;
let failed = false;
const COMMITS = 5;

beforeAll(async () => {
  bed = await Testbed.start({ namespace });
  await bed.waitForRollout(undefined, 180_000);
});

afterEach((ctx) => {
  if (ctx.task.result?.state === "fail") failed = true;
});

afterAll(async () => {
  await bed?.stop({ keepLogs: failed });
});

/** Milliseconds from the push to each stage of one commit's way to the nodes. */
interface Sample {
  /** The GitSource applied the commit (webhook, fetch, artifact, apply). */
  applied: number;
  /** The first NodeChain asked for the new revision. */
  firstMoved: number;
  /** Every node reported the new revision live and Ready. */
  allSwitched: number;
}

let rate = 200_000;

async function measureCommit(): Promise<Sample> {
  const previous = await bed.waitForRollout();
  const gitFrom = bed.gitSources.events.length;
  const from = bed.nodeChains.events.length;
  rate -= 1_000;
  (bed.functionSpec("ratelimit").parameters as Record<string, unknown>).rate = rate;
  const { sha, pushedAt } = await bed.commit(`ratelimit: ${rate}`);
  const target = await bed.waitForPlan(sha);
  expect(target).not.toBe(previous);
  await bed.waitForRollout(target, 120_000);

  const appliedAt = bed.gitSources.events
    .slice(gitFrom)
    .find((e) => e.object.status?.lastAppliedRevision === `main@sha1:${sha}`)!.t;
  const events = bed.nodeChains.events.slice(from);
  const firstMoved = events.find((e) => e.object.spec.revision === target)!.t;
  const switchedAt = new Map<string, number>();
  for (const e of events) {
    const s = nodeState(e.object);
    if (s.wanted === target && settled(s) && !switchedAt.has(s.node)) switchedAt.set(s.node, e.t);
  }
  expect([...switchedAt.keys()].sort()).toEqual(bed.nodes.map((n) => n.name));
  return {
    applied: appliedAt - pushedAt,
    firstMoved: firstMoved - pushedAt,
    allSwitched: Math.max(...switchedAt.values()) - pushedAt,
  };
}

describe("commit -> all three nodes switched", () => {
  for (const maxUnavailable of [1, "100%"] as const) {
    it(`through the push webhook, maxUnavailable ${maxUnavailable}: p50 over ${COMMITS} commits`, async () => {
      bed.chainSpec().rollout = { ...(bed.chainSpec().rollout as object), maxUnavailable };
      // A rollout-settings commit moves no node; the measured commits below change the rate.
      await bed.commitRolloutSettings(
        `edge: maxUnavailable ${maxUnavailable}`,
        (rollout) => rollout?.maxUnavailable === maxUnavailable,
      );

      const samples: Sample[] = [];
      for (let i = 0; i < COMMITS; i++) samples.push(await measureCommit());
      const p50 = (key: keyof Sample) => Math.round(median(samples.map((s) => s[key])));
      const all = samples.map((s) => Math.round(s.allSwitched));
      console.log(
        `commit -> all 3 nodes switched (maxUnavailable ${maxUnavailable}), p50 over ${COMMITS} commits: ` +
          `${p50("allSwitched")} ms (min ${Math.min(...all)}, max ${Math.max(...all)}; samples ${all.join(", ")}); ` +
          `stages p50: applied ${p50("applied")} ms, first node asked ${p50("firstMoved")} ms`,
      );
      // Generous: a loaded 2-core machine. The figure is the printed p50, not this bound.
      expect(p50("allSwitched")).toBeLessThan(30_000);
    });
  }
});
