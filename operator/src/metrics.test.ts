import { pino } from "pino";
import { describe, expect, it } from "vitest";
import { Controller } from "../../common/kube/controller.ts";
import { SluiceError } from "../../common/errors.ts";
import { checkScrape } from "../../test/support/scrape.ts";
import { OperatorMetrics } from "./metrics.ts";

const silent = pino({ level: "silent" });

describe("operator metrics", () => {
  it("counts reconciles by controller and result, with their time", async () => {
    let leading = true;
    const metrics = new OperatorMetrics(() => leading);
    const controller = new Controller(
      "servicechain",
      async (key) => {
        if (key === "ns/stalled") throw new SluiceError("InvalidSpec", "bad spec", { retry: "stall" });
        if (key === "ns/waiting")
          throw new SluiceError("SourceNotReady", "later", { retry: "wait", retryAfterMs: 60_000 });
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

describe("rollout metrics", () => {
  it("reports nodes by state and a halted rollout with its reason", async () => {
    const metrics = new OperatorMetrics();
    const chain = (name: string, reason: string, nodes: Record<string, number>) =>
      ({
        apiVersion: "sluice.dev/v1alpha1",
        kind: "ServiceChain",
        metadata: { name, namespace: "net" },
        spec: {},
        status: {
          observedGeneration: 1,
          nodes,
          conditions: [{ type: "Ready", status: "False", reason, message: "", lastTransitionTime: "" }],
        },
      }) as never;
    metrics.observeServiceChains(async () => [
      chain("edge", "NodesFailed", { desired: 3, updated: 2, ready: 1, failed: 1 }),
      chain("core", "RollingOut", { desired: 3, updated: 1, ready: 1, failed: 0 }),
    ]);
    const scraped = checkScrape(await metrics.registry.metrics());
    expect(scraped.problems).toEqual([]);
    const edge = { namespace: "net", servicechain: "edge" };
    expect(scraped.value("sluice_servicechain_nodes", { ...edge, state: "failed" })).toBe(1);
    expect(scraped.value("sluice_servicechain_nodes", { ...edge, state: "desired" })).toBe(3);
    expect(scraped.value("sluice_servicechain_rollout_halted", { ...edge, reason: "NodesFailed" })).toBe(1);
    expect(scraped.family("sluice_servicechain_rollout_halted")?.metrics).toHaveLength(1);
  });
});
