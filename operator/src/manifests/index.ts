/**
 * Loading one revision's manifests: every YAML document under the source path, parsed safely
 * and validated as sluice objects, all-or-nothing. Knows nothing of Kubernetes clients.
 */
export {
  DEFAULT_MANIFEST_LIMITS,
  formatManifestError,
  loadRevision,
  type LoadRevisionOptions,
  type LoadRevisionResult,
  type ManifestError,
  type ManifestLimits,
} from "./load.ts";
