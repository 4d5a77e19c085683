import {
  formatParseError,
  Reason,
  type ConditionSet,
  type SluiceIssue,
  type SluiceParseError,
} from "./api/index.ts";

/**
 * What a controller does after an error:
 * - `stall`: the spec is wrong; set Stalled and do not retry until the spec changes.
 * - `backoff`: something failed that may pass; retry with growing delays.
 * - `wait`: nothing is wrong, something needed is not there yet; retry after a delay, without
 *   counting it as a failure.
 */
export type RetryClass = "stall" | "backoff" | "wait";

/** One problem with one field, as data (the API's {@link SluiceIssue}). */
export type FieldIssue = SluiceIssue;

/** What {@link SluiceError} is made with, besides reason and message. */
export interface SluiceErrorOptions {
  retry: RetryClass;
  issues?: readonly FieldIssue[];
  /** Output of the tool that failed (compiler, verifier), kept for status. */
  log?: string;
  /** For `wait`: when to look again (default {@link DEFAULT_WAIT_MS}). */
  retryAfterMs?: number;
  cause?: unknown;
}

/** How long a `wait` error waits when it does not say. */
export const DEFAULT_WAIT_MS = 5_000;

/**
 * An error that crosses a boundary (compile, load, self-test, fetch, Git sync, manifest load,
 * plan, store): it carries the condition reason it is reported with, what the controller should
 * do next, and the fields at fault, so nobody parses its message again.
 */
export class SluiceError extends Error {
  override name = "SluiceError";
  readonly reason: Reason;
  readonly retry: RetryClass;
  readonly issues: readonly FieldIssue[];
  readonly log?: string;
  /** For `wait`: when to look again. */
  readonly retryAfterMs: number;

  constructor(reason: Reason, message: string, options: SluiceErrorOptions) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.reason = reason;
    this.retry = options.retry;
    this.issues = options.issues ?? [];
    this.retryAfterMs = options.retryAfterMs ?? DEFAULT_WAIT_MS;
    if (options.log !== undefined) this.log = options.log;
  }
}

/** An object read from a store (or about to be written) that does not parse with its kind's schema. */
export class InvalidObjectError extends SluiceError {
  override name = "InvalidObjectError";
  readonly kind?: string;
  readonly objectName?: string;
  readonly namespace?: string;

  constructor(error: SluiceParseError) {
    super(Reason.InvalidSpec, formatParseError(error), { retry: "stall", issues: error.issues });
    if (error.kind !== undefined) this.kind = error.kind;
    if (error.name !== undefined) this.objectName = error.name;
    if (error.namespace !== undefined) this.namespace = error.namespace;
  }
}

/** An error as a controller reports it: reason, message, retry class and details. */
export interface Failure {
  reason: Reason;
  message: string;
  retry: RetryClass;
  issues: readonly FieldIssue[];
  log?: string;
}

/**
 * The one mapping from an error to what is reported: a {@link SluiceError} says it all itself;
 * anything else is an unexpected failure, reported with `fallback` and retried with back-off.
 */
export function failureOf(err: unknown, fallback: Reason): Failure {
  if (err instanceof SluiceError) {
    return {
      reason: err.reason,
      message: err.message,
      retry: err.retry,
      issues: err.issues,
      ...(err.log !== undefined && { log: err.log }),
    };
  }
  return {
    reason: fallback,
    message: err instanceof Error ? err.message : String(err),
    retry: "backoff",
    issues: [],
  };
}

/**
 * The one mapping from a failure to conditions: Ready=False with its reason and message; a
 * `stall` also sets Stalled (nothing happens until the spec changes), a `wait` sets Reconciling
 * (the controller is still working towards the spec, waiting for something to appear), and a
 * `backoff` sets neither (it failed, and is retried).
 */
export function failureConditions(failure: Pick<Failure, "reason" | "message" | "retry">): ConditionSet {
  const { reason, message, retry } = failure;
  return {
    ready: ["False", reason, message],
    ...(retry === "stall" && { stalled: [reason, message] }),
    ...(retry === "wait" && { reconciling: [reason, message] }),
  };
}
