/**
 * Checks a Prometheus scrape the way a Prometheus server and its linter would read it: the text
 * is parsed with an independent parser (parse-prometheus-text-format, a port of the reference
 * Python client's parser), then held to the naming conventions (counters end in `_total`, every
 * family has HELP and TYPE, no series twice, histogram buckets cumulative and ending in +Inf).
 */
import parsePrometheusTextFormat, { type ParsedFamily } from "parse-prometheus-text-format";

/** A parsed scrape and how many series it holds (one per bucket, `_sum` and `_count` each). */
export interface CheckedScrape {
  families: ParsedFamily[];
  /** Series as Prometheus stores them. */
  seriesCount: number;
  /** Problems found; empty when the scrape is clean. */
  problems: string[];
  /** The value of `name{labels}` (labels matched exactly, order ignored), or undefined. */
  value(name: string, labels?: Record<string, string>): number | undefined;
  family(name: string): ParsedFamily | undefined;
}

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

const escapeLabel = (v: string) => v.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");

const sameLabels = (a: Record<string, string> = {}, b: Record<string, string> = {}) =>
  Object.keys(a).length === Object.keys(b).length && Object.entries(b).every(([k, v]) => a[k] === v);

/** Parses and checks `text`. */
export function checkScrape(text: string): CheckedScrape {
  const problems: string[] = [];
  if (text.length > 0 && !text.endsWith("\n")) problems.push("the scrape does not end with a line feed");
  const seen = new Set<string>();
  for (const line of text.split("\n")) {
    if (line.startsWith("#") || line === "") continue;
    const name = /^[^{ ]+/.exec(line)?.[0] ?? "";
    if (!METRIC_NAME.test(name)) problems.push(`bad metric name in ${JSON.stringify(line)}`);
    const series = line.slice(0, line.lastIndexOf(" "));
    if (seen.has(series)) problems.push(`series ${series} appears twice`);
    seen.add(series);
  }
  const helpLines = new Set(
    text
      .split("\n")
      .filter((l) => l.startsWith("# HELP "))
      .map((l) => l.split(" ")[2]),
  );
  const families = parsePrometheusTextFormat(text);
  let seriesCount = 0;
  for (const family of families) {
    if (!helpLines.has(family.name)) problems.push(`${family.name} has no HELP`);
    if (family.type === "UNTYPED") problems.push(`${family.name} has no TYPE`);
    if (family.type === "COUNTER" && !family.name.endsWith("_total"))
      problems.push(`counter ${family.name} does not end in _total`);
    if (family.type !== "COUNTER" && family.name.endsWith("_total"))
      problems.push(`${family.name} ends in _total but is a ${family.type.toLowerCase()}`);
    for (const sample of family.metrics) {
      for (const label of Object.keys(sample.labels ?? {}))
        if (!LABEL_NAME.test(label) || label.startsWith("__"))
          problems.push(`${family.name}: bad label name ${label}`);
      if (family.type === "HISTOGRAM") {
        // The parser keeps only the buckets of a labelled histogram: read _sum and _count from the lines.
        const rest = Object.entries(sample.labels ?? {}).filter(([k]) => k !== "le");
        const match = (line: string, suffix: string) =>
          line.startsWith(`${family.name}${suffix}`) &&
          rest.every(([k, v]) => line.includes(`${k}="${escapeLabel(v)}"`));
        const lines = text.split("\n");
        const count = lines.find((l) => match(l, "_count"));
        if (!lines.some((l) => match(l, "_sum")) || !count)
          problems.push(`${family.name}: no _sum or _count`);
        // Sorted by bound: JavaScript objects list integer-like keys ("1", "5") first.
        const buckets = Object.entries(sample.buckets ?? {}).sort(
          ([a], [b]) => (a === "+Inf" ? Infinity : Number(a)) - (b === "+Inf" ? Infinity : Number(b)),
        );
        seriesCount += buckets.length + 2;
        const counts = buckets.map(([, v]) => Number(v));
        if (counts.some((c, i) => i > 0 && c < counts[i - 1]!))
          problems.push(`${family.name}: buckets are not cumulative`);
        const inf = sample.buckets?.["+Inf"];
        if (inf === undefined) problems.push(`${family.name}: no +Inf bucket`);
        else if (count && Number(inf) !== Number(count.slice(count.lastIndexOf(" ") + 1)))
          problems.push(`${family.name}: +Inf bucket != _count`);
      } else if (family.type === "SUMMARY") {
        seriesCount += Object.keys(sample.quantiles ?? {}).length + 2;
      } else {
        seriesCount += 1;
        if (Number.isNaN(Number(sample.value)) && sample.value?.toLowerCase() !== "nan")
          problems.push(`${family.name}: value ${sample.value} is not a number`);
      }
    }
  }
  const family = (name: string) => families.find((f) => f.name === name);
  return {
    families,
    seriesCount,
    problems,
    family,
    value(name, labels) {
      const sample = family(name)?.metrics.find((m) => sameLabels(m.labels, labels));
      return sample?.value === undefined ? undefined : Number(sample.value);
    },
  };
}
