import { execFile } from "node:child_process";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BPF_DIR } from "../../node-agent/src/compile/index.ts";
import { asChartAgent } from "../support/sluice.ts";

/**
 * The compiler sandbox as deployed: the agent has CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN only
 * (no CAP_SYS_ADMIN: no mount namespace, no chroot), and its container may refuse syscalls. User
 * C still compiles, hostile C still leaks nothing, and a node where Landlock cannot be used
 * refuses to compile rather than run clang unconfined, unless told otherwise.
 */

const CHILD = fileURLToPath(new URL("./fixtures/compile-child.ts", import.meta.url));

interface Outcome {
  ok: boolean;
  cached?: boolean;
  name?: string;
  failure?: string;
  message?: string;
  stderr?: string;
}

let work: string;
let evil: string;
let shadowLine: string;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "sluice-compile-sandbox-"));
  evil = join(work, "evil");
  await mkdir(evil);
  await writeFile(join(evil, "shadow.bpf.c"), `#include "/etc/shadow"\n`);
  shadowLine = (await readFile("/etc/shadow", "utf8")).split("\n")[0]!;
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

function run(argv: string[], env: NodeJS.ProcessEnv = {}): Promise<Outcome> {
  return new Promise((resolvePromise, reject) => {
    execFile(
      argv[0]!,
      argv.slice(1),
      { env: { ...process.env, LOG_LEVEL: "silent", ...env }, timeout: 120_000 },
      (err, stdout, stderr) => {
        const line = stdout.trim().split("\n").pop() ?? "";
        if (!line.startsWith("{")) return reject(new Error(`child failed: ${err?.message ?? ""}\n${stderr}`));
        resolvePromise(JSON.parse(line) as Outcome);
      },
    );
  });
}

const child = (mode: string, sourceRoot: string, entry: string, cache: string) => [
  process.execPath,
  "--import",
  "tsx",
  CHILD,
  mode,
  sourceRoot,
  entry,
  join(work, cache),
];

describe("compiler sandbox with the chart agent's capabilities", () => {
  it("a built-in NF compiles with only CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN", async () => {
    const outcome = await run(
      asChartAgent(child("plain", join(BPF_DIR, "nf/firewall"), "firewall.bpf.c", "caps")),
    );
    expect(outcome).toEqual({ ok: true, cached: false });
  });

  it('#include "/etc/shadow" is refused there too, without a line of it', async () => {
    const outcome = await run(asChartAgent(child("plain", evil, "shadow.bpf.c", "caps-evil")));
    expect(outcome).toMatchObject({ ok: false, name: "CompileError", failure: "source" });
    expect(outcome.stderr).toMatch(/cannot open file '\/etc\/shadow': Permission denied/);
    expect(outcome.stderr).not.toContain(shadowLine);
  });
});

describe("a node where Landlock cannot be used", () => {
  it("refuses to compile with NotSupported, naming Landlock and the way out", async () => {
    const outcome = await run(
      asChartAgent(child("deny-landlock", join(BPF_DIR, "nf/noop"), "noop.bpf.c", "nolandlock")),
    );
    expect(outcome).toMatchObject({ ok: false, name: "NotSupportedError" });
    expect(outcome.message).toMatch(
      /Landlock is not available \(ENOSYS\).*SLUICE_COMPILE_LANDLOCK=if-available/,
    );
  });

  it("compiles with SLUICE_COMPILE_LANDLOCK=if-available, still without other host headers", async () => {
    const ok = await run(
      asChartAgent(child("deny-landlock", join(BPF_DIR, "nf/noop"), "noop.bpf.c", "optout")),
      {
        SLUICE_COMPILE_LANDLOCK: "if-available",
      },
    );
    expect(ok).toEqual({ ok: true, cached: false });
    await writeFile(join(evil, "stdio.bpf.c"), `#include <stdio.h>\n`);
    const refused = await run(asChartAgent(child("deny-landlock", evil, "stdio.bpf.c", "optout")), {
      SLUICE_COMPILE_LANDLOCK: "if-available",
    });
    expect(refused).toMatchObject({ ok: false, failure: "source" });
    expect(refused.stderr).toMatch(/'stdio\.h' file not found/);
  });
});
