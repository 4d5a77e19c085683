import { randomBytes } from "node:crypto";
import type { Logger } from "../log.ts";
import { CoreResources, type KubeClient, type KubeObject } from "./client.ts";

/** Normal events say what happened; Warning events say what went wrong. */
export type EventType = "Normal" | "Warning";

/**
 * Records what a controller did both in the log and as a Kubernetes Event on the object, so the
 * two never disagree (`kubectl describe` shows the same line the log has). Repeats of the same
 * event on the same object are folded into one Event whose count grows, as kubectl expects.
 */
export class EventRecorder {
  private readonly recent = new Map<
    string,
    { eventName: string; namespace: string; count: number; first: string }
  >();

  constructor(
    private readonly client: KubeClient | undefined,
    private readonly component: string,
  ) {}

  /** Logs the event on `log` and records it on `obj`; never throws (an event is best effort). */
  async record(
    log: Logger,
    obj: KubeObject,
    type: EventType,
    reason: string,
    message: string,
  ): Promise<void> {
    if (type === "Warning") log.warn({ reason }, message);
    else log.info({ reason }, message);
    if (!this.client) return;
    const md = obj.metadata ?? {};
    const namespace = md.namespace ?? "default";
    const now = new Date().toISOString();
    const dedupKey = `${obj.kind}/${namespace}/${md.name}/${type}/${reason}/${message}`;
    try {
      const seen = this.recent.get(dedupKey);
      if (seen) {
        seen.count++;
        await this.client.mergePatch(CoreResources.Event, seen.namespace, seen.eventName, {
          count: seen.count,
          lastTimestamp: now,
        });
        return;
      }
      const eventName = `${md.name}.${Date.now().toString(16)}${randomBytes(3).toString("hex")}`;
      await this.client.create(CoreResources.Event, {
        apiVersion: "v1",
        kind: "Event",
        metadata: { name: eventName, namespace },
        involvedObject: {
          apiVersion: obj.apiVersion,
          kind: obj.kind,
          name: md.name,
          namespace: md.namespace,
          uid: md.uid,
          resourceVersion: md.resourceVersion,
        },
        type,
        reason,
        message: message.slice(0, 1024),
        source: { component: this.component },
        reportingComponent: this.component,
        reportingInstance: this.component,
        firstTimestamp: now,
        lastTimestamp: now,
        count: 1,
      });
      if (this.recent.size > 1000) this.recent.clear();
      this.recent.set(dedupKey, { eventName, namespace, count: 1, first: now });
    } catch (err) {
      log.debug({ err }, "could not record event");
    }
  }
}
