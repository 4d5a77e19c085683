import { existsSync, statSync } from "node:fs";
import { mkdir } from "node:fs/promises";
import { hostname } from "node:os";
import { join, resolve } from "node:path";
import { API_VERSION, GitSource, NODE_LABEL } from "../common/api/index.ts";
import { ArtifactStore } from "../common/artifact/index.ts";
import type { Logger } from "../common/log.ts";
import { MemoryStore, type StoredObject } from "../common/store.ts";
import { startAgent, type RunningAgent } from "../node-agent/src/agent/run.ts";
import type { ChainStatus } from "../node-agent/src/chain/index.ts";
import { startControlPlane, type ControlPlane } from "../operator/src/controlplane.ts";
import { SourceServer } from "../operator/src/server/index.ts";

/** What `sluice run` is asked to follow and where it keeps its state. */
export interface SingleHostOptions {
  /** Git URL, or a directory holding a Git repository. */
  source: string;
  ref?: { branch?: string; tag?: string; semver?: string; commit?: string };
  path?: string;
  interval?: string;
  /** Status endpoint port on 127.0.0.1 (0 picks one). */
  port: number;
  dataDir: string;
  bpffsRoot?: string;
  /** Network namespace of the interfaces (the demo puts its "node" in one). */
  netns?: string;
  /** Token for push webhooks on the status endpoint. */
  webhookToken?: string;
  log: Logger;
}

/** A running single-host sluice. */
export interface SingleHost {
  url: string;
  port: number;
  store: MemoryStore;
  agent: RunningAgent;
  controlPlane: ControlPlane;
  /** The node name this host runs as. */
  nodeName: string;
  /** What `sluice status` shows: chains with counters and the GitOps objects' status. */
  status(): Promise<SingleHostStatus>;
  stop(): Promise<void>;
}

/** The status document served at GET /status. */
export interface SingleHostStatus {
  node: string;
  source: { revision?: string; ready?: string; message?: string };
  chains: Array<{
    name: string;
    revision: string;
    hook: string;
    interfaces: Array<{ name: string; xdpMode?: string }>;
    ready?: string;
    message?: string;
    nfs: Array<{
      name: string;
      packets: string;
      bytes: string;
      drops: string;
      passes: string;
      errors: string;
    }>;
  }>;
  time: string;
}

/** The name of this host as a Kubernetes node name (DNS-1123 subdomain). */
export function localNodeName(): string {
  const name = hostname()
    .toLowerCase()
    .replace(/[^a-z0-9.-]/g, "-")
    .replace(/^[^a-z0-9]+|[^a-z0-9]+$/g, "");
  return name.slice(0, 253) || "localhost";
}

/**
 * Turns a `--source` into a Git URL: URLs pass through; a directory must hold a Git repository
 * (its working tree is not read: commits are what sluice follows, as in a cluster).
 */
export function sourceUrl(source: string): string {
  if (/^(https?|ssh|git|file):\/\//.test(source)) return source;
  const dir = resolve(source);
  if (!existsSync(dir) || !statSync(dir).isDirectory()) {
    throw new Error(`--source ${source}: neither a Git URL nor a directory`);
  }
  if (!existsSync(join(dir, ".git")) && !existsSync(join(dir, "HEAD"))) {
    throw new Error(
      `--source ${source}: ${dir} is not a Git repository (sluice follows commits; run git init and commit first)`,
    );
  }
  return `file://${dir}`;
}

/**
 * Runs the whole pipeline on one host without Kubernetes: the same GitSource and ServiceChain
 * controllers and the same node agent as in a cluster, with a memory store between them and
 * this host as the only node.
 */
export async function startSingleHost(options: SingleHostOptions): Promise<SingleHost> {
  const { log } = options;
  const store = new MemoryStore();
  await mkdir(options.dataDir, { recursive: true });
  const artifacts = new ArtifactStore(join(options.dataDir, "artifacts"));
  const server = new SourceServer({ store: artifacts, logger: log });
  const listening = await server.listen(options.port, "127.0.0.1");
  const url = `http://127.0.0.1:${listening.port}`;
  const nodeName = localNodeName();

  const controlPlane = startControlPlane({
    store,
    artifacts,
    server,
    advertiseUrl: url,
    dataDir: options.dataDir,
    readSecret: async (_namespace, name) =>
      name === "local-webhook" && options.webhookToken ? { token: options.webhookToken } : undefined,
    event: (obj, type, reason, message) => {
      const l = log.child({ kind: obj.kind, name: obj.metadata.name });
      if (type === "Warning") l.warn({ reason }, message);
      else l.info({ reason }, message);
    },
    log,
  });

  await store.apply({
    apiVersion: "v1",
    kind: "Node",
    metadata: {
      name: nodeName,
      labels: {
        "kubernetes.io/hostname": nodeName,
        "kubernetes.io/os": "linux",
        "sluice.dev/single-host": "true",
      },
    },
  });
  const gitSource: StoredObject = {
    apiVersion: API_VERSION,
    kind: "GitSource",
    metadata: { name: "local", namespace: "default" },
    spec: {
      url: sourceUrl(options.source),
      ref: options.ref && Object.keys(options.ref).length ? options.ref : { branch: "main" },
      path: options.path ?? ".",
      interval: options.interval ?? "10s",
      ...(options.webhookToken ? { webhookSecretRef: { name: "local-webhook" } } : {}),
    },
  };
  const checked = GitSource.safeParse(gitSource);
  if (!checked.success) {
    await server.close();
    await controlPlane.stop();
    const issue = checked.error.issues[0]!;
    throw new Error(`--${String(issue.path[1] ?? "source")}: ${issue.message}`);
  }
  await store.apply(gitSource);

  const agent = await startAgent({
    nodeName,
    store,
    bpffsRoot: options.bpffsRoot,
    cacheDir: join(options.dataDir, "cache"),
    netns: options.netns,
    logger: log,
  });

  const host: SingleHost = {
    url,
    port: listening.port,
    store,
    agent,
    controlPlane,
    nodeName,
    status: async () => singleHostStatus(store, agent, nodeName),
    async stop() {
      await controlPlane.stop();
      await agent.stop();
      await server.close();
    },
  };
  server.route("GET", "/status", async (_req, res) => {
    const body = JSON.stringify(await host.status());
    res.writeHead(200, { "content-type": "application/json" });
    res.end(body);
  });
  log.info({ url, node: nodeName, selector: `${NODE_LABEL}=${nodeName}` }, "single-host sluice running");
  return host;
}

async function singleHostStatus(
  store: MemoryStore,
  agent: RunningAgent,
  node: string,
): Promise<SingleHostStatus> {
  const source = await store.get("GitSource", "default", "local");
  const sourceStatus = (source?.status ?? {}) as {
    artifact?: { revision?: string };
    conditions?: Array<{ type: string; status: string; message: string }>;
  };
  const ready = sourceStatus.conditions?.find((c) => c.type === "Ready");
  const nodeChains = await store.list("NodeChain");
  const chains = agent.manager.list().map((c: ChainStatus) => {
    const nc = nodeChains.find(
      (o) => `${o.metadata.namespace}.${(o.spec as { chain: string }).chain}` === c.name,
    );
    const cond = (
      nc?.status as { conditions?: Array<{ type: string; status: string; message: string }> } | undefined
    )?.conditions?.find((x) => x.type === "Ready");
    return {
      name: c.name,
      revision: c.revision,
      hook: c.hook,
      interfaces: c.interfaces.map((i) => ({ name: i.name, ...(i.xdpMode ? { xdpMode: i.xdpMode } : {}) })),
      ready: cond?.status,
      message: cond?.message,
      nfs: c.nfs.map((nf) => ({
        name: nf.name,
        packets: String(nf.counters.packets),
        bytes: String(nf.counters.bytes),
        drops: String(nf.counters.drops),
        passes: String(nf.counters.passes),
        errors: String(nf.counters.errors),
      })),
    };
  });
  return {
    node,
    source: { revision: sourceStatus.artifact?.revision, ready: ready?.status, message: ready?.message },
    chains,
    time: new Date().toISOString(),
  };
}
