/**
 * A compiled object is parsed once by libbpf in a child process before it enters the cache.
 *
 * libbpf 1.1 (Debian 12) crashes with SIGSEGV on some malformed ELF objects (corrupt `.BTF` or
 * `.BTF.ext`, section headers pointing outside the file): a fuzz run of `bpf_object__open_file`
 * on mutated NF objects finds such inputs within a few thousand cases. The agent opens objects
 * in its own process, where a crash would take every chain's control plane down with it. clang
 * normally writes well-formed objects, but inline assembly in user C can put arbitrary bytes
 * into any section; so each new object is opened first in a throw-away process, and one that
 * kills it never reaches the cache or the agent.
 */
import { execFile } from "node:child_process";
import { createRequire } from "node:module";

/** How the trial open went. */
export type ObjectCheck =
  | { ok: true }
  | {
      ok: false;
      /** `crash`: libbpf killed the child (the signal is named); `refused`: open failed cleanly. */
      failure: "crash" | "refused" | "timeout";
      message: string;
    };

const CHECK = String.raw`
"use strict";
const koffi = require(process.argv[1]);
const libbpf = koffi.load("libbpf.so.1");
const open = libbpf.func("void *bpf_object__open_file(const char *path, void *opts)");
const close = libbpf.func("void bpf_object__close(void *obj)");
const setPrint = libbpf.func("void *libbpf_set_print(void *fn)");
setPrint(null);
const obj = open(process.argv[2], null);
if (!obj) { process.stderr.write("errno " + koffi.errno()); process.exit(2); }
close(obj);
`;

let koffiPath: string | undefined;

/** Opens `objectPath` with libbpf in a child process and reports whether that survived. */
export function checkObjectOpens(objectPath: string, timeoutMs = 20_000): Promise<ObjectCheck> {
  koffiPath ??= createRequire(import.meta.url).resolve("koffi");
  return new Promise((resolvePromise) => {
    execFile(
      process.execPath,
      ["-e", CHECK, koffiPath!, objectPath],
      { env: {}, timeout: timeoutMs, killSignal: "SIGKILL", encoding: "utf8", maxBuffer: 64 * 1024 },
      (err, _stdout, stderr) => {
        if (!err) return resolvePromise({ ok: true });
        const signal = (err as { signal?: string | null }).signal;
        if ((err as { killed?: boolean }).killed)
          resolvePromise({
            ok: false,
            failure: "timeout",
            message: `libbpf did not open it within ${timeoutMs} ms`,
          });
        else if (signal)
          resolvePromise({ ok: false, failure: "crash", message: `libbpf crashed opening it (${signal})` });
        else
          resolvePromise({
            ok: false,
            failure: "refused",
            message: `libbpf cannot open it (${stderr.trim() || err.message})`,
          });
      },
    );
  });
}
