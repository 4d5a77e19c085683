import { gzipSync } from "node:zlib";
import { describe, expect, it } from "vitest";
import {
  API_VERSION,
  GitSource,
  NetworkFunction,
  ServiceChain,
  type NetworkFunctionSpec,
  type ServiceChainSpec,
} from "../../../common/api/index.ts";
import { sha256Digest } from "../../../common/artifact/build.ts";
import { writeTar } from "../../../common/artifact/tar.ts";
import { resolvePlan } from "./plan.ts";
import { sourceDirOf, sourceTreeDigest, sourceTreeKey } from "./source-tree.ts";

/**
 * A node's plan revision changes only when what the node runs changes: a commit is a set of
 * files in the GitSource artifact plus the specs applied from it, and the revision is computed
 * as the operator does (source-tree digests of the functions' directories).
 */

const NS = "default";

interface Commit {
  files: Record<string, string>;
  fw: Partial<NetworkFunctionSpec>;
  other: Partial<NetworkFunctionSpec>;
  chain: Partial<ServiceChainSpec>;
}

const base: Commit = {
  files: {
    "README.md": "# network\n",
    "nf/fw/fw.bpf.c": '#include "fw.h"\nint x;\n',
    "nf/fw/fw.h": "#define LIMIT 1\n",
    "nf/other/other.bpf.c": "int other;\n",
  },
  fw: { parameters: { LIMIT: 10 }, tables: { rules: [{ port: 23 }] } },
  other: { parameters: { X: 1 } },
  chain: { rollout: { maxUnavailable: 1 } as ServiceChainSpec["rollout"] },
};

const vector = (dport: number) => ({
  name: `port ${dport}`,
  packet: { ipv4: { src: "10.0.0.1", dst: "10.0.0.2" }, tcp: { sport: 40000, dport } },
  expect: { verdict: "drop" as const },
});

function revisionOf(commit: Commit): string {
  const tarball = gzipSync(
    writeTar(
      Object.entries(commit.files).map(([path, text]) => ({
        type: "file" as const,
        path,
        executable: false,
        content: Buffer.from(text),
      })),
    ),
  );
  const digest = sha256Digest(tarball);
  const fn = (name: string, dir: string, spec: Partial<NetworkFunctionSpec>) =>
    NetworkFunction.parse({
      apiVersion: API_VERSION,
      kind: "NetworkFunction",
      metadata: { name, namespace: NS },
      spec: {
        hooks: ["xdp"],
        source: { sourceRef: { name: "net" }, path: `nf/${dir}/${dir}.bpf.c` },
        ...spec,
      },
    });
  const functions = new Map([
    ["fw", fn("fw", "fw", commit.fw)],
    ["other", fn("other", "other", commit.other)],
  ]);
  const source = GitSource.parse({
    apiVersion: API_VERSION,
    kind: "GitSource",
    metadata: { name: "net", namespace: NS },
    spec: { url: "https://example.com/net.git" },
    status: {
      artifact: {
        revision: `main@sha1:${"1".repeat(40)}`,
        digest,
        url: `http://sluice.example/artifacts/${NS}/net/${digest.slice(7)}.tar.gz`,
        lastUpdateTime: "2025-03-01T09:00:00Z",
      },
    },
  });
  const sourceTrees = new Map<string, string>();
  for (const nf of functions.values()) {
    const src = nf.spec.source;
    if ("path" in src)
      sourceTrees.set(sourceTreeKey(digest, src.path), sourceTreeDigest(tarball, sourceDirOf(src.path)));
  }
  const chain = ServiceChain.parse({
    apiVersion: API_VERSION,
    kind: "ServiceChain",
    metadata: { name: "web", namespace: NS },
    spec: { functions: [{ name: "fw" }], attachment: { interfaces: ["eth0"], hook: "xdp" }, ...commit.chain },
  });
  const result = resolvePlan({ chain, functions, sources: new Map([["net", source]]), sourceTrees });
  if (!result.ok) throw new Error(result.message);
  return result.plan.revision;
}

const withFile = (path: string, text: string): Commit => ({
  ...base,
  files: { ...base.files, [path]: text },
});

describe("plan revision: only what the node runs", () => {
  const before = revisionOf(base);

  it.each<[string, Commit]>([
    ["a README change", withFile("README.md", "# network, documented\n")],
    ["a new file outside the function's directory", withFile("docs/rollout.md", "how we roll\n")],
    ["an unrelated function's C source", withFile("nf/other/other.bpf.c", "int other2;\n")],
    ["an unrelated function's parameters", { ...base, other: { parameters: { X: 2 } } }],
    [
      "rollout settings (maxUnavailable, autoRollback, minReadySeconds)",
      {
        ...base,
        chain: {
          rollout: {
            maxUnavailable: "100%",
            autoRollback: false,
            minReadySeconds: 30,
          } as ServiceChainSpec["rollout"],
        },
      },
    ],
  ])("keeps the revision on %s", (_what, commit) => {
    expect(revisionOf(commit)).toBe(before);
  });

  it.each<[string, Commit]>([
    ["a change of the function's entry file", withFile("nf/fw/fw.bpf.c", '#include "fw.h"\nint y;\n')],
    ["a change of a header beside it", withFile("nf/fw/fw.h", "#define LIMIT 2\n")],
    ["a new file in the function's directory", withFile("nf/fw/extra.h", "\n")],
    ["a parameter change", { ...base, fw: { ...base.fw, parameters: { LIMIT: 11 } } }],
    ["a table change", { ...base, fw: { ...base.fw, tables: { rules: [{ port: 22 }] } } }],
    ["a function test-vector change", { ...base, fw: { ...base.fw, tests: [vector(23)] } }],
    ["a chain test-vector change", { ...base, chain: { ...base.chain, tests: [vector(23)] } }],
    [
      "an attachment change (interfaces)",
      { ...base, chain: { ...base.chain, attachment: { interfaces: ["eth1"], hook: "xdp" } } },
    ],
  ])("gives a new revision on %s", (_what, commit) => {
    expect(revisionOf(commit)).not.toBe(before);
  });

  it("is the same for the same content in another artifact (new commit, same files)", () => {
    expect(revisionOf({ ...base, files: { ...base.files } })).toBe(before);
  });
});

describe("sourceTreeDigest", () => {
  const tar = (files: Record<string, string>, executable: string[] = []) =>
    gzipSync(
      writeTar(
        Object.entries(files).map(([path, text]) => ({
          type: "file" as const,
          path,
          executable: executable.includes(path),
          content: Buffer.from(text),
        })),
      ),
    );

  it("ignores member order and files outside the directory, counts names, contents and the executable bit", () => {
    const a = sourceTreeDigest(tar({ "x/a.c": "1", "x/b.h": "2", "y/c.c": "3" }), "x");
    expect(sourceTreeDigest(tar({ "y/c.c": "other", "x/b.h": "2", "x/a.c": "1" }), "x")).toBe(a);
    expect(sourceTreeDigest(tar({ "x/a.c": "1", "x/b.h": "2!" }), "x")).not.toBe(a);
    expect(sourceTreeDigest(tar({ "x/a.c": "1", "x/c.h": "2" }), "x")).not.toBe(a);
    expect(sourceTreeDigest(tar({ "x/a.c": "1", "x/b.h": "2" }, ["x/b.h"]), "x")).not.toBe(a);
    // "xy/" is not inside "x/".
    expect(sourceTreeDigest(tar({ "x/a.c": "1", "x/b.h": "2", "xy/d.c": "4" }), "x")).toBe(a);
  });

  it("takes the whole artifact for an entry at its top", () => {
    expect(sourceDirOf("main.c")).toBe(".");
    expect(sourceTreeDigest(tar({ "main.c": "1", "README.md": "a" }), ".")).not.toBe(
      sourceTreeDigest(tar({ "main.c": "1", "README.md": "b" }), "."),
    );
  });
});
