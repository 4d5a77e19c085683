/**
 * The chart's RBAC is the least the operator and the agent need. The API calls they make are
 * listed once, in common/kube/permissions.ts; this file applies the chart's ServiceAccounts
 * and roles to a real kube-apiserver and checks, as each ServiceAccount:
 * - with `kubectl auth can-i`: every listed call is allowed, and a list of calls it must not make
 *   (reading all Secrets, touching Pods, deletecollection, other verbs) is denied;
 * - with the API server's own SelfSubjectRulesReview (what `kubectl auth can-i --list` shows):
 *   in each namespace the grants are exactly the listed ones — nothing more;
 * - by running the real operator and the agent's store with only those rights: a chain goes
 *   from Git to Ready on a node, and nothing is refused along the way.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { KubeApiError, KubeClient } from "../../common/kube/client.ts";
import { leaderTimings } from "../../common/kube/leader.ts";
import {
  AGENT_PERMISSIONS,
  OPERATOR_PERMISSIONS,
  type ApiPermission,
} from "../../common/kube/permissions.ts";
import { KubeStore } from "../../common/kube/store.ts";
import { startOperator, type RunningOperator } from "../../operator/src/operator.ts";
import { createTestRepo, type TestRepo } from "../support/git-servers.ts";
import { renderChart, serviceAccountKubeConfig, writeKubeConfig } from "./chart-support.ts";
import { createTestNamespace, kubectl, kubectlOk } from "./harness.ts";
import { installCrds } from "./sluice-support.ts";

const releaseNamespace = createTestNamespace("rbac");
const watchedNamespace = createTestNamespace("rbac-watched");
const otherNamespace = createTestNamespace("rbac-other");

/** How one release was installed, and what that means for where its rights apply. */
interface Release {
  name: string;
  /** Empty: the operator serves every namespace. */
  watchNamespace: string;
  operatorSA: string;
  agentSA: string;
  leaseName: string;
  rendered?: string;
}
/** Default values: cluster-wide operator. */
const wide: Release = {
  name: "wide",
  watchNamespace: "",
  operatorSA: "wide-sluice-operator",
  agentSA: "wide-sluice-agent",
  leaseName: "wide-sluice-operator",
};
/** `operator.watchNamespace`: the operator's namespaced rights only in that namespace. */
const narrow: Release = {
  name: "narrow",
  watchNamespace: watchedNamespace,
  operatorSA: "narrow-sluice-operator",
  agentSA: "narrow-sluice-agent",
  leaseName: "narrow-sluice-operator",
};

const asUser = (sa: string) => `--as=system:serviceaccount:${releaseNamespace}:${sa}`;

/** "verb resource.group[/name]" — one thing a subject may do, as the tests compare them. */
type Grant = string;

function grantOf(verb: string, group: string, resource: string, name = ""): Grant {
  return `${verb} ${resource}${group ? `.${group}` : ""}${name ? `/${name}` : ""}`;
}

/** Does a listed permission apply in `namespace` for `release`? */
function applies(p: ApiPermission, release: Release, namespace: string): boolean {
  if (p.scope === "cluster") return true;
  if (p.scope === "own") return namespace === releaseNamespace;
  return release.watchNamespace === "" || release.watchNamespace === namespace;
}

/** The grants the permission list says a subject needs in `namespace`. */
function expectedGrants(perms: readonly ApiPermission[], release: Release, namespace: string): Grant[] {
  const grants = perms
    .filter((p) => applies(p, release, namespace))
    .flatMap((p) =>
      p.verbs.map((v) => grantOf(v, p.group, p.resource, p.onlyLeaderLease ? release.leaseName : "")),
    );
  return [...new Set(grants)].sort();
}

interface ResourceRule {
  verbs: string[];
  apiGroups?: string[];
  resources?: string[];
  resourceNames?: string[];
}

/** What the API server says `user` may do in `namespace` (SelfSubjectRulesReview), as grants. */
async function rulesReview(user: string, namespace: string): Promise<Set<Grant>> {
  const review = {
    apiVersion: "authorization.k8s.io/v1",
    kind: "SelfSubjectRulesReview",
    spec: { namespace },
  };
  // No client-side validation: it would list CRDs, which the subject may not.
  const out = await kubectlOk(["create", user, "--validate=false", "-o", "json", "-f", "-"], {
    input: JSON.stringify(review),
  });
  const status = (JSON.parse(out) as { status: { resourceRules: ResourceRule[]; incomplete?: boolean } })
    .status;
  expect(status.incomplete ?? false).toBe(false);
  const grants = new Set<Grant>();
  for (const rule of status.resourceRules) {
    for (const group of rule.apiGroups ?? [""])
      for (const resource of rule.resources ?? [])
        for (const verb of rule.verbs)
          for (const name of rule.resourceNames?.length ? rule.resourceNames : [""])
            grants.add(grantOf(verb, group, resource, name));
  }
  return grants;
}

/** What a ServiceAccount of the release may do beyond what every ServiceAccount may do. */
async function grantedTo(sa: string, namespace: string): Promise<Grant[]> {
  const [mine, everyone] = await Promise.all([
    rulesReview(asUser(sa), namespace),
    // An account no role is bound to: what the bootstrap policy gives every ServiceAccount.
    rulesReview(asUser("sluice-rbac-test-nobody"), namespace),
  ]);
  return [...mine].filter((g) => !everyone.has(g)).sort();
}

/** `kubectl auth can-i` for a grant; "verb resource.group/name" or "verb resource.group/sub" + subresource. */
async function canI(sa: string, namespace: string, grant: Grant): Promise<boolean> {
  const [verb, target] = grant.split(" ") as [string, string];
  const [resourceWithGroup, name] = target.split("/");
  const [plural, ...groupParts] = (resourceWithGroup ?? "").split(".");
  const group = groupParts.join(".");
  const subresources = new Set(["status", "finalizers", "token", "log", "scale", "eviction"]);
  const args = ["auth", "can-i", verb];
  if (name && subresources.has(name))
    args.push(`${plural}${group ? `.${group}` : ""}`, `--subresource=${name}`);
  else args.push(target);
  const result = await kubectl([...args, "-n", namespace, asUser(sa)]);
  const answer = result.stdout.trim();
  if (answer !== "yes" && answer !== "no") {
    throw new Error(`kubectl ${args.join(" ")}: unexpected answer: ${result.stdout}${result.stderr}`);
  }
  return answer === "yes";
}

/** Runs `check` over `items`, a few at a time (each is a kubectl process on a small machine). */
async function eachLimited<T, R>(items: readonly T[], check: (item: T) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      results[i] = await check(items[i]!);
    }
  };
  await Promise.all(Array.from({ length: 6 }, worker));
  return results;
}

/** Grants from the permission list as kubectl resource arguments: subresources use `/sub`. */
const asCanI = (perms: readonly ApiPermission[], release: Release, namespace: string): Grant[] =>
  perms
    .filter((p) => applies(p, release, namespace))
    .flatMap((p) =>
      p.verbs.map((v) => {
        const [plural, sub] = p.resource.split("/");
        const name = sub ?? (p.onlyLeaderLease ? release.leaseName : "");
        return grantOf(v, p.group, plural!, name);
      }),
    );

beforeAll(async () => {
  await installCrds();
  for (const release of [wide, narrow]) {
    release.rendered = await renderChart(release.name, releaseNamespace, {
      values: { operator: { watchNamespace: release.watchNamespace } },
      showOnly: [
        "templates/serviceaccounts.yaml",
        "templates/operator-rbac.yaml",
        "templates/agent-rbac.yaml",
      ],
    });
    await kubectlOk(["apply", "--server-side", "-f", "-"], { input: release.rendered });
  }
});

afterAll(async () => {
  // ClusterRoles and their bindings outlive the test namespace; the namespaced rest goes with it.
  for (const release of [wide, narrow]) {
    if (release.rendered) {
      await kubectl(["delete", "--ignore-not-found", "--wait=false", "-f", "-"], { input: release.rendered });
    }
  }
});

describe("the rights the chart grants, as kubectl auth can-i sees them", () => {
  it("allow every API call the operator makes", async () => {
    const calls = asCanI(OPERATOR_PERMISSIONS, wide, releaseNamespace);
    const answers = await eachLimited(calls, (g) => canI(wide.operatorSA, releaseNamespace, g));
    expect(calls.filter((_, i) => !answers[i])).toEqual([]);
    expect(calls.length).toBeGreaterThan(25);
  });

  it("allow every API call the agent makes", async () => {
    const calls = asCanI(AGENT_PERMISSIONS, wide, releaseNamespace);
    const answers = await eachLimited(calls, (g) => canI(wide.agentSA, releaseNamespace, g));
    expect(calls.filter((_, i) => !answers[i])).toEqual([]);
    expect(calls).toEqual([
      "get nodechains.sluice.dev",
      "list nodechains.sluice.dev",
      "watch nodechains.sluice.dev",
      "patch nodechains.sluice.dev/status",
    ]);
  });

  const operatorMustNot: Grant[] = [
    "list secrets",
    "watch secrets",
    "create secrets",
    "update secrets",
    "delete secrets",
    "get pods",
    "list pods",
    "create pods",
    "get configmaps",
    "create serviceaccounts/token",
    "deletecollection nodechains.sluice.dev",
    "deletecollection gitsources.sluice.dev",
    "update gitsources.sluice.dev",
    "update nodechains.sluice.dev",
    "patch networkfunctions.sluice.dev/status",
    "patch nodechains.sluice.dev/status",
    "update servicechains.sluice.dev/status",
    "patch nodes",
    "delete nodes",
    "get leases.coordination.k8s.io/some-other-lease",
    "delete leases.coordination.k8s.io/wide-sluice-operator",
    "list leases.coordination.k8s.io",
    "patch leases.coordination.k8s.io/wide-sluice-operator",
    "update events",
    "delete events",
    "get customresourcedefinitions.apiextensions.k8s.io",
    "impersonate users",
    "escalate clusterroles.rbac.authorization.k8s.io",
    "bind clusterroles.rbac.authorization.k8s.io",
    "* *",
  ];
  it("deny the operator what it never does", async () => {
    const answers = await eachLimited(operatorMustNot, (g) => canI(wide.operatorSA, releaseNamespace, g));
    expect(operatorMustNot.filter((_, i) => answers[i])).toEqual([]);
  });

  const agentMustNot: Grant[] = [
    "create nodechains.sluice.dev",
    "patch nodechains.sluice.dev",
    "update nodechains.sluice.dev",
    "delete nodechains.sluice.dev",
    "deletecollection nodechains.sluice.dev",
    "update nodechains.sluice.dev/status",
    "get gitsources.sluice.dev",
    "get networkfunctions.sluice.dev",
    "list servicechains.sluice.dev",
    "get secrets",
    "list nodes",
    "get pods",
    "create events",
    "create leases.coordination.k8s.io",
    "* *",
  ];
  it("deny the agent everything but reading NodeChains and writing their status", async () => {
    const answers = await eachLimited(agentMustNot, (g) => canI(wide.agentSA, releaseNamespace, g));
    expect(agentMustNot.filter((_, i) => answers[i])).toEqual([]);
  });

  it("keep the operator out of other namespaces when it watches one", async () => {
    const inOther = await eachLimited(["get gitsources.sluice.dev", "get secrets", "create events"], (g) =>
      canI(narrow.operatorSA, otherNamespace, g),
    );
    expect(inOther).toEqual([false, false, false]);
    expect(await canI(narrow.operatorSA, watchedNamespace, "get secrets")).toBe(true);
    expect(await canI(narrow.operatorSA, otherNamespace, "list nodes")).toBe(true);
  });
});

describe("the rights the chart grants, in full, as the API server lists them", () => {
  const cases: { name: string; release: Release; namespace: () => string }[] = [
    { name: "cluster-wide operator, in its own namespace", release: wide, namespace: () => releaseNamespace },
    { name: "cluster-wide operator, in another namespace", release: wide, namespace: () => otherNamespace },
    {
      name: "one-namespace operator, in the watched namespace",
      release: narrow,
      namespace: () => watchedNamespace,
    },
    {
      name: "one-namespace operator, in its own namespace",
      release: narrow,
      namespace: () => releaseNamespace,
    },
    {
      name: "one-namespace operator, in another namespace",
      release: narrow,
      namespace: () => otherNamespace,
    },
  ];
  for (const c of cases) {
    it(`are exactly the listed calls: ${c.name}`, async () => {
      const ns = c.namespace();
      expect(await grantedTo(c.release.operatorSA, ns)).toEqual(
        expectedGrants(OPERATOR_PERMISSIONS, c.release, ns),
      );
      expect(await grantedTo(c.release.agentSA, ns)).toEqual(
        expectedGrants(AGENT_PERMISSIONS, c.release, ns),
      );
    });
  }
});

describe("the operator and the agent with only these rights", () => {
  const nodeName = `rbac-node-${releaseNamespace.slice(-6)}`;
  const token = "rbac-webhook-token";
  let dir: string;
  let repo: TestRepo;
  let operator: RunningOperator | undefined;
  let agentStore: KubeStore | undefined;
  /** The operator's warnings and errors (JSON lines). */
  const warnings: string[] = [];
  const refusals = () => warnings.filter((l) => /forbidden|\b403\b/i.test(l));

  /** `kubectl wait` for a condition; on timeout, fails with the object and the operator's warnings. */
  async function waitReady(kind: string, name: string): Promise<void> {
    const result = await kubectl(
      ["wait", `${kind}/${name}`, "-n", watchedNamespace, "--for=condition=Ready", "--timeout=60s"],
      { timeoutMs: 70_000 },
    );
    if (result.code === 0) return;
    const obj = await kubectl(["get", kind, name, "-n", watchedNamespace, "-o", "jsonpath={.status}"]);
    throw new Error(
      `${kind} ${name} not Ready: ${obj.stdout}\noperator warnings:\n${warnings.slice(-20).join("\n")}`,
    );
  }

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "sluice-rbac-"));
    // A node only this file's chain selects (other files' chains might select it too; they
    // would only see one more node that never gets an agent).
    await kubectlOk(["apply", "-f", "-"], {
      input: JSON.stringify({
        apiVersion: "v1",
        kind: "Node",
        metadata: { name: nodeName, labels: { "sluice.dev/test-node": releaseNamespace } },
      }),
    });
    await kubectlOk(
      ["create", "secret", "generic", "hook", `--from-literal=token=${token}`, "-n", watchedNamespace],
      {},
    );
    repo = await createTestRepo({ name: "rbac" });
    await repo.commit({
      "nf.yaml": `apiVersion: sluice.dev/v1alpha1
kind: NetworkFunction
metadata:
  name: pass
spec:
  hooks: [xdp]
  source:
    builtin: noop
`,
      "chain.yaml": `apiVersion: sluice.dev/v1alpha1
kind: ServiceChain
metadata:
  name: edge
spec:
  functions:
    - name: pass
  attachment:
    interfaces: [eth0]
    hook: xdp
  nodeSelector:
    matchLabels:
      sluice.dev/test-node: ${releaseNamespace}
`,
    });
    // Anything refused (403) or failing shows up in the operator's warnings and errors.
    const sink = new Writable({
      write(chunk: Buffer, _enc, done) {
        warnings.push(chunk.toString("utf8").trim());
        done();
      },
    });
    const log = pino({ level: "warn" }, sink);
    const kubeconfig = await writeKubeConfig(
      await serviceAccountKubeConfig(releaseNamespace, narrow.operatorSA),
      dir,
      "operator",
    );
    operator = await startOperator({
      kubeconfig,
      namespace: watchedNamespace,
      port: 0,
      host: "127.0.0.1",
      dataDir: join(dir, "data"),
      sources: { allowFileSources: true },
      leaderElection: {
        namespace: releaseNamespace,
        leaseName: narrow.leaseName,
        identity: "rbac-test",
        ...leaderTimings(6_000),
      },
      logger: log,
    });
    const agentClient = new KubeClient(await serviceAccountKubeConfig(releaseNamespace, narrow.agentSA));
    // Exactly how `sluice agent` builds its store (bin/main.ts).
    agentStore = new KubeStore(agentClient, log, {
      labelSelectors: { NodeChain: `sluice.dev/node=${nodeName}` },
    });
  });

  afterAll(async () => {
    await agentStore?.stop();
    await operator?.stop();
    await kubectl(["delete", "node", nodeName, "--ignore-not-found", "--wait=false"]);
    await repo?.cleanup();
    await rm(dir, { recursive: true, force: true });
  });

  it("take a chain from Git to Ready on a node, and nothing is refused", async () => {
    await kubectlOk(["apply", "-f", "-"], {
      input: JSON.stringify({
        apiVersion: "sluice.dev/v1alpha1",
        kind: "GitSource",
        metadata: { name: "network", namespace: watchedNamespace },
        spec: { url: repo.fileUrl, interval: "1h", webhookSecretRef: { name: "hook" } },
      }),
    });
    // Leadership, Git, Secret, apply, status: the GitSource becomes Ready.
    await waitReady("gitsource", "network");
    // The operator wrote this node's NodeChain; the agent's store sees it, and only NodeChains
    // of its node (other files' chains without a nodeSelector may place theirs on it too).
    await agentStore!.startWatching("NodeChain");
    const wanted = `${watchedNamespace}/edge.${nodeName}`;
    const key = (o: { metadata: { namespace?: string; name: string } }) =>
      `${o.metadata.namespace}/${o.metadata.name}`;
    let mine = await agentStore!.list("NodeChain");
    for (
      const deadline = Date.now() + 30_000;
      !mine.some((o) => key(o) === wanted) && Date.now() < deadline;
    ) {
      await new Promise((ok) => setTimeout(ok, 200));
      mine = await agentStore!.list("NodeChain");
    }
    expect(mine.map(key)).toContain(wanted);
    expect(mine.map((o) => (o.spec as { nodeName: string }).nodeName)).toEqual(mine.map(() => nodeName));
    mine = mine.filter((o) => key(o) === wanted);
    const nc = mine[0]!;
    const revision = (nc.spec as { revision: string }).revision;
    const generation = nc.metadata.generation ?? 1;
    // The agent reports the chain live, as it does after a switch.
    await agentStore!.patchStatus("NodeChain", watchedNamespace, nc.metadata.name, {
      observedGeneration: generation,
      phase: "Ready",
      revision,
      programIds: [11, 12],
      attachedInterfaces: ["eth0"],
      selfTest: { passed: 1, failed: 0 },
      conditions: [
        {
          type: "Ready",
          status: "True",
          reason: "Succeeded",
          message: `revision ${revision} is live on eth0`,
          observedGeneration: generation,
          lastTransitionTime: new Date().toISOString().replace(/\.\d{3}Z$/, "Z"),
        },
      ],
    });
    // The operator sees the node Ready and completes the rollout.
    await waitReady("servicechain", "edge");
    const events = await kubectlOk([
      "get",
      "events",
      "-n",
      watchedNamespace,
      "-o",
      "jsonpath={range .items[*]}{.source.component} {.reason}{'\\n'}{end}",
    ]);
    expect(events).toContain("sluice-operator ");
    expect(refusals()).toEqual([]);
  });

  it("the agent cannot change what the operator planned", async () => {
    const [nc] = await agentStore!.list("NodeChain", watchedNamespace);
    expect(nc).toBeDefined();
    const err = await agentStore!.apply({ ...nc!, metadata: { ...nc!.metadata, labels: {} } }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(KubeApiError);
    expect((err as KubeApiError).status).toBe(403);
  });
});
