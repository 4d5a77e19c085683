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
import type { Controller, ReconcileOutcome } from "../../common/kube/controller.ts";

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

  /** Makes `controller` report every reconcile here. */
  observe(controller: Controller): void {
    controller.onReconcile = (result, seconds) => this.record(controller.name, result, seconds);
  }

  /** An HTTP handler answering a scrape. */
  readonly handler: (req: IncomingMessage, res: ServerResponse) => void = metricsHandler(this.registry);
}
