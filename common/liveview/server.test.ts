import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { LiveView } from "./server.ts";
import type { ChainReading } from "./model.ts";

let server: Server | undefined;
let view: LiveView | undefined;
afterEach(async () => {
  view?.stop();
  server?.closeAllConnections();
  await new Promise((r) => server?.close(r) ?? r(undefined));
});

/** Serves `view`'s routes on a loopback port; returns its base URL. */
async function serve(v: LiveView): Promise<string> {
  const routes = new Map(v.routes());
  server = createServer((req, res) => {
    const route = routes.get((req.url ?? "/").split("?")[0]!);
    if (route) return route(req, res);
    res.writeHead(404).end();
  });
  await new Promise<void>((r) => server!.listen(0, "127.0.0.1", r));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

const reading = (packets: number): ChainReading => ({
  node: "n1",
  chain: "default_edge",
  hook: "xdp",
  revision: "r1",
  phase: "Ready",
  functions: [{ name: "firewall", packets: BigInt(packets), drops: 0n, passes: BigInt(packets), errors: 0n }],
  rootMisses: 0n,
});

describe("the live view's server", () => {
  it("serves the page and uPlot from this host only, and says so to the browser", async () => {
    view = new LiveView({ title: "n1", read: async () => [] });
    const base = await serve(view);
    const page = await fetch(`${base}/`);
    expect(page.headers.get("content-type")).toContain("text/html");
    expect(page.headers.get("content-security-policy")).toContain("default-src 'none'");
    const html = await page.text();
    for (const src of html.matchAll(/(?:src|href)="([^"]+)"/g))
      expect(src[1], "no address of another host").toMatch(/^(\/|data:)/);
    const uplot = await fetch(`${base}/live/uPlot.iife.min.js`);
    expect(uplot.status).toBe(200);
    expect(await uplot.text()).toContain("uPlot");
    expect((await fetch(`${base}/live/app.js`)).headers.get("content-type")).toContain("javascript");
  });

  it("streams a snapshot, then one point a second, to each page that listens", async () => {
    let packets = 0;
    view = new LiveView({
      title: "n1",
      read: async () => [reading((packets += 500))],
      intervalMs: 100,
    });
    view.start();
    const base = await serve(view);
    const res = await fetch(`${base}/live/events`);
    expect(res.headers.get("content-type")).toContain("text/event-stream");
    const reader = res.body!.getReader();
    let text = "";
    while ((text.match(/event: point/g) ?? []).length < 3)
      text += new TextDecoder().decode((await reader.read()).value);
    await reader.cancel();
    expect(text.startsWith("retry: 2000\nevent: snapshot\n")).toBe(true);
    const points = [...text.matchAll(/event: point\ndata: (.*)\n/g)].map((m) => JSON.parse(m[1]!));
    const rate = points.at(-1).point.functions["n1/default_edge/firewall"][0];
    // 500 packets a reading, divided by however long the busy machine took between two.
    expect(rate).toBeGreaterThan(0);
    expect(points.at(-1).chains[0]).toMatchObject({ chain: "default_edge", functions: ["firewall"] });
  });
});
