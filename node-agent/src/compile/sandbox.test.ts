import { randomBytes } from "node:crypto";
import { mkdir, mkdtemp, readFile, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { compile } from "./compile.ts";
import { CompileError } from "./errors.ts";
import {
  programFiles,
  runSandboxed,
  SandboxRunError,
  spawnConfinedNode,
  type SandboxPolicy,
} from "./sandbox.ts";

/**
 * User C is hostile until compiled: every case below must end in a typed CompileError, in
 * bounded time, and clang's output must not carry a byte of any file outside the NF's own
 * source tree.
 */

let work: string;
/** The NF's source tree: all clang may read besides sluice's and the named system headers. */
let artifact: string;
let cacheDir: string;
/** A file next to the artifact (outside it) holding a random token. */
let secretPath: string;
let secret: string;
let hostname: string;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "sluice-sandbox-"));
  artifact = join(work, "artifact", "network", "nfs", "evil");
  cacheDir = join(work, "cache");
  await mkdir(artifact, { recursive: true });
  secret = `SECRET_${randomBytes(12).toString("hex")}`;
  secretPath = join(work, "secret.h");
  await writeFile(secretPath, `${secret}\n#error ${secret}\n`);
  hostname = (await readFile("/etc/hostname", "utf8")).trim();
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

async function compileHostile(name: string, source: string | Buffer, limits = {}): Promise<CompileError> {
  await writeFile(join(artifact, name), source);
  const started = performance.now();
  const error = await compile({ sourceRoot: artifact, entry: name, cacheDir, limits }).catch(
    (err: unknown) => err,
  );
  const ms = performance.now() - started;
  expect(error, `${name} must not compile`).toBeInstanceOf(CompileError);
  const { stderr, message } = error as CompileError;
  for (const text of [stderr, message]) {
    expect(text).not.toContain(secret);
    expect(text.length).toBeLessThanOrEqual(4 * 1024 + 200);
  }
  // The host name is a single word: it must not show up as a word of the output.
  if (hostname) expect(stderr.split(/[^A-Za-z0-9_.-]+/)).not.toContain(hostname);
  expect(ms).toBeLessThan(30_000);
  return error as CompileError;
}

const NF_TAIL = `\nchar LICENSE[] __attribute__((section("license"), used)) = "GPL";\n`;

describe("compiler sandbox: hostile sources give a CompileError and leak nothing", () => {
  it('#include "/etc/shadow" is refused', async () => {
    const error = await compileHostile("shadow.bpf.c", `#include "/etc/shadow"\n${NF_TAIL}`);
    expect(error.failure).toBe("source");
    expect(error.stderr).toMatch(/\/etc\/shadow': (Permission denied|No such file)/);
  });

  it('#include "/etc/hostname", a readable file, is refused without its content', async () => {
    const error = await compileHostile("hostname.bpf.c", `#include "/etc/hostname"\n${NF_TAIL}`);
    expect(error.stderr).toMatch(/cannot open file '\/etc\/hostname': Permission denied/);
  });

  it("an absolute include of a file next to the artifact is refused", async () => {
    const error = await compileHostile("abs.bpf.c", `#include "${secretPath}"\n${NF_TAIL}`);
    expect(error.stderr).toMatch(/Permission denied/);
  });

  it('#include "../../../../secret.h" climbing out of the artifact is refused', async () => {
    const error = await compileHostile("climb.bpf.c", `#include "../../../../secret.h"\n${NF_TAIL}`);
    expect(error.stderr).toMatch(/Permission denied/);
  });

  it("a symlink in the artifact pointing outside is not followed", async () => {
    await symlink(secretPath, join(artifact, "link.h"));
    try {
      const error = await compileHostile("symlink.bpf.c", `#include "link.h"\n${NF_TAIL}`);
      expect(error.stderr).toMatch(/link\.h': Permission denied/);
    } finally {
      await rm(join(artifact, "link.h"));
    }
  });

  it('#include "/proc/self/environ" is refused', async () => {
    const error = await compileHostile("environ.bpf.c", `#include "/proc/self/environ"\n${NF_TAIL}`);
    expect(error.stderr).toMatch(/\/proc\/self\/environ': Permission denied/);
  });

  it("<stdio.h> and other host headers are not on the include path", async () => {
    const error = await compileHostile("stdio.bpf.c", `#include <stdio.h>\n${NF_TAIL}`);
    expect(error.stderr).toMatch(/'stdio\.h' file not found/);
  });

  it("<linux/../../../etc/hostname> cannot climb out of the system headers", async () => {
    await compileHostile("sysclimb.bpf.c", `#include <linux/../../../etc/hostname>\n${NF_TAIL}`);
  });

  it(".incbin of a host file in inline asm is refused", async () => {
    const error = await compileHostile("incbin.bpf.c", `asm(".incbin \\"${secretPath}\\"");\n${NF_TAIL}`);
    expect(error.stderr).toMatch(/incbin/);
  });

  it("#embed (unknown to clang 14) is an error", async () => {
    const error = await compileHostile(
      "embed.bpf.c",
      `const char x[] = {\n#embed "${secretPath}"\n};\n${NF_TAIL}`,
    );
    expect(error.failure).toBe("source");
  });

  it("a preprocessor bomb is stopped by the time or memory limit", async () => {
    const defines = Array.from({ length: 40 }, (_, i) => `#define A${i + 1} A${i} A${i}`).join("\n");
    const bomb = `#define A0 1,\n${defines}\nint big[] = { A40 0 };\n${NF_TAIL}`;
    const started = performance.now();
    const error = await compileHostile("bomb.bpf.c", bomb, { timeoutMs: 4_000, memoryBytes: 1024 ** 3 });
    expect(["timeout", "limit"]).toContain(error.failure);
    expect(performance.now() - started).toBeLessThan(12_000);
  });

  it("a 10 MB source file is refused before clang runs", async () => {
    const big = Buffer.alloc(10 * 1024 * 1024, "/* padding */\n");
    const started = performance.now();
    const error = await compileHostile("huge.bpf.c", big);
    expect(error.failure).toBe("limit");
    expect(error.message).toMatch(/huge\.bpf\.c is 10485760 bytes, over the 8388608-byte limit/);
    expect(performance.now() - started).toBeLessThan(5_000);
    await rm(join(artifact, "huge.bpf.c"));
  });
});

describe("sandbox", () => {
  let bash: string[];
  let policy: SandboxPolicy;
  beforeAll(async () => {
    bash = await programFiles("/bin/bash");
    await mkdir(join(work, "out"), { recursive: true });
    policy = {
      read: [artifact],
      execute: bash,
      write: [join(work, "out")],
      landlock: "required",
      limits: { cpuSeconds: 10, memoryBytes: 1024 ** 3, fileBytes: 1024 ** 2, openFiles: 64 },
    };
  });
  const run = (script: string) =>
    runSandboxed(
      {
        program: bash[0]!,
        args: ["-c", script],
        cwd: work,
        env: {},
        timeoutMs: 10_000,
        maxOutputBytes: 65536,
      },
      policy,
    ).then(
      (stderr) => ({ ok: true as const, stderr }),
      (err: unknown) => ({ ok: false as const, err: err as SandboxRunError }),
    );

  it("reads only what the policy allows and writes only into its output directory", async () => {
    // bash builtins only: the sandbox lets it execute nothing but itself.
    const result = await run(
      `read -r line < ${secretPath}; echo "read: $line" >&2; echo x > ${work}/escape; echo ok > ${work}/out/file && read -r back < ${work}/out/file && echo "back: $back" >&2`,
    );
    expect(result.ok, result.ok ? "" : `${result.err.message}: ${result.err.stderr}`).toBe(true);
    if (!result.ok) return;
    expect(result.stderr).not.toContain(secret);
    expect(result.stderr).toMatch(/secret\.h: Permission denied/);
    expect(result.stderr).toMatch(/escape: Permission denied/);
    expect(result.stderr).toContain("back: ok");
  });

  it("has no network: TCP, UDP and Unix sockets are refused", async () => {
    const result = await run(
      "exec 3<>/dev/tcp/127.0.0.1/80 || echo tcp-refused >&2; exec 4<>/dev/udp/127.0.0.1/53 || echo udp-refused >&2",
    );
    expect(result.ok).toBe(true);
    if (result.ok) {
      expect(result.stderr).toContain("tcp-refused");
      expect(result.stderr).toContain("udp-refused");
      expect(result.stderr).toMatch(/socket: Operation not permitted/);
    }
  });

  it("a program that runs past its time is killed and reported as a timeout", async () => {
    const started = performance.now();
    const result = await runSandboxed(
      {
        program: bash[0]!,
        args: ["-c", "while :; do :; done"],
        cwd: work,
        env: {},
        timeoutMs: 1_000,
        maxOutputBytes: 1024,
      },
      policy,
    ).catch((err: unknown) => err);
    expect(result).toBeInstanceOf(SandboxRunError);
    expect((result as SandboxRunError).failure).toBe("timeout");
    expect(performance.now() - started).toBeLessThan(5_000);
  });

  it("cannot execute anything but the program and its libraries", async () => {
    const result = await run("/usr/bin/id || echo exec-refused >&2");
    expect(result.ok).toBe(true);
    if (result.ok) expect(result.stderr).toContain("exec-refused");
  });
});

describe("confined Node process (the object checker's)", () => {
  it("opens no file, creates no socket and calls no bpf(), but runs and talks over its pipes", async () => {
    const script = String.raw`
const tryIt = (what, f) => { try { f(); return what + ": allowed"; } catch (e) { return what + ": " + e.code; } };
const results = [
  tryIt("read", () => fs.readFileSync(${JSON.stringify(secretPath)})),
  tryIt("hostname", () => fs.readFileSync("/etc/hostname")),
  tryIt("write", () => fs.writeFileSync(${JSON.stringify(join(work, "confined-out"))}, "x")),
  "bpf: " + (Number(syscall(321, "int", 0, "void *", null, "uint32_t", 0)) === -1 ? errno() : "allowed"),
  "socket: " + (Number(syscall(41, "int", 2, "int", 1, "int", 0)) === -1 ? errno() : "allowed"),
  "loaded libbpf: " + (preloaded.length === 1),
];
fs.writeSync(1, JSON.stringify(results) + "\n");
`;
    const child = spawnConfinedNode(script, ["libbpf.so.1"]);
    let stdout = "";
    child.stdout!.setEncoding("utf8").on("data", (chunk: string) => (stdout += chunk));
    let stderr = "";
    child.stderr!.setEncoding("utf8").on("data", (chunk: string) => (stderr += chunk));
    const code = await new Promise((resolvePromise) => child.on("exit", resolvePromise));
    expect(code, stderr).toBe(0);
    const results = JSON.parse(stdout.trim()) as string[];
    const eperm = process.arch === "x64" || process.arch === "arm64" ? "EPERM" : "allowed";
    expect(results).toEqual([
      "read: EACCES",
      "hostname: EACCES",
      "write: EACCES",
      `bpf: ${eperm}`,
      `socket: ${eperm}`,
      "loaded libbpf: true",
    ]);
  });
});
