import { describe, expect, it } from "vitest";
import { exampleGitNetworkFunction, exampleNetworkFunction, withField } from "./examples.ts";
import { parseSluiceObject } from "./index.ts";
import { NetworkFunction } from "./networkfunction.ts";

const vector = (name: string) => ({
  name,
  packet: { ipv4: { src: "10.0.0.1", dst: "10.0.0.2" }, udp: { sport: 1, dport: 53 } },
  expect: { verdict: "pass" },
});

describe("NetworkFunction", () => {
  it("parses a built-in function with parameters, tables and tests", () => {
    const nf = NetworkFunction.parse(exampleNetworkFunction());
    expect(nf.spec.source).toEqual({ builtin: "firewall" });
    expect(nf.spec.parameters).toEqual({ MAX_RULES: 256, LOG_DROPS: true, MODE: "strict" });
    expect(nf.spec.tables?.fw_rules).toHaveLength(1);
    expect(nf.spec.tests?.[0]?.expect.verdict).toBe("drop");
    expect(nf.status.observedGeneration).toBe(-1);
  });

  it("parses a Git source and defaults sourceRef.kind to GitSource", () => {
    const nf = NetworkFunction.parse(exampleGitNetworkFunction());
    expect(nf.spec.source).toEqual({
      path: "nfs/tagger/tagger.c",
      sourceRef: { kind: "GitSource", name: "network" },
    });
  });

  it("parses inline C", () => {
    const nf = NetworkFunction.parse(
      withField(exampleNetworkFunction(), "spec.source", { inline: "int x;" }),
    );
    expect(nf.spec.source).toEqual({ inline: "int x;" });
  });

  it("narrows the source type by its key", () => {
    const { source } = NetworkFunction.parse(exampleGitNetworkFunction()).spec;
    const where =
      "builtin" in source
        ? source.builtin
        : "path" in source
          ? `${source.sourceRef.name}:${source.path}`
          : "inline";
    expect(where).toBe("network:nfs/tagger/tagger.c");
  });

  it.each([
    ["no hooks", "spec.hooks", [], "spec.hooks", "at least one hook"],
    ["a repeated hook", "spec.hooks", ["xdp", "xdp"], "spec.hooks[1]", 'duplicate hook "xdp"'],
    ["an unknown hook", "spec.hooks", ["ingress"], "spec.hooks[0]", '"xdp"|"tc-ingress"|"tc-egress"'],
    [
      "two source kinds",
      "spec.source",
      { builtin: "fw", inline: "int x;" },
      "spec.source",
      "exactly one of builtin, path (with sourceRef) or inline",
    ],
    ["no source kind", "spec.source", {}, "spec.source", "exactly one of"],
    ["a path without sourceRef", "spec.source", { path: "a.c" }, "spec.source.sourceRef", "is required"],
    [
      "a sourceRef without path",
      "spec.source",
      { builtin: "fw", sourceRef: { name: "r" } },
      "spec.source",
      "exactly one of",
    ],
    [
      "a header as the entry file",
      "spec.source",
      { path: "nf/a.h", sourceRef: { name: "r" } },
      "spec.source.path",
      "ending in .c",
    ],
    [
      "a path with ..",
      "spec.source",
      { path: "../a.c", sourceRef: { name: "r" } },
      "spec.source.path",
      "without '..'",
    ],
    [
      "another source kind",
      "spec.source",
      { path: "a.c", sourceRef: { kind: "Bucket", name: "r" } },
      "spec.source.sourceRef.kind",
      "GitSource",
    ],
    [
      "an upper-case built-in",
      "spec.source",
      { builtin: "Firewall" },
      "spec.source.builtin",
      "DNS-1123 label",
    ],
    ["empty inline C", "spec.source", { inline: "" }, "spec.source.inline", ""],
    [
      "a parameter name that is no C identifier",
      "spec.parameters",
      { "max-rules": 1 },
      'spec.parameters["max-rules"]',
      "C identifier",
    ],
    [
      "an object parameter",
      "spec.parameters",
      { MAX: { a: 1 } },
      "spec.parameters.MAX",
      "string, number or boolean",
    ],
    ["a table entry that is no object", "spec.tables", { fw_rules: [42] }, "spec.tables.fw_rules[0]", ""],
    [
      "a table name with a dash",
      "spec.tables",
      { "fw-rules": [] },
      'spec.tables["fw-rules"]',
      "C identifier",
    ],
    [
      "two vectors with one name",
      "spec.tests",
      [vector("a"), vector("a")],
      "spec.tests[1].name",
      'duplicate test vector name "a"',
    ],
    [
      "a packet with two IP headers",
      "spec.tests[0].packet.ipv6",
      { src: "fd00::1", dst: "fd00::2" },
      "spec.tests[0].packet",
      "exactly one of ipv4 or ipv6",
    ],
    [
      "a bad IPv4 address",
      "spec.tests[0].packet.ipv4.dst",
      "10.0.0.256",
      "spec.tests[0].packet.ipv4.dst",
      "IPv4 address",
    ],
    [
      "an unknown verdict",
      "spec.tests[0].expect.verdict",
      "reject",
      "spec.tests[0].expect.verdict",
      '"pass"',
    ],
  ])("rejects %s at %s", (_, field, value, path, message) => {
    const result = parseSluiceObject(withField(exampleNetworkFunction(), field, value));
    expect(result.ok).toBe(false);
    if (result.ok) return;
    expect(result.error).toMatchObject({ kind: "NetworkFunction", name: "firewall" });
    expect(result.error.issues).toContainEqual({ path, message: expect.stringContaining(message) });
  });

  it("accepts up to 256 test vectors and rejects more", () => {
    const tests = Array.from({ length: 257 }, (_, i) => vector(`v${i}`));
    expect(
      NetworkFunction.safeParse(withField(exampleNetworkFunction(), "spec.tests", tests.slice(0, 256)))
        .success,
    ).toBe(true);
    const result = parseSluiceObject(withField(exampleNetworkFunction(), "spec.tests", tests));
    expect(result.ok ? [] : result.error.issues.map((i) => i.path)).toEqual(["spec.tests"]);
  });
});
