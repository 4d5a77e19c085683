/**
 * `sluice run` on one host, end to end: a real Git repository made from examples/gitops, the
 * `sluice run` command as a subprocess driving the interfaces of a "node" namespace, real UDP
 * traffic between two host namespaces routed through that node, and commits to the repository.
 * What the tests read is what a user reads: `sluice status --json` and the packets that arrived.
 *
 * `sluice run` runs with exactly the capabilities the chart gives the agent (CAP_BPF,
 * CAP_PERFMON, CAP_NET_ADMIN), started inside the node namespace as a hostNetwork pod runs on
 * its node (`--netns` would need CAP_SYS_ADMIN for setns): a path that needs more fails here.
 * Its status port is on the node's loopback, so `sluice status` asks from inside the node too.
 *
 * ```
 *   h1 (10.78.1.2) ── eth0 ═ sl-node0 ── node (routes) ── sl-h2 ═ eth0 ── h2 (10.78.2.2)
 *                              └ the example chain (pattern sl-node*), XDP
 * ```
 */
import { spawn, execFile, type ChildProcess } from "node:child_process";
import { statSync } from "node:fs";
import { cp, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { SingleHostStatus } from "../../bin/run.ts";
import { createBpffsDir, createNetns, run, TestScope, type TestNetns } from "../kernel/harness.ts";
import { startUdpFlow } from "../kernel/traffic.ts";
import {
  asChartAgent,
  CHART_AGENT_CAP_MASK,
  effectiveCaps,
  repoRoot,
  sluiceArgv,
} from "../support/sluice.ts";

const execFileAsync = promisify(execFile);
const H1 = "10.78.1.2";
const H2 = "10.78.2.2";

type Chain = SingleHostStatus["chains"][number];

interface Topology {
  h1: TestNetns;
  node: TestNetns;
  h2: TestNetns;
}

/** Two host namespaces routed through a node namespace whose interface facing h1 is sl-node0. */
async function createTopology(scope: TestScope): Promise<Topology> {
  const h1 = await createNetns(scope, "h1");
  const node = await createNetns(scope, "node");
  const h2 = await createNetns(scope, "h2");
  await run("ip", [
    "link",
    "add",
    "sl-node0",
    "netns",
    node.name,
    "type",
    "veth",
    "peer",
    "name",
    "eth0",
    "netns",
    h1.name,
  ]);
  await run("ip", [
    "link",
    "add",
    "sl-h2",
    "netns",
    node.name,
    "type",
    "veth",
    "peer",
    "name",
    "eth0",
    "netns",
    h2.name,
  ]);
  const batch = (ns: TestNetns, lines: string[]) =>
    run("ip", ["-n", ns.name, "-batch", "-"], lines.join("\n") + "\n");
  await batch(h1, [`addr add ${H1}/24 dev eth0`, "link set eth0 up", "route add default via 10.78.1.1"]);
  await batch(h2, [`addr add ${H2}/24 dev eth0`, "link set eth0 up", "route add default via 10.78.2.1"]);
  await batch(node, [
    "addr add 10.78.1.1/24 dev sl-node0",
    "link set sl-node0 up",
    "addr add 10.78.2.1/24 dev sl-h2",
    "link set sl-h2 up",
  ]);
  await run("nsenter", [`--net=${node.path}`, "sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"]);
  // Static neighbours across the chained link: a chain whose firewall denies non-IP frames
  // (ARP included) must still carry the flows.
  const mac = async (ns: TestNetns, dev: string) =>
    (
      JSON.parse(await run("ip", ["-j", "-n", ns.name, "link", "show", "dev", dev])) as { address: string }[]
    )[0]!.address;
  await run("ip", [
    "-n",
    h1.name,
    "neigh",
    "replace",
    "10.78.1.1",
    "lladdr",
    await mac(node, "sl-node0"),
    "dev",
    "eth0",
    "nud",
    "permanent",
  ]);
  await run("ip", [
    "-n",
    node.name,
    "neigh",
    "replace",
    H1,
    "lladdr",
    await mac(h1, "eth0"),
    "dev",
    "sl-node0",
    "nud",
    "permanent",
  ]);
  return { h1, node, h2 };
}

/** A Git working repository holding examples/gitops, one commit on main. */
class Repo {
  constructor(readonly dir: string) {}

  static async create(scope: TestScope): Promise<Repo> {
    const dir = await mkdtemp(join(tmpdir(), "sluice-single-host-"));
    scope.defer(() => rm(dir, { recursive: true, force: true }));
    await cp(join(repoRoot, "examples/gitops"), dir, { recursive: true });
    const repo = new Repo(dir);
    await repo.git("init", "--quiet", "--initial-branch=main");
    await repo.git("add", "-A");
    await repo.git("commit", "--quiet", "-m", "examples/gitops");
    return repo;
  }

  git(...args: string[]): Promise<string> {
    return run("git", ["-C", this.dir, "-c", "user.name=test", "-c", "user.email=test@localhost", ...args]);
  }

  /** Replaces `from` with `to` in one file (which must contain it) and commits; returns the sha. */
  async commitEdit(file: string, from: string, to: string, message: string): Promise<string> {
    const path = join(this.dir, file);
    const text = await readFile(path, "utf8");
    if (!text.includes(from)) throw new Error(`${file} does not contain ${JSON.stringify(from)}`);
    await writeFile(path, text.replace(from, to));
    await this.git("commit", "--quiet", "-am", message);
    return (await this.git("rev-parse", "HEAD")).trim();
  }
}

/**
 * `sluice run` as a user starts it, with the chart agent's capabilities inside network namespace
 * `netns`, in a process that dies with the test run.
 */
class SluiceRun {
  readonly child: ChildProcess;
  readonly port: Promise<number>;
  output = "";

  constructor(args: string[], netns: TestNetns) {
    const [file, ...argv] = asChartAgent(sluiceArgv(["run", ...args]), netns.path);
    this.child = spawn(file!, argv, {
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, SLUICE_LOG_LEVEL: "info" },
    });
    const collect = (chunk: Buffer) => (this.output += chunk.toString());
    this.child.stdout!.on("data", collect);
    this.child.stderr!.on("data", collect);
    this.port = new Promise((resolve, reject) => {
      const onData = () => {
        const m = /status at http:\/\/127\.0\.0\.1:(\d+)\/status/.exec(this.output);
        if (m) resolve(Number(m[1]));
      };
      this.child.stderr!.on("data", onData);
      this.child.once("exit", (code) => reject(new Error(`sluice run exited with ${code}:\n${this.output}`)));
    });
  }

  /** Ctrl-C: resolves with the exit code. */
  async stop(): Promise<number | null> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return this.child.exitCode;
    const exited = new Promise<number | null>((r) => this.child.once("exit", (code) => r(code)));
    this.child.kill("SIGINT");
    const timer = setTimeout(() => this.child.kill("SIGKILL"), 15_000);
    const code = await exited;
    clearTimeout(timer);
    return code;
  }
}

/** Where `sluice run` serves its status: the node namespace's loopback. */
let statusNetns = "";

/** `sluice <args>` (status) from inside the node namespace, through the command line. */
async function sluiceStatus(args: string[]): Promise<string> {
  const { stdout } = await execFileAsync("nsenter", [
    `--net=${statusNetns}`,
    ...sluiceArgv(["status", ...args]),
  ]);
  return stdout;
}

/** `sluice status --json`, through the command line. */
async function status(port: number): Promise<SingleHostStatus> {
  return JSON.parse(await sluiceStatus(["--json", "--port", String(port)])) as SingleHostStatus;
}

/** Polls `sluice status --json` until `predicate` holds; fails with the last document seen. */
async function waitForStatus(
  port: number,
  what: string,
  predicate: (doc: SingleHostStatus) => boolean,
  timeoutMs = 60_000,
): Promise<SingleHostStatus> {
  const deadline = Date.now() + timeoutMs;
  let last: SingleHostStatus | undefined;
  while (Date.now() < deadline) {
    last = await status(port);
    if (predicate(last)) return last;
    await sleep(300);
  }
  throw new Error(
    `sluice status: not ${what} within ${timeoutMs} ms; last:\n${JSON.stringify(last, null, 2)}`,
  );
}

const edge = (doc: SingleHostStatus): Chain => {
  const chain = doc.chains.find((c) => c.name === "default_edge");
  if (!chain) throw new Error(`no chain default_edge in ${JSON.stringify(doc.chains.map((c) => c.name))}`);
  return chain;
};
const nf = (chain: Chain, name: string) => {
  const found = chain.nfs.find((n) => n.name === name);
  if (!found) throw new Error(`chain ${chain.name} has no NF ${name}`);
  return found;
};
/** The revision of commit `sha` is live and Ready, and the ServiceChain agrees. */
const liveAt = (sha: string, previousRevision?: string) => (doc: SingleHostStatus) =>
  Boolean(
    doc.source.revision?.endsWith(sha) &&
    doc.serviceChains[0]?.ready === "True" &&
    doc.chains[0]?.ready === "True" &&
    doc.chains[0]?.revision !== previousRevision,
  );

describe("sluice run on one host", () => {
  const scope = new TestScope();
  let topo: Topology;
  let repo: Repo;
  let runArgs: string[];
  let sluice: SluiceRun;
  let port: number;

  beforeAll(async () => {
    topo = await createTopology(scope);
    statusNetns = topo.node.path;
    repo = await Repo.create(scope);
    const bpffs = createBpffsDir(scope);
    const dataDir = await mkdtemp(join(tmpdir(), "sluice-single-host-data-"));
    scope.defer(() => rm(dataDir, { recursive: true, force: true }));
    runArgs = [
      ...["--source", repo.dir, "--path", "network", "--name", "edge", "--interval", "1s", "--port", "0"],
      ...["--data-dir", dataDir, "--bpffs-root", bpffs.path],
    ];
    sluice = new SluiceRun(runArgs, topo.node);
    scope.defer(async () => void (await sluice.stop()));
    port = await sluice.port;
    const head = (await repo.git("rev-parse", "HEAD")).trim();
    await waitForStatus(port, "live at the first commit", liveAt(head));
  });

  it("runs with exactly the chart agent's capabilities, inside the node namespace", () => {
    expect(effectiveCaps(sluice.child.pid!).toString(16)).toBe(CHART_AGENT_CAP_MASK.toString(16));
    expect(statSync(`/proc/${sluice.child.pid}/ns/net`).ino).toBe(statSync(topo.node.path).ino);
  });

  afterAll(async () => {
    await scope.dispose();
  });

  it("switches a commit in while traffic flows: no packet lost, counters and state carried over", async () => {
    const before = edge(await status(port));
    const rate = 8000;
    const flow = await startUdpFlow({
      from: { ns: topo.h1.name, ip: H1 },
      to: { ns: topo.h2.name, ip: H2 },
      count: rate * 10,
      rate,
    });
    const flowStart = Date.now();
    await sleep(1500);
    const sha = await repo.commitEdit(
      "network/functions.yaml",
      "rate: 200000",
      "rate: 150000",
      "ratelimit: 150000/s",
    );
    const committed = Date.now();
    const switched = await waitForStatus(port, "live at the new commit", liveAt(sha, before.revision));
    const commitToLiveMs = Date.now() - committed;
    const result = await flow.done();
    const flowEnd = Date.now();
    const after = edge(await status(port));

    expect(result.sent + result.sendFailures).toBe(rate * 10);
    expect(result, "every packet sent crossed the switch").toMatchObject({ lost: 0, duplicates: 0 });
    const apply = edge(switched).lastApply!;
    expect(apply).toMatchObject({ action: "switched", revision: after.revision, recreatedMaps: [] });
    expect(apply.carriedMaps).toContain("ratelimit/ratelimit_state");
    const switchedAt = Date.parse(apply.at);
    expect(switchedAt, "the switch happened while the flow ran").toBeGreaterThan(flowStart);
    expect(switchedAt).toBeLessThan(flowEnd);
    // Counters carry over: the first and the last NF counted every packet of the flow, those
    // before the switch included, on top of what they had counted before the flow.
    for (const name of ["firewall", "flowmon"])
      expect(BigInt(nf(after, name).packets)).toBeGreaterThanOrEqual(
        BigInt(nf(before, name).packets) + BigInt(result.sent),
      );
    console.log(
      `single host: commit live after ${commitToLiveMs} ms; on the host ${apply.totalMs} ms ` +
        `(load ${apply.loadMs} ms, self-test ${apply.selfTestMs} ms, switch ${apply.flipUs} µs); ` +
        `${result.sent} packets, lost ${result.lost}`,
    );
  });

  it("a commit that changes only the first NF goes live with the chart's capabilities: no packet lost, the rest carried over", async () => {
    const before = edge(await status(port));
    const rate = 8000;
    const flow = await startUdpFlow({
      from: { ns: topo.h1.name, ip: H1 },
      to: { ns: topo.h2.name, ip: H2 },
      count: rate * 8,
      rate,
    });
    await sleep(1500);
    // A load-time setting of the firewall, the first NF: a new firewall program; ratelimit,
    // ttl-guard and flowmon stay as they are.
    const sha = await repo.commitEdit(
      "network/functions.yaml",
      "    defaultAction: allow\n",
      "    defaultAction: allow\n    nonIpAction: deny\n",
      "firewall: drop frames that are not IP",
    );
    const switched = await waitForStatus(port, "live at the new commit", liveAt(sha, before.revision));
    const result = await flow.done();
    const after = edge(await status(port));

    expect(result.sent + result.sendFailures).toBe(rate * 8);
    expect(result, "every packet sent crossed the switch").toMatchObject({ lost: 0, duplicates: 0 });
    const apply = edge(switched).lastApply!;
    expect(apply, JSON.stringify(apply)).toMatchObject({
      action: "switched",
      revision: after.revision,
      recreatedMaps: [],
    });
    expect(apply.carriedMaps).toContain("ratelimit/ratelimit_state");
    for (const name of ["firewall", "flowmon"])
      expect(BigInt(nf(after, name).packets)).toBeGreaterThanOrEqual(
        BigInt(nf(before, name).packets) + BigInt(result.sent),
      );
    // The new firewall is the one running: an ARP request (h1 looking for an address nobody
    // has) is a non-IP frame, and it now drops it.
    const drops = BigInt(nf(after, "firewall").drops);
    await run("nsenter", [
      `--net=${topo.h1.path}`,
      process.execPath,
      "-e",
      `const s = require("node:dgram").createSocket("udp4");
       s.send(Buffer.alloc(8), 9999, "10.78.1.77", () => setTimeout(() => s.close(), 1500));`,
    ]);
    await sleep(1000);
    expect(BigInt(nf(edge(await status(port)), "firewall").drops)).toBeGreaterThan(drops);
    expect(effectiveCaps(sluice.child.pid!).toString(16)).toBe(CHART_AGENT_CAP_MASK.toString(16));
  });

  it("sluice status shows per-NF packets, drops and rates", async () => {
    const rate = 5000;
    // Long enough to outlast the status reads below, each a `sluice status` process started
    // inside the node namespace: the rates must be measured while the flow still runs.
    const flow = await startUdpFlow({
      from: { ns: topo.h1.name, ip: H1 },
      to: { ns: topo.h2.name, ip: H2 },
      count: rate * 8,
      rate,
    });
    const before = edge(await status(port));
    // 100 packets that arrive at the node with TTL 1: ttl-guard (MIN_TTL 2) drops them.
    await run("nsenter", [
      `--net=${topo.h1.path}`,
      process.execPath,
      "-e",
      `const s = require("node:dgram").createSocket("udp4");
       s.bind(() => { s.setTTL(1); let n = 0;
         const next = () => n++ < 100 ? s.send(Buffer.alloc(32), 9999, "${H2}", next) : s.close();
         next(); });`,
    ]);
    await sleep(2500);
    const doc = await status(port);
    const table = await sluiceStatus(["--port", String(port)]);
    await flow.done();

    const chain = edge(doc);
    const firewall = nf(chain, "firewall");
    expect(firewall.packetsPerSecond, "packets per second while 5000/s flow").toBeGreaterThan(rate * 0.6);
    expect(firewall.packetsPerSecond).toBeLessThan(rate * 1.4);
    expect(BigInt(nf(chain, "ttl-guard").drops) - BigInt(nf(before, "ttl-guard").drops)).toBe(100n);
    expect(chain.rateWindowMs).toBeGreaterThanOrEqual(500);

    const lines = table.split("\n");
    expect(lines.join("\n")).toMatch(
      /^chain default_edge\s+revision \S+\s+xdp on sl-node0\(native\)\s+ready True/m,
    );
    const header = lines
      .find((l) => l.trim().startsWith("NF "))!
      .trim()
      .split(/\s+/);
    expect(header).toEqual(["NF", "PACKETS", "PKT/S", "PASSES", "DROPS", "DROP/S", "ERRORS", "BYTES"]);
    const row = (name: string) =>
      lines
        .find((l) => l.trim().startsWith(`${name} `))!
        .trim()
        .split(/\s+/);
    const shownRate = Number(row("firewall")[2]);
    expect(shownRate).toBeGreaterThan(rate * 0.6);
    expect(shownRate).toBeLessThan(rate * 1.4);
    expect(Number(row("ttl-guard")[4])).toBeGreaterThanOrEqual(100);
  });

  it("a commit that does not compile leaves the old revision forwarding and says why", async () => {
    const before = edge(await status(port));
    const rate = 5000;
    const flow = await startUdpFlow({
      from: { ns: topo.h1.name, ip: H1 },
      to: { ns: topo.h2.name, ip: H2 },
      count: rate * 6,
      rate,
    });
    const broken = await repo.commitEdit(
      "network/nfs/ttl-guard/ttl_guard.bpf.c",
      "return SLUICE_DROP;",
      "return SLUICE_DROP",
      "ttl-guard: a typo",
    );
    const failed = await waitForStatus(port, "reporting the compile failure", (doc) =>
      Boolean(
        doc.source.revision?.endsWith(broken) && /CompileFailed/.test(JSON.stringify(doc.serviceChains)),
      ),
    );
    const result = await flow.done();
    expect(result).toMatchObject({ lost: 0 });
    expect(edge(failed).revision, "the old revision stays live").toBe(before.revision);
    expect(edge(await status(port)).revision).toBe(before.revision);
    const table = await sluiceStatus(["--port", String(port)]);
    expect(table).toMatch(/ttl_guard\.bpf\.c.*error/);

    const fixed = await repo.commitEdit(
      "network/nfs/ttl-guard/ttl_guard.bpf.c",
      "return SLUICE_DROP\n",
      "return SLUICE_DROP;\n",
      "ttl-guard: fix the typo",
    );
    await waitForStatus(port, "live at the fix", (doc) =>
      Boolean(
        doc.source.revision?.endsWith(fixed) &&
        doc.serviceChains[0]?.ready === "True" &&
        doc.chains[0]?.ready === "True",
      ),
    );
  });

  it("stopping sluice run leaves the chain forwarding; a new sluice run adopts it without a switch", async () => {
    const before = edge(await status(port));
    const rate = 5000;
    const flow = await startUdpFlow({
      from: { ns: topo.h1.name, ip: H1 },
      to: { ns: topo.h2.name, ip: H2 },
      count: rate * 8,
      rate,
    });
    await sleep(500);
    expect(await sluice.stop(), "sluice run exits 0 on Ctrl-C").toBe(0);
    await sleep(1000);
    // The same port, as a user's default 9470 would be: artifact URLs (part of the plan) stay the same.
    sluice = new SluiceRun([...runArgs, "--port", String(port)], topo.node);
    port = await sluice.port;
    const head = (await repo.git("rev-parse", "HEAD")).trim();
    const doc = await waitForStatus(port, "live again", (d) =>
      Boolean(d.source.revision?.endsWith(head) && d.chains[0]?.ready === "True"),
    );
    const result = await flow.done();
    expect(result).toMatchObject({ lost: 0 });
    const after = edge(doc);
    expect(after.revision).toBe(before.revision);
    expect(after.lastApply?.action ?? "unchanged").toBe("unchanged");
    expect(BigInt(nf(edge(await status(port)), "firewall").packets)).toBeGreaterThanOrEqual(
      BigInt(nf(before, "firewall").packets) + BigInt(result.sent),
    );
  });
});
