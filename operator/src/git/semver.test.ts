import { describe, expect, it } from "vitest";
import { maxSatisfying, parseRange, parseVersion, SemverRangeError } from "./semver.ts";

const tags = [
  "v0.1.0",
  "v0.1.5",
  "v0.2.0",
  "v1.0.0",
  "v1.2.0",
  "v1.2.7",
  "v1.3.0-rc.1",
  "v1.3.0",
  "v1.4.2",
  "v2.0.0-beta.1",
  "v2.0.0-beta.2",
  "2.1.0",
  "release-3", // not a version: never picked
  "latest",
];

describe("semver ranges pick the highest matching tag", () => {
  const cases: [range: string, picked: string | undefined][] = [
    ["1.2.7", "v1.2.7"],
    ["=1.2.0", "v1.2.0"],
    ["v1.0.0", "v1.0.0"],
    ["^1.2.0", "v1.4.2"],
    ["^0.1.0", "v0.1.5"],
    ["^0.2", "v0.2.0"],
    ["~1.2.0", "v1.2.7"],
    ["~1.3", "v1.3.0"],
    [">=1.0.0 <1.3.0", "v1.2.7"],
    [">= 1.0.0 < 1.3.0", "v1.2.7"],
    ["<1.0.0", "v0.2.0"],
    [">1.4", "2.1.0"],
    ["<=1.3", "v1.3.0"],
    ["1.x", "v1.4.2"],
    ["1.2.*", "v1.2.7"],
    ["1.2", "v1.2.7"],
    ["*", "2.1.0"],
    ["1.0.0 - 1.3.0", "v1.3.0"],
    ["^0.1.0 || ~1.2.0", "v1.2.7"],
    ["^2.0.0-beta.1", "2.1.0"],
    [">=2.0.0-beta.1 <2.0.0", "v2.0.0-beta.2"],
    ["^5.0.0", undefined],
    // pre-releases are only picked when the range names one of the same version
    [">=1.2.8 <1.3.0", undefined],
    ["<2.0.0", "v1.4.2"],
  ];
  it.each(cases)("%s picks %s", (range, picked) => {
    expect(maxSatisfying(tags, parseRange(range))).toBe(picked);
  });

  it("the same version under two tag names resolves to the same tag whatever the listing order", () => {
    const r = parseRange("^1.0.0");
    expect(maxSatisfying(["v1.1.0", "1.1.0"], r)).toBe("1.1.0");
    expect(maxSatisfying(["1.1.0", "v1.1.0"], r)).toBe("1.1.0");
  });

  it("orders pre-releases by semver precedence, not by text", () => {
    expect(maxSatisfying(["1.0.0-rc.2", "1.0.0-rc.10", "1.0.0-rc.9"], parseRange(">=1.0.0-rc.1"))).toBe(
      "1.0.0-rc.10",
    );
  });

  it.each(["", "abc", "1.2.3.4", ">=", "^x.1", "1.2.3 - "])("rejects the malformed range %j", (range) => {
    expect(() => parseRange(range)).toThrow(SemverRangeError);
  });

  it("parses only full versions as tags", () => {
    expect(parseVersion("v1.2.3+build.7")).toEqual({ major: 1, minor: 2, patch: 3, prerelease: [] });
    expect(parseVersion("1.2")).toBeUndefined();
    expect(parseVersion("01.2.3")).toBeUndefined();
  });
});
