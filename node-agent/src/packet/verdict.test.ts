import { describe, expect, it } from "vitest";
import type { Verdict } from "../../../common/api/testvector.ts";
import { returnCodeToVerdict, verdictToReturnCode } from "./verdict.ts";

describe("verdict <-> return code", () => {
  const xdp: [Verdict, number][] = [
    ["aborted", 0],
    ["drop", 1],
    ["pass", 2],
    ["tx", 3],
    ["redirect", 4],
  ];
  it.each(xdp)("XDP %s is %i both ways", (verdict, code) => {
    expect(verdictToReturnCode("xdp", verdict)).toBe(code);
    expect(returnCodeToVerdict("xdp", code)).toBe(verdict);
  });

  it.each(["tc-ingress", "tc-egress", "tc"] as const)(
    "%s: pass is TC_ACT_OK, drop is TC_ACT_SHOT",
    (hook) => {
      expect(verdictToReturnCode(hook, "pass")).toBe(0);
      expect(verdictToReturnCode(hook, "drop")).toBe(2);
      expect(verdictToReturnCode(hook, "redirect")).toBe(7);
      expect(returnCodeToVerdict(hook, 0)).toBe("pass");
      expect(returnCodeToVerdict(hook, 2)).toBe("drop");
      expect(returnCodeToVerdict(hook, 7)).toBe("redirect");
    },
  );

  it("tc: aborted is dropped as the chain macro does, tx has no code", () => {
    expect(verdictToReturnCode("tc-ingress", "aborted")).toBe(2);
    expect(verdictToReturnCode("tc-ingress", "tx")).toBeUndefined();
  });

  it("tc: TC_ACT_UNSPEC passes, whether read signed or as test-run's unsigned 32 bits", () => {
    expect(returnCodeToVerdict("tc-ingress", -1)).toBe("pass");
    expect(returnCodeToVerdict("tc-ingress", 0xffffffff)).toBe("pass");
  });

  it("codes that are no verdict on the hook map to undefined", () => {
    expect(returnCodeToVerdict("xdp", 5)).toBeUndefined();
    expect(returnCodeToVerdict("tc-egress", 4)).toBeUndefined(); // TC_ACT_STOLEN
  });
});
