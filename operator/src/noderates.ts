/**
 * Per-node rates for the operator's cluster view: the operator asks each node's agent for its
 * chains' counters (`GET /live/readings` on the agent's metrics port, at the node's InternalIP),
 * once a second while a page is open, and otherwise not at all unless `idleIntervalMs` is set:
 * with nobody looking the operator's cost does not grow with the number of nodes.
 *
 * Why asking the agents rather than having them write rates into NodeChain status: status writes
 * cost the API server and etcd one write per node per period and wake every NodeChain watcher
 * (the ServiceChain controller among them), and a period the API can bear (10 s or more) is too
 * coarse for a live graph. Asking the agents costs the API nothing, gives one-second figures
 * while someone looks, nothing otherwise (or a small GET per node every `idleIntervalMs` when
 * asked for), and is the same question Prometheus asks: a node whose agent
 * does not answer is exactly what the SluiceAgentNotReporting alert means.
 */
import { z } from "zod";
import { NodeReadings } from "../../common/liveview/index.ts";
import type { Logger } from "../../common/log.ts";
import type { Store } from "../../common/store.ts";

/** Options of {@link NodeRates}. */
export interface NodeRatesOptions {
  store: Store;
  /** The agents' metrics port (the chart's agent.metrics.port). */
  port: number;
  /** Whether a page is open now (then each agent is asked every second). */
  watched: () => boolean;
  /** How often agents are asked while no page is open; 0: only while a page is open. */
  idleIntervalMs?: number;
  /** Requests in flight at once. */
  concurrency?: number;
  timeoutMs?: number;
  log?: Logger;
}

/** What the operator last heard from one node's agent. */
export interface NodeReport {
  /** The agent's last reading, with its time moved onto the operator's clock. */
  sample?: { atMs: number; readings: NodeReadings["chains"] };
  /** When the agent last answered (operator's clock). */
  lastOkMs?: number;
  /** When the operator first asked it. */
  firstAskedMs: number;
  /** Requests that failed in a row, and the last one's error. */
  failures: number;
  error?: string;
}

/** After this long without an answer (and two failed requests in a row), a node is silent. */
export const SILENT_AFTER_MS = 10_000;

/** The part of a Node that says where it is. */
const NodeAddresses = z.looseObject({
  status: z
    .looseObject({
      addresses: z.array(z.looseObject({ type: z.string(), address: z.string() })).optional(),
    })
    .optional(),
});

/** The address the operator reaches a node's agent at: its InternalIP, else ExternalIP. */
export function agentAddressOf(node: unknown): string | undefined {
  const parsed = NodeAddresses.safeParse(node);
  const addresses = parsed.success ? (parsed.data.status?.addresses ?? []) : [];
  const address = (
    addresses.find((a) => a.type === "InternalIP") ?? addresses.find((a) => a.type === "ExternalIP")
  )?.address;
  return address?.includes(":") ? `[${address}]` : address;
}

/** Asks every node that runs a chain for its counters; owns a timer (`stop()`). */
export class NodeRates {
  readonly #options: NodeRatesOptions;
  readonly #reports = new Map<string, NodeReport>();
  /** Agent clock -> operator clock, per node (re-estimated when it moves by more than 500 ms). */
  readonly #offsets = new Map<string, number>();
  #timer: NodeJS.Timeout | undefined;
  #lastRoundMs = 0;
  #running = false;

  constructor(options: NodeRatesOptions) {
    this.#options = options;
  }

  start(): void {
    this.#timer = setInterval(() => void this.#tick(), 1_000);
    this.#timer.unref();
  }

  stop(): void {
    if (this.#timer) clearInterval(this.#timer);
  }

  /** What `node`'s agent last said, or undefined before it was first asked. */
  report(node: string): NodeReport | undefined {
    return this.#reports.get(node);
  }

  /** Seconds `node` has been silent, or undefined while it answers. */
  silentFor(node: string, nowMs = Date.now()): number | undefined {
    const report = this.#reports.get(node);
    if (!report || report.failures < 2) return undefined;
    const since = nowMs - (report.lastOkMs ?? report.firstAskedMs);
    return since >= SILENT_AFTER_MS ? Math.round(since / 1000) : undefined;
  }

  async #tick(): Promise<void> {
    if (this.#running) return;
    const watched = this.#options.watched();
    const idle = this.#options.idleIntervalMs ?? 0;
    if (!watched && (idle <= 0 || Date.now() - this.#lastRoundMs < idle)) return;
    this.#running = true;
    try {
      await this.round(watched);
    } catch (err) {
      this.#options.log?.debug({ err }, "live view: asking the agents failed");
    } finally {
      this.#running = false;
    }
  }

  /** Asks every node with a chain once (exported for tests; the timer calls it). */
  async round(watched: boolean): Promise<void> {
    this.#lastRoundMs = Date.now();
    const nodes = new Set((await this.#options.store.list("NodeChain")).map((nc) => nc.spec.nodeName));
    for (const node of this.#reports.keys())
      if (!nodes.has(node)) {
        this.#reports.delete(node);
        this.#offsets.delete(node);
      }
    const queue = [...nodes];
    const worker = async () => {
      for (let node = queue.shift(); node !== undefined; node = queue.shift()) await this.#ask(node, watched);
    };
    await Promise.all(
      Array.from({ length: Math.min(this.#options.concurrency ?? 16, queue.length) }, worker),
    );
  }

  async #ask(node: string, watched: boolean): Promise<void> {
    const now = Date.now();
    const report = this.#reports.get(node) ?? { firstAskedMs: now, failures: 0 };
    this.#reports.set(node, report);
    const address = agentAddressOf(await this.#options.store.get("Node", undefined, node));
    if (!address) {
      report.failures++;
      report.error = "the Node has no InternalIP";
      return;
    }
    const url = `http://${address}:${this.#options.port}/live/readings${watched ? "?watched=1" : ""}`;
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(this.#options.timeoutMs ?? 2_000) });
      if (!res.ok) throw new Error(`${url}: HTTP ${res.status}`);
      const answer = NodeReadings.parse(await res.json());
      const receivedMs = Date.now();
      report.lastOkMs = receivedMs;
      report.failures = 0;
      delete report.error;
      if (answer.atMs > 0) {
        const offset = receivedMs - answer.nowMs;
        const known = this.#offsets.get(node);
        const use = known !== undefined && Math.abs(known - offset) <= 500 ? known : offset;
        this.#offsets.set(node, use);
        report.sample = { atMs: answer.atMs + use, readings: answer.chains };
      }
    } catch (err) {
      report.failures++;
      const cause = (err as Error & { cause?: { code?: string } }).cause;
      report.error =
        err instanceof Error && err.name === "TimeoutError"
          ? `${url}: no answer within ${(this.#options.timeoutMs ?? 2_000) / 1000} s`
          : `${url}: ${cause?.code ?? (err as Error).message}`;
    }
  }
}
