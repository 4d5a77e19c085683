import { spawnSync } from "node:child_process";
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parse } from "yaml";
import { afterAll, describe, expect, it } from "vitest";
import { z } from "zod";
import {
  CRD_HEADER,
  CrdSchemaError,
  crdFileName,
  customResourceDefinition,
  openApiSchema,
  renderCrds,
  structuralProblems,
} from "./crd.ts";
import { KIND_NAMES, KINDS, type KindInfo } from "./kinds.ts";
import { kube } from "./meta.ts";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
type Node = Record<string, unknown>;

/** The schema node at a dotted path of property names (`*` = map values, `[]` = list items). */
function nodeAt(schema: Node, path: string): Node {
  let node = schema;
  for (const key of path.split(".")) {
    if (key === "[]") node = node.items as Node;
    else if (key === "*") node = node.additionalProperties as Node;
    else node = (node.properties as Record<string, Node>)[key] as Node;
    if (!node) throw new Error(`no schema at ${path}`);
  }
  return node;
}

/** Paths of every node with the given flag. */
function flagged(schema: Node, flag: string, path = ""): string[] {
  const found = schema[flag] === true ? [path] : [];
  for (const [key, child] of Object.entries((schema.properties as Record<string, Node>) ?? {}))
    found.push(...flagged(child, flag, path ? `${path}.${key}` : key));
  if (schema.additionalProperties && typeof schema.additionalProperties === "object")
    found.push(...flagged(schema.additionalProperties as Node, flag, `${path}.*`));
  if (schema.items) found.push(...flagged(schema.items as Node, flag, `${path}.[]`));
  return found;
}

const schemas = Object.fromEntries(KIND_NAMES.map((k) => [k, openApiSchema(KINDS[k])])) as Record<
  string,
  Node
>;
const rules = (node: Node) =>
  ((node["x-kubernetes-validations"] as { rule: string }[] | undefined) ?? []).map((r) => r.rule);

describe("generated CRD schemas", () => {
  it.each(KIND_NAMES)(
    "%s is structural: no $ref, every node typed, no properties beside additionalProperties",
    (kind) => {
      expect(structuralProblems(schemas[kind])).toEqual([]);
      expect(JSON.stringify(schemas[kind])).not.toContain("$ref");
    },
  );

  it.each(KIND_NAMES)("%s leaves metadata to Kubernetes and requires spec", (kind) => {
    const schema = schemas[kind] as Node;
    expect(nodeAt(schema, "metadata")).toEqual({ type: "object" });
    expect(schema.required).toEqual(["spec"]);
  });

  it("keeps unknown fields only in table entries and parameter values", () => {
    expect(
      KIND_NAMES.flatMap((k) =>
        flagged(schemas[k] as Node, "x-kubernetes-preserve-unknown-fields").map((p) => `${k} ${p}`),
      ),
    ).toEqual([
      "NetworkFunction spec.parameters.*",
      "NetworkFunction spec.tables.*.[]",
      "ServiceChain status.lastGoodPlan.functions.[].parameters.*",
      "ServiceChain status.lastGoodPlan.functions.[].tables.*.[]",
      "NodeChain spec.functions.[].parameters.*",
      "NodeChain spec.functions.[].tables.*.[]",
    ]);
  });

  it("makes maxUnavailable int-or-string with its rule in CEL", () => {
    const node = nodeAt(schemas.ServiceChain as Node, "spec.rollout.maxUnavailable");
    expect(node).toMatchObject({ "x-kubernetes-int-or-string": true, default: 1 });
    expect(node.type).toBeUndefined();
    expect(rules(node)).toEqual(["type(self) == int ? self >= 1 : self.matches('^([1-9][0-9]?|100)%$')"]);
  });

  it.each([
    [
      "GitSource",
      "spec.ref",
      "[has(self.branch), has(self.tag), has(self.semver), has(self.commit)].exists_one(x, x)",
    ],
    [
      "NetworkFunction",
      "spec.source",
      "[has(self.builtin), has(self.path), has(self.inline)].exists_one(x, x)",
    ],
    ["NetworkFunction", "spec.source", "has(self.path) == has(self.sourceRef)"],
    [
      "NodeChain",
      "spec.functions.[].source",
      "[has(self.builtin), has(self.artifact), has(self.inline)].exists_one(x, x)",
    ],
    ["NetworkFunction", "spec.tests.[].packet", "[has(self.ipv4), has(self.ipv6)].exists_one(x, x)"],
  ])("%s %s says in CEL: %s", (kind, path, rule) => {
    expect(rules(nodeAt(schemas[kind] as Node, path))).toContain(rule);
  });

  it("folds exclusive objects into one object with every branch's fields", () => {
    expect(Object.keys(nodeAt(schemas.GitSource as Node, "spec.ref").properties as Node).sort()).toEqual([
      "branch",
      "commit",
      "semver",
      "tag",
    ]);
    expect(nodeAt(schemas.GitSource as Node, "spec.ref").required).toBeUndefined();
  });

  it.each([
    ["GitSource", "spec.interval", "1m"],
    ["GitSource", "spec.timeout", "60s"],
    ["GitSource", "spec.prune", true],
    ["GitSource", "spec.ref", { branch: "main" }],
    ["ServiceChain", "spec.rollout", {}],
    ["ServiceChain", "spec.rollout.progressDeadlineSeconds", 600],
    ["ServiceChain", "spec.rollout.autoRollback", true],
    ["NetworkFunction", "spec.source.sourceRef.kind", "GitSource"],
    ["GitSource", "status", { observedGeneration: -1 }],
    ["NodeChain", "status", { observedGeneration: -1, phase: "Pending" }],
    ["NodeChain", "status.phase", "Pending"],
  ])("%s %s defaults to %j", (kind, path, value) => {
    expect(nodeAt(schemas[kind] as Node, path).default).toEqual(value);
  });

  it("keeps conditions a map list keyed by type, and hooks a set", () => {
    expect(nodeAt(schemas.ServiceChain as Node, "status.conditions")).toMatchObject({
      "x-kubernetes-list-type": "map",
      "x-kubernetes-list-map-keys": ["type"],
    });
    expect(nodeAt(schemas.NetworkFunction as Node, "spec.hooks")["x-kubernetes-list-type"]).toBe("set");
  });

  it("checks ServiceChain names are label values at the root", () => {
    expect(rules(schemas.ServiceChain as Node)).toEqual([
      "size(self.metadata.name) <= 63 && !self.metadata.name.contains('.')",
    ]);
  });
});

describe("CustomResourceDefinitions", () => {
  const crds = renderCrds();
  const docs = Object.fromEntries(
    KIND_NAMES.map((k) => [k, parse(crds.get(crdFileName(KINDS[k])) as string)]),
  ) as Record<string, Node>;
  const version = (kind: string) => (docs[kind] as { spec: { versions: Node[] } }).spec.versions[0] as Node;
  const columns = (kind: string) =>
    (version(kind).additionalPrinterColumns as { name: string; jsonPath: string }[]).map(
      (c) => `${c.name.toUpperCase()} ${c.jsonPath}`,
    );

  it("writes one file per kind, each starting with the generated-file header", () => {
    expect([...crds.keys()]).toEqual([
      "gitsources.sluice.dev.yaml",
      "networkfunctions.sluice.dev.yaml",
      "servicechains.sluice.dev.yaml",
      "nodechains.sluice.dev.yaml",
    ]);
    for (const text of crds.values()) expect(text.split("\n")[0]).toBe(CRD_HEADER);
  });

  it("renders the same bytes every time", () => {
    expect(renderCrds()).toEqual(crds);
  });

  it.each(KIND_NAMES)("%s is a namespaced v1 CRD in category sluice with a status subresource", (kind) => {
    const info = KINDS[kind];
    expect(docs[kind]).toMatchObject({
      apiVersion: "apiextensions.k8s.io/v1",
      kind: "CustomResourceDefinition",
      metadata: { name: `${info.plural}.sluice.dev` },
      spec: {
        group: "sluice.dev",
        scope: "Namespaced",
        names: { kind, plural: info.plural, shortNames: info.shortNames, categories: ["sluice"] },
      },
    });
    expect(version(kind)).toMatchObject({
      name: "v1alpha1",
      served: true,
      storage: true,
      subresources: { status: {} },
    });
  });

  it.each([
    ["GitSource", ["READY", "REVISION .status.artifact.revision", "AGE .metadata.creationTimestamp"]],
    [
      "ServiceChain",
      [
        "READY",
        "REVISION .status.revision",
        "NODES .status.nodes.summary",
        "UP-TO-DATE .status.nodes.updated",
        "FAILED .status.nodes.failed",
        "AGE",
      ],
    ],
    ["NodeChain", ["NODE .spec.nodeName", "PHASE .status.phase", "REVISION .status.revision", "AGE"]],
    ["NetworkFunction", ["HOOKS .spec.hooks", "AGE"]],
  ])("%s shows the columns %j", (kind, wanted) => {
    for (const column of wanted) {
      const text = column === "READY" ? `READY .status.conditions[?(@.type=="Ready")].status` : column;
      expect(
        columns(kind).some((c) => c.startsWith(text)),
        `${kind} ${column} in ${columns(kind).join(", ")}`,
      ).toBe(true);
    }
  });

  it("lets agents select their NodeChains by node", () => {
    expect(version("NodeChain").selectableFields).toEqual([
      { jsonPath: ".spec.nodeName" },
      { jsonPath: ".spec.chain" },
    ]);
  });
});

describe("schema translation", () => {
  const kindWith = (spec: z.ZodType): KindInfo => ({
    ...KINDS.NodeChain,
    schema: z.strictObject({ apiVersion: z.string(), kind: z.string(), metadata: z.object({}), spec }),
  });

  it.each([
    [
      "a union of objects without CEL",
      z.xor([z.strictObject({ a: z.string() }), z.strictObject({ b: z.string() })]),
      "needs CEL rules",
    ],
    ["a value of any type", z.record(z.string(), z.unknown()), "preserveUnknownFields"],
    ["a union of string and boolean", z.union([z.string(), z.boolean()]), "no structural form"],
    ["a lookahead pattern", z.string().regex(/^(?!-)[a-z]+$/), "lookaround"],
    ["a tuple", z.tuple([z.string(), z.number()]), "no tuples"],
  ])("refuses %s instead of emitting a schema the apiserver rejects", (_, spec, message) => {
    expect(() => openApiSchema(kindWith(z.strictObject({ field: spec })))).toThrow(CrdSchemaError);
    expect(() => openApiSchema(kindWith(z.strictObject({ field: spec })))).toThrow(message);
  });

  it("carries registered CEL rules and list types", () => {
    const list = z
      .array(z.string().max(8))
      .max(4)
      .register(kube, { listType: "set", validations: [{ rule: "size(self) > 0", message: "m" }] });
    const node = nodeAt(openApiSchema(kindWith(z.strictObject({ list }))), "spec.list");
    expect(node).toEqual({
      type: "array",
      maxItems: 4,
      items: { type: "string", maxLength: 8 },
      "x-kubernetes-list-type": "set",
      "x-kubernetes-validations": [{ rule: "size(self) > 0", message: "m" }],
    });
  });

  it("turns key patterns of records into CEL", () => {
    const node = nodeAt(
      openApiSchema(kindWith(z.strictObject({ map: z.record(z.string().regex(/^[a-z]+$/), z.string()) }))),
      "spec.map",
    );
    expect(node["x-kubernetes-validations"]).toEqual([
      { rule: "self.all(k, k.matches('^[a-z]+$'))", message: "keys must be strings matching ^[a-z]+$" },
    ]);
    expect(node.additionalProperties).toEqual({ type: "string" });
  });
});

describe("scripts/gen-crds.ts", () => {
  const temp = mkdtempSync(join(tmpdir(), "sluice-crds-"));
  afterAll(() => rmSync(temp, { recursive: true, force: true }));
  const run = (...args: string[]) =>
    spawnSync(process.execPath, ["--import", "tsx", join(root, "scripts/gen-crds.ts"), ...args], {
      cwd: root,
      encoding: "utf8",
    });

  it("--check passes: crds/ is what the schemas generate", () => {
    const result = run("--check");
    expect(result.stdout + result.stderr).toContain("4 CRDs up to date");
    expect(result.status).toBe(0);
  });

  it("--check fails and names the file when a CRD was edited by hand", () => {
    cpSync(join(root, "crds"), temp, { recursive: true });
    const file = join(temp, "servicechains.sluice.dev.yaml");
    writeFileSync(file, readFileSync(file, "utf8").replace("default: 600", "default: 60"));
    const result = run("--check", "--out", temp);
    expect(result.status).toBe(1);
    expect(result.stdout).toContain("would change:");
    expect(result.stdout).toContain("servicechains.sluice.dev.yaml");
    expect(result.stdout).not.toContain("gitsources");
  });

  it("writes the CRDs into --out, after which --check passes there", () => {
    const out = join(temp, "fresh");
    expect(run("--out", out).status).toBe(0);
    expect(run("--check", "--out", out).status).toBe(0);
    expect(readFileSync(join(out, "nodechains.sluice.dev.yaml"), "utf8")).toBe(
      renderCrds().get("nodechains.sluice.dev.yaml"),
    );
  });
});

it("generates the CRD objects the YAML files hold", () => {
  for (const kind of KIND_NAMES) {
    expect(parse(renderCrds().get(crdFileName(KINDS[kind])) as string)).toEqual(
      JSON.parse(JSON.stringify(customResourceDefinition(KINDS[kind]))),
    );
  }
});
