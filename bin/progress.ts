/**
 * Progress of long steps (compiling network functions): a line that updates in place on a
 * terminal, and one plain line per finished item otherwise, so that CI logs stay readable.
 */

/** Where progress goes: a writable stream that may be a terminal. */
export interface ProgressStream {
  write(text: string): unknown;
  isTTY?: boolean;
}

const SPINNER = ["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"];

/** Reports the items of one step: which one runs now, and how each ended. */
export class Progress {
  readonly #out: ProgressStream;
  readonly #live: boolean;
  #current = "";
  #frame = 0;
  #timer: NodeJS.Timeout | undefined;

  /** `live` defaults to whether the stream is a terminal. */
  constructor(out: ProgressStream = process.stderr, live = out.isTTY === true) {
    this.#out = out;
    this.#live = live;
  }

  /** Item `label` started; on a terminal it shows with a spinner until {@link done}. */
  start(label: string): void {
    this.#current = label;
    if (!this.#live) return;
    this.#draw();
    this.#timer ??= setInterval(() => this.#draw(), 100);
    // A spinner must never keep the process alive.
    this.#timer.unref();
  }

  /** The current item ended: one line stays, e.g. `compiled ttl-guard (0.9 s)`. */
  done(line: string): void {
    this.#stopSpinner();
    this.#out.write(this.#live ? `\r\x1b[K${line}\n` : `${line}\n`);
    this.#current = "";
  }

  /** Stops the spinner and clears its line (call before printing anything else). */
  stop(): void {
    this.#stopSpinner();
    if (this.#live && this.#current) this.#out.write("\r\x1b[K");
    this.#current = "";
  }

  #stopSpinner(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
  }

  #draw(): void {
    const frame = SPINNER[this.#frame++ % SPINNER.length]!;
    this.#out.write(`\r\x1b[K${frame} ${this.#current}`);
  }
}
