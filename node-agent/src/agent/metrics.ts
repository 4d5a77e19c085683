import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import { isIP, type AddressInfo } from "node:net";
import type { Logger } from "../../../common/log.ts";
import {
  COMMIT_TO_LIVE_BUCKETS_SECONDS,
  Counter,
  DURATION_BUCKETS_SECONDS,
  Gauge,
  Histogram,
  metricsHandler,
  newRegistry,
  registerProcessMetrics,
  type Registry,
} from "../../../common/metrics.ts";
import type { ApplyResult, ChainStatus } from "../chain/manager.ts";
import type { NfCounters } from "../chain/counters.ts";
import { readKernelFigures, type BpfStatsSession, type StatsState } from "./kstats.ts";

/** Default port of the node agent's `/metrics` endpoint. */
export const DEFAULT_AGENT_METRICS_PORT = 9471;

/**
 * Default address of the node agent's `/metrics` endpoint: loopback. The agent runs in the
 * host's network namespace, so "all addresses" would be every interface of the node, including
 * those facing the outside; a deployment that wants scrapes from elsewhere names the address
 * (the Helm chart passes the node's own IP).
 */
export const DEFAULT_AGENT_METRICS_ADDRESS = "127.0.0.1";

/** `--metrics-address` is not an IP address the endpoint could listen on. */
export class MetricsAddressError extends Error {
  override name = "MetricsAddressError";
}

/**
 * Checks a metrics listen address: an IPv4 or IPv6 literal. Host names are refused: a name can
 * resolve to several addresses, or to a different one later, and the point of the flag is to know
 * exactly which address of the node answers.
 */
export function parseMetricsAddress(value: string): string {
  const address = value.trim();
  if (isIP(address) === 0) {
    throw new MetricsAddressError(
      `${JSON.stringify(value)} is not an IP address (e.g. 127.0.0.1, the node's IP, or 0.0.0.0 for every address)`,
    );
  }
  return address;
}

/** What the agent counts itself: switches that went live or failed (by reason), their duration. */
export class AgentCounters {
  readonly switches = new Counter({
    name: "sluice_agent_switches_total",
    help: "Chain revisions the agent made live.",
    registers: [],
  });
  readonly failures = new Counter({
    name: "sluice_agent_switch_failures_total",
    help: "Chain revisions the agent could not make live, by NodeChain reason.",
    labelNames: ["reason"] as const,
    registers: [],
  });
  readonly switchSeconds = new Histogram({
    name: "sluice_agent_switch_duration_seconds",
    help: "Time from asking the data plane for a revision to it being live (compile, load, verify, self-test, flip), by action.",
    labelNames: ["action"] as const,
    buckets: DURATION_BUCKETS_SECONDS,
    registers: [],
  });
  readonly commitToLive = new Histogram({
    name: "sluice_commit_to_live_seconds",
    help: "Time from a Git commit (its committer time) to a chain running it on this node.",
    labelNames: ["chain"] as const,
    buckets: COMMIT_TO_LIVE_BUCKETS_SECONDS,
    registers: [],
  });

  /** Pass as `NodeAgent`'s `onSwitch`: counts one outcome. */
  readonly record = (outcome: { ok: true } | { ok: false; reason: string }): void => {
    if (outcome.ok) this.switches.inc();
    else this.failures.inc({ reason: outcome.reason });
  };

  /** Records how long a data-plane apply took, for the actions that load programs. */
  recordApply(result: Pick<ApplyResult, "action" | "timings">): void {
    if (result.action === "created" || result.action === "switched")
      this.switchSeconds.observe({ action: result.action }, result.timings.totalMs / 1000);
  }

  /** Registers these metrics in `registry`. */
  registerIn(registry: Registry): void {
    registry.registerMetric(this.switches);
    registry.registerMetric(this.failures);
    registry.registerMetric(this.switchSeconds);
    registry.registerMetric(this.commitToLive);
  }
}

/** Where the kernel run-time figures come from (absent: none are reported). */
export interface KernelFiguresSource {
  /** bpffs directory of the chains. */
  root: string;
  stats: BpfStatsSession;
}

/** What {@link agentRegistry} reports. */
export interface AgentMetricsOptions {
  list: () => ChainStatus[];
  counters?: AgentCounters;
  /** Adds `node="<name>"` to every series. */
  node?: string;
  kernel?: KernelFiguresSource;
  /** Node.js process metrics (CPU, memory, event loop); default false. */
  processMetrics?: boolean;
}

type Labeled<T extends string> = Partial<Record<T, string>>;

/** One reading per scrape: every collect callback of a scrape sees the same chains. */
function perScrape<T>(read: () => T): () => T {
  let at = 0;
  let value: T | undefined;
  return () => {
    if (value === undefined || Date.now() - at > 250) {
      value = read();
      at = Date.now();
    }
    return value;
  };
}

/**
 * The agent's registry: per-NF counters of every chain (packets, bytes, verdicts), chain info,
 * root misses (packets that found no program in the chain's root array), the agent's own
 * counters and, with `kernel`, per-program run time and hash map fill levels.
 */
export function agentRegistry(options: AgentMetricsOptions): Registry {
  const registry = newRegistry(options.node ? { node: options.node } : {});
  const chains = perScrape(() => options.list());
  const counter = <T extends string>(
    name: string,
    help: string,
    labelNames: readonly T[],
    values: () => Array<[Labeled<T>, number | bigint]>,
  ) =>
    new Counter({
      name,
      help,
      labelNames,
      registers: [registry],
      collect() {
        this.reset();
        for (const [labels, value] of values()) this.inc(labels, Number(value));
      },
    });
  const gauge = <T extends string>(
    name: string,
    help: string,
    labelNames: readonly T[],
    values: () => Array<[Labeled<T>, number]>,
  ) =>
    new Gauge({
      name,
      help,
      labelNames,
      registers: [registry],
      collect() {
        this.reset();
        for (const [labels, value] of values()) this.set(labels, value);
      },
    });
  const perNf = (field: keyof NfCounters) => () =>
    chains().flatMap((c) =>
      c.nfs.map((nf): [Labeled<"chain" | "nf">, bigint] => [
        { chain: c.name, nf: nf.name },
        nf.counters[field],
      ]),
    );
  counter(
    "sluice_nf_packets_total",
    "Packets that reached the network function.",
    ["chain", "nf"],
    perNf("packets"),
  );
  counter(
    "sluice_nf_bytes_total",
    "Bytes of the packets that reached the network function.",
    ["chain", "nf"],
    perNf("bytes"),
  );
  counter(
    "sluice_nf_verdicts_total",
    "Packets by what the network function did with them: pass (on to the next function, or delivered), drop, error (aborted, or could not be handed on).",
    ["chain", "nf", "verdict"],
    () =>
      chains().flatMap((c) =>
        c.nfs.flatMap((nf) =>
          (
            [
              ["pass", nf.counters.passes],
              ["drop", nf.counters.drops],
              ["error", nf.counters.errors],
            ] as const
          ).map(([verdict, value]): [Labeled<"chain" | "nf" | "verdict">, bigint] => [
            { chain: c.name, nf: nf.name, verdict },
            value,
          ]),
        ),
      ),
  );
  // Per-function time, only for chains loaded with it on (`sluice run --time-functions`).
  const perNfTime = (field: "ns" | "samples", scale: (v: bigint) => number | bigint) => () =>
    chains().flatMap((c) =>
      c.nfs.flatMap((nf): Array<[Labeled<"chain" | "nf">, number | bigint]> =>
        nf.time ? [[{ chain: c.name, nf: nf.name }, scale(nf.time[field])]] : [],
      ),
    );
  counter(
    "sluice_nf_sampled_time_seconds_total",
    "Time in the kernel of the packets sampled for per-function time, spent in this network function (each packet's time includes about one clock read); divide by sluice_nf_sampled_packets_total for the mean per packet.",
    ["chain", "nf"],
    perNfTime("ns", (v) => Number(v) / 1e9),
  );
  counter(
    "sluice_nf_sampled_packets_total",
    "Packets sampled for per-function time that went through this network function.",
    ["chain", "nf"],
    perNfTime("samples", (v) => v),
  );
  gauge(
    "sluice_chain_info",
    "The revision running on each chain, and its hook (always 1).",
    ["chain", "revision", "hook"],
    () => chains().map((c) => [{ chain: c.name, revision: c.revision, hook: c.hook }, 1]),
  );
  gauge("sluice_chain_functions", "Network functions in the live revision of each chain.", ["chain"], () =>
    chains().map((c) => [{ chain: c.name }, c.nfs.length]),
  );
  counter(
    "sluice_chain_root_misses_total",
    "Packets whose tail call from the chain's root program found no revision (they were passed unfiltered).",
    ["chain"],
    () => chains().map((c) => [{ chain: c.name }, c.rootMisses.packets]),
  );
  if (options.counters) options.counters.registerIn(registry);
  if (options.kernel) registerKernelFigures(options.kernel, chains, counter, gauge);
  if (options.processMetrics) registerProcessMetrics(registry, "sluice_agent_");
  return registry;
}

function registerKernelFigures(
  source: KernelFiguresSource,
  chains: () => ChainStatus[],
  counter: <T extends string>(
    name: string,
    help: string,
    labelNames: readonly T[],
    values: () => Array<[Labeled<T>, number | bigint]>,
  ) => Counter<T>,
  gauge: <T extends string>(
    name: string,
    help: string,
    labelNames: readonly T[],
    values: () => Array<[Labeled<T>, number]>,
  ) => Gauge<T>,
): void {
  let state: StatsState = { counting: false, reason: "not read yet" };
  const figures = perScrape(() => {
    state = source.stats.want();
    return readKernelFigures(source.root, chains());
  });
  gauge(
    "sluice_bpf_stats_enabled",
    "1 while the kernel counts BPF program run time (needed for the run-time figures): reason is fd (the agent holds BPF_ENABLE_STATS) or sysctl (kernel.bpf_stats_enabled=1 on the node); 0 with the reason why not.",
    ["reason"],
    () => {
      figures();
      return [[state.counting ? { reason: state.by } : { reason: state.reason }, state.counting ? 1 : 0]];
    },
  );
  const counting = () => {
    const all = figures();
    return state.counting ? all : [];
  };
  counter(
    "sluice_chain_run_time_seconds_total",
    "Time the kernel spent running the chain (its root program and every function it tail-called), while BPF statistics were on.",
    ["chain"],
    () => counting().flatMap((c) => (c.root ? [[{ chain: c.chain }, Number(c.root.runTimeNs) / 1e9]] : [])),
  );
  counter(
    "sluice_chain_runs_total",
    "Packets that ran the chain while BPF statistics were on (divide run time by it for the mean time per packet).",
    ["chain"],
    () => counting().flatMap((c) => (c.root ? [[{ chain: c.chain }, c.root.runCount]] : [])),
  );
  gauge("sluice_map_entries", "Entries in a network function's hash map.", ["chain", "nf", "map"], () =>
    figures().flatMap((c) =>
      c.maps.map((m): [Labeled<"chain" | "nf" | "map">, number] => [
        { chain: c.chain, nf: m.nf, map: m.map },
        m.entries,
      ]),
    ),
  );
  gauge("sluice_map_max_entries", "Capacity of a network function's hash map.", ["chain", "nf", "map"], () =>
    figures().flatMap((c) =>
      c.maps.map((m): [Labeled<"chain" | "nf" | "map">, number] => [
        { chain: c.chain, nf: m.nf, map: m.map },
        m.maxEntries,
      ]),
    ),
  );
}

/** A running metrics endpoint. */
export interface MetricsServer {
  /** The one address it listens on. */
  address: string;
  port: number;
  close(): Promise<void>;
}

/**
 * Serves `GET /metrics` on `host:port` only (port 0 picks a free one; host defaults to
 * {@link DEFAULT_AGENT_METRICS_ADDRESS}); anything else is 404.
 */
export async function startMetricsServer(
  options: AgentMetricsOptions & {
    port: number;
    host?: string;
    log?: Logger;
    /** More `GET` paths to serve (the live view's page and its events). */
    routes?: ReadonlyArray<[path: string, handler: (req: IncomingMessage, res: ServerResponse) => void]>;
  },
): Promise<MetricsServer> {
  const handler = metricsHandler(agentRegistry(options));
  const server = createServer((req, res) => {
    const path = (req.url ?? "/").split("?")[0];
    if (req.method === "GET" && path === "/metrics") return handler(req, res);
    const route = req.method === "GET" ? options.routes?.find(([p]) => p === path) : undefined;
    if (route) return route[1](req, res);
    res.writeHead(404, { "content-type": "text/plain" });
    res.end("not found\n");
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port, options.host ?? DEFAULT_AGENT_METRICS_ADDRESS, () => {
      server.off("error", reject);
      resolve();
    });
  });
  const { address, port } = server.address() as AddressInfo;
  options.log?.info({ address, port }, "metrics endpoint listening");
  return {
    address,
    port,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
