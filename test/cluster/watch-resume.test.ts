/**
 * Watches that end are resumed, not relisted, on a real kube-apiserver. The informer (the one
 * the operator and the agent build their caches with) talks to the API server through a
 * counting proxy in this process: it forwards every request unchanged, records it, and can cut
 * the open watch connections, as a load balancer or an API server restart does. A cut watch
 * resumes from the last resourceVersion without a LIST, also when cut again and again or when
 * the connection fails a few times first. Only a 410 Gone lists again, once: that answer is the
 * one thing the proxy makes up (the API server's own "too old resource version" event, which it
 * sends once etcd compacted a version away; this young cluster still serves every version, even
 * after a compaction, from its watch cache).
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { request as httpsRequest } from "node:https";
import type { Socket } from "node:net";
import { KubeConfig } from "@kubernetes/client-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { KubeClient, type KubeObject } from "../../common/kube/client.ts";
import { Informer } from "../../common/kube/informer.ts";
import { rootLogger } from "../../common/log.ts";
import { createTestNamespace, kubeConfig, kubectlOk } from "./harness.ts";

const namespace = createTestNamespace("watchresume");
const ConfigMaps = { group: "", version: "v1", kind: "ConfigMap", plural: "configmaps", namespaced: true };

interface Seen {
  method: string;
  path: string;
  watch: boolean;
  resourceVersion: string | null;
  limit?: string | null;
  continue?: string | null;
}

/** Forwards HTTP to the API server's HTTPS, recording each request; can cut open watches. */
class CountingProxy {
  readonly requests: Seen[] = [];
  private readonly server: Server;
  private readonly watches = new Set<Socket>();
  /** Watch requests to fail by closing their connection before forwarding them. */
  dropWatches = 0;
  /** Answer the next watch as the API server does for a version no longer in etcd (made up here). */
  expireNextWatch = false;
  url = "";

  constructor(private readonly upstream: { server: string; ca: Buffer }) {
    this.server = createServer((req, res) => this.forward(req, res));
  }

  async start(): Promise<void> {
    await new Promise<void>((resolve) => this.server.listen(0, "127.0.0.1", resolve));
    this.url = `http://127.0.0.1:${(this.server.address() as { port: number }).port}`;
  }

  /** Cuts every open watch connection. */
  cutWatches(): void {
    for (const socket of this.watches) socket.destroy();
    this.watches.clear();
  }

  lists(): Seen[] {
    return this.requests.filter((r) => r.method === "GET" && !r.watch && r.path.endsWith("/configmaps"));
  }

  watchRequests(): Seen[] {
    return this.requests.filter((r) => r.watch);
  }

  async stop(): Promise<void> {
    this.cutWatches();
    this.server.closeAllConnections();
    await new Promise((resolve) => this.server.close(resolve));
  }

  private forward(req: IncomingMessage, res: ServerResponse): void {
    const url = new URL(req.url ?? "/", this.upstream.server);
    const watch = url.searchParams.get("watch") === "true";
    if (watch && this.dropWatches > 0) {
      this.dropWatches--;
      this.requests.push({ method: req.method ?? "", path: url.pathname, watch, resourceVersion: "dropped" });
      req.socket.destroy();
      return;
    }
    if (watch && this.expireNextWatch) {
      this.expireNextWatch = false;
      const rv = url.searchParams.get("resourceVersion");
      this.requests.push({ method: req.method ?? "", path: url.pathname, watch, resourceVersion: rv });
      res.writeHead(200, { "content-type": "application/json" });
      res.end(
        JSON.stringify({
          type: "ERROR",
          object: {
            kind: "Status",
            apiVersion: "v1",
            metadata: {},
            status: "Failure",
            message: `too old resource version: ${rv} (${Number(rv) + 1000})`,
            reason: "Expired",
            code: 410,
          },
        }) + "\n",
      );
      return;
    }
    this.requests.push({
      method: req.method ?? "",
      path: url.pathname,
      watch,
      resourceVersion: url.searchParams.get("resourceVersion"),
      limit: url.searchParams.get("limit"),
      continue: url.searchParams.get("continue"),
    });
    if (watch) this.watches.add(req.socket);
    const upstream = httpsRequest(
      url,
      { method: req.method, headers: { ...req.headers, host: url.host }, ca: this.upstream.ca },
      (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        res.flushHeaders(); // a watch's headers come before its first event
        answer.pipe(res);
        res.on("close", () => answer.destroy());
      },
    );
    upstream.on("error", () => req.socket.destroy());
    // The client gone (or its watch cut): so is the request to the API server.
    res.on("close", () => upstream.destroy());
    req.pipe(upstream);
  }
}

async function until(what: string, check: () => boolean, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`not ${what} within ${timeoutMs} ms`);
    await new Promise((ok) => setTimeout(ok, 50));
  }
}

let proxy: CountingProxy;
let informer: Informer<KubeObject>;
let informerClient: KubeClient;
const names = new Set<string>();

beforeAll(async () => {
  const admin = kubeConfig();
  const cluster = admin.getCurrentCluster()!;
  proxy = new CountingProxy({ server: cluster.server, ca: Buffer.from(cluster.caData!, "base64") });
  await proxy.start();
  const kc = new KubeConfig();
  kc.loadFromOptions({
    clusters: [{ name: "proxy", server: proxy.url, skipTLSVerify: true }],
    users: [{ name: "admin", token: admin.getCurrentUser()!.token }],
    contexts: [{ name: "proxy", cluster: "proxy", user: "admin" }],
    currentContext: "proxy",
  });
  informerClient = new KubeClient(kc);
  informer = new Informer<KubeObject>(
    informerClient,
    ConfigMaps,
    rootLogger.child({ test: "watch-resume" }),
    {
      onChange: (obj) => names.add(obj.metadata?.name ?? ""),
      onDelete: (obj) => names.delete(obj.metadata?.name ?? ""),
    },
    { namespace },
  );
  await informer.start();
});

afterAll(async () => {
  await informer?.stop();
  await proxy?.stop();
});

async function createConfigMap(name: string): Promise<void> {
  await kubectlOk(["create", "configmap", name, "-n", namespace, "--from-literal=k=v"]);
}

describe("informer watch restarts", () => {
  it("resumes a cut watch from its resourceVersion without listing, and lists again only after 410 Gone", async () => {
    expect(proxy.lists()).toHaveLength(1);
    await createConfigMap("first");
    await until("first seen", () => names.has("first"));

    // Cut five times: each time a new watch from where the last one was, and no LIST.
    for (let i = 0; i < 5; i++) {
      const watchesBefore = proxy.watchRequests().length;
      proxy.cutWatches();
      await until("a new watch", () => proxy.watchRequests().length > watchesBefore);
    }
    await createConfigMap("after-cuts");
    await until("after-cuts seen", () => names.has("after-cuts"));
    expect(proxy.lists()).toHaveLength(1);
    for (const w of proxy.watchRequests().slice(1)) expect(w.resourceVersion).toMatch(/^[1-9][0-9]*$/);

    // The API server out of reach for three attempts: the informer backs off and resumes.
    proxy.dropWatches = 3;
    proxy.cutWatches();
    await until("three failed attempts and a watch again", () => proxy.dropWatches === 0);
    await createConfigMap("after-outage");
    await until("after-outage seen", () => names.has("after-outage"));
    expect(proxy.lists()).toHaveLength(1);
    const dropped = proxy.requests.filter((r) => r.resourceVersion === "dropped");
    expect(dropped).toHaveLength(3);

    // A resourceVersion the API server no longer has: 410 Gone, one LIST, and on from there.
    proxy.expireNextWatch = true;
    proxy.cutWatches();
    await until("a second LIST", () => proxy.lists().length === 2);
    await createConfigMap("after-gone");
    await until("after-gone seen", () => names.has("after-gone"));
    expect(proxy.lists()).toHaveLength(2);
    for (const name of ["first", "after-cuts", "after-outage", "after-gone"]) expect(names).toContain(name);
  }, 60_000);
});

describe("informer lists", () => {
  it("in pages, and caches every object of every page", async () => {
    for (const name of ["page-a", "page-b", "page-c"]) await createConfigMap(name);
    const expected = (await kubectlOk(["get", "configmaps", "-n", namespace, "-o", "name"]))
      .split("\n")
      .filter(Boolean)
      .map((line) => line.replace("configmap/", ""))
      .sort();
    expect(expected.length).toBeGreaterThanOrEqual(5);
    const listsBefore = proxy.lists().length;
    const paged = new Informer<KubeObject>(
      informerClient,
      ConfigMaps,
      rootLogger.child({ test: "watch-resume-paged" }),
      { onChange: () => {}, onDelete: () => {} },
      { namespace, pageSize: 2 },
    );
    try {
      await paged.start();
      const pages = proxy.lists().slice(listsBefore);
      expect(pages).toHaveLength(Math.ceil(expected.length / 2));
      for (const page of pages) expect(page.limit).toBe("2");
      expect(pages[0]!.continue).toBeNull();
      for (const page of pages.slice(1)) expect(page.continue).toBeTruthy();
      expect(
        paged
          .list()
          .map((o) => o.metadata?.name)
          .sort(),
      ).toEqual(expected);
      // The watch goes on from the list's version: what changes next is seen.
      await createConfigMap("page-after");
      await until("page-after in the paged cache", () => paged.get("page-after", namespace) !== undefined);
    } finally {
      await paged.stop();
    }
  }, 60_000);
});
