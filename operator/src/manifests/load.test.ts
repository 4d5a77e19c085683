import { mkdir, mkdtemp, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { loadRevision } from "./load.ts";

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "sluice-manifests-"));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function write(files: Record<string, string>): Promise<void> {
  for (const [path, text] of Object.entries(files)) {
    await mkdir(dirname(join(dir, path)), { recursive: true });
    await writeFile(join(dir, path), text);
  }
}

const nf = (name: string) => `apiVersion: sluice.dev/v1alpha1
kind: NetworkFunction
metadata:
  name: ${name}
spec:
  hooks: [xdp]
  source:
    builtin: noop
`;
const chain = (name: string, functions = "    - name: fw") => `apiVersion: sluice.dev/v1alpha1
kind: ServiceChain
metadata:
  name: ${name}
spec:
  functions:
${functions}
  attachment:
    interfaces: [eth0]
    hook: xdp
`;

describe("loadRevision", () => {
  it("loads every sluice document of every YAML file, in path order, and skips dot-directories", async () => {
    await write({
      "nfs/fw.yaml": `${nf("fw")}---\n${nf("counter")}---\n`,
      "chains/web.yml": chain("web"),
      "README.md": "not yaml",
      ".github/workflows/ci.yml": "on: push\njobs: {}\n",
    });
    const result = await loadRevision(dir);
    expect(result.ok).toBe(true);
    if (!result.ok) return;
    expect(result.objects.map((o) => `${o.kind}/${o.metadata.name}`)).toEqual([
      "ServiceChain/web",
      "NetworkFunction/fw",
      "NetworkFunction/counter",
    ]);
    expect(result.files).toEqual(["chains/web.yml", "nfs/fw.yaml"]);
  });

  it("a schema violation names file, document, object and field, with the field's line", async () => {
    await write({
      "chain.yaml": `${nf("fw")}---\n${chain("web", "    - alias: first")}`,
    });
    const result = await loadRevision(dir, { displayPrefix: "manifests" });
    expect(result.ok).toBe(false);
    if (result.ok) return;
    expect(result.errors).toHaveLength(1);
    expect(result.errors[0]).toMatchObject({
      file: "manifests/chain.yaml",
      documentIndex: 2,
      kind: "ServiceChain",
      name: "web",
      path: "spec.functions[0].name",
      line: 16, // the `- alias: first` item: the nearest node to the missing field
    });
    expect(result.message).toMatch(
      /^manifests\/chain\.yaml: document 2 \(ServiceChain web\): spec\.functions\[0\]\.name: \S/,
    );
  });

  it("is all-or-nothing: one bad document fails the whole revision", async () => {
    await write({ "a.yaml": nf("fw"), "b.yaml": chain("web", "    - name: Not_A_Name") });
    const result = await loadRevision(dir);
    expect(result).toMatchObject({ ok: false });
    expect("objects" in result).toBe(false);
  });

  it("YAML syntax errors are reported with their line", async () => {
    await write({ "bad.yaml": `${nf("fw")}---\nkind: NetworkFunction\nmetadata:\n  name: [unclosed\n` });
    const result = await loadRevision(dir);
    expect(result.ok).toBe(false);
    if (result.ok) return;
    expect(result.errors[0]).toMatchObject({ file: "bad.yaml", documentIndex: 2 });
    expect(result.errors[0]!.line).toBeGreaterThanOrEqual(12);
  });

  it("a duplicate mapping key is an error", async () => {
    await write({
      "dup.yaml": nf("fw").replace("kind: NetworkFunction", "kind: NetworkFunction\nkind: ServiceChain"),
    });
    const result = await loadRevision(dir);
    expect(result.ok).toBe(false);
    if (!result.ok) expect(result.errors[0]!.message).toMatch(/unique/i);
  });

  it("an alias bomb is refused quickly", async () => {
    const levels = ["a: &a [x, x, x, x, x, x, x, x, x, x]"];
    for (let i = 1; i < 9; i++)
      levels.push(
        `${"abcdefghi"[i]}: &${"abcdefghi"[i]} [${Array(10)
          .fill(`*${"abcdefghi"[i - 1]}`)
          .join(", ")}]`,
      );
    await write({ "bomb.yaml": `${levels.join("\n")}\n` });
    const started = Date.now();
    const result = await loadRevision(dir);
    expect(Date.now() - started).toBeLessThan(2_000);
    expect(result.ok).toBe(false);
    if (!result.ok)
      expect(result.errors[0]).toMatchObject({
        file: "bomb.yaml",
        documentIndex: 1,
        message: expect.stringMatching(/alias/),
      });
  });

  it("objects of other API groups are refused by default and can be skipped", async () => {
    await write({ "mixed.yaml": `apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm\n---\n${nf("fw")}` });
    const refused = await loadRevision(dir);
    expect(refused.ok).toBe(false);
    if (!refused.ok)
      expect(refused.message).toMatch(
        /^mixed\.yaml: document 1 \(ConfigMap cm\): apiVersion: .*not a sluice/,
      );
    const skipped = await loadRevision(dir, { foreignObjects: "skip" });
    expect(skipped.ok && skipped.objects.map((o) => o.kind)).toEqual(["NetworkFunction"]);
  });

  it("kinds outside allowedKinds are refused with a message saying so", async () => {
    await write({ "a.yaml": nf("fw"), "b.yaml": chain("web") });
    const result = await loadRevision(dir, { allowedKinds: ["NetworkFunction"] });
    expect(result.ok).toBe(false);
    if (!result.ok) {
      expect(result.errors).toHaveLength(1);
      expect(result.message).toBe(
        "b.yaml: document 1 (ServiceChain web): kind: ServiceChain objects cannot come from a repository (allowed: NetworkFunction)",
      );
      expect(result.errors[0]!.line).toBe(2);
    }
  });

  it("a built-in parameter its schema refuses fails the revision at file, document, field and line", async () => {
    const ratelimit = `apiVersion: sluice.dev/v1alpha1
kind: NetworkFunction
metadata:
  name: rl
spec:
  hooks: [xdp]
  source:
    builtin: ratelimit
  parameters:
    rate: 0
    burst: 10
`;
    await write({ "a.yaml": nf("fw"), "b.yaml": `${nf("other")}---\n${ratelimit}` });
    const result = await loadRevision(dir);
    expect(result.ok).toBe(false);
    if (result.ok) return;
    expect(result.errors).toEqual([
      {
        file: "b.yaml",
        documentIndex: 2,
        line: 19,
        kind: "NetworkFunction",
        name: "rl",
        path: "spec.parameters.rate",
        message: "ratelimit parameters: Too small: expected number to be >=1",
        reason: "InvalidSpec",
      },
    ]);
    expect(result.message).toBe(
      "b.yaml: document 2 (NetworkFunction rl): spec.parameters.rate: ratelimit parameters: Too small: expected number to be >=1",
    );
  });

  it("a firewall rule its schema refuses is located at its field inside spec.tables", async () => {
    await write({
      "a.yaml": `${nf("fw").replace("builtin: noop", "builtin: firewall")}  tables:
    rules:
      - action: deny
        src: 10.0.0.1/8
`,
    });
    const result = await loadRevision(dir);
    expect(result.ok).toBe(false);
    if (result.ok) return;
    expect(result.errors[0]).toMatchObject({
      file: "a.yaml",
      documentIndex: 1,
      line: 12,
      path: "spec.tables.rules[0].src",
      reason: "InvalidSpec",
    });
  });

  it("an l4lb service the operator's schema refuses (table size not a prime) fails the revision at its field", async () => {
    await write({
      "a.yaml": `${nf("lb").replace("builtin: noop", "builtin: l4lb")}  tables:
    services:
      - vip: 10.96.0.10
        port: 80
        tableSize: 1000
        backends: [{ address: 10.1.0.1 }]
`,
    });
    const result = await loadRevision(dir);
    expect(result.ok).toBe(false);
    if (result.ok) return;
    expect(result.errors[0]).toMatchObject({
      file: "a.yaml",
      line: 13,
      path: "spec.tables.services[0].tableSize",
      reason: "InvalidSpec",
    });
    expect(result.errors[0]!.message).toMatch(/^l4lb tables: must be a prime/);
  });

  it("a built-in name no built-in has fails the revision with the reason BuiltinNotFound", async () => {
    await write({ "a.yaml": nf("fw").replace("builtin: noop", "builtin: nat") });
    const result = await loadRevision(dir);
    expect(result.ok).toBe(false);
    if (result.ok) return;
    expect(result.errors).toEqual([
      expect.objectContaining({
        file: "a.yaml",
        documentIndex: 1,
        line: 8,
        path: "spec.source.builtin",
        reason: "BuiltinNotFound",
      }),
    ]);
    expect(result.errors[0]!.message).toMatch(/^no built-in network function "nat" \(built-ins: firewall, /);
  });

  it("the same kind, namespace and name twice is an error naming both places", async () => {
    await write({ "a.yaml": nf("fw"), "b/c.yaml": nf("fw").replace("builtin: noop", "builtin: flowmon") });
    const result = await loadRevision(dir);
    expect(result.ok).toBe(false);
    if (!result.ok) {
      expect(result.errors[0]).toMatchObject({
        file: "b/c.yaml",
        documentIndex: 1,
        path: "metadata.name",
        line: 4,
      });
      expect(result.errors[0]!.message).toContain("a.yaml document 1");
    }
  });

  it("the default namespace counts when detecting duplicates", async () => {
    await write({
      "a.yaml": nf("fw"),
      "b.yaml": nf("fw").replace("name: fw", "name: fw\n  namespace: team"),
    });
    expect((await loadRevision(dir, { defaultNamespace: "default" })).ok).toBe(true);
    expect((await loadRevision(dir, { defaultNamespace: "team" })).ok).toBe(false);
  });

  it("confined to a namespace, an object naming another one fails the whole revision at metadata.namespace", async () => {
    const planted = `apiVersion: sluice.dev/v1alpha1
kind: GitSource
metadata:
  name: planted
  namespace: team-b
spec:
  url: https://git.example.com/evil.git
  secretRef:
    name: team-b-git
`;
    await write({
      "a.yaml": nf("fw"),
      "b.yaml": nf("mine").replace("name: mine", "name: mine\n  namespace: team-a"),
      "c.yaml": `${nf("other")}---\n${planted}`,
    });
    const result = await loadRevision(dir, { defaultNamespace: "team-a", confineToNamespace: "team-a" });
    expect(result.ok).toBe(false);
    if (result.ok) return;
    expect(result.errors).toHaveLength(1);
    expect(result.errors[0]).toMatchObject({
      file: "c.yaml",
      documentIndex: 2,
      kind: "GitSource",
      name: "planted",
      namespace: "team-b",
      path: "metadata.namespace",
      // The line in the file: the GitSource starts after the 8-line NetworkFunction and `---`.
      line: 14,
    });
    expect(result.message).toMatch(
      /^c\.yaml: document 2 \(GitSource planted\): metadata\.namespace: namespace team-b is outside this GitSource's namespace team-a/,
    );
    // Not confined (the operator's --allow-cross-namespace): the same revision loads.
    expect((await loadRevision(dir, { defaultNamespace: "team-a" })).ok).toBe(true);
  });

  it("a secretRef that names a namespace is refused: a GitSource reads only Secrets of its own namespace", async () => {
    await write({
      "gs.yaml": `apiVersion: sluice.dev/v1alpha1
kind: GitSource
metadata:
  name: child
spec:
  url: https://git.example.com/repo.git
  secretRef:
    name: creds
    namespace: team-b
`,
    });
    const result = await loadRevision(dir, { defaultNamespace: "team-a", confineToNamespace: "team-a" });
    expect(result.ok).toBe(false);
    if (!result.ok) expect(result.errors[0]).toMatchObject({ file: "gs.yaml", path: "spec.secretRef" });
  });

  it.each(["Namespace", "ClusterRoleBinding", "CustomResourceDefinition"])(
    "a cluster-scoped %s is refused, and the message says it is cluster-scoped",
    async (kind) => {
      await write({ "x.yaml": `apiVersion: v1\nkind: ${kind}\nmetadata:\n  name: x\n` });
      const result = await loadRevision(dir, { defaultNamespace: "team-a" });
      expect(result.ok).toBe(false);
      if (!result.ok)
        expect(result.message).toBe(
          `x.yaml: document 1 (${kind} x): kind: ${kind} is cluster-scoped: objects from a repository are applied only into a namespace`,
        );
    },
  );

  it("an oversized file is refused by name", async () => {
    await write({ "big.yaml": `${nf("fw")}# ${"x".repeat(2000)}\n` });
    const result = await loadRevision(dir, { limits: { maxFileBytes: 1000 } });
    expect(result.ok).toBe(false);
    if (!result.ok) expect(result.message).toMatch(/^big\.yaml: file is \d+ bytes, over the 1000-byte limit/);
  });

  it("a symbolic link leaving the directory is refused; one inside is followed", async () => {
    await write({ "fw.yaml": nf("fw") });
    await symlink("fw.yaml", join(dir, "again.yaml"));
    const inside = await loadRevision(dir);
    expect(inside.ok).toBe(false); // followed: the same object twice
    await rm(join(dir, "again.yaml"));
    await symlink("/etc/hostname", join(dir, "out.yaml"));
    const outside = await loadRevision(dir);
    expect(outside.ok).toBe(false);
    if (!outside.ok)
      expect(outside.errors[0]).toMatchObject({
        file: "out.yaml",
        message: expect.stringMatching(/outside/),
      });
  });

  it("a missing directory is an error, an empty one gives no objects", async () => {
    expect((await loadRevision(join(dir, "nope"))).ok).toBe(false);
    expect(await loadRevision(dir)).toEqual({ ok: true, objects: [], files: [] });
  });
});
