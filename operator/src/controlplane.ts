import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { GitSource } from "../../common/api/index.ts";
import type { ArtifactStore } from "../../common/artifact/index.ts";
import type { Logger } from "../../common/log.ts";
import type { Store, StoreKind, StoreObject } from "../../common/store.ts";
import type { SourcePolicy } from "./gitsource/policy.ts";
import { reconcileGitSource, type GitSourceDeps } from "./gitsource/reconciler.ts";
import { WriteCoalescer } from "../../common/kube/coalesce.ts";
import { Controller, objectKey, splitKey } from "../../common/kube/controller.ts";
import type { SourceServer } from "./server/index.ts";
import { reconcileServiceChain, serviceChainKeysFor } from "./servicechain/index.ts";
import { ArtifactReferences, artifactOfUrl } from "./servicechain/artifact-refs.ts";
import { sourceTreeDigest } from "./servicechain/source-tree.ts";

/** Source-tree digests kept in memory (each a few dozen bytes). */
const MAX_CACHED_TREES = 4_096;
/** How long a chain waits for a GitSource's written status to reach the cache. */
const STATUS_CATCH_UP_MS = 10_000;

/** What the controllers need; the cluster operator and single-host mode each provide it. */
export interface ControlPlaneOptions {
  store: Store;
  artifacts: ArtifactStore;
  server: SourceServer;
  /** URL agents use to reach `server`. */
  advertiseUrl: string;
  /** Directory for working clones. */
  dataDir: string;
  /** Reads a Secret's data; absent in single-host mode. */
  readSecret?: GitSourceDeps["readSecret"];
  /** What GitSources may reach (namespaces, URL schemes and hosts); absent: the safe defaults. */
  policy?: SourcePolicy;
  /** Where new webhook salts come from; default random (see {@link GitSourceDeps}). */
  newWebhookSalt?: GitSourceDeps["newWebhookSalt"];
  /** Records an event (the log line is written by the caller's recorder too). */
  event: (obj: StoreObject, type: "Normal" | "Warning", reason: string, message: string) => void;
  log: Logger;
  concurrency?: number;
  now?: () => Date;
  /**
   * Least time between two status writes of one ServiceChain while its rollout is under way
   * (default 1000 ms; 0 writes every change). Verdicts and final states are written at once.
   */
  statusWriteIntervalMs?: number;
  /**
   * How long a chain waits after a change of one of its NodeChains before it is reconciled
   * (default 200 ms; the first change starts the wait, later ones join it).
   */
  nodeReportBatchMs?: number;
}

/** The running controllers. */
export interface ControlPlane {
  gitSources: Controller;
  serviceChains: Controller;
  stop(): Promise<void>;
}

/**
 * Wires the GitSource and ServiceChain controllers to a store: every change that can matter to
 * an object queues it, reconciles are idempotent, and both run the same way against the
 * Kubernetes API and against memory.
 */
export function startControlPlane(options: ControlPlaneOptions): ControlPlane {
  const { store, server, log } = options;
  const now = options.now ?? (() => new Date());
  // GitSources applying a revision right now, and the chains waiting for each to finish: a
  // chain is planned from one commit's objects, never from a mix (see ServiceChainDeps).
  const applying = new Map<string, number>();
  const waiting = new Map<string, Set<string>>();
  const gitSources = new Controller(
    "gitsource",
    async (key, klog) => {
      const { namespace, name } = splitKey(key);
      const sourceKey = `${namespace ?? "default"}/${name}`;
      applying.set(sourceKey, (applying.get(sourceKey) ?? 0) + 1);
      try {
        return await reconcileGitSource(gitDeps, namespace ?? "default", name, klog);
      } finally {
        const left = (applying.get(sourceKey) ?? 1) - 1;
        if (left > 0) applying.set(sourceKey, left);
        else {
          applying.delete(sourceKey);
          for (const chain of waiting.get(sourceKey) ?? []) serviceChains.enqueue(chain);
          waiting.delete(sourceKey);
        }
      }
    },
    log,
    options.concurrency ?? 2,
  );
  // The artifact each GitSource last put in its status (see ServiceChainDeps.artifactWritten).
  const written = new Map<string, { digest: string; atMs: number }>();
  const artifactWritten = (namespace: string, name: string): string | undefined => {
    const w = written.get(`${namespace}/${name}`);
    // A status write that failed never arrives; the next reconcile of the source writes again.
    return w && Date.now() - w.atMs <= STATUS_CATCH_UP_MS ? w.digest : undefined;
  };
  const sourceApplying = (namespace: string, name: string, chainKey: string): boolean => {
    const sourceKey = `${namespace}/${name}`;
    if (!applying.has(sourceKey)) return false;
    let chains = waiting.get(sourceKey);
    if (!chains) waiting.set(sourceKey, (chains = new Set()));
    chains.add(chainKey);
    return true;
  };
  // The tree each `path` function compiles from, hashed once per (artifact, directory).
  const trees = new Map<string, string>();
  const sourceTree = async (namespace: string, name: string, digest: string, dir: string) => {
    const key = `${namespace}/${name}/${digest}:${dir}`;
    const known = trees.get(key);
    if (known) return known;
    const stored = await options.artifacts.get(namespace, name, digest);
    if (!stored) return undefined;
    const tree = sourceTreeDigest(await readFile(stored.path), dir);
    if (trees.size >= MAX_CACHED_TREES) trees.clear();
    trees.set(key, tree);
    return tree;
  };
  const artifactAvailable = async (url: string, digest: string) => {
    const a = artifactOfUrl(url);
    return a !== undefined && (await options.artifacts.get(a.namespace, a.name, digest)) !== undefined;
  };
  // Artifacts that live plans name stay stored and served (see ArtifactReferences).
  const references = new ArtifactReferences();
  const referenced = (namespace: string, name: string, digest: string) =>
    references.has(namespace, name, digest);
  server.retainArtifacts(referenced);
  options.artifacts.retain = referenced;
  const unwatchReferences = (["NodeChain", "ServiceChain"] as const).map((kind) =>
    store.watch(kind, (event) => {
      const obj = event.object;
      const key = `${obj.kind}/${objectKey(obj)}`;
      if (event.type === "deleted") references.delete(key);
      else if (obj.kind === "NodeChain") references.set(key, [obj.spec]);
      else if (obj.kind === "ServiceChain") references.set(key, [obj.status.lastGoodPlan]);
    }),
  );
  const statusWrites = new WriteCoalescer(options.statusWriteIntervalMs ?? 1000, () => now().getTime());
  const serviceChains = new Controller(
    "servicechain",
    async (key, klog) => {
      const { namespace, name } = splitKey(key);
      return reconcileServiceChain(
        {
          store,
          event: options.event,
          now,
          sourceApplying,
          artifactWritten,
          sourceTree,
          artifactAvailable,
          statusWrites,
        },
        namespace ?? "default",
        name,
        klog,
      );
    },
    log,
    options.concurrency ?? 2,
  );

  const webhooks = new Map<string, { token: string; salt: string; path: string; unregister: () => void }>();
  const gitDeps: GitSourceDeps = {
    store,
    artifacts: options.artifacts,
    artifactBaseUrl: options.advertiseUrl,
    workRoot: join(options.dataDir, "git"),
    readSecret: options.readSecret,
    ensureWebhook: (namespace, name, hook) => {
      const key = `${namespace}/${name}`;
      const existing = webhooks.get(key);
      if (existing && hook && existing.token === hook.token && existing.salt === hook.salt)
        return existing.path;
      existing?.unregister();
      webhooks.delete(key);
      if (!hook) return undefined;
      const reg = server.registerWebhook(hook.token, hook.salt, () => gitSources.enqueue(key));
      webhooks.set(key, { ...hook, path: reg.path, unregister: reg.unregister });
      return reg.path;
    },
    publishArtifact: (namespace, name, digest) => {
      written.set(`${namespace}/${name}`, { digest, atMs: Date.now() });
      server.publishArtifact(namespace, name, digest);
    },
    policy: options.policy,
    ...(options.newWebhookSalt ? { newWebhookSalt: options.newWebhookSalt } : {}),
    event: options.event,
    now,
  };

  // A GitSource is reconciled when its spec or annotations change (our own status writes only
  // bump resourceVersion and are ignored), and then on its interval.
  const seen = new Map<string, string>();
  const unwatchGit = store.watch("GitSource", (event) => {
    const key = objectKey(event.object);
    const { namespace, name } = splitKey(key);
    if (event.type === "deleted") {
      seen.delete(key);
      written.delete(key);
      webhooks.get(key)?.unregister();
      webhooks.delete(key);
      server.withdrawArtifacts(namespace ?? "default", name);
      gitSources.enqueue(key);
      return;
    }
    // After a restart, what status names is what was published (nothing else is served).
    const artifact = GitSource.shape.status.safeParse(event.object.status).data?.artifact;
    if (artifact) server.publishArtifact(namespace ?? "default", name, artifact.digest);
    const fingerprint = JSON.stringify([
      event.object.metadata.generation,
      event.object.metadata.annotations ?? {},
    ]);
    if (seen.get(key) !== fingerprint) {
      seen.set(key, fingerprint);
      gitSources.enqueue(key);
    }
  });
  // Anything a chain depends on (its functions, their sources, nodes, its NodeChains' status)
  // queues the chains it concerns.
  // A NodeChain change (mostly an agent's report) queues its chain a moment later, so that the
  // reports of a rollout's wave make one reconcile rather than one each: a reconcile reads every
  // NodeChain of the chain, which on a thousand nodes is the operator's main cost.
  const nodeReportBatchMs = options.nodeReportBatchMs ?? 200;
  const chainInputs: StoreKind[] = ["ServiceChain", "NetworkFunction", "GitSource", "Node", "NodeChain"];
  const unwatchChains = chainInputs.map((kind) =>
    store.watch(kind, (event) => {
      void serviceChainKeysFor(event, store)
        .then((keys) =>
          keys.forEach((k) =>
            kind === "NodeChain"
              ? serviceChains.queue.addAfter(k, nodeReportBatchMs)
              : serviceChains.enqueue(k),
          ),
        )
        .catch((err) => log.error({ err, kind }, "cannot map change to chains"));
    }),
  );
  gitSources.start();
  serviceChains.start();
  return {
    gitSources,
    serviceChains,
    async stop() {
      unwatchGit();
      unwatchChains.forEach((u) => u());
      unwatchReferences.forEach((u) => u());
      for (const w of webhooks.values()) w.unregister();
      // A replica that does not lead serves no artifact: it built none.
      server.withdrawArtifacts();
      await Promise.all([gitSources.stop(), serviceChains.stop()]);
    },
  };
}
