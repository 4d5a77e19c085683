/**
 * A compiled object is parsed once by libbpf in a separate, confined process before it enters
 * the cache.
 *
 * libbpf 1.1 (Debian 12) crashes with SIGSEGV on some malformed ELF objects (corrupt `.BTF` or
 * `.BTF.ext`, section headers pointing outside the file): a fuzz run of `bpf_object__open_file`
 * on mutated NF objects finds such inputs within a few thousand cases. The agent opens objects
 * in its own process, where a crash would take every chain's control plane down with it. clang
 * normally writes well-formed objects, but inline assembly in user C can put arbitrary bytes
 * into any section; so each new object is first opened (`bpf_object__open_mem`) by a checker
 * process that can open no file, create no socket and call no bpf() (see `spawnConfinedNode`),
 * and an object that kills it never reaches the cache or the agent. The checker stays up between
 * objects (a check costs about a millisecond, not a process start) and is replaced when it dies.
 */
import type { ChildProcess } from "node:child_process";
import { readFile } from "node:fs/promises";
import { spawnConfinedNode } from "./sandbox.ts";

/** How the trial open went. */
export type ObjectCheck =
  | { ok: true }
  | {
      ok: false;
      /** `crash`: libbpf killed the checker; `refused`: open failed cleanly; `timeout`: it hung. */
      failure: "crash" | "refused" | "timeout";
      message: string;
    };

/** Reads `<u32 length><object bytes>` requests from stdin, answers one line per object. */
const CHECKER = String.raw`
const openMem = preloaded[0].func("void *bpf_object__open_mem(const void *buf, size_t size, void *opts)");
const closeObject = preloaded[0].func("void bpf_object__close(void *obj)");
preloaded[0].func("void *libbpf_set_print(void *fn)")(null);
let pending = Buffer.alloc(0);
process.stdin.on("data", (chunk) => {
  pending = Buffer.concat([pending, chunk]);
  while (pending.length >= 4 && pending.length >= 4 + pending.readUInt32LE(0)) {
    const size = pending.readUInt32LE(0);
    const object = Buffer.from(pending.subarray(4, 4 + size));
    pending = pending.subarray(4 + size);
    const handle = openMem(object, size, null);
    if (handle) closeObject(handle);
    fs.writeSync(1, handle ? "ok\n" : errno() + "\n");
  }
});
process.stdin.on("end", () => process.exit(0));
fs.writeSync(1, "ready\n");
`;

const LIBBPF = "libbpf.so.1";

/** One checker process and the requests waiting for it, answered in order. */
class Checker {
  readonly #child: ChildProcess;
  readonly #waiting: ((answer: string | { exit: string }) => void)[] = [];
  #buffered = "";
  #ready: Promise<void>;
  dead = false;

  constructor() {
    this.#child = spawnConfinedNode(CHECKER, [LIBBPF]);
    let stderr = "";
    let markReady: () => void;
    let failStart: (err: Error) => void;
    this.#ready = new Promise((resolvePromise, reject) => {
      markReady = resolvePromise;
      failStart = reject;
    });
    this.#ready.catch(() => undefined);
    this.#child.stderr!.setEncoding("utf8").on("data", (chunk: string) => {
      if (stderr.length < 4096) stderr += chunk;
    });
    this.#child.stdout!.setEncoding("utf8").on("data", (chunk: string) => {
      this.#buffered += chunk;
      let newline;
      while ((newline = this.#buffered.indexOf("\n")) >= 0) {
        const line = this.#buffered.slice(0, newline);
        this.#buffered = this.#buffered.slice(newline + 1);
        if (line === "ready") markReady();
        else this.#waiting.shift()?.(line);
      }
    });
    this.#child.stdin!.on("error", () => undefined);
    this.#child.on("exit", (code, signal) => {
      this.dead = true;
      const exit = signal ?? `exit status ${code}`;
      failStart(new Error(`the object checker did not start (${exit}): ${stderr.trim()}`));
      for (const answer of this.#waiting.splice(0)) answer({ exit });
    });
    this.#idle();
  }

  /** Opens `object` in the checker; the answer line, or how the checker died. */
  async open(object: Buffer, timeoutMs: number): Promise<string | { exit: string }> {
    this.#busy();
    try {
      await this.#ready;
      return await new Promise((resolvePromise) => {
        const timer = setTimeout(() => {
          this.#child.kill("SIGKILL");
          resolvePromise({ exit: "timeout" });
        }, timeoutMs);
        this.#waiting.push((answer) => {
          clearTimeout(timer);
          resolvePromise(answer);
        });
        const header = Buffer.alloc(4);
        header.writeUInt32LE(object.length, 0);
        this.#child.stdin!.write(Buffer.concat([header, object]));
      });
    } finally {
      if (this.#waiting.length === 0) this.#idle();
    }
  }

  // An idle checker must not keep the process (a CLI run, a test worker) alive.
  #idle(): void {
    this.#child.unref();
    (this.#child.stdout as { unref?: () => void }).unref?.();
    (this.#child.stderr as { unref?: () => void }).unref?.();
    (this.#child.stdin as { unref?: () => void }).unref?.();
  }

  #busy(): void {
    this.#child.ref();
    (this.#child.stdout as { ref?: () => void }).ref?.();
  }
}

let checker: Checker | undefined;
let queue: Promise<unknown> = Promise.resolve();

/** Opens the object at `objectPath` with libbpf in the checker and reports whether that survived. */
export function checkObjectOpens(objectPath: string, timeoutMs = 20_000): Promise<ObjectCheck> {
  const run = queue.then(async (): Promise<ObjectCheck> => {
    const object = await readFile(objectPath);
    if (!checker || checker.dead) checker = new Checker();
    const answer = await checker.open(object, timeoutMs);
    if (answer === "ok") return { ok: true };
    if (typeof answer === "string")
      return { ok: false, failure: "refused", message: `libbpf cannot open it (${answer})` };
    checker = undefined;
    if (answer.exit === "timeout")
      return { ok: false, failure: "timeout", message: `libbpf did not open it within ${timeoutMs} ms` };
    return { ok: false, failure: "crash", message: `libbpf crashed opening it (${answer.exit})` };
  });
  queue = run.catch(() => undefined);
  return run;
}
