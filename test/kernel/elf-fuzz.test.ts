import { spawn } from "node:child_process";
import { copyFile, mkdir, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BPF_DIR, checkObjectOpens, compile } from "../../node-agent/src/compile/index.ts";

/**
 * Fuzzing the ELF loading path: mutated copies of a real compiled NF (bit flips, truncation,
 * section and ELF header edits, bytes overwritten inside .BTF, .BTF.ext, relocations, .maps)
 * are opened the way the agent opens objects, in a child process. Every failure must be a typed
 * error. libbpf 1.1 itself crashes (SIGSEGV) on some of these inputs; for each one found, the
 * compile step's trial open in a throw-away process must catch it, so that such an object never
 * reaches the cache or the agent's own process.
 */

const DRIVER = fileURLToPath(new URL("./fixtures/elf-fuzz-driver.ts", import.meta.url));
/** 3,000 in every run; set SLUICE_FUZZ_CASES / SLUICE_FUZZ_SEED for a longer or another run. */
const CASES = Number(process.env.SLUICE_FUZZ_CASES ?? 3_000);
const SEED = Number(process.env.SLUICE_FUZZ_SEED ?? 20261204);

let work: string;
let objectPath: string;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "sluice-elf-fuzz-"));
  const result = await compile({
    sourceRoot: join(BPF_DIR, "nf/firewall"),
    entry: "firewall.bpf.c",
    cacheDir: join(work, "cache"),
  });
  objectPath = result.objectPath;
  await mkdir(join(work, "crashers"));
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

interface Batch {
  outcomes: Map<number, string>;
  /** The case the child was working on when it died, if it died on a signal. */
  crashed?: { index: number; mutation: string; signal: string };
}

/** Runs cases first..last in one child; stops at the first crash. */
function runBatch(first: number, last: number): Promise<Batch> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(
      process.execPath,
      ["--import", "tsx", DRIVER, objectPath, work, String(SEED), String(first), String(last)],
      {
        stdio: ["ignore", "pipe", "ignore"],
        env: { ...process.env, LOG_LEVEL: "silent" },
      },
    );
    const outcomes = new Map<number, string>();
    let current: { index: number; mutation: string } | undefined;
    let buffered = "";
    child.stdout.setEncoding("utf8");
    child.stdout.on("data", (chunk: string) => {
      buffered += chunk;
      const lines = buffered.split("\n");
      buffered = lines.pop()!;
      for (const line of lines) {
        const [word, index, ...rest] = line.split(" ");
        if (word === "start") current = { index: Number(index), mutation: rest.join(" ") };
        else {
          outcomes.set(Number(index), `${word} ${rest.join(" ")}`.trim());
          current = undefined;
        }
      }
    });
    child.on("error", reject);
    child.on("close", (code, signal) => {
      if (signal && current) resolvePromise({ outcomes, crashed: { ...current, signal } });
      else if (code !== 0) reject(new Error(`fuzz driver exited with ${code ?? signal} outside a case`));
      else resolvePromise({ outcomes });
    });
  });
}

describe("ELF loading path under fuzzing", () => {
  it(`${CASES} mutated objects: typed errors only, and every libbpf crash is caught before the agent`, async () => {
    const started = performance.now();
    const outcomes = new Map<number, string>();
    const crashes: { index: number; mutation: string; signal: string; path: string }[] = [];
    for (let first = 0; first < CASES;) {
      const batch = await runBatch(first, CASES - 1);
      for (const [index, outcome] of batch.outcomes) outcomes.set(index, outcome);
      if (!batch.crashed) break;
      const path = join(work, "crashers", `${batch.crashed.index}.o`);
      await copyFile(join(work, "case.o"), path);
      crashes.push({ ...batch.crashed, path });
      first = batch.crashed.index + 1;
    }
    const elapsed = performance.now() - started;

    const counts = { ok: 0, typed: 0, untyped: 0 };
    const untyped: string[] = [];
    for (const [index, outcome] of outcomes) {
      const kind = outcome.split(" ")[0] as keyof typeof counts;
      counts[kind]++;
      if (kind === "untyped") untyped.push(`case ${index}: ${outcome}`);
    }
    console.log(
      `ELF fuzz: ${CASES} cases in ${(elapsed / 1000).toFixed(1)} s: ${counts.ok} opened, ${counts.typed} typed errors, ` +
        `${crashes.length} libbpf crashes (${crashes.map((c) => `#${c.index} ${c.signal}: ${c.mutation}`).join("; ")})`,
    );
    expect(untyped).toEqual([]);
    expect(outcomes.size + crashes.length).toBe(CASES);

    for (const crash of crashes) {
      const check = await checkObjectOpens(crash.path);
      expect(check, `case ${crash.index} (${crash.mutation})`).toMatchObject({ ok: false, failure: "crash" });
    }
    // The unmutated object passes the same check.
    expect(await checkObjectOpens(objectPath)).toEqual({ ok: true });
  }, 300_000);
});
