import { EventEmitter } from "node:events";
import { z } from "zod";
import {
  API_VERSION,
  GitSource,
  NetworkFunction,
  NodeChain,
  objectMeta,
  ServiceChain,
  toSluiceIssues,
} from "./api/index.ts";
import { InvalidObjectError } from "./errors.ts";

/**
 * A Kubernetes Node as sluice reads it: name, labels, annotations, whether it is being deleted,
 * and its addresses (the overlay's segment table names nodes by their InternalIP). The rest of
 * what a store holds passes through untouched; the Kubernetes store keeps nothing else of a
 * Node's status.
 */
export const KubeNode = z.looseObject({
  apiVersion: z.string(),
  kind: z.literal("Node"),
  metadata: objectMeta(z.string().min(1)),
  status: z
    .looseObject({
      addresses: z.array(z.looseObject({ type: z.string(), address: z.string() })).optional(),
    })
    .optional(),
});
export type KubeNode = z.infer<typeof KubeNode>;

/** The schema of every kind a store holds: objects are parsed with it wherever they enter. */
export const STORE_SCHEMAS = { GitSource, NetworkFunction, ServiceChain, NodeChain, Node: KubeNode } as const;

/** A kind the store holds. */
export type StoreKind = keyof typeof STORE_SCHEMAS;

/** Whether `kind` (read from status or a manifest) is a kind the store holds. */
export function isStoreKind(kind: string): kind is StoreKind {
  return Object.hasOwn(STORE_SCHEMAS, kind);
}

/** An object of `K` as read from the store: parsed, defaults applied. */
export type StoreObject<K extends StoreKind = StoreKind> = z.output<(typeof STORE_SCHEMAS)[K]>;

/**
 * A value that must not be changed: what a store hands out is shared with its cache and with
 * every other reader (a reader that wants to change it copies it first, e.g. with
 * `structuredClone`). The stores freeze what they hand out, so a write throws.
 */
export type Frozen<T> = T extends (...args: never[]) => unknown
  ? T
  : T extends readonly (infer U)[]
    ? readonly Frozen<U>[]
    : T extends object
      ? { readonly [P in keyof T]: Frozen<T[P]> }
      : T;

/**
 * An object of `K` as read from the store: shared with the store's cache and every other reader,
 * and frozen at run time (ES modules are strict: a write to it throws). Typed as the mutable
 * object for now, so that code that only reads it passes it on unchanged.
 */
export type StoreView<K extends StoreKind = StoreKind> = StoreObject<K>;

/** Freezes `value` and everything it holds; returns it. */
export function deepFreeze<T>(value: T): T {
  if (typeof value === "object" && value !== null && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value)) deepFreeze(v);
  }
  return value;
}

/** An object of `K` as written: what a manifest may say (defaults may be left out; status is ignored). */
export type StoreInput<K extends StoreKind = StoreKind> = z.input<(typeof STORE_SCHEMAS)[K]> & { kind: K };

/** The status of `K` (Nodes have none sluice reads). */
export type StatusOf<K extends StoreKind> = StoreObject<K> extends { status: infer S } ? S : never;

/**
 * A status update: top-level fields of status to set, and `null` for those to remove (a JSON
 * merge patch, RFC 7386, at the top level of status). This is the only way to remove a status
 * field: a field left out keeps its value.
 */
export type StatusPatch<K extends StoreKind> = { [F in keyof StatusOf<K>]?: StatusOf<K>[F] | null };

/**
 * The patch that turns status `previous` into `next`: every field of `next`, and null for each
 * field of `previous` that `next` leaves out (or sets to undefined). Controllers build the whole
 * status they want and write it with this, so a field is removed by leaving it out, in every
 * store alike.
 */
export function statusPatch<K extends StoreKind>(
  previous: StatusOf<K> | undefined,
  next: StatusOf<K>,
): StatusPatch<K> {
  const patch: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(next as object)) if (value !== undefined) patch[key] = value;
  for (const key of Object.keys((previous ?? {}) as object)) if (!(key in patch)) patch[key] = null;
  return patch as StatusPatch<K>;
}

/**
 * Parses an object that enters sluice from a store: kind and apiVersion are filled in when the
 * API server left them out (list items), then the kind's schema applies its defaults.
 *
 * @throws InvalidObjectError naming the object and every field that does not parse.
 */
export function parseStoreObject<K extends StoreKind>(kind: K, raw: unknown): StoreObject<K> {
  const record = (raw ?? {}) as Record<string, unknown>;
  const input = {
    ...record,
    kind,
    apiVersion: record.apiVersion ?? (kind === "Node" ? "v1" : API_VERSION),
  };
  const parsed = STORE_SCHEMAS[kind].safeParse(input);
  if (parsed.success) return parsed.data as StoreObject<K>;
  const meta: unknown = record.metadata;
  const field = (key: string): string | undefined => {
    if (typeof meta !== "object" || meta === null || !(key in meta)) return undefined;
    const value: unknown = Reflect.get(meta, key);
    return typeof value === "string" ? value : undefined;
  };
  const name = field("name");
  const namespace = field("namespace");
  throw new InvalidObjectError({
    kind,
    ...(name !== undefined && { name }),
    ...(namespace !== undefined && { namespace }),
    issues: toSluiceIssues(parsed.error.issues, input),
  });
}

/** What changed in the store. */
export interface StoreEvent<K extends StoreKind = StoreKind> {
  type: "changed" | "deleted";
  /** Shared with the store's cache: see {@link Frozen}. */
  object: StoreView<K>;
}

/**
 * The store: where sluice objects live. In a cluster it is the Kubernetes API (common/kube
 * KubeStore); in single-host mode it is memory (MemoryStore). Planning, rollout and the GitSource
 * apply step are written against this interface only, so the same code runs in both places.
 *
 * Every method is typed by kind, and every object it returns was parsed with the kind's schema
 * (see {@link parseStoreObject}); callers trust the types.
 */
export interface Store {
  /**
   * Lists objects of a kind, optionally in one namespace and matching labels. The objects are
   * shared with the store's cache and frozen (see {@link Frozen}): copy one before changing it.
   */
  list<K extends StoreKind>(
    kind: K,
    namespace?: string,
    labels?: Record<string, string>,
  ): Promise<StoreView<K>[]>;
  /**
   * Gets one object, or undefined. Like {@link list}'s, the object is shared and frozen.
   *
   * @throws InvalidObjectError when the stored object does not parse.
   */
  get<K extends StoreKind>(
    kind: K,
    namespace: string | undefined,
    name: string,
  ): Promise<StoreView<K> | undefined>;
  /**
   * Creates or updates an object from its desired form (metadata labels/annotations/owners and
   * spec; status is left alone). Generation grows when the spec changes. With `dryRun` the
   * object is validated as if written, and nothing changes.
   */
  apply<K extends StoreKind>(obj: StoreInput<K>, options?: { dryRun?: boolean }): Promise<StoreObject<K>>;
  /** Deletes an object; false when it was not there. */
  delete(kind: StoreKind, namespace: string | undefined, name: string): Promise<boolean>;
  /** Updates the status of an object; see {@link StatusPatch}. */
  patchStatus<K extends StoreKind>(
    kind: K,
    namespace: string | undefined,
    name: string,
    status: StatusPatch<K>,
  ): Promise<StoreObject<K>>;
  /**
   * Calls `handler` for every change to objects of `kind` from now on; returns an unsubscribe.
   * An object that does not parse is not passed on.
   */
  watch<K extends StoreKind>(kind: K, handler: (event: StoreEvent<K>) => void): () => void;
}

/** Object identity inside a store. */
export function storeKey(kind: string, namespace: string | undefined, name: string): string {
  return `${kind}/${namespace ?? ""}/${name}`;
}

/**
 * An in-memory store with Kubernetes' semantics where sluice relies on them: objects are
 * validated with their schema when written (as the API server does with the CRD's), generation
 * grows on spec changes, resourceVersion on every write, deleting an owner deletes what it owns,
 * and watchers see every change in order. Used by single-host mode and by tests of the planning
 * and rollout logic.
 */
export class MemoryStore implements Store {
  /** Every object, frozen: readers share them (see {@link Frozen}). */
  private readonly objects = new Map<string, StoreView>();
  private readonly events = new EventEmitter();
  private version = 0;
  private uidCounter = 0;

  constructor() {
    this.events.setMaxListeners(0);
  }

  async list<K extends StoreKind>(
    kind: K,
    namespace?: string,
    labels?: Record<string, string>,
  ): Promise<StoreView<K>[]> {
    const out: StoreView<K>[] = [];
    for (const obj of this.objects.values()) {
      if (obj.kind !== kind) continue;
      if (namespace !== undefined && obj.metadata.namespace !== namespace) continue;
      if (labels && !Object.entries(labels).every(([k, v]) => obj.metadata.labels?.[k] === v)) continue;
      out.push(obj as StoreView<K>);
    }
    return out.sort((a, b) =>
      storeKey(a.kind, a.metadata.namespace, a.metadata.name).localeCompare(
        storeKey(b.kind, b.metadata.namespace, b.metadata.name),
      ),
    );
  }

  async get<K extends StoreKind>(
    kind: K,
    namespace: string | undefined,
    name: string,
  ): Promise<StoreView<K> | undefined> {
    return this.objects.get(storeKey(kind, namespace, name)) as StoreView<K> | undefined;
  }

  async apply<K extends StoreKind>(
    desired: StoreInput<K>,
    options: { dryRun?: boolean } = {},
  ): Promise<StoreObject<K>> {
    // Status is not written by apply (the API server ignores it outside the status subresource).
    const { status: _status, ...withoutStatus } = desired as StoreInput<K> & { status?: unknown };
    const parsed = parseStoreObject(desired.kind, withoutStatus) as StoreObject;
    if (options.dryRun) return parsed as StoreObject<K>;
    const key = storeKey(parsed.kind, parsed.metadata.namespace, parsed.metadata.name);
    const existing = this.objects.get(key);
    const specChanged = !existing || JSON.stringify(specOf(existing)) !== JSON.stringify(specOf(parsed));
    const next = {
      ...parsed,
      metadata: {
        ...parsed.metadata,
        uid: existing?.metadata.uid ?? `uid-${++this.uidCounter}`,
        generation: (existing?.metadata.generation ?? 0) + (specChanged ? 1 : 0),
        resourceVersion: String(++this.version),
        creationTimestamp: existing?.metadata.creationTimestamp ?? new Date().toISOString(),
      },
      ...(existing && "status" in existing && { status: existing.status }),
    } as StoreObject;
    this.objects.set(key, deepFreeze(next) as StoreView);
    this.emit({ type: "changed", object: next });
    return structuredClone(next) as StoreObject<K>;
  }

  async delete(kind: StoreKind, namespace: string | undefined, name: string): Promise<boolean> {
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

  async patchStatus<K extends StoreKind>(
    kind: K,
    namespace: string | undefined,
    name: string,
    status: StatusPatch<K>,
  ): Promise<StoreObject<K>> {
    const key = storeKey(kind, namespace, name);
    const obj = this.objects.get(key);
    if (!obj) throw new Error(`${kind} ${namespace ? `${namespace}/` : ""}${name} not found`);
    // Validated like a write to the status subresource: a status that does not parse is refused.
    const next = parseStoreObject(kind, {
      ...obj,
      metadata: { ...obj.metadata, resourceVersion: String(++this.version) },
      status: mergeStatus(statusOf(obj), status),
    }) as StoreObject;
    this.objects.set(key, deepFreeze(next) as StoreView);
    this.emit({ type: "changed", object: next });
    return structuredClone(next) as StoreObject<K>;
  }

  watch<K extends StoreKind>(kind: K, handler: (event: StoreEvent<K>) => void): () => void {
    const listener = (event: StoreEvent) => {
      if (event.object.kind === kind) handler({ type: event.type, object: event.object as StoreView<K> });
    };
    this.events.on("event", listener);
    return () => this.events.off("event", listener);
  }

  private emit(event: StoreEvent): void {
    this.events.emit("event", event);
  }
}

function specOf(obj: StoreView): unknown {
  return "spec" in obj ? obj.spec : undefined;
}

function statusOf(obj: StoreView): object | undefined {
  const status = "status" in obj ? obj.status : undefined;
  return typeof status === "object" && status !== null ? status : undefined;
}

/** JSON merge patch (RFC 7386) at the top level of status: null removes a field. */
export function mergeStatus(current: object | undefined, patch: object): Record<string, unknown> {
  const out: Record<string, unknown> = { ...current };
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else if (v !== undefined) out[k] = v;
  }
  return out;
}
