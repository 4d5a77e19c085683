import type { IncomingMessage, ServerResponse } from "node:http";
import {
  Counter,
  DURATION_BUCKETS_SECONDS,
  Gauge,
  Histogram,
  metricsHandler,
  newRegistry,
  registerProcessMetrics,
  type Registry,
} from "../../common/metrics.ts";
import type { KubeClient } from "../../common/kube/client.ts";
import type { Controller, ReconcileOutcome } from "../../common/kube/controller.ts";
import { ConditionType, findCondition, Reason, type ServiceChain } from "../../common/api/index.ts";

/** Ready reasons that mean a rollout stopped short of its target. */
const HALTED = new Set<string>([Reason.NodesFailed, Reason.ProgressDeadlineExceeded, Reason.RolledBack]);

/** What the operator counts: reconciles per controller and outcome, their time, leadership. */
export class OperatorMetrics {
  /** Every operator series; scrape it with {@link handler}. */
  readonly registry: Registry = newRegistry();
  readonly #reconciles = new Counter({
    name: "sluice_reconcile_total",
    help: "Reconciles by controller and result (success, stalled, waiting, error).",
    labelNames: ["controller", "result"] as const,
    registers: [this.registry],
  });
  readonly #seconds = new Histogram({
    name: "sluice_reconcile_duration_seconds",
    help: "Time spent in reconciles, by controller.",
    labelNames: ["controller"] as const,
    buckets: DURATION_BUCKETS_SECONDS,
    registers: [this.registry],
  });

  /** @param isLeader whether this replica leads now; absent: no `sluice_leader` gauge. */
  constructor(isLeader?: () => boolean) {
    registerProcessMetrics(this.registry, "sluice_operator_");
    if (isLeader)
      new Gauge({
        name: "sluice_leader",
        help: "1 while this replica runs the controllers, else 0.",
        registers: [this.registry],
        collect() {
          this.set(isLeader() ? 1 : 0);
        },
      });
  }

  /** Counts one reconcile of `controller`. */
  record(controller: string, result: ReconcileOutcome, seconds: number): void {
    this.#reconciles.inc({ controller, result });
    this.#seconds.observe({ controller }, seconds);
  }

  readonly #apiRetries = new Counter({
    name: "sluice_kube_api_retries_total",
    help: "Kubernetes API calls tried again after the API server answered 429 or 5xx, by status.",
    labelNames: ["status"] as const,
    registers: [this.registry],
  });

  /** Counts the retries of `client` (an API server under load shows here first). */
  observeKubeClient(client: KubeClient): void {
    client.onRetry = (_what, err) => this.#apiRetries.inc({ status: String(err.status) });
  }

  /** Makes `controller` report every reconcile here. */
  observe(controller: Controller): void {
    controller.onReconcile = (result, seconds) => this.record(controller.name, result, seconds);
  }

  /**
   * Reports every ServiceChain's rollout: nodes by state, and a gauge set while the rollout is
   * halted (nodes failed, no progress, or rolled back) with the reason. `list` reads the
   * informer's cache, so a scrape costs no API call.
   */
  observeServiceChains(list: () => Promise<ServiceChain[]>): void {
    let read: Promise<ServiceChain[]> | undefined;
    // Both gauges of one scrape share one read of the cache.
    const chains = () => (read ??= list().finally(() => setTimeout(() => (read = undefined), 100)));
    new Gauge({
      name: "sluice_servicechain_nodes",
      help: "Nodes of each ServiceChain's rollout by state: desired, updated (plan at the current revision), ready, failed.",
      labelNames: ["namespace", "servicechain", "state"] as const,
      registers: [this.registry],
      async collect() {
        this.reset();
        for (const sc of await chains())
          for (const state of ["desired", "updated", "ready", "failed"] as const)
            this.set(
              { namespace: sc.metadata.namespace ?? "default", servicechain: sc.metadata.name, state },
              sc.status?.nodes?.[state] ?? 0,
            );
      },
    });
    new Gauge({
      name: "sluice_servicechain_rollout_halted",
      help: "1 while a ServiceChain's rollout is halted: nodes failed the revision (NodesFailed), it made no progress (ProgressDeadlineExceeded) or it was rolled back (RolledBack).",
      labelNames: ["namespace", "servicechain", "reason"] as const,
      registers: [this.registry],
      async collect() {
        this.reset();
        for (const sc of await chains()) {
          const reason = findCondition(sc.status?.conditions, ConditionType.Ready)?.reason ?? "";
          if (HALTED.has(reason))
            this.set(
              { namespace: sc.metadata.namespace ?? "default", servicechain: sc.metadata.name, reason },
              1,
            );
        }
      },
    });
  }

  /** An HTTP handler answering a scrape. */
  readonly handler: (req: IncomingMessage, res: ServerResponse) => void = metricsHandler(this.registry);
}
