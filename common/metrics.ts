/**
 * Prometheus metrics, written with prom-client: each component keeps its own {@link Registry}
 * (never the library's global one, so that two components in one process, as in `sluice run`,
 * do not mix their series) and serves it with {@link metricsHandler}.
 *
 * Naming follows Prometheus' conventions: counters end in `_total`, units are in the name
 * (`_seconds`, `_bytes`, `_nanoseconds`), labels are few and bounded (chain, nf, node, verdict,
 * controller, result, reason); anything unbounded (revisions, commit messages) stays out of
 * labels except in one `_info` gauge per chain.
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import { collectDefaultMetrics, Registry } from "prom-client";

export { Counter, Gauge, Histogram, Registry } from "prom-client";

/** Content-Type of a scrape answer in text format 0.0.4. */
export const METRICS_CONTENT_TYPE = Registry.PROMETHEUS_CONTENT_TYPE;

/**
 * Buckets for things that take from milliseconds to a minute: a reconcile, a chain switch
 * (compile, load, verify, self-test, flip).
 */
export const DURATION_BUCKETS_SECONDS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

/** Buckets for the time from a Git commit to a chain running it: seconds to an hour. */
export const COMMIT_TO_LIVE_BUCKETS_SECONDS = [1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600];

/** A registry whose every series carries `labels` (e.g. the agent's `node`). */
export function newRegistry(labels: Record<string, string> = {}): Registry {
  const registry = new Registry();
  if (Object.keys(labels).length > 0) registry.setDefaultLabels(labels);
  return registry;
}

/**
 * prom-client's process and Node.js metrics, less the three gauges it names `_total`
 * (active handles, requests, resources): Prometheus tooling reads `_total` as a counter.
 */
export function registerProcessMetrics(registry: Registry, prefix: string): void {
  const all = newRegistry();
  collectDefaultMetrics({ register: all, prefix });
  for (const { name } of all.getMetricsAsArray()) {
    const metric = all.getSingleMetric(name);
    if (metric && !/_active_\w+_total$/.test(name)) registry.registerMetric(metric);
  }
}

/** An HTTP handler answering a scrape with what `registry` holds (500 with the reason on failure). */
export function metricsHandler(registry: Registry): (req: IncomingMessage, res: ServerResponse) => void {
  return (_req, res) => {
    registry.metrics().then(
      (body) => {
        res.writeHead(200, { "content-type": METRICS_CONTENT_TYPE });
        res.end(body);
      },
      (err: unknown) => {
        res.writeHead(500, { "content-type": "text/plain" });
        res.end(`${err instanceof Error ? err.message : String(err)}\n`);
      },
    );
  };
}
