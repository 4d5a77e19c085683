import { z } from "zod";
import { Conditions } from "./conditions.ts";
import {
  API_VERSION,
  Dns1123Label,
  Duration,
  LocalObjectReference,
  ObservedGeneration,
  RelativePath,
  Sha256Digest,
  Timestamp,
  kube,
  nameIsLabelRule,
  objectMeta,
} from "./meta.ts";

/**
 * GitSource: a Git repository that sluice follows. The operator fetches the ref every
 * `interval` (or at once on the `sluice.dev/reconcile-at` annotation), packs the tree as an
 * artifact (tar.gz with a sha256 digest, served over HTTP to the agents), validates every manifest
 * under `path` as a whole, applies them and prunes what left the repository. Field names follow
 * Flux's GitRepository where the two overlap.
 */

/**
 * Keys the operator reads from the Secret named by `secretRef` (Flux's names).
 * HTTPS: `username` + `password`, or `bearerToken`. SSH: `identity` (private key) + `known_hosts`.
 */
export const GitSecretKeys = {
  username: "username",
  password: "password",
  bearerToken: "bearerToken",
  webhookToken: "token",
  identity: "identity",
  knownHosts: "known_hosts",
} as const;

const gitRefName = z
  .string()
  .min(1)
  .max(255)
  .regex(/^[^\s~^:?*[\\]+$/, "must be a Git ref name without spaces or any of ~ ^ : ? * [ \\");

/**
 * Which revision to follow: exactly one of a branch (its tip), a tag, the highest tag that
 * satisfies a semver range, or a fixed commit.
 */
export const GitRef = z
  .xor(
    [
      z.strictObject({ branch: gitRefName.describe("Branch to follow, e.g. main.") }),
      z.strictObject({ tag: gitRefName.describe("Tag to check out, e.g. v1.2.0.") }),
      z.strictObject({
        semver: z
          .string()
          .min(1)
          .max(255)
          .describe(
            "Semver range; the highest matching tag is checked out, e.g. '>=1.0.0 <2.0.0' or '1.2.x'.",
          ),
      }),
      z.strictObject({
        commit: z
          .string()
          .regex(/^[0-9a-f]{40}$/, "must be a full commit SHA-1: 40 lower-case hex digits")
          .describe("Full SHA-1 of a commit to check out."),
      }),
    ],
    { error: "ref needs exactly one of branch, tag, semver or commit" },
  )
  .describe("Git reference to follow: exactly one of branch, tag, semver or commit. Defaults to branch main.")
  .register(kube, {
    validations: [
      {
        rule: "[has(self.branch), has(self.tag), has(self.semver), has(self.commit)].exists_one(x, x)",
        message: "ref needs exactly one of branch, tag, semver or commit",
      },
    ],
  });
export type GitRef = z.infer<typeof GitRef>;

/** Desired state of a GitSource. */
export const GitSourceSpec = z.strictObject({
  url: z
    .string()
    .max(2048)
    .regex(
      /^(https?|ssh|git|file):\/\/[^\s]+$/,
      "must be a repository URL with scheme https, http, ssh, git or file, e.g. https://example.com/org/repo.git",
    )
    .describe("Repository URL: https:// (or http://), ssh://, git:// or file://."),
  ref: GitRef.default({ branch: "main" }),
  path: RelativePath.default(".").describe(
    "Directory inside the repository whose manifests are applied (recursively).",
  ),
  interval: Duration.default("1m").describe(
    "How often the remote is checked for new commits, e.g. 1m or 30s.",
  ),
  timeout: Duration.default("60s").describe("Time limit for one Git operation."),
  suspend: z
    .boolean()
    .default(false)
    .describe("Stop following the repository; what was applied stays as it is."),
  prune: z
    .boolean()
    .default(true)
    .describe("Delete objects that were applied from this source and are no longer in it."),
  secretRef: LocalObjectReference.optional().describe(
    "Secret with credentials: username and password, or bearerToken, for HTTPS; identity and known_hosts for SSH.",
  ),
  webhookSecretRef: LocalObjectReference.optional().describe(
    "Secret whose key 'token' signs push webhooks (X-Hub-Signature-256). The hook URL path is in status.webhookPath.",
  ),
});
export type GitSourceSpec = z.infer<typeof GitSourceSpec>;

/** The packed tree of one revision, served to the agents. */
export const Artifact = z.object({
  revision: z
    .string()
    .max(512)
    .regex(/^([^@\s]+@)?sha1:[0-9a-f]{40}$/, "must be a revision like main@sha1:<40 hex digits>")
    .describe("Revision of the tree: '<branch or tag>@sha1:<commit>', or 'sha1:<commit>' for a commit ref."),
  digest: Sha256Digest.describe("sha256 of the artifact file, as sha256:<hex>."),
  url: z.string().max(2048).describe("HTTP URL the agents download the artifact from."),
  lastUpdateTime: Timestamp.describe("When this artifact was produced."),
  size: z.number().int().min(0).optional().describe("Size of the artifact file in bytes."),
});
export type Artifact = z.infer<typeof Artifact>;

/** One object applied from the source, remembered so it can be pruned when it leaves the repository. */
export const InventoryEntry = z.object({
  apiVersion: z
    .string()
    .max(253)
    .optional()
    .describe("apiVersion of the object; sluice.dev/v1alpha1 when absent."),
  kind: z.string().min(1).max(63),
  namespace: z.string().max(63).optional(),
  name: z.string().min(1).max(253),
});
export type InventoryEntry = z.infer<typeof InventoryEntry>;

/** Observed state of a GitSource, written by the operator. */
export const GitSourceStatus = z.object({
  observedGeneration: ObservedGeneration,
  conditions: Conditions.optional().describe("Ready, Reconciling and Stalled (kstatus)."),
  artifact: Artifact.optional().describe("The artifact of the last revision that was fetched."),
  lastAppliedRevision: z
    .string()
    .max(512)
    .optional()
    .describe("Revision whose manifests were last applied successfully."),
  lastHandledReconcileAt: z
    .string()
    .max(256)
    .optional()
    .describe("Value of the sluice.dev/reconcile-at annotation last handled."),
  inventory: z.array(InventoryEntry).max(10_000).optional().describe("Objects applied from this source."),
  webhookPath: z
    .string()
    .max(256)
    .optional()
    .describe("Path on the operator's HTTP endpoint that receives push webhooks for this source."),
  webhookSalt: z
    .string()
    .regex(/^[0-9a-f]{32}$/, "must be 32 lower-case hex digits")
    .optional()
    .describe(
      "Random salt the webhook path is keyed with, so the path reveals nothing of the token and differs between sources sharing one; delete it to get a new path.",
    ),
});
export type GitSourceStatus = z.infer<typeof GitSourceStatus>;

/** A whole GitSource object. Its name must be a DNS-1123 label: applied objects carry it as a label value. */
export const GitSource = z
  .strictObject({
    apiVersion: z.literal(API_VERSION),
    kind: z.literal("GitSource"),
    metadata: objectMeta(Dns1123Label),
    spec: GitSourceSpec,
    status: GitSourceStatus.default({ observedGeneration: -1 }),
  })
  .describe("A Git repository with sluice manifests, followed by the operator.")
  .register(kube, { validations: [nameIsLabelRule] });
export type GitSource = z.infer<typeof GitSource>;
