import { randomBytes } from "node:crypto";
import { mkdir, readdir, rename, rm, stat, utimes, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { sha256Digest } from "./build.ts";
import { ArtifactError } from "./errors.ts";

/** An artifact kept on disk by the {@link ArtifactStore}. */
export interface StoredArtifact {
  namespace: string;
  name: string;
  /** `sha256:<hex>`. */
  digest: string;
  /** Absolute path of the `.tar.gz` file. */
  path: string;
  /** URL path under which the artifact server serves it (`/artifacts/<ns>/<name>/<hex>.tar.gz`). */
  urlPath: string;
  size: number;
}

/** Kubernetes object names (RFC 1123 subdomain): safe as path segments, never `.` or `..`. */
const OBJECT_NAME = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

/** Returns the hex part of `sha256:<hex>` (or of a bare 64-digit hex), or undefined. */
export function digestHex(digest: string): string | undefined {
  const m = /^(?:sha256:)?([0-9a-f]{64})$/.exec(digest);
  return m?.[1];
}

/** The URL path of an artifact on the artifact server. */
export function artifactUrlPath(namespace: string, name: string, digest: string): string {
  return `/artifacts/${namespace}/${name}/${digestHex(digest) ?? "invalid"}.tar.gz`;
}

/**
 * Artifacts on disk, one directory per source: `<root>/<namespace>/<name>/<hex>.tar.gz`.
 * Bounded: after each {@link put} only the `keep` most recently put artifacts of that source
 * remain, enough for nodes still rolling out the previous revisions to fetch them.
 *
 * One writer per source at a time (the GitSource controller reconciles a source serially);
 * readers may run at any time, since files appear by atomic rename.
 */
export class ArtifactStore {
  /** Artifacts kept per source. */
  readonly keep: number;
  /** Artifacts kept beyond `keep` (`sha256:<hex>`): those a live plan still names. */
  retain: (namespace: string, name: string, digest: string) => boolean = () => false;

  constructor(
    /** Directory holding all artifacts; created on first put. */
    readonly root: string,
    options: { keep?: number } = {},
  ) {
    this.keep = Math.max(1, options.keep ?? 5);
  }

  private sourceDir(namespace: string, name: string): string {
    for (const part of [namespace, name]) {
      if (part.length > 253 || !OBJECT_NAME.test(part))
        throw new ArtifactError(`invalid namespace or name ${JSON.stringify(part)}`);
    }
    return join(this.root, namespace, name);
  }

  /** Where the artifact of `digest` lives (or would live); throws on malformed input. */
  pathOf(namespace: string, name: string, digest: string): string {
    const hex = digestHex(digest);
    if (!hex) throw new ArtifactError(`invalid digest ${JSON.stringify(digest)}`);
    return join(this.sourceDir(namespace, name), `${hex}.tar.gz`);
  }

  /**
   * Stores an artifact (verifying that its bytes match its digest), marks it the newest of its
   * source and drops the oldest beyond `keep`. Putting a digest that is already there only
   * marks it newest.
   */
  async put(
    namespace: string,
    name: string,
    artifact: { tarball: Buffer; digest: string },
  ): Promise<StoredArtifact> {
    const actual = sha256Digest(artifact.tarball);
    if (actual !== artifact.digest)
      throw new ArtifactError(`artifact digest ${artifact.digest} does not match its bytes (${actual})`);
    const path = this.pathOf(namespace, name, artifact.digest);
    const dir = this.sourceDir(namespace, name);
    await mkdir(dir, { recursive: true });
    const existing = await this.list(namespace, name);
    if (!existing.some((a) => a.digest === artifact.digest)) {
      const temp = join(dir, `.tmp-${randomBytes(6).toString("hex")}`);
      await writeFile(temp, artifact.tarball);
      await rename(temp, path);
    }
    // Recency is the file's mtime; keep it strictly increasing even within one clock tick.
    const newest = Math.max(0, ...existing.map((a) => a.mtimeMs));
    const when = new Date(Math.max(Date.now(), newest + 1));
    await utimes(path, when, when);
    for (const old of existing.filter((a) => a.digest !== artifact.digest).slice(this.keep - 1)) {
      if (this.retain(namespace, name, old.digest)) continue;
      await rm(old.path, { force: true });
    }
    return this.describe(namespace, name, artifact.digest, path, artifact.tarball.length);
  }

  /** The stored artifact of `digest`, or undefined when the store does not hold it. */
  async get(namespace: string, name: string, digest: string): Promise<StoredArtifact | undefined> {
    let path: string;
    try {
      path = this.pathOf(namespace, name, digest);
    } catch {
      return undefined;
    }
    try {
      const info = await stat(path);
      return info.isFile() ? this.describe(namespace, name, digest, path, info.size) : undefined;
    } catch {
      return undefined;
    }
  }

  /** The artifacts of one source, newest first. */
  async list(namespace: string, name: string): Promise<(StoredArtifact & { mtimeMs: number })[]> {
    const dir = this.sourceDir(namespace, name);
    let files: string[];
    try {
      files = await readdir(dir);
    } catch {
      return [];
    }
    const out: (StoredArtifact & { mtimeMs: number })[] = [];
    for (const file of files) {
      const hex = /^([0-9a-f]{64})\.tar\.gz$/.exec(file)?.[1];
      if (!hex) continue;
      const info = await stat(join(dir, file)).catch(() => undefined);
      if (info)
        out.push({
          ...this.describe(namespace, name, `sha256:${hex}`, join(dir, file), info.size),
          mtimeMs: info.mtimeMs,
        });
    }
    return out.sort((a, b) => b.mtimeMs - a.mtimeMs || a.digest.localeCompare(b.digest));
  }

  /** Deletes every artifact of a source (when its GitSource is deleted). */
  async remove(namespace: string, name: string): Promise<void> {
    await rm(this.sourceDir(namespace, name), { recursive: true, force: true });
  }

  private describe(
    namespace: string,
    name: string,
    digest: string,
    path: string,
    size: number,
  ): StoredArtifact {
    const hex = digestHex(digest)!;
    return {
      namespace,
      name,
      digest: `sha256:${hex}`,
      path,
      urlPath: artifactUrlPath(namespace, name, hex),
      size,
    };
  }
}
