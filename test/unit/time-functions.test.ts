import { describe, expect, it } from "vitest";
import { MAX_TIME_SAMPLE, parseTimeSample } from "../../bin/cli.ts";

describe("--time-functions", () => {
  it("takes 0 (off) and powers of two up to the most", () => {
    expect(parseTimeSample("0")).toBe(0);
    expect(parseTimeSample("1")).toBe(1);
    expect(parseTimeSample("16")).toBe(16);
    expect(parseTimeSample(String(MAX_TIME_SAMPLE))).toBe(MAX_TIME_SAMPLE);
  });

  it("refuses what the kernel's sampling mask cannot be", () => {
    for (const text of ["3", "12", "-4", "1.5", "", "on", String(MAX_TIME_SAMPLE * 2)])
      expect(parseTimeSample(text)).toBeUndefined();
  });
});
