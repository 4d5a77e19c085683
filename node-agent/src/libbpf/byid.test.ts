/**
 * The agent never looks BPF objects up by id: the kernel allows that only with CAP_SYS_ADMIN,
 * which the chart does not give the agent. Only tests and benchmarks may use byid.ts.
 */
import { readdirSync, readFileSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, test } from "vitest";

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), "../../..");
/** Where production code lives. */
const PRODUCTION_DIRS = ["node-agent", "operator", "common", "bin"];
/** The only files that may name the by-id calls: their FFI declarations and the test-only module. */
const ALLOWED = new Set(["node-agent/src/libbpf/ffi.ts", "node-agent/src/libbpf/byid.ts"]);

function productionFiles(dir: string): string[] {
  const files: string[] = [];
  for (const entry of readdirSync(join(repoRoot, dir), { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) {
      if (entry.name !== "node_modules") files.push(...productionFiles(path));
    } else if (/\.(ts|mjs|js)$/.test(entry.name) && !/\.test\.ts$/.test(entry.name)) {
      files.push(path);
    }
  }
  return files;
}

describe("BPF objects by id", () => {
  test("no production file imports byid.ts or calls a by-id or next-id function", () => {
    const offenders = PRODUCTION_DIRS.flatMap(productionFiles)
      .map((file) => relative(repoRoot, join(repoRoot, file)))
      .filter((file) => !ALLOWED.has(file))
      .filter((file) =>
        /libbpf\/byid|\/byid\.ts|GetFdById|GetNextId|get_fd_by_id|get_next_id/.test(
          readFileSync(join(repoRoot, file), "utf8"),
        ),
      );
    expect(offenders).toEqual([]);
  });
});
