import { randomBytes } from "node:crypto";
import { join } from "node:path";
import { rm } from "node:fs/promises";
import {
  API_VERSION,
  GitSecretKeys,
  GitSource,
  parseDuration,
  RECONCILE_AT_ANNOTATION,
  Reason,
  applyConditions,
  type Artifact,
  type ConditionSet,
  type Condition,
  type GitSourceStatus,
  type InventoryEntry,
  type SluiceObject,
} from "../../../common/api/index.ts";
import { ArtifactError, ArtifactStore, buildArtifact } from "../../../common/artifact/index.ts";
import type { Logger } from "../../../common/log.ts";
import { failureConditions, failureOf, InvalidObjectError, type RetryClass } from "../../../common/errors.ts";
import { CONTINUE, runSteps, type Step, type StepResult } from "../../../common/kube/controller.ts";
import {
  isStoreKind,
  statusPatch,
  type Store,
  type StoreInput,
  type StoreObject,
} from "../../../common/store.ts";
import { sync, type GitAuth, type GitSyncResult } from "../git/index.ts";
import { loadRevision } from "../manifests/index.ts";
import { checkSourceUrl, parentNamespace, type SourcePolicy } from "./policy.ts";

/** Label put on every object applied from a GitSource: `<namespace>.<name>` of the source. */
export const SOURCE_LABEL = "sluice.dev/source";

/** What the GitSource reconciler needs from its surroundings. */
export interface GitSourceDeps {
  store: Store;
  artifacts: ArtifactStore;
  /** Base URL the agents download artifacts from, e.g. http://sluice-operator.sluice:8080. */
  artifactBaseUrl: string;
  /** Directory for working clones, one per source. */
  workRoot: string;
  /** Reads a Secret's data (decoded); undefined when it does not exist. Absent in single-host mode. */
  readSecret?: (namespace: string, name: string) => Promise<Record<string, string> | undefined>;
  /**
   * Registers (or keeps) the push webhook of a source signed with `hook.token`, at a path keyed
   * with `hook.salt`, and returns that path; a trigger reconciles the source at once. Absent when
   * there is no HTTP endpoint.
   */
  ensureWebhook?: (
    namespace: string,
    name: string,
    hook: { token: string; salt: string } | undefined,
  ) => string | undefined;
  /**
   * Lets the artifact server hand out an artifact: called once its revision is applied, before
   * status names it, so an agent that reads the new plan finds it served.
   */
  publishArtifact?: (namespace: string, name: string, digest: string) => void;
  /**
   * A new webhook salt for a source that has none in status; default: 16 random bytes as hex.
   * Single-host mode keeps one in its data directory, since its status lives only in memory.
   */
  newWebhookSalt?: (namespace: string, name: string) => Promise<string>;
  /** What sources may reach; absent: the safe defaults (own namespace, no file://). */
  policy?: SourcePolicy;
  /** Logs and records an event on the object. */
  event: (obj: StoreObject, type: "Normal" | "Warning", reason: string, message: string) => void;
  now?: () => Date;
}

/** Where a reconcile stands while its steps run; status is written from it once, at the end. */
interface Run {
  source: GitSource;
  log: Logger;
  status: GitSourceStatus;
  conditions: Condition[];
  sync?: GitSyncResult;
  artifact?: Artifact;
  objects?: SluiceObject[];
}

/** A step either continues, or ends the reconcile with a requeue delay (ms; undefined = none). */

/**
 * Reconciles one GitSource: fetch the ref, pack the tree at `spec.path` into an artifact,
 * validate every manifest of the revision as one unit, apply them with server-side apply, prune
 * what left Git, and record the inventory. The steps run in order; the first that fails or
 * finishes early stops the list, and status is written once at the end (Flux's
 * source-controller works the same way).
 *
 * A bad revision changes nothing that was applied before: validation runs on the whole
 * revision, then a server-side dry run of every object, before the first real write.
 */
export async function reconcileGitSource(
  deps: GitSourceDeps,
  namespace: string,
  name: string,
  parentLog: Logger,
): Promise<{ requeueAfterMs?: number }> {
  let source: GitSource | undefined;
  try {
    source = await deps.store.get("GitSource", namespace, name);
  } catch (err) {
    if (!(err instanceof InvalidObjectError)) throw err;
    // The API server validated it already; this only happens with a hand-made store object.
    parentLog.error({ issues: err.issues }, "GitSource does not parse");
    return {};
  }
  if (!source) {
    // Deleted: what it applied stays (like Flux without a finalizer); its files go.
    await deps.artifacts.remove(namespace, name).catch(() => undefined);
    await rm(join(deps.workRoot, namespace, name), { recursive: true, force: true });
    return {};
  }
  const log = parentLog.child({ kind: "GitSource", namespace, name });
  const run: Run = {
    source,
    log,
    status: { ...source.status },
    conditions: source.status.conditions ?? [],
  };
  const interval = parseDuration(source.spec.interval);
  const result = await runSteps(steps, run, deps);
  await writeStatus(run, deps);
  if (!result.next)
    return result.requeueAfterMs === undefined ? {} : { requeueAfterMs: result.requeueAfterMs };
  return { requeueAfterMs: interval };
}

const steps: Step<Run, GitSourceDeps>[] = [
  reconcileSuspend,
  reconcileAccess,
  reconcileWebhook,
  reconcileSource,
  reconcileArtifact,
  reconcileManifests,
  reconcileApply,
];

async function reconcileSuspend(run: Run, deps: GitSourceDeps): Promise<StepResult> {
  if (!run.source.spec.suspend) return CONTINUE;
  setConditions(run, deps, { ready: ["False", Reason.Suspended, "reconciliation is suspended"] });
  return { next: false };
}

/**
 * Refuses, before any Secret is read or git runs, what this operator does not follow: a URL its
 * policy forbids, and a GitSource that a GitSource of another namespace planted here (it would
 * read this namespace's Secrets and send them wherever its author points it).
 */
async function reconcileAccess(run: Run, deps: GitSourceDeps): Promise<StepResult> {
  const policy = deps.policy ?? {};
  const { metadata, spec } = run.source;
  const ns = metadata.namespace ?? "default";
  const parent = parentNamespace(metadata.labels, SOURCE_LABEL);
  const refuse = (reason: Reason, message: string): StepResult => {
    // Nothing may trigger it either; the salt stays, so an allowed source gets its path back.
    deps.ensureWebhook?.(ns, metadata.name, undefined);
    delete run.status.webhookPath;
    return fail(run, deps, reason, message, "stall");
  };
  if (!policy.allowCrossNamespace && parent !== undefined && parent !== ns) {
    return refuse(
      Reason.CrossNamespaceNotAllowed,
      `this GitSource was applied by GitSource ${metadata.labels?.[SOURCE_LABEL]} of namespace ${parent}; a GitSource applies only into its own namespace, so this one reads no Secret and applies nothing (delete it, or start the operator with --allow-cross-namespace)`,
    );
  }
  const url = checkSourceUrl(spec.url, policy);
  if (!url.ok) return refuse(Reason.SourceNotAllowed, url.message);
  return CONTINUE;
}

async function reconcileWebhook(run: Run, deps: GitSourceDeps): Promise<StepResult> {
  const { spec, metadata } = run.source;
  const ns = metadata.namespace ?? "default";
  if (!deps.ensureWebhook) return CONTINUE;
  if (!spec.webhookSecretRef) {
    deps.ensureWebhook(ns, metadata.name, undefined);
    delete run.status.webhookPath;
    // A webhook set up again later gets a new path.
    delete run.status.webhookSalt;
    return CONTINUE;
  }
  const data = deps.readSecret ? await deps.readSecret(ns, spec.webhookSecretRef.name) : undefined;
  const token = data?.[GitSecretKeys.webhookToken];
  if (!token) {
    return fail(
      run,
      deps,
      Reason.SecretNotFound,
      `secret ${spec.webhookSecretRef.name} with key ${GitSecretKeys.webhookToken} not found`,
      "backoff",
    );
  }
  // Kept in status, so the path survives operator restarts; random, so it says nothing of the
  // token and two sources sharing a token get different paths.
  const salt =
    run.status.webhookSalt ??
    (deps.newWebhookSalt ? await deps.newWebhookSalt(ns, metadata.name) : randomBytes(16).toString("hex"));
  run.status.webhookSalt = salt;
  run.status.webhookPath = deps.ensureWebhook(ns, metadata.name, { token, salt });
  return CONTINUE;
}

async function reconcileSource(run: Run, deps: GitSourceDeps): Promise<StepResult> {
  const { spec, metadata } = run.source;
  const ns = metadata.namespace ?? "default";
  let auth: GitAuth | undefined;
  if (spec.secretRef) {
    const data = deps.readSecret ? await deps.readSecret(ns, spec.secretRef.name) : undefined;
    const found = data && secretToAuth(data);
    if (!found) {
      return fail(
        run,
        deps,
        Reason.SecretNotFound,
        data
          ? `secret ${spec.secretRef.name} has none of ${GitSecretKeys.username}+${GitSecretKeys.password}, ${GitSecretKeys.bearerToken}, or ${GitSecretKeys.identity}+${GitSecretKeys.knownHosts}`
          : `secret ${spec.secretRef.name} not found`,
        "backoff",
      );
    }
    auth = found;
  }
  try {
    run.sync = await sync({
      url: spec.url,
      ref: spec.ref,
      workDir: join(deps.workRoot, ns, metadata.name),
      timeoutMs: parseDuration(spec.timeout),
      auth,
      // Checked in reconcileAccess already; git itself refuses too.
      ...(deps.policy?.allowFileSources ? {} : { allowedSchemes: ["https", "http", "ssh", "git"] as const }),
      logger: run.log,
    });
    return CONTINUE;
  } catch (err) {
    // Git errors say their reason and whether a retry can help.
    const failure = failureOf(err, Reason.GitOperationFailed);
    return fail(run, deps, failure.reason, failure.message, failure.retry);
  }
}

async function reconcileArtifact(run: Run, deps: GitSourceDeps): Promise<StepResult> {
  const { metadata, spec } = run.source;
  const ns = metadata.namespace ?? "default";
  const revision = run.sync!.revision;
  try {
    // Packing is deterministic and cheap; doing it every time keeps the artifact right when only
    // spec.path changed (same revision, other tree).
    const built = await buildArtifact(run.sync!.dir, spec.path);
    const previous = run.status.artifact;
    if (previous?.revision === revision && previous.digest === built.digest) {
      if (await deps.artifacts.get(ns, metadata.name, built.digest)) {
        run.artifact = previous;
        return CONTINUE;
      }
    }
    const stored = await deps.artifacts.put(ns, metadata.name, built);
    run.artifact = {
      revision,
      digest: built.digest,
      url: new URL(stored.urlPath, deps.artifactBaseUrl).toString(),
      lastUpdateTime: now(deps)
        .toISOString()
        .replace(/\.\d{3}Z$/, "Z"),
      size: stored.size,
    };
    deps.event(run.source, "Normal", "NewArtifact", `stored artifact for revision ${revision}`);
    return CONTINUE;
  } catch (err) {
    // Named like a manifest rejection: status.artifact still shows the last good revision, so
    // the message must say which commit is refused.
    if (err instanceof ArtifactError) {
      return fail(run, deps, err.reason, `revision ${revision} rejected: ${err.message}`, err.retry);
    }
    throw err;
  }
}

async function reconcileManifests(run: Run, deps: GitSourceDeps): Promise<StepResult> {
  const { metadata, spec } = run.source;
  const ns = metadata.namespace ?? "default";
  const dir = join(run.sync!.dir, spec.path);
  const loaded = await loadRevision(dir, {
    defaultNamespace: ns,
    displayPrefix: spec.path === "." ? "" : spec.path,
    ...(deps.policy?.allowCrossNamespace ? {} : { confineToNamespace: ns }),
  });
  if (!loaded.ok) {
    // The condition reason stays ManifestsInvalid (what the GitSource API promises for any
    // refused manifest); a more precise reason of the first error (BuiltinNotFound) leads the
    // message, so a user sees it without reading the NetworkFunction's own status.
    const first = loaded.errors[0];
    const precise = first && first.reason !== Reason.InvalidSpec ? `${first.reason}: ` : "";
    return fail(
      run,
      deps,
      Reason.ManifestsInvalid,
      `revision ${run.sync!.revision} rejected: ${precise}${loaded.message}`,
      "backoff",
    );
  }
  run.objects = loaded.objects;
  return CONTINUE;
}

async function reconcileApply(run: Run, deps: GitSourceDeps): Promise<StepResult> {
  const { metadata, spec } = run.source;
  const ns = metadata.namespace ?? "default";
  const revision = run.sync!.revision;
  const sourceLabel = `${ns}.${metadata.name}`;
  const confined = !deps.policy?.allowCrossNamespace;
  const desired = run.objects!.map((o) => toApplied(o, ns, sourceLabel));
  // The manifests step refused these already; checked again where the writes happen.
  const stray = confined ? desired.find((o) => o.metadata.namespace !== ns) : undefined;
  if (stray) {
    return fail(
      run,
      deps,
      Reason.ApplyFailed,
      `revision ${revision}: ${stray.kind} ${stray.metadata.name} is in namespace ${stray.metadata.namespace}, outside ${ns}`,
      "backoff",
    );
  }
  try {
    // All or nothing: the API server validates every object (CEL rules included) before the
    // first one is written.
    for (const obj of desired) await deps.store.apply(obj, { dryRun: true });
    for (const obj of desired) await deps.store.apply(obj);
  } catch (err) {
    return fail(
      run,
      deps,
      Reason.ApplyFailed,
      `revision ${revision}: ${err instanceof Error ? err.message : String(err)}`,
      "backoff",
    );
  }
  const inventory: InventoryEntry[] = desired.map((o) => ({
    kind: o.kind,
    namespace: o.metadata.namespace,
    name: o.metadata.name,
  }));
  const keep = new Set(inventory.map(inventoryKey));
  let pruned = 0;
  const leftInPlace: string[] = [];
  if (spec.prune) {
    for (const old of run.status.inventory ?? []) {
      if (keep.has(inventoryKey(old))) continue;
      const what = `${old.kind} ${old.namespace ?? ns}/${old.name}`;
      // The inventory is status, which others may write, and may predate the namespace rule:
      // only objects in reach that still carry this source's label are deleted.
      if (confined && (old.namespace ?? ns) !== ns) {
        leftInPlace.push(`${what} (outside namespace ${ns})`);
        continue;
      }
      try {
        // Only sluice kinds are ever applied, so only those can be in the inventory.
        if (!isStoreKind(old.kind)) continue;
        const current = await deps.store.get(old.kind, old.namespace ?? ns, old.name);
        if (!current) continue;
        if (current.metadata.labels?.[SOURCE_LABEL] !== sourceLabel) {
          leftInPlace.push(`${what} (not labelled ${SOURCE_LABEL}=${sourceLabel})`);
          continue;
        }
        if (await deps.store.delete(old.kind, old.namespace ?? ns, old.name)) pruned++;
      } catch (err) {
        return fail(
          run,
          deps,
          Reason.PruneFailed,
          `${old.kind} ${old.namespace}/${old.name}: ${String(err)}`,
          "backoff",
        );
      }
    }
  }
  if (leftInPlace.length > 0) {
    deps.event(run.source, "Warning", "PruneSkipped", `not pruned: ${leftInPlace.join(", ")}`);
  }
  if (run.artifact) deps.publishArtifact?.(ns, metadata.name, run.artifact.digest);
  const changed = run.status.lastAppliedRevision !== revision;
  // The artifact in status is the one whose manifests are applied: NetworkFunctions with a
  // path source resolve against it, so it never points at a rejected revision.
  run.status.artifact = run.artifact;
  run.status.inventory = inventory;
  run.status.lastAppliedRevision = revision;
  const message = `applied revision ${revision}: ${inventory.length} objects${pruned ? `, pruned ${pruned}` : ""}`;
  if (changed || pruned) deps.event(run.source, "Normal", "Applied", message);
  setConditions(run, deps, { ready: ["True", Reason.Succeeded, message] });
  return CONTINUE;
}

/** The object as it is applied: namespaced into the source's namespace, labelled with its source. */
function toApplied(
  obj: SluiceObject,
  namespace: string,
  sourceLabel: string,
): StoreInput<SluiceObject["kind"]> {
  const { status: _status, ...rest } = obj;
  return {
    ...rest,
    apiVersion: API_VERSION,
    metadata: {
      ...obj.metadata,
      namespace: obj.metadata.namespace ?? namespace,
      labels: { ...obj.metadata.labels, [SOURCE_LABEL]: sourceLabel },
    },
  };
}

function inventoryKey(e: InventoryEntry): string {
  return `${e.kind}/${e.namespace ?? ""}/${e.name}`;
}

function secretToAuth(data: Record<string, string>): GitAuth | undefined {
  const k = GitSecretKeys;
  if (data[k.bearerToken]) return { type: "bearer", token: data[k.bearerToken]! };
  if (data[k.username] !== undefined && data[k.password] !== undefined) {
    return { type: "basic", username: data[k.username]!, password: data[k.password]! };
  }
  if (data[k.identity] && data[k.knownHosts]) {
    return { type: "ssh", privateKey: data[k.identity]!, knownHosts: data[k.knownHosts]! };
  }
  return undefined;
}

function now(deps: GitSourceDeps): Date {
  return deps.now?.() ?? new Date();
}

/** Sets the conditions of this reconcile for the current generation. */
function setConditions(run: Run, deps: GitSourceDeps, set: ConditionSet): void {
  run.conditions = applyConditions(run.conditions, set, run.source.metadata.generation, now(deps));
}

/**
 * Ends the reconcile with Ready=False (and the conditions of its retry class). A stalling
 * failure (the spec is wrong) is not retried until the spec changes; others are retried at the
 * interval.
 */
function fail(run: Run, deps: GitSourceDeps, reason: Reason, message: string, retry: RetryClass): StepResult {
  setConditions(run, deps, failureConditions({ reason, message, retry }));
  deps.event(run.source, "Warning", reason, message);
  if (retry === "stall") return { next: false };
  return { next: false, requeueAfterMs: parseDuration(run.source.spec.interval) };
}

async function writeStatus(run: Run, deps: GitSourceDeps): Promise<void> {
  const { metadata } = run.source;
  const annotation = metadata.annotations?.[RECONCILE_AT_ANNOTATION];
  const status: GitSourceStatus = {
    ...run.status,
    conditions: run.conditions,
    observedGeneration: metadata.generation ?? run.status.observedGeneration,
    ...(annotation ? { lastHandledReconcileAt: annotation } : {}),
  };
  // A field this reconcile dropped (the webhook path once webhookSecretRef is gone) is removed.
  await deps.store.patchStatus(
    "GitSource",
    metadata.namespace,
    metadata.name,
    statusPatch<"GitSource">(run.source.status, status),
  );
}
