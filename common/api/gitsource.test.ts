import { describe, expect, it } from "vitest";
import { exampleGitSource, withField } from "./examples.ts";
import { GitSource, GitSourceStatus } from "./gitsource.ts";
import { parseSluiceObject } from "./index.ts";

const sha = "0123456789abcdef0123456789abcdef01234567";

describe("GitSource", () => {
  it("parses the example and fills in Flux-like defaults", () => {
    const gs = GitSource.parse(exampleGitSource());
    expect(gs.spec).toEqual({
      url: "https://git.example.com/platform/network.git",
      ref: { branch: "main" },
      path: "clusters/prod",
      interval: "1m",
      timeout: "60s",
      suspend: false,
      prune: true,
      secretRef: { name: "git-credentials" },
    });
    expect(gs.status).toEqual({ observedGeneration: -1 });
  });

  it.each([
    ["branch", { branch: "release/1.x" }],
    ["tag", { tag: "v1.2.0" }],
    ["semver range", { semver: ">=1.0.0 <2.0.0" }],
    ["commit", { commit: sha }],
  ])("accepts a %s ref", (_, ref) => {
    expect(GitSource.parse(withField(exampleGitSource(), "spec.ref", ref)).spec.ref).toEqual(ref);
  });

  it.each([
    "https://h/r.git",
    "http://127.0.0.1:8080/r.git",
    "ssh://git@h/r.git",
    "git://127.0.0.1/r",
    "file:///srv/git/r.git",
  ])("accepts the URL %s", (url) => {
    expect(GitSource.safeParse(withField(exampleGitSource(), "spec.url", url)).success).toBe(true);
  });

  it.each([
    ["an ftp URL", "spec.url", "ftp://h/r.git", "spec.url", "scheme"],
    ["a URL with a space", "spec.url", "https://h/my repo", "spec.url", "scheme"],
    [
      "two refs",
      "spec.ref",
      { branch: "main", tag: "v1" },
      "spec.ref",
      "exactly one of branch, tag, semver or commit",
    ],
    ["an empty ref", "spec.ref", {}, "spec.ref", "exactly one of"],
    ["a short commit", "spec.ref", { commit: "abc1234" }, "spec.ref.commit", "40 lower-case hex"],
    ["a branch with a space", "spec.ref", { branch: "my branch" }, "spec.ref.branch", "Git ref name"],
    ["an interval in words", "spec.interval", "1 minute", "spec.interval", "duration like"],
    ["a zero interval", "spec.interval", "0s", "spec.interval", "longer than 0s"],
    ["a negative timeout", "spec.timeout", "-5s", "spec.timeout", "duration like"],
    ["a path leaving the repository", "spec.path", "../other", "spec.path", "without '..'"],
    ["an absolute path", "spec.path", "/etc", "spec.path", "relative path"],
    ["a bad secret name", "spec.secretRef.name", "Git_Creds", "spec.secretRef.name", "DNS-1123 subdomain"],
    ["prune as a string", "spec.prune", "yes", "spec.prune", "boolean"],
    ["an unknown spec field", "spec.branch", "main", "spec", 'unknown field "branch"'],
    ["a missing url", "spec.url", undefined, "spec.url", "is required"],
    ["a dotted name", "metadata.name", "net.work", "metadata.name", "DNS-1123 label"],
  ])("rejects %s at %s", (_, field, value, path, message) => {
    const result = parseSluiceObject(withField(exampleGitSource(), field, value));
    expect(result.ok).toBe(false);
    if (result.ok) return;
    expect(result.error).toMatchObject({ kind: "GitSource" });
    expect(result.error.issues).toContainEqual({ path, message: expect.stringContaining(message) });
  });

  it("parses a status written by the operator", () => {
    const status = GitSourceStatus.parse({
      observedGeneration: 3,
      artifact: {
        revision: `main@sha1:${sha}`,
        digest: `sha256:${"0".repeat(64)}`,
        url: "http://sluice-operator/artifacts/network.tar.gz",
        lastUpdateTime: "2025-01-02T03:04:05Z",
      },
      lastHandledReconcileAt: "2025-01-02T03:04:00Z",
      inventory: [{ kind: "ServiceChain", namespace: "sluice-system", name: "edge" }],
      conditions: [
        {
          type: "Ready",
          status: "True",
          reason: "Succeeded",
          message: "",
          lastTransitionTime: "2025-01-02T03:04:05Z",
        },
      ],
    });
    expect(status.artifact?.revision).toBe(`main@sha1:${sha}`);
    expect(
      GitSourceStatus.shape.artifact.safeParse({ ...status.artifact, revision: `sha1:${sha}` }).success,
    ).toBe(true);
  });

  it.each([
    ["revision", `main@${sha}`],
    ["digest", "sha256:XYZ"],
    ["lastUpdateTime", "yesterday"],
  ])("rejects a status artifact with a bad %s", (field, value) => {
    const artifact = {
      revision: `main@sha1:${sha}`,
      digest: `sha256:${"0".repeat(64)}`,
      url: "http://a/b.tar.gz",
      lastUpdateTime: "2025-01-02T03:04:05Z",
      [field]: value,
    };
    const result = parseSluiceObject({ ...exampleGitSource(), status: { artifact } });
    expect(result.ok).toBe(false);
    if (!result.ok) expect(result.error.issues.map((i) => i.path)).toEqual([`status.artifact.${field}`]);
  });
});
