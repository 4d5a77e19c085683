/**
 * Coalesces writes per key: at most one routine write per `intervalMs` and key; an urgent
 * write (a final state, a changed verdict) always goes at once. A routine write held back is
 * not queued here: the caller reconciles again after `retryInMs` and writes what is true then,
 * so the last state always lands and the ones in between are skipped.
 */
export class WriteCoalescer {
  private readonly lastWrite = new Map<string, number>();

  constructor(
    /** Least time between two routine writes of one key. */
    readonly intervalMs: number,
    /** Milliseconds since some epoch; a test passes its own clock. */
    private readonly now: () => number = Date.now,
  ) {}

  /**
   * Whether a write of `key` may go now: always when `urgent`, else when the last write of
   * `key` is `intervalMs` ago; otherwise how long to wait.
   */
  admit(key: string, urgent: boolean): { write: true } | { write: false; retryInMs: number } {
    const last = this.lastWrite.get(key);
    if (urgent || last === undefined || this.intervalMs <= 0) return { write: true };
    const wait = last + this.intervalMs - this.now();
    return wait <= 0 ? { write: true } : { write: false, retryInMs: wait };
  }

  /** Records that `key` was written now. */
  wrote(key: string): void {
    this.lastWrite.set(key, this.now());
  }

  /** Forgets `key` (its object is gone). */
  forget(key: string): void {
    this.lastWrite.delete(key);
  }
}
