/**
 * The Helm chart charts/sluice against a real kube-apiserver: it lints, it renders with default
 * and with non-default values, and the API server accepts every rendered object (server-side
 * apply, server dry run, which runs validation and admission). What the server would store is
 * then checked for what an operator of the cluster cares about: who runs privileged, with which
 * capabilities, what reaches the host, and that the operator pieces fit together.
 */
import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { stringify as toYaml } from "yaml";
import { renderCrds } from "../../common/api/crd.ts";
import {
  chartDir,
  findManifest,
  helm,
  HelmError,
  type Manifest,
  parseManifests,
  renderChart,
  serverVersion,
} from "./chart-support.ts";
import { createTestNamespace, kubectl, kubectlOk } from "./harness.ts";

const namespace = createTestNamespace("helm");
const watchedNamespace = createTestNamespace("helm-watched");
const release = "edge";

interface Container {
  name: string;
  image: string;
  args?: string[];
  command?: string[];
  env?: { name: string; value?: string; valueFrom?: { fieldRef?: { fieldPath: string } } }[];
  ports?: { name: string; containerPort: number }[];
  readinessProbe?: { httpGet?: { path: string; port: string | number } };
  livenessProbe?: { httpGet?: { path: string; port: string | number } };
  securityContext?: {
    privileged?: boolean;
    runAsUser?: number;
    runAsNonRoot?: boolean;
    allowPrivilegeEscalation?: boolean;
    readOnlyRootFilesystem?: boolean;
    capabilities?: { add?: string[]; drop?: string[] };
    seccompProfile?: { type: string };
  };
  volumeMounts?: { name: string; mountPath: string; mountPropagation?: string }[];
  resources?: { limits?: { memory?: string } };
}
interface PodSpec {
  serviceAccountName: string;
  hostNetwork?: boolean;
  dnsPolicy?: string;
  securityContext?: { runAsNonRoot?: boolean; runAsUser?: number };
  initContainers?: Container[];
  containers: Container[];
  volumes: { name: string; hostPath?: { path: string; type?: string }; emptyDir?: object }[];
  priorityClassName?: string;
}
interface Workload extends Manifest {
  spec: {
    replicas?: number;
    strategy?: { type: string };
    selector: { matchLabels: Record<string, string> };
    template: {
      metadata: { labels: Record<string, string>; annotations?: Record<string, string> };
      spec: PodSpec;
    };
  };
}
interface ServiceManifest extends Manifest {
  spec: {
    type: string;
    selector: Record<string, string>;
    ports: { name: string; port: number; targetPort: string }[];
  };
}
interface RoleManifest extends Manifest {
  rules: { apiGroups: string[]; resources: string[]; verbs: string[]; resourceNames?: string[] }[];
}

/** Applies rendered objects with a server-side dry run; returns what the API server would store. */
async function dryRunApply(rendered: string): Promise<Manifest[]> {
  const out = await kubectlOk(
    ["apply", "--server-side", "--force-conflicts", "--dry-run=server", "-o", "json", "-f", "-"],
    { input: rendered },
  );
  const parsed = JSON.parse(out) as Manifest & { items?: Manifest[] };
  return parsed.kind === "List" ? (parsed.items ?? []) : [parsed];
}

const kindsOf = (manifests: readonly Manifest[]): string[] =>
  manifests.map((m) => `${m.kind}/${m.metadata.name}`).sort();

const containersOf = (w: Workload): Container[] => [
  ...(w.spec.template.spec.initContainers ?? []),
  ...w.spec.template.spec.containers,
];

/** Values a platform team with stricter needs would set: HA, one namespace, bpffs at boot. */
const customValues = {
  imagePullSecrets: [{ name: "mirror-pull" }],
  operator: {
    image: { repository: "mirror/sluice-operator", tag: "0.1.0-rc.1", pullPolicy: "Always" },
    replicas: 3,
    leaderElection: { enabled: true, leaseDuration: "30s" },
    watchNamespace: watchedNamespace,
    sources: { allowCrossNamespace: true, allowedGitHosts: ["git.example.com", "*.example.org"] },
    port: 9090,
    advertiseUrl: "http://artifacts.network.example:9090",
    liveView: { agentRatesIdleInterval: "30s" },
    logLevel: "debug",
    dataSizeLimit: "5Gi",
    service: { type: "NodePort", annotations: { "prometheus.io/scrape": "true" } },
    serviceAccount: { create: true, name: "gitops-operator", annotations: { team: "network" } },
    podAnnotations: { "prometheus.io/port": "9090" },
    podLabels: { team: "network" },
    nodeSelector: { "node-role.kubernetes.io/control-plane": "" },
    tolerations: [{ key: "node-role.kubernetes.io/control-plane", effect: "NoSchedule" }],
    affinity: {
      podAntiAffinity: {
        preferredDuringSchedulingIgnoredDuringExecution: [
          {
            weight: 100,
            podAffinityTerm: {
              topologyKey: "kubernetes.io/hostname",
              labelSelector: { matchLabels: { "app.kubernetes.io/component": "operator" } },
            },
          },
        ],
      },
    },
    priorityClassName: "system-cluster-critical",
  },
  agent: {
    image: { repository: "mirror/sluice-agent", tag: "0.1.0-rc.1", pullPolicy: "Always" },
    bpffs: { path: "/run/bpffs", mount: false },
    cacheDir: "/var/lib/sluice-cache",
    logLevel: "warn",
    seccompProfile: "Unconfined",
    compileLandlock: "if-available",
    maxUnavailable: "25%",
    resources: { requests: { cpu: "100m", memory: "256Mi" }, limits: { memory: "2Gi" } },
    priorityClassName: "system-node-critical",
    tolerations: [],
    metrics: { address: "127.0.0.1", port: 9500 },
  },
  rbac: { create: true, userRoles: { create: true, aggregateToView: false } },
};

let version: string;
let defaults: { rendered: string; stored: Manifest[] };

beforeAll(async () => {
  version = await serverVersion();
  const rendered = await renderChart(release, namespace, { includeCrds: true });
  defaults = { rendered, stored: await dryRunApply(rendered) };
});

describe("helm lint", () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "sluice-helm-lint-"));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("passes in strict mode with the default values and with every option changed", async () => {
    const valuesFile = join(dir, "custom.yaml");
    await writeFile(valuesFile, toYaml(customValues));
    for (const extra of [[], [`--values=${valuesFile}`]]) {
      const out = await helm(["lint", chartDir, "--strict", `--kube-version=${version}`, ...extra]);
      expect(out).toContain("1 chart(s) linted, 0 chart(s) failed");
    }
  });
});

describe("the chart's CRDs", () => {
  it("are exactly the CRDs generated from the zod schemas", async () => {
    const crdDir = join(chartDir, "crds");
    const files = (await readdir(crdDir)).filter((f) => f.endsWith(".yaml")).sort();
    const generated = renderCrds();
    expect(files).toEqual([...generated.keys()].sort());
    for (const file of files) expect(await readFile(join(crdDir, file), "utf8")).toBe(generated.get(file));
  });
});

describe("with default values", () => {
  it("renders every part of an install and the API server accepts all of it", () => {
    const o = `${release}-sluice-operator`;
    const a = `${release}-sluice-agent`;
    expect(kindsOf(defaults.stored)).toEqual(
      [
        "CustomResourceDefinition/gitsources.sluice.dev",
        "CustomResourceDefinition/networkfunctions.sluice.dev",
        "CustomResourceDefinition/nodechains.sluice.dev",
        "CustomResourceDefinition/servicechains.sluice.dev",
        `ServiceAccount/${o}`,
        `ServiceAccount/${a}`,
        `ClusterRole/${release}-sluice-${namespace}-operator`,
        `ClusterRole/${release}-sluice-${namespace}-agent`,
        `ClusterRoleBinding/${release}-sluice-${namespace}-operator`,
        `ClusterRoleBinding/${release}-sluice-${namespace}-agent`,
        `ClusterRole/${release}-sluice-networkfunction-editor`,
        `ClusterRole/${release}-sluice-viewer`,
        `ValidatingAdmissionPolicy/${release}-sluice-${namespace}-agent-node-scope`,
        `ValidatingAdmissionPolicyBinding/${release}-sluice-${namespace}-agent-node-scope`,
        `Role/${o}-leader-election`,
        `RoleBinding/${o}-leader-election`,
        `Service/${o}`,
        `Deployment/${o}`,
        `DaemonSet/${a}`,
      ].sort(),
    );
  });

  it("runs the operator as non-root on a read-only root filesystem with no capabilities", () => {
    const deploy = findManifest(defaults.stored, "Deployment") as Workload;
    const pod = deploy.spec.template.spec;
    expect(pod.securityContext).toMatchObject({ runAsNonRoot: true });
    expect(pod.securityContext?.runAsUser).toBeGreaterThan(0);
    const [operator] = pod.containers;
    expect(pod.containers).toHaveLength(1);
    expect(operator!.securityContext).toMatchObject({
      allowPrivilegeEscalation: false,
      readOnlyRootFilesystem: true,
      capabilities: { drop: ["ALL"] },
    });
    expect(operator!.securityContext?.capabilities?.add).toBeUndefined();
    expect(operator!.securityContext?.privileged).not.toBe(true);
    // Everything it writes goes to volumes, not to the image.
    expect(operator!.volumeMounts?.map((m) => m.mountPath).sort()).toEqual(["/tmp", "/var/lib/sluice"]);
    expect(pod.hostNetwork).not.toBe(true);
  });

  it("caps the operator's and the agent's V8 heap (NODE_OPTIONS) well inside their memory limits", () => {
    const mib = (quantity: string) =>
      Number(/^(\d+)Mi$/.exec(quantity)?.[1] ?? Number(/^(\d+)Gi$/.exec(quantity)?.[1]) * 1024);
    for (const kind of ["Deployment", "DaemonSet"]) {
      const [container] = (findManifest(defaults.stored, kind) as Workload).spec.template.spec.containers;
      const nodeOptions = container!.env?.find((e) => e.name === "NODE_OPTIONS")?.value ?? "";
      const oldSpace = Number(/--max-old-space-size=(\d+)/.exec(nodeOptions)?.[1]);
      expect(nodeOptions, kind).toContain("--max-semi-space-size=2");
      // Code, the young generation and native memory live beside the old space.
      expect(oldSpace + 100, kind).toBeLessThanOrEqual(mib(container!.resources!.limits!.memory!));
    }
  });

  it("keeps every GitSource in its own namespace and off file:// unless values say otherwise", () => {
    const deploy = findManifest(defaults.stored, "Deployment") as Workload;
    const [operator] = deploy.spec.template.spec.containers;
    expect((operator!.args ?? []).filter((a) => a.startsWith("--allow"))).toEqual([]);
  });

  it("runs the operator with leader election on the Lease its Role allows, Ready only while leading", () => {
    const deploy = findManifest(defaults.stored, "Deployment") as Workload;
    const [operator] = deploy.spec.template.spec.containers;
    const args = operator!.args ?? [];
    expect(args.slice(0, 1)).toEqual(["operator"]);
    expect(args).toContain("--leader-elect");
    expect(args).toContain("--leader-elect-namespace=$(POD_NAMESPACE)");
    expect(args).toContain("--leader-elect-id=$(POD_NAME)");
    const lease = args.find((a) => a.startsWith("--leader-elect-lease="))?.split("=")[1];
    const role = findManifest(defaults.stored, "Role") as RoleManifest;
    const named = role.rules.find((r) => r.resourceNames);
    expect(named).toMatchObject({ resources: ["leases"], resourceNames: [lease] });
    expect(operator!.readinessProbe?.httpGet?.path).toBe("/readyz");
    expect(operator!.livenessProbe?.httpGet?.path).toBe("/healthz");
    // A new pod can only lead once the old leader is gone: the update must not wait for it.
    expect(deploy.spec.strategy?.type).toBe("RollingUpdate");
  });

  it("serves artifacts, webhooks and metrics on one Service that selects the operator's pods", () => {
    const deploy = findManifest(defaults.stored, "Deployment") as Workload;
    const svc = findManifest(defaults.stored, "Service") as ServiceManifest;
    const podLabels = deploy.spec.template.metadata.labels;
    for (const [k, v] of Object.entries(svc.spec.selector)) expect(podLabels[k]).toBe(v);
    const agentSelects = (findManifest(defaults.stored, "DaemonSet") as Workload).spec.template.metadata
      .labels;
    expect(Object.entries(svc.spec.selector).every(([k, v]) => agentSelects[k] === v)).toBe(false);
    const [operator] = deploy.spec.template.spec.containers;
    const http = operator!.ports?.find((p) => p.name === "http");
    expect(svc.spec.ports).toEqual([
      expect.objectContaining({ name: "http", port: http!.containerPort, targetPort: "http" }),
    ]);
    // The URL agents are told to download from is this Service's cluster DNS name.
    expect(operator!.args).toContain(
      `--advertise-url=http://${svc.metadata.name}.${namespace}.svc:${svc.spec.ports[0]!.port}`,
    );
  });

  it("runs the agent in the host network with CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN only", () => {
    const ds = findManifest(defaults.stored, "DaemonSet") as Workload;
    const pod = ds.spec.template.spec;
    expect(pod.hostNetwork).toBe(true);
    expect(pod.dnsPolicy).toBe("ClusterFirstWithHostNet");
    const agent = pod.containers.find((c) => c.name === "agent")!;
    expect(agent.args).toEqual([
      "agent",
      "--node-name=$(NODE_NAME)",
      "--bpffs-root=/sys/fs/bpf/sluice",
      "--cache-dir=/var/cache/sluice",
      "--metrics-port=9471",
      "--metrics-address=$(HOST_IP)",
    ]);
    expect(agent.securityContext).toMatchObject({
      privileged: false,
      allowPrivilegeEscalation: false,
      readOnlyRootFilesystem: true,
      capabilities: { drop: ["ALL"] },
    });
    expect([...(agent.securityContext?.capabilities?.add ?? [])].sort()).toEqual([
      "BPF",
      "NET_ADMIN",
      "PERFMON",
    ]);
    // User C is compiled in the Landlock sandbox; a node without Landlock refuses to compile.
    expect(agent.env).toContainEqual({ name: "SLUICE_COMPILE_LANDLOCK", value: "required" });
  });

  it("serves the agent's metrics on the node's IP only, where the pod's annotations send Prometheus", () => {
    const ds = findManifest(defaults.stored, "DaemonSet") as Workload;
    const agent = ds.spec.template.spec.containers.find((c) => c.name === "agent")!;
    expect(agent.args).toContain("--metrics-address=$(HOST_IP)");
    expect(agent.env).toContainEqual({
      name: "HOST_IP",
      valueFrom: { fieldRef: { apiVersion: "v1", fieldPath: "status.hostIP" } },
    });
    expect(agent.ports).toContainEqual(expect.objectContaining({ name: "metrics", containerPort: 9471 }));
    expect(ds.spec.template.metadata.annotations).toMatchObject({
      "prometheus.io/scrape": "true",
      "prometheus.io/port": "9471",
    });
    // The operator's live view asks each agent there for its rates.
    const deployment = findManifest(defaults.stored, "Deployment") as Workload;
    const operator = deployment.spec.template.spec.containers.find((c) => c.name === "operator")!;
    expect(operator.args).toEqual(
      expect.arrayContaining(["--agent-metrics-port=9471", "--agent-rates-idle-interval=0s"]),
    );
  });

  it("lets each agent write the status only of its own node's NodeChains (test/cluster/node-scoped.test.ts)", () => {
    const policy = findManifest(defaults.stored, "ValidatingAdmissionPolicy") as Manifest & {
      spec: { failurePolicy: string; matchConditions: { expression: string }[] };
    };
    expect(policy.spec.failurePolicy).toBe("Fail");
    expect(policy.spec.matchConditions[0]!.expression).toBe(
      `request.userInfo.username == 'system:serviceaccount:${namespace}:${release}-sluice-agent'`,
    );
    const binding = findManifest(defaults.stored, "ValidatingAdmissionPolicyBinding") as Manifest & {
      spec: { policyName: string; validationActions: string[] };
    };
    expect(binding.spec).toMatchObject({ policyName: policy.metadata.name, validationActions: ["Deny"] });
  });

  it("ships an editor role to bind per namespace, and a read-only role joined to the built-in view role", () => {
    const editor = findManifest(
      defaults.stored,
      "ClusterRole",
      `${release}-sluice-networkfunction-editor`,
    ) as RoleManifest;
    expect(editor.metadata.labels?.["rbac.authorization.k8s.io/aggregate-to-edit"]).toBeUndefined();
    expect(editor.metadata.labels?.["rbac.authorization.k8s.io/aggregate-to-admin"]).toBeUndefined();
    const writable = editor.rules.filter((r) => r.verbs.includes("create")).flatMap((r) => r.resources);
    expect(writable.sort()).toEqual(["gitsources", "networkfunctions", "servicechains"]);
    const viewer = findManifest(defaults.stored, "ClusterRole", `${release}-sluice-viewer`) as RoleManifest;
    expect(viewer.metadata.labels?.["rbac.authorization.k8s.io/aggregate-to-view"]).toBe("true");
    expect(viewer.rules.flatMap((r) => r.verbs).sort()).toEqual(["get", "list", "watch"]);
  });

  it("shares the host's bpffs and a host cache directory with the agent", () => {
    const ds = findManifest(defaults.stored, "DaemonSet") as Workload;
    const pod = ds.spec.template.spec;
    const volumes = Object.fromEntries(pod.volumes.map((v) => [v.name, v]));
    const agent = pod.containers.find((c) => c.name === "agent")!;
    const mounts = Object.fromEntries((agent.volumeMounts ?? []).map((m) => [m.name, m]));
    expect(volumes.bpffs?.hostPath).toEqual({ path: "/sys/fs/bpf", type: "Directory" });
    expect(mounts.bpffs).toMatchObject({ mountPath: "/sys/fs/bpf", mountPropagation: "HostToContainer" });
    expect(volumes.cache?.hostPath).toEqual({ path: "/var/cache/sluice", type: "DirectoryOrCreate" });
    expect(mounts.cache?.mountPath).toBe("/var/cache/sluice");
    // The only privileged container mounts bpffs on the host (Bidirectional) and exits.
    const privileged = containersOf(ds).filter((c) => c.securityContext?.privileged);
    expect(privileged.map((c) => c.name)).toEqual(["mount-bpffs"]);
    expect(pod.initContainers?.[0]?.volumeMounts).toEqual([
      expect.objectContaining({ name: "bpffs", mountPath: "/sys/fs/bpf", mountPropagation: "Bidirectional" }),
    ]);
    expect(pod.initContainers?.[0]?.command?.join(" ")).toContain("mount -t bpf bpf /sys/fs/bpf");
  });

  it("could not give the agent itself Bidirectional propagation: the API server allows it only to privileged containers", async () => {
    const ds = parseManifests(defaults.rendered).find((m) => m.kind === "DaemonSet") as Workload;
    const agent = ds.spec.template.spec.containers.find((c) => c.name === "agent")!;
    agent.volumeMounts!.find((m) => m.name === "bpffs")!.mountPropagation = "Bidirectional";
    const result = await kubectl(["apply", "--server-side", "--dry-run=server", "-f", "-"], {
      input: JSON.stringify(ds),
    });
    expect(result.code).not.toBe(0);
    expect(result.stderr).toMatch(
      /Bidirectional mount propagation is available only to privileged containers/,
    );
  });

  it("prints how to check the install and what to apply next (NOTES.txt), with the server's own version", async () => {
    const out = await helm(["install", release, chartDir, `--namespace=${namespace}`, "--dry-run=server"]);
    expect(out).toContain("NOTES:");
    expect(out).toContain(
      `kubectl -n ${namespace} get deploy/${release}-sluice-operator ds/${release}-sluice-agent`,
    );
    expect(out).toContain(`get lease ${release}-sluice-operator`);
    expect(out).toContain("kind: GitSource");
    expect(out).toContain(`http://${release}-sluice-operator.${namespace}.svc:8080`);
  });
});

describe("with non-default values", () => {
  let stored: Manifest[];
  beforeAll(async () => {
    stored = await dryRunApply(await renderChart(release, namespace, { values: customValues }));
  });

  it("the API server accepts every object, and the operator's namespaced rights sit in the watched namespace", () => {
    const o = `${release}-sluice-operator`;
    expect(kindsOf(stored)).toEqual(
      [
        "ServiceAccount/gitops-operator",
        `ServiceAccount/${release}-sluice-agent`,
        `ClusterRole/${release}-sluice-${namespace}-operator`,
        `ClusterRole/${release}-sluice-${namespace}-agent`,
        `ClusterRoleBinding/${release}-sluice-${namespace}-operator`,
        `ClusterRoleBinding/${release}-sluice-${namespace}-agent`,
        `ClusterRole/${release}-sluice-networkfunction-editor`,
        `ClusterRole/${release}-sluice-viewer`,
        `ValidatingAdmissionPolicy/${release}-sluice-${namespace}-agent-node-scope`,
        `ValidatingAdmissionPolicyBinding/${release}-sluice-${namespace}-agent-node-scope`,
        `Role/${o}`,
        `RoleBinding/${o}`,
        `Role/${o}-leader-election`,
        `RoleBinding/${o}-leader-election`,
        `Service/${o}`,
        `Deployment/${o}`,
        `DaemonSet/${release}-sluice-agent`,
      ].sort(),
    );
    const watchedRole = stored.find((m) => m.kind === "Role" && m.metadata.name === o)!;
    expect(watchedRole.metadata.namespace).toBe(watchedNamespace);
    const clusterRole = findManifest(
      stored,
      "ClusterRole",
      `${release}-sluice-${namespace}-operator`,
    ) as RoleManifest;
    expect(clusterRole.rules.map((r) => r.resources)).toEqual([["nodes"]]);
  });

  it("passes the values on to the operator", () => {
    const deploy = findManifest(stored, "Deployment") as Workload;
    expect(deploy.spec.replicas).toBe(3);
    const pod = deploy.spec.template.spec;
    expect(pod.serviceAccountName).toBe("gitops-operator");
    expect(pod.priorityClassName).toBe("system-cluster-critical");
    const [operator] = pod.containers;
    expect(operator!.image).toBe("mirror/sluice-operator:0.1.0-rc.1");
    expect(operator!.args).toEqual(
      expect.arrayContaining([
        "--port=9090",
        `--namespace=${watchedNamespace}`,
        "--advertise-url=http://artifacts.network.example:9090",
        "--leader-elect-duration=30s",
        "--allow-cross-namespace",
        "--allowed-git-hosts=git.example.com,*.example.org",
      ]),
    );
    expect(operator!.args).not.toContain("--allow-file-sources");
    expect(operator!.env).toContainEqual({ name: "SLUICE_LOG_LEVEL", value: "debug" });
    const svc = findManifest(stored, "Service") as ServiceManifest;
    expect(svc.spec.type).toBe("NodePort");
    expect(svc.spec.ports[0]?.port).toBe(9090);
  });

  it("runs nothing privileged when the nodes mount bpffs themselves", () => {
    const ds = findManifest(stored, "DaemonSet") as Workload;
    const pod = ds.spec.template.spec;
    expect(pod.initContainers ?? []).toEqual([]);
    expect(containersOf(ds).some((c) => c.securityContext?.privileged)).toBe(false);
    const agent = pod.containers[0]!;
    expect(agent.image).toBe("mirror/sluice-agent:0.1.0-rc.1");
    expect(agent.args).toContain("--bpffs-root=/run/bpffs/sluice");
    // Metrics on loopback: nothing outside the node can scrape them, so the pod does not ask to be.
    expect(agent.args).toEqual(
      expect.arrayContaining(["--metrics-address=127.0.0.1", "--metrics-port=9500"]),
    );
    expect(agent.env?.map((e) => e.name)).not.toContain("HOST_IP");
    expect(ds.spec.template.metadata.annotations).toMatchObject({
      "prometheus.io/scrape": "false",
      "prometheus.io/port": "9500",
    });
    // ...nor can the operator: its live view asks no agent for rates.
    const deployment = findManifest(stored, "Deployment") as Workload;
    expect(
      deployment.spec.template.spec.containers[0]!.args?.filter((a) => a.startsWith("--agent-")),
    ).toEqual([]);
    const viewer = findManifest(stored, "ClusterRole", `${release}-sluice-viewer`);
    expect(viewer.metadata.labels?.["rbac.authorization.k8s.io/aggregate-to-view"]).toBeUndefined();
    expect(agent.securityContext?.seccompProfile).toEqual({ type: "Unconfined" });
    expect(agent.env).toContainEqual({ name: "SLUICE_COMPILE_LANDLOCK", value: "if-available" });
    const volumes = Object.fromEntries(pod.volumes.map((v) => [v.name, v.hostPath]));
    expect(volumes.bpffs).toEqual({ path: "/run/bpffs", type: "Directory" });
    expect(volumes.cache).toEqual({ path: "/var/lib/sluice-cache", type: "DirectoryOrCreate" });
    expect(pod.priorityClassName).toBe("system-node-critical");
  });

  it("installs without RBAC and ServiceAccounts when the cluster's admins bring their own", async () => {
    const text = await renderChart(release, namespace, {
      values: {
        rbac: { create: false },
        operator: { serviceAccount: { create: false, name: "platform-sluice-operator" } },
        agent: { serviceAccount: { create: false, name: "platform-sluice-agent" } },
      },
    });
    const objects = await dryRunApply(text);
    expect(kindsOf(objects)).toEqual(
      [
        // Not RBAC: the API server still holds the admins' agent account to its own node.
        `ValidatingAdmissionPolicy/${release}-sluice-${namespace}-agent-node-scope`,
        `ValidatingAdmissionPolicyBinding/${release}-sluice-${namespace}-agent-node-scope`,
        `Service/${release}-sluice-operator`,
        `Deployment/${release}-sluice-operator`,
        `DaemonSet/${release}-sluice-agent`,
      ].sort(),
    );
    expect((findManifest(objects, "DaemonSet") as Workload).spec.template.spec.serviceAccountName).toBe(
      "platform-sluice-agent",
    );
    const policy = findManifest(objects, "ValidatingAdmissionPolicy") as Manifest & {
      spec: { matchConditions: { expression: string }[] };
    };
    expect(policy.spec.matchConditions[0]!.expression).toContain(
      `system:serviceaccount:${namespace}:platform-sluice-agent`,
    );
  });
});

describe("with agent.bpfStatsSysctl", () => {
  it("is off by default: no container sets the node's kernel.bpf_stats_enabled", () => {
    const ds = findManifest(defaults.stored, "DaemonSet") as Workload;
    expect(containersOf(ds).map((c) => c.name)).not.toContain("bpf-stats-sysctl");
    expect(defaults.rendered).not.toContain("bpf_stats_enabled");
  });

  it("on, a privileged init container sets the sysctl, and the agent keeps its three capabilities", async () => {
    for (const mount of [true, false]) {
      const stored = await dryRunApply(
        await renderChart(release, namespace, {
          values: { agent: { bpfStatsSysctl: true, bpffs: { mount } } },
        }),
      );
      const ds = findManifest(stored, "DaemonSet") as Workload;
      const pod = ds.spec.template.spec;
      expect(pod.initContainers?.map((c) => c.name)).toEqual(
        mount ? ["mount-bpffs", "bpf-stats-sysctl"] : ["bpf-stats-sysctl"],
      );
      const init = pod.initContainers!.find((c) => c.name === "bpf-stats-sysctl")!;
      // Writing a sysctl that is not namespaced takes CAP_SYS_ADMIN and a writable /proc/sys.
      expect(init.securityContext).toMatchObject({ privileged: true, runAsUser: 0 });
      expect(init.image).toBe(pod.containers[0]!.image);
      expect(init.command?.join(" ")).toContain("echo 1 > /proc/sys/kernel/bpf_stats_enabled");
      // It mounts nothing of the host: /proc/sys is the node's already.
      expect(init.volumeMounts ?? []).toEqual([]);
      const agent = pod.containers.find((c) => c.name === "agent")!;
      expect(agent.securityContext).toMatchObject({
        privileged: false,
        capabilities: { drop: ["ALL"], add: ["BPF", "PERFMON", "NET_ADMIN"] },
      });
      expect(
        containersOf(ds)
          .filter((c) => c.securityContext?.privileged)
          .map((c) => c.name),
      ).toEqual(pod.initContainers!.map((c) => c.name));
    }
  });
});

describe("values the chart refuses", () => {
  const cases: { name: string; values: Record<string, unknown>; error: RegExp }[] = [
    {
      name: "several operator replicas without leader election (both would reconcile)",
      values: { operator: { replicas: 2, leaderElection: { enabled: false } } },
      error: /operator\.replicas > 1 needs operator\.leaderElection\.enabled/,
    },
    {
      name: "a misspelt key",
      values: { operator: { replica: 2 } },
      error: /additional properties 'replica' not allowed/,
    },
    {
      name: "a lease duration that is not a duration",
      values: { operator: { leaderElection: { leaseDuration: "fast" } } },
      error: /leaseDuration/,
    },
    {
      name: "a lease so short that renewals could not keep up",
      values: { operator: { leaderElection: { leaseDuration: "2s" } } },
      error: /leaseDuration 2s is too short: at least 3s/,
    },
    {
      name: "an allowed Git host that is a URL, not a host",
      values: { operator: { sources: { allowedGitHosts: ["https://git.example.com/"] } } },
      error: /allowedGitHosts/,
    },
    {
      name: "a relative bpffs path",
      values: { agent: { bpffs: { path: "sys/fs/bpf" } } },
      error: /bpffs\/path/,
    },
    {
      name: "a metrics address that is a host name, not an IP address",
      values: { agent: { metrics: { address: "localhost", port: 9471 } } },
      error: /agent\/metrics\/address/,
    },
    {
      name: "a bpfStatsSysctl that is not a boolean",
      values: { agent: { bpfStatsSysctl: "always" } },
      error: /agent\/bpfStatsSysctl/,
    },
    {
      name: "a ServiceAccount that is neither created nor named",
      values: { agent: { serviceAccount: { create: false } } },
      error: /agent\.serviceAccount\.name is required/,
    },
  ];
  for (const c of cases) {
    it(`refuses ${c.name}`, async () => {
      const err = await renderChart(release, namespace, { values: c.values }).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(HelmError);
      expect((err as HelmError).stderr).toMatch(c.error);
    });
  }
});
