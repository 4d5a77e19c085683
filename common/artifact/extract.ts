import { mkdir, readdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { gunzipSync } from "node:zlib";
import { DEFAULT_ARTIFACT_LIMITS, type ArtifactLimits } from "./build.ts";
import { ArtifactFormatError, ArtifactLimitError, ArtifactPathError } from "./errors.ts";
import { readTar } from "./tar.ts";

/** What {@link extract} wrote. */
export interface ExtractResult {
  /** Regular files written. */
  files: number;
  /** Their total size in bytes. */
  bytes: number;
}

/** Splits an archive member name into safe segments, or refuses it. */
function safeSegments(name: string): string[] {
  if (name === "" || name.includes("\0") || name.includes("\\") || name.startsWith("/")) {
    throw new ArtifactPathError(`archive member ${JSON.stringify(name)} has an unsafe name`, name);
  }
  const segments = name.split("/").filter((s) => s !== "" && s !== ".");
  if (segments.length === 0 || segments.includes("..")) {
    throw new ArtifactPathError(
      `archive member ${JSON.stringify(name)} leaves the extraction directory`,
      name,
    );
  }
  return segments;
}

/**
 * Unpacks an artifact tar.gz into `dir`, which must be empty or absent. Call it only on bytes
 * whose digest was verified (see `fetchArtifact`); it is nevertheless safe on hostile input:
 * member names with `..`, absolute names, links of any kind and device files are refused; the
 * decompressed size is capped before inflating (no gzip bombs); files are created exclusively,
 * so a duplicate member cannot overwrite an earlier one; modes are 0644 or 0755 only.
 * A failure may leave a partial tree in `dir`: extract into a fresh directory and rename it
 * into place once this resolves.
 *
 * @throws {ArtifactPathError} a member name is unsafe, or `dir` is not empty
 * @throws {ArtifactLimitError} a file, the total or the member count exceeds `limits`
 * @throws {ArtifactFormatError} the archive is corrupt or holds links/devices/duplicates
 */
export async function extract(
  tarball: Buffer,
  dir: string,
  limits: ArtifactLimits = DEFAULT_ARTIFACT_LIMITS,
): Promise<ExtractResult> {
  await mkdir(dir, { recursive: true });
  if ((await readdir(dir)).length > 0)
    throw new ArtifactPathError(`extraction directory ${dir} is not empty`);

  let tar: Buffer;
  try {
    // Headers and padding take at most three blocks per member (pax, header, padding).
    tar = gunzipSync(tarball, { maxOutputLength: limits.maxTotalBytes + (limits.maxFiles + 2) * 1536 });
  } catch (err) {
    if (err instanceof RangeError || (err as NodeJS.ErrnoException).code === "ERR_BUFFER_TOO_LARGE") {
      throw new ArtifactLimitError(`archive inflates beyond ${limits.maxTotalBytes} bytes`, "totalBytes");
    }
    throw new ArtifactFormatError(`archive is not valid gzip: ${(err as Error).message}`);
  }

  const members: {
    type: "directory" | "file";
    segments: string[];
    name: string;
    mode: number;
    content: Buffer;
  }[] = [];
  let bytes = 0;
  readTar(tar, (entry) => {
    if (members.length + 1 > limits.maxFiles) {
      throw new ArtifactLimitError(
        `archive has more than ${limits.maxFiles} members (at ${entry.path})`,
        "files",
        entry.path,
      );
    }
    const segments = safeSegments(entry.path);
    if (entry.type === "file") {
      if (entry.size > limits.maxFileBytes) {
        throw new ArtifactLimitError(
          `${entry.path} is ${entry.size} bytes, over the ${limits.maxFileBytes}-byte limit per file`,
          "fileBytes",
          entry.path,
        );
      }
      bytes += entry.size;
      if (bytes > limits.maxTotalBytes) {
        throw new ArtifactLimitError(
          `archive exceeds ${limits.maxTotalBytes} bytes at ${entry.path}`,
          "totalBytes",
          entry.path,
        );
      }
    }
    members.push({ type: entry.type, segments, name: entry.path, mode: entry.mode, content: entry.content });
  });

  // Every check passed before the first byte is written. No links are ever created, so each
  // path below `dir` resolves to `dir/<segments>`: nothing can redirect a write elsewhere.
  let files = 0;
  for (const member of members) {
    const target = join(dir, ...member.segments);
    try {
      if (member.type === "directory") {
        await mkdir(target, { recursive: true, mode: 0o755 });
      } else {
        if (member.segments.length > 1)
          await mkdir(join(dir, ...member.segments.slice(0, -1)), { recursive: true, mode: 0o755 });
        await writeFile(target, member.content, { flag: "wx", mode: member.mode & 0o111 ? 0o755 : 0o644 });
        files++;
      }
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === "EEXIST" || code === "ENOTDIR") {
        throw new ArtifactFormatError(
          `archive member ${member.name} collides with another member`,
          member.name,
        );
      }
      throw err;
    }
  }
  return { files, bytes };
}
