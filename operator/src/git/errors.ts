import { Reason } from "../../../common/api/index.ts";
import { SluiceError, type RetryClass } from "../../../common/errors.ts";

/**
 * Typed Git sync errors. Each class carries the condition reason the GitSource reports and
 * what the controller does next: a spec that cannot work (two refs, a malformed SHA, a scheme
 * that is not allowed) stalls until the spec changes; refused credentials, a missing ref, a
 * timeout and other failures are retried at the source's interval, since a Secret, a push or
 * the network can fix them without a spec change.
 *
 * Messages never contain credentials: URLs are redacted before they reach an error or a log.
 */

/** Any Git failure that has no more specific class (network down, repository missing, ...). */
export class GitError extends SluiceError {
  constructor(
    message: string,
    /** Git's own stderr (redacted, trimmed), for status and logs. */
    readonly detail?: string,
    reason: Reason = Reason.GitOperationFailed,
    retry: RetryClass = "backoff",
  ) {
    super(reason, message, { retry, ...(detail !== undefined && { log: detail }) });
    this.name = "GitError";
  }
}

/** The server refused the credentials (or the SSH host key did not match known_hosts). */
export class GitAuthError extends GitError {
  constructor(message: string, detail?: string) {
    super(message, detail, Reason.AuthenticationFailed);
    this.name = "GitAuthError";
  }
}

/** The branch, tag, semver range or commit does not exist in the repository. */
export class GitRefNotFoundError extends GitError {
  constructor(message: string, detail?: string) {
    super(message, detail, Reason.RefNotFound);
    this.name = "GitRefNotFoundError";
  }
}

/** The sync did not finish within its timeout; the git processes were killed. */
export class GitTimeoutError extends GitError {
  constructor(readonly timeoutMs: number) {
    super(`git sync timed out after ${timeoutMs} ms`);
    this.name = "GitTimeoutError";
  }
}

/**
 * The sync options are not usable as given (two refs at once, a malformed commit SHA or semver
 * range, a URL scheme that is not allowed). A stalling error: retrying cannot help.
 */
export class GitSpecError extends GitError {
  constructor(message: string) {
    super(message, undefined, Reason.InvalidSpec, "stall");
    this.name = "GitSpecError";
  }
}

/** Replaces `user:password@` in any URL inside `text` so credentials never reach a log. */
export function redactUrls(text: string): string {
  return text
    .replace(/([a-z][a-z0-9+.-]*:\/\/)[^/@\s]+@/gi, "$1***@")
    .replace(/(Authorization:\s*)\S+(\s+\S+)?/gi, "$1***");
}
