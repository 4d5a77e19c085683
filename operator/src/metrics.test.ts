import { pino } from "pino";
import { describe, expect, it } from "vitest";
import { Controller, StallingError, WaitingError } from "../../common/kube/controller.ts";
import { OperatorMetrics } from "./metrics.ts";

const silent = pino({ level: "silent" });

describe("operator metrics", () => {
  it("counts reconciles by controller and result, with their time", async () => {
    let leading = true;
    const metrics = new OperatorMetrics(() => leading);
    const controller = new Controller(
      "servicechain",
      async (key) => {
        if (key === "ns/stalled") throw new StallingError("InvalidSpec", "bad spec");
        if (key === "ns/waiting") throw new WaitingError("SourceNotReady", "later", 60_000);
        if (key === "ns/broken") throw new Error("boom");
      },
      silent,
      1,
    );
    metrics.observe(controller);
    controller.start();
    for (const key of ["ns/a", "ns/b", "ns/stalled", "ns/waiting", "ns/broken"]) controller.enqueue(key);
    const deadline = Date.now() + 5_000;
    const text = async () => {
      const res = {
        head: 0,
        body: "",
        writeHead: (s: number) => (res.head = s),
        end: (_b: string): void => undefined,
      };
      await new Promise<void>((resolve) => {
        res.end = (b: string) => {
          res.body = b;
          resolve();
        };
        metrics.handler({} as never, res as never);
      });
      return res.body;
    };
    while (!(await text()).includes('sluice_reconcile_duration_seconds_count{controller="servicechain"} 5')) {
      expect(Date.now()).toBeLessThan(deadline);
      await new Promise((r) => setTimeout(r, 10));
    }
    await controller.stop();

    const scraped = await text();
    expect(scraped).toContain('sluice_reconcile_total{controller="servicechain",result="success"} 2\n');
    expect(scraped).toContain('sluice_reconcile_total{controller="servicechain",result="stalled"} 1\n');
    expect(scraped).toContain('sluice_reconcile_total{controller="servicechain",result="waiting"} 1\n');
    expect(scraped).toContain('sluice_reconcile_total{controller="servicechain",result="error"} 1\n');
    expect(scraped).toMatch(
      /^sluice_reconcile_duration_seconds_sum\{controller="servicechain"\} [0-9.e-]+$/m,
    );
    expect(scraped).toContain("# TYPE sluice_reconcile_duration_seconds histogram\n");
    expect(scraped).toContain(
      'sluice_reconcile_duration_seconds_bucket{le="+Inf",controller="servicechain"} 5\n',
    );
    expect(scraped).toContain("sluice_leader 1\n");
    leading = false;
    expect(await text()).toContain("sluice_leader 0\n");
  });
});
