import { createHash } from "node:crypto";
import type { BigIntStats, Dirent } from "node:fs";
import { lstat, readFile, readdir, readlink } from "node:fs/promises";
import { join } from "node:path";

/** Limits on what a source tree may hold, so that a wrong source root fails fast. */
export interface TreeLimits {
  maxFiles: number;
  maxBytes: number;
  /** Largest single file; default: `maxBytes`. */
  maxFileBytes?: number;
}

/** Defaults: far above any NF source tree, far below a mistaken `/`. */
export const DEFAULT_TREE_LIMITS: TreeLimits = { maxFiles: 10_000, maxBytes: 256 * 1024 * 1024 };

/** The tree could not be hashed (unreadable, or over the limits). */
export class SourceTreeError extends Error {
  override name = "SourceTreeError";
  constructor(
    message: string,
    options?: ErrorOptions & {
      /** True when the tree is readable but over one of the {@link TreeLimits}. */
      overLimit?: boolean;
    },
  ) {
    super(message, options);
    this.overLimit = options?.overLimit ?? false;
  }
  readonly overLimit: boolean;
}

/** A file modified less than this long before it was hashed may change again unnoticed. */
const SETTLE_MS = 2000;
/** Entries of one directory read at the same time. */
const ENTRIES_AT_ONCE = 32;
/** Content hashes kept, by path (the most recent ones). */
const FILE_HASHES_KEPT = 4096;
const fileHashes = new Map<string, { stamp: string; hash: string }>();

/**
 * sha256 of a file's content, remembered while the file keeps its device, inode, size and
 * times: compiling from a warm cache hashes the NF's tree before every switch, and reading
 * every file again each time cost about 1 ms per NF. A file modified within the last seconds
 * is read every time (file times are coarse: a rewrite of the same size within one tick would
 * otherwise go unnoticed).
 */
async function fileHash(path: string, stat: BigIntStats): Promise<string> {
  const stamp = `${stat.dev}:${stat.ino}:${stat.size}:${stat.mtimeNs}:${stat.ctimeNs}`;
  const known = fileHashes.get(path);
  if (known?.stamp === stamp) return known.hash;
  const hash = createHash("sha256")
    .update(await readFile(path))
    .digest("hex");
  fileHashes.delete(path);
  const now = Date.now();
  if (now - Number(stat.mtimeMs) > SETTLE_MS && now - Number(stat.ctimeMs) > SETTLE_MS) {
    if (fileHashes.size >= FILE_HASHES_KEPT) fileHashes.delete(fileHashes.keys().next().value!);
    fileHashes.set(path, { stamp, hash });
  }
  return hash;
}

/**
 * SHA-256 over a directory tree: every regular file's relative path and content hash, and every
 * symlink's path and target (links are not followed), in sorted order. `.git` directories are
 * skipped. Equal trees give equal digests wherever they are on disk. The entries of a directory
 * are read at the same time.
 */
export async function treeDigest(root: string, limits: TreeLimits = DEFAULT_TREE_LIMITS): Promise<string> {
  let files = 0;
  let bytes = 0;

  const walk = async (dir: string, rel: string): Promise<string[]> => {
    const entries = await readdir(dir, { withFileTypes: true });
    entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    const one = async (entry: Dirent): Promise<string[]> => {
      const path = join(dir, entry.name);
      const relPath = rel ? `${rel}/${entry.name}` : entry.name;
      if (entry.isDirectory()) {
        if (entry.name === ".git") return [];
        return walk(path, relPath);
      }
      if (entry.isSymbolicLink()) return [`L ${relPath}\0${await readlink(path)}`];
      if (!entry.isFile()) return [];
      const stat = await lstat(path, { bigint: true });
      const size = Number(stat.size);
      files++;
      bytes += size;
      const overLimit = { overLimit: true };
      if (size > (limits.maxFileBytes ?? limits.maxBytes))
        throw new SourceTreeError(
          `${relPath} is ${size} bytes, over the ${limits.maxFileBytes}-byte limit per source file`,
          overLimit,
        );
      if (files > limits.maxFiles)
        throw new SourceTreeError(`${root}: more than ${limits.maxFiles} files`, overLimit);
      if (bytes > limits.maxBytes)
        throw new SourceTreeError(`${root}: more than ${limits.maxBytes} bytes`, overLimit);
      return [`F ${relPath}\0${await fileHash(path, stat)}`];
    };
    // A few at a time: a directory of thousands of files must not open them all at once.
    const lines: string[] = [];
    for (let k = 0; k < entries.length; k += ENTRIES_AT_ONCE) {
      const parts = await Promise.all(entries.slice(k, k + ENTRIES_AT_ONCE).map(one));
      lines.push(...parts.flat());
    }
    return lines;
  };

  let lines: string[];
  try {
    lines = await walk(root, "");
  } catch (err) {
    if (err instanceof SourceTreeError) throw err;
    throw new SourceTreeError(`${root}: ${(err as Error).message}`, { cause: err });
  }
  return createHash("sha256").update(lines.join("\n")).digest("hex");
}
