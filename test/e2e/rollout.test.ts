/**
 * GitOps rollouts end to end: a real kube-apiserver and etcd, three Node objects, three
 * `sluice agent` processes each owning a network namespace as its node (traffic flows through
 * `sl-node<i>`), one `sluice operator` process following a Git repository (a copy of
 * examples/gitops/network: firewall -> ratelimit -> ttl-guard (custom C from the repository) ->
 * flowmon, XDP on `sl-node*`).
 *
 * - the first revision reaches every node, and kubectl shows it;
 * - a commit rolls out one node at a time (maxUnavailable 1, read from the NodeChain history),
 *   losing no packet on any node and carrying flowmon's per-flow counters over;
 * - a commit whose custom NF the verifier rejects, or whose test vector fails on the node,
 *   stops at the first node: the rollout halts, the ServiceChain is Degraded naming the node and
 *   the reason, the node returns to the last good revision, and traffic never stops anywhere.
 *
 * Every process runs as the chart runs it (see harness.ts); the first test checks that it does.
 */
import { readFileSync, statSync } from "node:fs";
import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { createTestNamespace, kubectlOk } from "../cluster/harness.ts";
import { NODE_NAME_EXTRA, serviceAccountUser, whoAmI } from "../cluster/identities.ts";
import {
  CHART_AGENT_CAP_MASK,
  CHART_OPERATOR_UID,
  effectiveCaps,
  processUids,
  repoRoot,
} from "../support/sluice.ts";
import { openBrowser } from "./browser.ts";
import {
  CHAIN,
  conditionOf,
  nodeState,
  rolloutRecord,
  settled,
  Testbed,
  type FlowResult,
  type NodeChainView,
  type RunningFlow,
} from "./harness.ts";

const namespace = createTestNamespace("e2e-rollout");
let bed: Testbed;
/** The revision every node runs after the previous test. */
let good = "";

let failed = false;

beforeAll(async () => {
  bed = await Testbed.start({ namespace });
  good = await bed.waitForRollout(undefined, 180_000);
});

afterEach((ctx) => {
  if (ctx.task.result?.state === "fail") failed = true;
});

afterAll(async () => {
  await bed?.stop({ keepLogs: failed });
});

/** Every flow lost nothing; the message shows all of them when one did. */
function expectNoLoss(results: FlowResult[]): void {
  const summary = results.map(
    (r) => `${r.node}: sent ${r.sent}, received ${r.received}, missing ${r.missingSample.join(",")}`,
  );
  for (const r of results) {
    expect(r.sent, summary.join("\n")).toBeGreaterThan(0);
    expect(r.lost, summary.join("\n")).toBe(0);
  }
}

/** Runs `during` with a UDP flow through every node, and returns what the flows saw. */
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

const sleep = (ms: number) => new Promise((ok) => setTimeout(ok, ms));

describe("the first revision", () => {
  it("goes live on all three nodes; kubectl get servicechains,nodechains and kubectl wait tell the story", async () => {
    const waited = await kubectlOk(
      ["wait", "--for=condition=Ready", `servicechain/${CHAIN}`, "-n", namespace, "--timeout=60s"],
      { timeoutMs: 90_000 },
    );
    expect(waited).toContain(`servicechain.sluice.dev/${CHAIN} condition met`);

    const chains = await kubectlOk(["get", "servicechains", "-n", namespace]);
    expect(chains).toMatch(/^NAME\s+READY\s+REVISION\s+NODES\s+UP-TO-DATE\s+FAILED\s+AGE\s*$/m);
    expect(chains).toMatch(new RegExp(`^${CHAIN}\\s+True\\s+${good}\\s+3/3\\s+3\\s+0\\s+\\S+\\s*$`, "m"));

    const nodeChains = await kubectlOk(["get", "nodechains", "-n", namespace]);
    expect(nodeChains).toMatch(/^NAME\s+NODE\s+CHAIN\s+PHASE\s+REVISION\s+AGE\s*$/m);
    for (const node of bed.nodes) {
      expect(nodeChains).toMatch(
        new RegExp(
          `^${CHAIN}\\.${node.name}\\s+${node.name}\\s+${CHAIN}\\s+Ready\\s+${good}\\s+\\S+\\s*$`,
          "m",
        ),
      );
    }

    // Each agent attached the chain to its own node's interface, and only there.
    const attached = await kubectlOk([
      "get",
      "nodechains",
      "-n",
      namespace,
      "-o",
      'jsonpath={range .items[*]}{.spec.nodeName}={.status.attachedInterfaces[*]}{"\\n"}{end}',
    ]);
    expect(attached.trim().split("\n").sort()).toEqual(bed.nodes.map((n) => `${n.name}=${n.ifname}`));

    // Packets cross the chain on every node: flowmon, the last NF, counts each one.
    const flows = await bed.startFlows();
    await sleep(1_000);
    const results = await Promise.all(flows.map((f) => f.stop()));
    expectNoLoss(results);
    for (const [i, flow] of flows.entries()) expect(bed.flowmonRecord(flow)?.packets).toBe(results[i]!.sent);

    // Even the first rollout moved one node at a time.
    const record = rolloutRecord(bed.nodeChains.events, 0, good);
    expect(record.steps.map((s) => s.node).sort()).toEqual(bed.nodes.map((n) => n.name));
    expect(record.maxInTransition, JSON.stringify(record.worst)).toBeLessThanOrEqual(1);
  });
});

describe("the processes, as the chart runs them", () => {
  it("agents have exactly the chart agent's capabilities, live in their node's namespace and hold tokens bound to their node", async () => {
    for (const node of bed.nodes) {
      const pid = node.agent!.child.pid!;
      expect(effectiveCaps(pid).toString(16), node.name).toBe(CHART_AGENT_CAP_MASK.toString(16));
      expect(statSync(`/proc/${pid}/ns/net`).ino, `${node.name}: its network namespace`).toBe(
        statSync(node.netns.path).ino,
      );
      const argv = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");
      expect(argv).toContain(node.kubeconfig);
      expect(argv).not.toContain("--netns");
      const who = await whoAmI(node.kubeconfig);
      expect(who.username).toBe(serviceAccountUser(namespace, bed.identities.agentServiceAccount));
      expect(who.extra[NODE_NAME_EXTRA], `${node.name}: the token is bound to the node`).toEqual([node.name]);
    }
    // The chart's node-scope policy was in force all along: every status write above passed it.
    expect(
      await kubectlOk(["get", "validatingadmissionpolicy", bed.identities.nodeScopePolicy, "-o", "name"]),
    ).toContain(bed.identities.nodeScopePolicy);
  });

  it("the operator runs as a non-root user with no capabilities and the operator ServiceAccount's token", async () => {
    const pid = bed.operator!.child.pid!;
    expect(processUids(pid)).toEqual([
      CHART_OPERATOR_UID,
      CHART_OPERATOR_UID,
      CHART_OPERATOR_UID,
      CHART_OPERATOR_UID,
    ]);
    expect(effectiveCaps(pid)).toBe(0n);
    expect(readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0")).toContain(bed.operatorKubeconfig);
    expect((await whoAmI(bed.operatorKubeconfig)).username).toBe(
      serviceAccountUser(namespace, bed.identities.operatorServiceAccount),
    );
  });

  it("nothing the processes asked the API server for was refused", async () => {
    const logs = [bed.operator!, ...bed.nodes.map((n) => n.agent!)];
    for (const proc of logs) {
      const refused = (await proc.log())
        .split("\n")
        .filter((l) => /forbidden|"(?:status|statusCode|code)":403\b/i.test(l));
      expect(refused, proc.name).toEqual([]);
    }
  });
});

describe("a commit that changes the chain", () => {
  it("rolls out one node at a time, loses no packet on any node and carries counters over", async () => {
    good = await bed.waitForRollout();
    const from = bed.nodeChains.events.length;
    const programsBefore = new Map(
      [...bed.nodeChains.latest.values()].map((nc) => [nc.spec.nodeName, programIdsOf(nc)]),
    );
    let target = "";
    let flowmonBefore: number[] = [];
    let flows: RunningFlow[] = [];
    const results = await withTraffic(async (running) => {
      flows = running;
      await sleep(1_000);
      flowmonBefore = flows.map((f) => bed.flowmonRecord(f)?.packets ?? 0);
      // A new rate is a new `.rodata` value: new programs on every node, switched in atomically.
      (bed.functionSpec("ratelimit").parameters as Record<string, unknown>).rate = 150_000;
      const { sha } = await bed.commit("ratelimit: 150k packets/s per source");
      target = await bed.waitForPlan(sha);
      expect(target).not.toBe(good);
      await bed.waitForRollout(target, 150_000);
      await sleep(1_000);
    });
    expectNoLoss(results);

    // One commit, one revision: no node was ever asked for anything in between.
    const asked = new Set(bed.nodeChains.events.slice(from).map((e) => e.object.spec.revision));
    expect([...asked].filter((r) => r !== good)).toEqual([target]);

    // The history is whole: the watch never had to start over and skip changes.
    expect(bed.nodeChains.relists).toBe(0);
    const record = rolloutRecord(bed.nodeChains.events, from, target);
    const steps = record.steps.map(
      (s) =>
        `${s.node} moved at +${s.movedAt - record.steps[0]!.movedAt} ms, live at +${(s.settledAt ?? NaN) - record.steps[0]!.movedAt} ms`,
    );
    console.log(`rollout of ${target}:\n  ${steps.join("\n  ")}`);
    // maxUnavailable 1: never two nodes in transition at once, and each node was moved only
    // after the one before it was live.
    expect(record.maxInTransition, JSON.stringify(record.worst)).toBe(1);
    expect(record.steps.map((s) => s.node)).toEqual(bed.nodes.map((n) => n.name));
    for (const [i, step] of record.steps.entries()) {
      expect(step.settledAt, steps.join("\n")).toBeDefined();
      if (i > 0)
        expect(step.movedAt, steps.join("\n")).toBeGreaterThanOrEqual(record.steps[i - 1]!.settledAt!);
    }

    // The programs were replaced (a switch, not a table update) on every node...
    for (const nc of bed.nodeChains.latest.values()) {
      expect(programIdsOf(nc), nc.spec.nodeName).not.toEqual(programsBefore.get(nc.spec.nodeName));
    }
    // ...and flowmon's per-flow counters went on counting in the same map: it has seen every
    // packet of the flow, before, during and after the switch.
    for (const [i, flow] of flows.entries()) {
      expect(flowmonBefore[i]).toBeGreaterThan(0);
      expect(bed.flowmonRecord(flow)?.packets, flow.node).toBe(results[i]!.sent);
    }
    good = target;
  });
});

/** A commit that must be refused on the first node, and what the refusal must show. */
interface RefusedCommit {
  name: string;
  /** Makes the refused change and commits it; returns the commit. */
  commitBad(): Promise<string>;
  /** Puts the tree back as it was and commits that; returns the commit. */
  commitFix(): Promise<string>;
  /** NodeChain `lastError.reason` (and the reason named in the ServiceChain's conditions). */
  reason: string;
  /** What else the failed NodeChain must show. */
  evidence(failed: NodeChainView): void;
}

/** Rewrites ttl-guard so that it compiles, but the verifier refuses the map value used without a NULL check. */
function unverifiableTtlGuard(): string {
  const broken = Testbed.ttlGuardSource().replace(
    /\tif \(count\)\n\t\t__sync_fetch_and_add\(count, 1\);\n\telse\n\t\tbpf_map_update_elem\([^\n]*\n/,
    "\t/* The NULL check is missing: the verifier refuses this program. */\n\t__sync_fetch_and_add(count, one);\n",
  );
  expect(broken).not.toBe(Testbed.ttlGuardSource());
  return broken;
}

const TTL_SOURCE = "network/nfs/ttl-guard/ttl_guard.bpf.c";

/** The expectation of ttl-guard's test vector "a normal packet goes on". */
function normalPacketVector(): { expect: { verdict: string } } {
  const tests = bed.functionSpec("ttl-guard").tests as { name: string; expect: { verdict: string } }[];
  return tests.find((t) => t.name === "a normal packet goes on")!;
}

const refused: RefusedCommit[] = [
  {
    name: "a custom NF the verifier rejects",
    commitBad: async () =>
      (await bed.commit("ttl-guard: count faster", { [TTL_SOURCE]: unverifiableTtlGuard() })).sha,
    commitFix: async () =>
      (
        await bed.commit("ttl-guard: back to the version that loads", {
          [TTL_SOURCE]: Testbed.ttlGuardSource(),
        })
      ).sha,
    reason: "VerifierRejected",
    evidence: (failed) =>
      // The verifier's own words, for the author of the NF.
      expect(failed.status?.lastError?.log ?? "").toMatch(/invalid mem access 'map_value_or_null'/),
  },
  {
    name: "a test vector the chain fails on the node",
    commitBad: async () => {
      normalPacketVector().expect.verdict = "drop";
      return (await bed.commit("ttl-guard: expect a normal packet to be dropped")).sha;
    },
    commitFix: async () => {
      normalPacketVector().expect.verdict = "pass";
      return (await bed.commit("ttl-guard: a normal packet goes on after all")).sha;
    },
    reason: "SelfTestFailed",
    evidence: (failed) => {
      const selfTest = (
        failed.status as {
          selfTest?: { failed: number; results?: { vector: string; passed: boolean; got: string }[] };
        }
      ).selfTest;
      expect(selfTest?.failed).toBe(1);
      expect(selfTest?.results).toContainEqual(
        expect.objectContaining({
          vector: "ttl-guard/a normal packet goes on",
          passed: false,
          got: expect.stringContaining("pass"),
        }),
      );
    },
  },
];

describe.each(refused)("a commit with $name", (scenario) => {
  it("stops at the first node, halts, names node and reason, rolls back, and traffic never stops", async () => {
    good = await bed.waitForRollout();
    const from = bed.nodeChains.events.length;
    const [first, ...others] = bed.nodes.map((n) => n.name);
    let bad = "";
    const results = await withTraffic(async () => {
      const sha = await scenario.commitBad();
      bad = await bed.waitForPlan(sha);
      expect(bad).not.toBe(good);

      const halted = await bed.serviceChains.waitFor(
        "Degraded by the refused revision",
        (all) => {
          const sc = all.get(CHAIN);
          return sc?.status?.failedRevision === bad && conditionOf(sc, "Degraded")?.status === "True" && sc;
        },
        120_000,
      );
      const degraded = conditionOf(halted, "Degraded")!;
      expect(degraded.reason).toBe("RolledBack");
      expect(degraded.message).toContain(`node ${first} failed revision ${bad}: ${scenario.reason}`);
      expect(degraded.message).toContain(`returned to revision ${good}`);
      expect(halted.status?.failedNodes).toEqual([
        expect.objectContaining({ node: first, reason: scenario.reason }),
      ]);
      expect(conditionOf(halted, "Ready")?.status).toBe("False");

      // The first node goes back to the good revision, the others never leave it.
      await bed.nodeChains.waitFor(
        `${first} back on ${good}`,
        (all) => [...all.values()].map(nodeState).every((s) => s.wanted === good && settled(s)),
        60_000,
      );
      // Halted means halted: nothing more moves.
      await sleep(3_000);
    });
    expectNoLoss(results);

    const history = bed.nodeChains.events.slice(from).map((e) => e.object);
    const askedForBad = new Set(
      history.filter((nc) => nc.spec.revision === bad).map((nc) => nc.spec.nodeName),
    );
    expect([...askedForBad]).toEqual([first]);
    for (const node of others) expect(askedForBad.has(node!)).toBe(false);
    // The agent said why, while the old revision kept forwarding.
    const failed = history.find((nc) => nc.spec.nodeName === first && nc.status?.phase === "Failed")!;
    expect(failed.status?.lastError?.reason).toBe(scenario.reason);
    expect(failed.status?.revision).toBe(good);
    scenario.evidence(failed);

    const sc = bed.serviceChains.get(CHAIN)!;
    expect(sc.status?.revision).toBe(bad);
    expect(sc.status?.lastGoodRevision).toBe(good);
    const shown = await kubectlOk(["get", "servicechains", "-n", namespace]);
    expect(shown).toMatch(new RegExp(`^${CHAIN}\\s+False\\s+${bad}\\s+`, "m"));
    const described = await kubectlOk(["describe", "servicechain", CHAIN, "-n", namespace]);
    expect(described).toMatch(
      new RegExp(`Warning\\s+NodesFailed\\s+.*node ${first} failed revision ${bad}: ${scenario.reason}`),
    );
    expect(described).toMatch(new RegExp(`Warning\\s+RolledBack\\s+.*returned ${first} to revision ${good}`));

    // Putting the tree back in Git brings the chain back to Ready: same artifact, same plan as
    // before, and it runs everywhere already.
    const fix = await scenario.commitFix();
    expect(await bed.waitForPlan(fix)).toBe(good);
    await bed.waitForRollout(good, 120_000);
    expect(conditionOf(bed.serviceChains.get(CHAIN), "Degraded")?.status).toBe("False");
  });
});

describe("the operator's live view", () => {
  it("shows each node's revision as a rollout moves node by node, why earlier revisions were refused, each node's rates, and a node whose agent stopped reporting", async () => {
    good = await bed.waitForRollout();
    const opened = await openBrowser();
    try {
      const { page, requested } = opened;
      await page.goto(`http://127.0.0.1:${bed.operatorPort}/`);
      // [node, revision, phase] of every row of the rollout table.
      const rows = async () =>
        (await page.evaluate(
          `[...document.querySelectorAll(".rollout tr[data-node]")].map((tr) => [tr.dataset.node, tr.dataset.revision, tr.children[2].textContent])`,
        )) as Array<[string, string, string]>;
      await expect
        .poll(async () => (await rows()).filter(([, revision]) => revision === good).length, {
          timeout: 30_000,
        })
        .toBe(3);

      const from = bed.nodeChains.events.length;
      (bed.functionSpec("ratelimit").parameters as Record<string, unknown>).rate = 120_000;
      const { sha } = await bed.commit("ratelimit: 120k packets/s per source");
      const target = await bed.waitForPlan(sha);
      let rolledOut = false;
      const rollout = bed.waitForRollout(target, 150_000).finally(() => (rolledOut = true));
      // How many nodes the page shows on the new revision, sampled faster than it updates.
      const onTarget: number[] = [];
      while (!rolledOut) {
        onTarget.push((await rows()).filter(([, revision]) => revision === target).length);
        await sleep(200);
      }
      await rollout;
      await expect
        .poll(async () => (await rows()).filter(([, revision]) => revision === target).length, {
          timeout: 10_000,
        })
        .toBe(3);
      // The table never showed a node going back while the rollout went on...
      const steps = onTarget.filter((n, i) => i === 0 || n !== onTarget[i - 1]);
      expect(steps, "nodes on the new revision as the page showed them").toEqual(
        [...steps].sort((a, b) => a - b),
      );
      // ...and the page marks each node's switch when it happened: one node after the other.
      const switches = async () =>
        (await page.evaluate(
          `[...document.querySelectorAll('#markers li[data-kind="switch"]')].map((li) => [li.dataset.node, li.dataset.revision, Number(li.dataset.atMs)])`,
        )) as Array<[string, string, number]>;
      await expect
        .poll(async () => (await switches()).filter(([, revision]) => revision === target).length, {
          timeout: 10_000,
        })
        .toBe(3);
      const order = (await switches())
        .filter(([, revision]) => revision === target)
        .sort((a, b) => a[2] - b[2]);
      expect(new Set(order.map(([node]) => node)).size, "each node switched once").toBe(3);
      const settledOrder = rolloutRecord(bed.nodeChains.events, from, target)
        .steps.filter((s) => s.settledAt !== undefined)
        .sort((a, b) => a.settledAt! - b.settledAt!)
        .map((s) => s.node);
      console.log(
        `operator's page: switches at ${order.map(([n, , at]) => `${n} +${at - order[0]![2]} ms`).join(", ")}`,
      );
      expect(
        order.map(([node]) => node),
        "the page's order is the rollout's order",
      ).toEqual(settledOrder);
      // Each node's switch is a marker; the refused revisions of the tests before left theirs.
      const markers = async (kind: string) =>
        (await page.locator(`#markers li[data-kind="${kind}"]`).allTextContents()).join("\n");
      await expect.poll(() => markers("switch"), { timeout: 10_000 }).toContain(target);
      expect(await markers("switch-failed")).toMatch(/VerifierRejected|SelfTestFailed/);
      expect(await markers("rolled-back")).toContain("returned");
      // Each node's card names the commit behind the revision it runs.
      for (const node of bed.nodes)
        await expect
          .poll(
            () =>
              page.evaluate(
                `document.querySelector('.chain[data-node="${node.name}"] .field.commit b')?.textContent ?? ""`,
              ),
            { timeout: 15_000 },
          )
          .toContain("ratelimit: 120k packets/s per source");

      // Each node's rates, asked from its agent: every function of every node draws a graph that
      // grows second by second, and counts the node's own traffic.
      const graph = (node: string, nf: string) =>
        page.evaluate(
          `(() => { const g = document.querySelector('.graph.fn[data-node="${node}"][data-nf="${nf}"]'); return g && { points: Number(g.dataset.points), packets: Number(g.dataset.packetsPerSecond || 0), canvas: !!g.querySelector("canvas") }; })()`,
        ) as Promise<{ points: number; packets: number; canvas: boolean } | null>;
      const flows = await bed.startFlows();
      try {
        for (const node of bed.nodes) {
          for (const nf of ["firewall", "ratelimit", "ttl-guard", "flowmon"]) {
            await expect
              .poll(async () => (await graph(node.name, nf))?.canvas, { timeout: 30_000 })
              .toBe(true);
          }
          await expect
            .poll(async () => (await graph(node.name, "firewall"))?.packets ?? 0, { timeout: 30_000 })
            .toBeGreaterThan(100);
        }
        const before = (await graph(bed.nodes[0]!.name, "flowmon"))!.points;
        await expect
          .poll(async () => (await graph(bed.nodes[0]!.name, "flowmon"))!.points, { timeout: 15_000 })
          .toBeGreaterThanOrEqual(before + 3);
      } finally {
        await Promise.all(flows.map((f) => f.stop()));
      }

      // One agent dies: the page says its node stopped reporting (as the SluiceAgentNotReporting
      // alert would), names no other node, and the problem goes once the agent is back.
      const silent = bed.nodes[1]!;
      await bed.killAgent(silent);
      const silentNodes = async () =>
        (await page.evaluate(
          `[...document.querySelectorAll('#problems li[data-kind="node-silent"]')].map((li) => li.dataset.node + " " + li.textContent)`,
        )) as string[];
      await expect.poll(silentNodes, { timeout: 40_000 }).toHaveLength(1);
      const [problem] = await silentNodes();
      expect(problem).toMatch(new RegExp(`^${silent.name} .*node stopped reporting`));
      await mkdir(join(repoRoot, ".test-results"), { recursive: true });
      await page.screenshot({ path: join(repoRoot, ".test-results/liveview-cluster.png"), fullPage: true });
      await bed.startAgent(silent);
      await expect.poll(silentNodes, { timeout: 30_000 }).toEqual([]);
      for (const url of requested) expect(new URL(url).hostname, url).toBe("127.0.0.1");
    } finally {
      await opened.close();
    }
  }, 480_000);
});

function programIdsOf(nc: NodeChainView): number[] | undefined {
  return (nc.status as { programIds?: number[] } | undefined)?.programIds;
}
