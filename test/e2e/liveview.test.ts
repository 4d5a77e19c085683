/**
 * The live view in a browser: headless Chromium (Debian's, driven by playwright-core) opens the
 * page a real `sluice run` serves, while UDP traffic crosses a real chain. The graphs draw and
 * grow, a commit shows up as a marker with its message, the drop rule it adds shows as drops on
 * the firewall's graph (and not on the function after it), and the page asks nothing of any host
 * but the one serving it. A screenshot is kept under .test-results/.
 *
 * `sluice run` runs as the chart runs the agent (CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN, started
 * inside the node's namespace), so the kernel's run-time figures are absent, with the reason on
 * the page and in /metrics. The browser runs in the node's namespace too: the status port is on
 * that namespace's loopback.
 *
 * ```
 *   a (10.77.x.1) ═ veth ═ b (10.77.x.2): chain firewall → flowmon on b's XDP, sluice run in b
 * ```
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import type { Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { staticNeighbors } from "../kernel/fixtures/chains.ts";
import { createBpffsDir, createVethNetwork, run, TestScope, type VethNetwork } from "../kernel/harness.ts";
import { startUdpFlow, type RunningUdpFlow } from "../kernel/traffic.ts";
import { asChartAgent, repoRoot, sluiceArgv } from "../support/sluice.ts";
import { openBrowser } from "./browser.ts";

const RESULTS = join(repoRoot, ".test-results");

const functionsYaml = (rules: string) => `apiVersion: sluice.dev/v1alpha1
kind: NetworkFunction
metadata:
  name: firewall
spec:
  hooks: [xdp]
  source:
    builtin: firewall
  parameters:
    defaultAction: allow
  tables:
    rules:
${rules}
---
apiVersion: sluice.dev/v1alpha1
kind: NetworkFunction
metadata:
  name: flowmon
spec:
  hooks: [xdp]
  source:
    builtin: flowmon
`;

const NO_TELNET = `      - action: deny
        protocol: tcp
        dport: 23
`;
const NO_UDP = `      - action: deny
        protocol: udp
`;

const chainYaml = (ifname: string) => `apiVersion: sluice.dev/v1alpha1
kind: ServiceChain
metadata:
  name: edge
spec:
  functions:
    - name: firewall
    - name: flowmon
  attachment:
    interfaces: [${ifname}]
    hook: xdp
`;

async function git(dir: string, ...args: string[]): Promise<string> {
  return run("git", ["-C", dir, "-c", "user.name=test", "-c", "user.email=test@localhost", ...args]);
}

/** Reads a data attribute of the graph of function `nf` as a number (NaN when absent). */
async function graphFigure(page: Page, nf: string, attribute: string): Promise<number> {
  return Number(await page.locator(`.fn[data-nf="${nf}"]`).getAttribute(attribute));
}

describe("the live view served by sluice run", () => {
  const scope = new TestScope();
  let net: VethNetwork;
  let repo: string;
  let sluice: ChildProcess;
  let output = "";
  let port: number;
  let flow: RunningUdpFlow;
  let page: Page;
  let requested: string[] = [];

  beforeAll(async () => {
    net = await createVethNetwork(scope);
    await staticNeighbors(net);
    repo = await mkdtemp(join(tmpdir(), "sluice-liveview-"));
    scope.defer(() => rm(repo, { recursive: true, force: true }));
    await mkdir(join(repo, "network"));
    await writeFile(join(repo, "network/functions.yaml"), functionsYaml(NO_TELNET));
    await writeFile(join(repo, "network/chain.yaml"), chainYaml(net.b.ifname));
    await git(repo, "init", "--quiet", "--initial-branch=main");
    await git(repo, "add", "-A");
    await git(repo, "commit", "--quiet", "-m", "edge chain: firewall and flowmon");

    const bpffs = createBpffsDir(scope);
    const dataDir = await mkdtemp(join(tmpdir(), "sluice-liveview-data-"));
    scope.defer(() => rm(dataDir, { recursive: true, force: true }));
    const args = ["run", "--source", repo, "--path", "network", "--name", "edge", "--interval", "1s"];
    const [file, ...argv] = asChartAgent(
      sluiceArgv([...args, "--port", "0", "--data-dir", dataDir, "--bpffs-root", bpffs.path]),
      net.b.ns.path,
    );
    sluice = spawn(file!, argv, {
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, SLUICE_LOG_LEVEL: "info" },
    });
    scope.defer(async () => {
      if (sluice.exitCode !== null || sluice.signalCode !== null) return;
      const exited = new Promise((r) => sluice.once("exit", r));
      sluice.kill("SIGINT");
      const timer = setTimeout(() => sluice.kill("SIGKILL"), 15_000);
      await exited;
      clearTimeout(timer);
    });
    const collect = (chunk: Buffer) => (output += chunk.toString());
    sluice.stdout!.on("data", collect);
    sluice.stderr!.on("data", collect);
    port = await new Promise<number>((resolve, reject) => {
      const onData = () => {
        const m = /status at http:\/\/127\.0\.0\.1:(\d+)\/status/.exec(output);
        if (m) resolve(Number(m[1]));
      };
      sluice.stderr!.on("data", onData);
      sluice.once("exit", (code) => reject(new Error(`sluice run exited with ${code}:\n${output}`)));
    });

    // Traffic for the whole test: 2000 UDP packets/s from a to b, through the chain.
    flow = await startUdpFlow({
      from: { ns: net.a.ns.name, ip: net.a.ip },
      to: { ns: net.b.ns.name, ip: net.b.ip },
      count: 2000 * 180,
      rate: 2000,
    });
    scope.defer(() => flow.abort());

    // The browser runs in b, where the status port listens.
    const opened = await openBrowser({ netnsPath: net.b.ns.path });
    scope.defer(() => opened.close());
    page = opened.page;
    requested = opened.requested;
  }, 180_000);

  afterAll(async () => {
    await scope.dispose();
  });

  it("draws each function's rates, marks a commit with its message, and shows its drop rule on the firewall", async () => {
    await page.goto(`http://127.0.0.1:${port}/`);
    // The chain appears with its functions in order, once Git was read and the chain went live.
    await page.locator('.chain[data-chain="default_edge"]').waitFor({ timeout: 90_000 });
    expect(await page.locator('.chain[data-chain="default_edge"] .pipeline .nf').allTextContents()).toEqual([
      "firewall",
      "flowmon",
    ]);
    await expect
      .poll(() => page.locator(".chain .commit b").textContent(), { timeout: 10_000 })
      .toContain("edge chain: firewall and flowmon");
    // Graphs draw: one canvas per function and one for the chain, and their series grow.
    expect(await page.locator('.fn[data-nf="flowmon"] canvas').count()).toBeGreaterThan(0);
    expect(await page.locator(".chain canvas").count()).toBeGreaterThanOrEqual(3);
    await expect
      .poll(() => graphFigure(page, "flowmon", "data-points"), { timeout: 10_000 })
      .toBeGreaterThan(1);
    const pointsBefore = await graphFigure(page, "flowmon", "data-points");
    await sleep(3_000);
    expect(await graphFigure(page, "flowmon", "data-points")).toBeGreaterThan(pointsBefore);
    await expect.poll(() => graphFigure(page, "flowmon", "data-packets-per-second")).toBeGreaterThan(100);
    expect(await graphFigure(page, "firewall", "data-drops-per-second")).toBe(0);
    // Without CAP_SYS_ADMIN the kernel's run time is not counted: the page says why.
    await expect
      .poll(() => page.locator('.graph.ns[data-chain="default_edge"] .note').textContent())
      .toContain("CAP_SYS_ADMIN");

    // A commit that denies UDP: it appears as a marker with its message...
    await writeFile(join(repo, "network/functions.yaml"), functionsYaml(NO_TELNET + NO_UDP));
    await git(repo, "commit", "--quiet", "-am", "firewall: deny all UDP");
    const marker = page.locator('#markers li[data-kind="switch"]', { hasText: "firewall: deny all UDP" });
    await marker.waitFor({ timeout: 90_000 });
    // ...and within 3 s the firewall's drops rise while flowmon, after it, sees the traffic stop.
    const markedAt = Date.now();
    await expect
      .poll(() => graphFigure(page, "firewall", "data-drops-per-second"), {
        timeout: 3_000,
        interval: 100,
      })
      .toBeGreaterThan(100);
    console.log(`live view: drops on the firewall's graph ${Date.now() - markedAt} ms after the marker`);
    expect(await graphFigure(page, "flowmon", "data-drops-per-second")).toBe(0);
    await expect
      .poll(() => graphFigure(page, "flowmon", "data-packets-per-second"), { timeout: 5_000 })
      .toBe(0);
    // The problem list names the function whose drop rate jumped, and the commit.
    await expect
      .poll(
        () => page.locator('#problems li[data-kind="drop-rate-jump"][data-nf="firewall"]').textContent(),
        {
          timeout: 15_000,
        },
      )
      .toContain("firewall: deny all UDP");

    // The scrape says the same about run time (absent, with the reason).
    const metrics = await page.evaluate(() => fetch("/metrics").then((r) => r.text()));
    expect(metrics).toMatch(
      /^sluice_bpf_stats_enabled\{reason="BPF_ENABLE_STATS needs CAP_SYS_ADMIN[^"]*",node="[^"]+"\} 0$/m,
    );

    await mkdir(RESULTS, { recursive: true });
    await page.screenshot({ path: join(RESULTS, "liveview.png"), fullPage: true });
    expect(requested.length).toBeGreaterThan(0);
    for (const url of requested) expect(new URL(url).hostname, url).toBe("127.0.0.1");
  }, 240_000);
});
