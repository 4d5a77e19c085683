import type { Logger } from "../../../common/log.ts";
import type { Store, StoredObject, StoreEvent } from "../../../common/store.ts";
import { CoreResources, type KubeClient, type KubeObject, type Resource } from "./client.ts";
import { Informer } from "./informer.ts";

const group = "sluice.dev";
const version = "v1alpha1";

/** The kinds a store can hold, by kind name. */
export const StoreResources: Record<string, Resource> = {
  GitSource: { group, version, kind: "GitSource", plural: "gitsources", namespaced: true },
  NetworkFunction: { group, version, kind: "NetworkFunction", plural: "networkfunctions", namespaced: true },
  ServiceChain: { group, version, kind: "ServiceChain", plural: "servicechains", namespaced: true },
  NodeChain: { group, version, kind: "NodeChain", plural: "nodechains", namespaced: true },
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
  private readonly informers = new Map<string, Informer<KubeObject>>();
  private readonly handlers = new Map<string, Set<(e: StoreEvent) => void>>();

  constructor(
    readonly client: KubeClient,
    private readonly log: Logger,
    private readonly options: { namespace?: string; labelSelectors?: Record<string, string> } = {},
  ) {}

  /** Starts watching a kind and waits for its first full list. */
  async startWatching(kind: string): Promise<void> {
    if (this.informers.has(kind)) return this.informers.get(kind)!.hasSynced;
    const res = resourceOf(kind);
    const informer = new Informer<KubeObject>(
      this.client,
      res,
      this.log,
      {
        onChange: (obj) => this.dispatch({ type: "changed", object: obj as StoredObject }),
        onDelete: (obj) => this.dispatch({ type: "deleted", object: obj as StoredObject }),
      },
      {
        namespace: res.namespaced ? this.options.namespace : undefined,
        labelSelector: this.options.labelSelectors?.[kind],
      },
    );
    this.informers.set(kind, informer);
    await informer.start();
  }

  async list(kind: string, namespace?: string, labels?: Record<string, string>): Promise<StoredObject[]> {
    const informer = this.informers.get(kind);
    let items: KubeObject[];
    if (informer) {
      items = informer.list(namespace);
    } else {
      const selector = labels
        ? Object.entries(labels)
            .map(([k, v]) => `${k}=${v}`)
            .join(",")
        : undefined;
      items = (await this.client.list(resourceOf(kind), namespace, { labelSelector: selector })).items;
    }
    return items
      .filter((o) => !labels || Object.entries(labels).every(([k, v]) => o.metadata?.labels?.[k] === v))
      .map((o) => structuredClone(o) as StoredObject);
  }

  async get(kind: string, namespace: string | undefined, name: string): Promise<StoredObject | undefined> {
    const informer = this.informers.get(kind);
    const obj = informer
      ? informer.get(name, namespace)
      : await this.client.get(resourceOf(kind), namespace, name);
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
    return (await this.client.apply(resourceOf(obj.kind), body, { dryRun: options.dryRun })) as StoredObject;
  }

  async delete(kind: string, namespace: string | undefined, name: string): Promise<boolean> {
    return this.client.delete(resourceOf(kind), namespace, name);
  }

  async patchStatus(
    kind: string,
    namespace: string | undefined,
    name: string,
    status: unknown,
  ): Promise<StoredObject> {
    return (await this.client.patchStatus(resourceOf(kind), namespace, name, status)) as StoredObject;
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
    await Promise.all([...this.informers.values()].map((i) => i.stop()));
    this.informers.clear();
  }

  private dispatch(event: StoreEvent): void {
    for (const h of this.handlers.get(event.object.kind ?? "") ?? []) h(event);
  }
}
