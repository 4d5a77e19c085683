/**
 * The Kubernetes-free source pipeline end to end, on real repositories served by `git daemon`:
 * sync -> artifact -> store -> HTTP -> fetch + verify -> load manifests; and what hostile
 * repositories get at each step.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  ArtifactLimitError,
  ArtifactPathError,
  ArtifactStore,
  ArtifactSymlinkError,
  buildArtifact,
  fetchArtifact,
} from "../../../common/artifact/index.ts";
import { sync } from "../../../operator/src/git/index.ts";
import { loadRevision } from "../../../operator/src/manifests/index.ts";
import { SourceServer } from "../../../operator/src/server/index.ts";
import { createTestRepo, startGitDaemon, type GitServer, type TestRepo } from "../../support/git-servers.ts";

const nf = `apiVersion: sluice.dev/v1alpha1
kind: NetworkFunction
metadata:
  name: ratelimit
spec:
  hooks: [xdp]
  source:
    builtin: ratelimit
`;
const chain = `apiVersion: sluice.dev/v1alpha1
kind: ServiceChain
metadata:
  name: web
spec:
  functions:
    - name: ratelimit
  attachment:
    interfaces: [eth0]
    hook: xdp
`;

let tmp: string;
let serveRoot: string;
let daemon: GitServer;
let server: SourceServer;
let base: string;
let store: ArtifactStore;
let clones = 0;
const workDir = () => join(tmp, `clone-${++clones}`);

beforeAll(async () => {
  tmp = await mkdtemp(join(tmpdir(), "sluice-pipeline-"));
  serveRoot = join(tmp, "srv");
  await import("node:fs/promises").then((fs) => fs.mkdir(serveRoot));
  daemon = await startGitDaemon(serveRoot);
  store = new ArtifactStore(join(tmp, "artifacts"));
  server = new SourceServer({ store });
  base = (await server.listen(0, "127.0.0.1")).url;
});
afterAll(async () => {
  await server.close();
  await daemon.stop();
  await rm(tmp, { recursive: true, force: true });
});

describe("source pipeline", () => {
  let repo: TestRepo;
  beforeAll(async () => {
    repo = await createTestRepo({ name: "platform", serveRoot });
  });

  it("a commit becomes an artifact whose manifests load on the far side of HTTP", async () => {
    await repo.commit({
      "deploy/nfs/ratelimit.yaml": nf,
      "deploy/chain.yaml": chain,
      "bpf/ratelimit.c": "int x;\n",
    });
    const synced = await sync({ url: daemon.url("platform"), ref: { branch: "main" }, workDir: workDir() });
    const artifact = await buildArtifact(synced.dir, "deploy");
    const stored = await store.put("team-a", "platform", artifact);
    server.publishArtifact("team-a", "platform", artifact.digest);

    const agentDir = join(tmp, "agent", artifact.digest.slice(7));
    await fetchArtifact(`${base}${stored.urlPath}`, artifact.digest, agentDir);
    const loaded = await loadRevision(agentDir, { displayPrefix: "deploy" });
    expect(loaded.ok && loaded.objects.map((o) => `${o.kind}/${o.metadata.name}`)).toEqual([
      "ServiceChain/web",
      "NetworkFunction/ratelimit",
    ]);
  });

  it("two independent clones of one commit give the same digest; a new commit a new one", async () => {
    const a = await sync({ url: daemon.url("platform"), ref: { branch: "main" }, workDir: workDir() });
    const b = await sync({ url: repo.fileUrl, ref: { commit: a.commit }, workDir: workDir() });
    const digestA = (await buildArtifact(a.dir, "deploy")).digest;
    expect((await buildArtifact(b.dir, "deploy")).digest).toBe(digestA);
    await repo.commit({ "deploy/chain.yaml": chain.replace("eth0", "eth1") });
    const c = await sync({ url: daemon.url("platform"), ref: { branch: "main" }, workDir: a.dir });
    expect((await buildArtifact(c.dir, "deploy")).digest).not.toBe(digestA);
  });

  it("a schema error in the repository names the file, document and field", async () => {
    await repo.commit({ "deploy/chain.yaml": chain.replace("    - name: ratelimit", "    - alias: first") });
    const synced = await sync({ url: daemon.url("platform"), ref: { branch: "main" }, workDir: workDir() });
    const loaded = await loadRevision(join(synced.dir, "deploy"), { displayPrefix: "deploy" });
    expect(loaded.ok).toBe(false);
    if (!loaded.ok)
      expect(loaded.message).toMatch(
        /^deploy\/chain\.yaml: document 1 \(ServiceChain web\): spec\.functions\[0\]\.name: /,
      );
  });
});

describe("hostile repositories", () => {
  let count = 0;
  async function hostile(files: Parameters<TestRepo["commit"]>[0]) {
    const repo = await createTestRepo({ name: `hostile-${++count}`, serveRoot });
    await repo.commit(files);
    return sync({ url: daemon.url(repo.name), ref: { branch: "main" }, workDir: workDir() });
  }

  it("a path with .. is refused", async () => {
    const synced = await hostile({ "deploy/chain.yaml": chain });
    await expect(buildArtifact(synced.dir, "../..")).rejects.toBeInstanceOf(ArtifactPathError);
    await expect(buildArtifact(synced.dir, "deploy/../../x")).rejects.toBeInstanceOf(ArtifactPathError);
  });

  it("a committed symlink to a host file is refused, naming the link", async () => {
    const synced = await hostile({
      "deploy/chain.yaml": chain,
      "deploy/passwd.yaml": { symlink: "/etc/passwd" },
    });
    const err = await buildArtifact(synced.dir, "deploy").catch((e) => e);
    expect(err).toBeInstanceOf(ArtifactSymlinkError);
    expect(err.file).toBe("deploy/passwd.yaml");
  });

  it("a committed symlink out through .. is refused", async () => {
    const synced = await hostile({ "deploy/up.yaml": { symlink: "../../../../../../etc/hostname" } });
    await expect(buildArtifact(synced.dir, "deploy")).rejects.toBeInstanceOf(ArtifactSymlinkError);
  });

  it("an oversized file is refused by name", async () => {
    const synced = await hostile({ "deploy/chain.yaml": chain, "deploy/huge.bin": Buffer.alloc(300_000, 1) });
    const err = await buildArtifact(synced.dir, "deploy", {
      maxFileBytes: 100_000,
      maxTotalBytes: 1 << 20,
      maxFiles: 100,
    }).catch((e) => e);
    expect(err).toBeInstanceOf(ArtifactLimitError);
    expect(err).toMatchObject({ limit: "fileBytes", file: "deploy/huge.bin" });
  });

  it("an alias bomb and a non-sluice kind fail the revision with their files named", async () => {
    const bomb = ["a: &a [x, x, x, x, x, x, x, x, x]"];
    for (let i = 1; i < 9; i++)
      bomb.push(
        `l${i}: &l${i} [${Array(9)
          .fill(i === 1 ? "*a" : `*l${i - 1}`)
          .join(", ")}]`,
      );
    const synced = await hostile({
      "deploy/bomb.yaml": `${bomb.join("\n")}\n`,
      "deploy/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm\n",
      "deploy/chain.yaml": chain,
    });
    const started = Date.now();
    const loaded = await loadRevision(join(synced.dir, "deploy"), { displayPrefix: "deploy" });
    expect(Date.now() - started).toBeLessThan(2_000);
    expect(loaded.ok).toBe(false);
    if (!loaded.ok) {
      expect(loaded.errors.map((e) => e.file)).toEqual(["deploy/bomb.yaml", "deploy/cm.yaml"]);
      expect(loaded.errors[0]!.message).toMatch(/alias/);
      expect(loaded.errors[1]).toMatchObject({ kind: "ConfigMap", path: "apiVersion" });
    }
  });
});
