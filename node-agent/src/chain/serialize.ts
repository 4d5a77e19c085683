/** Running calls one at a time per key, in call order (the manager's calls per chain). */

/** A queue per key: a call starts when the previous call for its key has settled. */
export class KeyedQueue {
  readonly #tails = new Map<string, Promise<unknown>>();

  /** Runs `run` after every earlier call for `key`; its outcome is the result's. */
  run<T>(key: string, run: () => T | Promise<T>): Promise<T> {
    const previous = this.#tails.get(key) ?? Promise.resolve();
    const next = previous.then(run, run);
    const settled = next.catch(() => undefined);
    this.#tails.set(key, settled);
    void settled.then(() => {
      if (this.#tails.get(key) === settled) this.#tails.delete(key);
    });
    return next;
  }
}
