import { existsSync, readdirSync } from "node:fs";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { createServer, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  GitAuthError,
  GitError,
  GitRefNotFoundError,
  GitSpecError,
  GitTimeoutError,
  sync,
} from "../../../operator/src/git/index.ts";
import {
  createSshShim,
  createTestRepo,
  startGitDaemon,
  startGitHttpServer,
  type GitHttpServer,
  type GitServer,
  type SshShim,
  type TestRepo,
} from "../../support/git-servers.ts";

let cacheRoot: string;
let clones = 0;
/** A fresh working clone per test: sources never share one. */
const newWorkDir = () => join(cacheRoot, `source-${++clones}`);
const read = (dir: string, file: string) => readFile(join(dir, file), "utf8");

beforeAll(async () => {
  cacheRoot = await mkdtemp(join(tmpdir(), "sluice-sync-cache-"));
});
afterAll(async () => {
  await rm(cacheRoot, { recursive: true, force: true });
});

describe("sync over file://", () => {
  let repo: TestRepo;
  const shas: Record<string, string> = {};
  beforeAll(async () => {
    repo = await createTestRepo();
    shas.first = await repo.commit({ "manifests/chain.yaml": "one\n", "README.md": "hello\n" }, "first");
    await repo.tag("v1.0.0");
    shas.second = await repo.commit({ "manifests/chain.yaml": "two\n" }, "second");
    await repo.tag("v1.2.0", { annotated: true });
    await repo.tag("v2.0.0-rc.1");
    await repo.tag("not-a-version");
    shas.third = await repo.commit({ "manifests/chain.yaml": "three\n", "README.md": null }, "third");
  });
  afterAll(() => repo.cleanup());

  it("a branch syncs to its head and reports <branch>@sha1:<sha>", async () => {
    const workDir = newWorkDir();
    const result = await sync({ url: repo.fileUrl, ref: { branch: "main" }, workDir });
    expect(result).toEqual({ revision: `main@sha1:${shas.third}`, commit: shas.third, dir: workDir });
    expect(await read(workDir, "manifests/chain.yaml")).toBe("three\n");
    expect(existsSync(join(workDir, "README.md"))).toBe(false);
  });

  it("a new commit gives a new revision, and local debris is gone after the next sync", async () => {
    const workDir = newWorkDir();
    const before = await sync({ url: repo.fileUrl, ref: { branch: "main" }, workDir });
    await import("node:fs/promises").then((fs) => fs.writeFile(join(workDir, "stray.txt"), "left behind"));
    const fourth = await repo.commit({ "manifests/extra.yaml": "extra\n" }, "fourth");
    const after = await sync({ url: repo.fileUrl, ref: { branch: "main" }, workDir });
    expect(before.revision).not.toBe(after.revision);
    expect(after.revision).toBe(`main@sha1:${fourth}`);
    expect(await read(workDir, "manifests/extra.yaml")).toBe("extra\n");
    expect(existsSync(join(workDir, "stray.txt"))).toBe(false);
    await repo.forcePush(shas.third!);
  });

  it("a force-push back to an older commit yields that older commit", async () => {
    const workDir = newWorkDir();
    const branchRepo = await createTestRepo();
    try {
      const old = await branchRepo.commit({ "f.txt": "old\n" }, "old");
      const newer = await branchRepo.commit({ "f.txt": "new\n" }, "new");
      expect((await sync({ url: branchRepo.fileUrl, ref: { branch: "main" }, workDir })).commit).toBe(newer);
      await branchRepo.forcePush(old);
      const result = await sync({ url: branchRepo.fileUrl, ref: { branch: "main" }, workDir });
      expect(result.revision).toBe(`main@sha1:${old}`);
      expect(await read(workDir, "f.txt")).toBe("old\n");
    } finally {
      await branchRepo.cleanup();
    }
  });

  it.each([
    ["lightweight", "v1.0.0", "first", "one\n"],
    ["annotated", "v1.2.0", "second", "two\n"],
  ])("a %s tag syncs to the commit it points at", async (_kind, tag, commit, content) => {
    const workDir = newWorkDir();
    const result = await sync({ url: repo.fileUrl, ref: { tag }, workDir });
    expect(result.revision).toBe(`${tag}@sha1:${shas[commit]}`);
    expect(result.commit).toBe(shas[commit]);
    expect(await read(workDir, "manifests/chain.yaml")).toBe(content);
  });

  it("a semver range syncs to the highest matching tag and follows new releases", async () => {
    const workDir = newWorkDir();
    const first = await sync({ url: repo.fileUrl, ref: { semver: "^1.0.0" }, workDir });
    expect(first).toMatchObject({ revision: `v1.2.0@sha1:${shas.second}`, tag: "v1.2.0" });
    await repo.tag("v1.3.0", { at: shas.third });
    const second = await sync({ url: repo.fileUrl, ref: { semver: "^1.0.0" }, workDir });
    expect(second).toMatchObject({ revision: `v1.3.0@sha1:${shas.third}`, tag: "v1.3.0" });
    expect((await sync({ url: repo.fileUrl, ref: { semver: "~1.0" }, workDir })).revision).toBe(
      `v1.0.0@sha1:${shas.first}`,
    );
  });

  it("a commit that is not a branch tip syncs and reports sha1:<sha>", async () => {
    const workDir = newWorkDir();
    const result = await sync({ url: repo.fileUrl, ref: { commit: shas.first! }, workDir });
    expect(result.revision).toBe(`sha1:${shas.first}`);
    expect(await read(workDir, "README.md")).toBe("hello\n");
  });

  it.each([
    ["branch", { branch: "nope" }],
    ["tag", { tag: "v9.9.9" }],
    ["semver", { semver: ">=5.0.0" }],
    ["commit", { commit: "0123456789abcdef0123456789abcdef01234567" }],
  ])("a missing %s fails with GitRefNotFoundError", async (_kind, ref) => {
    await expect(sync({ url: repo.fileUrl, ref, workDir: newWorkDir() })).rejects.toBeInstanceOf(
      GitRefNotFoundError,
    );
  });

  it.each([
    ["no ref", {}],
    ["two refs", { branch: "main", tag: "v1.0.0" }],
    ["a short commit", { commit: "abc123" }],
    ["a bad semver range", { semver: "^^1" }],
    ["a branch that looks like an option", { branch: "--upload-pack=touch" }],
  ])("%s is a GitSpecError before anything runs", async (_what, ref) => {
    const workDir = newWorkDir();
    await expect(sync({ url: repo.fileUrl, ref, workDir })).rejects.toBeInstanceOf(GitSpecError);
    expect(existsSync(workDir)).toBe(false);
  });

  it.each(["ext::sh -c touch% /tmp/pwned", "/abs/path/repo.git", "--upload-pack=x"])(
    "the URL %j is refused",
    async (url) => {
      await expect(sync({ url, ref: { branch: "main" }, workDir: newWorkDir() })).rejects.toBeInstanceOf(
        GitSpecError,
      );
    },
  );

  it("a missing repository is a plain GitError", async () => {
    const err = await sync({
      url: `${repo.fileUrl}-missing`,
      ref: { branch: "main" },
      workDir: newWorkDir(),
    }).catch((e) => e);
    expect(err).toBeInstanceOf(GitError);
    expect(err).not.toBeInstanceOf(GitAuthError);
    expect(err).not.toBeInstanceOf(GitRefNotFoundError);
  });

  it("two concurrent syncs of one working clone both succeed", async () => {
    const workDir = newWorkDir();
    const [a, b] = await Promise.all([
      sync({ url: repo.fileUrl, ref: { tag: "v1.0.0" }, workDir }),
      sync({ url: repo.fileUrl, ref: { branch: "main" }, workDir }),
    ]);
    expect(a.commit).toBe(shas.first);
    expect(b.commit).toBe(shas.third);
    expect(await read(workDir, "manifests/chain.yaml")).toBe("three\n");
  });
});

describe("sync over git daemon", () => {
  let repo: TestRepo;
  let daemon: GitServer;
  beforeAll(async () => {
    repo = await createTestRepo({ name: "chains" });
    daemon = await startGitDaemon(repo.serveRoot);
  });
  afterAll(async () => {
    await daemon.stop();
    await repo.cleanup();
  });

  it("branch, force-push and commit refs work over git://", async () => {
    const workDir = newWorkDir();
    const a = await repo.commit({ "x.yaml": "a\n" }, "a");
    const b = await repo.commit({ "x.yaml": "b\n" }, "b");
    expect((await sync({ url: daemon.url("chains"), ref: { branch: "main" }, workDir })).revision).toBe(
      `main@sha1:${b}`,
    );
    await repo.forcePush(a);
    expect((await sync({ url: daemon.url("chains"), ref: { branch: "main" }, workDir })).revision).toBe(
      `main@sha1:${a}`,
    );
    expect(await read(workDir, "x.yaml")).toBe("a\n");
    expect((await sync({ url: daemon.url("chains"), ref: { commit: b }, workDir })).revision).toBe(
      `sha1:${b}`,
    );
  });
});

describe("sync over smart HTTP with credentials", () => {
  let repo: TestRepo;
  let server: GitHttpServer;
  let head: string;
  const password = "s3cret-pa55";
  const token = "tok-0123456789";
  beforeAll(async () => {
    repo = await createTestRepo({ name: "private" });
    head = await repo.commit({ "chain.yaml": "private\n" }, "private");
    server = await startGitHttpServer(repo.serveRoot, {
      basic: { username: "alice", password },
      bearerToken: token,
    });
  });
  afterAll(async () => {
    await server.stop();
    await repo.cleanup();
  });

  it("the right username and password sync, and the password is stored nowhere in the clone", async () => {
    const workDir = newWorkDir();
    const result = await sync({
      url: server.url("private"),
      ref: { branch: "main" },
      workDir,
      auth: { type: "basic", username: "alice", password },
    });
    expect(result.revision).toBe(`main@sha1:${head}`);
    expect(await read(workDir, "chain.yaml")).toBe("private\n");
    expect(server.requests.some((r) => r.authorized && r.authorization?.startsWith("Basic "))).toBe(true);
    const gitFiles = ["config", "FETCH_HEAD"].filter((f) => existsSync(join(workDir, ".git", f)));
    for (const f of gitFiles) expect(await read(workDir, join(".git", f))).not.toContain(password);
    expect(await read(workDir, ".git/config")).not.toMatch(/extraheader|authorization/i);
  });

  it.each([
    ["a wrong password", { type: "basic" as const, username: "alice", password: "wrong" }],
    ["a wrong token", { type: "bearer" as const, token: "nope" }],
    ["no credentials", undefined],
  ])("%s fails with GitAuthError that does not leak the secret", async (_what, auth) => {
    const err = await sync({
      url: server.url("private"),
      ref: { branch: "main" },
      workDir: newWorkDir(),
      ...(auth ? { auth } : {}),
    }).catch((e) => e);
    expect(err).toBeInstanceOf(GitAuthError);
    expect(`${err.message} ${err.detail}`).not.toMatch(/wrong|nope/);
  });

  it("a bearer token syncs", async () => {
    const workDir = newWorkDir();
    const result = await sync({
      url: server.url("private"),
      ref: { branch: "main" },
      workDir,
      auth: { type: "bearer", token },
    });
    expect(result.commit).toBe(head);
    expect(server.requests.some((r) => r.authorized && r.authorization === `Bearer ${token}`)).toBe(true);
  });

  it("credentials in the URL never show up in the error message", async () => {
    const url = server.url("private").replace("http://", "http://alice:leaky-pass@");
    const err = await sync({ url, ref: { branch: "main" }, workDir: newWorkDir() }).catch((e) => e);
    expect(err).toBeInstanceOf(GitAuthError);
    expect(err.message).toContain("http://***@127.0.0.1");
    expect(`${err.message} ${err.detail}`).not.toContain("leaky-pass");
  });
});

describe("sync over ssh", () => {
  let repo: TestRepo;
  let shim: SshShim;
  let head: string;
  beforeAll(async () => {
    repo = await createTestRepo({ name: "over-ssh" });
    head = await repo.commit({ "chain.yaml": "ssh\n" }, "ssh");
    shim = await createSshShim();
  });
  afterAll(async () => {
    await shim.cleanup();
    await repo.cleanup();
  });
  const url = () => `ssh://git@git.example.test${repo.bareDir}`;

  it("the key and known_hosts go to ssh as private files that are removed afterwards", async () => {
    const workDir = newWorkDir();
    const result = await sync({
      url: url(),
      ref: { branch: "main" },
      workDir,
      sshCommand: shim.command,
      auth: { type: "ssh", privateKey: shim.privateKey, knownHosts: shim.knownHosts },
    });
    expect(result.revision).toBe(`main@sha1:${head}`);
    expect(await read(workDir, "chain.yaml")).toBe("ssh\n");
    const line = (await readFile(shim.logFile, "utf8")).trim().split("\n").at(-1)!;
    const key = /key=(\S+)/.exec(line)![1]!;
    const knownHosts = /knownhosts=(\S+)/.exec(line)![1]!;
    expect(line).toMatch(/mode=600 /);
    expect(line).toMatch(/strict=yes /);
    expect(line).toContain("host=git@git.example.test");
    expect(existsSync(key)).toBe(false);
    expect(existsSync(knownHosts)).toBe(false);
  });

  it.each([
    [
      "an unknown host key",
      () => ({ privateKey: shim.privateKey, knownHosts: "git.example.test ssh-ed25519 AAAAother" }),
    ],
    ["a wrong private key", () => ({ privateKey: "not the key", knownHosts: shim.knownHosts })],
  ])("%s fails with GitAuthError", async (_what, creds) => {
    const err = await sync({
      url: url(),
      ref: { branch: "main" },
      workDir: newWorkDir(),
      sshCommand: shim.command,
      auth: { type: "ssh", ...creds() },
    }).catch((e) => e);
    expect(err).toBeInstanceOf(GitAuthError);
  });
});

describe("timeouts", () => {
  let hang: Server;
  let port: number;
  const sockets: Socket[] = [];
  beforeAll(async () => {
    // Accepts connections and never says a word, like a server behind a broken proxy.
    hang = createServer((socket) => sockets.push(socket));
    await new Promise<void>((resolve) => hang.listen(0, "127.0.0.1", resolve));
    port = (hang.address() as { port: number }).port;
  });
  afterAll(async () => {
    for (const s of sockets) s.destroy();
    await new Promise((resolve) => hang.close(resolve));
  });

  it("a server that never answers fails with GitTimeoutError near the deadline, and the clone stays usable", async () => {
    const workDir = newWorkDir();
    const started = Date.now();
    const err = await sync({
      url: `git://127.0.0.1:${port}/repo.git`,
      ref: { branch: "main" },
      workDir,
      timeoutMs: 1_500,
    }).catch((e) => e);
    expect(err).toBeInstanceOf(GitTimeoutError);
    expect(Date.now() - started).toBeLessThan(6_000);

    const repo = await createTestRepo();
    try {
      const sha = await repo.commit({ "a.txt": "a" });
      expect((await sync({ url: repo.fileUrl, ref: { branch: "main" }, workDir })).commit).toBe(sha);
      expect(readdirSync(join(workDir, ".git")).filter((f) => f.endsWith(".lock"))).toEqual([]);
    } finally {
      await repo.cleanup();
    }
  });
});

describe("URL schemes", () => {
  it("file:// can be turned off for multi-tenant use", async () => {
    const repo = await createTestRepo();
    try {
      await repo.commit({ "a.txt": "a" });
      const err = await sync({
        url: repo.fileUrl,
        ref: { branch: "main" },
        workDir: newWorkDir(),
        allowedSchemes: ["https", "ssh"],
      }).catch((e) => e);
      expect(err).toBeInstanceOf(GitSpecError);
      expect(err.message).toMatch(/allowed: https:\/\/, ssh:\/\/ or user@host:path/);
    } finally {
      await repo.cleanup();
    }
  });
});
