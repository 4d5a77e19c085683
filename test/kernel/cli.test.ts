/**
 * `sluice validate <dir>` and `sluice test <dir>` as a user runs them in CI: the real command in
 * a child process, on the example repository and on broken copies of it. Each broken copy must
 * fail with exit code 1 and a message that points at the cause: file and line for YAML and C,
 * the field path for schema errors, the verifier log for a rejection, the vector with expected
 * and got for a failing test vector.
 */
import { execFile } from "node:child_process";
import { readlinkSync } from "node:fs";
import { cp, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { asChartAgent, CHART_AGENT_CAP_MASK, effectiveCaps, sluiceArgv } from "../support/sluice.ts";
import { fixturesDir, repoRoot } from "./harness.ts";

const example = join(repoRoot, "examples/gitops/network");
const ttlGuard = "nfs/ttl-guard/ttl_guard.bpf.c";

let work: string;
let cacheDir: string;
let copies = 0;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "sluice-cli-test-"));
  // Shared by every run of this file: the example is compiled once, later runs hit the cache.
  cacheDir = join(work, "cache");
});

afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs the sluice command line as a user does and returns its exit code and output. By default
 * with exactly the capabilities the chart gives the agent (CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN),
 * the least a CI job that loads the programs can have: a path that needs more fails here.
 */
function sluice(
  args: readonly string[],
  options: { withoutCapabilities?: boolean; onSpawn?: (pid: number) => void } = {},
): Promise<Run> {
  const command = sluiceArgv(args);
  // Still uid 0 (so every file stays readable wherever the repository lives), but with an empty
  // capability bounding set: no CAP_BPF, CAP_NET_ADMIN or CAP_SYS_ADMIN, like an unprivileged user.
  const [file, ...argv] = options.withoutCapabilities
    ? ["setpriv", "--bounding-set=-all", "--inh-caps=-all", ...command]
    : asChartAgent(command);
  return new Promise((resolve, reject) => {
    const child = execFile(file!, argv, { cwd: repoRoot, timeout: 60_000 }, (err, stdout, stderr) => {
      if (err && typeof err.code !== "number") reject(err);
      else resolve({ code: err ? (err.code as number) : 0, stdout, stderr });
    });
    if (child.pid !== undefined) options.onSpawn?.(child.pid);
  });
}

/**
 * The effective capabilities of `pid` once it runs node: before that it is still the wrapper
 * (nsenter, setpriv), which starts as full root and drops to the chart's set when it execs.
 */
async function capsOnceExeced(pid: number): Promise<bigint> {
  for (const deadline = Date.now() + 10_000; Date.now() < deadline;) {
    let exe = "";
    try {
      exe = readlinkSync(`/proc/${pid}/exe`);
    } catch {
      throw new Error(`process ${pid} ended before it ran node`);
    }
    if (exe === process.execPath) return effectiveCaps(pid);
    await new Promise((ok) => setTimeout(ok, 10));
  }
  throw new Error(`process ${pid} did not exec node within 10 s`);
}

/** A copy of an example repository (default the network one) with `edits` applied: file -> edit of its text. */
async function brokenCopy(
  edits: Record<string, (text: string) => string>,
  from: string = example,
): Promise<string> {
  const dir = join(work, `copy-${++copies}`);
  await cp(from, dir, { recursive: true });
  for (const [file, edit] of Object.entries(edits)) {
    const path = join(dir, file);
    const before = await readFile(path, "utf8");
    const after = edit(before);
    if (after === before) throw new Error(`the edit of ${file} changed nothing`);
    await writeFile(path, after);
  }
  return dir;
}

/** Replaces the `nth` (1-based) occurrence of `from` in `text`. */
function replaceNth(text: string, from: string, to: string, nth = 1): string {
  let at = -1;
  for (let i = 0; i < nth; i++) {
    at = text.indexOf(from, at + 1);
    if (at < 0) throw new Error(`occurrence ${nth} of ${JSON.stringify(from)} not found`);
  }
  return text.slice(0, at) + to + text.slice(at + from.length);
}

/** 1-based line of the first line containing `needle`, after `after` if given. */
function lineOf(text: string, needle: string, after?: string): number {
  const start = after === undefined ? 0 : text.indexOf(after);
  const at = text.indexOf(needle, start);
  if (start < 0 || at < 0) throw new Error(`${JSON.stringify(needle)} not found`);
  return text.slice(0, at).split("\n").length;
}

/**
 * The body of a table of manifests `validate` must refuse: `from` with `edit` applied to its
 * functions.yaml fails with exit code 1 at the line holding `line`, with `message`, before
 * anything compiles.
 */
function refusedByValidate(from: string) {
  return async (_: string, edit: (text: string) => string, line: string, message: string) => {
    const dir = await brokenCopy({ "functions.yaml": edit }, from);
    const run = await sluice(["validate", dir, "--cache-dir", cacheDir]);
    expect(run.code).toBe(1);
    const text = await readFile(join(dir, "functions.yaml"), "utf8");
    expect(run.stderr).toContain(`functions.yaml:${lineOf(text, line)}: NetworkFunction `);
    expect(run.stderr).toContain(message);
    expect(run.stdout).toContain("the manifests were rejected, nothing was compiled");
  };
}

const exampleVectors = [
  ["nf firewall", "telnet is refused", "drop"],
  ["nf firewall", "https goes through", "pass"],
  ["nf ratelimit", "a burst within the limit passes", "pass, passed=10"],
  ["nf ttl-guard", "a packet at its last hop is dropped", "drop"],
  ["nf ttl-guard", "a normal packet goes on", "pass"],
  ["chain edge", "telnet never reaches the host", "drop, firewall.drops=1"],
  ["chain edge", "web traffic crosses the whole chain", "pass, flowmon.packets=1"],
] as const;

describe("sluice validate and sluice test on the example repository", () => {
  it("validate compiles every function, loads it through the verifier and exits 0", async () => {
    const run = await sluice(["validate", example, "--cache-dir", cacheDir]);
    expect(run.stderr).not.toMatch(/error|problem/i);
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(/ok: 2 files, 4 NetworkFunctions, 1 ServiceChain; 4 functions compiled/);
    // Each function on each of its two hooks, then the chain as a whole.
    expect(run.stdout).toContain("9 loads accepted by the verifier");
    // Not a terminal: one plain line per compiled function, no cursor movement.
    for (const [i, nf] of ["firewall", "ratelimit", "ttl-guard", "flowmon"].entries())
      expect(run.stderr).toContain(`compile ${i + 1}/4 ${nf}: `);
    expect(run.stderr).not.toContain("\r");
  });

  it("test runs every function and chain vector in the kernel and prints them as a table", async () => {
    let caps: Promise<bigint> | undefined;
    const run = await sluice(["test", example, "--cache-dir", cacheDir], {
      onSpawn: (pid) => (caps = capsOnceExeced(pid)),
    });
    expect(run.code).toBe(0);
    expect(await caps, "sluice test ran with exactly the chart agent's capabilities").toBe(
      CHART_AGENT_CAP_MASK,
    );
    const rows = run.stdout.split("\n");
    expect(rows[0]).toMatch(/^RESULT\s+OF\s+HOOK\s+VECTOR\s+EXPECTED\s+GOT$/);
    for (const [of, vector, expected] of exampleVectors) {
      // Function vectors run on each hook the function supports; chain vectors on the chain's.
      const hooks = of.startsWith("nf ") ? ["xdp", "tc"] : ["xdp"];
      for (const hook of hooks) {
        const row = rows.find((r) => r.includes(` ${of} `) && r.includes(` ${hook} `) && r.includes(vector));
        expect(row, `${of} ${vector} on ${hook}`).toBeDefined();
        expect(row!.split(/\s{2,}/)).toEqual(["ok", of, hook, vector, expected, expected]);
      }
    }
    expect(run.stdout).toContain("12 vectors: 12 passed");
  });

  it("shows compile progress in place on a terminal", async () => {
    // A fresh cache, so that clang really runs; `script` gives the command a terminal.
    const fresh = join(work, "fresh-cache");
    const line = [
      process.execPath,
      join(repoRoot, "bin/sluice.mjs"),
      "validate",
      example,
      "--cache-dir",
      fresh,
      "--no-load",
    ]
      .map((a) => `'${a}'`)
      .join(" ");
    const output = await new Promise<string>((resolve, reject) => {
      execFile("script", ["-qec", line, "/dev/null"], { cwd: repoRoot, timeout: 60_000 }, (err, stdout) =>
        err ? reject(err) : resolve(stdout),
      );
    });
    // The spinner line is redrawn in place: carriage return, erase line, spinner, item.
    expect(output).toMatch(new RegExp(String.raw`\r\x1b\[K\S+ compiling ttl-guard \(3/4\)`));
    expect(output).toMatch(/compile 3\/4 ttl-guard: compiled in \d+\.\d s/);
    expect(output).toContain("nothing loaded (--no-load)");
  });
});

describe("broken copies fail with exit code 1 and point at the cause", () => {
  it("a YAML syntax error names the file and line", async () => {
    const dir = await brokenCopy({
      "functions.yaml": (t) => t.replace("  name: ratelimit\n", "  name: ratelimit: 2\n"),
    });
    const run = await sluice(["validate", dir, "--cache-dir", cacheDir]);
    expect(run.code).toBe(1);
    const text = await readFile(join(dir, "functions.yaml"), "utf8");
    expect(run.stderr).toContain(
      `functions.yaml:${lineOf(text, "name: ratelimit: 2")}: document 2: Nested mappings are not allowed`,
    );
    expect(run.stdout).toContain("the manifests were rejected, nothing was compiled");
  });

  it("a schema error names the file, line and field path", async () => {
    const dir = await brokenCopy({
      "chain.yaml": (t) => t.replace("    hook: xdp", "    hook: xdpp"),
      "functions.yaml": (t) => replaceNth(t, "expect: { verdict: pass }", "expect: { verdict: passs }"),
    });
    const run = await sluice(["validate", dir, "--cache-dir", cacheDir]);
    expect(run.code).toBe(1);
    const chain = await readFile(join(dir, "chain.yaml"), "utf8");
    const functions = await readFile(join(dir, "functions.yaml"), "utf8");
    expect(run.stderr).toContain(
      `chain.yaml:${lineOf(chain, "hook: xdpp")}: ServiceChain edge: spec.attachment.hook: Invalid option`,
    );
    expect(run.stderr).toContain(
      `functions.yaml:${lineOf(functions, "passs")}: NetworkFunction firewall: spec.tests[1].expect.verdict: Invalid option`,
    );
  });

  it("a built-in parameter of the wrong type names its field path and line", async () => {
    const dir = await brokenCopy({
      "functions.yaml": (t) => t.replace("    defaultAction: allow", "    defaultAction: maybe"),
    });
    const run = await sluice(["validate", dir, "--cache-dir", cacheDir]);
    expect(run.code).toBe(1);
    const text = await readFile(join(dir, "functions.yaml"), "utf8");
    expect(run.stderr).toContain(
      `functions.yaml:${lineOf(text, "defaultAction: maybe")}: NetworkFunction firewall: spec.parameters.defaultAction:`,
    );
  });

  it("a built-in parameter out of its range is refused before anything compiles, at its field and line", async () => {
    const dir = await brokenCopy({
      "functions.yaml": (t) => t.replace("    rate: 200000", "    rate: 0"),
    });
    const run = await sluice(["validate", dir, "--cache-dir", cacheDir]);
    expect(run.code).toBe(1);
    const text = await readFile(join(dir, "functions.yaml"), "utf8");
    expect(run.stderr).toContain(
      `functions.yaml:${lineOf(text, "rate: 0")}: NetworkFunction ratelimit: spec.parameters.rate: ratelimit parameters: Too small: expected number to be >=1`,
    );
    expect(run.stdout).toContain("the manifests were rejected, nothing was compiled");
  });

  it("a built-in name no built-in has is refused at spec.source.builtin, listing the built-ins", async () => {
    const dir = await brokenCopy({
      "functions.yaml": (t) => t.replace("    builtin: flowmon", "    builtin: flowmeter"),
    });
    const run = await sluice(["validate", dir, "--cache-dir", cacheDir]);
    expect(run.code).toBe(1);
    const text = await readFile(join(dir, "functions.yaml"), "utf8");
    expect(run.stderr).toContain(
      `functions.yaml:${lineOf(text, "builtin: flowmeter")}: NetworkFunction flowmon: spec.source.builtin: no built-in network function "flowmeter" (built-ins: firewall, ratelimit, flowmon, noop`,
    );
  });

  it("a chain naming a function that does not exist points at the chain entry", async () => {
    const dir = await brokenCopy({
      "chain.yaml": (t) => t.replace("    - name: flowmon", "    - name: flowmeter"),
    });
    const run = await sluice(["validate", dir, "--cache-dir", cacheDir]);
    expect(run.code).toBe(1);
    const text = await readFile(join(dir, "chain.yaml"), "utf8");
    expect(run.stderr).toContain(
      `chain.yaml:${lineOf(text, "name: flowmeter")}: ServiceChain edge: spec.functions[3].name: NetworkFunction flowmeter not found`,
    );
  });

  it("a C syntax error names the C file and line as the repository has them", async () => {
    const dir = await brokenCopy({
      [ttlGuard]: (t) => t.replace("pkt->ttl >= MIN_TTL)", "pkt->ttl >= MIN_TTL_TYPO)"),
    });
    const run = await sluice(["validate", dir, "--cache-dir", cacheDir]);
    expect(run.code).toBe(1);
    const text = await readFile(join(dir, ttlGuard), "utf8");
    const line = lineOf(text, "MIN_TTL_TYPO");
    expect(run.stderr).toMatch(
      new RegExp(
        `^${ttlGuard}:${line}:\\d+: NetworkFunction ttl-guard: does not compile \\(source at functions\\.yaml:\\d+\\): error: use of undeclared identifier 'MIN_TTL_TYPO'`,
        "m",
      ),
    );
    // clang's own output follows, with the same path.
    expect(run.stderr).toMatch(new RegExp(`^    ${ttlGuard}:${line}:\\d+: error:`, "m"));
    // The chain that uses it is not loaded, and says why.
    expect(run.stderr).toContain("ServiceChain edge not loaded: ttl-guard failed above");
  });

  it("a C error in an inline source names the manifest line it is written on", async () => {
    const inline = [
      "---",
      "apiVersion: sluice.dev/v1alpha1",
      "kind: NetworkFunction",
      "metadata:",
      "  name: inline-broken",
      "spec:",
      "  hooks: [xdp]",
      "  source:",
      "    inline: |",
      '      #include "sluice.h"',
      '      SEC("xdp")',
      "      int inline_broken_xdp(struct xdp_md *ctx)",
      "      {",
      "        return SLUICE_EXIT(ctx, no_such_verdict);",
      "      }",
      '      char LICENSE[] SEC("license") = "GPL";',
      "",
    ].join("\n");
    const dir = await brokenCopy({ "functions.yaml": (t) => t + inline });
    const run = await sluice(["validate", dir, "--cache-dir", cacheDir]);
    expect(run.code).toBe(1);
    const text = await readFile(join(dir, "functions.yaml"), "utf8");
    expect(run.stderr).toContain(
      `functions.yaml:${lineOf(text, "no_such_verdict")}: NetworkFunction inline-broken: does not compile`,
    );
    expect(run.stderr).toContain("(inline C line 5, column");
  });

  it("a verifier rejection names the C line it stopped at and shows the verifier log's tail", async () => {
    const unchecked = await readFile(join(fixturesDir, "cli/ttl_guard_unchecked.bpf.c"), "utf8");
    const dir = await brokenCopy({ [ttlGuard]: () => unchecked });
    const run = await sluice(["validate", dir, "--cache-dir", cacheDir]);
    expect(run.code).toBe(1);
    const text = await readFile(join(dir, ttlGuard), "utf8");
    const line = lineOf(text, "data[22]");
    expect(run.stderr).toMatch(
      new RegExp(
        `^${ttlGuard}:${line}: NetworkFunction ttl-guard: the verifier rejected program ttl_guard_xdp \\(xdp\\): .*outside of the packet`,
        "m",
      ),
    );
    // The log tail, indented under the message, with the repository's file names.
    expect(run.stderr).toMatch(/^ {4}invalid access to packet/m);
    expect(run.stderr).toContain(`@ ${ttlGuard}:${line}`);
  });

  it("a failing function vector shows in the table with expected and got", async () => {
    const dir = await brokenCopy({
      "functions.yaml": (t) => replaceNth(t, "expect: { verdict: pass }", "expect: { verdict: drop }"),
    });
    const run = await sluice(["test", dir, "--cache-dir", cacheDir]);
    expect(run.code).toBe(1);
    const rows = run.stdout.split("\n").map((r) => r.split(/\s{2,}/));
    expect(rows).toContainEqual(["FAIL", "nf firewall", "xdp", "https goes through", "drop", "pass"]);
    expect(rows).toContainEqual(["ok", "nf firewall", "xdp", "telnet is refused", "drop", "drop"]);
    const text = await readFile(join(dir, "functions.yaml"), "utf8");
    expect(run.stdout).toContain(
      `functions.yaml:${lineOf(text, "name: https goes through")}: nf firewall vector "https goes through" (xdp): expected drop, got pass`,
    );
    expect(run.stdout).toContain("12 vectors: 10 passed, 2 failed");
  });

  it("a failing chain vector shows the counters it expected and got", async () => {
    const dir = await brokenCopy({
      "chain.yaml": (t) => t.replace("flowmon: { packets: 1 }", "flowmon: { packets: 2 }"),
    });
    const run = await sluice(["test", dir, "--cache-dir", cacheDir]);
    expect(run.code).toBe(1);
    const rows = run.stdout.split("\n").map((r) => r.split(/\s{2,}/));
    expect(rows).toContainEqual([
      "FAIL",
      "chain edge",
      "xdp",
      "web traffic crosses the whole chain",
      "pass, flowmon.packets=2",
      "pass, flowmon.packets=1",
    ]);
    expect(run.stdout).toContain("12 vectors: 11 passed, 1 failed");
  });
});

describe("the security example (the ips built-in)", () => {
  const security = join(repoRoot, "examples/gitops/security");

  it("test runs the signatures' and the scan guard's vectors on both hooks, and the chain's", async () => {
    const run = await sluice(["test", security, "--cache-dir", cacheDir]);
    expect(run.stderr).not.toMatch(/error|problem/i);
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(/ok: 2 files, 2 NetworkFunctions, 1 ServiceChain/);
    expect(run.stdout).toContain("12 vectors: 12 passed");
  });

  it.each([
    [
      "a one-byte content",
      (t: string) => t.replace('content: "/etc/passwd"', 'content: "/"'),
      'content: "/"',
      "spec.tables.signatures[0].content: ips tables: is 1 bytes; content must be 2 to 64 bytes",
    ],
    [
      "an unclosed hex block",
      (t: string) => t.replace('"|90 90 90 90 90 90 90 90|"', '"|90 90"'),
      'content: "|90 90"',
      "spec.tables.signatures[2].content: ips tables: a hex block opened with | is not closed",
    ],
    [
      "a duplicate id",
      (t: string) => t.replace("id: 1002", "id:  1001"),
      "id:  1001",
      "spec.tables.signatures[1].id: ips tables: id 1001 is also signatures[0]'s",
    ],
    [
      "ports with proto icmp",
      (t: string) => t.replace("proto: tcp", "proto: icmp"),
      "proto: icmp",
      "spec.tables.signatures[1].proto: ips tables: ports need proto tcp or udp",
    ],
    [
      "a port-scan limit beyond the 512-bit set",
      (t: string) => t.replace("portScanPorts: 50", "portScanPorts: 100000"),
      "portScanPorts: 100000",
      "spec.parameters.portScanPorts: ips parameters: Too big",
    ],
    [
      "an unknown mode",
      (t: string) => t.replace("mode: prevent", "mode: block"),
      "mode: block",
      "spec.parameters.mode: ips parameters: Invalid option",
    ],
  ])(
    "%s is refused by validate at its field and line, before anything compiles",
    refusedByValidate(security),
  );
});

describe("the balancer example (the l4lb built-in)", () => {
  const balancer = join(repoRoot, "examples/gitops/balancer");

  it("test runs the balancer's vectors on both hooks, and the chain's", async () => {
    const run = await sluice(["test", balancer, "--cache-dir", cacheDir]);
    expect(run.stderr).not.toMatch(/error|problem/i);
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(/ok: 2 files, 1 NetworkFunction, 1 ServiceChain/);
    expect(run.stdout).toContain("11 vectors: 11 passed");
  });

  it.each([
    [
      "a table size that is not a prime",
      (t: string) => t.replace("tableSize: 65537", "tableSize: 65536"),
      "tableSize: 65536",
      "spec.tables.services[0].tableSize: l4lb tables: must be a prime",
    ],
    [
      "a backend of the other family",
      (t: string) => t.replace("{ address: 10.10.1.22 }", "{ address: fd10:1::22 }"),
      "{ address: fd10:1::22 }",
      "spec.tables.services[1].backends[1].address: l4lb tables: is IPv6, the vip 10.96.0.53 IPv4",
    ],
    [
      "a virtual IP that is no address",
      (t: string) => t.replace("vip: 10.96.0.53", "vip: 10.96.0.530"),
      "vip: 10.96.0.530",
      "spec.tables.services[1].vip: l4lb tables: must be an IPv4 or IPv6 address",
    ],
    [
      "health for an address that is no backend",
      (t: string) =>
        t.replace("{ address: 10.10.1.31, healthy: false }", "{ address: 10.10.1.39, healthy: false }"),
      "{ address: 10.10.1.39, healthy: false }",
      "spec.tables.health[0].address: l4lb tables: 10.10.1.39 is no backend of any service",
    ],
    [
      "a protocol other than tcp or udp",
      (t: string) => t.replace("proto: udp", "proto: sctp"),
      "proto: sctp",
      "spec.tables.services[1].proto: l4lb tables: Invalid option",
    ],
    [
      "affinity that is not a boolean",
      (t: string) => t.replace("affinity: true", 'affinity: "sticky"'),
      'affinity: "sticky"',
      "spec.parameters.affinity: l4lb parameters: Invalid input",
    ],
  ])(
    "%s is refused by validate at its field and line, before anything compiles",
    refusedByValidate(balancer),
  );
});

describe("the fabric example (the overlay and router built-ins)", () => {
  const fabric = join(repoRoot, "examples/gitops/fabric");

  it("test runs the overlay's and the router's vectors on both hooks, and the chain's", async () => {
    const run = await sluice(["test", fabric, "--cache-dir", cacheDir]);
    expect(run.stderr).not.toMatch(/error|problem/i);
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(/ok: 2 files, 2 NetworkFunctions, 1 ServiceChain/);
    expect(run.stdout).toContain("7 vectors: 7 passed");
  });

  it.each([
    [
      "a VNI beyond 24 bits",
      (t: string) => t.replace("vni: 4242", "vni: 16777216"),
      "vni: 16777216",
      "spec.parameters.vni: overlay parameters: Too big",
    ],
    [
      "a node address that is not IPv4",
      (t: string) => t.replace("node: 192.0.2.10 }", 'node: "2001:db8::10" }'),
      'node: "2001:db8::10" }',
      'spec.tables.segments[0].node: overlay tables: "2001:db8::10" is not an IPv4 address',
    ],
    [
      "a segment with host bits",
      (t: string) => t.replace("prefix: 10.200.0.0/16", "prefix: 10.200.0.1/16"),
      "prefix: 10.200.0.1/16",
      'spec.tables.segments[0].prefix: overlay tables: "10.200.0.1/16" has host bits set; did you mean 10.200.0.0/16?',
    ],
  ])("%s is refused by validate at its field and line, before anything compiles", refusedByValidate(fabric));
});

describe("exit codes a script can rely on", () => {
  it("bad usage exits 2", async () => {
    expect((await sluice(["validate"])).code).toBe(2);
    expect((await sluice(["validate", join(work, "no-such-dir")])).code).toBe(2);
    expect((await sluice(["test", example, "--no-load"])).code).toBe(2);
    // The metrics endpoint listens on one IP address; a name could mean several, or change.
    const named = await sluice(["agent", "--node-name", "n1", "--metrics-address", "localhost"]);
    expect(named.code).toBe(2);
    expect(named.stderr).toContain('sluice agent: --metrics-address: "localhost" is not an IP address');
  });

  it("without BPF privileges loading exits 3 and says what is missing; --no-load still checks", async () => {
    const denied = await sluice(["validate", example, "--cache-dir", cacheDir], {
      withoutCapabilities: true,
    });
    expect(denied.code, denied.stderr).toBe(3);
    expect(denied.stderr).toContain("loading BPF needs root (CAP_BPF and CAP_NET_ADMIN)");
    const compileOnly = await sluice(["validate", example, "--cache-dir", cacheDir, "--no-load"], {
      withoutCapabilities: true,
    });
    expect(compileOnly.code, compileOnly.stderr).toBe(0);
    expect(compileOnly.stdout).toContain("nothing loaded (--no-load)");
  });
});
