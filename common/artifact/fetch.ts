import { createHash } from "node:crypto";
import { DEFAULT_ARTIFACT_LIMITS, type ArtifactLimits } from "./build.ts";
import {
  ArtifactDigestMismatchError,
  ArtifactError,
  ArtifactFetchError,
  ArtifactLimitError,
} from "./errors.ts";
import { extract, type ExtractResult } from "./extract.ts";
import { digestHex } from "./store.ts";

/** Options of {@link fetchArtifact}. */
export interface FetchArtifactOptions {
  limits?: ArtifactLimits;
  /** Whole-download deadline. Default 60 s. */
  timeoutMs?: number;
  /** Cancels the download (for example when the agent shuts down). */
  signal?: AbortSignal;
}

/**
 * Downloads an artifact, checks that its bytes hash to `digest` and only then extracts it into
 * `dir` (empty or absent). This is how a node agent gets the exact tree the operator planned:
 * a proxy, a stale cache or a tampered server yields {@link ArtifactDigestMismatchError} and
 * nothing on disk.
 *
 * @throws {ArtifactFetchError} the download failed (status, connection, timeout)
 * @throws {ArtifactDigestMismatchError} the bytes are not the ones promised
 * @throws {ArtifactLimitError} the download or its contents exceed `limits`
 * @throws {ArtifactError} anything {@link extract} refuses
 */
export async function fetchArtifact(
  url: string,
  digest: string,
  dir: string,
  options: FetchArtifactOptions = {},
): Promise<ExtractResult & { digest: string }> {
  const expectedHex = digestHex(digest);
  if (!expectedHex) throw new ArtifactError(`invalid digest ${JSON.stringify(digest)}`);
  const limits = options.limits ?? DEFAULT_ARTIFACT_LIMITS;
  // A compressed archive is never larger than its contents plus headers.
  const maxDownload = limits.maxTotalBytes + (limits.maxFiles + 2) * 1536;
  const timeout = AbortSignal.timeout(options.timeoutMs ?? 60_000);
  const signal = options.signal ? AbortSignal.any([options.signal, timeout]) : timeout;

  const chunks: Buffer[] = [];
  const hash = createHash("sha256");
  try {
    const response = await fetch(url, { signal, redirect: "error" });
    if (response.status !== 200 || !response.body) {
      await response.body?.cancel();
      throw new ArtifactFetchError(`artifact ${url}: HTTP ${response.status}`, response.status);
    }
    const declared = Number(response.headers.get("content-length") ?? "0");
    if (declared > maxDownload) {
      await response.body.cancel();
      throw new ArtifactLimitError(
        `artifact ${url} is ${declared} bytes, over the ${maxDownload}-byte download limit`,
        "totalBytes",
      );
    }
    let received = 0;
    for await (const chunk of response.body) {
      received += chunk.length;
      if (received > maxDownload)
        throw new ArtifactLimitError(
          `artifact ${url} exceeds the ${maxDownload}-byte download limit`,
          "totalBytes",
        );
      const buffer = Buffer.from(chunk);
      hash.update(buffer);
      chunks.push(buffer);
    }
  } catch (err) {
    if (err instanceof ArtifactError) throw err;
    const reason = timeout.aborted
      ? `timed out after ${options.timeoutMs ?? 60_000} ms`
      : (err as Error).message;
    throw new ArtifactFetchError(`artifact ${url}: ${reason}`);
  }
  const actual = `sha256:${hash.digest("hex")}`;
  if (actual !== `sha256:${expectedHex}`)
    throw new ArtifactDigestMismatchError(url, `sha256:${expectedHex}`, actual);
  const result = await extract(Buffer.concat(chunks), dir, limits);
  return { ...result, digest: actual };
}
