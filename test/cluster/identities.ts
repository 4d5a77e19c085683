/**
 * The identities the Helm chart gives sluice, for tests that run the operator and the agent as
 * processes: the chart's ServiceAccounts and RBAC rendered with `helm template` and applied, and
 * per process a kubeconfig holding a token from the TokenRequest API (what the kubelet mounts into
 * the chart's pods) — never the admin kubeconfig, which stays with the test's own setup and
 * assertions.
 */
import { execFile } from "node:child_process";
import { chown } from "node:fs/promises";
import { join } from "node:path";
import {
  findManifest,
  parseManifests,
  renderChart,
  serviceAccountKubeConfig,
  writeKubeConfig,
} from "./chart-support.ts";
import { binDir, kubectl, kubectlOk } from "./harness.ts";

/** The chart's ServiceAccounts and RBAC, applied for one release in one namespace. */
export interface ChartIdentities {
  release: string;
  /** The release namespace: both ServiceAccounts and the leader-election Role live here. */
  namespace: string;
  operatorServiceAccount: string;
  agentServiceAccount: string;
  /** The Lease the operator's Role lets it hold. */
  leaseName: string;
  /** The ValidatingAdmissionPolicy that lets an agent write only its own node's status. */
  nodeScopePolicy: string;
  /** Deletes what the render made (the cluster-scoped roles outlive the namespace otherwise). */
  remove(): Promise<void>;
}

/** Options of {@link installChartIdentities}. */
export interface ChartIdentityOptions {
  /** `operator.watchNamespace`: the operator's namespaced rights in this namespace only. */
  watchNamespace?: string;
}

/**
 * Renders the chart's ServiceAccounts, operator RBAC, agent RBAC and the agent's node-scoped
 * status policy for release `release` in `namespace` and applies them (server-side, as
 * `helm install` would create them).
 */
export async function installChartIdentities(
  release: string,
  namespace: string,
  options: ChartIdentityOptions = {},
): Promise<ChartIdentities> {
  const rendered = await renderChart(release, namespace, {
    values: { operator: { watchNamespace: options.watchNamespace ?? "" } },
    showOnly: [
      "templates/serviceaccounts.yaml",
      "templates/operator-rbac.yaml",
      "templates/agent-rbac.yaml",
      // Agents write status only for the node their token is bound to, as in an install.
      "templates/agent-admission.yaml",
    ],
  });
  const manifests = parseManifests(rendered);
  const accountOf = (component: string) => {
    const found = manifests.filter(
      (m) => m.kind === "ServiceAccount" && m.metadata.labels?.["app.kubernetes.io/component"] === component,
    );
    if (found.length !== 1)
      throw new Error(`the chart rendered ${found.length} ${component} ServiceAccounts`);
    return found[0]!.metadata.name;
  };
  // The Role that grants the Lease names it: the one Lease the operator may hold.
  const leaseName = manifests
    .filter((m) => m.kind === "Role")
    .flatMap((m) => (m.rules ?? []) as { resources?: string[]; resourceNames?: string[] }[])
    .find((rule) => rule.resources?.includes("leases") && rule.resourceNames?.length)?.resourceNames?.[0];
  if (!leaseName) throw new Error("the chart's operator Role names no Lease");
  const nodeScopePolicy = findManifest(manifests, "ValidatingAdmissionPolicy").metadata.name;
  await kubectlOk(["apply", "--server-side", "-f", "-"], { input: rendered });
  return {
    release,
    namespace,
    operatorServiceAccount: accountOf("operator"),
    agentServiceAccount: accountOf("agent"),
    leaseName,
    nodeScopePolicy,
    remove: async () => {
      await kubectl(["delete", "--ignore-not-found", "--wait=false", "-f", "-"], { input: rendered });
    },
  };
}

/** Options of {@link writeServiceAccountKubeConfig}. */
export interface TokenOptions {
  /**
   * Bind the token to Node `name` (TokenRequest boundObjectRef, as the kubelet binds a pod's
   * token): the API server puts the node's name into the token's identity, and the token dies
   * with the Node object. The Node must exist.
   */
  boundToNode?: string;
  /** chown the file to this uid (and gid), for a process that runs as that user. */
  owner?: number;
}

/**
 * Writes `<dir>/<name>.kubeconfig` (0600) that authenticates as ServiceAccount `serviceAccount`
 * of `namespace` with a fresh TokenRequest token; returns its path.
 */
export async function writeServiceAccountKubeConfig(
  dir: string,
  name: string,
  namespace: string,
  serviceAccount: string,
  options: TokenOptions = {},
): Promise<string> {
  const kc = await serviceAccountKubeConfig(namespace, serviceAccount, {
    boundToNode: options.boundToNode,
  });
  const path = await writeKubeConfig(kc, dir, name);
  if (options.owner !== undefined) await chown(path, options.owner, options.owner);
  return path;
}

/** Who the API server says a kubeconfig's credentials are (`kubectl auth whoami`). */
export interface WhoAmI {
  username: string;
  groups: string[];
  extra: Record<string, string[]>;
}

/** `kubectl auth whoami` with the kubeconfig file `kubeconfig` (not the admin one). */
export function whoAmI(kubeconfig: string): Promise<WhoAmI> {
  return new Promise((resolve, reject) => {
    execFile(
      join(binDir(), "kubectl"),
      [`--kubeconfig=${kubeconfig}`, "auth", "whoami", "-o", "json"],
      { timeout: 30_000 },
      (err, stdout, stderr) => {
        if (err)
          return reject(new Error(`kubectl auth whoami (${kubeconfig}): ${stderr.trim() || err.message}`));
        const info = (
          JSON.parse(stdout) as {
            status: { userInfo: { username: string; groups?: string[]; extra?: Record<string, string[]> } };
          }
        ).status.userInfo;
        resolve({ username: info.username, groups: info.groups ?? [], extra: info.extra ?? {} });
      },
    );
  });
}

/** The username the API server gives ServiceAccount `name` of `namespace`. */
export const serviceAccountUser = (namespace: string, name: string) =>
  `system:serviceaccount:${namespace}:${name}`;

/** The token identity's key that carries the node a token is bound to. */
export const NODE_NAME_EXTRA = "authentication.kubernetes.io/node-name";
