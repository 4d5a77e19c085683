/**
 * What the GitSource cluster tests share: the CRD install, the view of a GitSource they read, and
 * the predicates on its Ready condition.
 */
import { fileURLToPath } from "node:url";
import { kubectlOk } from "./harness.ts";

const crdDir = fileURLToPath(new URL("../../crds/", import.meta.url));

/** A status condition as tests read it. */
export interface Condition {
  type: string;
  status: string;
  reason: string;
  message: string;
}

/** The parts of a GitSource the tests look at. */
export interface GitSourceView {
  metadata: { name: string; generation?: number };
  status?: {
    conditions?: Condition[];
    artifact?: { revision: string; digest: string; url: string };
    lastAppliedRevision?: string;
    lastHandledReconcileAt?: string;
    inventory?: { kind: string; namespace?: string; name: string }[];
    observedGeneration?: number;
    webhookPath?: string;
  };
}

/** The Ready condition, if any. */
export const readyOf = (gs: GitSourceView): Condition | undefined =>
  gs.status?.conditions?.find((c) => c.type === "Ready");

/** Ready, with `revision` both fetched and applied. */
export const readyAt =
  (revision: string) =>
  (gs: GitSourceView): boolean =>
    readyOf(gs)?.status === "True" &&
    gs.status?.lastAppliedRevision === revision &&
    gs.status.artifact?.revision === revision;

/**
 * Installs the generated CRDs (server-side, so parallel test files applying them at once do not
 * conflict) and waits until the API server serves them.
 */
export async function installCrds(): Promise<void> {
  await kubectlOk(["apply", "--server-side", "--force-conflicts", "-f", crdDir]);
  await kubectlOk([
    "wait",
    "--for=condition=Established",
    "crd/gitsources.sluice.dev",
    "crd/networkfunctions.sluice.dev",
    "crd/servicechains.sluice.dev",
    "crd/nodechains.sluice.dev",
    "--timeout=30s",
  ]);
}
