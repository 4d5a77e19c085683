/**
 * When to try a Kubernetes API call again: the API server answering 429 (too many requests,
 * its priority and fairness queues are full) or a 5xx (overloaded, restarting, etcd slow) is
 * worth another try after a pause; a 4xx other than 429 is an answer. The pause doubles per
 * attempt with full jitter, so that a thousand clients refused at once do not come back at once,
 * and is never shorter than the server's own `Retry-After`.
 */

/** How persistent the retries are. */
export interface RetryPolicy {
  /** Tries after the first; 0 turns retrying off. */
  retries: number;
  /** Upper bound of the first pause; it doubles per retry. */
  baseMs: number;
  /** Upper bound of any pause computed here (a longer Retry-After is honoured up to `maxRetryAfterMs`). */
  maxMs: number;
  /** Longest Retry-After honoured; a server asking for longer fails the call instead. */
  maxRetryAfterMs: number;
}

/** Five retries within about ten seconds, or the server's Retry-After up to a minute. */
export const DEFAULT_RETRY: RetryPolicy = { retries: 5, baseMs: 200, maxMs: 5_000, maxRetryAfterMs: 60_000 };

/** What a failed call tells the retry decision. */
export interface FailedCall {
  /** HTTP status; 0 when no answer came. */
  status: number;
  /**
   * No answer because the connection failed (refused, reset), not because it timed out: an
   * idempotent call is tried once more at once, as a kept-alive connection the server just
   * closed fails this way.
   */
  connectionFailed?: boolean;
  /** The `Retry-After` the server sent, in milliseconds. */
  retryAfterMs?: number;
  /**
   * Whether repeating the call is harmless if the first one took effect (reads, apply, patch,
   * delete); a create is not, so it is repeated after a 5xx only when the server said when.
   */
  idempotent: boolean;
}

/**
 * The pause before retry number `attempt` (1 for the first retry), or undefined when the call
 * should fail now. `random` gives [0, 1); tests pass their own.
 */
export function retryDelayMs(
  call: FailedCall,
  attempt: number,
  policy: RetryPolicy,
  random: () => number = Math.random,
): number | undefined {
  if (attempt > policy.retries) return undefined;
  if (call.status === 0)
    return call.connectionFailed && call.idempotent && attempt === 1
      ? Math.max(1, Math.floor(random() * policy.baseMs))
      : undefined;
  const overloaded = call.status === 429;
  const serverError = call.status >= 500 && call.status <= 599;
  if (!overloaded && !serverError) return undefined;
  if (serverError && !call.idempotent && call.retryAfterMs === undefined) return undefined;
  const cap = Math.min(policy.maxMs, policy.baseMs * 2 ** (attempt - 1));
  // Full jitter: anywhere in [0, cap), at least a millisecond.
  const backoff = Math.max(1, Math.floor(random() * cap));
  if (call.retryAfterMs === undefined) return backoff;
  if (call.retryAfterMs > policy.maxRetryAfterMs) return undefined;
  // At least what the server asked for, spread by up to a tenth of it (or of the backoff cap).
  return call.retryAfterMs + Math.floor(random() * Math.min(cap, call.retryAfterMs / 10 + 1));
}

/**
 * Milliseconds a `Retry-After` header asks for: delta-seconds or an HTTP date; undefined when
 * absent or unreadable.
 */
export function parseRetryAfter(value: string | undefined, now: number = Date.now()): number | undefined {
  if (value === undefined) return undefined;
  const text = value.trim();
  if (/^\d+$/.test(text)) return Number(text) * 1000;
  const at = Date.parse(text);
  return Number.isNaN(at) ? undefined : Math.max(0, at - now);
}
