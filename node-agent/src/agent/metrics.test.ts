import { connect } from "node:net";
import { networkInterfaces } from "node:os";
import { afterEach, describe, expect, it } from "vitest";
import {
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
