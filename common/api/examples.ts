/**
 * Valid example manifests of every kind, as a user would write them in Git (no status, defaults
 * left out). Tests start from these and break one field at a time. Each call returns a fresh copy.
 */

/** A GitSource following `main` of an HTTPS repository with credentials. */
export function exampleGitSource(): Record<string, unknown> {
  return {
    apiVersion: "sluice.dev/v1alpha1",
    kind: "GitSource",
    metadata: { name: "network", namespace: "sluice-system" },
    spec: {
      url: "https://git.example.com/platform/network.git",
      path: "clusters/prod",
      secretRef: { name: "git-credentials" },
    },
  };
}

/** A built-in firewall with parameters, one table and one test vector. */
export function exampleNetworkFunction(): Record<string, unknown> {
  return {
    apiVersion: "sluice.dev/v1alpha1",
    kind: "NetworkFunction",
    metadata: { name: "firewall", namespace: "sluice-system" },
    spec: {
      hooks: ["xdp", "tc-ingress"],
      source: { builtin: "firewall" },
      parameters: { MAX_RULES: 256, LOG_DROPS: true, MODE: "strict" },
      tables: { fw_rules: [{ proto: "tcp", dport: 22, action: "drop" }] },
      tests: [
        {
          name: "drops-ssh",
          packet: { ipv4: { src: "10.0.0.1", dst: "10.0.0.2" }, tcp: { sport: 40000, dport: 22 } },
          expect: { verdict: "drop" },
        },
      ],
    },
  };
}

/** A network function whose C source is a file in a GitSource's artifact. */
export function exampleGitNetworkFunction(): Record<string, unknown> {
  return {
    apiVersion: "sluice.dev/v1alpha1",
    kind: "NetworkFunction",
    metadata: { name: "tagger", namespace: "sluice-system" },
    spec: { hooks: ["xdp"], source: { path: "nfs/tagger/tagger.c", sourceRef: { name: "network" } } },
  };
}

/** A chain of three functions (one used twice) on eth0 and veth*, with a canary rollout. */
export function exampleServiceChain(): Record<string, unknown> {
  return {
    apiVersion: "sluice.dev/v1alpha1",
    kind: "ServiceChain",
    metadata: { name: "edge", namespace: "sluice-system" },
    spec: {
      functions: [{ name: "firewall" }, { name: "tagger" }, { name: "firewall", alias: "firewall-2" }],
      attachment: { interfaces: ["eth0", "veth*"], hook: "xdp" },
      nodeSelector: { matchLabels: { "node-role.kubernetes.io/edge": "" } },
      rollout: { maxUnavailable: "25%", canary: { nodes: 1, pause: true } },
      tests: [
        {
          name: "web-passes",
          packet: { ipv4: { src: "10.0.0.1", dst: "10.0.0.2" }, tcp: { sport: 40000, dport: 443 } },
          expect: { verdict: "pass" },
        },
      ],
    },
  };
}

/** The plan of `edge` on node-1, as the operator writes it. */
export function exampleNodeChain(): Record<string, unknown> {
  return {
    apiVersion: "sluice.dev/v1alpha1",
    kind: "NodeChain",
    metadata: { name: "edge-node-1", namespace: "sluice-system" },
    spec: {
      nodeName: "node-1",
      chain: "edge",
      revision: "3f2a9c1d0b7e",
      interfaces: ["eth0", "veth*"],
      hook: "xdp",
      functions: [
        {
          name: "firewall",
          networkFunction: "firewall",
          source: { builtin: "firewall" },
          parameters: { MAX_RULES: 256 },
        },
        {
          name: "tagger",
          networkFunction: "tagger",
          source: {
            artifact: {
              url: "http://sluice-operator.sluice-system.svc/artifacts/gitsource/sluice-system/network/abc.tar.gz",
              digest: `sha256:${"ab".repeat(32)}`,
              path: "nfs/tagger/tagger.c",
            },
          },
        },
        { name: "counter", networkFunction: "counter", source: { inline: "/* C */" } },
      ],
    },
  };
}

/**
 * A copy of `obj` with the field at `path` (`spec.functions[2].name` form, as in parse errors)
 * set to `value`, or deleted when `value` is undefined. Intermediate objects are created.
 */
export function withField(
  obj: Record<string, unknown>,
  path: string,
  value: unknown,
): Record<string, unknown> {
  const copy = structuredClone(obj);
  const keys = [...path.matchAll(/([^.[\]]+)|\[(\d+)\]/g)].map((m) =>
    m[2] !== undefined ? Number(m[2]) : (m[1] as string),
  );
  let node: Record<string | number, unknown> = copy;
  keys.slice(0, -1).forEach((key, i) => {
    if (node[key] === undefined || node[key] === null) node[key] = typeof keys[i + 1] === "number" ? [] : {};
    node = node[key] as Record<string | number, unknown>;
  });
  const last = keys[keys.length - 1] as string | number;
  if (value === undefined) {
    if (Array.isArray(node) && typeof last === "number") node.splice(last, 1);
    else delete node[last];
  } else {
    node[last] = value;
  }
  return copy;
}
