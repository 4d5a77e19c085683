import { z } from "zod";
import { kube, Timestamp } from "./meta.ts";

/**
 * Status conditions, following Kubernetes `metav1.Condition` and the kstatus conventions that
 * `kubectl wait`, Flux and Argo CD understand: `Ready` is the summary ("normal-true");
 * `Reconciling` and `Stalled` are "abnormal-true" and are removed, not set False, when they no
 * longer apply.
 */

/** Condition types. Each line says what status True means. */
export const ConditionType = {
  /** True: the object is fully reconciled at its current generation and doing its job. */
  Ready: "Ready",
  /** True: the controller is working towards the desired state (kstatus: in progress). */
  Reconciling: "Reconciling",
  /** True: the controller cannot make progress without a change to the spec or its environment. */
  Stalled: "Stalled",
  /** True: a ServiceChain rollout is moving nodes to the current revision. */
  Progressing: "Progressing",
  /** True: some selected nodes do not run the current revision (failed or rolled back) while others still forward traffic. */
  Degraded: "Degraded",
} as const;
export type ConditionType = (typeof ConditionType)[keyof typeof ConditionType];

/** Condition reasons (CamelCase). Each line says when the reason is used. */
export const Reason = {
  // Shared by every kind.
  /** The last reconcile finished without error. */
  Succeeded: "Succeeded",
  /** Work towards the desired state has started or is under way. */
  Progressing: "Progressing",
  /** A step failed in a way that may pass; the controller retries with back-off. */
  ProgressingWithRetry: "ProgressingWithRetry",
  /** `spec.suspend` is true: nothing is reconciled until it is cleared. */
  Suspended: "Suspended",
  /** The spec cannot work as written (a rule zod or CEL cannot see); fix the spec. */
  InvalidSpec: "InvalidSpec",
  /** An object this one depends on does not exist yet; the controller waits for it. */
  DependencyNotReady: "DependencyNotReady",

  // GitSource.
  /** The Git clone or fetch failed (network, protocol, or the remote refused). */
  GitOperationFailed: "GitOperationFailed",
  /** The Secret named by `secretRef` is missing or lacks the keys the URL scheme needs. */
  SecretNotFound: "SecretNotFound",
  /** The remote refused the credentials, or the SSH host key did not match known_hosts. */
  AuthenticationFailed: "AuthenticationFailed",
  /** The branch, tag or commit is not in the remote, or no tag satisfies the semver range. */
  RefNotFound: "RefNotFound",
  /** Packing, storing or serving the artifact failed (or, on a node, unpacking an artifact of the right digest). */
  ArtifactFailed: "ArtifactFailed",
  /**
   * At least one manifest under `spec.path` failed validation, so nothing of that revision was
   * applied. A more precise reason of the first error (`BuiltinNotFound`) leads the message.
   */
  ManifestsInvalid: "ManifestsInvalid",
  /** Server-side apply of the manifests failed. */
  ApplyFailed: "ApplyFailed",
  /** Deleting objects that left the repository failed. */
  PruneFailed: "PruneFailed",
  /**
   * The operator does not follow this URL: `file://` without `--allow-file-sources`, or a host
   * outside `--allowed-git-hosts`.
   */
  SourceNotAllowed: "SourceNotAllowed",
  /**
   * The GitSource was applied by a GitSource of another namespace (without
   * `--allow-cross-namespace`): it reads no Secret and applies nothing in the namespace it was
   * planted in.
   */
  CrossNamespaceNotAllowed: "CrossNamespaceNotAllowed",

  // NetworkFunction.
  /** The GitSource named by `source.sourceRef` does not exist or has no artifact yet. */
  SourceNotReady: "SourceNotReady",
  /** The file named by `source.path` is not in the GitSource's artifact. */
  SourceFileNotFound: "SourceFileNotFound",
  /** No built-in network function has the name in `source.builtin`. */
  BuiltinNotFound: "BuiltinNotFound",

  // ServiceChain.
  /** Every selected node runs the current revision and reports Ready. */
  RolloutComplete: "RolloutComplete",
  /** Nodes are being moved to the current revision, `maxUnavailable` at a time. */
  RollingOut: "RollingOut",
  /** The canary nodes run the current revision; the rest wait for the promote annotation. */
  CanaryPaused: "CanaryPaused",
  /** `spec.rollout.paused` is true: no further node is moved to the current revision. */
  RolloutPaused: "RolloutPaused",
  /** The rollout made no progress within `progressDeadlineSeconds`. */
  ProgressDeadlineExceeded: "ProgressDeadlineExceeded",
  /** Nodes failed the current revision and were returned to `lastGoodRevision`. */
  RolledBack: "RolledBack",
  /** One or more nodes failed to compile, load, test or attach the current revision. */
  NodesFailed: "NodesFailed",
  /** A NetworkFunction listed in `spec.functions` does not exist. */
  FunctionNotFound: "FunctionNotFound",
  /** A NetworkFunction in the chain does not list the chain's hook in `spec.hooks`. */
  HookNotSupported: "HookNotSupported",
  /** The node selector matches no node. */
  NoNodesSelected: "NoNodesSelected",

  // NodeChain (written by the agent).
  /** The artifact could not be downloaded. */
  ArtifactFetchFailed: "ArtifactFetchFailed",
  /** The downloaded artifact's sha256 differs from the digest in the plan. */
  DigestMismatch: "DigestMismatch",
  /** clang rejected a network function (`lastError.log` holds its output), or clang cannot run on the node. */
  CompileFailed: "CompileFailed",
  /** The kernel verifier rejected a program; `lastError.log` holds the verifier log tail. */
  VerifierRejected: "VerifierRejected",
  /** Loading, pinning or linking programs and maps failed for another reason. */
  LoadFailed: "LoadFailed",
  /** A test vector did not produce its expected verdict or counters; see `selfTest`. */
  SelfTestFailed: "SelfTestFailed",
  /** Attaching or switching the chain on an interface failed. */
  AttachFailed: "AttachFailed",
  /** No interface on the node matches `spec.interfaces`. */
  InterfaceNotFound: "InterfaceNotFound",
  /** The kernel lacks a feature the chain needs (named in the message). */
  NotSupported: "NotSupported",
} as const;
export type Reason = (typeof Reason)[keyof typeof Reason];

/** A status condition, field for field `metav1.Condition` (same limits, same patterns). */
export const Condition = z.object({
  type: z
    .string()
    .max(316)
    .regex(
      /^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$/,
      "must be a condition type in CamelCase, like Ready",
    )
    .describe("Type of condition in CamelCase, e.g. Ready."),
  status: z.enum(["True", "False", "Unknown"]).describe("Status of the condition: True, False or Unknown."),
  observedGeneration: z
    .number()
    .int()
    .min(0)
    .optional()
    .describe("metadata.generation the condition was set for."),
  lastTransitionTime: Timestamp.describe("Last time the status changed (not the reason or message)."),
  reason: z
    .string()
    .min(1)
    .max(1024)
    .regex(/^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$/, "must be a CamelCase reason, like Succeeded")
    .describe("Machine-readable CamelCase reason for the last transition."),
  message: z.string().max(32768).describe("Human-readable details."),
});
export type Condition = z.infer<typeof Condition>;

/** A list of conditions, at most one per type (a `map` list keyed by type for the apiserver). */
export const Conditions = z
  .array(Condition)
  .max(16)
  .superRefine((list, ctx) => {
    const seen = new Set<string>();
    list.forEach((c, i) => {
      if (seen.has(c.type))
        ctx.addIssue({ code: "custom", path: [i, "type"], message: `duplicate condition type ${c.type}` });
      seen.add(c.type);
    });
  })
  .register(kube, { listType: "map", listMapKeys: ["type"] });

/** A condition to set: `lastTransitionTime` is filled in by {@link setCondition}. */
export type ConditionUpdate = Omit<Condition, "lastTransitionTime">;

/** `now` as `metav1.Time` writes it: RFC 3339 in UTC with whole seconds. */
export function formatTime(now: Date): string {
  return now.toISOString().replace(/\.\d{3}Z$/, "Z");
}

/**
 * Returns `list` with `update` set. `lastTransitionTime` stays as it was when the status did not
 * change (only reason, message or generation moved), and becomes `now` otherwise. The input list
 * is not modified; an existing condition keeps its position, a new one is appended.
 */
export function setCondition(
  list: readonly Condition[] | undefined,
  update: ConditionUpdate,
  now: Date,
): Condition[] {
  const current = list ?? [];
  const previous = current.find((c) => c.type === update.type);
  const lastTransitionTime =
    previous && previous.status === update.status ? previous.lastTransitionTime : formatTime(now);
  const next: Condition = { ...update, lastTransitionTime };
  return previous ? current.map((c) => (c === previous ? next : c)) : [...current, next];
}

/** Status, reason and message of a condition. */
export type ConditionTriple = [status: Condition["status"], reason: string, message: string];

/**
 * The conditions one reconcile leaves on an object. Ready is always set; Progressing and
 * Degraded when given (otherwise left as they are); Reconciling and Stalled (abnormal-true,
 * kstatus) are set True when given and removed otherwise.
 */
export interface ConditionSet {
  ready: ConditionTriple;
  progressing?: ConditionTriple;
  degraded?: ConditionTriple;
  reconciling?: [reason: string, message: string];
  stalled?: [reason: string, message: string];
}

/** Longest condition message (the apiserver's limit). */
const MAX_CONDITION_MESSAGE = 32_768;

/**
 * Returns `list` with the conditions of `set` for `generation`: the one way GitSource,
 * ServiceChain and NodeChain conditions are written. Messages are cut to the apiserver's limit.
 */
export function applyConditions(
  list: readonly Condition[] | undefined,
  set: ConditionSet,
  generation: number | undefined,
  now: Date,
): Condition[] {
  const put = (current: Condition[], type: string, [status, reason, message]: ConditionTriple) =>
    setCondition(
      current,
      {
        type,
        status,
        reason,
        message: message.slice(0, MAX_CONDITION_MESSAGE),
        ...(generation !== undefined && { observedGeneration: generation }),
      },
      now,
    );
  let out = put([...(list ?? [])], ConditionType.Ready, set.ready);
  if (set.progressing) out = put(out, ConditionType.Progressing, set.progressing);
  if (set.degraded) out = put(out, ConditionType.Degraded, set.degraded);
  out = set.reconciling
    ? put(out, ConditionType.Reconciling, ["True", ...set.reconciling])
    : removeCondition(out, ConditionType.Reconciling);
  out = set.stalled
    ? put(out, ConditionType.Stalled, ["True", ...set.stalled])
    : removeCondition(out, ConditionType.Stalled);
  return out;
}

/** Returns `list` without the condition of `type` (kstatus: abnormal-true conditions are removed when resolved). */
export function removeCondition(list: readonly Condition[] | undefined, type: string): Condition[] {
  return (list ?? []).filter((c) => c.type !== type);
}

/** The condition of `type`, if present. */
export function findCondition(list: readonly Condition[] | undefined, type: string): Condition | undefined {
  return (list ?? []).find((c) => c.type === type);
}

/** Whether the condition of `type` is present with status True. */
export function isConditionTrue(list: readonly Condition[] | undefined, type: string): boolean {
  return findCondition(list, type)?.status === "True";
}
