/**
 * The demo as a user runs it: `npm run demo`, as root, on this machine. It must go from start to
 * finish by itself with `--duration`, stop cleanly on Ctrl-C, lose no packet across its commits,
 * and leave nothing behind: no namespace, no pin, no process, no files.
 */
import { spawn } from "node:child_process";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { repoRoot, run } from "../kernel/harness.ts";

/** A demo run: its output so far, and its end. */
function startDemo(command: string[]) {
  // Its own process group, as a terminal's foreground job: Ctrl-C goes to the whole group.
  const child = spawn("setpriv", ["--pdeathsig", "KILL", ...command], {
    cwd: repoRoot,
    stdio: ["ignore", "pipe", "pipe"],
    detached: true,
  });
  const demo = { output: "", exit: undefined as Promise<number | null> | undefined, child };
  child.stdout.on("data", (c: Buffer) => (demo.output += c.toString()));
  child.stderr.on("data", (c: Buffer) => (demo.output += c.toString()));
  demo.exit = new Promise((resolve) => child.once("exit", (code) => resolve(code)));
  return demo as typeof demo & { exit: Promise<number | null> };
}

async function waitForOutput(demo: ReturnType<typeof startDemo>, pattern: RegExp, timeoutMs: number) {
  const deadline = Date.now() + timeoutMs;
  while (!pattern.test(demo.output)) {
    if (Date.now() > deadline) throw new Error(`demo: no ${pattern} within ${timeoutMs} ms:\n${demo.output}`);
    if (demo.child.exitCode !== null) throw new Error(`demo ended before ${pattern}:\n${demo.output}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** Kills the demo's process group if a test fails half way (the demo's own cleanup then runs). */
function bound<T>(demo: ReturnType<typeof startDemo>, timeoutMs: number, work: Promise<T>): Promise<T> {
  const timer = setTimeout(() => {
    try {
      process.kill(-demo.child.pid!, "SIGINT");
    } catch {
      // gone already
    }
  }, timeoutMs);
  return work.finally(() => clearTimeout(timer));
}

/** What the demo said it made: namespaces, pin directory, work directory. */
function madeBy(output: string) {
  const ns = /^demo: namespaces (\S+) (\S+) (\S+);.* pins under (\S+)$/m.exec(output);
  const repo = /^demo: repository (\S+)\/repo /m.exec(output);
  if (!ns || !repo) throw new Error(`the demo did not say what it made:\n${output}`);
  return { namespaces: ns.slice(1, 4) as string[], pins: ns[4]!, workDir: repo[1]! };
}

/** Nothing of the demo is left on the machine. */
async function expectNothingLeft(output: string) {
  const made = madeBy(output);
  const namespaces = (await run("ip", ["netns", "list"])).split("\n").map((l) => l.split(" ")[0]);
  for (const ns of made.namespaces) expect(namespaces, `namespace ${ns} is gone`).not.toContain(ns);
  expect(existsSync(made.pins), `${made.pins} is gone`).toBe(false);
  expect(existsSync(made.workDir), `${made.workDir} is gone`).toBe(false);
  // No process still refers to them (sluice run, the traffic ends).
  const survivors: string[] = [];
  for (const pid of readdirSync("/proc").filter((p) => /^\d+$/.test(p))) {
    let cmdline = "";
    try {
      cmdline = readFileSync(join("/proc", pid, "cmdline"), "utf8").replaceAll("\0", " ");
    } catch {
      continue;
    }
    if ([made.pins, made.workDir, ...made.namespaces].some((name) => cmdline.includes(name)))
      survivors.push(`${pid}: ${cmdline}`);
  }
  expect(survivors, "processes of the demo still running").toEqual([]);
}

describe("npm run demo", () => {
  it("with --duration runs start to finish by itself: three commits switched in, no packet lost, nothing left", async () => {
    const demo = startDemo(["npm", "run", "--silent", "demo", "--", "--duration", "20"]);
    const code = await bound(demo, 150_000, demo.exit);
    const output = demo.output;
    expect(code, output).toBe(0);
    const summary = /^demo: sent (\d+), received (\d+), lost (\d+); (\d+) of (\d+) commits switched in/m.exec(
      output,
    );
    expect(summary, output).not.toBeNull();
    const [, sent, received, lost, switched, commits] = summary!.map(Number);
    expect(lost).toBe(0);
    expect(received).toBe(sent);
    // 20 s at 5000 packets/s, give or take a busy machine.
    expect(sent).toBeGreaterThan(50_000);
    expect(switched).toBe(3);
    expect(commits).toBe(3);
    // The per-NF table was shown, with rates, and the firewall change shows as drops.
    expect(output).toMatch(/^\s+NF\s+PACKETS\s+PKT\/S\s+DROPS\s+DROP\/S$/m);
    const lastFirewall = [...output.matchAll(/^\s+firewall\s+(\d+)\s+\S+\s+(\d+)\s+\S+$/gm)].at(-1);
    expect(Number(lastFirewall?.[2]), "probes denied by the committed firewall rule").toBeGreaterThan(0);
    expect(output).toMatch(/^demo: cleaned up: .*namespace .*pins .*files /m);
    await expectNothingLeft(output);
    console.log(
      output
        .split("\n")
        .filter((l) => l.startsWith("demo:   ") || /^demo: sent/.test(l))
        .join("\n"),
    );
  });

  it("stops on Ctrl-C with the totals so far and cleans up", async () => {
    const demo = startDemo(["bash", "examples/demo/demo.sh", "--gap", "2"]);
    await bound(demo, 120_000, waitForOutput(demo, /^demo: revision \S+ live .* after the commit/m, 110_000));
    // Ctrl-C in a terminal: SIGINT to the foreground process group.
    process.kill(-demo.child.pid!, "SIGINT");
    const code = await bound(demo, 60_000, demo.exit);
    const output = demo.output;
    expect(code, output).toBe(0);
    expect(output).toMatch(/^demo: sent (\d+), received \1, lost 0; .*stopped by Ctrl-C$/m);
    await expectNothingLeft(output);
  });
});
