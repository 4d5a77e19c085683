import type { IncomingMessage, ServerResponse } from "node:http";
import {
  formatMetrics,
  LabeledCounter,
  METRICS_CONTENT_TYPE,
  type MetricFamily,
} from "../../common/metrics.ts";
import type { Controller, ReconcileOutcome } from "../../common/kube/controller.ts";

/** What the operator counts: reconciles per controller and outcome, their time, leadership. */
export class OperatorMetrics {
  readonly #reconciles = new LabeledCounter();
  readonly #seconds = new LabeledCounter();
  readonly #count = new LabeledCounter();

  /** @param isLeader whether this replica leads now; absent: no `sluice_leader` gauge. */
  constructor(private readonly isLeader?: () => boolean) {}

  /** Counts one reconcile of `controller`. */
  record(controller: string, result: ReconcileOutcome, seconds: number): void {
    this.#reconciles.inc({ controller, result });
    this.#seconds.inc({ controller }, seconds);
    this.#count.inc({ controller });
  }

  /** Makes `controller` report every reconcile here. */
  observe(controller: Controller): void {
    controller.onReconcile = (result, seconds) => this.record(controller.name, result, seconds);
  }

  /** The operator's metric families. */
  families(): MetricFamily[] {
    const families: MetricFamily[] = [
      {
        name: "sluice_reconcile_total",
        help: "Reconciles by controller and result (success, stalled, waiting, error).",
        type: "counter",
        samples: this.#reconciles.samples(),
      },
      {
        name: "sluice_reconcile_duration_seconds",
        help: "Time spent in reconciles, by controller.",
        type: "summary",
        samples: [...this.#seconds.samples("_sum"), ...this.#count.samples("_count")],
      },
    ];
    if (this.isLeader)
      families.push({
        name: "sluice_leader",
        help: "1 while this replica runs the controllers, else 0.",
        type: "gauge",
        samples: [{ value: this.isLeader() ? 1 : 0 }],
      });
    return families;
  }

  /** An HTTP handler answering a scrape. */
  readonly handler = (_req: IncomingMessage, res: ServerResponse): void => {
    res.writeHead(200, { "content-type": METRICS_CONTENT_TYPE });
    res.end(formatMetrics(this.families()));
  };
}
