import { EventEmitter } from "node:events";

/**
 * The store: where sluice objects live. In a cluster it is the Kubernetes API (operator/src/kube
 * KubeStore); in single-host mode it is memory (MemoryStore). Planning, rollout and the GitSource
 * apply step are written against this interface only, so the same code runs in both places.
 *
 * Objects are plain Kubernetes-shaped JSON; callers parse them with the zod schemas.
 */
export interface StoredObject {
  apiVersion: string;
  kind: string;
  metadata: {
    name: string;
    namespace?: string;
    uid?: string;
    generation?: number;
    resourceVersion?: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
    ownerReferences?: OwnerReference[];
    creationTimestamp?: string;
    deletionTimestamp?: string;
  };
  spec?: unknown;
  status?: unknown;
  [key: string]: unknown;
}

/** A reference from an object to the object that owns it (deleted with it). */
export interface OwnerReference {
  apiVersion: string;
  kind: string;
  name: string;
  uid: string;
  controller?: boolean;
  blockOwnerDeletion?: boolean;
}

/** What changed in the store. */
export interface StoreEvent {
  type: "changed" | "deleted";
  object: StoredObject;
}

/** The store interface; see the module comment. */
export interface Store {
  /** Lists objects of a kind, optionally in one namespace and matching labels. */
  list(kind: string, namespace?: string, labels?: Record<string, string>): Promise<StoredObject[]>;
  /** Gets one object, or undefined. */
  get(kind: string, namespace: string | undefined, name: string): Promise<StoredObject | undefined>;
  /**
   * Creates or updates an object from its desired form (metadata labels/annotations/owners and
   * spec; status is left alone). Generation grows when the spec changes. With `dryRun` the
   * object is validated as if written, and nothing changes.
   */
  apply(obj: StoredObject, options?: { dryRun?: boolean }): Promise<StoredObject>;
  /** Deletes an object; false when it was not there. */
  delete(kind: string, namespace: string | undefined, name: string): Promise<boolean>;
  /** Replaces the status of an object (merge at the top level of status). */
  patchStatus(
    kind: string,
    namespace: string | undefined,
    name: string,
    status: unknown,
  ): Promise<StoredObject>;
  /** Calls `handler` for every change to objects of `kind` from now on; returns an unsubscribe. */
  watch(kind: string, handler: (event: StoreEvent) => void): () => void;
}

/** Object identity inside a store. */
export function storeKey(kind: string, namespace: string | undefined, name: string): string {
  return `${kind}/${namespace ?? ""}/${name}`;
}

/**
 * An in-memory store with Kubernetes' semantics where sluice relies on them: generation grows on
 * spec changes, resourceVersion on every write, deleting an owner deletes what it owns, and
 * watchers see every change in order. Used by single-host mode and by tests of the planning and
 * rollout logic.
 */
export class MemoryStore implements Store {
  private readonly objects = new Map<string, StoredObject>();
  private readonly events = new EventEmitter();
  private version = 0;
  private uidCounter = 0;

  constructor() {
    this.events.setMaxListeners(0);
  }

  async list(kind: string, namespace?: string, labels?: Record<string, string>): Promise<StoredObject[]> {
    const out: StoredObject[] = [];
    for (const obj of this.objects.values()) {
      if (obj.kind !== kind) continue;
      if (namespace !== undefined && obj.metadata.namespace !== namespace) continue;
      if (labels && !Object.entries(labels).every(([k, v]) => obj.metadata.labels?.[k] === v)) continue;
      out.push(structuredClone(obj));
    }
    return out.sort((a, b) =>
      storeKey(a.kind, a.metadata.namespace, a.metadata.name).localeCompare(
        storeKey(b.kind, b.metadata.namespace, b.metadata.name),
      ),
    );
  }

  async get(kind: string, namespace: string | undefined, name: string): Promise<StoredObject | undefined> {
    const obj = this.objects.get(storeKey(kind, namespace, name));
    return obj && structuredClone(obj);
  }

  async apply(desired: StoredObject, options: { dryRun?: boolean } = {}): Promise<StoredObject> {
    if (options.dryRun) return structuredClone(desired);
    const key = storeKey(desired.kind, desired.metadata.namespace, desired.metadata.name);
    const existing = this.objects.get(key);
    const specChanged = !existing || JSON.stringify(existing.spec) !== JSON.stringify(desired.spec);
    const next: StoredObject = {
      ...structuredClone(desired),
      metadata: {
        ...structuredClone(desired.metadata),
        uid: existing?.metadata.uid ?? `uid-${++this.uidCounter}`,
        generation: (existing?.metadata.generation ?? 0) + (specChanged ? 1 : 0),
        resourceVersion: String(++this.version),
        creationTimestamp: existing?.metadata.creationTimestamp ?? new Date().toISOString(),
      },
      status: existing?.status,
    };
    if (next.status === undefined) delete next.status;
    this.objects.set(key, next);
    this.emit({ type: "changed", object: next });
    return structuredClone(next);
  }

  async delete(kind: string, namespace: string | undefined, name: string): Promise<boolean> {
    const key = storeKey(kind, namespace, name);
    const obj = this.objects.get(key);
    if (!obj) return false;
    this.objects.delete(key);
    this.emit({ type: "deleted", object: obj });
    // Garbage collection: what this object owned goes with it.
    for (const owned of [...this.objects.values()]) {
      if (owned.metadata.ownerReferences?.some((o) => o.uid === obj.metadata.uid)) {
        await this.delete(owned.kind, owned.metadata.namespace, owned.metadata.name);
      }
    }
    return true;
  }

  async patchStatus(
    kind: string,
    namespace: string | undefined,
    name: string,
    status: unknown,
  ): Promise<StoredObject> {
    const key = storeKey(kind, namespace, name);
    const obj = this.objects.get(key);
    if (!obj) throw new Error(`${kind} ${namespace ? `${namespace}/` : ""}${name} not found`);
    const next: StoredObject = {
      ...obj,
      metadata: { ...obj.metadata, resourceVersion: String(++this.version) },
      status: mergeStatus(obj.status, status),
    };
    this.objects.set(key, next);
    this.emit({ type: "changed", object: next });
    return structuredClone(next);
  }

  watch(kind: string, handler: (event: StoreEvent) => void): () => void {
    const listener = (event: StoreEvent) => {
      if (event.object.kind === kind) handler({ type: event.type, object: structuredClone(event.object) });
    };
    this.events.on("event", listener);
    return () => this.events.off("event", listener);
  }

  private emit(event: StoreEvent): void {
    this.events.emit("event", event);
  }
}

/** JSON merge patch (RFC 7386) at the top level of status: null removes a field. */
function mergeStatus(current: unknown, patch: unknown): unknown {
  const out: Record<string, unknown> = { ...((current as Record<string, unknown> | undefined) ?? {}) };
  for (const [k, v] of Object.entries((patch as Record<string, unknown>) ?? {})) {
    if (v === null) delete out[k];
    else out[k] = v;
  }
  return out;
}
