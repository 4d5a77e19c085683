/**
 * Starts a real etcd and kube-apiserver on loopback for the `cluster` and `e2e` test projects,
 * and hands the tests a kubeconfig (cluster-admin token, CA-verified TLS) through
 * `project.provide`. Tests read it with the helpers in `harness.ts`.
 *
 * There is no controller-manager, scheduler or kubelet: objects are stored, validated, watched
 * and authorized exactly as in a real cluster, but nothing reconciles built-in kinds (a deleted
 * namespace stays Terminating, no service-account tokens are minted, pods are never scheduled).
 */
import { spawn, execFile, type ChildProcess } from "node:child_process";
import { generateKeyPairSync, randomBytes } from "node:crypto";
import { closeSync, existsSync, openSync } from "node:fs";
import { mkdtemp, mkdir, readdir, readFile, rm, writeFile } from "node:fs/promises";
import https from "node:https";
import http from "node:http";
import net from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import type { TestProject } from "vitest/node";
import { stringify as toYaml } from "yaml";

declare module "vitest" {
  interface ProvidedContext {
    /** Path of a kubeconfig whose current context is cluster-admin on the test API server. */
    clusterKubeconfig: string;
    /** Directory holding the test binaries: kube-apiserver, etcd, kubectl, helm. */
    clusterBinDir: string;
    /** HTTPS URL of the test API server (`https://127.0.0.1:<port>`). */
    clusterServer: string;
  }
}

/** The cluster could not be started; the message carries the tail of the relevant logs. */
export class ClusterStartError extends Error {
  override name = "ClusterStartError";
}

const execFileAsync = promisify(execFile);
const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const requiredBinaries = ["kube-apiserver", "etcd", "kubectl", "helm"] as const;
const startAttempts = 3;
const readyTimeoutMs = 60_000;
const stopGraceMs = 5_000;
const workDirPrefix = "sluice-cluster-";
const ownerFile = "owner.pid";

/** A child process whose output goes to a log file, and whose exit we can await. */
interface Daemon {
  name: string;
  child: ChildProcess;
  logPath: string;
  exited: Promise<void>;
}

/** vitest globalSetup: start etcd + kube-apiserver, provide the kubeconfig, return the teardown. */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const startedAt = performance.now();
  const binDir = await testBinDir();
  await requireOpenssl();

  await sweepStaleWorkDirs();
  const workDir = await mkdtemp(join(tmpdir(), workDirPrefix));
  await writeFile(join(workDir, ownerFile), String(process.pid));
  const daemons: Daemon[] = [];
  // Last resort if vitest exits without running the teardown (for example on a crash):
  // never leave an apiserver or etcd running behind.
  const killOnExit = (): void => {
    for (const d of daemons) d.child.kill("SIGKILL");
  };
  process.on("exit", killOnExit);

  const teardown = async (): Promise<void> => {
    process.off("exit", killOnExit);
    // The apiserver first, so that it does not log a storm of etcd connection errors.
    for (const d of [...daemons].reverse()) await stop(d);
    await rm(workDir, { recursive: true, force: true });
  };

  try {
    const pki = await writePki(join(workDir, "pki"));
    let cluster: { server: string; kubeconfig: string } | undefined;
    for (let attempt = 1; cluster === undefined; attempt++) {
      try {
        cluster = await startCluster(binDir, workDir, pki, daemons, attempt);
      } catch (err) {
        // A free port picked by binding port 0 can be taken by someone else before our daemon
        // binds it; that race is the only failure worth a retry.
        const portRace = err instanceof ClusterStartError && /address already in use/.test(err.message);
        if (!portRace || attempt >= startAttempts) throw err;
        for (const d of daemons.splice(0).reverse()) await stop(d);
      }
    }
    project.provide("clusterKubeconfig", cluster.kubeconfig);
    project.provide("clusterBinDir", binDir);
    project.provide("clusterServer", cluster.server);
    const ms = Math.round(performance.now() - startedAt);
    console.log(`cluster: kube-apiserver ready at ${cluster.server} in ${ms} ms`);
  } catch (err) {
    await teardown();
    throw err;
  }
  return teardown;
}

/**
 * Removes work dirs left by runs that were killed (a SIGKILL runs no teardown; the daemons die
 * with their parent through the parent-death signal, their files stay). A dir whose owner
 * process is still alive belongs to a concurrent run and is left alone.
 */
async function sweepStaleWorkDirs(): Promise<void> {
  for (const entry of await readdir(tmpdir())) {
    if (!entry.startsWith(workDirPrefix)) continue;
    const dir = join(tmpdir(), entry);
    const owner = Number((await readFile(join(dir, ownerFile), "utf8").catch(() => "")).trim());
    if (!Number.isInteger(owner) || owner <= 0 || isAlive(owner)) continue;
    await rm(dir, { recursive: true, force: true });
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** Runs the repository's setup script, which builds (once, cached) and prints the binary dir. */
async function testBinDir(): Promise<string> {
  let stdout: string;
  try {
    ({ stdout } = await execFileAsync("bash", [join(repoRoot, "scripts/setup.sh"), "--testbin-dir"], {
      cwd: repoRoot,
      maxBuffer: 16 << 20,
      timeout: 60 * 60_000,
    }));
  } catch (err) {
    const stderr = (err as { stderr?: string }).stderr ?? "";
    throw new ClusterStartError(`scripts/setup.sh --testbin-dir failed:\n${tail(stderr, 30)}`, {
      cause: err,
    });
  }
  const dir = stdout.trim().split("\n").at(-1) ?? "";
  const missing = requiredBinaries.filter((b) => !existsSync(join(dir, b)));
  if (dir === "" || missing.length > 0) {
    throw new ClusterStartError(
      `test binaries missing from "${dir}": ${missing.join(", ")} (run scripts/setup.sh --testbin-dir)`,
    );
  }
  return dir;
}

async function requireOpenssl(): Promise<void> {
  try {
    await execFileAsync("openssl", ["version"]);
  } catch (err) {
    throw new ClusterStartError(
      "openssl is required to make the test cluster's certificates and was not found",
      {
        cause: err,
      },
    );
  }
}

/** File paths of the generated certificates, keys and token. */
interface Pki {
  caCert: string;
  serverCert: string;
  serverKey: string;
  saPublicKey: string;
  saSigningKey: string;
  tokenFile: string;
  token: string;
}

/**
 * A CA and a serving certificate it signs (so kubectl and client-node verify TLS without any
 * insecure flag), a service-account signing key pair and a static cluster-admin token.
 */
async function writePki(dir: string): Promise<Pki> {
  await mkdir(dir, { recursive: true });
  const p = (f: string): string => join(dir, f);
  // Every argument is one word, so each command reads as the line one would type.
  const openssl = async (command: string): Promise<void> => {
    try {
      await execFileAsync("openssl", command.trim().split(/\s+/), { cwd: dir });
    } catch (err) {
      const stderr = (err as { stderr?: string }).stderr ?? "";
      throw new ClusterStartError(`openssl ${command.trim()} failed: ${stderr.trim()}`, { cause: err });
    }
  };
  const ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
  await openssl(`req -x509 ${ec} -keyout ca.key -out ca.crt -days 2 -subj /CN=sluice-test-ca
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign`);
  await openssl(`req -new ${ec} -keyout apiserver.key -out apiserver.csr -subj /CN=kube-apiserver`);
  await writeFile(
    p("apiserver.ext"),
    "subjectAltName=IP:127.0.0.1,DNS:localhost\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
  );
  await openssl(`x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2
    -extfile apiserver.ext -out apiserver.crt`);

  const sa = generateKeyPairSync("ec", { namedCurve: "prime256v1" });
  await writeFile(p("sa.pub"), sa.publicKey.export({ type: "spki", format: "pem" }));
  await writeFile(p("sa.key"), sa.privateKey.export({ type: "sec1", format: "pem" }), { mode: 0o600 });

  const token = randomBytes(24).toString("hex");
  // token,user,uid,"groups": system:masters is bound to cluster-admin by the bootstrap RBAC policy.
  await writeFile(p("tokens.csv"), `${token},sluice-test-admin,sluice-test-admin,"system:masters"\n`, {
    mode: 0o600,
  });
  return {
    caCert: p("ca.crt"),
    serverCert: p("apiserver.crt"),
    serverKey: p("apiserver.key"),
    saPublicKey: p("sa.pub"),
    saSigningKey: p("sa.key"),
    tokenFile: p("tokens.csv"),
    token,
  };
}

async function startCluster(
  binDir: string,
  workDir: string,
  pki: Pki,
  daemons: Daemon[],
  attempt: number,
): Promise<{ server: string; kubeconfig: string }> {
  const [etcdClientPort, etcdPeerPort, apiPort] = await freePorts(3);
  const etcdUrl = `http://127.0.0.1:${etcdClientPort}`;
  const peerUrl = `http://127.0.0.1:${etcdPeerPort}`;
  const dataDir = join(workDir, `etcd-${attempt}`);

  const guard = await parentDeathGuard();
  const etcd = launch("etcd", join(workDir, `etcd-${attempt}.log`), [
    ...guard,
    join(binDir, "etcd"),
    "--name=sluice-test",
    `--data-dir=${dataDir}`,
    `--listen-client-urls=${etcdUrl}`,
    `--advertise-client-urls=${etcdUrl}`,
    `--listen-peer-urls=${peerUrl}`,
    `--initial-advertise-peer-urls=${peerUrl}`,
    `--initial-cluster=sluice-test=${peerUrl}`,
    // Throwaway data: durability only costs time here.
    "--unsafe-no-fsync",
    "--log-level=warn",
  ]);
  daemons.push(etcd);
  await waitReady(etcd, () => httpStatus(`${etcdUrl}/health`));

  const server = `https://127.0.0.1:${apiPort}`;
  const apiserver = launch("kube-apiserver", join(workDir, `apiserver-${attempt}.log`), [
    ...guard,
    join(binDir, "kube-apiserver"),
    `--etcd-servers=${etcdUrl}`,
    "--bind-address=127.0.0.1",
    "--advertise-address=127.0.0.1",
    `--secure-port=${apiPort}`,
    `--cert-dir=${join(workDir, "apiserver-certs")}`,
    `--tls-cert-file=${pki.serverCert}`,
    `--tls-private-key-file=${pki.serverKey}`,
    `--client-ca-file=${pki.caCert}`,
    `--token-auth-file=${pki.tokenFile}`,
    "--authorization-mode=RBAC",
    `--service-account-issuer=${server}`,
    `--service-account-key-file=${pki.saPublicKey}`,
    `--service-account-signing-key-file=${pki.saSigningKey}`,
    "--service-cluster-ip-range=10.96.0.0/24",
    "--allow-privileged=true",
    // Nothing else runs: no endpoints to keep for the `kubernetes` Service, no controller to
    // mint ServiceAccounts that the ServiceAccount admission plugin would wait for.
    "--endpoint-reconciler-type=none",
    "--disable-admission-plugins=ServiceAccount",
    // Startup speed: skips bootstrapping the flow-control objects and the pprof handlers.
    "--enable-priority-and-fairness=false",
    "--profiling=false",
  ]);
  daemons.push(apiserver);
  const ca = await readFile(pki.caCert);
  await waitReady(apiserver, () => httpsStatus(`${server}/readyz`, ca, pki.token));

  const kubeconfig = join(workDir, "kubeconfig");
  const caData = ca.toString("base64");
  await writeFile(
    kubeconfig,
    toYaml({
      apiVersion: "v1",
      kind: "Config",
      clusters: [{ name: "sluice-test", cluster: { server, "certificate-authority-data": caData } }],
      users: [{ name: "sluice-test-admin", user: { token: pki.token } }],
      contexts: [{ name: "sluice-test", context: { cluster: "sluice-test", user: "sluice-test-admin" } }],
      "current-context": "sluice-test",
    }),
    { mode: 0o600 },
  );
  return { server, kubeconfig };
}

/** Picks distinct free loopback ports by binding port 0; all are held until all are chosen. */
async function freePorts(count: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from(
      { length: count },
      () =>
        new Promise<net.Server>((ok, fail) => {
          const s = net.createServer();
          s.once("error", fail);
          s.listen(0, "127.0.0.1", () => ok(s));
        }),
    ),
  );
  const ports = servers.map((s) => (s.address() as net.AddressInfo).port);
  await Promise.all(servers.map((s) => new Promise((ok) => s.close(ok))));
  return ports;
}

/**
 * A command prefix that makes the kernel SIGKILL the daemon when this process dies, so that a
 * test run killed by a signal (no teardown, no "exit" event) leaves no apiserver or etcd behind
 * on a shared machine. Empty when util-linux `setpriv` is not installed.
 */
async function parentDeathGuard(): Promise<string[]> {
  try {
    await execFileAsync("setpriv", ["--version"]);
    return ["setpriv", "--pdeathsig", "KILL", "--"];
  } catch {
    return [];
  }
}

function launch(name: string, logPath: string, command: string[]): Daemon {
  const log = openSync(logPath, "a");
  const [bin = "", ...args] = command;
  // setpriv execs the daemon, so the pid we signal is the daemon's own.
  const child = spawn(bin, args, { stdio: ["ignore", log, log] });
  closeSync(log);
  const exited = new Promise<void>((ok) => {
    child.once("exit", () => ok());
    child.once("error", () => ok());
  });
  return { name, child, logPath, exited };
}

/** Polls `probe` until it returns 200; fails at once, with the log tail, if the daemon exits. */
async function waitReady(d: Daemon, probe: () => Promise<number>): Promise<void> {
  const deadline = performance.now() + readyTimeoutMs;
  let exited = false;
  void d.exited.then(() => (exited = true));
  let last = "no answer yet";
  while (!exited) {
    try {
      const status = await probe();
      if (status === 200) return;
      last = `HTTP ${status}`;
    } catch (err) {
      last = (err as Error).message;
    }
    if (performance.now() > deadline) {
      throw new ClusterStartError(
        `${d.name} not ready after ${readyTimeoutMs} ms (${last}); log tail:\n${await logTail(d)}`,
      );
    }
    await new Promise((ok) => setTimeout(ok, 100));
  }
  const how = d.child.exitCode ?? d.child.signalCode ?? "failed to start";
  throw new ClusterStartError(
    `${d.name} exited (${how}) before it was ready; log tail:\n${await logTail(d)}`,
  );
}

function httpStatus(url: string): Promise<number> {
  return new Promise((ok, fail) => {
    const req = http.get(url, { timeout: 2_000 }, (res) => {
      res.resume();
      ok(res.statusCode ?? 0);
    });
    req.on("timeout", () => req.destroy(new Error("timeout")));
    req.on("error", fail);
  });
}

function httpsStatus(url: string, ca: Buffer, token: string): Promise<number> {
  return new Promise((ok, fail) => {
    const req = https.get(
      url,
      { ca, headers: { authorization: `Bearer ${token}` }, timeout: 2_000 },
      (res) => {
        res.resume();
        ok(res.statusCode ?? 0);
      },
    );
    req.on("timeout", () => req.destroy(new Error("timeout")));
    req.on("error", fail);
  });
}

/** SIGTERM, then SIGKILL if the daemon has not exited after a grace period. */
async function stop(d: Daemon): Promise<void> {
  if (d.child.exitCode !== null || d.child.signalCode !== null || d.child.pid === undefined) return;
  d.child.kill("SIGTERM");
  let timer: NodeJS.Timeout | undefined;
  const timedOut = await Promise.race([
    d.exited.then(() => false),
    new Promise<boolean>((ok) => (timer = setTimeout(() => ok(true), stopGraceMs))),
  ]);
  clearTimeout(timer);
  if (timedOut) {
    d.child.kill("SIGKILL");
    await d.exited;
  }
}

async function logTail(d: Daemon): Promise<string> {
  try {
    return tail(await readFile(d.logPath, "utf8"), 40);
  } catch {
    return "(no log)";
  }
}

function tail(text: string, lines: number): string {
  return text.trimEnd().split("\n").slice(-lines).join("\n");
}
