import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import { isIP, type AddressInfo } from "node:net";
import type { Logger } from "../../../common/log.ts";
import {
  formatMetrics,
  LabeledCounter,
  METRICS_CONTENT_TYPE,
  type MetricFamily,
} from "../../../common/metrics.ts";
import type { ChainStatus } from "../chain/manager.ts";
import type { NfCounters } from "../chain/counters.ts";

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

/** What the agent counts itself: chain switches that went live and those that failed, by reason. */
export class AgentCounters {
  switches = 0;
  readonly failures = new LabeledCounter();

  /** Pass as `NodeAgent`'s `onSwitch`: counts one outcome. */
  readonly record = (outcome: { ok: true } | { ok: false; reason: string }): void => {
    if (outcome.ok) this.switches++;
    else this.failures.inc({ reason: outcome.reason });
  };
}

const NF_COUNTERS: Array<[keyof NfCounters, string, string]> = [
  ["packets", "sluice_nf_packets_total", "Packets that reached the network function."],
  ["bytes", "sluice_nf_bytes_total", "Bytes of the packets that reached the network function."],
  ["drops", "sluice_nf_drops_total", "Packets the network function dropped."],
  ["passes", "sluice_nf_passes_total", "Packets the network function passed on (or delivered)."],
  ["errors", "sluice_nf_errors_total", "Packets the network function aborted or could not hand on."],
];

/** The agent's metric families: per-NF counters of every chain, chain info, agent counters. */
export function agentMetricFamilies(
  chains: readonly ChainStatus[],
  counters?: AgentCounters,
): MetricFamily[] {
  const families: MetricFamily[] = NF_COUNTERS.map(([field, name, help]) => ({
    name,
    help,
    type: "counter",
    samples: chains.flatMap((chain) =>
      chain.nfs.map((nf) => ({ labels: { chain: chain.name, nf: nf.name }, value: nf.counters[field] })),
    ),
  }));
  families.push(
    {
      name: "sluice_chain_info",
      help: "The revision running on each chain, and its hook (always 1).",
      type: "gauge",
      samples: chains.map((c) => ({
        labels: { chain: c.name, revision: c.revision, hook: c.hook },
        value: 1,
      })),
    },
    {
      name: "sluice_chain_root_misses_total",
      help: "Packets that found no chain revision in the root program and were passed.",
      type: "counter",
      samples: chains.map((c) => ({ labels: { chain: c.name }, value: c.rootMisses.packets })),
    },
  );
  if (counters) {
    families.push(
      {
        name: "sluice_agent_switches_total",
        help: "Chain revisions the agent made live.",
        type: "counter",
        samples: [{ value: counters.switches }],
      },
      {
        name: "sluice_agent_switch_failures_total",
        help: "Chain revisions the agent could not make live, by NodeChain reason.",
        type: "counter",
        samples: counters.failures.samples(),
      },
    );
  }
  return families;
}

/** An HTTP handler answering a scrape with the agent's metrics. */
export function agentMetricsHandler(
  list: () => ChainStatus[],
  counters?: AgentCounters,
): (req: IncomingMessage, res: ServerResponse) => void {
  return (_req, res) => {
    let body: string;
    try {
      body = formatMetrics(agentMetricFamilies(list(), counters));
    } catch (err) {
      res.writeHead(500, { "content-type": "text/plain" });
      res.end(`${(err as Error).message}\n`);
      return;
    }
    res.writeHead(200, { "content-type": METRICS_CONTENT_TYPE });
    res.end(body);
  };
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
export async function startMetricsServer(options: {
  port: number;
  host?: string;
  list: () => ChainStatus[];
  counters?: AgentCounters;
  log?: Logger;
}): Promise<MetricsServer> {
  const handler = agentMetricsHandler(options.list, options.counters);
  const server = createServer((req, res) => {
    const path = (req.url ?? "/").split("?")[0];
    if (req.method === "GET" && path === "/metrics") return handler(req, res);
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
