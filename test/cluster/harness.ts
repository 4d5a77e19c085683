/**
 * Helpers for tests that run against the real kube-apiserver started by `global-setup.ts`.
 * Tests drive the cluster the way a user does (kubectl) and the way sluice does (client-node).
 */
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { join } from "node:path";
import { CoreV1Api, KubeConfig } from "@kubernetes/client-node";
import { afterAll, beforeAll, inject } from "vitest";

/** What a kubectl run printed and how it exited. */
export interface KubectlResult {
  stdout: string;
  stderr: string;
  /** Exit code; -1 if kubectl was killed (timeout) or could not be started. */
  code: number;
}

/** Options of {@link kubectl}. */
export interface KubectlOptions {
  /** Written to kubectl's stdin, for `apply -f -` and friends. */
  input?: string;
  /** Kill kubectl after this long; a hung kubectl must not hang the suite. Default 60 s. */
  timeoutMs?: number;
}

/** kubectl exited non-zero where the test needed it to succeed. */
export class KubectlError extends Error {
  override name = "KubectlError";
  constructor(
    readonly args: readonly string[],
    readonly result: KubectlResult,
  ) {
    super(`kubectl ${args.join(" ")} exited ${result.code}: ${result.stderr.trim() || result.stdout.trim()}`);
  }
}

/** Directory holding the test binaries (kube-apiserver, etcd, kubectl, helm). */
export function binDir(): string {
  return inject("clusterBinDir");
}

/** Path of the cluster-admin kubeconfig, e.g. for `helm --kubeconfig` or a `KUBECONFIG` env. */
export function kubeconfigPath(): string {
  return inject("clusterKubeconfig");
}

/** A fresh client-node KubeConfig for the test cluster (cluster-admin, CA-verified TLS). */
export function kubeConfig(): KubeConfig {
  const kc = new KubeConfig();
  kc.loadFromFile(kubeconfigPath());
  return kc;
}

/** Runs the test kubectl against the test cluster. Never throws; see {@link kubectlOk}. */
export function kubectl(args: readonly string[], options: KubectlOptions = {}): Promise<KubectlResult> {
  return new Promise((resolve) => {
    const child = spawn(join(binDir(), "kubectl"), [`--kubeconfig=${kubeconfigPath()}`, ...args], {
      stdio: ["pipe", "pipe", "pipe"],
      timeout: options.timeoutMs ?? 60_000,
      killSignal: "SIGKILL",
    });
    const stdout: Buffer[] = [];
    const stderr: Buffer[] = [];
    child.stdout.on("data", (b: Buffer) => stdout.push(b));
    child.stderr.on("data", (b: Buffer) => stderr.push(b));
    child.stdin.on("error", () => {}); // kubectl may exit before reading all of its input
    child.stdin.end(options.input ?? "");
    let spawnError = "";
    child.on("error", (err) => (spawnError = `${err.message}\n`));
    child.on("close", (code) =>
      resolve({
        stdout: Buffer.concat(stdout).toString("utf8"),
        stderr: spawnError + Buffer.concat(stderr).toString("utf8"),
        code: code ?? -1,
      }),
    );
  });
}

/** Runs kubectl and returns its stdout; throws a {@link KubectlError} if it exits non-zero. */
export async function kubectlOk(args: readonly string[], options: KubectlOptions = {}): Promise<string> {
  const result = await kubectl(args, options);
  if (result.code !== 0) throw new KubectlError(args, result);
  return result.stdout;
}

/**
 * Gives the calling test file its own namespace `<prefix>-<random>`: created in `beforeAll`,
 * deleted in `afterAll`. Call at the top level of a test file (or of a `describe`).
 *
 * The name is returned at once so tests can close over it. Without a controller-manager a
 * deleted namespace stays Terminating with its objects; the cluster is thrown away after the run.
 */
export function createTestNamespace(prefix: string): string {
  const name = `${prefix}-${randomBytes(3).toString("hex")}`;
  if (!/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/.test(name) || name.length > 63) {
    throw new Error(`test namespace prefix "${prefix}" does not make a valid namespace name`);
  }
  beforeAll(async () => {
    const core = kubeConfig().makeApiClient(CoreV1Api);
    await core.createNamespace({
      body: { metadata: { name, labels: { "sluice.dev/test-namespace": prefix } } },
    });
  });
  afterAll(async () => {
    const core = kubeConfig().makeApiClient(CoreV1Api);
    await core.deleteNamespace({ name });
  });
  return name;
}
