import { describe, expect, it } from "vitest";
import { checkScrape } from "../test/support/scrape.ts";
import { Counter, Histogram, METRICS_CONTENT_TYPE, metricsHandler, newRegistry } from "./metrics.ts";

/** Answers `handler` as an HTTP server would, returning status, content type and body. */
async function scrape(handler: ReturnType<typeof metricsHandler>) {
  return await new Promise<{ status: number; type: string; body: string }>((resolve) => {
    let status = 0;
    let type = "";
    const res = {
      writeHead: (s: number, headers: Record<string, string>) => {
        status = s;
        type = headers["content-type"] ?? "";
      },
      end: (body: string) => resolve({ status, type, body }),
    };
    handler({} as never, res as never);
  });
}

describe("a component's metrics registry", () => {
  it("serves counters and histograms in text format 0.0.4, with the component's default labels", async () => {
    const registry = newRegistry({ node: "node-1" });
    const drops = new Counter({
      name: "x_drops_total",
      help: 'Drops "quoted"\\ and\nwrapped.',
      labelNames: ["reason"] as const,
      registers: [registry],
    });
    const seconds = new Histogram({
      name: "x_seconds",
      help: "Time.",
      buckets: [0.1, 1],
      registers: [registry],
    });
    drops.inc({ reason: 'bad "spec"\n' }, 2);
    seconds.observe(0.5);
    const answer = await scrape(metricsHandler(registry));
    expect(answer.status).toBe(200);
    expect(answer.type).toBe(METRICS_CONTENT_TYPE);
    expect(METRICS_CONTENT_TYPE).toMatch(/^text\/plain; version=0\.0\.4/);
    const checked = checkScrape(answer.body);
    expect(checked.problems).toEqual([]);
    expect(checked.value("x_drops_total", { reason: 'bad "spec"\n', node: "node-1" })).toBe(2);
    expect(checked.family("x_seconds")?.metrics[0]).toMatchObject({
      buckets: { "0.1": "0", "1": "1", "+Inf": "1" },
    });
    expect(answer.body).toContain('x_seconds_count{node="node-1"} 1\n');
  });

  it("keeps two registries apart (one process runs the agent and the control plane)", async () => {
    const a = newRegistry();
    const b = newRegistry();
    new Counter({ name: "same_name_total", help: "A.", registers: [a] }).inc();
    new Counter({ name: "same_name_total", help: "B.", registers: [b] });
    expect(checkScrape(await a.metrics()).value("same_name_total")).toBe(1);
    expect(checkScrape(await b.metrics()).value("same_name_total")).toBe(0);
  });

  it("answers 500 with the reason when a collector fails", async () => {
    const registry = newRegistry();
    new Counter({
      name: "broken_total",
      help: "Fails.",
      registers: [registry],
      collect() {
        throw new Error("map read failed");
      },
    });
    const answer = await scrape(metricsHandler(registry));
    expect(answer.status).toBe(500);
    expect(answer.body).toContain("map read failed");
  });
});

describe("the scrape checker", () => {
  it("flags a counter without _total, a family without TYPE and a series written twice", () => {
    const checked = checkScrape(
      ["# HELP a Count.", "# TYPE a counter", "a 1", "# HELP b B.", "b 2", "b 3", ""].join("\n"),
    );
    expect(checked.problems).toEqual(
      expect.arrayContaining([
        "counter a does not end in _total",
        "b has no TYPE",
        expect.stringMatching(/series b.* appears twice/),
      ]),
    );
  });
});
