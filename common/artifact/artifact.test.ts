import { execFileSync } from "node:child_process";
import {
  chmod,
  cp,
  mkdir,
  mkdtemp,
  readdir,
  readFile,
  rm,
  stat,
  symlink,
  utimes,
  writeFile,
} from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { gzipSync } from "node:zlib";
import { create as tarCreate } from "tar";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import {
  ArtifactFormatError,
  ArtifactLimitError,
  ArtifactPathError,
  ArtifactStore,
  ArtifactSymlinkError,
  buildArtifact,
  extract,
  sha256Digest,
} from "./index.ts";
import { writeTar } from "./tar.ts";

let tmp: string;
let repo: string;
beforeEach(async () => {
  tmp = await mkdtemp(join(tmpdir(), "sluice-artifact-"));
  repo = join(tmp, "repo");
  await mkdir(repo);
});
afterEach(async () => {
  await rm(tmp, { recursive: true, force: true });
});

async function write(root: string, files: Record<string, string>): Promise<void> {
  for (const [path, text] of Object.entries(files)) {
    await mkdir(dirname(join(root, path)), { recursive: true });
    await writeFile(join(root, path), text);
  }
}

/** Every file below `dir` with its content, for comparing trees. */
async function tree(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const entry of await readdir(dir, { recursive: true, withFileTypes: true })) {
    const abs = join(entry.parentPath, entry.name);
    if (entry.isFile()) out[abs.slice(dir.length + 1)] = await readFile(abs, "utf8");
  }
  return out;
}

const sample = {
  "manifests/chain.yaml": "kind: ServiceChain\n",
  "manifests/nfs/fw.yaml": "kind: NetworkFunction\n",
  "nf/ratelimit.c": "int x;\n",
  "README.md": "hi\n",
};

describe("buildArtifact", () => {
  it("the same tree gives the same digest whatever the mtimes, umask-dependent modes and location", async () => {
    await write(repo, sample);
    const first = await buildArtifact(repo);
    const copy = join(tmp, "copy");
    await cp(repo, copy, { recursive: true });
    await utimes(join(copy, "README.md"), new Date(2001, 1, 1), new Date(2001, 1, 1));
    await chmod(join(copy, "nf/ratelimit.c"), 0o664);
    const second = await buildArtifact(copy);
    expect(second.digest).toBe(first.digest);
    expect(first.digest).toBe(sha256Digest(first.tarball));
    expect(first).toMatchObject({ files: 4, bytes: 51 });

    await writeFile(join(copy, "README.md"), "changed\n");
    expect((await buildArtifact(copy)).digest).not.toBe(first.digest);
    await chmod(join(copy, "nf/ratelimit.c"), 0o755);
    await writeFile(join(copy, "README.md"), "hi\n");
    expect((await buildArtifact(copy)).digest).not.toBe(first.digest); // the exec bit is content
  });

  it("packs the contents of a sub-path at the archive root, without .git, and round-trips through extract", async () => {
    await write(repo, { ...sample, ".git/config": "[core]\n", "manifests/.git": "gitdir: x\n" });
    await chmod(join(repo, "nf/ratelimit.c"), 0o755);
    const artifact = await buildArtifact(repo, "./manifests/");
    const out = join(tmp, "out");
    await extract(artifact.tarball, out);
    expect(await tree(out)).toEqual({
      "chain.yaml": "kind: ServiceChain\n",
      "nfs/fw.yaml": "kind: NetworkFunction\n",
    });

    const whole = join(tmp, "whole");
    await extract((await buildArtifact(repo)).tarball, whole);
    expect((await stat(join(whole, "nf/ratelimit.c"))).mode & 0o777).toBe(0o755);
    expect((await stat(join(whole, "README.md"))).mode & 0o777).toBe(0o644);
    expect(Object.keys(await tree(whole)).some((p) => p.includes(".git"))).toBe(false);
  });

  it("writes a standard archive: GNU tar lists it with zero mtimes and root ownership", async () => {
    await write(repo, sample);
    const longName = `${"d".repeat(80)}/${"f".repeat(80)}.yaml`;
    await write(repo, { [longName]: "long\n" });
    const file = join(tmp, "a.tar.gz");
    await writeFile(file, (await buildArtifact(repo)).tarball);
    const listing = execFileSync("tar", ["--numeric-owner", "-tvzf", file], { encoding: "utf8" });
    expect(listing).toContain(longName);
    for (const line of listing.trim().split("\n"))
      expect(line).toMatch(/^(-rw-r--r--|-rwxr-xr-x|drwxr-xr-x) 0\/0 +\d+ 1970-01-01 00:00 /);
    const out = join(tmp, "gnu");
    await mkdir(out);
    execFileSync("tar", ["-xzf", file, "-C", out]);
    expect(await readFile(join(out, longName), "utf8")).toBe("long\n");
  });

  it.each([
    ["..", /leaves the repository/],
    ["manifests/../../x", /leaves the repository/],
    ["/etc", /absolute/],
    ["missing", /does not exist/],
    ["README.md", /not a directory/],
  ])("the path %j is refused", async (path, message) => {
    await write(repo, sample);
    await expect(buildArtifact(repo, path)).rejects.toThrow(message);
    await expect(buildArtifact(repo, path)).rejects.toBeInstanceOf(ArtifactPathError);
  });

  it("a path that runs through a symlinked directory out of the repository is refused", async () => {
    await write(repo, sample);
    await symlink(tmp, join(repo, "escape"));
    await expect(buildArtifact(repo, "escape")).rejects.toThrow(/leads outside the repository/);
  });

  it.each([
    ["an absolute symlink out", "/etc/passwd", /outside/],
    ["a relative symlink out", "../../secret.txt", /outside/],
    ["a dangling symlink", "nowhere.yaml", /does not exist/],
    ["a symlink to a directory", "nfs", /directory/],
  ])("%s is refused with the file named", async (_what, target, message) => {
    await write(repo, sample);
    await writeFile(join(tmp, "secret.txt"), "secret");
    await symlink(target, join(repo, "manifests/link.yaml"));
    const err = await buildArtifact(repo, "manifests").catch((e) => e);
    expect(err).toBeInstanceOf(ArtifactSymlinkError);
    expect(err.file).toBe("manifests/link.yaml");
    expect(err.message).toMatch(message);
  });

  it("a symlink to a file outside the artifact path but inside the repository is refused too", async () => {
    await write(repo, sample);
    await symlink("../README.md", join(repo, "manifests/readme"));
    await expect(buildArtifact(repo, "manifests")).rejects.toBeInstanceOf(ArtifactSymlinkError);
  });

  it("a symlink to a file inside is stored as a copy of the file", async () => {
    await write(repo, sample);
    await symlink("nfs/fw.yaml", join(repo, "manifests/alias.yaml"));
    const out = join(tmp, "out");
    await extract((await buildArtifact(repo, "manifests")).tarball, out);
    expect(await readFile(join(out, "alias.yaml"), "utf8")).toBe("kind: NetworkFunction\n");
    expect(
      (await import("node:fs/promises").then((fs) => fs.lstat(join(out, "alias.yaml")))).isSymbolicLink(),
    ).toBe(false);
  });

  it.each([
    ["fileBytes", { maxFileBytes: 10, maxTotalBytes: 1000, maxFiles: 100 }, "manifests/chain.yaml"],
    ["totalBytes", { maxFileBytes: 1000, maxTotalBytes: 30, maxFiles: 100 }, "manifests/nfs/fw.yaml"],
    ["files", { maxFileBytes: 1000, maxTotalBytes: 1000, maxFiles: 2 }, "manifests/nfs/fw.yaml"],
  ] as const)("the %s limit is enforced and names the file", async (limit, limits, file) => {
    await write(repo, sample);
    const err = await buildArtifact(repo, "manifests", limits).catch((e) => e);
    expect(err).toBeInstanceOf(ArtifactLimitError);
    expect(err).toMatchObject({ limit, file });
  });
});

describe("extract of hostile archives", () => {
  const out = () => join(tmp, "out");

  async function tarWith(
    entries: { path: string; type?: "File" | "SymbolicLink" | "Link"; linkpath?: string; body?: string }[],
  ) {
    const { Header } = await import("tar");
    const blocks: Buffer[] = [];
    for (const e of entries) {
      const body = Buffer.from(e.body ?? "");
      const h = new Header({
        path: e.path,
        type: e.type ?? "File",
        size: e.type && e.type !== "File" ? 0 : body.length,
        mode: 0o644,
        linkpath: e.linkpath ?? "",
      });
      const block = Buffer.alloc(512);
      h.encode(block);
      blocks.push(block);
      if (!e.type || e.type === "File") blocks.push(body, Buffer.alloc((512 - (body.length % 512)) % 512));
    }
    blocks.push(Buffer.alloc(1024));
    return gzipSync(Buffer.concat(blocks));
  }

  it.each([
    ["a parent-directory member", [{ path: "../evil.txt", body: "x" }], ArtifactPathError, /leaves/],
    [
      "a nested parent-directory member",
      [{ path: "a/../../evil.txt", body: "x" }],
      ArtifactPathError,
      /leaves/,
    ],
    ["an absolute member", [{ path: "/tmp/evil.txt", body: "x" }], ArtifactPathError, /unsafe name/],
    [
      "a symlink member",
      [{ path: "link", type: "SymbolicLink" as const, linkpath: "/etc" }],
      ArtifactFormatError,
      /link is a link/,
    ],
    [
      "a hard link member",
      [{ path: "link", type: "Link" as const, linkpath: "/etc/passwd" }],
      ArtifactFormatError,
      /link is a link/,
    ],
    [
      "a duplicate member",
      [
        { path: "a.txt", body: "1" },
        { path: "a.txt", body: "2" },
      ],
      ArtifactFormatError,
      /collides/,
    ],
  ])("%s is refused and nothing leaves the directory", async (_what, entries, errorClass, message) => {
    const tarball = await tarWith(entries);
    const err = await extract(tarball, out()).catch((e) => e);
    expect(err).toBeInstanceOf(errorClass);
    expect(err.message).toMatch(message);
    expect(await readdir(tmp)).not.toContain("evil.txt");
  });

  it("a symlink planted by a real tar tool is refused before anything is written", async () => {
    await write(repo, { "a.txt": "a" });
    await symlink("/etc", join(repo, "etc-link"));
    const file = join(tmp, "t.tgz");
    await tarCreate({ gzip: true, file, cwd: repo, portable: true }, ["a.txt", "etc-link"]);
    await expect(extract(await readFile(file), out())).rejects.toBeInstanceOf(ArtifactFormatError);
    expect(await readdir(out())).toEqual([]);
  });

  it("a gzip bomb stops at the size limit", async () => {
    const bomb = gzipSync(
      writeTar([{ type: "file", path: "zeros", executable: false, content: Buffer.alloc(32 << 20) }]),
    );
    expect(bomb.length).toBeLessThan(100_000);
    const err = await extract(bomb, out(), {
      maxFileBytes: 1 << 20,
      maxTotalBytes: 4 << 20,
      maxFiles: 10,
    }).catch((e) => e);
    expect(err).toBeInstanceOf(ArtifactLimitError);
  });

  it("an oversized member is refused by name", async () => {
    const tarball = gzipSync(
      writeTar([{ type: "file", path: "big.c", executable: false, content: Buffer.alloc(2000) }]),
    );
    const err = await extract(tarball, out(), {
      maxFileBytes: 1000,
      maxTotalBytes: 10_000,
      maxFiles: 10,
    }).catch((e) => e);
    expect(err).toMatchObject({ limit: "fileBytes", file: "big.c" });
  });

  it("garbage is a format error and a non-empty target directory is refused", async () => {
    await expect(extract(Buffer.from("not gzip at all"), out())).rejects.toBeInstanceOf(ArtifactFormatError);
    await expect(extract(gzipSync(Buffer.alloc(512, 7)), join(tmp, "o2"))).rejects.toBeInstanceOf(
      ArtifactFormatError,
    );
    await write(repo, { "a.txt": "a" });
    await expect(extract((await buildArtifact(repo)).tarball, repo)).rejects.toBeInstanceOf(
      ArtifactPathError,
    );
  });
});

describe("ArtifactStore", () => {
  async function artifactOf(text: string) {
    const dir = join(tmp, `tree-${text}`);
    await write(dir, { "a.txt": text });
    return buildArtifact(dir);
  }

  it("stores under <ns>/<name>/<hex>.tar.gz and finds artifacts by digest", async () => {
    const store = new ArtifactStore(join(tmp, "store"));
    const a = await artifactOf("a");
    const stored = await store.put("team-a", "repo", a);
    const hex = a.digest.slice("sha256:".length);
    expect(stored).toMatchObject({
      digest: a.digest,
      path: join(tmp, "store", "team-a", "repo", `${hex}.tar.gz`),
      urlPath: `/artifacts/team-a/repo/${hex}.tar.gz`,
      size: a.tarball.length,
    });
    expect(await readFile(stored.path)).toEqual(a.tarball);
    expect(await store.get("team-a", "repo", a.digest)).toMatchObject({ path: stored.path });
    expect(await store.get("team-a", "other", a.digest)).toBeUndefined();
    expect(await store.get("team-a", "repo", `sha256:${"0".repeat(64)}`)).toBeUndefined();
    expect(await store.get("..", "repo", a.digest)).toBeUndefined();
  });

  it("keeps only the newest N per source; re-putting an old digest makes it newest again", async () => {
    const store = new ArtifactStore(join(tmp, "store"), { keep: 3 });
    const artifacts = [];
    for (const text of ["1", "2", "3", "4"]) {
      artifacts.push(await artifactOf(text));
      await store.put("ns", "src", artifacts.at(-1)!);
    }
    expect((await store.list("ns", "src")).map((a) => a.digest)).toEqual([
      artifacts[3]!.digest,
      artifacts[2]!.digest,
      artifacts[1]!.digest,
    ]);
    await store.put("ns", "src", artifacts[1]!);
    await store.put("ns", "src", await artifactOf("5"));
    const kept = (await store.list("ns", "src")).map((a) => a.digest);
    expect(kept).toHaveLength(3);
    expect(kept.slice(1)).toEqual([artifacts[1]!.digest, artifacts[3]!.digest]);
    expect(await store.get("ns", "src", artifacts[0]!.digest)).toBeUndefined();
    await store.remove("ns", "src");
    expect(await store.list("ns", "src")).toEqual([]);
  });

  it("refuses bytes that do not match their digest and names that are not object names", async () => {
    const store = new ArtifactStore(join(tmp, "store"));
    const a = await artifactOf("a");
    await expect(store.put("ns", "src", { tarball: Buffer.from("x"), digest: a.digest })).rejects.toThrow(
      /does not match/,
    );
    await expect(store.put("../up", "src", a)).rejects.toThrow(/invalid namespace or name/);
  });
});
