/**
 * Hostile repositories on a real kube-apiserver: paths and symbolic links that leave the
 * repository, oversized files, YAML alias bombs and kinds a repository may not define. Each
 * one ends with Ready False, a reason and a message naming the file, and nothing applied, not
 * even the valid manifest that sits beside the bad one.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CustomObjectsApi } from "@kubernetes/client-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startOperator, type RunningOperator } from "../../operator/src/operator.ts";
import { createTestRepo, type FileSpec, type TestRepo } from "../support/git-servers.ts";
import { createTestNamespace, kubeConfig, kubeconfigPath, kubectl, kubectlOk } from "./harness.ts";
import { type Condition, type GitSourceView, installCrds, readyOf } from "./sluice-support.ts";

const namespace = createTestNamespace("hostile");

const api = kubeConfig().makeApiClient(CustomObjectsApi);

async function waitForReady(name: string, timeoutMs = 20_000): Promise<Condition> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const gs = (await api.getNamespacedCustomObject({
      group: "sluice.dev",
      version: "v1alpha1",
      namespace,
      plural: "gitsources",
      name,
    })) as GitSourceView;
    const ready = readyOf(gs);
    if (ready) return ready;
    if (Date.now() > deadline)
      throw new Error(`GitSource ${name} has no Ready condition after ${timeoutMs} ms`);
    await new Promise((ok) => setTimeout(ok, 50));
  }
}

async function applySource(name: string, spec: Record<string, unknown>) {
  const obj = { apiVersion: "sluice.dev/v1alpha1", kind: "GitSource", metadata: { name, namespace }, spec };
  return kubectl(["apply", "-f", "-"], { input: JSON.stringify(obj) });
}

async function appliedFrom(name: string): Promise<string> {
  return (
    await kubectlOk([
      "get",
      "networkfunctions,servicechains,nodechains",
      "-n",
      namespace,
      "-l",
      `sluice.dev/source=${namespace}.${name}`,
      "-o",
      "name",
    ])
  ).trim();
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

/** "Billion laughs": nine aliases of nine aliases of ..., 9^7 strings once expanded. */
const aliasBomb = `apiVersion: sluice.dev/v1alpha1
kind: NetworkFunction
metadata:
  name: bomb
spec:
  hooks: [xdp]
  source:
    builtin: noop
  tables:
    a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
    b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
    c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
    d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
    e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
    f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
    g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
`;

interface HostileCase {
  name: string;
  title: string;
  files: Record<string, FileSpec>;
  path?: string;
  reason: string;
  message: RegExp;
}

const MiB = 1 << 20;

const cases: HostileCase[] = [
  {
    name: "path-link",
    title: "spec.path through a symbolic link to the directory above the checkout",
    // `..` of the checkout is the operator's own directory of working clones.
    files: { deploy: { symlink: ".." } },
    path: "deploy",
    reason: "ArtifactFailed",
    message: /path deploy leads outside the repository/,
  },
  {
    name: "file-link",
    title: "a manifest that is a symbolic link to a file outside the repository",
    files: { "evil.yaml": { symlink: "/etc/passwd" } },
    reason: "ArtifactFailed",
    message: /evil\.yaml is a symbolic link to \/etc\/passwd, outside/,
  },
  {
    name: "dir-link",
    title: "a symbolic link to a directory inside the repository (no loops, no double reads)",
    files: { "nfs/x.yaml": nf("dir-link-x"), loop: { symlink: "." } },
    reason: "ArtifactFailed",
    message: /loop is a symbolic link to a directory/,
  },
  {
    name: "big-yaml",
    title: "a manifest over the 1 MiB manifest limit",
    files: { "big.yaml": `# ${"x".repeat(MiB + 100)}\n` },
    reason: "ManifestsInvalid",
    message: /big\.yaml: file is \d+ bytes, over the 1048576-byte limit/,
  },
  {
    name: "big-blob",
    title: "a file over the 4 MiB artifact limit",
    files: { "firmware.bin": Buffer.alloc(5 * MiB, 7) },
    reason: "ArtifactFailed",
    message: /firmware\.bin is 5242880 bytes, over the 4194304-byte limit per file/,
  },
  {
    name: "alias-bomb",
    title: "a YAML alias bomb",
    files: { "bomb.yaml": aliasBomb },
    reason: "ManifestsInvalid",
    message: /bomb\.yaml: document 1: YAML aliases expand too much/,
  },
  {
    name: "configmap",
    title: "a Kubernetes object that is not a sluice kind",
    files: {
      "cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm\ndata:\n  a: b\n",
    },
    reason: "ManifestsInvalid",
    message: /cm\.yaml: document 1 \(ConfigMap cm\): apiVersion: v1 is not a sluice API version/,
  },
  {
    name: "nodechain",
    title: "a NodeChain, which only the operator writes",
    files: {
      "nc.yaml": `apiVersion: sluice.dev/v1alpha1
kind: NodeChain
metadata:
  name: edge-node-1
spec:
  nodeName: node-1
  chain: edge
  revision: abc
  interfaces: [eth0]
  hook: xdp
  functions:
    - name: noop
      networkFunction: noop
      source:
        builtin: noop
`,
    },
    reason: "ManifestsInvalid",
    message:
      /nc\.yaml: document 1 \(NodeChain edge-node-1\): kind: NodeChain objects cannot come from a repository/,
  },
];

let operator: RunningOperator;
let dataDir: string;
const repos: TestRepo[] = [];

beforeAll(async () => {
  await installCrds();
  dataDir = await mkdtemp(join(tmpdir(), "sluice-op-"));
  operator = await startOperator({
    kubeconfig: kubeconfigPath(),
    namespace,
    port: 0,
    host: "127.0.0.1",
    dataDir,
    // The hostile repositories are local bare repositories (file://, allowed only with this flag).
    sources: { allowFileSources: true },
  });
});

afterAll(async () => {
  await operator?.stop();
  for (const repo of repos) await repo.cleanup();
  if (dataDir) await rm(dataDir, { recursive: true, force: true });
});

describe("hostile repositories fail safely", () => {
  it("spec.path with '..' is refused by the API server, naming spec.path", async () => {
    const result = await applySource("dotdot", { url: "file:///tmp/any.git", path: "deploy/../../.." });
    expect(result.code).not.toBe(0);
    expect(result.stderr).toMatch(/spec\.path/);
    expect((await kubectl(["get", "gitsource", "dotdot", "-n", namespace])).stderr).toMatch(/NotFound/);
  });

  it.each(cases)("$title: Ready False/$reason naming the file, nothing applied", async (c) => {
    const repo = await createTestRepo({ name: c.name });
    repos.push(repo);
    // A valid manifest beside the hostile content: it must not be applied either.
    await repo.commit({ [`${c.path ?? "."}/ok.yaml`.replace(/^\.\//, "")]: nf(`${c.name}-ok`), ...c.files });
    const applied = await applySource(c.name, {
      url: repo.fileUrl,
      interval: "1h",
      ...(c.path ? { path: c.path } : {}),
    });
    expect(applied.code, applied.stderr).toBe(0);

    const ready = await waitForReady(c.name);
    expect(ready.status).toBe("False");
    expect(ready.reason).toBe(c.reason);
    expect(ready.message).toMatch(c.message);
    // Which commit is refused: status.artifact still shows none (or the last good one).
    expect(ready.message).toMatch(/^revision main@sha1:[0-9a-f]{40} rejected: /);
    expect(await appliedFrom(c.name)).toBe("");
    const gs = JSON.parse(
      await kubectlOk(["get", "gitsource", c.name, "-n", namespace, "-o", "json"]),
    ) as GitSourceView;
    expect(gs.status?.inventory ?? []).toEqual([]);
    expect(gs.status?.lastAppliedRevision).toBeUndefined();
    const warning = await kubectlOk([
      "get",
      "events",
      "-n",
      namespace,
      "--field-selector",
      `involvedObject.name=${c.name},type=Warning`,
      "-o",
      "jsonpath={.items[*].reason}",
    ]);
    expect(warning).toContain(c.reason);
  });

  it("a source that was fine keeps its objects when a hostile commit arrives, and recovers after", async () => {
    const repo = await createTestRepo({ name: "turned" });
    repos.push(repo);
    const good = await repo.commit({ "ok.yaml": nf("turned-ok") });
    await applySource("turned", { url: repo.fileUrl, interval: "1h" });
    await kubectlOk(["wait", "--for=condition=Ready", "gitsource/turned", "-n", namespace, "--timeout=20s"]);

    await repo.commit({
      "ok.yaml": nf("turned-ok"),
      "evil.yaml": { symlink: "/etc/passwd" },
      "bomb.yaml": aliasBomb,
    });
    await kubectlOk([
      "annotate",
      "--overwrite",
      "gitsource/turned",
      "-n",
      namespace,
      `sluice.dev/reconcile-at=${Date.now()}`,
    ]);
    await kubectlOk([
      "wait",
      "--for=condition=Ready=False",
      "gitsource/turned",
      "-n",
      namespace,
      "--timeout=20s",
    ]);
    const ready = await waitForReady("turned");
    expect(ready.reason).toBe("ArtifactFailed");
    expect(ready.message).toMatch(/evil\.yaml is a symbolic link/);
    expect(await appliedFrom("turned")).toBe("networkfunction.sluice.dev/turned-ok");
    const status = JSON.parse(
      await kubectlOk(["get", "gitsource", "turned", "-n", namespace, "-o", "json"]),
    ) as GitSourceView;
    expect(status.status?.lastAppliedRevision).toBe(`main@sha1:${good}`);
    expect(status.status?.artifact?.revision).toBe(`main@sha1:${good}`);

    const fixed = await repo.commit({ "evil.yaml": null, "bomb.yaml": null, "more.yaml": nf("turned-more") });
    await kubectlOk([
      "annotate",
      "--overwrite",
      "gitsource/turned",
      "-n",
      namespace,
      `sluice.dev/reconcile-at=${Date.now()}`,
    ]);
    await kubectlOk([
      "wait",
      `--for=jsonpath={.status.lastAppliedRevision}=main@sha1:${fixed}`,
      "gitsource/turned",
      "-n",
      namespace,
      "--timeout=20s",
    ]);
    expect((await appliedFrom("turned")).split("\n").sort()).toEqual([
      "networkfunction.sluice.dev/turned-more",
      "networkfunction.sluice.dev/turned-ok",
    ]);
  });
});
