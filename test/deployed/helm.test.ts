/**
 * The Helm chart installed for real, as the README tells a user, on a node whose kubelet runs
 * the images `npm run images` built (the cluster of `npm run cluster -- up`):
 *
 *   slk-client netns                     node (host network namespace)
 *   eth0 10.236.1.2/24 ══ veth ══ slkn0 10.236.1.1/24  ◀── the example chain, XDP, pattern slkn*
 *                                         sluice-agent pod (hostNetwork), sluice-operator pod
 *                                         git daemon on the node's address 10.237.0.1
 *
 * The chart's operator pod follows a GitSource served by a git daemon on the host, the agent pod
 * compiles, tests and attaches the example repository's chain to slkn0, and UDP traffic from the
 * client crosses it. Then `helm upgrade` (a new agent image tag and a changed value) replaces
 * the agent pod while traffic runs, `helm rollback` returns to the first release, and
 * `helm uninstall` leaves what charts/sluice/README.md says.
 *
 * The example repository is used as it is, except that its ServiceChain attaches to `slkn*`:
 * this machine's host network namespace is shared, and only interfaces this test made may carry
 * the chain.
 */
import { execFile } from "node:child_process";
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { join, relative } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { promisify } from "node:util";
import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from "vitest";
import { chartDir, helm } from "../cluster/chart-support.ts";
import { kubectl, kubectlOk } from "../cluster/harness.ts";
import { startUdpFlow, udpFlow, type FlowEndpoint } from "../kernel/traffic.ts";
import { createTestRepo, startGitDaemon, type GitServer, type TestRepo } from "../support/git-servers.ts";
import { CHART_AGENT_CAP_MASK, effectiveCaps, repoRoot } from "../support/sluice.ts";
import {
  containerPid,
  ctr,
  NODE_IP,
  NODE_NAME,
  nfPackets,
  OPERATOR_CLUSTER_IP,
  processTree,
  uids,
} from "./node.ts";
import { startCluster } from "./scripts.ts";

const execFileAsync = promisify(execFile);

/** The release and its namespace, as in the README (`helm install sluice ... -n <ns>`). */
const RELEASE = "sluice";
const RELEASE_NS = "slk-sluice";
/** Where the GitSource lives; the agent pins its chain as `<namespace>_<chain>`. */
const SOURCE_NS = "slk-deployed";
const CHAIN = "edge";
const PINNED_CHAIN = `/sys/fs/bpf/sluice/${SOURCE_NS}_${CHAIN}`;
const CHAIN_METRICS = new RegExp(`^${SOURCE_NS}[_/]${CHAIN}$`);
const NFS = ["firewall", "ratelimit", "ttl-guard", "flowmon"];

const appVersion = /^appVersion:\s*"?([^"\s]+)"?/m.exec(
  readFileSync(join(chartDir, "Chart.yaml"), "utf8"),
)![1]!;
const AGENT_IMAGE = "localhost/sluice-agent";
const UPGRADE_TAG = `${appVersion}-upgrade`;

/** The client namespace and the node's interface facing it. */
const CLIENT_NS = "slk-client";
const NODE_IF = "slkn0";
const client: FlowEndpoint = { ns: CLIENT_NS, ip: "10.236.1.2" };
const node: FlowEndpoint = { ns: { path: "/proc/self/ns/net" }, ip: "10.236.1.1" };

/** Values a user on this cluster sets: the locally built images, the operator's fixed address. */
const INSTALL_VALUES = [
  `operator.image.repository=localhost/sluice-operator`,
  `operator.image.pullPolicy=Never`,
  `agent.image.repository=${AGENT_IMAGE}`,
  `agent.image.pullPolicy=Never`,
  // The agents run in the host network without cluster DNS: they reach the operator's Service
  // by its address (charts/sluice/README.md, "Reaching the operator").
  `operator.service.clusterIP=${OPERATOR_CLUSTER_IP}`,
].flatMap((v) => ["--set", v]);

async function ip(...args: string[]): Promise<string> {
  const { stdout } = await execFileAsync("ip", args);
  return stdout;
}

/** Files of the example repository's `network/`, with the chain attached to `slkn*`. */
function exampleNetwork(): Record<string, string> {
  const dir = join(repoRoot, "examples/gitops/network");
  const files: Record<string, string> = {};
  const walk = (d: string): void => {
    for (const entry of readdirSync(d)) {
      const path = join(d, entry);
      if (statSync(path).isDirectory()) walk(path);
      else files[join("network", relative(dir, path))] = readFileSync(path, "utf8");
    }
  };
  walk(dir);
  const chain = files["network/chain.yaml"]!;
  expect(chain).toContain('interfaces: ["sl-node*"]');
  files["network/chain.yaml"] = chain.replace('interfaces: ["sl-node*"]', 'interfaces: ["slkn*"]');
  return files;
}

function gitSource(url: string): string {
  return `apiVersion: sluice.dev/v1alpha1
kind: GitSource
metadata:
  name: ${CHAIN}
  namespace: ${SOURCE_NS}
spec:
  url: ${url}
  ref:
    branch: main
  path: network
  interval: 1m
  prune: true
`;
}

interface PodView {
  metadata: { name: string; uid: string };
  spec: { containers: { name: string; image: string; env?: { name: string; value?: string }[] }[] };
  status: { phase: string; containerStatuses?: { name: string; containerID?: string; ready: boolean }[] };
}

async function pods(component: "agent" | "operator"): Promise<PodView[]> {
  const out = await kubectlOk([
    "-n",
    RELEASE_NS,
    "get",
    "pods",
    "-l",
    `app.kubernetes.io/component=${component}`,
    "-o",
    "json",
  ]);
  return (JSON.parse(out) as { items: PodView[] }).items;
}

/** The one running, Ready pod of a component. */
async function readyPod(component: "agent" | "operator"): Promise<PodView> {
  const ready = (await pods(component)).filter(
    (p) => p.status.phase === "Running" && p.status.containerStatuses?.every((c) => c.ready),
  );
  expect(ready, `${component} pods Ready`).toHaveLength(1);
  return ready[0]!;
}

async function rolloutStatus(): Promise<void> {
  await kubectlOk(
    ["-n", RELEASE_NS, "rollout", "status", `deployment/${RELEASE}-operator`, "--timeout=240s"],
    {
      timeoutMs: 250_000,
    },
  );
  await kubectlOk(["-n", RELEASE_NS, "rollout", "status", `daemonset/${RELEASE}-agent`, "--timeout=240s"], {
    timeoutMs: 250_000,
  });
}

async function nodeChainPhase(): Promise<string> {
  return kubectlOk([
    "-n",
    SOURCE_NS,
    "get",
    "nodechains",
    "-o",
    `jsonpath={.items[?(@.spec.nodeName=="${NODE_NAME}")].status.phase}`,
  ]);
}

/**
 * Waits until the agent pod now running says it took the pinned chain over ("adopted pinned
 * chain") and serves its counters: the new process found what the old one left, without
 * rebuilding it.
 */
async function waitForAdoption(): Promise<void> {
  const deadline = Date.now() + 90_000;
  for (;;) {
    const agent = (await pods("agent")).find((p) => p.status.phase === "Running");
    const log = agent
      ? (await kubectl(["-n", RELEASE_NS, "logs", agent.metadata.name, "-c", "agent"])).stdout
      : "";
    const adopted = log
      .split("\n")
      .some((line) => line.includes('"adopted pinned chain"') && line.includes(`"${SOURCE_NS}_${CHAIN}"`));
    if (adopted) {
      const counters = await nfPackets(CHAIN_METRICS).catch(() => ({}) as Record<string, number>);
      if (NFS.every((nf) => nf in counters)) return;
    }
    if (Date.now() > deadline)
      throw new Error(`the new agent did not adopt the pinned chain within 90 s:\n${log}`);
    await sleep(500);
  }
}

/** Whether slkn0 carries an XDP program, and its id. */
async function xdpProgId(): Promise<number | undefined> {
  const [link] = JSON.parse(await ip("-j", "-d", "link", "show", NODE_IF)) as {
    xdp?: { prog?: { id: number } };
  }[];
  return link?.xdp?.prog?.id;
}

/**
 * Runs `change` while UDP traffic crosses the chain, and returns what the traffic saw. The flow
 * is long enough to outlast a pod replacement (the change must end before it does).
 */
async function forwardingThrough(change: () => Promise<void>, seconds: number) {
  const rate = 1000;
  const flow = await startUdpFlow({ from: client, to: node, count: rate * seconds, rate, drainMs: 500 });
  const started = Date.now();
  try {
    await change();
  } catch (err) {
    flow.abort();
    throw err;
  }
  const changeMs = Date.now() - started;
  const result = await flow.done();
  console.log(
    `deployed: change done in ${changeMs} ms under traffic: ${result.sent} sent, ${result.lost} lost`,
  );
  expect(changeMs, "the change finished while the traffic still ran").toBeLessThan(seconds * 1000);
  return result;
}

/** What a user would look at when something is not Ready: pods, chains, the pods' last logs. */
async function diagnostics(): Promise<string> {
  const sections = [
    ["get", "pods", "-A", "-o", "wide"],
    ["get", "gitsources,servicechains,nodechains", "-A", "-o", "wide"],
    ["-n", SOURCE_NS, "describe", "nodechains"],
    ["-n", RELEASE_NS, "logs", `daemonset/${RELEASE}-agent`, "--tail=30", "--all-containers"],
    ["-n", RELEASE_NS, "logs", `deployment/${RELEASE}-operator`, "--tail=30"],
  ];
  const out: string[] = [];
  for (const args of sections) {
    const r = await kubectl(args);
    out.push(`$ kubectl ${args.join(" ")}\n${(r.stdout + r.stderr).trim()}`);
  }
  return out.join("\n\n");
}

describe.sequential("the Helm chart on a real node", () => {
  let repo: TestRepo;
  let daemon: GitServer;

  afterEach(async (context) => {
    if (context.task.result?.state === "fail") console.error(await diagnostics());
  });

  beforeAll(async () => {
    // What the README has a user do first: build the images, start the node.
    await startCluster(inject("clusterKubeconfig"));
    // The "host" in front of the node: a client namespace wired to the node's slkn0.
    await execFileAsync("ip", ["netns", "add", CLIENT_NS]);
    await ip("link", "add", NODE_IF, "type", "veth", "peer", "name", "slkc0");
    await ip("link", "set", "slkc0", "netns", CLIENT_NS);
    await ip("-n", CLIENT_NS, "link", "set", "slkc0", "name", "eth0");
    await ip("-n", CLIENT_NS, "addr", "add", `${client.ip}/24`, "dev", "eth0");
    await ip("-n", CLIENT_NS, "link", "set", "eth0", "up");
    await ip("-n", CLIENT_NS, "link", "set", "lo", "up");
    await ip("addr", "add", `${node.ip}/24`, "dev", NODE_IF);
    await ip("link", "set", NODE_IF, "up");

    repo = await createTestRepo({ name: CHAIN });
    await repo.commit(exampleNetwork(), "the example repository");
    // Pods reach the host on the node's address, not on its loopback.
    daemon = await startGitDaemon(repo.serveRoot, { address: NODE_IP });
    await kubectlOk(["create", "namespace", SOURCE_NS]);
  });

  afterAll(async () => {
    await daemon?.stop();
    await repo?.cleanup();
    await ip("link", "del", NODE_IF).catch(() => undefined);
    await execFileAsync("ip", ["netns", "del", CLIENT_NS]).catch(() => undefined);
  });

  it("installs with helm and runs the operator Deployment and the agent DaemonSet until Ready", async () => {
    await helm([
      "install",
      RELEASE,
      chartDir,
      "--namespace",
      RELEASE_NS,
      "--create-namespace",
      ...INSTALL_VALUES,
    ]);
    await rolloutStatus();
    expect((await readyPod("operator")).metadata.name).toMatch(new RegExp(`^${RELEASE}-operator-`));
    expect((await readyPod("agent")).metadata.name).toMatch(new RegExp(`^${RELEASE}-agent-`));
  });

  it("runs the agent with exactly CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN and the operator as non-root", async () => {
    const agent = await readyPod("agent");
    const agentPid = await containerPid(
      agent.status.containerStatuses!.find((c) => c.name === "agent")!.containerID!,
    );
    for (const pid of processTree(agentPid)) {
      expect(effectiveCaps(pid).toString(16), `CapEff of agent process ${pid}`).toBe(
        CHART_AGENT_CAP_MASK.toString(16),
      );
    }
    const operator = await readyPod("operator");
    const operatorPid = await containerPid(operator.status.containerStatuses![0]!.containerID!);
    for (const pid of processTree(operatorPid)) {
      expect(uids(pid), `uids of operator process ${pid}`).toEqual([65532, 65532, 65532, 65532]);
      expect(effectiveCaps(pid), `CapEff of operator process ${pid}`).toBe(0n);
    }
  });

  it("syncs a GitSource from a git server on the host and makes the example chain Ready on the node, forwarding", async () => {
    await kubectlOk(["apply", "-f", "-"], { input: gitSource(daemon.url(CHAIN)) });
    await kubectlOk(
      ["-n", SOURCE_NS, "wait", "--for=condition=Ready", `gitsource/${CHAIN}`, "--timeout=180s"],
      {
        timeoutMs: 190_000,
      },
    );
    // The agent fetches the artifact from the operator, compiles ttl-guard with clang, runs every
    // test vector in the kernel and attaches the chain.
    await kubectlOk(
      ["-n", SOURCE_NS, "wait", "--for=condition=Ready", `servicechain/${CHAIN}`, "--timeout=300s"],
      {
        timeoutMs: 310_000,
      },
    );
    const table = await kubectlOk(["-n", SOURCE_NS, "get", "servicechains,nodechains"]);
    expect(table).toMatch(new RegExp(`servicechain.sluice.dev/${CHAIN}\\s+True\\s+\\S+\\s+1/1`));
    expect(table).toMatch(new RegExp(`nodechain.sluice.dev/\\S+\\s+${NODE_NAME}\\s+${CHAIN}\\s+Ready`));
    await kubectlOk([
      "-n",
      SOURCE_NS,
      "wait",
      "--for=condition=Ready",
      "nodechains",
      "--all",
      "--timeout=60s",
    ]);
    expect(await xdpProgId(), "XDP program on slkn0").toBeGreaterThan(0);
    expect(existsSync(PINNED_CHAIN), `${PINNED_CHAIN} pinned`).toBe(true);

    const before = await nfPackets(CHAIN_METRICS);
    const flow = await udpFlow({ from: client, to: node, count: 2000, rate: 1000 });
    expect(flow.sent).toBe(2000);
    expect(flow.lost).toBe(0);
    const after = await nfPackets(CHAIN_METRICS);
    for (const nf of NFS) {
      expect(after[nf] ?? 0, `${nf} packets`).toBeGreaterThanOrEqual((before[nf] ?? 0) + 2000);
    }
  });

  it("helm upgrade with a new agent image tag and a changed value replaces the agent pod without losing a packet", async () => {
    // A new agent image: the same image under a new tag, as a registry would hold a new release.
    await ctr("images", "tag", "--force", `${AGENT_IMAGE}:${appVersion}`, `${AGENT_IMAGE}:${UPGRADE_TAG}`);
    const oldAgent = await readyPod("agent");
    const progBefore = await xdpProgId();
    const before = await nfPackets(CHAIN_METRICS);

    const flow = await forwardingThrough(async () => {
      await helm([
        "upgrade",
        RELEASE,
        chartDir,
        "--namespace",
        RELEASE_NS,
        "--reuse-values",
        "--set",
        `agent.image.tag=${UPGRADE_TAG}`,
        "--set",
        "agent.logLevel=debug",
      ]);
      await rolloutStatus();
      // The new pod took the pinned chain over and reports it Ready.
      await waitForAdoption();
      for (let i = 0; (await nodeChainPhase()) !== "Ready"; i++) {
        expect(i, "NodeChain Ready again after the upgrade").toBeLessThan(60);
        await sleep(500);
      }
    }, 30);
    expect(flow.sent).toBeGreaterThan(0);
    expect(flow.sendFailures).toBe(0);
    expect(flow.lost, `packets lost during the upgrade (missing ${flow.missingSample.join(",")})`).toBe(0);

    const newAgent = await readyPod("agent");
    expect(newAgent.metadata.uid).not.toBe(oldAgent.metadata.uid);
    const container = newAgent.spec.containers.find((c) => c.name === "agent")!;
    expect(container.image).toBe(`${AGENT_IMAGE}:${UPGRADE_TAG}`);
    expect(container.env?.find((e) => e.name === "SLUICE_LOG_LEVEL")?.value).toBe("debug");
    // Adopted, not rebuilt: the same program stays attached and the counters carry on.
    expect(await xdpProgId()).toBe(progBefore);
    const after = await nfPackets(CHAIN_METRICS);
    for (const nf of NFS) {
      expect(after[nf] ?? 0, `${nf} packets`).toBeGreaterThanOrEqual((before[nf] ?? 0) + flow.sent);
    }
  });

  it("helm rollback returns the agent to the first release, still forwarding without loss", async () => {
    const flow = await forwardingThrough(async () => {
      await helm(["rollback", RELEASE, "1", "--namespace", RELEASE_NS]);
      await rolloutStatus();
      await waitForAdoption();
      for (let i = 0; (await nodeChainPhase()) !== "Ready"; i++) {
        expect(i, "NodeChain Ready again after the rollback").toBeLessThan(60);
        await sleep(500);
      }
    }, 30);
    expect(flow.lost, `packets lost during the rollback (missing ${flow.missingSample.join(",")})`).toBe(0);
    const agent = await readyPod("agent");
    expect(agent.spec.containers.find((c) => c.name === "agent")!.image).toBe(`${AGENT_IMAGE}:${appVersion}`);
  });

  it("helm uninstall removes the workloads and keeps the CRDs, the objects and the pinned chain forwarding", async () => {
    const prog = await xdpProgId();
    await helm(["uninstall", RELEASE, "--namespace", RELEASE_NS, "--wait", "--timeout=120s"]);
    for (let i = 0; (await pods("agent")).length + (await pods("operator")).length > 0; i++) {
      expect(i, "chart pods gone after helm uninstall").toBeLessThan(120);
      await sleep(500);
    }
    // Helm never deletes the CRDs of a chart's crds/ directory, so the custom resources stay too.
    for (const crd of ["gitsources", "networkfunctions", "servicechains", "nodechains"]) {
      await kubectlOk(["get", "crd", `${crd}.sluice.dev`]);
    }
    await kubectlOk(["-n", SOURCE_NS, "get", `gitsource/${CHAIN}`, `servicechain/${CHAIN}`]);
    // Nothing of the chart is left that could touch the chain: it stays pinned and attached,
    // and keeps forwarding, until the pins are removed by hand (README, "Uninstalling").
    expect(
      (await kubectl(["get", "daemonset,deployment,service", "-n", RELEASE_NS, "-o", "name"])).stdout.trim(),
    ).toBe("");
    expect(existsSync(PINNED_CHAIN)).toBe(true);
    expect(await xdpProgId()).toBe(prog);
    const flow = await udpFlow({ from: client, to: node, count: 1000, rate: 1000 });
    expect(flow.lost).toBe(0);
  });
});
