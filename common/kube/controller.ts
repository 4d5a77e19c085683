import { SluiceError } from "../errors.ts";
import type { Logger } from "../log.ts";
import { WorkQueue } from "./workqueue.ts";

/** What a reconcile asks for next. */
export interface ReconcileResult {
  /** Reconcile this key again after this many milliseconds (periodic sync, waiting for a dependency). */
  requeueAfterMs?: number;
}

/**
 * What one step of a reconcile says: go on with the next step, or end the reconcile (its status
 * is still written), asking to run again after `requeueAfterMs` when given.
 */
export type StepResult = { next: true } | { next: false; requeueAfterMs?: number };

/** The step is done; the next one runs. */
export const CONTINUE: StepResult = { next: true };

/** One step of a reconcile over the reconcile's state `R` and its surroundings `D`. */
export type Step<R, D> = (run: R, deps: D) => Promise<StepResult>;

/**
 * Runs the steps in order until one ends the reconcile (Flux's source-controller does the
 * same); returns that step's result, or {@link CONTINUE} when all ran.
 */
export async function runSteps<R, D>(steps: readonly Step<R, D>[], run: R, deps: D): Promise<StepResult> {
  for (const step of steps) {
    const result = await step(run, deps);
    if (!result.next) return result;
  }
  return CONTINUE;
}

/** How one reconcile ended: done, spec wrong (stalled), dependency missing (waiting), failed. */
export type ReconcileOutcome = "success" | "stalled" | "waiting" | "error";

/** Reconciles one key ("namespace/name"). Must be idempotent. */
export type Reconcile = (key: string, log: Logger) => Promise<ReconcileResult | void>;

/**
 * Runs a reconcile function over a work queue with a fixed number of workers. Unexpected errors
 * back off exponentially per key, and so do {@link SluiceError}s of retry class `backoff`; `stall`
 * stops retries (the reconciler has set Stalled; a spec change queues the key again); `wait`
 * requeues after the error's `retryAfterMs` without counting it as a failure.
 */
export class Controller {
  readonly queue: WorkQueue;
  private workers: Promise<void>[] = [];
  /** Called after every reconcile with how it ended and how long it took (metrics count with it). */
  onReconcile?: (result: ReconcileOutcome, seconds: number) => void;

  constructor(
    readonly name: string,
    private readonly reconcile: Reconcile,
    private readonly log: Logger,
    private readonly concurrency = 2,
    /** Delay after the first failure of a key, doubling per consecutive failure up to `maxMs`. */
    backoff?: { baseMs: number; maxMs: number },
  ) {
    this.queue = new WorkQueue(backoff);
  }

  /** Queues a key for reconciling now. */
  enqueue(key: string): void {
    this.queue.add(key);
  }

  /** Starts the workers. */
  start(): void {
    for (let i = 0; i < this.concurrency; i++) this.workers.push(this.work());
  }

  /** Stops taking keys and waits for the reconciles in flight. */
  async stop(): Promise<void> {
    this.queue.shutdown();
    await Promise.all(this.workers);
  }

  private async work(): Promise<void> {
    for (;;) {
      const key = await this.queue.get();
      if (key === undefined) return;
      const log = this.log.child({ controller: this.name, key });
      const started = performance.now();
      let outcome: ReconcileOutcome = "error";
      try {
        const result = await this.reconcile(key, log);
        outcome = "success";
        this.queue.forget(key);
        if (result?.requeueAfterMs !== undefined) this.queue.addAfter(key, result.requeueAfterMs);
      } catch (err) {
        if (err instanceof SluiceError && err.retry === "stall") {
          outcome = "stalled";
          this.queue.forget(key);
          log.warn({ reason: err.reason }, err.message);
        } else if (err instanceof SluiceError && err.retry === "wait") {
          outcome = "waiting";
          this.queue.forget(key);
          log.info({ reason: err.reason, retryAfterMs: err.retryAfterMs }, err.message);
          this.queue.addAfter(key, err.retryAfterMs);
        } else {
          const delay = this.queue.addRateLimited(key);
          log.error({ err, retryInMs: delay }, "reconcile failed");
        }
      } finally {
        this.queue.done(key);
        this.onReconcile?.(outcome, (performance.now() - started) / 1000);
      }
    }
  }
}

/** "namespace/name" (or "name" for cluster-scoped objects). */
export function objectKey(obj: { metadata?: { namespace?: string; name?: string } }): string {
  const ns = obj.metadata?.namespace;
  return ns ? `${ns}/${obj.metadata?.name ?? ""}` : (obj.metadata?.name ?? "");
}

/** Splits a key made by objectKey. */
export function splitKey(key: string): { namespace: string | undefined; name: string } {
  const i = key.indexOf("/");
  return i < 0 ? { namespace: undefined, name: key } : { namespace: key.slice(0, i), name: key.slice(i + 1) };
}
