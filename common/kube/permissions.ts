/**
 * The Kubernetes API calls sluice makes, as RBAC permissions: the one list the Helm chart's
 * Roles must grant exactly (test/cluster/rbac.test.ts renders the chart and checks both
 * directions against a real API server). Add a call in the code, add it here, then in
 * charts/sluice/templates/*-rbac.yaml.
 */

import { GROUP } from "../api/meta.ts";

/** An RBAC verb. */
export type Verb = "get" | "list" | "watch" | "create" | "update" | "patch" | "delete";

/**
 * Where a permission applies:
 * - `cluster`: granted cluster-wide by a ClusterRole: a cluster-scoped resource (Nodes), or a
 *   namespaced one read in every namespace (the agent's NodeChains);
 * - `watched`: namespaced resources in the namespaces the operator serves — every namespace
 *   (ClusterRole), or one namespace with `sluice operator --namespace` (a Role there);
 * - `own`: the operator's own namespace (its leader-election Lease), always a Role.
 */
export type PermissionScope = "cluster" | "watched" | "own";

/** One rule: these verbs on this resource (or subresource, `plural/sub`). */
export interface ApiPermission {
  /** API group; "" is the core group. */
  group: string;
  /** Plural resource name, with `/subresource` for a subresource. */
  resource: string;
  verbs: readonly Verb[];
  scope: PermissionScope;
  /** Only the object named by the operator's `--leader-elect-lease`, when set. */
  onlyLeaderLease?: true;
  /** The code that makes the call. */
  why: string;
}

const sluice = GROUP;
/** Informers list and watch; a direct read is a get. Granting get beside list reveals nothing new. */
const read: readonly Verb[] = ["get", "list", "watch"];
/*
 * Server-side apply is a PATCH, but when the object does not exist yet the API server creates it
 * and authorizes the request as `create` too: every kind the operator applies needs both.
 */

/** What `sluice operator` calls (operator/src/operator.ts and the code it runs). */
export const OPERATOR_PERMISSIONS: readonly ApiPermission[] = [
  {
    group: sluice,
    resource: "gitsources",
    verbs: [...read, "create", "patch", "delete"],
    scope: "watched",
    why: "informer + fresh get (kube/store.ts); a repository may define GitSources: server-side apply (create + patch) and prune (gitsource/reconciler.ts reconcileApply)",
  },
  {
    group: sluice,
    resource: "gitsources/status",
    verbs: ["patch"],
    scope: "watched",
    why: "status written once per reconcile (gitsource/reconciler.ts writeStatus)",
  },
  {
    group: sluice,
    resource: "networkfunctions",
    verbs: [...read, "create", "patch", "delete"],
    scope: "watched",
    why: "informer (kube/store.ts); applied from Git (create + patch) and pruned (gitsource/reconciler.ts)",
  },
  {
    group: sluice,
    resource: "servicechains",
    verbs: [...read, "create", "patch", "delete"],
    scope: "watched",
    why: "informer + fresh get (kube/store.ts); applied from Git (create + patch) and pruned (gitsource/reconciler.ts)",
  },
  {
    group: sluice,
    resource: "servicechains/status",
    verbs: ["patch"],
    scope: "watched",
    why: "rollout status (servicechain/reconciler.ts)",
  },
  {
    group: sluice,
    resource: "servicechains/finalizers",
    verbs: ["update"],
    scope: "watched",
    why: "NodeChains carry an owner reference with blockOwnerDeletion to their ServiceChain (servicechain/reconciler.ts); API servers with the OwnerReferencesPermissionEnforcement admission plugin require this",
  },
  {
    group: sluice,
    resource: "nodechains",
    verbs: [...read, "create", "patch", "delete"],
    scope: "watched",
    why: "informer; one NodeChain per node written with server-side apply (create + patch), removed when a node leaves the chain (servicechain/reconciler.ts)",
  },
  {
    group: "",
    resource: "nodes",
    verbs: read,
    scope: "cluster",
    why: "informer: the nodes a chain's nodeSelector picks (servicechain/reconciler.ts)",
  },
  {
    group: "",
    resource: "secrets",
    verbs: ["get"],
    scope: "watched",
    why: "a GitSource's secretRef and webhookSecretRef, read by name only (operator.ts readSecret)",
  },
  {
    group: "",
    resource: "events",
    verbs: ["create", "patch"],
    scope: "watched",
    why: "Events on the objects it reconciles; repeats patch the count (kube/events.ts)",
  },
  {
    group: "coordination.k8s.io",
    resource: "leases",
    verbs: ["create"],
    scope: "own",
    why: "the first replica creates the leader Lease (kube/leader.ts); create cannot be limited by name",
  },
  {
    group: "coordination.k8s.io",
    resource: "leases",
    verbs: ["get", "update"],
    scope: "own",
    onlyLeaderLease: true,
    why: "acquire, renew and release the leader Lease (kube/leader.ts)",
  },
];

/** What `sluice agent` calls (bin/main.ts agent, node-agent/src/agent/agent.ts). */
export const AGENT_PERMISSIONS: readonly ApiPermission[] = [
  {
    group: sluice,
    resource: "nodechains",
    verbs: read,
    scope: "cluster",
    why: "informer with the label selector sluice.dev/node=<node> (bin/main.ts agent, agent.ts); RBAC cannot limit a list to a label, so every NodeChain is readable",
  },
  {
    group: sluice,
    resource: "nodechains/status",
    verbs: ["patch"],
    scope: "cluster",
    why: "phase, programs, self-test and errors of this node (agent.ts)",
  },
];
