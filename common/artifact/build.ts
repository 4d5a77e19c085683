import { createHash } from "node:crypto";
import { lstat, readdir, readFile, readlink, realpath, stat } from "node:fs/promises";
import { isAbsolute, join, posix, relative, sep } from "node:path";
import { gzipSync } from "node:zlib";
import { ArtifactLimitError, ArtifactPathError, ArtifactSymlinkError } from "./errors.ts";
import { writeTar, type TarEntry } from "./tar.ts";

/** Bounds that keep a hostile repository or archive from exhausting disk, memory or time. */
export interface ArtifactLimits {
  /** Largest single file, in bytes. */
  maxFileBytes: number;
  /** Sum of all file sizes, in bytes. */
  maxTotalBytes: number;
  /** Number of entries (files and directories). */
  maxFiles: number;
}

/**
 * Defaults sized for manifests and network-function sources: a 4 MiB C file is already far
 * beyond anything the BPF verifier would load.
 */
export const DEFAULT_ARTIFACT_LIMITS: Readonly<ArtifactLimits> = Object.freeze({
  maxFileBytes: 4 << 20,
  maxTotalBytes: 64 << 20,
  maxFiles: 10_000,
});

/** A built artifact, not yet stored. */
export interface Artifact {
  /** The gzip-compressed tar archive. */
  tarball: Buffer;
  /** `sha256:<hex>` of {@link tarball}. */
  digest: string;
  /** Number of regular files in the archive. */
  files: number;
  /** Sum of their sizes (uncompressed). */
  bytes: number;
}

/** `sha256:<hex>` of some bytes: the digest form used in status and NodeChain plans. */
export function sha256Digest(bytes: Buffer): string {
  return `sha256:${createHash("sha256").update(bytes).digest("hex")}`;
}

/** True when `child` is `parent` itself or lies below it (both absolute, resolved). */
export function isInside(parent: string, child: string): boolean {
  const rel = relative(parent, child);
  return rel === "" || (rel !== ".." && !rel.startsWith(`..${sep}`) && !isAbsolute(rel));
}

/**
 * Normalizes a path given inside a repository (`./deploy`, `deploy/`, `.`), refusing any that
 * could leave it: absolute paths and `..` that climbs above the root.
 */
export function normalizeRepoPath(path: string): string {
  if (path.includes("\0"))
    throw new ArtifactPathError(`path ${JSON.stringify(path)} contains a NUL byte`, path);
  if (isAbsolute(path) || posix.isAbsolute(path))
    throw new ArtifactPathError(`path ${path} is absolute; give a path inside the repository`, path);
  const normalized = posix.normalize(path.replace(/\\/g, "/") || ".").replace(/\/+$/, "");
  if (normalized === ".." || normalized.startsWith("../")) {
    throw new ArtifactPathError(`path ${path} leaves the repository`, path);
  }
  return normalized === "" ? "." : normalized;
}

const byteOrder = (a: string, b: string) => Buffer.compare(Buffer.from(a), Buffer.from(b));

/**
 * Packs `path` of a checkout into a deterministic tar.gz: entries sorted by name (byte order),
 * every mtime, uid and gid zero, modes reduced to 0644/0755 (all Git records), so the same
 * tree always gives the same digest whatever the clock, umask or user. The archive holds the
 * contents of `path` at its root; `.git` is never included.
 *
 * Symbolic links: a link to a regular file inside `path` is stored as a copy of that file
 * (archives and their readers then never deal in links); a link that leaves `path`, dangles,
 * loops or points at a directory is refused. Refusing directory links keeps the walk finite
 * and every file stored once.
 *
 * @throws {ArtifactPathError} `path` is absolute, leaves the repository, is missing or no directory
 * @throws {ArtifactSymlinkError} a symbolic link that is not a link to a file inside `path`
 * @throws {ArtifactLimitError} a file, the total or the entry count exceeds `limits`
 */
export async function buildArtifact(
  checkoutDir: string,
  path = ".",
  limits: ArtifactLimits = DEFAULT_ARTIFACT_LIMITS,
): Promise<Artifact> {
  const repoPath = normalizeRepoPath(path);
  const repoRoot = await realpath(checkoutDir);
  let base: string;
  try {
    base = await realpath(join(repoRoot, repoPath));
  } catch {
    throw new ArtifactPathError(`path ${repoPath} does not exist in the repository`, repoPath);
  }
  // `path` itself may run through a symlinked directory of the repository: judge where it lands.
  if (!isInside(repoRoot, base))
    throw new ArtifactPathError(`path ${repoPath} leads outside the repository`, repoPath);
  if (!(await stat(base)).isDirectory())
    throw new ArtifactPathError(`path ${repoPath} is not a directory`, repoPath);

  const entries: TarEntry[] = [];
  let bytes = 0;
  let files = 0;
  const shown = (rel: string) => (repoPath === "." ? rel : `${repoPath}/${rel}`);

  const addFile = async (rel: string, abs: string, size: number, mode: number) => {
    if (size > limits.maxFileBytes) {
      throw new ArtifactLimitError(
        `${shown(rel)} is ${size} bytes, over the ${limits.maxFileBytes}-byte limit per file`,
        "fileBytes",
        shown(rel),
      );
    }
    bytes += size;
    if (bytes > limits.maxTotalBytes) {
      throw new ArtifactLimitError(
        `artifact exceeds ${limits.maxTotalBytes} bytes at ${shown(rel)}`,
        "totalBytes",
        shown(rel),
      );
    }
    const content = await readFile(abs);
    if (content.length !== size)
      throw new ArtifactPathError(`${shown(rel)} changed while being read`, shown(rel));
    files++;
    entries.push({ type: "file", path: rel, executable: (mode & 0o111) !== 0, content });
  };

  const walk = async (dirRel: string): Promise<void> => {
    const names = (await readdir(join(base, dirRel))).filter((n) => n !== ".git").sort(byteOrder);
    for (const name of names) {
      const rel = dirRel ? `${dirRel}/${name}` : name;
      const abs = join(base, rel);
      if (entries.length + 1 > limits.maxFiles) {
        throw new ArtifactLimitError(
          `artifact has more than ${limits.maxFiles} entries (at ${shown(rel)})`,
          "files",
          shown(rel),
        );
      }
      const info = await lstat(abs);
      if (info.isDirectory()) {
        entries.push({ type: "directory", path: rel });
        await walk(rel);
      } else if (info.isFile()) {
        await addFile(rel, abs, info.size, info.mode);
      } else if (info.isSymbolicLink()) {
        const target = await readlink(abs);
        let resolved: string;
        try {
          resolved = await realpath(abs);
        } catch {
          throw new ArtifactSymlinkError(
            `${shown(rel)} is a symbolic link to ${target}, which does not exist`,
            shown(rel),
          );
        }
        if (!isInside(base, resolved)) {
          throw new ArtifactSymlinkError(
            `${shown(rel)} is a symbolic link to ${target}, outside ${repoPath}`,
            shown(rel),
          );
        }
        const targetInfo = await stat(resolved);
        if (!targetInfo.isFile()) {
          throw new ArtifactSymlinkError(
            `${shown(rel)} is a symbolic link to a directory (${target}); only links to files are allowed`,
            shown(rel),
          );
        }
        await addFile(rel, resolved, targetInfo.size, targetInfo.mode);
      } else {
        throw new ArtifactPathError(
          `${shown(rel)} is not a regular file, directory or symbolic link`,
          shown(rel),
        );
      }
    }
  };
  await walk("");

  const tarball = gzipSync(writeTar(entries), { level: 9 });
  return { tarball, digest: sha256Digest(tarball), files, bytes };
}
