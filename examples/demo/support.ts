/**
 * What every part of the demo uses: its names and addresses, commands run and processes started
 * from it, waits that end at Ctrl-C, and the list of what to undo.
 */
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { existsSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { netnsPath } from "../../node-agent/src/netns/index.ts";

const execFileAsync = promisify(execFile);
/** The sluice repository. */
export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
/** The UDP sender and receiver that count the flow at both ends. */
export const FLOW_SCRIPT = join(repoRoot, "examples/demo/flow.mjs");
/** Every name the demo makes starts with this and its process id, so stale leftovers can be found. */
export const PREFIX = "sldemo-";
/** Pins of the demo go below a directory whose name starts with this and its process id. */
export const BPFFS_PREFIX = "/sys/fs/bpf/sluice-demo-";
/** UDP port of the counted flow. */
export const FLOW_PORT = 9000;
/** UDP port of the probe that the second commit's firewall rule drops. */
export const PROBE_PORT = 7777;
/** Probe packets per second. */
export const PROBE_RATE = 50;
/** Address of h1 and its gateway on the node. */
export const H1 = { ip: "10.201.1.2", gw: "10.201.1.1" };
/** Address of h2 and its gateway on the node. */
export const H2 = { ip: "10.201.2.2", gw: "10.201.2.1" };
/** How long a commit may take to be live before the demo says it failed. */
export const SWITCH_TIMEOUT_MS = 90_000;

/** The demo cannot run here (not root, a tool missing); exit code 3. */
export class DemoEnvironmentError extends Error {
  override name = "DemoEnvironmentError";
}

/** Ctrl-C (or SIGTERM) arrived. */
export class Interrupted extends Error {
  override name = "Interrupted";
}

/** Runs a command; its stderr becomes the error message. */
export async function sh(file: string, args: readonly string[], input?: string): Promise<string> {
  try {
    const child = execFileAsync(file, args, { maxBuffer: 16 << 20 });
    if (input !== undefined) child.child.stdin?.end(input);
    return (await child).stdout;
  } catch (err) {
    const e = err as Error & { stderr?: string };
    throw new Error(`${file} ${args.join(" ")}: ${e.stderr?.trim() || e.message}`);
  }
}

const gitIdentity = ["-c", "user.name=sluice demo", "-c", "user.email=demo@localhost"];
/** Runs git in `dir` as the demo's own author. */
export const git = (dir: string, ...args: string[]) => sh("git", ["-C", dir, ...gitIdentity, ...args]);

/** Resolves when `signal` aborts: rejects every wait of the demo at Ctrl-C. */
export function interruptible<T>(signal: AbortSignal, work: Promise<T>): Promise<T> {
  if (signal.aborted) return Promise.reject(new Interrupted());
  return new Promise<T>((resolvePromise, reject) => {
    const onAbort = () => reject(new Interrupted());
    signal.addEventListener("abort", onAbort, { once: true });
    work.then(
      (v) => {
        signal.removeEventListener("abort", onAbort);
        resolvePromise(v);
      },
      (e: unknown) => {
        signal.removeEventListener("abort", onAbort);
        reject(e instanceof Error ? e : new Error(String(e)));
      },
    );
  });
}

/** Waits `ms`; rejects with {@link Interrupted} at Ctrl-C. */
export const wait = (ms: number, signal: AbortSignal) =>
  sleep(ms, undefined, { signal }).catch(() => {
    throw new Interrupted();
  });

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

/**
 * Removes what an earlier demo left when it was killed without a chance to clean up (SIGKILL,
 * a crash): namespaces, pins and files whose process id no longer runs.
 */
export async function sweepStale(): Promise<string[]> {
  const removed: string[] = [];
  const deadOwner = (name: string, prefix: string) => {
    const pid = Number(/^(\d+)/.exec(name.slice(prefix.length))?.[1]);
    return Number.isInteger(pid) && pid > 0 && pid !== process.pid && !processAlive(pid);
  };
  for (const ns of existsSync("/run/netns") ? readdirSync("/run/netns") : []) {
    if (ns.startsWith(PREFIX) && deadOwner(ns, PREFIX)) {
      await sh("ip", ["netns", "del", ns]).catch(() => undefined);
      removed.push(`netns ${ns}`);
    }
  }
  const bpffsParent = dirname(BPFFS_PREFIX);
  const bpffsBase = BPFFS_PREFIX.slice(bpffsParent.length + 1);
  for (const entry of readdirSync(bpffsParent)) {
    if (entry.startsWith(bpffsBase) && deadOwner(entry, bpffsBase)) {
      rmSync(join(bpffsParent, entry), { recursive: true, force: true });
      removed.push(`bpffs ${join(bpffsParent, entry)}`);
    }
  }
  for (const entry of readdirSync(tmpdir())) {
    if (entry.startsWith("sluice-demo-") && deadOwner(entry, "sluice-demo-")) {
      rmSync(join(tmpdir(), entry), { recursive: true, force: true });
      removed.push(`files ${join(tmpdir(), entry)}`);
    }
  }
  return removed;
}

/**
 * Starts a process that dies with the demo even if the demo is killed outright
 * (`setpriv --pdeathsig KILL`), optionally inside a network namespace. It gets its own process
 * group, so that Ctrl-C in the terminal reaches the demo alone, which then stops its children
 * in order (the traffic first, to count it).
 */
export function start(command: string[], options: { netns?: string } = {}): ChildProcess {
  const inNs = options.netns ? ["nsenter", `--net=${netnsPath(options.netns)}`] : [];
  return spawn("setpriv", ["--pdeathsig", "KILL", ...inNs, ...command], {
    stdio: ["pipe", "pipe", "pipe"],
    detached: true,
  });
}

/** Ends a child: SIGTERM, then SIGKILL after `graceMs`. */
export async function stopProcess(child: ChildProcess, graceMs = 5_000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((r) => child.once("exit", () => r()));
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), graceMs);
  await exited;
  clearTimeout(timer);
}

/** What the demo made, undone in reverse order, each step even when an earlier one failed. */
export class Cleanup {
  readonly #steps: Array<{ what: string; undo: () => Promise<void> | void }> = [];
  #ran = false;

  add(what: string, undo: () => Promise<void> | void): void {
    this.#steps.push({ what, undo });
  }

  /** Runs every step once; returns what was undone and what failed. */
  async run(): Promise<{ done: string[]; failed: string[] }> {
    const done: string[] = [];
    const failed: string[] = [];
    if (this.#ran) return { done, failed };
    this.#ran = true;
    for (const step of this.#steps.reverse()) {
      try {
        await step.undo();
        done.push(step.what);
      } catch (err) {
        failed.push(`${step.what}: ${err instanceof Error ? err.message : String(err)}`);
      }
    }
    return { done, failed };
  }
}
