/**
 * Targets of the data-plane benchmark and the readable table. A missed target is a finding, not
 * an error: the benchmark reports it and still exits 0.
 */

/** One figure checked against its target. */
export interface TargetCheck {
  /** e.g. `<= 15`. */
  target: string;
  /** The measured value the check used (null when the figure could not be measured). */
  value: number | null;
  unit: string;
  /** null: not measured (see `reason`). */
  pass: boolean | null;
  reason?: string;
}

/** `value <= limit`, or not measured when value is undefined/NaN. */
export function atMost(
  value: number | undefined | null,
  limit: number,
  unit: string,
  reason?: string,
): TargetCheck {
  if (value === undefined || value === null || !Number.isFinite(value))
    return { target: `<= ${limit}`, value: null, unit, pass: null, reason: reason ?? "not measured" };
  return { target: `<= ${limit}`, value, unit, pass: value <= limit };
}

/** `value == expected`. */
export function equals(value: number | undefined | null, expected: number, unit: string): TargetCheck {
  if (value === undefined || value === null || !Number.isFinite(value))
    return { target: `== ${expected}`, value: null, unit, pass: null, reason: "not measured" };
  return { target: `== ${expected}`, value, unit, pass: value === expected };
}

/** Counts of passed, failed and unmeasured checks. */
export function tally(targets: Record<string, TargetCheck>): {
  passed: number;
  failed: number;
  unmeasured: number;
} {
  const all = Object.values(targets);
  return {
    passed: all.filter((t) => t.pass === true).length,
    failed: all.filter((t) => t.pass === false).length,
    unmeasured: all.filter((t) => t.pass === null).length,
  };
}

/** Renders rows as an aligned text table. */
export function table(header: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: readonly string[]) =>
    cells
      .map((c, i) => (i === 0 ? c.padEnd(widths[i] ?? 0) : c.padStart(widths[i] ?? 0)))
      .join("  ")
      .trimEnd();
  return [line(header), widths.map((w) => "-".repeat(w)).join("  "), ...rows.map(line)].join("\n");
}

/** The readable form of the target checks. */
export function targetTable(targets: Record<string, TargetCheck>): string {
  return table(
    ["figure", "value", "target", "result"],
    Object.entries(targets).map(([name, t]) => [
      name,
      t.value === null ? "-" : `${t.value} ${t.unit}`.trim(),
      t.target,
      t.pass === null ? `n/a (${t.reason ?? "not measured"})` : t.pass ? "pass" : "MISS",
    ]),
  );
}
