/**
 * Git sync for GitSource: fetch a branch, tag, semver-matched tag or commit into a working
 * clone, with HTTPS or SSH credentials, and report the revision. Knows nothing of Kubernetes.
 */
export {
  sync,
  type GitAuth,
  type GitRef,
  type GitSyncOptions,
  type GitSyncResult,
  type GitUrlScheme,
} from "./sync.ts";
export {
  GitAuthError,
  GitError,
  GitRefNotFoundError,
  GitSpecError,
  GitTimeoutError,
  redactUrls,
} from "./errors.ts";
export {
  compareVersions,
  maxSatisfying,
  parseRange,
  parseVersion,
  satisfies,
  SemverRangeError,
  type SemVer,
  type SemverRange,
} from "./semver.ts";
