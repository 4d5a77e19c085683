import { connect } from "node:net";
import { networkInterfaces } from "node:os";
import { afterEach, describe, expect, it } from "vitest";
import { checkScrape } from "../../../test/support/scrape.ts";
import type { ChainStatus } from "../chain/index.ts";
import {
  AgentCounters,
  agentRegistry,
  DEFAULT_AGENT_METRICS_ADDRESS,
  MetricsAddressError,
  parseMetricsAddress,
  startMetricsServer,
  type MetricsServer,
} from "./metrics.ts";

/** Whether a TCP connection to `host:port` is accepted ("open") or refused. */
function probe(host: string, port: number): Promise<"open" | "refused"> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host, port, timeout: 2_000 });
    socket.once("connect", () => {
      socket.destroy();
      resolve("open");
    });
    socket.once("timeout", () => {
      socket.destroy();
      reject(new Error(`connecting to ${host}:${port} timed out`));
    });
    socket.once("error", (err: NodeJS.ErrnoException) => {
      if (err.code === "ECONNREFUSED") resolve("refused");
      else reject(err);
    });
  });
}

/** Every other IPv4 address of this host's interfaces (loopback aliases excluded). */
function otherHostAddresses(): string[] {
  return Object.values(networkInterfaces())
    .flat()
    .filter((a) => a !== undefined && a.family === "IPv4" && !a.internal)
    .map((a) => a!.address);
}

const running: MetricsServer[] = [];
afterEach(async () => {
  await Promise.all(running.splice(0).map((s) => s.close()));
});

async function serve(host?: string): Promise<MetricsServer> {
  const server = await startMetricsServer({ port: 0, list: () => [], ...(host ? { host } : {}) });
  running.push(server);
  return server;
}

describe("the agent's metrics endpoint", () => {
  it("listens on loopback only when no address is given", async () => {
    const server = await serve();
    expect(DEFAULT_AGENT_METRICS_ADDRESS).toBe("127.0.0.1");
    expect(server.address).toBe("127.0.0.1");
    expect((await fetch(`http://127.0.0.1:${server.port}/metrics`)).status).toBe(200);
    // 127.0.0.2 is as local as 127.0.0.1 (all of 127/8 is on lo), yet nothing answers there.
    expect(await probe("127.0.0.2", server.port)).toBe("refused");
    for (const address of otherHostAddresses()) expect(await probe(address, server.port)).toBe("refused");
  });

  it("answers only on the address it was given, not on the host's other addresses", async () => {
    const server = await serve("127.0.0.2");
    expect(server.address).toBe("127.0.0.2");
    expect((await fetch(`http://127.0.0.2:${server.port}/metrics`)).status).toBe(200);
    expect(await probe("127.0.0.1", server.port)).toBe("refused");
    for (const address of otherHostAddresses()) expect(await probe(address, server.port)).toBe("refused");
  });

  it("answers on every address when told 0.0.0.0", async () => {
    const server = await serve("0.0.0.0");
    expect(await probe("127.0.0.1", server.port)).toBe("open");
    expect(await probe("127.0.0.2", server.port)).toBe("open");
  });
});

describe("extra routes beside /metrics", () => {
  it("serves the live view's paths on the same address and port", async () => {
    const server = await startMetricsServer({
      port: 0,
      list: () => [],
      routes: [["/", (_req, res) => void res.end("page")]],
    });
    running.push(server);
    expect(await (await fetch(`http://127.0.0.1:${server.port}/`)).text()).toBe("page");
    expect((await fetch(`http://127.0.0.1:${server.port}/metrics`)).status).toBe(200);
    expect((await fetch(`http://127.0.0.1:${server.port}/other`)).status).toBe(404);
  });
});

describe("--metrics-address", () => {
  it.each(["127.0.0.1", "10.0.3.7", "0.0.0.0", "::1", "::", "fd00::12"])("accepts the IP address %s", (v) => {
    expect(parseMetricsAddress(v)).toBe(v);
  });

  it.each(["localhost", "node-1.example", "10.0.0.1:9471", "", "999.1.1.1", "[::1]"])(
    "refuses %j, naming what it wants",
    (v) => {
      expect(() => parseMetricsAddress(v)).toThrow(MetricsAddressError);
      expect(() => parseMetricsAddress(v)).toThrow(/is not an IP address/);
    },
  );
});

/** A chain of `n` NFs as the chain manager reports it, with made-up counters. */
function fakeChain(name: string, n: number): ChainStatus {
  return {
    name,
    hook: "xdp",
    revision: "main@sha1:0123456789abcdef0123456789abcdef01234567",
    generation: 3,
    rootProgramId: 10,
    interfaces: [{ name: "eth0", ifindex: 2, linkId: 7, xdpMode: "native" }],
    nfs: Array.from({ length: n }, (_, i) => ({
      name: `nf${i}`,
      programId: 11 + i,
      statsIndex: i,
      counters: {
        packets: 1000n - BigInt(i),
        bytes: 64_000n,
        drops: 1n,
        passes: 999n - BigInt(i),
        errors: 0n,
      },
    })),
    rootMisses: { packets: 5n, bytes: 300n, drops: 0n, passes: 5n, errors: 0n },
  };
}

describe("a scrape of the agent", () => {
  it("parses cleanly, names counters _total with units, and stays under 500 series for a 4-NF chain", async () => {
    const counters = new AgentCounters();
    counters.record({ ok: true });
    counters.record({ ok: false, reason: "VerifierRejected" });
    counters.recordApply({
      action: "switched",
      timings: { totalMs: 420, loadMs: 0, selfTestMs: 0, flipUs: 0 },
    });
    counters.recordApply({
      action: "created",
      timings: { totalMs: 900, loadMs: 0, selfTestMs: 0, flipUs: 0 },
    });
    counters.commitToLive.observe({ chain: "default_edge" }, 4.2);
    const registry = agentRegistry({
      list: () => [fakeChain("default_edge", 4)],
      counters,
      node: "node-1",
      processMetrics: true,
    });
    const text = await registry.metrics();
    const scraped = checkScrape(text);
    expect(scraped.problems).toEqual([]);
    const nf1 = { chain: "default_edge", nf: "nf1", node: "node-1" };
    expect(scraped.value("sluice_nf_packets_total", nf1)).toBe(999);
    expect(scraped.value("sluice_nf_verdicts_total", { ...nf1, verdict: "drop" })).toBe(1);
    expect(scraped.value("sluice_nf_verdicts_total", { ...nf1, verdict: "pass" })).toBe(998);
    expect(scraped.value("sluice_chain_root_misses_total", { chain: "default_edge", node: "node-1" })).toBe(
      5,
    );
    expect(
      scraped.value("sluice_agent_switch_failures_total", { reason: "VerifierRejected", node: "node-1" }),
    ).toBe(1);
    expect(scraped.family("sluice_agent_switch_duration_seconds")?.type).toBe("HISTOGRAM");
    expect(scraped.family("sluice_commit_to_live_seconds")?.type).toBe("HISTOGRAM");
    // Every series names its node.
    for (const line of text.split("\n").filter((l) => l && !l.startsWith("#")))
      expect(line).toContain('node="node-1"');
    expect(scraped.seriesCount).toBeLessThan(500);
  });
});
