import {
  makeInformer,
  type Informer as ClientInformer,
  type KubernetesObject,
  type ObjectCache,
} from "@kubernetes/client-node";
import type { Logger } from "../log.ts";
import { type KubeClient, type KubeObject, type Resource, resourcePath } from "./client.ts";

/** What an informer tells its owner. */
export interface InformerHandlers<T extends KubeObject> {
  onChange(obj: T): void;
  onDelete(obj: T): void;
}

/**
 * A cached list+watch of one resource, built on client-node's informer (which relists on 410
 * Gone), with what that informer lacks for a long-running controller:
 * - restart with exponential backoff when the watch fails (client-node stops on such errors);
 * - a watchdog that restarts a watch that has been silent for too long (a half-open connection
 *   otherwise looks exactly like a quiet cluster);
 * - a promise that resolves once the first list has been delivered, so that controllers do not
 *   act on a partial view.
 */
export class Informer<T extends KubeObject> {
  // client-node's object type is narrower than ours; objects are handed through unchanged.
  private readonly informer: ClientInformer<KubernetesObject> & ObjectCache<KubernetesObject>;
  private failures = 0;
  private errors = 0;
  private lastHeard = Date.now();
  private restartTimer: NodeJS.Timeout | undefined;
  private watchdog: NodeJS.Timeout | undefined;
  private stopped = false;
  private synced!: () => void;
  /** Resolves once the initial list has been delivered to the handlers. */
  readonly hasSynced: Promise<void>;

  constructor(
    client: KubeClient,
    readonly resource: Resource,
    private readonly log: Logger,
    handlers: InformerHandlers<T>,
    options: { namespace?: string; labelSelector?: string; watchdogMs?: number } = {},
  ) {
    this.hasSynced = new Promise((resolve) => (this.synced = resolve));
    const path = resourcePath(resource, options.namespace);
    const list = async () => {
      const result = await client.list<T>(resource, options.namespace, {
        labelSelector: options.labelSelector,
      });
      return result as unknown as {
        items: KubernetesObject[];
        metadata: { resourceVersion?: string };
      } as never;
    };
    this.informer = makeInformer<KubernetesObject>(client.kubeConfig, path, list, options.labelSelector);
    const heard = () => {
      this.lastHeard = Date.now();
      this.failures = 0;
    };
    this.informer.on("add", (obj) => {
      heard();
      handlers.onChange(obj as T);
    });
    this.informer.on("update", (obj) => {
      heard();
      handlers.onChange(obj as T);
    });
    this.informer.on("delete", (obj) => {
      heard();
      handlers.onDelete(obj as T);
    });
    this.informer.on("connect", () => {
      this.lastHeard = Date.now();
    });
    this.informer.on("error", (err) => this.restart(err));
    const watchdogMs = options.watchdogMs ?? 5 * 60_000;
    this.watchdog = setInterval(
      () => {
        if (!this.stopped && Date.now() - this.lastHeard > watchdogMs) {
          this.log.warn(
            { resource: resource.plural, silentMs: Date.now() - this.lastHeard },
            "watch silent; restarting it",
          );
          this.lastHeard = Date.now();
          void this.informer.stop().then(() => this.begin());
        }
      },
      Math.min(watchdogMs, 30_000),
    );
    this.watchdog.unref();
  }

  /** Starts listing and watching; resolves when the first list is in. */
  async start(): Promise<void> {
    await this.begin();
    await this.hasSynced;
  }

  /** Objects currently in the cache. */
  list(namespace?: string): T[] {
    return [...this.informer.list(namespace)] as T[];
  }

  /** One object from the cache. */
  get(name: string, namespace?: string): T | undefined {
    return this.informer.get(name, namespace) as T | undefined;
  }

  /** Stops watching and all timers. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.restartTimer) clearTimeout(this.restartTimer);
    if (this.watchdog) clearInterval(this.watchdog);
    await this.informer.stop();
  }

  private async begin(): Promise<void> {
    if (this.stopped) return;
    // client-node reports a failed list through the error callback and still resolves start():
    // only a start without a new error means the cache holds a full list.
    const errorsBefore = this.errors;
    try {
      await this.informer.start();
      if (this.errors === errorsBefore) this.synced();
    } catch (err) {
      this.restart(err);
    }
  }

  private restart(err: unknown): void {
    if (this.stopped) return;
    this.errors++;
    this.failures++;
    const delay = Math.min(30_000, 250 * 2 ** Math.min(this.failures, 7));
    this.log.warn({ err, resource: this.resource.plural, retryInMs: delay }, "watch failed; restarting");
    if (this.restartTimer) clearTimeout(this.restartTimer);
    this.restartTimer = setTimeout(() => void this.begin(), delay);
    this.restartTimer.unref();
  }
}
