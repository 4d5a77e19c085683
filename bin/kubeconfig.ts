/**
 * Finds and reads the kubeconfig of `sluice operator` and `sluice agent` before they start, so
 * that a missing or unreadable one ends the command with one line saying which and what to do,
 * not with a stack trace or an endless retry against a default address.
 */
import { existsSync, readFileSync } from "node:fs";
import { homedir } from "node:os";
import { delimiter, join } from "node:path";
import { KubeConfig } from "@kubernetes/client-node";
import { errorCode } from "./cli.ts";

/** Where a pod finds its service account's token, as client-node looks for it. */
const SERVICE_ACCOUNT_TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token";

/** The kubeconfig found, or why none can be used. */
export type KubeconfigCheck = { ok: true; source: string } | { ok: false; problem: string };

/**
 * Checks the kubeconfig the command will use, in client-node's order: `--kubeconfig`, then
 * `$KUBECONFIG` (the first of a list is the base), then `~/.kube/config`, then the in-cluster
 * service account.
 */
export function checkKubeconfig(flag: string | undefined): KubeconfigCheck {
  if (flag !== undefined) return checkFile(flag, "--kubeconfig");
  const fromEnv = (process.env.KUBECONFIG ?? "").split(delimiter).filter(Boolean);
  if (fromEnv.length > 0) {
    // Later files are merged into the first, which must name the cluster.
    for (const [i, file] of fromEnv.entries()) {
      const check = checkFile(file, "$KUBECONFIG", i === 0);
      if (!check.ok) return check;
    }
    return { ok: true, source: fromEnv.join(delimiter) };
  }
  const home = join(homedir(), ".kube", "config");
  if (existsSync(home)) return checkFile(home, "~/.kube/config");
  if (existsSync(SERVICE_ACCOUNT_TOKEN)) {
    if (!process.env.KUBERNETES_SERVICE_HOST || !process.env.KUBERNETES_SERVICE_PORT) {
      return {
        ok: false,
        problem: `found ${SERVICE_ACCOUNT_TOKEN}, but KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set`,
      };
    }
    return { ok: true, source: "in-cluster service account" };
  }
  return {
    ok: false,
    problem:
      "no kubeconfig: give --kubeconfig FILE, set $KUBECONFIG, create ~/.kube/config, or run in a pod with a service account",
  };
}

function checkFile(path: string, via: string, needsCluster = true): KubeconfigCheck {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    const code = errorCode(err);
    const why =
      code === "ENOENT" ? "no such file" : code === "EISDIR" ? "a directory" : (code ?? String(err));
    return { ok: false, problem: `cannot read kubeconfig ${path} (${via}): ${why}` };
  }
  const config = new KubeConfig();
  try {
    config.loadFromString(text);
  } catch (err) {
    const message = (err instanceof Error ? err.message : String(err)).split("\n")[0];
    return { ok: false, problem: `kubeconfig ${path} (${via}) is not valid: ${message}` };
  }
  if (!needsCluster) return { ok: true, source: path };
  const cluster = config.getCurrentCluster();
  if (!cluster)
    return { ok: false, problem: `kubeconfig ${path} (${via}) has no current context with a cluster` };
  if (!URL.canParse(cluster.server)) {
    return {
      ok: false,
      problem: `kubeconfig ${path} (${via}): cluster ${cluster.name} has no valid server URL`,
    };
  }
  return { ok: true, source: path };
}
