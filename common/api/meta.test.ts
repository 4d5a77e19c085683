import { describe, expect, it } from "vitest";
import {
  Duration,
  LabelKey,
  labelSelectorToString,
  matchesLabelSelector,
  parseDuration,
  RelativePath,
  type LabelSelector,
} from "./meta.ts";

describe("durations", () => {
  it.each([
    ["30s", 30_000],
    ["1m", 60_000],
    ["1h30m", 5_400_000],
    ["500ms", 500],
    ["1.5s", 1_500],
    ["1 minute", Number.NaN],
    ["", Number.NaN],
  ])("%s is %d ms", (text, ms) => {
    expect(parseDuration(text)).toBe(ms);
  });

  it("rejects a zero duration", () => {
    expect(Duration.safeParse("0s").error?.issues[0]?.message).toBe("must be longer than 0s");
  });
});

describe("RelativePath", () => {
  it.each([".", "./", "a", "a/b.c", "./nfs/x.c", ".github/x", "a/..b", "a/...", "dir/"])(
    "accepts %s",
    (p) => {
      expect(RelativePath.safeParse(p).success).toBe(true);
    },
  );
  it.each(["", "/etc", "..", "../a", "a/../b", "a/..", "a//b"])("rejects %j", (p) => {
    expect(RelativePath.safeParse(p).success).toBe(false);
  });
});

describe("LabelKey", () => {
  it.each(["app", "app.kubernetes.io/name", "node-role.kubernetes.io/edge", "A_b.c"])("accepts %s", (k) => {
    expect(LabelKey.safeParse(k).success).toBe(true);
  });
  it.each(["", "-a", "a b", "Example.com/a", "a/", "/a", `a/${"b".repeat(64)}`])("rejects %j", (k) => {
    expect(LabelKey.safeParse(k).success).toBe(false);
  });
});

describe("label selectors", () => {
  const selector: LabelSelector = {
    matchLabels: { zone: "a", "node-role.kubernetes.io/edge": "" },
    matchExpressions: [
      { key: "tier", operator: "In", values: ["gold", "silver"] },
      { key: "cordon", operator: "DoesNotExist" },
    ],
  };

  it.each([
    [{ zone: "a", "node-role.kubernetes.io/edge": "", tier: "gold" }, true],
    [{ zone: "b", "node-role.kubernetes.io/edge": "", tier: "gold" }, false],
    [{ zone: "a", tier: "gold" }, false],
    [{ zone: "a", "node-role.kubernetes.io/edge": "", tier: "bronze" }, false],
    [{ zone: "a", "node-role.kubernetes.io/edge": "", tier: "gold", cordon: "" }, false],
  ])("matches %j: %s", (labels, expected) => {
    expect(matchesLabelSelector(selector, labels)).toBe(expected);
  });

  it("matches everything without a selector", () => {
    expect(matchesLabelSelector(undefined, {})).toBe(true);
    expect(matchesLabelSelector({}, { a: "b" })).toBe(true);
  });

  it("writes the apiserver's selector syntax", () => {
    expect(labelSelectorToString(selector)).toBe(
      "node-role.kubernetes.io/edge=,zone=a,tier in (gold,silver),!cordon",
    );
    expect(
      labelSelectorToString({
        matchExpressions: [
          { key: "a", operator: "NotIn", values: ["x"] },
          { key: "b", operator: "Exists" },
        ],
      }),
    ).toBe("a notin (x),b");
    expect(labelSelectorToString(undefined)).toBe("");
  });
});
