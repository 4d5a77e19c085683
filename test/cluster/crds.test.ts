/**
 * The generated CRDs on a real kube-apiserver: they are accepted and served, the API server
 * itself rejects invalid objects with a message that names the field (OpenAPI patterns and
 * CEL rules from the zod schemas), and `kubectl get` shows the printer columns.
 */
import { fileURLToPath } from "node:url";
import { beforeAll, describe, expect, it } from "vitest";
import { createTestNamespace, kubectl, kubectlOk } from "./harness.ts";

const crdDir = fileURLToPath(new URL("../../crds/", import.meta.url));
const namespace = createTestNamespace("crds");
const crdNames = ["gitsources", "networkfunctions", "servicechains", "nodechains"].map(
  (p) => `crd/${p}.sluice.dev`,
);

const gitSource = (name: string, spec: Record<string, unknown>) => ({
  apiVersion: "sluice.dev/v1alpha1",
  kind: "GitSource",
  metadata: { name, namespace },
  spec: { url: "https://git.example.com/platform/network.git", ...spec },
});

const networkFunction = (name: string, spec: Record<string, unknown>) => ({
  apiVersion: "sluice.dev/v1alpha1",
  kind: "NetworkFunction",
  metadata: { name, namespace },
  spec: { hooks: ["xdp"], source: { builtin: "noop" }, ...spec },
});

const serviceChain = (name: string, spec: Record<string, unknown>) => ({
  apiVersion: "sluice.dev/v1alpha1",
  kind: "ServiceChain",
  metadata: { name, namespace },
  spec: { functions: [{ name: "noop" }], attachment: { interfaces: ["eth0"], hook: "xdp" }, ...spec },
});

beforeAll(async () => {
  // Server-side apply with --force-conflicts: other files apply the same CRDs at the same time.
  await kubectlOk(["apply", "--server-side", "--force-conflicts", "-f", crdDir]);
  await kubectlOk(["wait", "--for=condition=Established", ...crdNames, "--timeout=30s"]);
});

describe("generated CRDs on a real API server", () => {
  it("every sluice CRD is accepted, Established, and listed under the sluice category", async () => {
    const established = await kubectlOk([
      "get",
      ...crdNames,
      "-o",
      'jsonpath={range .items[*]}{.metadata.name}={.status.conditions[?(@.type=="Established")].status}{"\\n"}{end}',
    ]);
    expect(established.trim().split("\n").sort()).toEqual([
      "gitsources.sluice.dev=True",
      "networkfunctions.sluice.dev=True",
      "nodechains.sluice.dev=True",
      "servicechains.sluice.dev=True",
    ]);
    // `kubectl get sluice` lists every kind of the category. Discovery follows Established a
    // moment later, so the first tries may not know the category yet.
    const deadline = Date.now() + 15_000;
    let all = await kubectl(["get", "sluice", "-n", namespace]);
    while (all.code !== 0 && Date.now() < deadline) {
      await new Promise((ok) => setTimeout(ok, 250));
      all = await kubectl(["get", "sluice", "-n", namespace]);
    }
    expect(all.stderr).not.toMatch(/doesn't have a resource type|error/i);
    expect(all.code).toBe(0);
  });

  it("valid objects of every kind are accepted, with schema defaults filled in", async () => {
    const objects = [gitSource("network", {}), networkFunction("noop", {}), serviceChain("edge", {})];
    await kubectlOk(["apply", "-f", "-"], { input: objects.map((o) => JSON.stringify(o)).join("\n") });
    const stored = JSON.parse(
      await kubectlOk(["get", "gitsource", "network", "-n", namespace, "-o", "json"]),
    );
    expect(stored.spec).toMatchObject({
      ref: { branch: "main" },
      path: ".",
      interval: "1m",
      prune: true,
      suspend: false,
    });
  });

  // Each row breaks one field; the API server must say which.
  const invalid: { name: string; object: unknown; field: RegExp; message: RegExp }[] = [
    {
      name: "GitSource with an unsupported URL scheme",
      object: gitSource("bad-url", { url: "ftp://example.com/repo.git" }),
      field: /spec\.url/,
      message: /should match|must be a repository URL/,
    },
    {
      name: "GitSource whose path climbs out of the repository",
      object: gitSource("bad-path", { path: "../other" }),
      field: /spec\.path/,
      message: /should match/,
    },
    {
      name: "GitSource with two refs at once (CEL rule)",
      object: gitSource("bad-ref", { ref: { branch: "main", tag: "v1" } }),
      field: /spec\.ref/,
      message: /exactly one of branch, tag, semver or commit/,
    },
    {
      name: "GitSource with a zero interval (CEL rule)",
      object: gitSource("bad-interval", { interval: "0s" }),
      field: /spec\.interval/,
      message: /must be longer than 0s/,
    },
    {
      name: "GitSource with an unknown field",
      object: gitSource("bad-field", { branch: "main" }),
      field: /spec\.branch|unknown field "spec\.branch"/,
      message: /unknown field/,
    },
    {
      name: "GitSource whose name is not a DNS-1123 label (CEL rule)",
      object: gitSource("a.b", {}),
      field: /metadata\.name/,
      message: /DNS-1123 label/,
    },
    {
      name: "NetworkFunction with an unknown hook",
      object: networkFunction("bad-hook", { hooks: ["kprobe"] }),
      field: /spec\.hooks\[0\]/,
      message: /Unsupported value: "kprobe"/,
    },
    {
      name: "NetworkFunction with two sources (CEL rule)",
      object: networkFunction("bad-source", { source: { builtin: "noop", inline: "int x;" } }),
      field: /spec\.source/,
      message: /exactly one of builtin, path \(with sourceRef\) or inline/,
    },
    {
      name: "ServiceChain without functions",
      object: serviceChain("bad-chain", { functions: [] }),
      field: /spec\.functions/,
      message: /at least 1 items|should have at least 1/,
    },
    {
      name: "ServiceChain with an interface name longer than IFNAMSIZ (CEL rule)",
      object: serviceChain("bad-ifname", {
        attachment: { interfaces: ["a-very-long-interface-name"], hook: "xdp" },
      }),
      field: /spec\.attachment\.interfaces\[0\]/,
      message: /at most 15 characters/,
    },
  ];

  it.each(invalid)(
    "kubectl apply of a $name is rejected, naming the field",
    async ({ object, field, message }) => {
      const result = await kubectl(["apply", "-f", "-"], { input: JSON.stringify(object) });
      expect(result.code).not.toBe(0);
      expect(result.stderr).toMatch(field);
      expect(result.stderr).toMatch(message);
      const name = (object as { metadata: { name: string } }).metadata.name;
      const kind = (object as { kind: string }).kind.toLowerCase();
      const after = await kubectl(["get", kind, name, "-n", namespace]);
      expect(after.stderr).toMatch(/NotFound|not found/);
    },
  );

  it("kubectl get gitsources shows NAME, READY, REVISION and AGE; -o wide adds URL and STATUS", async () => {
    const [header] = (await kubectlOk(["get", "gitsources", "-n", namespace])).trim().split("\n");
    expect(header?.split(/\s+/)).toEqual(["NAME", "READY", "REVISION", "AGE"]);
    const [wide] = (await kubectlOk(["get", "gitsources", "-n", namespace, "-o", "wide"])).trim().split("\n");
    expect(wide?.split(/\s+/)).toEqual(["NAME", "READY", "REVISION", "URL", "STATUS", "AGE"]);
  });

  it("the short name gs and the status subresource work as for built-in kinds", async () => {
    const table = await kubectlOk(["get", "gs", "network", "-n", namespace, "--no-headers"]);
    expect(table.split(/\s+/)[0]).toBe("network");
    // A status written through the main endpoint is dropped: only /status may change it.
    await kubectlOk([
      "patch",
      "gitsource",
      "network",
      "-n",
      namespace,
      "--type=merge",
      "-p",
      '{"status":{"webhookPath":"/x"}}',
    ]);
    const stored = JSON.parse(await kubectlOk(["get", "gs", "network", "-n", namespace, "-o", "json"]));
    expect(stored.status?.webhookPath).toBeUndefined();
  });
});
