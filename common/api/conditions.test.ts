import { describe, expect, it } from "vitest";
import { failureConditions } from "../errors.ts";
import {
  applyConditions,
  Condition,
  ConditionType,
  Conditions,
  findCondition,
  formatTime,
  isConditionTrue,
  Reason,
  removeCondition,
  setCondition,
  type ConditionUpdate,
} from "./conditions.ts";

const t0 = new Date("2025-01-02T03:04:05.678Z");
const t1 = new Date("2025-01-02T03:10:00.000Z");
const ready = (status: "True" | "False", reason: string): ConditionUpdate => ({
  type: ConditionType.Ready,
  status,
  reason,
  message: reason,
  observedGeneration: 1,
});

describe("setCondition", () => {
  it("appends a new condition stamped with now, in whole seconds", () => {
    expect(setCondition(undefined, ready("False", Reason.Progressing), t0)).toEqual([
      { ...ready("False", Reason.Progressing), lastTransitionTime: "2025-01-02T03:04:05Z" },
    ]);
  });

  it("keeps lastTransitionTime when only the reason or message changes", () => {
    const first = setCondition([], ready("False", Reason.Progressing), t0);
    const second = setCondition(first, ready("False", Reason.CompileFailed), t1);
    expect(second).toEqual([
      { ...ready("False", Reason.CompileFailed), lastTransitionTime: "2025-01-02T03:04:05Z" },
    ]);
  });

  it("moves lastTransitionTime when the status changes, keeping the condition's position", () => {
    const list = setCondition(
      setCondition([], ready("False", Reason.Progressing), t0),
      { ...ready("True", Reason.Progressing), type: ConditionType.Reconciling },
      t0,
    );
    const next = setCondition(list, ready("True", Reason.Succeeded), t1);
    expect(next.map((c) => c.type)).toEqual(["Ready", "Reconciling"]);
    expect(findCondition(next, "Ready")?.lastTransitionTime).toBe("2025-01-02T03:10:00Z");
    expect(isConditionTrue(next, "Ready")).toBe(true);
  });

  it("leaves the input list untouched", () => {
    const list = setCondition([], ready("False", Reason.Progressing), t0);
    const snapshot = structuredClone(list);
    setCondition(list, ready("True", Reason.Succeeded), t1);
    removeCondition(list, "Ready");
    expect(list).toEqual(snapshot);
  });

  it("removes a resolved abnormal-true condition", () => {
    const list = setCondition(
      [],
      { type: "Stalled", status: "True", reason: Reason.InvalidSpec, message: "" },
      t0,
    );
    expect(removeCondition(list, "Stalled")).toEqual([]);
    expect(isConditionTrue(removeCondition(list, "Stalled"), "Stalled")).toBe(false);
  });
});

describe("Condition", () => {
  it("accepts what setCondition produces", () => {
    expect(Conditions.safeParse(setCondition([], ready("True", Reason.Succeeded), t0)).success).toBe(true);
  });

  it.each([
    ["reason", "Not CamelCase"],
    ["status", "Maybe"],
    ["lastTransitionTime", "yesterday"],
    ["type", "has space"],
  ])("rejects a bad %s", (field, value) => {
    const result = Condition.safeParse({
      ...ready("True", Reason.Succeeded),
      lastTransitionTime: formatTime(t0),
      [field]: value,
    });
    expect(result.error?.issues.map((i) => i.path.join("."))).toEqual([field]);
  });

  it("rejects two conditions of one type", () => {
    const one = setCondition([], ready("True", Reason.Succeeded), t0)[0] as Condition;
    expect(Conditions.safeParse([one, one]).error?.issues[0]?.message).toContain(
      "duplicate condition type Ready",
    );
  });

  it("has CamelCase reasons that match the schema", () => {
    for (const reason of Object.values(Reason)) {
      expect(Condition.shape.reason.safeParse(reason).success, reason).toBe(true);
    }
  });
});

describe("applyConditions and failureConditions", () => {
  const t0 = new Date("2025-01-01T00:00:00Z");
  const t1 = new Date("2025-01-01T00:01:00Z");

  it("a stalling failure sets Ready=False and Stalled; success later removes Stalled", () => {
    const failed = applyConditions(
      [],
      failureConditions({ reason: Reason.InvalidSpec, message: "bad", retry: "stall" }),
      3,
      t0,
    );
    expect(failed.map((c) => [c.type, c.status, c.reason, c.observedGeneration])).toEqual([
      ["Ready", "False", "InvalidSpec", 3],
      ["Stalled", "True", "InvalidSpec", 3],
    ]);
    const ok = applyConditions(failed, { ready: ["True", Reason.Succeeded, "fine"] }, 4, t1);
    expect(ok.map((c) => [c.type, c.status, c.lastTransitionTime])).toEqual([
      ["Ready", "True", formatTime(t1)],
    ]);
  });

  it("a waiting failure is Reconciling, a failure that backs off is neither", () => {
    const waiting = failureConditions({ reason: Reason.SourceNotReady, message: "later", retry: "wait" });
    expect(applyConditions([], waiting, 1, t0).map((c) => c.type)).toEqual(["Ready", "Reconciling"]);
    const backoff = failureConditions({
      reason: Reason.GitOperationFailed,
      message: "down",
      retry: "backoff",
    });
    expect(applyConditions([], backoff, 1, t0).map((c) => c.type)).toEqual(["Ready"]);
  });
});
