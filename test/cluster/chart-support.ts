/**
 * What the chart tests share: running the test helm, rendering charts/sluice with given values,
 * and acting as one of the chart's ServiceAccounts against the test API server.
 */
import { spawn } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { KubeConfig } from "@kubernetes/client-node";
import { parseAllDocuments, stringify as toYaml } from "yaml";
import { binDir, kubeConfig, kubeconfigPath, kubectlOk } from "./harness.ts";

/** The chart under test. */
export const chartDir = fileURLToPath(new URL("../../charts/sluice/", import.meta.url));

/** helm exited non-zero. */
export class HelmError extends Error {
  override name = "HelmError";
  constructor(
    readonly args: readonly string[],
    readonly stdout: string,
    readonly stderr: string,
    readonly code: number,
  ) {
    super(`helm ${args.join(" ")} exited ${code}: ${stderr.trim() || stdout.trim()}`);
  }
}

/** Runs the test helm with the test kubeconfig; resolves with stdout, rejects with a HelmError. */
export function helm(args: readonly string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(join(binDir(), "helm"), [...args, `--kubeconfig=${kubeconfigPath()}`], {
      stdio: ["ignore", "pipe", "pipe"],
      timeout: 60_000,
      killSignal: "SIGKILL",
      // helm keeps caches and config under these; never the user's own.
      env: {
        ...process.env,
        HELM_CACHE_HOME: tmpdir(),
        HELM_CONFIG_HOME: tmpdir(),
        HELM_DATA_HOME: tmpdir(),
      },
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on("data", (b: Buffer) => out.push(b));
    child.stderr.on("data", (b: Buffer) => err.push(b));
    child.on("error", (e) => reject(e));
    child.on("close", (code) => {
      const stdout = Buffer.concat(out).toString("utf8");
      const stderr = Buffer.concat(err).toString("utf8");
      if (code === 0) resolve(stdout);
      else reject(new HelmError(args, stdout, stderr, code ?? -1));
    });
  });
}

let versionOnce: Promise<string> | undefined;

/**
 * The API server's version, for `helm template --kube-version` (helm install asks the server
 * itself; a template run would otherwise assume an old default and trip the chart's kubeVersion).
 */
export function serverVersion(): Promise<string> {
  versionOnce ??= kubectlOk(["version", "-o", "json"]).then(
    (text) => (JSON.parse(text) as { serverVersion: { gitVersion: string } }).serverVersion.gitVersion,
  );
  return versionOnce;
}

/** Options of {@link renderChart}. */
export interface RenderOptions {
  /** Values, written to a file and passed with `-f` (as a user's values.yaml would be). */
  values?: Record<string, unknown>;
  /** Render only these templates (`templates/x.yaml`). */
  showOnly?: readonly string[];
  /** Add the CRDs from crds/ in front. */
  includeCrds?: boolean;
}

/** `helm template <release> charts/sluice -n <namespace>` and its output. */
export async function renderChart(
  release: string,
  namespace: string,
  options: RenderOptions = {},
): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "sluice-chart-"));
  try {
    const valuesFile = join(dir, "values.yaml");
    await writeFile(valuesFile, toYaml(options.values ?? {}));
    return await helm([
      "template",
      release,
      chartDir,
      `--namespace=${namespace}`,
      `--kube-version=${await serverVersion()}`,
      `--values=${valuesFile}`,
      ...(options.includeCrds ? ["--include-crds"] : []),
      ...(options.showOnly ?? []).flatMap((t) => ["--show-only", t]),
    ]);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** A rendered object, loosely typed: tests read the fields they check. */
export interface Manifest {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string> };
  [key: string]: unknown;
}

/** The objects of a multi-document YAML stream (empty documents dropped). */
export function parseManifests(text: string): Manifest[] {
  return parseAllDocuments(text)
    .map((doc) => {
      if (doc.errors.length > 0) throw new Error(`rendered YAML does not parse: ${doc.errors[0]!.message}`);
      return doc.toJS() as Manifest | null;
    })
    .filter((m): m is Manifest => m !== null && typeof m === "object");
}

/** The one object of `kind` (and `name`, if given); fails naming what was rendered instead. */
export function findManifest(manifests: readonly Manifest[], kind: string, name?: string): Manifest {
  const found = manifests.filter((m) => m.kind === kind && (name === undefined || m.metadata.name === name));
  if (found.length !== 1) {
    const have = manifests.map((m) => `${m.kind}/${m.metadata.name}`).join(", ");
    throw new Error(`expected one ${kind}${name ? ` ${name}` : ""}, found ${found.length} in: ${have}`);
  }
  return found[0]!;
}

/**
 * A kubeconfig that authenticates as a ServiceAccount with a fresh token from the TokenRequest
 * API (what the kubelet mounts into a pod), against the test API server. With `boundToNode` the
 * token is bound to that Node object (it must exist); with `boundToPod` to that Pod of
 * `namespace` (it must exist), exactly as the kubelet binds a pod's projected token.
 */
export async function serviceAccountKubeConfig(
  namespace: string,
  serviceAccount: string,
  options: { boundToNode?: string; boundToPod?: string } = {},
): Promise<KubeConfig> {
  const bound = options.boundToNode
    ? ["--bound-object-kind=Node", `--bound-object-name=${options.boundToNode}`]
    : options.boundToPod
      ? ["--bound-object-kind=Pod", `--bound-object-name=${options.boundToPod}`]
      : [];
  const token = (
    await kubectlOk(["create", "token", serviceAccount, "-n", namespace, "--duration=1h", ...bound])
  ).trim();
  const admin = kubeConfig();
  const cluster = admin.getCurrentCluster();
  if (!cluster) throw new Error("the test kubeconfig has no current cluster");
  const user = `system:serviceaccount:${namespace}:${serviceAccount}`;
  const kc = new KubeConfig();
  kc.loadFromOptions({
    clusters: [{ ...cluster, name: "sluice-test" }],
    users: [{ name: user, token }],
    contexts: [{ name: user, cluster: "sluice-test", user }],
    currentContext: user,
  });
  return kc;
}

/** Writes `kc` to a file (0600) for a process that takes `--kubeconfig`; returns its path. */
export async function writeKubeConfig(kc: KubeConfig, dir: string, name: string): Promise<string> {
  const path = join(dir, `${name}.kubeconfig`);
  await writeFile(path, kc.exportConfig(), { mode: 0o600 });
  return path;
}
