import { createHash } from "node:crypto";
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

/**
 * SHA-256 over a directory tree: every regular file's relative path and content hash, and every
 * symlink's path and target (links are not followed), in sorted order. `.git` directories are
 * skipped. Equal trees give equal digests wherever they are on disk.
 */
export async function treeDigest(root: string, limits: TreeLimits = DEFAULT_TREE_LIMITS): Promise<string> {
  const lines: string[] = [];
  let files = 0;
  let bytes = 0;

  const walk = async (dir: string, rel: string): Promise<void> => {
    const entries = await readdir(dir, { withFileTypes: true });
    entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    for (const entry of entries) {
      const path = join(dir, entry.name);
      const relPath = rel ? `${rel}/${entry.name}` : entry.name;
      if (entry.isDirectory()) {
        if (entry.name === ".git") continue;
        await walk(path, relPath);
      } else if (entry.isSymbolicLink()) {
        lines.push(`L ${relPath}\0${await readlink(path)}`);
      } else if (entry.isFile()) {
        const stat = await lstat(path);
        files++;
        bytes += stat.size;
        const overLimit = { overLimit: true };
        if (stat.size > (limits.maxFileBytes ?? limits.maxBytes))
          throw new SourceTreeError(
            `${relPath} is ${stat.size} bytes, over the ${limits.maxFileBytes}-byte limit per source file`,
            overLimit,
          );
        if (files > limits.maxFiles)
          throw new SourceTreeError(`${root}: more than ${limits.maxFiles} files`, overLimit);
        if (bytes > limits.maxBytes)
          throw new SourceTreeError(`${root}: more than ${limits.maxBytes} bytes`, overLimit);
        const content = await readFile(path);
        lines.push(`F ${relPath}\0${createHash("sha256").update(content).digest("hex")}`);
      }
    }
  };

  try {
    await walk(root, "");
  } catch (err) {
    if (err instanceof SourceTreeError) throw err;
    throw new SourceTreeError(`${root}: ${(err as Error).message}`, { cause: err });
  }
  return createHash("sha256").update(lines.join("\n")).digest("hex");
}
