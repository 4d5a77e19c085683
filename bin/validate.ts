/**
 * The `sluice validate` and `sluice test` commands: argument handling and what they print.
 * The checks themselves are in check.ts.
 */
import { rootLogger } from "../common/log.ts";
import type { CheckReport, Problem, VectorRow } from "./check.ts";
import { ExitCode as Exit, parseCommandLine, usageError } from "./cli.ts";
import { Progress } from "./progress.ts";

/**
 * `sluice validate <dir>`: every manifest parsed and validated, every chain planned, every
 * network function compiled and loaded through the verifier (unless `--no-load`). Exit 0 when
 * all of it passed, 1 with every problem located by file and line otherwise.
 */
export function validate(argv: string[]): Promise<number> {
  return command("validate", argv);
}

/**
 * `sluice test <dir>`: everything `validate` does, then every network function's and every
 * chain's test vectors run in the kernel; prints one row per vector (expected, got).
 */
export function test(argv: string[]): Promise<number> {
  return command("test", argv);
}

async function command(name: "validate" | "test", argv: string[]): Promise<number> {
  const line = parseCommandLine(
    name,
    argv,
    {
      "cache-dir": { type: "string" },
      json: { type: "boolean", default: false },
      ...(name === "validate" ? { "no-load": { type: "boolean" as const, default: false } } : {}),
    },
    { positionals: true },
  );
  if (typeof line === "number") return line;
  const { values, positionals } = line;
  if (positionals.length !== 1) return usageError(name, "give exactly one directory");
  const dir = positionals[0]!;
  // Library logs are for long-running processes; this command reports everything itself.
  if (!process.env.SLUICE_LOG_LEVEL) rootLogger.level = "silent";
  const { checkDirectory, CheckUsageError, defaultCacheDir, EnvironmentError } = await import("./check.ts");
  const json = values.json === true;
  let report: CheckReport;
  try {
    report = await checkDirectory({
      dir,
      load: values["no-load"] !== true,
      vectors: name === "test",
      cacheDir: (values["cache-dir"] as string | undefined) ?? defaultCacheDir(),
      progress: new Progress(process.stderr, !json && process.stderr.isTTY === true),
    });
  } catch (err) {
    if (err instanceof CheckUsageError) {
      return usageError(name, err.message);
    }
    if (err instanceof EnvironmentError) {
      process.stderr.write(`sluice ${name}: this host cannot run the check: ${err.message}\n`);
      return Exit.Environment;
    }
    throw err;
  }
  const failedVectors = report.vectors.filter((v) => !v.passed);
  const ok = report.problems.length === 0 && failedVectors.length === 0;
  if (json) {
    process.stdout.write(JSON.stringify({ ok, ...report }, null, 2) + "\n");
    return ok ? Exit.Ok : Exit.Failed;
  }

  for (const problem of report.problems) process.stderr.write(formatProblem(problem));
  for (const note of report.notes) process.stderr.write(`note: ${note}\n`);
  if (name === "test") {
    if (report.vectors.length > 0) process.stdout.write(formatVectorTable(report.vectors));
    for (const v of failedVectors) {
      process.stdout.write(
        `${v.location}: ${v.of} vector "${v.vector}" (${v.hook}): expected ${v.expected}, got ${v.got}\n`,
      );
    }
  }
  process.stdout.write(summary(name, report, failedVectors.length));
  return ok ? Exit.Ok : Exit.Failed;
}

/** `file:line: Subject: message`, then the detail indented under it. */
export function formatProblem(problem: Problem): string {
  const head = [problem.location, problem.subject, problem.message].filter(Boolean).join(": ");
  const detail = problem.detail
    ? problem.detail
        .trimEnd()
        .split("\n")
        .map((line) => `    ${line}`)
        .join("\n") + "\n"
    : "";
  return `${head}\n${detail}`;
}

/** One row per vector: RESULT, OF, HOOK, VECTOR, EXPECTED, GOT. */
export function formatVectorTable(rows: readonly VectorRow[]): string {
  const table = [
    ["RESULT", "OF", "HOOK", "VECTOR", "EXPECTED", "GOT"],
    ...rows.map((r) => [r.passed ? "ok" : "FAIL", r.of, r.hook, r.vector, r.expected, r.got]),
  ];
  const widths = table[0]!.map((_, i) => Math.max(...table.map((r) => r[i]!.length)));
  return (
    table
      .map((r) => r.map((cell, i) => (i === r.length - 1 ? cell : cell.padEnd(widths[i]!))).join("  "))
      .join("\n") + "\n"
  );
}

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? "" : "s"}`;
}

function summary(name: "validate" | "test", report: CheckReport, failedVectors: number): string {
  const lines: string[] = [];
  const head = `sluice ${name} ${report.dir}`;
  if (report.problems.length > 0) {
    const stage = report.files === 0 ? "; the manifests were rejected, nothing was compiled" : "";
    lines.push(`${head}: ${plural(report.problems.length, "problem")}${stage}`);
  } else {
    const found = `${plural(report.files, "file")}, ${plural(report.functions, "NetworkFunction")}, ${plural(report.chains, "ServiceChain")}`;
    const compiled = `${plural(report.compiled + report.cached, "function")} compiled (${report.cached} from cache)`;
    const verified = report.loaded
      ? `, ${plural(report.verified, "load")} accepted by the verifier`
      : "; nothing loaded (--no-load)";
    lines.push(`${head}: ok: ${found}; ${compiled}${verified}`);
  }
  if (name === "test") {
    const total = report.vectors.length;
    lines.push(
      total === 0
        ? "no test vectors ran"
        : `${plural(total, "vector")}: ${total - failedVectors} passed${failedVectors > 0 ? `, ${failedVectors} failed` : ""}`,
    );
  }
  return lines.join("\n") + "\n";
}
