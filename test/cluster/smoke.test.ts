import { fileURLToPath } from "node:url";
import {
  CustomObjectsApi,
  KubeConfig,
  PatchStrategy,
  Watch,
  setHeaderOptions,
} from "@kubernetes/client-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestNamespace, kubeConfig, kubectl, kubectlOk } from "./harness.ts";

const crdFile = fileURLToPath(new URL("./fixtures/widget-crd.yaml", import.meta.url));
const group = "smoke.sluice.dev";
const version = "v1alpha1";
const plural = "widgets";
const namespace = createTestNamespace("smoke");

interface WatchEvent {
  phase: string;
  object: { metadata?: { name?: string }; spec?: { size?: number }; status?: { phase?: string } };
}

/** Records every event of a watch, and lets a test wait for the first one that matches. */
class EventLog {
  readonly events: WatchEvent[] = [];
  private waiters: Array<() => void> = [];
  /** Set when the watch ends; a watch that ends early fails the waiting test at once. */
  private ended: string | undefined;

  push(event: WatchEvent): void {
    this.events.push(event);
    this.wakeAll();
  }

  end(err: unknown): void {
    this.ended = err ? String((err as Error).message ?? err) : "closed by the server";
    this.wakeAll();
  }

  private wakeAll(): void {
    for (const wake of this.waiters.splice(0)) wake();
  }

  async waitFor(what: string, match: (e: WatchEvent) => boolean, timeoutMs = 10_000): Promise<WatchEvent> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = this.events.find(match);
      if (found) return found;
      if (this.ended !== undefined) throw new Error(`watch ended before ${what}: ${this.ended}`);
      const left = deadline - Date.now();
      if (left <= 0) {
        const seen = this.events.map((e) => `${e.phase} ${e.object.metadata?.name}`).join(", ");
        throw new Error(`no watch event ${what} within ${timeoutMs} ms (seen: ${seen || "none"})`);
      }
      await new Promise<void>((wake) => {
        const timer = setTimeout(wake, left);
        this.waiters.push(() => (clearTimeout(timer), wake()));
      });
    }
  }
}

/**
 * Starts a watch on the test namespace's widgets. Right after a CRD is Established its watch
 * cache may still be initializing, and the API server answers 429 with Retry-After until it is;
 * informers retry, and so does this.
 */
async function watchWidgets(kc: KubeConfig, log: EventLog): Promise<AbortController> {
  const deadline = Date.now() + 20_000;
  for (;;) {
    let started = false;
    let refused: { statusCode?: number; message?: string } | undefined;
    const controller = await new Watch(kc).watch(
      `/apis/${group}/${version}/namespaces/${namespace}/${plural}`,
      {},
      (phase, object: WatchEvent["object"]) => log.push({ phase, object }),
      (err) => (started ? log.end(err) : (refused = err ?? { message: "closed at once" })),
    );
    if (refused === undefined) {
      started = true;
      return controller;
    }
    if (refused.statusCode !== 429 || Date.now() > deadline) {
      throw new Error(`watch on ${plural} refused: ${refused.statusCode ?? ""} ${refused.message ?? ""}`);
    }
    await new Promise((ok) => setTimeout(ok, 200));
  }
}

describe("a real kube-apiserver serves a CRD to kubectl and client-node", () => {
  const kc = kubeConfig();
  const customObjects = kc.makeApiClient(CustomObjectsApi);
  const watched = new EventLog();
  let stopWatch: AbortController | undefined;

  beforeAll(async () => {
    await kubectlOk(["apply", "-f", crdFile]);
    await kubectlOk(["wait", "--for=condition=Established", "crd/widgets.smoke.sluice.dev", "--timeout=30s"]);
    stopWatch = await watchWidgets(kc, watched);
  });

  afterAll(() => stopWatch?.abort());

  it("creates a Widget through client-node and the watch sees it ADDED, without status", async () => {
    // The API server holds a create that comes within 2 s of Established for 2 s (so that HA
    // peers see the CRD too): this is the slowest step of the file, and it is expected.
    const created = await customObjects.createNamespacedCustomObject({
      group,
      version,
      namespace,
      plural,
      // The status subresource makes the main endpoint ignore status: it must not be stored.
      body: {
        apiVersion: `${group}/${version}`,
        kind: "Widget",
        metadata: { name: "w1" },
        spec: { size: 3 },
        status: { phase: "Ready" },
      },
    });
    expect(created.metadata.uid).toBeTruthy();
    expect(created.status).toBeUndefined();

    const added = await watched.waitFor(
      "ADDED w1",
      (e) => e.phase === "ADDED" && e.object.metadata?.name === "w1",
    );
    expect(added.object.spec?.size).toBe(3);
  });

  it("writes status through the /status subresource; kubectl reads it back and the watch sees MODIFIED", async () => {
    await customObjects.patchNamespacedCustomObjectStatus(
      { group, version, namespace, plural, name: "w1", body: { status: { phase: "Ready" } } },
      setHeaderOptions("Content-Type", PatchStrategy.MergePatch),
    );

    const fromKubectl = JSON.parse(await kubectlOk(["get", "widget", "w1", "-n", namespace, "-o", "json"]));
    expect(fromKubectl.status).toEqual({ phase: "Ready" });
    expect(fromKubectl.spec).toEqual({ size: 3 });

    const modified = await watched.waitFor(
      "MODIFIED w1 with status Ready",
      (e) => e.phase === "MODIFIED" && e.object.status?.phase === "Ready",
    );
    expect(modified.object.metadata?.name).toBe("w1");
  });

  it("kubectl get widgets shows the printer columns", async () => {
    const table = await kubectlOk(["get", "widgets", "-n", namespace]);
    const [header, ...rows] = table.trim().split("\n");
    expect(header?.split(/\s+/)).toEqual(["NAME", "SIZE", "PHASE", "AGE"]);
    expect(rows).toHaveLength(1);
    expect(rows[0]?.split(/\s+/).slice(0, 3)).toEqual(["w1", "3", "Ready"]);
  });

  it("the API server rejects a Widget that breaks the CRD schema, naming the field", async () => {
    const bad = {
      apiVersion: `${group}/${version}`,
      kind: "Widget",
      metadata: { name: "w0", namespace },
      spec: { size: 0 },
    };
    const result = await kubectl(["apply", "-f", "-"], { input: JSON.stringify(bad) });
    expect(result.code).not.toBe(0);
    expect(result.stderr).toMatch(/spec\.size/);
  });
});
