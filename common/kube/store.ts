import { KIND_NAMES, KINDS, type KindInfo } from "../api/kinds.ts";
import { GROUP, VERSION } from "../api/meta.ts";
import type { Logger } from "../log.ts";
import type { Store, StoredObject, StoreEvent } from "../store.ts";
import { CoreResources, type KubeClient, type KubeObject, type Resource } from "./client.ts";
import { Informer } from "./informer.ts";

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
export const StoreResources: Record<string, Resource> = {
  ...Object.fromEntries(KIND_NAMES.map((kind) => [kind, sluiceResource(KINDS[kind])])),
  Node: CoreResources.Node,
};

function resourceOf(kind: string): Resource {
  const res = StoreResources[kind];
  if (!res) throw new Error(`the store does not know kind ${kind}`);
  return res;
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
      freshKinds?: readonly string[];
    } = {},
  ) {}

  /** Starts watching a kind and waits for its first full list. */
  async startWatching(kind: string): Promise<void> {
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

  private informerFor(kind: string, res: Resource, namespace: string | undefined): Informer<KubeObject> {
    return new Informer<KubeObject>(
      this.client,
      res,
      this.log,
      {
        onChange: (obj) => {
          this.caughtUp(obj);
          this.dispatch({ type: "changed", object: obj as StoredObject });
        },
        onDelete: (obj) => {
          this.written.delete(
            writtenKey(obj.kind ?? kind, obj.metadata?.namespace, obj.metadata?.name ?? ""),
          );
          this.dispatch({ type: "deleted", object: obj as StoredObject });
        },
      },
      { namespace, labelSelector: this.options.labelSelectors?.[kind] },
    );
  }

  async list(kind: string, namespace?: string, labels?: Record<string, string>): Promise<StoredObject[]> {
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
    return items
      .filter((o) => !labels || Object.entries(labels).every(([k, v]) => o.metadata?.labels?.[k] === v))
      .map((o) => structuredClone(o) as StoredObject);
  }

  async get(kind: string, namespace: string | undefined, name: string): Promise<StoredObject | undefined> {
    const informers = this.options.freshKinds?.includes(kind) ? undefined : this.informers.get(kind);
    if (!informers) {
      const obj = await this.client.get(resourceOf(kind), namespace, name);
      return obj && (structuredClone(obj) as StoredObject);
    }
    await Promise.all(informers.map((i) => i.hasSynced));
    let cached: KubeObject | undefined;
    for (const i of informers) cached ??= i.get(name, namespace);
    const obj = cached ? this.freshest(kind, cached) : this.written.get(writtenKey(kind, namespace, name));
    return obj && (structuredClone(obj) as StoredObject);
  }

  async apply(obj: StoredObject, options: { dryRun?: boolean } = {}): Promise<StoredObject> {
    const { status: _status, ...desired } = obj;
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
    return result as StoredObject;
  }

  async delete(kind: string, namespace: string | undefined, name: string): Promise<boolean> {
    this.written.delete(writtenKey(kind, namespace, name));
    return this.client.delete(resourceOf(kind), namespace, name);
  }

  async patchStatus(
    kind: string,
    namespace: string | undefined,
    name: string,
    status: unknown,
  ): Promise<StoredObject> {
    const result = await this.client.patchStatus(resourceOf(kind), namespace, name, status);
    this.remember(kind, result);
    return result as StoredObject;
  }

  watch(kind: string, handler: (event: StoreEvent) => void): () => void {
    let set = this.handlers.get(kind);
    if (!set) this.handlers.set(kind, (set = new Set()));
    set.add(handler);
    void this.startWatching(kind).catch((err) => this.log.error({ err, kind }, "cannot watch"));
    return () => set.delete(handler);
  }

  /** Stops every informer. */
  async stop(): Promise<void> {
    await Promise.all([...this.informers.values()].flat().map((i) => i.stop()));
    this.informers.clear();
  }

  private remember(kind: string, obj: KubeObject): void {
    if (!this.informers.has(kind)) return;
    obj.kind ??= kind;
    this.written.set(writtenKey(kind, obj.metadata?.namespace, obj.metadata?.name ?? ""), obj);
  }

  /** The newer of the cached object and what this store last wrote for it. */
  private freshest(kind: string, cached: KubeObject): KubeObject {
    const key = writtenKey(kind, cached.metadata?.namespace, cached.metadata?.name ?? "");
    const mine = this.written.get(key);
    if (!mine) return cached;
    if (resourceVersionOf(cached) >= resourceVersionOf(mine)) {
      this.written.delete(key);
      return cached;
    }
    return mine;
  }

  private caughtUp(obj: KubeObject): void {
    const key = writtenKey(obj.kind ?? "", obj.metadata?.namespace, obj.metadata?.name ?? "");
    const mine = this.written.get(key);
    if (mine && resourceVersionOf(obj) >= resourceVersionOf(mine)) this.written.delete(key);
  }

  private dispatch(event: StoreEvent): void {
    for (const h of this.handlers.get(event.object.kind ?? "") ?? []) h(event);
  }
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
