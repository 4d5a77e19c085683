import { KIND_NAMES, KINDS, type KindInfo } from "../api/kinds.ts";
import { GROUP, VERSION } from "../api/meta.ts";
import type { Logger } from "../log.ts";
import { InvalidObjectError } from "../errors.ts";
import {
  parseStoreObject,
  type StatusPatch,
  type Store,
  type StoreEvent,
  type StoreInput,
  type StoreKind,
  type StoreObject,
  type StoreView,
  deepFreeze,
} from "../store.ts";
import { CoreResources, type KubeClient, type KubeObject, type Resource } from "./client.ts";
import { Informer, stripManagedFields } from "./informer.ts";

/** The store's view of a sluice kind: group, version and plural from the API package. */
function sluiceResource(info: KindInfo): Resource {
  return {
    group: GROUP,
    version: VERSION,
    kind: info.kind,
    plural: info.plural,
    namespaced: info.namespaced,
  };
}

/** The kinds a store can hold, by kind name: the sluice kinds and Nodes. */
export const StoreResources: Record<StoreKind, Resource> = {
  ...(Object.fromEntries(KIND_NAMES.map((kind) => [kind, sluiceResource(KINDS[kind])])) as Record<
    (typeof KIND_NAMES)[number],
    Resource
  >),
  Node: CoreResources.Node,
};

function resourceOf(kind: StoreKind): Resource {
  return StoreResources[kind];
}

/**
 * The Store backed by the Kubernetes API. Writes go straight to the API server (server-side
 * apply with field manager `sluice`, status through the /status subresource). Reads of a kind
 * that is being watched come from the informer's cache, so the operator's cost grows with
 * changes, not with the size of the cluster.
 */
export class KubeStore implements Store {
  /** Per kind, one informer (or one per watched namespace, for namespaced kinds). */
  private readonly informers = new Map<string, Informer<KubeObject>[]>();
  private readonly handlers = new Map<string, Set<(e: StoreEvent) => void>>();
  /**
   * Objects this store wrote whose watch event has not arrived yet. A reconcile that runs right
   * after another one's write must see that write (or it acts on a stale inventory or rollout
   * state); reads prefer these until the informer's cache has caught up.
   */
  private readonly written = new Map<string, KubeObject>();
  /**
   * What each cached or written object parsed to: the informer keeps one object per version, so
   * every version is parsed once however often it is read.
   */
  private readonly parsed = new WeakMap<KubeObject, StoreView>();

  constructor(
    readonly client: KubeClient,
    private readonly log: Logger,
    private readonly options: {
      /** Watch namespaced kinds in this namespace (or these namespaces) only; default: all. */
      namespace?: string | readonly string[];
      labelSelectors?: Record<string, string>;
      /**
       * Kinds whose `get` always asks the API server. A reconciler reads its own object this way:
       * its status (inventory, rollout state) must be exact, and a trigger that arrives during a
       * reconcile runs the next one before the watch may have delivered the last status write.
       */
      freshKinds?: readonly StoreKind[];
    } = {},
  ) {}

  /** Starts watching a kind and waits for its first full list. */
  async startWatching(kind: StoreKind): Promise<void> {
    const started = this.informers.get(kind);
    if (started) {
      await Promise.all(started.map((i) => i.hasSynced));
      return;
    }
    const res = resourceOf(kind);
    const scope = this.options.namespace;
    const namespaces: (string | undefined)[] =
      !res.namespaced || scope === undefined ? [undefined] : typeof scope === "string" ? [scope] : [...scope];
    const informers = namespaces.map((namespace) => this.informerFor(kind, res, namespace));
    this.informers.set(kind, informers);
    await Promise.all(informers.map((i) => i.start()));
  }

  private informerFor(kind: StoreKind, res: Resource, namespace: string | undefined): Informer<KubeObject> {
    return new Informer<KubeObject>(
      this.client,
      res,
      this.log,
      {
        onChange: (obj) => {
          this.caughtUp(kind, obj);
          this.dispatch(kind, "changed", obj);
        },
        onDelete: (obj) => {
          this.written.delete(writtenKey(kind, obj.metadata?.namespace, obj.metadata?.name ?? ""));
          this.dispatch(kind, "deleted", obj);
        },
      },
      {
        namespace,
        labelSelector: this.options.labelSelectors?.[kind],
        ...(kind === "Node" && { trim: trimNode }),
      },
    );
  }

  async list<K extends StoreKind>(
    kind: K,
    namespace?: string,
    labels?: Record<string, string>,
  ): Promise<StoreView<K>[]> {
    const informers = this.informers.get(kind);
    let items: KubeObject[];
    if (informers) {
      // A cache that has not seen its first list would answer "nothing": an agent starting up
      // would then take its pinned chains for orphans and remove them.
      await Promise.all(informers.map((i) => i.hasSynced));
      items = informers.flatMap((i) => i.list(namespace));
    } else {
      const selector = labels
        ? Object.entries(labels)
            .map(([k, v]) => `${k}=${v}`)
            .join(",")
        : undefined;
      items = (await this.client.list(resourceOf(kind), namespace, { labelSelector: selector })).items;
    }
    if (informers) items = items.map((o) => this.freshest(kind, o));
    const out: StoreView<K>[] = [];
    for (const o of items) {
      if (labels && !Object.entries(labels).every(([k, v]) => o.metadata?.labels?.[k] === v)) continue;
      const parsed = this.tryParse(kind, o);
      if (parsed) out.push(parsed);
    }
    return out;
  }

  async get<K extends StoreKind>(
    kind: K,
    namespace: string | undefined,
    name: string,
  ): Promise<StoreView<K> | undefined> {
    const informers = this.options.freshKinds?.includes(kind) ? undefined : this.informers.get(kind);
    if (!informers) {
      const obj = await this.client.get(resourceOf(kind), namespace, name);
      return obj && this.parse(kind, obj);
    }
    await Promise.all(informers.map((i) => i.hasSynced));
    let cached: KubeObject | undefined;
    for (const i of informers) cached ??= i.get(name, namespace);
    const obj = cached ? this.freshest(kind, cached) : this.written.get(writtenKey(kind, namespace, name));
    return obj && this.parse(kind, obj);
  }

  async apply<K extends StoreKind>(
    obj: StoreInput<K>,
    options: { dryRun?: boolean } = {},
  ): Promise<StoreObject<K>> {
    const { status: _status, ...desired } = obj as StoreInput<K> & { status?: unknown };
    const md = desired.metadata;
    const body = {
      ...desired,
      metadata: {
        name: md.name,
        namespace: md.namespace,
        labels: md.labels,
        annotations: md.annotations,
        ownerReferences: md.ownerReferences,
      },
    };
    const result = await this.client.apply(resourceOf(obj.kind), body, { dryRun: options.dryRun });
    if (!options.dryRun) this.remember(obj.kind, result);
    return structuredClone(this.parse(obj.kind, result)) as StoreObject<K>;
  }

  async delete(kind: StoreKind, namespace: string | undefined, name: string): Promise<boolean> {
    this.written.delete(writtenKey(kind, namespace, name));
    return this.client.delete(resourceOf(kind), namespace, name);
  }

  async patchStatus<K extends StoreKind>(
    kind: K,
    namespace: string | undefined,
    name: string,
    status: StatusPatch<K>,
  ): Promise<StoreObject<K>> {
    const result = await this.client.patchStatus(resourceOf(kind), namespace, name, status);
    this.remember(kind, result);
    return structuredClone(this.parse(kind, result)) as StoreObject<K>;
  }

  watch<K extends StoreKind>(kind: K, handler: (event: StoreEvent<K>) => void): () => void {
    let set = this.handlers.get(kind);
    if (!set) this.handlers.set(kind, (set = new Set()));
    const any = handler as (event: StoreEvent) => void;
    set.add(any);
    void this.startWatching(kind).catch((err) => this.log.error({ err, kind }, "cannot watch"));
    return () => set.delete(any);
  }

  /** Stops every informer. */
  async stop(): Promise<void> {
    await Promise.all([...this.informers.values()].flat().map((i) => i.stop()));
    this.informers.clear();
  }

  /**
   * `obj` parsed with the schema of `kind`, frozen and shared by every reader: lists and
   * reconciles of a large fleet read every cached object, and copying each one on every read
   * was most of the operator's CPU and garbage.
   */
  private parse<K extends StoreKind>(kind: K, obj: KubeObject): StoreView<K> {
    let parsed = this.parsed.get(obj);
    if (!parsed) {
      parsed = deepFreeze(parseStoreObject(kind, obj));
      this.parsed.set(obj, parsed);
    }
    return parsed as StoreView<K>;
  }

  /** {@link parse}, or undefined (logged) for an object that does not parse: lists and watches skip it. */
  private tryParse<K extends StoreKind>(kind: K, obj: KubeObject): StoreView<K> | undefined {
    try {
      return this.parse(kind, obj);
    } catch (err) {
      if (!(err instanceof InvalidObjectError)) throw err;
      this.log.warn({ kind, name: obj.metadata?.name, issues: err.issues }, "object does not parse; ignored");
      return undefined;
    }
  }

  private remember(kind: StoreKind, obj: KubeObject): void {
    if (!this.informers.has(kind)) return;
    obj.kind ??= kind;
    stripManagedFields(obj);
    this.written.set(writtenKey(kind, obj.metadata?.namespace, obj.metadata?.name ?? ""), obj);
  }

  /** The newer of the cached object and what this store last wrote for it. */
  private freshest(kind: StoreKind, cached: KubeObject): KubeObject {
    const key = writtenKey(kind, cached.metadata?.namespace, cached.metadata?.name ?? "");
    const mine = this.written.get(key);
    if (!mine) return cached;
    if (resourceVersionOf(cached) >= resourceVersionOf(mine)) {
      this.written.delete(key);
      return cached;
    }
    return mine;
  }

  private caughtUp(kind: StoreKind, obj: KubeObject): void {
    const key = writtenKey(kind, obj.metadata?.namespace, obj.metadata?.name ?? "");
    const mine = this.written.get(key);
    if (mine && resourceVersionOf(obj) >= resourceVersionOf(mine)) this.written.delete(key);
  }

  private dispatch(kind: StoreKind, type: StoreEvent["type"], obj: KubeObject): void {
    const handlers = this.handlers.get(kind);
    if (!handlers || handlers.size === 0) return;
    const object = this.tryParse(kind, obj);
    if (object) for (const h of handlers) h({ type, object });
  }
}

/**
 * A Node as the store keeps it: metadata and status.addresses, all sluice reads of a Node (see
 * `KubeNode`). A kubelet's Node status also lists every image on the node, its capacity, its
 * conditions and its system info, several KB per Node, refreshed by its heartbeats.
 */
function trimNode(node: KubeObject): void {
  const status = node.status;
  if (typeof status !== "object" || status === null) return;
  const addresses = "addresses" in status ? status.addresses : undefined;
  node.status = addresses === undefined ? {} : { addresses };
}

function writtenKey(kind: string, namespace: string | undefined, name: string): string {
  return `${kind}/${namespace ?? ""}/${name}`;
}

/**
 * resourceVersion as a number. Kubernetes calls it opaque, but every API server backed by etcd
 * uses etcd's revision, which only grows; an unparsable one counts as oldest.
 */
function resourceVersionOf(obj: KubeObject): number {
  const n = Number(obj.metadata?.resourceVersion);
  return Number.isFinite(n) ? n : -1;
}
