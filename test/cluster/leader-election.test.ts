/**
 * Leader election of `sluice operator --leader-elect` on a real kube-apiserver, with the operator
 * running as it runs in the cluster: separate `sluice operator` processes, each authenticated as
 * the chart's operator ServiceAccount (a TokenRequest token) with only the chart's RBAC, as the
 * chart's non-root user without capabilities, competing for the chart's Lease.
 *
 * What a user sees: the Lease names one holder; only that replica is Ready, reconciles, and
 * serves artifacts; when it stops (SIGTERM) it hands the Lease over at once, and when it crashes
 * (SIGKILL) a standby takes over after the lease expires — and reconciling goes on.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { chown, mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  createTestRepo,
  freePort,
  startGitDaemon,
  type GitServer,
  type TestRepo,
} from "../support/git-servers.ts";
import {
  asChartOperator,
  CHART_OPERATOR_UID,
  effectiveCaps,
  processUids,
  sluiceArgv,
} from "../support/sluice.ts";
import { createTestNamespace, kubectl, kubectlOk } from "./harness.ts";
import { installChartIdentities, writeServiceAccountKubeConfig, type ChartIdentities } from "./identities.ts";
import { type GitSourceView, installCrds, readyAt, readyOf } from "./sluice-support.ts";

const namespace = createTestNamespace("leader");
const release = "lead";
/** Short, so that the crash takeover fits a test; renew deadline 4 s, retry every 0.8 s. */
const leaseSeconds = 6;

/** One `sluice operator` process. */
class OperatorProcess {
  readonly url: string;
  readonly dataDir: string;
  child: ChildProcess | undefined;
  private readonly lines: string[] = [];
  exit: Promise<number | string> | undefined;

  constructor(
    readonly identity: string,
    readonly port: number,
    workDir: string,
  ) {
    this.url = `http://127.0.0.1:${port}`;
    this.dataDir = join(workDir, identity);
  }

  start(kubeconfig: string): void {
    // As the chart's Deployment runs it: uid 65532, no capabilities, HOME on a writable volume.
    const [file, ...args] = asChartOperator(
      sluiceArgv([
        "operator",
        `--kubeconfig=${kubeconfig}`,
        `--namespace=${namespace}`,
        `--port=${this.port}`,
        "--host=127.0.0.1",
        `--data-dir=${this.dataDir}`,
        // Each replica advertises itself, so status shows which one produced the artifact.
        `--advertise-url=${this.url}`,
        "--leader-elect",
        `--leader-elect-namespace=${namespace}`,
        `--leader-elect-lease=${identities.leaseName}`,
        `--leader-elect-id=${this.identity}`,
        `--leader-elect-duration=${leaseSeconds}s`,
      ]),
    );
    this.child = spawn(file!, args, {
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, SLUICE_LOG_LEVEL: "info", HOME: workDir },
    });
    for (const stream of [this.child.stdout!, this.child.stderr!]) {
      stream.on("data", (b: Buffer) => this.lines.push(...b.toString("utf8").split("\n").filter(Boolean)));
    }
    const child = this.child;
    this.exit = new Promise((resolve) =>
      child.once("exit", (code, signal) => resolve(code ?? signal ?? "unknown")),
    );
  }

  /** Log lines (pino JSON) that concern a GitSource: what a replica that reconciles writes. */
  reconcileLines(): string[] {
    return this.lines.filter((l) => l.includes('"kind":"GitSource"'));
  }

  log(): string {
    return this.lines.slice(-30).join("\n");
  }

  /** HTTP status of a GET, or 0 when nothing answers. */
  async status(path: string): Promise<number> {
    try {
      const res = await fetch(`${this.url}${path}`, { signal: AbortSignal.timeout(2_000) });
      await res.arrayBuffer();
      return res.status;
    } catch {
      return 0;
    }
  }

  signal(sig: NodeJS.Signals): void {
    this.child?.kill(sig);
  }

  async stop(): Promise<void> {
    if (this.child && this.child.exitCode === null && this.child.signalCode === null) {
      this.child.kill("SIGKILL");
      await this.exit;
    }
  }
}

interface LeaseView {
  spec?: { holderIdentity?: string; leaseTransitions?: number; renewTime?: string };
}

async function lease(): Promise<LeaseView> {
  const result = await kubectl(["get", "lease", identities.leaseName, "-n", namespace, "-o", "json"]);
  return result.code === 0 ? (JSON.parse(result.stdout) as LeaseView) : {};
}

/** Polls `probe` until it returns a value; fails with `what` and `context()` after `timeoutMs`. */
async function eventually<T>(
  what: string,
  probe: () => Promise<T | undefined>,
  context: () => string,
  timeoutMs = 30_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`not ${what} within ${timeoutMs} ms\n${context()}`);
    await new Promise((ok) => setTimeout(ok, 100));
  }
}

async function source(): Promise<GitSourceView> {
  return JSON.parse(await kubectlOk(["get", "gitsource", "network", "-n", namespace, "-o", "json"]));
}

const nf = (name: string) => `apiVersion: sluice.dev/v1alpha1
kind: NetworkFunction
metadata:
  name: ${name}
spec:
  hooks: [xdp]
  source:
    builtin: noop
`;

let workDir: string;
let kubeconfig: string;
let repo: TestRepo;
let gitDaemon: GitServer | undefined;
let identities: ChartIdentities;
const operators: OperatorProcess[] = [];

async function newOperator(identity: string): Promise<OperatorProcess> {
  const op = new OperatorProcess(identity, await freePort(), workDir);
  operators.push(op);
  op.start(kubeconfig);
  await eventually(
    `${identity} listening`,
    async () => ((await op.status("/healthz")) === 200 ? true : undefined),
    () => op.log(),
  );
  return op;
}

const holderIs = (identity: string) => async () =>
  (await lease()).spec?.holderIdentity === identity ? true : undefined;

const everyLog = () => operators.map((o) => `--- ${o.identity}\n${o.log()}`).join("\n");

/** Waits until the GitSource is Ready at `revision` with an artifact from `op`; returns it. */
async function readyFrom(op: OperatorProcess, revision: string): Promise<GitSourceView> {
  let last: GitSourceView | undefined;
  return eventually(
    `Ready at ${revision} with an artifact from ${op.identity}`,
    async () => {
      last = await source();
      return readyAt(revision)(last) && last.status?.artifact?.url.startsWith(`${op.url}/`)
        ? last
        : undefined;
    },
    () =>
      `Ready: ${JSON.stringify(last && readyOf(last))} artifact: ${last?.status?.artifact?.url}\n${everyLog()}`,
    60_000,
  );
}

beforeAll(async () => {
  await installCrds();
  // The operator's user owns the replicas' data and home, as the chart's emptyDir volumes.
  workDir = await mkdtemp(join(tmpdir(), "sluice-leader-"));
  await chown(workDir, CHART_OPERATOR_UID, CHART_OPERATOR_UID);
  identities = await installChartIdentities(release, namespace);
  kubeconfig = await writeServiceAccountKubeConfig(
    workDir,
    "operator",
    namespace,
    identities.operatorServiceAccount,
    { owner: CHART_OPERATOR_UID },
  );
  // Served over the network: the operator's user cannot read the test's files.
  repo = await createTestRepo({ name: "leader" });
  gitDaemon = await startGitDaemon(repo.serveRoot);
});

afterAll(async () => {
  await Promise.all(operators.map((o) => o.stop()));
  await identities?.remove();
  await gitDaemon?.stop();
  await repo?.cleanup();
  await rm(workDir, { recursive: true, force: true });
});

describe("two operators with --leader-elect", () => {
  let a: OperatorProcess;
  let b: OperatorProcess;
  let r1: string;

  it("only the Lease holder is Ready, reconciles and serves artifacts; the other stands by", async () => {
    a = await newOperator("op-a");
    await eventually("op-a holding the Lease", holderIs("op-a"), everyLog);
    b = await newOperator("op-b");
    for (const op of [a, b]) {
      const pid = op.child!.pid!;
      expect(processUids(pid), `${op.identity} runs as the chart's user`).toEqual(
        Array(4).fill(CHART_OPERATOR_UID),
      );
      expect(effectiveCaps(pid), `${op.identity} has no capabilities`).toBe(0n);
    }
    r1 = `main@sha1:${await repo.commit({ "pass.yaml": nf("pass") })}`;
    await kubectlOk(["apply", "-f", "-"], {
      input: JSON.stringify({
        apiVersion: "sluice.dev/v1alpha1",
        kind: "GitSource",
        metadata: { name: "network", namespace },
        spec: { url: gitDaemon!.url("leader"), interval: "1h" },
      }),
    });
    const gs = await readyFrom(a, r1);
    const artifactPath = new URL(gs.status!.artifact!.url).pathname;

    // The leader keeps renewing; the standby never acted.
    const before = (await lease()).spec?.renewTime;
    await eventually(
      "the Lease renewed",
      async () => ((await lease()).spec?.renewTime !== before ? true : undefined),
      everyLog,
    );
    expect((await lease()).spec?.holderIdentity).toBe("op-a");
    expect(await a.status("/readyz")).toBe(200);
    expect(await b.status("/readyz")).toBe(503);
    expect(await a.status(artifactPath)).toBe(200);
    expect(await b.status(artifactPath)).toBe(404);
    expect(a.reconcileLines().length).toBeGreaterThan(0);
    expect(b.reconcileLines()).toEqual([]);
    expect(await readdir(b.dataDir).catch(() => [])).not.toContain("git");
  });

  it("when the leader stops, it hands the Lease over and the standby takes over at once", async () => {
    const transitions = (await lease()).spec?.leaseTransitions ?? 0;
    const stoppedAt = Date.now();
    a.signal("SIGTERM");
    expect(await a.exit).toBe(0);
    await eventually("op-b holding the Lease", holderIs("op-b"), everyLog);
    // Released, not expired: no lease duration to wait out.
    expect(Date.now() - stoppedAt).toBeLessThan(leaseSeconds * 1_000);
    expect((await lease()).spec?.leaseTransitions).toBeGreaterThan(transitions);
    await eventually(
      "op-b Ready",
      async () => ((await b.status("/readyz")) === 200 ? true : undefined),
      everyLog,
    );

    // op-b serves the current revision itself, and follows new commits.
    const gs = await readyFrom(b, r1);
    expect(await b.status(new URL(gs.status!.artifact!.url).pathname)).toBe(200);
    const r2 = `main@sha1:${await repo.commit({ "pass.yaml": nf("pass"), "drop.yaml": nf("drop") })}`;
    await kubectlOk([
      "annotate",
      "gitsource/network",
      "-n",
      namespace,
      "--overwrite",
      `sluice.dev/reconcile-at=${new Date().toISOString()}`,
    ]);
    await readyFrom(b, r2);
    expect(
      (await kubectlOk(["get", "networkfunctions", "-n", namespace, "-o", "name"])).trim().split("\n").sort(),
    ).toEqual(["networkfunction.sluice.dev/drop", "networkfunction.sluice.dev/pass"]);
  });

  it("when the leader crashes, a standby takes over once the lease has expired", async () => {
    const c = await newOperator("op-c");
    expect(await c.status("/readyz")).toBe(503);
    const transitions = (await lease()).spec?.leaseTransitions ?? 0;
    const killedAt = Date.now();
    b.signal("SIGKILL");
    await b.exit;
    await eventually("op-c holding the Lease", holderIs("op-c"), everyLog, 30_000);
    const tookMs = Date.now() - killedAt;
    // op-c waited for the lease to run out: the crashed leader renewed at most a retry period
    // (0.8 s) before it died, and nobody may take over within the lease after that.
    expect(tookMs).toBeGreaterThan((leaseSeconds - 1) * 1_000);
    expect((await lease()).spec?.leaseTransitions).toBe(transitions + 1);
    await readyFrom(c, (await source()).status!.lastAppliedRevision!);
    expect(await c.status("/readyz")).toBe(200);
  });
});
