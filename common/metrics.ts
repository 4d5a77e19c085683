/**
 * Prometheus text exposition format 0.0.4, written by hand: the format is small and stable,
 * and sluice exposes a handful of counters and gauges, not worth a client library.
 */

/** Content-Type of a scrape answer in text format 0.0.4. */
export const METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

/** Label name -> value of one sample. */
export type Labels = Readonly<Record<string, string>>;

/** One sample of a family: `name` + optional suffix (`_sum`, `_count`), labels, value. */
export interface Sample {
  /** Appended to the family name (for summaries: `_sum`, `_count`). */
  suffix?: string;
  labels?: Labels;
  value: number | bigint;
}

/** One metric family: the HELP and TYPE lines and its samples. */
export interface MetricFamily {
  name: string;
  help: string;
  type: "counter" | "gauge" | "summary" | "untyped";
  samples: Sample[];
}

/** Thrown for a metric or label name the format does not allow. */
export class MetricNameError extends Error {
  override name = "MetricNameError";
}

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

/** Escapes a label value: backslash, double quote and line feed. */
export function escapeLabelValue(value: string): string {
  return value.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");
}

/** Escapes HELP text: backslash and line feed (quotes stay as they are). */
export function escapeHelp(text: string): string {
  return text.replace(/\\/g, "\\\\").replace(/\n/g, "\\n");
}

/** A sample value as the format spells it (`NaN`, `+Inf`, `-Inf`; bigints exact). */
export function formatValue(value: number | bigint): string {
  if (typeof value === "bigint") return value.toString();
  if (Number.isNaN(value)) return "NaN";
  if (value === Infinity) return "+Inf";
  if (value === -Infinity) return "-Inf";
  return String(value);
}

function formatLabels(labels: Labels | undefined): string {
  const entries = Object.entries(labels ?? {});
  if (entries.length === 0) return "";
  for (const [name] of entries)
    if (!LABEL_NAME.test(name) || name.startsWith("__"))
      throw new MetricNameError(`invalid label name ${JSON.stringify(name)}`);
  return `{${entries.map(([k, v]) => `${k}="${escapeLabelValue(v)}"`).join(",")}}`;
}

/** Renders families in text format 0.0.4 (every line ends with a line feed). */
export function formatMetrics(families: readonly MetricFamily[]): string {
  const lines: string[] = [];
  for (const family of families) {
    if (!METRIC_NAME.test(family.name))
      throw new MetricNameError(`invalid metric name ${JSON.stringify(family.name)}`);
    lines.push(`# HELP ${family.name} ${escapeHelp(family.help)}`);
    lines.push(`# TYPE ${family.name} ${family.type}`);
    for (const s of family.samples)
      lines.push(`${family.name}${s.suffix ?? ""}${formatLabels(s.labels)} ${formatValue(s.value)}`);
  }
  return lines.length ? `${lines.join("\n")}\n` : "";
}

/**
 * A counter keyed by label values, for events counted in process (switches, reconciles).
 * Labels are kept in first-seen order so a scrape reads the same from one time to the next.
 */
export class LabeledCounter {
  readonly #values = new Map<string, { labels: Labels; value: number }>();

  /** Adds `by` (default 1) to the series with `labels`. */
  inc(labels: Labels = {}, by = 1): void {
    const key = JSON.stringify(Object.entries(labels).sort(([a], [b]) => a.localeCompare(b)));
    const entry = this.#values.get(key);
    if (entry) entry.value += by;
    else this.#values.set(key, { labels: { ...labels }, value: by });
  }

  /** Current value of the series with `labels` (0 if never counted). */
  get(labels: Labels = {}): number {
    const key = JSON.stringify(Object.entries(labels).sort(([a], [b]) => a.localeCompare(b)));
    return this.#values.get(key)?.value ?? 0;
  }

  /** Every series as samples, with an optional suffix (for a summary's `_sum`/`_count`). */
  samples(suffix?: string): Sample[] {
    return [...this.#values.values()].map((e) => ({
      ...(suffix ? { suffix } : {}),
      labels: e.labels,
      value: e.value,
    }));
  }
}
