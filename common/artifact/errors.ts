import { Reason } from "../api/conditions.ts";
import { SluiceError, type RetryClass } from "../errors.ts";

/**
 * Typed artifact errors. Each one names the file it is about (relative to the repository for
 * builds, to the archive for extraction) so that the GitSource status tells a user which file
 * of their repository to fix; the file is also an issue of the error.
 */

/** Base class of every artifact failure: packing or storing failed, retried (ArtifactFailed). */
export class ArtifactError extends SluiceError {
  constructor(
    message: string,
    /** The offending file, when there is one. */
    readonly file?: string,
    reason: Reason = Reason.ArtifactFailed,
    retry: RetryClass = "backoff",
  ) {
    super(reason, message, { retry, issues: file === undefined ? [] : [{ file, path: "", message }] });
    this.name = "ArtifactError";
  }
}

/** A path leaves the repository or archive (`..`, absolute), does not exist, or is no directory. */
export class ArtifactPathError extends ArtifactError {
  constructor(message: string, file?: string) {
    super(message, file);
    this.name = "ArtifactPathError";
  }
}

/** A symbolic link points outside the artifact, nowhere, or at a directory. */
export class ArtifactSymlinkError extends ArtifactError {
  constructor(message: string, file: string) {
    super(message, file);
    this.name = "ArtifactSymlinkError";
  }
}

/** Which bound of {@link ArtifactLimits} was crossed. */
export type ArtifactLimitKind = "fileBytes" | "totalBytes" | "files";

/** A file is too large, the whole is too large, or there are too many entries. */
export class ArtifactLimitError extends ArtifactError {
  constructor(
    message: string,
    readonly limit: ArtifactLimitKind,
    file?: string,
  ) {
    super(message, file);
    this.name = "ArtifactLimitError";
  }
}

/** An archive is corrupt or holds entries that artifacts never contain (links, devices). */
export class ArtifactFormatError extends ArtifactError {
  constructor(message: string, file?: string) {
    super(message, file);
    this.name = "ArtifactFormatError";
  }
}

/** Downloaded bytes do not hash to the digest the plan promised: they are not used. */
export class ArtifactDigestMismatchError extends ArtifactError {
  constructor(
    readonly url: string,
    readonly expected: string,
    readonly actual: string,
  ) {
    // The same URL serves the same wrong bytes until the plan changes.
    super(
      `artifact ${url}: digest mismatch: expected ${expected}, got ${actual}`,
      undefined,
      Reason.DigestMismatch,
      "stall",
    );
    this.name = "ArtifactDigestMismatchError";
  }
}

/** The artifact could not be downloaded (connection failure, HTTP status, timeout). */
export class ArtifactFetchError extends ArtifactError {
  constructor(
    message: string,
    readonly status?: number,
  ) {
    // The server (the operator) may be restarting: waited for.
    super(message, undefined, Reason.ArtifactFetchFailed, "wait");
    this.name = "ArtifactFetchError";
  }
}
