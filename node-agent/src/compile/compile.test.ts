import { mkdir, mkdtemp, readFile, readdir, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { BUILTIN_NFS } from "../nf/registry.ts";
import { BPF_DIR, compile as compileOnce, type CompileOptions, type CompileResult } from "./compile.ts";
import { CompileError, ToolchainError } from "./errors.ts";

const NF_SOURCE = `// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
#include "sluice.h"

SEC("xdp")
int tiny_xdp(struct xdp_md *ctx)
{
	return SLUICE_EXIT(ctx, SLUICE_CONTINUE);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
`;

let work: string;
let sourceRoot: string;
let cacheDir: string;

beforeEach(async () => {
  work = await mkdtemp(join(tmpdir(), "sluice-compile-"));
  sourceRoot = join(work, "src");
  cacheDir = join(work, "cache");
  await mkdir(sourceRoot);
  await writeFile(join(sourceRoot, "tiny.bpf.c"), NF_SOURCE);
});

afterEach(async () => {
  await rm(work, { recursive: true, force: true });
});

/**
 * clang runs, counted by the results: a result that is not `cached` ran clang (clang runs in a
 * sandbox that can write nowhere but its output directory, so a counting wrapper could not).
 */
let clangRunCount = 0;
async function counted(result: Promise<CompileResult>): Promise<CompileResult> {
  const r = await result;
  if (!r.cached) clangRunCount++;
  return r;
}
async function clangRuns(): Promise<number> {
  return clangRunCount;
}
beforeEach(() => {
  clangRunCount = 0;
});

function options(extra: Partial<CompileOptions> = {}): CompileOptions {
  return { sourceRoot, entry: "tiny.bpf.c", cacheDir, ...extra };
}

async function isElf(path: string): Promise<boolean> {
  return (await readFile(path)).subarray(0, 4).equals(Buffer.from([0x7f, 0x45, 0x4c, 0x46]));
}

const compile = (options: CompileOptions) => counted(compileOnce(options));

describe("compile", () => {
  it("compiles every built-in NF, the root and the fused program without warnings", async () => {
    const sources = [
      ...Object.values(BUILTIN_NFS).map((nf) => ({
        sourceRoot: join(BPF_DIR, nf.sourceDir),
        entry: nf.entry.slice(nf.sourceDir.length + 1),
        programs: Object.values(nf.programs),
      })),
      { sourceRoot: BPF_DIR, entry: "root/root.bpf.c", programs: ["sluice_root_xdp", "sluice_root_tc"] },
      { sourceRoot: BPF_DIR, entry: "bench/fused.bpf.c", programs: ["fused_xdp"] },
      {
        sourceRoot: join(BPF_DIR, "../examples/gitops/network/nfs/ttl-guard"),
        entry: "ttl_guard.bpf.c",
        programs: ["ttl_guard_xdp"],
      },
    ];
    for (const source of sources) {
      const result = await compile({ sourceRoot: source.sourceRoot, entry: source.entry, cacheDir });
      expect(result.warnings, source.entry).toBe("");
      const object = await readFile(result.objectPath);
      expect(await isElf(result.objectPath)).toBe(true);
      for (const program of source.programs)
        expect(object.includes(program), `${source.entry}: ${program}`).toBe(true);
      expect(object.includes(".BTF"), `${source.entry} carries BTF`).toBe(true);
    }
  });

  it("a second compile of unchanged sources is a cache hit and does not run clang", async () => {
    const first = await compile(options());
    expect(first.cached).toBe(false);
    expect(await clangRuns()).toBe(1);

    const inode = (await stat(first.objectPath)).ino;
    const second = await compile(options());
    expect(second).toMatchObject({ cached: true, objectPath: first.objectPath, cacheKey: first.cacheKey });
    expect(await clangRuns()).toBe(1);
    // Not rewritten: a clang run would have renamed a new file into place.
    expect((await stat(second.objectPath)).ino).toBe(inode);
  });

  it("a changed file anywhere in the source root, or a changed define, compiles again", async () => {
    const base = await compile(options());
    await writeFile(join(sourceRoot, "notes.txt"), "a file the entry does not include still changes the key");
    const changedTree = await compile(options());
    const changedDefine = await compile(options({ defines: { SLUICE_EXAMPLE: 1 } }));
    expect(new Set([base.cacheKey, changedTree.cacheKey, changedDefine.cacheKey]).size).toBe(3);
    expect([changedTree.cached, changedDefine.cached]).toEqual([false, false]);
    expect(await clangRuns()).toBe(3);
  });

  it("a syntax error is a CompileError with clang's file:line and no object in the cache", async () => {
    await writeFile(
      join(sourceRoot, "broken.bpf.c"),
      `#include "sluice.h"\n\nint broken(void)\n{\n\treturn 1\n}\n`,
    );
    const error = await compile(options({ entry: "broken.bpf.c" })).catch((err: unknown) => err);
    expect(error).toBeInstanceOf(CompileError);
    const compileError = error as CompileError;
    expect(compileError.failure).toBe("source");
    expect(compileError.exitCode).toBe(1);
    expect(compileError.message).toMatch(
      /^compile broken\.bpf\.c failed \(source\): broken\.bpf\.c:5:\d+: error: expected ';'/,
    );
    expect(compileError.stderr).toContain("broken.bpf.c:5:");
    expect(compileError.diagnostics[0]).toMatchObject({ file: "broken.bpf.c", line: 5, severity: "error" });
    // Only the private system include directory: no object, no leftover build directory.
    expect((await readdir(cacheDir)).filter((name) => !name.startsWith(".system-include-"))).toEqual([]);
  });

  it("warnings are returned, also when the object comes from the cache", async () => {
    await writeFile(
      join(sourceRoot, "tiny.bpf.c"),
      NF_SOURCE.replace("return SLUICE_EXIT", "int unused_counter;\n\treturn SLUICE_EXIT"),
    );
    const first = await compile(options());
    expect(first.warnings).toMatch(/tiny\.bpf\.c:\d+:\d+: warning: unused variable 'unused_counter'/);
    const second = await compile(options());
    expect(second.cached).toBe(true);
    expect(second.warnings).toBe(first.warnings);
  });

  it("concurrent compiles of the same sources run clang once and share the object", async () => {
    const results = await Promise.all([1, 2, 3, 4].map(() => compile(options())));
    expect(new Set(results.map((r) => r.objectPath)).size).toBe(1);
    expect(results.filter((r) => !r.cached)).toHaveLength(1);
    expect(await clangRuns()).toBe(1);
  });

  it("two independent compilers racing on one cache directory leave one whole object", async () => {
    vi.resetModules();
    const other = (await import("./compile.ts")) as typeof import("./compile.ts");
    expect(other.compile).not.toBe(compileOnce);
    const [a, b] = await Promise.all([compile(options()), counted(other.compile(options()))]);
    expect(a.objectPath).toBe(b.objectPath);
    // Both may run clang, or the slower one may find the faster one's object.
    expect([1, 2]).toContain(await clangRuns());
    expect(await isElf(a.objectPath)).toBe(true);
    expect((await readdir(cacheDir)).filter((name) => /\.tmp-|^\.build-/.test(name))).toEqual([]);
  });

  it("a corrupt object in the cache is compiled again instead of being used", async () => {
    const first = await compile(options());
    await writeFile(first.objectPath, "not an ELF object");
    const second = await compile(options());
    expect(second.cached).toBe(false);
    expect(await isElf(second.objectPath)).toBe(true);
  });

  it("an entry outside the source root is refused", async () => {
    await expect(compile(options({ entry: "../escape.bpf.c" }))).rejects.toThrow(/inside the source root/);
  });

  it("a missing clang is a ToolchainError naming it", async () => {
    const error = await compile(options({ clang: join(work, "no-such-clang") })).catch((err: unknown) => err);
    expect(error).toBeInstanceOf(ToolchainError);
    expect((error as Error).message).toContain("no-such-clang");
  });
});
