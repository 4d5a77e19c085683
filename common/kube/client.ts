import https from "node:https";
import http from "node:http";
import { KubeConfig } from "@kubernetes/client-node";

/**
 * Where a kind lives in the API: enough to build its REST paths. Cluster-scoped kinds have
 * `namespaced: false`.
 */
export interface Resource {
  group: string; // "" for the core group
  version: string;
  kind: string;
  plural: string;
  namespaced: boolean;
}

/** The minimal shape every Kubernetes object has. */
export interface KubeObject {
  apiVersion?: string;
  kind?: string;
  metadata?: {
    name?: string;
    namespace?: string;
    uid?: string;
    generation?: number;
    resourceVersion?: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
    ownerReferences?: Array<{
      apiVersion: string;
      kind: string;
      name: string;
      uid: string;
      controller?: boolean;
      blockOwnerDeletion?: boolean;
    }>;
    creationTimestamp?: string;
    deletionTimestamp?: string;
    [key: string]: unknown;
  };
  [key: string]: unknown;
}

/** A list as the API server returns it. */
export interface KubeList<T extends KubeObject = KubeObject> {
  items: T[];
  metadata?: { resourceVersion?: string; continue?: string };
}

/** An error status from the API server (or the connection to it). */
export class KubeApiError extends Error {
  override name = "KubeApiError";
  constructor(
    readonly status: number,
    readonly reason: string,
    message: string,
    readonly details?: unknown,
  ) {
    super(message);
  }
}

/** True when the error is the API server saying the object is not there. */
export function isNotFound(err: unknown): boolean {
  return err instanceof KubeApiError && err.status === 404;
}

/** True when the error is a write conflict (stale resourceVersion, or an existing name). */
export function isConflict(err: unknown): boolean {
  return err instanceof KubeApiError && err.status === 409;
}

/** Builds the REST path of a resource collection or of one object in it. */
export function resourcePath(res: Resource, namespace?: string, name?: string, subresource?: string): string {
  const base = res.group ? `/apis/${res.group}/${res.version}` : `/api/${res.version}`;
  let path = base;
  if (res.namespaced && namespace) path += `/namespaces/${encodeURIComponent(namespace)}`;
  path += `/${res.plural}`;
  if (name) path += `/${encodeURIComponent(name)}`;
  if (subresource) path += `/${subresource}`;
  return path;
}

/** Query parameters of a list or watch. */
export interface ListOptions {
  labelSelector?: string;
  fieldSelector?: string;
}

/**
 * A small JSON client for the Kubernetes API built on the KubeConfig of @kubernetes/client-node
 * (which does the config loading, in-cluster config and authentication). It speaks the few verbs
 * sluice needs — get, list, server-side apply, status patch, delete, create — with exact control
 * over content types, which the generated clients make awkward for custom resources.
 */
export class KubeClient {
  private readonly server: URL;

  constructor(readonly kubeConfig: KubeConfig) {
    const cluster = kubeConfig.getCurrentCluster();
    if (!cluster) throw new Error("kubeconfig has no current cluster");
    this.server = new URL(cluster.server);
  }

  /**
   * Loads the configuration from the usual places: `$KUBECONFIG`, `~/.kube/config`, or the
   * service account of the pod when running inside a cluster.
   */
  static fromDefault(): KubeClient {
    const kc = new KubeConfig();
    kc.loadFromDefault();
    return new KubeClient(kc);
  }

  /** Loads the configuration from one kubeconfig file. */
  static fromFile(path: string): KubeClient {
    const kc = new KubeConfig();
    kc.loadFromFile(path);
    return new KubeClient(kc);
  }

  /**
   * Sends one request and parses the JSON answer. Non-2xx answers throw KubeApiError with the
   * API server's reason and message.
   */
  async request<T = unknown>(
    method: string,
    path: string,
    options: { body?: unknown; contentType?: string; query?: Record<string, string | undefined> } = {},
  ): Promise<T> {
    const url = new URL(path, this.server);
    for (const [k, v] of Object.entries(options.query ?? {})) if (v !== undefined) url.searchParams.set(k, v);
    const reqOptions = await this.requestOptions();
    const payload = options.body === undefined ? undefined : Buffer.from(JSON.stringify(options.body));
    const headers: Record<string, string> = {
      ...(reqOptions.headers as Record<string, string> | undefined),
      Accept: "application/json",
    };
    if (payload) {
      headers["Content-Type"] = options.contentType ?? "application/json";
      headers["Content-Length"] = String(payload.length);
    }
    const transport = url.protocol === "https:" ? https : http;
    return new Promise<T>((resolve, reject) => {
      const req = transport.request(url, { ...reqOptions, method, headers, timeout: 30_000 }, (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("error", reject);
        res.on("end", () => {
          const text = Buffer.concat(chunks).toString("utf8");
          const status = res.statusCode ?? 0;
          let parsed: unknown = undefined;
          try {
            parsed = text ? JSON.parse(text) : undefined;
          } catch {
            parsed = undefined;
          }
          if (status >= 200 && status < 300) return resolve(parsed as T);
          const s = (parsed ?? {}) as { reason?: string; message?: string; details?: unknown };
          reject(
            new KubeApiError(
              status,
              s.reason ?? "Unknown",
              `${method} ${url.pathname}: ${status} ${s.message ?? text.slice(0, 300)}`,
              s.details,
            ),
          );
        });
      });
      req.on("timeout", () =>
        req.destroy(new KubeApiError(0, "Timeout", `${method} ${url.pathname}: timed out`)),
      );
      req.on("error", (err) =>
        reject(
          err instanceof KubeApiError
            ? err
            : new KubeApiError(0, "ConnectionError", `${method} ${url.pathname}: ${err.message}`),
        ),
      );
      if (payload) req.write(payload);
      req.end();
    });
  }

  /** Gets one object, or undefined when it does not exist. */
  async get<T extends KubeObject = KubeObject>(
    res: Resource,
    namespace: string | undefined,
    name: string,
  ): Promise<T | undefined> {
    try {
      return await this.request<T>("GET", resourcePath(res, namespace, name));
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  }

  /** Lists objects (all namespaces when `namespace` is undefined). */
  async list<T extends KubeObject = KubeObject>(
    res: Resource,
    namespace?: string,
    options: ListOptions = {},
  ): Promise<KubeList<T>> {
    const list = await this.request<KubeList<T>>("GET", resourcePath(res, namespace), {
      query: { labelSelector: options.labelSelector, fieldSelector: options.fieldSelector },
    });
    // Items of a list carry no apiVersion/kind; fill them in so callers can treat them as objects.
    for (const item of list.items) {
      item.apiVersion ??= res.group ? `${res.group}/${res.version}` : res.version;
      item.kind ??= res.kind;
    }
    return list;
  }

  /**
   * Server-side apply: the object becomes exactly what `fieldManager` owns. `force` takes over
   * fields another manager set (what a GitOps tool does: Git is the source of truth).
   */
  async apply<T extends KubeObject = KubeObject>(
    res: Resource,
    obj: KubeObject,
    options: { fieldManager?: string; force?: boolean; dryRun?: boolean } = {},
  ): Promise<T> {
    const name = obj.metadata?.name;
    if (!name) throw new Error(`apply ${res.kind}: metadata.name is required`);
    return this.request<T>("PATCH", resourcePath(res, obj.metadata?.namespace, name), {
      body: obj,
      contentType: "application/apply-patch+yaml",
      query: {
        fieldManager: options.fieldManager ?? "sluice",
        force: String(options.force ?? true),
        dryRun: options.dryRun ? "All" : undefined,
      },
    });
  }

  /** Merge-patches the status subresource. */
  async patchStatus<T extends KubeObject = KubeObject>(
    res: Resource,
    namespace: string | undefined,
    name: string,
    status: unknown,
  ): Promise<T> {
    return this.request<T>("PATCH", resourcePath(res, namespace, name, "status"), {
      body: { status },
      contentType: "application/merge-patch+json",
    });
  }

  /** Merge-patches the object itself (metadata, spec). */
  async mergePatch<T extends KubeObject = KubeObject>(
    res: Resource,
    namespace: string | undefined,
    name: string,
    patch: unknown,
  ): Promise<T> {
    return this.request<T>("PATCH", resourcePath(res, namespace, name), {
      body: patch,
      contentType: "application/merge-patch+json",
    });
  }

  /** Creates an object. */
  async create<T extends KubeObject = KubeObject>(res: Resource, obj: KubeObject): Promise<T> {
    return this.request<T>("POST", resourcePath(res, obj.metadata?.namespace), { body: obj });
  }

  /** Deletes an object; returns false when it was already gone. */
  async delete(res: Resource, namespace: string | undefined, name: string): Promise<boolean> {
    try {
      await this.request("DELETE", resourcePath(res, namespace, name), {
        body: { kind: "DeleteOptions", apiVersion: "v1", propagationPolicy: "Background" },
      });
      return true;
    } catch (err) {
      if (isNotFound(err)) return false;
      throw err;
    }
  }

  private async requestOptions(): Promise<https.RequestOptions> {
    // Authentication material can rotate (token files, exec plugins): ask the config each time,
    // but it is cheap for static credentials.
    const opts: https.RequestOptions = {};
    await this.kubeConfig.applyToHTTPSOptions(opts);
    return opts;
  }
}

/** Core and sluice resources the operator and agent use. */
export const CoreResources = {
  Namespace: { group: "", version: "v1", kind: "Namespace", plural: "namespaces", namespaced: false },
  Node: { group: "", version: "v1", kind: "Node", plural: "nodes", namespaced: false },
  Secret: { group: "", version: "v1", kind: "Secret", plural: "secrets", namespaced: true },
  Event: { group: "", version: "v1", kind: "Event", plural: "events", namespaced: true },
  Lease: { group: "coordination.k8s.io", version: "v1", kind: "Lease", plural: "leases", namespaced: true },
} as const satisfies Record<string, Resource>;
