import { describe, expect, it } from "vitest";
import { checkSourceUrl, parentNamespace, type SourcePolicy } from "./policy.ts";

describe("checkSourceUrl", () => {
  const hosts: SourcePolicy = {
    allowedGitHosts: ["git.example.com", "*.corp.example", "mirror.example:8443"],
  };
  it.each([
    { title: "file:// is refused by default", url: "file:///srv/git/x.git", policy: {}, ok: false },
    {
      title: "file:// with allowFileSources",
      url: "file:///srv/git/x.git",
      policy: { allowFileSources: true },
      ok: true,
    },
    { title: "file://localhost/ is a file URL too", url: "file://localhost/etc", policy: {}, ok: false },
    { title: "FILE:// in capitals is a file URL too", url: "FILE:///etc", policy: {}, ok: false },
    { title: "https without an allow-list", url: "https://anywhere.example/x.git", policy: {}, ok: true },
    { title: "a listed host", url: "https://git.example.com/x.git", policy: hosts, ok: true },
    { title: "a listed host, other case", url: "ssh://git@GIT.example.com/x.git", policy: hosts, ok: true },
    {
      title: "an unlisted host",
      url: "https://git.example.com.evil.example/x.git",
      policy: hosts,
      ok: false,
    },
    { title: "a host under a listed domain", url: "git://a.b.corp.example/x.git", policy: hosts, ok: true },
    {
      title: "the bare listed domain is not below it",
      url: "https://corp.example/x.git",
      policy: hosts,
      ok: false,
    },
    { title: "a listed host:port", url: "https://mirror.example:8443/x.git", policy: hosts, ok: true },
    {
      title: "the same host on another port",
      url: "https://mirror.example:9000/x.git",
      policy: hosts,
      ok: false,
    },
    {
      title: "user info does not count as the host",
      url: "https://git.example.com@evil.example/x",
      policy: hosts,
      ok: false,
    },
  ])("$title: ok=$ok", ({ url, policy, ok }) => {
    expect(checkSourceUrl(url, policy).ok).toBe(ok);
  });

  it("the refusal of file:// names the flag that allows it", () => {
    const verdict = checkSourceUrl("file:///x", {});
    expect(!verdict.ok && verdict.message).toMatch(/--allow-file-sources/);
  });
});

describe("parentNamespace", () => {
  it("reads the namespace of the applying GitSource from the label", () => {
    expect(parentNamespace({ "sluice.dev/source": "team-a.app" }, "sluice.dev/source")).toBe("team-a");
    expect(parentNamespace({}, "sluice.dev/source")).toBeUndefined();
    expect(parentNamespace(undefined, "sluice.dev/source")).toBeUndefined();
  });
});
