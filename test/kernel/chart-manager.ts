/**
 * The chain manager as the Helm chart runs the agent, for kernel tests: in a process of its own
 * (fixtures/manager-host.ts) that starts inside the node's network namespace, as a hostNetwork
 * pod does, with exactly CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN (`asChartAgent`). A manager path
 * that needs more (opening BPF objects by id, setns, ...) fails here as it would on a node.
 *
 * A process, not a thread of the test: capabilities are per thread, and libbpf verifies
 * programs on libuv's worker threads, which a lowered test thread would not own. The test
 * process stays root for what only the harness does (namespaces, veths, traffic).
 *
 * The proxy has the manager's methods, made async. Errors come back as the manager's own error
 * classes (VerifierError, SelfTestError, ChainSpecError, ...) with their fields, so assertions
 * such as `toBeInstanceOf(VerifierError)` read as they would in-process.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { readdirSync } from "node:fs";
import type { AdoptedChain, ApplyResult, ChainSpec, ChainStatus } from "../../node-agent/src/chain/index.ts";
import {
  AttachError,
  ChainSpecError,
  ChainStateError,
  NfContractError,
  SelfTestError,
} from "../../node-agent/src/chain/index.ts";
import { CompileError, ToolchainError } from "../../node-agent/src/compile/index.ts";
import {
  BpfError,
  BpfSpecError,
  NotSupportedError,
  VerifierError,
} from "../../node-agent/src/libbpf/index.ts";
import { NetnsError } from "../../node-agent/src/netns/index.ts";
import { asChartAgent, effectiveCaps } from "../support/sluice.ts";
import type { HostConfig, HostMethod, HostReply, SerializedError } from "./fixtures/manager-host.ts";
import { fixture, repoRoot, type TestScope } from "./harness.ts";

/** Errors the manager throws, by class name: a reply's error is raised as one of these. */
const ERROR_CLASSES = new Map<string, abstract new (...args: never[]) => Error>(
  [
    AttachError,
    BpfError,
    BpfSpecError,
    ChainSpecError,
    ChainStateError,
    CompileError,
    NetnsError,
    NfContractError,
    NotSupportedError,
    SelfTestError,
    ToolchainError,
    VerifierError,
  ].map((c) => [c.name, c]),
);

const CLOSE_TIMEOUT_MS = 10_000;

/** Options of {@link startChartManager}. */
export interface ChartManagerOptions {
  /** bpffs directory of the chains. */
  root: string;
  /** Network namespace (path) the manager runs in: the node's. */
  netns: string;
  /** Compiled root object. */
  rootObjectPath: string;
  /** Per-function time of 1 in this many packets (ChainManagerOptions.timeSample); absent: off. */
  timeSample?: number;
  /** ChainManagerOptions.keepStandby; absent: the manager's default (on). */
  keepStandby?: boolean;
  /** Closes the manager (and ends its process) when disposed. */
  scope?: TestScope;
}

/** A chain manager in a chart-agent process; its methods are the manager's, async. */
export interface ChartManager {
  /** The process id of the manager's process. */
  readonly pid: number;
  apply(spec: ChainSpec): Promise<ApplyResult>;
  adopt(): Promise<AdoptedChain[]>;
  remove(name: string): Promise<void>;
  status(name: string): Promise<ChainStatus | undefined>;
  list(): Promise<ChainStatus[]>;
  readTable(chain: string, nf: string, map: string): Promise<{ key: Buffer; value: Buffer }[]>;
  /**
   * The agent's Prometheus scrape of these chains (`agentRegistry` with kernel figures), read in
   * the manager's process: BPF statistics are asked for with the chart's capabilities.
   */
  scrape(): Promise<string>;
  /** Closes every fd (pins stay, traffic flows) and ends the process; idempotent. */
  close(): Promise<void>;
  /** Effective capabilities of every thread of the manager's process (`CapEff`). */
  threadCaps(): bigint[];
}

/** Starts a chain manager as the chart runs the agent (see the module comment). */
export async function startChartManager(options: ChartManagerOptions): Promise<ChartManager> {
  const config: HostConfig = {
    root: options.root,
    rootObjectPath: options.rootObjectPath,
    ...(options.timeSample ? { timeSample: options.timeSample } : {}),
    ...(options.keepStandby !== undefined ? { keepStandby: options.keepStandby } : {}),
  };
  const [file, ...args] = asChartAgent(
    [process.execPath, "--import", "tsx", fixture("manager-host.ts"), JSON.stringify(config)],
    options.netns,
  );
  const child = spawn(file!, args, {
    cwd: repoRoot,
    stdio: ["ignore", "ignore", "pipe", "ipc"],
    serialization: "advanced",
    env: { ...process.env, SLUICE_LOG_LEVEL: "silent" },
  });
  const manager = new ChartManagerProcess(child);
  options.scope?.defer(() => manager.close());
  await manager.ready;
  return manager;
}

class ChartManagerProcess implements ChartManager {
  readonly ready: Promise<void>;
  readonly #child: ChildProcess;
  readonly #pending = new Map<number, { resolve(value: unknown): void; reject(err: Error): void }>();
  #nextId = 1;
  #stderr = "";
  #exited: Error | undefined;
  #closed: Promise<void> | undefined;

  constructor(child: ChildProcess) {
    this.#child = child;
    child.stderr!.on(
      "data",
      (chunk: Buffer) => (this.#stderr = (this.#stderr + chunk.toString()).slice(-8000)),
    );
    this.ready = new Promise<void>((resolve, reject) => {
      child.on("message", (message: HostReply | { ready: true }) => {
        if ("ready" in message) return resolve();
        const pending = this.#pending.get(message.id);
        this.#pending.delete(message.id);
        if (!pending) return;
        if (message.ok) pending.resolve(message.value);
        else pending.reject(raise(message.error));
      });
      child.on("exit", (code, signal) => {
        this.#exited = new Error(
          `chain manager process exited (${signal ?? `code ${code}`}): ${this.#stderr.trim() || "no output"}`,
        );
        reject(this.#exited);
        for (const pending of this.#pending.values()) pending.reject(this.#exited);
        this.#pending.clear();
      });
    });
  }

  get pid(): number {
    return this.#child.pid!;
  }

  apply(spec: ChainSpec): Promise<ApplyResult> {
    return this.#call("apply", [spec]) as Promise<ApplyResult>;
  }

  adopt(): Promise<AdoptedChain[]> {
    return this.#call("adopt", []) as Promise<AdoptedChain[]>;
  }

  remove(name: string): Promise<void> {
    return this.#call("remove", [name]) as Promise<void>;
  }

  status(name: string): Promise<ChainStatus | undefined> {
    return this.#call("status", [name]) as Promise<ChainStatus | undefined>;
  }

  list(): Promise<ChainStatus[]> {
    return this.#call("list", []) as Promise<ChainStatus[]>;
  }

  readTable(chain: string, nf: string, map: string): Promise<{ key: Buffer; value: Buffer }[]> {
    return this.#call("readTable", [chain, nf, map]) as Promise<{ key: Buffer; value: Buffer }[]>;
  }

  scrape(): Promise<string> {
    return this.#call("scrape", []) as Promise<string>;
  }

  close(): Promise<void> {
    this.#closed ??= (async () => {
      if (this.#exited) return;
      const exited = new Promise((resolve) => this.#child.once("exit", resolve));
      // A manager that does not close in time is killed: its pins stay, as after a crash.
      const timer = setTimeout(() => this.#child.kill("SIGKILL"), CLOSE_TIMEOUT_MS);
      await this.#call("close", []).catch(() => this.#child.kill("SIGKILL"));
      await exited;
      clearTimeout(timer);
    })();
    return this.#closed;
  }

  threadCaps(): bigint[] {
    return readdirSync(`/proc/${this.pid}/task`).flatMap((tid) => {
      try {
        return [effectiveCaps(Number(tid))];
      } catch (err) {
        // A thread that ended meanwhile.
        if ((err as NodeJS.ErrnoException).code === "ENOENT") return [];
        throw err;
      }
    });
  }

  #call(method: HostMethod, args: unknown[]): Promise<unknown> {
    if (this.#exited) return Promise.reject(this.#exited);
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
      this.#child.send({ id, method, args }, (err) => {
        if (!err) return;
        this.#pending.delete(id);
        reject(err);
      });
    });
  }
}

/** An error of the class the manager threw, with its message, fields and stack. */
function raise(serialized: SerializedError): Error {
  const errorClass = ERROR_CLASSES.get(serialized.className);
  const err = errorClass ? (Object.create(errorClass.prototype) as Error) : new Error();
  Object.assign(err, serialized.fields);
  Object.defineProperty(err, "message", { value: serialized.message, writable: true, configurable: true });
  Object.defineProperty(err, "name", { value: serialized.name, writable: true, configurable: true });
  Object.defineProperty(err, "stack", {
    value: `${serialized.stack ?? `${serialized.name}: ${serialized.message}`}\n    (in the chain manager process)`,
    writable: true,
    configurable: true,
  });
  return err;
}
