import { describe, expect, it } from "vitest";
import {
  exampleGitNetworkFunction,
  exampleGitSource,
  exampleNetworkFunction,
  exampleNodeChain,
  exampleServiceChain,
  withField,
} from "./examples.ts";
import {
  API_VERSION,
  formatIssuePath,
  formatParseError,
  GROUP,
  KIND_NAMES,
  KINDS,
  parseSluiceObject,
  VERSION,
} from "./index.ts";

describe("parseSluiceObject", () => {
  it.each([
    ["GitSource", exampleGitSource],
    ["built-in NetworkFunction", exampleNetworkFunction],
    ["Git NetworkFunction", exampleGitNetworkFunction],
    ["ServiceChain", exampleServiceChain],
    ["NodeChain", exampleNodeChain],
  ])("parses the example %s", (_, example) => {
    const input = example();
    const result = parseSluiceObject(input);
    expect(result.ok).toBe(true);
    if (result.ok) expect(result.value).toMatchObject({ kind: input.kind, metadata: input.metadata });
  });

  it("narrows the value by kind", () => {
    const result = parseSluiceObject(exampleServiceChain());
    if (!result.ok || result.value.kind !== "ServiceChain") throw new Error("expected a ServiceChain");
    expect(result.value.spec.attachment.hook).toBe("xdp");
  });

  it.each([
    [
      "a Deployment",
      { apiVersion: "apps/v1", kind: "Deployment", metadata: { name: "web" } },
      "apiVersion",
      "apps/v1 is not a sluice API version (Deployment is not a sluice kind)",
    ],
    [
      "a ConfigMap",
      { apiVersion: "v1", kind: "ConfigMap", metadata: { name: "c" } },
      "apiVersion",
      "not a sluice API version",
    ],
    [
      "another version",
      withField(exampleGitSource(), "apiVersion", "sluice.dev/v1"),
      "apiVersion",
      "sluice.dev/v1 is not served",
    ],
    [
      "an unknown sluice kind",
      withField(exampleGitSource(), "kind", "Chain"),
      "kind",
      "Chain is not a sluice kind; expected one of GitSource, NetworkFunction, ServiceChain, NodeChain",
    ],
    ["no apiVersion", withField(exampleGitSource(), "apiVersion", undefined), "apiVersion", "is required"],
    ["no kind", withField(exampleGitSource(), "kind", undefined), "kind", "is required"],
    ["no metadata", withField(exampleGitSource(), "metadata", undefined), "metadata", "is required"],
    ["no spec", withField(exampleServiceChain(), "spec", undefined), "spec", "is required"],
    ["an unknown top-level field", withField(exampleServiceChain(), "data", {}), "", 'unknown field "data"'],
  ])("rejects %s with an error at %j", (_, input, path, message) => {
    const result = parseSluiceObject(input);
    expect(result.ok).toBe(false);
    if (!result.ok)
      expect(result.error.issues).toContainEqual({ path, message: expect.stringContaining(message) });
  });

  it("names the kind, namespace and name of the broken object", () => {
    const result = parseSluiceObject(withField(exampleServiceChain(), "spec.functions[1].name", "Bad"));
    expect(result.ok).toBe(false);
    if (result.ok) return;
    expect(result.error).toMatchObject({ kind: "ServiceChain", name: "edge", namespace: "sluice-system" });
    expect(formatParseError(result.error)).toMatch(
      /^ServiceChain sluice-system\/edge: spec\.functions\[1\]\.name: must be a DNS-1123 label/,
    );
  });

  it.each([null, "text", 42, [exampleGitSource()]])("rejects %j as not an object", (input) => {
    const result = parseSluiceObject(input);
    expect(result).toEqual({
      ok: false,
      error: { issues: [{ path: "", message: expect.stringContaining("expected a Kubernetes object") }] },
    });
  });
});

describe("formatIssuePath", () => {
  it.each([
    [["spec", "functions", 2, "name"], "spec.functions[2].name"],
    [["metadata", "labels", "app.kubernetes.io/name"], 'metadata.labels["app.kubernetes.io/name"]'],
    [["spec", "parameters", "MAX_RULES"], "spec.parameters.MAX_RULES"],
    [[0], "[0]"],
    [[], ""],
  ])("%j is %s", (path, text) => {
    expect(formatIssuePath(path)).toBe(text);
  });
});

describe("kinds", () => {
  it("are the four sluice kinds in group sluice.dev, version v1alpha1", () => {
    expect([GROUP, VERSION, API_VERSION]).toEqual(["sluice.dev", "v1alpha1", "sluice.dev/v1alpha1"]);
    expect(KIND_NAMES).toEqual(["GitSource", "NetworkFunction", "ServiceChain", "NodeChain"]);
    expect(KIND_NAMES.map((k) => KINDS[k].shortNames)).toEqual([["gs"], ["nf"], ["sch"], ["nc"]]);
  });

  it("keep spec and status schemas that are the ones in the object schema", () => {
    for (const kind of KIND_NAMES) {
      const info = KINDS[kind];
      const shape = (info.schema as unknown as { shape: Record<string, unknown> }).shape;
      expect(shape.spec, kind).toBe(info.spec);
      expect((shape.status as { unwrap(): unknown }).unwrap(), kind).toBe(info.status);
    }
  });
});
