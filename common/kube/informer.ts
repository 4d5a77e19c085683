import {
  ListWatch,
  Watch,
  type KubeConfig,
  type KubernetesListObject,
  type KubernetesObject,
} from "@kubernetes/client-node";
import { z } from "zod";
import type { Logger } from "../log.ts";
import { type KubeClient, type KubeObject, type Resource, resourcePath } from "./client.ts";

/** The HTTP code an ERROR watch event (a Status) or a failed request carries. */
const WatchErrorCode = z.object({ code: z.number() });
const RequestErrorCode = z.object({ statusCode: z.number() });

/** What an informer tells its owner. */
export interface InformerHandlers<T extends KubeObject> {
  onChange(obj: T): void;
  onDelete(obj: T): void;
}

/**
 * Drops `metadata.managedFields` from an object the informer is about to cache: nothing in sluice
 * reads it, and for an object written by server-side apply and a status writer it is often as
 * large as the object itself (a fleet's NodeChains held it once per node).
 */
export function stripManagedFields(obj: KubeObject): void {
  if (obj.metadata && "managedFields" in obj.metadata) delete obj.metadata.managedFields;
}

/**
 * Whether a value from the wire is an object at all (a watch event may carry anything): one
 * sluice's store reads and client-node's cache holds.
 */
function isObject(value: unknown): value is KubeObject & KubernetesObject {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/**
 * Objects per page of an informer's LIST, as client-go's reflector asks: each page's body is
 * parsed, trimmed and let go before the next one comes, so a first list of 10,000 Nodes never
 * holds the whole answer (and client-node's objects and the plain copy made of it) at once.
 */
export const LIST_PAGE_SIZE = 500;

/** Pause before the `n`th consecutive retry: exponential up to 30 s, with full jitter. */
function restartDelayMs(n: number, baseMs = 250): number {
  const cap = Math.min(30_000, baseMs * 2 ** Math.min(n, 7));
  return Math.round(cap / 2 + (Math.random() * cap) / 2);
}

/**
 * client-node's watch, asking for bookmarks (so that a quiet watch still learns the current
 * resourceVersion and a restart rarely finds it compacted away) and pausing, with backoff, before
 * handing on a 410 Gone: many informers told at once that their version is gone do not all list
 * at once.
 */
class ResumingWatch extends Watch {
  /** 410 Gone answers in a row. */
  private gone = 0;

  constructor(
    config: KubeConfig,
    private readonly onGone: (delayMs: number) => void,
    private readonly onReceipt: (obj: unknown) => void,
  ) {
    super(config);
  }

  override watch(
    path: string,
    queryParams: Record<string, unknown>,
    callback: (phase: string, apiObj: unknown, watchObj?: unknown) => void,
    done: (err: unknown) => void,
  ): Promise<AbortController> {
    let sawGone = false;
    return super.watch(
      path,
      { ...queryParams, allowWatchBookmarks: true },
      (phase, obj, watchObj) => {
        if (phase === "ERROR" && WatchErrorCode.safeParse(obj).data?.code === 410) sawGone = true;
        else if (phase !== "ERROR") this.gone = 0;
        if (phase !== "ERROR") this.onReceipt(obj);
        callback(phase, obj, watchObj);
      },
      (err) => {
        const statusCode = RequestErrorCode.safeParse(err).data?.statusCode;
        if (!sawGone && statusCode !== 410) return done(err);
        const delay = restartDelayMs(this.gone++, 100);
        this.onGone(delay);
        setTimeout(() => done(err), delay).unref();
      },
    );
  }
}

/**
 * A cached list+watch of one resource, built on client-node's ListWatch, which resumes a watch
 * that ended from the last resourceVersion it saw and lists again only after 410 Gone. Added
 * here for a long-running controller:
 * - bookmarks, and a jittered pause before the list that follows a 410;
 * - restart with exponential backoff and jitter when the watch fails (client-node stops on
 *   such errors; the restart resumes from the last resourceVersion, it does not list);
 * - a watchdog that restarts a watch that has been silent for too long (a half-open connection
 *   otherwise looks exactly like a quiet cluster);
 * - a promise that resolves once the first list has been delivered, so that controllers do not
 *   act on a partial view.
 */
export class Informer<T extends KubeObject> {
  // client-node's object type is narrower than ours; objects are handed through unchanged.
  private readonly informer: ListWatch<KubernetesObject>;
  /** Lists made (the first, and one after each 410 Gone). */
  lists = 0;
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
    options: {
      namespace?: string;
      labelSelector?: string;
      watchdogMs?: number;
      /**
       * Trims an object in place before it is cached (after managedFields are dropped): what the
       * owner never reads need not be kept once per object.
       */
      trim?: (obj: T) => void;
      /** Objects per page of a LIST (default {@link LIST_PAGE_SIZE}). */
      pageSize?: number;
    } = {},
  ) {
    this.hasSynced = new Promise((resolve) => (this.synced = resolve));
    const path = resourcePath(resource, options.namespace);
    const trim = options.trim;
    function onReceipt(obj: unknown): void {
      if (!isObject(obj)) return;
      stripManagedFields(obj);
      trim?.(obj as T);
    }
    const list = async () => {
      this.lists++;
      // Pages of one LIST come from one snapshot: the last page's resourceVersion is the list's.
      // A continue token that expired fails the list; the informer lists again after a pause.
      const items: KubernetesObject[] = [];
      let resourceVersion: string | undefined;
      let next: string | undefined;
      do {
        const page = await client.list<T>(resource, options.namespace, {
          labelSelector: options.labelSelector,
          limit: options.pageSize ?? LIST_PAGE_SIZE,
          ...(next ? { continue: next } : {}),
        });
        for (const item of page.items) {
          if (!isObject(item)) continue;
          onReceipt(item);
          items.push(item);
        }
        resourceVersion = page.metadata?.resourceVersion;
        next = page.metadata?.continue || undefined;
      } while (next);
      const listed: KubernetesListObject<KubernetesObject> = { items, metadata: { resourceVersion } };
      return listed;
    };
    const watch = new ResumingWatch(
      client.kubeConfig,
      (delayMs) =>
        this.log.info(
          { resource: resource.plural, listInMs: delayMs },
          "watch version gone (410); listing again",
        ),
      onReceipt,
    );
    this.informer = new ListWatch<KubernetesObject>(path, watch, list, false, options.labelSelector);
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
    const delay = restartDelayMs(this.failures);
    this.log.warn({ err, resource: this.resource.plural, retryInMs: delay }, "watch failed; restarting");
    if (this.restartTimer) clearTimeout(this.restartTimer);
    this.restartTimer = setTimeout(() => void this.begin(), delay);
    this.restartTimer.unref();
  }
}
