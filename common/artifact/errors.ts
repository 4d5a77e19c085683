/**
 * Typed artifact errors. Each one names the file it is about (relative to the repository for
 * builds, to the archive for extraction) so that the GitSource status tells a user which file
 * of their repository to fix.
 */

/** Base class of every artifact failure. */
export class ArtifactError extends Error {
  constructor(
    message: string,
    /** The offending file, when there is one. */
    readonly file?: string,
  ) {
    super(message);
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
    super(`artifact ${url}: digest mismatch: expected ${expected}, got ${actual}`);
    this.name = "ArtifactDigestMismatchError";
  }
}

/** The artifact could not be downloaded (connection failure, HTTP status, timeout). */
export class ArtifactFetchError extends ArtifactError {
  constructor(
    message: string,
    readonly status?: number,
  ) {
    super(message);
    this.name = "ArtifactFetchError";
  }
}
