#!/usr/bin/env node
// Prints the one closing line CI reads, `N passed, N failed[, N skipped]`, from vitest's JSON
// report. A missing or unreadable report counts as one failure: the run did not get to the tests.
import { readFileSync } from "node:fs";

const file = process.argv[2] ?? ".test-results/vitest.json";
let report;
try {
  report = JSON.parse(readFileSync(file, "utf8"));
} catch (err) {
  console.error(`test-summary: no vitest report at ${file}: ${err.message}`);
  console.log("0 passed, 1 failed");
  process.exit(1);
}
const passed = report.numPassedTests ?? 0;
// Suites that failed to load (a syntax error, a failing global setup) count as failures too.
const failed =
  (report.numFailedTests ?? 0) + (report.numFailedTestSuites ?? 0) - failedSuitesWithFailedTests(report);
const skipped = (report.numPendingTests ?? 0) + (report.numTodoTests ?? 0);
console.log(`${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ""}`);
process.exit(failed > 0 || report.success === false ? 1 : 0);

function failedSuitesWithFailedTests(r) {
  return (r.testResults ?? []).filter(
    (s) => s.status === "failed" && (s.assertionResults ?? []).some((a) => a.status === "failed"),
  ).length;
}
