import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import { ArtifactStore } from "../../common/artifact/index.ts";
import { rootLogger, type Logger } from "../../common/log.ts";
import type { Store, StoredObject } from "../../common/store.ts";
import { reconcileGitSource, type GitSourceDeps } from "./gitsource/reconciler.ts";
import { CoreResources, KubeClient } from "./kube/client.ts";
import { Controller, objectKey, splitKey } from "./kube/controller.ts";
import { EventRecorder } from "./kube/events.ts";
import { KubeStore } from "./kube/store.ts";
import { SourceServer } from "./server/index.ts";

/** How the operator process is set up (`sluice operator` flags map onto this). */
export interface OperatorOptions {
  /** kubeconfig file; default: $KUBECONFIG, ~/.kube/config, or the in-cluster service account. */
  kubeconfig?: string;
  /** Watch one namespace only; default all. */
  namespace?: string;
  /** Port of the HTTP endpoint (artifacts, webhooks, health, metrics). */
  port: number;
  /** Address to listen on. */
  host?: string;
  /** Directory for artifacts and working clones. */
  dataDir: string;
  /** URL agents use to reach the HTTP endpoint; default http://<host>:<port>. */
  advertiseUrl?: string;
  /** Reconciles running at once per controller. */
  concurrency?: number;
  logger?: Logger;
}

/** A running operator; `stop()` ends it cleanly. */
export interface RunningOperator {
  url: string;
  port: number;
  store: Store;
  stop(): Promise<void>;
}

/**
 * Starts the operator: the HTTP endpoint, the informers and the controllers. Reconciles are
 * idempotent, so a restart (or a watch that replays every object) only repeats no-ops.
 */
export async function startOperator(options: OperatorOptions): Promise<RunningOperator> {
  const log = options.logger ?? rootLogger.child({ component: "operator" });
  const client = options.kubeconfig ? KubeClient.fromFile(options.kubeconfig) : KubeClient.fromDefault();
  const store = new KubeStore(client, log, { namespace: options.namespace });
  const recorder = new EventRecorder(client, "sluice-operator");
  await mkdir(options.dataDir, { recursive: true });
  const artifacts = new ArtifactStore(join(options.dataDir, "artifacts"));
  let ready = false;
  const server = new SourceServer({ store: artifacts, ready: () => ready, logger: log });
  const listening = await server.listen(options.port, options.host ?? "0.0.0.0");
  const advertiseUrl =
    options.advertiseUrl ??
    `http://${options.host && options.host !== "0.0.0.0" ? options.host : "127.0.0.1"}:${listening.port}`;

  const gitSources = new Controller(
    "gitsource",
    async (key, klog) => {
      const { namespace, name } = splitKey(key);
      return reconcileGitSource(gitDeps, namespace ?? "default", name, klog);
    },
    log,
    options.concurrency ?? 2,
  );

  const webhooks = new Map<string, { token: string; path: string; unregister: () => void }>();
  const gitDeps: GitSourceDeps = {
    store,
    artifacts,
    artifactBaseUrl: advertiseUrl,
    workRoot: join(options.dataDir, "git"),
    readSecret: async (namespace, name) => {
      const secret = await client.get<StoredObject & { data?: Record<string, string> }>(
        CoreResources.Secret,
        namespace,
        name,
      );
      if (!secret) return undefined;
      return Object.fromEntries(
        Object.entries(secret.data ?? {}).map(([k, v]) => [k, Buffer.from(v, "base64").toString("utf8")]),
      );
    },
    ensureWebhook: (namespace, name, token) => {
      const key = `${namespace}/${name}`;
      const existing = webhooks.get(key);
      if (existing && existing.token === token) return existing.path;
      existing?.unregister();
      webhooks.delete(key);
      if (!token) return undefined;
      const reg = server.registerWebhook(token, () => gitSources.enqueue(key));
      webhooks.set(key, { token, path: reg.path, unregister: reg.unregister });
      return reg.path;
    },
    event: (obj, type, reason, message) => {
      void recorder.record(
        log.child({ kind: obj.kind, namespace: obj.metadata.namespace, name: obj.metadata.name }),
        obj,
        type,
        reason,
        message,
      );
    },
  };

  // A GitSource is reconciled when its spec or annotations change (status writes of our own
  // bump only resourceVersion and are ignored), and on its interval.
  const seen = new Map<string, string>();
  store.watch("GitSource", (event) => {
    const key = objectKey(event.object);
    if (event.type === "deleted") {
      seen.delete(key);
      webhooks.get(key)?.unregister();
      webhooks.delete(key);
      gitSources.enqueue(key);
      return;
    }
    const fingerprint = JSON.stringify([
      event.object.metadata.generation,
      event.object.metadata.annotations ?? {},
    ]);
    if (seen.get(key) === fingerprint) return;
    seen.set(key, fingerprint);
    gitSources.enqueue(key);
  });
  await store.startWatching("GitSource");
  gitSources.start();
  ready = true;
  log.info({ url: advertiseUrl }, "operator started");

  return {
    url: advertiseUrl,
    port: listening.port,
    store,
    async stop() {
      ready = false;
      await gitSources.stop();
      await store.stop();
      await server.close();
    },
  };
}
