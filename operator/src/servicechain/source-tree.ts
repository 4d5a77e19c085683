import { createHash } from "node:crypto";
import { posix } from "node:path";
import { gunzipSync } from "node:zlib";
import { readTar } from "../../../common/artifact/tar.ts";

/**
 * What an NF whose source is a `path` inside a GitSource artifact actually uses: the tree of the
 * entry file's directory. The agent compiles with that directory as the source root (clang may
 * read nothing else of the artifact, and the compile cache hashes exactly that tree), so a commit
 * that changes files outside it changes nothing the node runs, and must not change the plan's
 * revision.
 */

/** The directory of an entry file inside an artifact: `nf/fw/main.c` → `nf/fw`, `main.c` → `.`. */
export function sourceDirOf(entry: string): string {
  return posix.dirname(posix.normalize(entry));
}

/** Key of a (artifact digest, source directory) pair in {@link PlanInputs.sourceTrees}. */
export function sourceTreeKey(artifactDigest: string, entry: string): string {
  return `${artifactDigest}:${sourceDirOf(entry)}`;
}

/**
 * `sha256:<hex>` of the files under `dir` in an artifact (`.` is the whole artifact): a hash of
 * every file's path relative to `dir`, executable bit and content, in path order. Directories
 * and the artifact's other files do not count, nor does anything the tar format adds (order of
 * members, pax headers).
 */
export function sourceTreeDigest(tarball: Buffer, dir: string): string {
  const prefix = dir === "." ? "" : `${posix.normalize(dir).replace(/\/+$/, "")}/`;
  const files: { path: string; line: string }[] = [];
  readTar(gunzipSync(tarball), (entry) => {
    if (entry.type !== "file") return;
    const path = entry.path
      .split("/")
      .filter((s) => s !== "" && s !== ".")
      .join("/");
    if (!path.startsWith(prefix)) return;
    const relative = path.slice(prefix.length);
    const content = createHash("sha256").update(entry.content).digest("hex");
    const executable = (entry.mode & 0o111) !== 0 ? "x" : "-";
    files.push({ path: relative, line: `${JSON.stringify(relative)} ${executable} ${content}\n` });
  });
  files.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  const hash = createHash("sha256");
  for (const f of files) hash.update(f.line);
  return `sha256:${hash.digest("hex")}`;
}
