/**
 * Artifacts: a source revision packed as a deterministic tar.gz with a sha256 digest, kept in a
 * bounded on-disk store, downloaded and unpacked safely by agents. Knows nothing of Kubernetes.
 *
 * This folder imports only Node built-ins, so the node agent can use `extract` and
 * `fetchArtifact` without depending on the rest of the operator.
 */
export {
  buildArtifact,
  DEFAULT_ARTIFACT_LIMITS,
  normalizeRepoPath,
  sha256Digest,
  type Artifact,
  type ArtifactLimits,
} from "./build.ts";
export { extract, type ExtractResult } from "./extract.ts";
export { fetchArtifact, type FetchArtifactOptions } from "./fetch.ts";
export { ArtifactStore, artifactUrlPath, digestHex, type StoredArtifact } from "./store.ts";
export {
  ArtifactDigestMismatchError,
  ArtifactError,
  ArtifactFetchError,
  ArtifactFormatError,
  ArtifactLimitError,
  ArtifactPathError,
  ArtifactSymlinkError,
  type ArtifactLimitKind,
} from "./errors.ts";
