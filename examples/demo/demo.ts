/**
 * The sluice demo: one host, two "hosts" talking through a "node" that runs the example chain,
 * and three commits switched in while traffic flows, with every packet counted.
 *
 * ```
 *   <id>-h1 (10.201.1.2) ── eth0 ═ sl-node0 ── <id>-node (routes) ── sl-h2 ═ eth0 ── <id>-h2 (10.201.2.2)
 *                                   └ XDP: firewall → ratelimit → ttl-guard → flowmon
 * ```
 *
 * It makes a Git repository from examples/gitops, starts `sluice run` on it (the same GitOps,
 * planning and data-plane code as in a cluster, with a memory store), sends a numbered UDP flow
 * from h1 to h2, shows the chain's counters every second, commits three changes (compile-time
 * parameters, a runtime firewall rule, the order of the functions) and prints what was sent,
 * received and lost. Ctrl-C, or the end of `--duration`, stops it and removes everything it made.
 *
 * Run it with `npm run demo` (as root); `npm run demo -- --duration 30` ends by itself.
 */
import { spawn, execFile, type ChildProcess } from "node:child_process";
import { randomInt } from "node:crypto";
import { createWriteStream, existsSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { cp, mkdir, readFile, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import { parseArgs, promisify } from "node:util";
import { parseAllDocuments } from "yaml";
import { fetchStatus, formatRate, formatTable } from "../../bin/format.ts";
import type { SingleHostStatus } from "../../bin/run.ts";
import { netnsPath, withNetns } from "../../node-agent/src/netns/index.ts";

const execFileAsync = promisify(execFile);
const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const FLOW_SCRIPT = join(repoRoot, "examples/demo/flow.mjs");
/** Every name the demo makes starts with this and its process id, so stale leftovers can be found. */
const PREFIX = "sldemo-";
const BPFFS_PREFIX = "/sys/fs/bpf/sluice-demo-";
const FLOW_PORT = 9000;
const PROBE_PORT = 7777;
const PROBE_RATE = 50;
const H1 = { ip: "10.201.1.2", gw: "10.201.1.1" };
const H2 = { ip: "10.201.2.2", gw: "10.201.2.1" };
const SWITCH_TIMEOUT_MS = 90_000;

/** The demo cannot run here (not root, a tool missing); exit code 3. */
class DemoEnvironmentError extends Error {
  override name = "DemoEnvironmentError";
}

/** Ctrl-C (or SIGTERM) arrived. */
class Interrupted extends Error {
  override name = "Interrupted";
}

// ---------------------------------------------------------------------------------------------
// Small helpers

async function sh(file: string, args: readonly string[], input?: string): Promise<string> {
  try {
    const child = execFileAsync(file, args, { maxBuffer: 16 << 20 });
    if (input !== undefined) child.child.stdin?.end(input);
    return (await child).stdout;
  } catch (err) {
    const e = err as Error & { stderr?: string };
    throw new Error(`${file} ${args.join(" ")}: ${e.stderr?.trim() || e.message}`);
  }
}

const gitIdentity = ["-c", "user.name=sluice demo", "-c", "user.email=demo@localhost"];
const git = (dir: string, ...args: string[]) => sh("git", ["-C", dir, ...gitIdentity, ...args]);

/** Resolves when `signal` aborts: rejects every wait of the demo at Ctrl-C. */
function interruptible<T>(signal: AbortSignal, work: Promise<T>): Promise<T> {
  if (signal.aborted) return Promise.reject(new Interrupted());
  return new Promise<T>((resolvePromise, reject) => {
    const onAbort = () => reject(new Interrupted());
    signal.addEventListener("abort", onAbort, { once: true });
    work.then(
      (v) => {
        signal.removeEventListener("abort", onAbort);
        resolvePromise(v);
      },
      (e: unknown) => {
        signal.removeEventListener("abort", onAbort);
        reject(e instanceof Error ? e : new Error(String(e)));
      },
    );
  });
}

const wait = (ms: number, signal: AbortSignal) =>
  sleep(ms, undefined, { signal }).catch(() => {
    throw new Interrupted();
  });

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

/**
 * Removes what an earlier demo left when it was killed without a chance to clean up (SIGKILL,
 * a crash): namespaces, pins and files whose process id no longer runs.
 */
async function sweepStale(): Promise<string[]> {
  const removed: string[] = [];
  const deadOwner = (name: string, prefix: string) => {
    const pid = Number(/^(\d+)/.exec(name.slice(prefix.length))?.[1]);
    return Number.isInteger(pid) && pid > 0 && pid !== process.pid && !processAlive(pid);
  };
  for (const ns of existsSync("/run/netns") ? readdirSync("/run/netns") : []) {
    if (ns.startsWith(PREFIX) && deadOwner(ns, PREFIX)) {
      await sh("ip", ["netns", "del", ns]).catch(() => undefined);
      removed.push(`netns ${ns}`);
    }
  }
  const bpffsParent = dirname(BPFFS_PREFIX);
  const bpffsBase = BPFFS_PREFIX.slice(bpffsParent.length + 1);
  for (const entry of readdirSync(bpffsParent)) {
    if (entry.startsWith(bpffsBase) && deadOwner(entry, bpffsBase)) {
      rmSync(join(bpffsParent, entry), { recursive: true, force: true });
      removed.push(`bpffs ${join(bpffsParent, entry)}`);
    }
  }
  for (const entry of readdirSync(tmpdir())) {
    if (entry.startsWith("sluice-demo-") && deadOwner(entry, "sluice-demo-")) {
      rmSync(join(tmpdir(), entry), { recursive: true, force: true });
      removed.push(`files ${join(tmpdir(), entry)}`);
    }
  }
  return removed;
}

/**
 * Starts a process that dies with the demo even if the demo is killed outright
 * (`setpriv --pdeathsig KILL`), optionally inside a network namespace. It gets its own process
 * group, so that Ctrl-C in the terminal reaches the demo alone, which then stops its children
 * in order (the traffic first, to count it).
 */
function start(command: string[], options: { netns?: string } = {}): ChildProcess {
  const inNs = options.netns ? ["nsenter", `--net=${netnsPath(options.netns)}`] : [];
  return spawn("setpriv", ["--pdeathsig", "KILL", ...inNs, ...command], {
    stdio: ["pipe", "pipe", "pipe"],
    detached: true,
  });
}

/** Ends a child: SIGTERM, then SIGKILL after `graceMs`. */
async function stopProcess(child: ChildProcess, graceMs = 5_000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((r) => child.once("exit", () => r()));
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), graceMs);
  await exited;
  clearTimeout(timer);
}

// ---------------------------------------------------------------------------------------------
// Topology

interface Topology {
  h1: string;
  node: string;
  h2: string;
  /** The node's interface facing h1: the chain's interface pattern `sl-node*` matches it. */
  chainIf: string;
}

/** Creates the three namespaces, the two veth pairs, addresses and routes. */
async function createTopology(id: string, undo: Cleanup): Promise<Topology> {
  const t: Topology = { h1: `${id}-h1`, node: `${id}-node`, h2: `${id}-h2`, chainIf: "sl-node0" };
  for (const ns of [t.h1, t.node, t.h2]) {
    await sh("ip", ["netns", "add", ns]);
    undo.add(`namespace ${ns}`, () => sh("ip", ["netns", "del", ns]).then(() => undefined));
    // No IPv6 chatter (router solicitations, neighbour discovery) in the counters.
    withNetns(ns, () => {
      for (const conf of ["all", "default"]) {
        const knob = `/proc/sys/net/ipv6/conf/${conf}/disable_ipv6`;
        if (existsSync(knob)) writeFileSync(knob, "1");
      }
    });
  }
  await sh("ip", [
    "link",
    "add",
    t.chainIf,
    "netns",
    t.node,
    "type",
    "veth",
    "peer",
    "name",
    "eth0",
    "netns",
    t.h1,
  ]);
  await sh("ip", [
    "link",
    "add",
    "sl-h2",
    "netns",
    t.node,
    "type",
    "veth",
    "peer",
    "name",
    "eth0",
    "netns",
    t.h2,
  ]);
  const batch = (ns: string, lines: string[]) => sh("ip", ["-n", ns, "-batch", "-"], lines.join("\n") + "\n");
  await batch(t.h1, [
    "link set lo up",
    `addr add ${H1.ip}/24 dev eth0`,
    "link set eth0 up",
    `route add default via ${H1.gw}`,
  ]);
  await batch(t.h2, [
    "link set lo up",
    `addr add ${H2.ip}/24 dev eth0`,
    "link set eth0 up",
    `route add default via ${H2.gw}`,
  ]);
  await batch(t.node, [
    "link set lo up",
    `addr add ${H1.gw}/24 dev ${t.chainIf}`,
    `link set ${t.chainIf} up`,
    `addr add ${H2.gw}/24 dev sl-h2`,
    "link set sl-h2 up",
  ]);
  withNetns(t.node, () => writeFileSync("/proc/sys/net/ipv4/ip_forward", "1"));
  return t;
}

// ---------------------------------------------------------------------------------------------
// Cleanup

/** What the demo made, undone in reverse order, each step even when an earlier one failed. */
class Cleanup {
  readonly #steps: Array<{ what: string; undo: () => Promise<void> | void }> = [];
  #ran = false;

  add(what: string, undo: () => Promise<void> | void): void {
    this.#steps.push({ what, undo });
  }

  /** Runs every step once; returns what was undone and what failed. */
  async run(): Promise<{ done: string[]; failed: string[] }> {
    const done: string[] = [];
    const failed: string[] = [];
    if (this.#ran) return { done, failed };
    this.#ran = true;
    for (const step of this.#steps.reverse()) {
      try {
        await step.undo();
        done.push(step.what);
      } catch (err) {
        failed.push(`${step.what}: ${err instanceof Error ? err.message : String(err)}`);
      }
    }
    return { done, failed };
  }
}

// ---------------------------------------------------------------------------------------------
// The repository and the changes committed to it

/** One commit of the demo. */
interface Change {
  title: string;
  /** What a viewer should see happen. */
  expect: string;
  file: string;
  edit(docs: ReturnType<typeof parseAllDocuments>): void;
}

const byName = (docs: ReturnType<typeof parseAllDocuments>, name: string) => {
  const doc = docs.find((d) => !("errors" in d && d.errors.length) && d.getIn(["metadata", "name"]) === name);
  if (!doc || !("setIn" in doc)) throw new Error(`the example repository has no object named ${name}`);
  return doc;
};

const CHANGES: Change[] = [
  {
    title: "ratelimit: 150000 packets/s per source",
    expect: "new programs are compiled, tested and switched in; the rate-limit state carries over",
    file: "network/functions.yaml",
    edit: (docs) => byName(docs, "ratelimit").setIn(["spec", "parameters", "rate"], 150000),
  },
  {
    title: `firewall: deny udp/${PROBE_PORT}`,
    expect: `a runtime table update, no reload; the probes to udp/${PROBE_PORT} now show as firewall drops`,
    file: "network/functions.yaml",
    edit: (docs) =>
      byName(docs, "firewall").addIn(["spec", "tables", "rules"], {
        action: "deny",
        protocol: "udp",
        dport: PROBE_PORT,
        comment: "the demo's probes",
      }),
  },
  {
    title: "ttl-guard: MIN_TTL 3",
    expect: "the repository's own C function is compiled again with the new setting, tested and switched in",
    file: "network/functions.yaml",
    edit: (docs) => byName(docs, "ttl-guard").setIn(["spec", "parameters", "MIN_TTL"], 3),
  },
];

async function createRepository(dir: string): Promise<string> {
  await cp(join(repoRoot, "examples/gitops"), dir, { recursive: true });
  await git(dir, "init", "--quiet", "--initial-branch=main");
  await git(dir, "add", "-A");
  await git(dir, "commit", "--quiet", "-m", "The edge chain from examples/gitops");
  return (await git(dir, "rev-parse", "HEAD")).trim();
}

async function commitChange(dir: string, change: Change): Promise<string> {
  const path = join(dir, change.file);
  const docs = parseAllDocuments(await readFile(path, "utf8"));
  change.edit(docs);
  await writeFile(path, docs.map((d) => d.toString({ flowCollectionPadding: false })).join(""));
  await git(dir, "commit", "--quiet", "-am", change.title);
  return (await git(dir, "rev-parse", "HEAD")).trim();
}

// ---------------------------------------------------------------------------------------------
// Traffic

/** Latest counts of the flow, as its two ends report them. */
interface FlowProgress {
  sent: number;
  received: number;
  /** Sequence numbers below the highest received that have not arrived. */
  missing: number;
}

/** The final counts of the flow. */
interface FlowResult {
  sent: number;
  received: number;
  lost: number;
  failedSends: number;
  receiverDrops: number;
  duplicates: number;
  missingSample: number[];
  probes: number;
}

interface Flow {
  progress: FlowProgress;
  stop(): Promise<FlowResult>;
}

/** JSON lines of a child, with a way to wait for the next one that matches. */
function lines(child: ChildProcess, onLine: (obj: Record<string, unknown>) => void) {
  let stderr = "";
  child.stderr?.on("data", (c: Buffer) => (stderr = (stderr + c.toString()).slice(-4000)));
  const waiters: Array<{
    test: (o: Record<string, unknown>) => boolean;
    resolve: (o: Record<string, unknown>) => void;
  }> = [];
  createInterface({ input: child.stdout! }).on("line", (line) => {
    let obj: Record<string, unknown>;
    try {
      obj = JSON.parse(line) as Record<string, unknown>;
    } catch {
      return;
    }
    onLine(obj);
    for (const w of [...waiters])
      if (w.test(obj)) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(obj);
      }
  });
  const next = (what: string, test: (o: Record<string, unknown>) => boolean, timeoutMs = 10_000) =>
    new Promise<Record<string, unknown>>((resolveLine, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`traffic: no ${what} within ${timeoutMs} ms: ${stderr}`)),
        timeoutMs,
      );
      child.once("exit", () => reject(new Error(`traffic: process ended before ${what}: ${stderr.trim()}`)));
      waiters.push({
        test,
        resolve: (o) => {
          clearTimeout(timer);
          resolveLine(o);
        },
      });
    });
  return { next };
}

async function startFlow(t: Topology, rate: number, undo: Cleanup): Promise<Flow> {
  const magic = randomInt(1, 0x7fffffff).toString(16);
  const progress: FlowProgress = { sent: 0, received: 0, missing: 0 };
  const receiver = start([process.execPath, FLOW_SCRIPT, "recv", H2.ip, String(FLOW_PORT), magic], {
    netns: t.h2,
  });
  undo.add("traffic receiver", () => stopProcess(receiver, 1000));
  const recv = lines(receiver, (o) => {
    if (typeof o.received === "number") progress.received = o.received;
    if (typeof o.highest === "number") progress.missing = Math.max(0, o.highest + 1 - progress.received);
  });
  await recv.next("receiver ready", (o) => o.ready === true);
  const sender = start(
    [
      process.execPath,
      FLOW_SCRIPT,
      "send",
      H2.ip,
      String(FLOW_PORT),
      String(rate),
      magic,
      String(PROBE_PORT),
      String(PROBE_RATE),
    ],
    { netns: t.h1 },
  );
  undo.add("traffic sender", () => stopProcess(sender, 1000));
  const send = lines(sender, (o) => {
    if (typeof o.sent === "number") progress.sent = o.sent;
  });
  await send.next("sender start", (o) => o.started === true);
  let result: Promise<FlowResult> | undefined;
  return {
    progress,
    stop: () =>
      (result ??= (async () => {
        const sentDone = send.next("sender result", (o) => o.done === true);
        sender.stdin?.end("stop\n");
        const s = await sentDone;
        // Packets still on their way to h2.
        await sleep(500);
        const recvDone = recv.next("receiver result", (o) => o.done === true);
        receiver.stdin?.end("stop\n");
        const r = await recvDone;
        const sent = Number(s.sent);
        const received = Number(r.received);
        return {
          sent,
          received,
          lost: sent - received,
          failedSends: Number(s.failed),
          receiverDrops: Number(r.socketDrops),
          duplicates: Number(r.duplicates),
          missingSample: r.missingSample as number[],
          probes: Number(s.probes),
        };
      })()),
  };
}

// ---------------------------------------------------------------------------------------------
// sluice run

interface Sluice {
  port: number;
  child: ChildProcess;
  logPath: string;
}

async function startSluice(t: Topology, repoDir: string, workDir: string, bpffsRoot: string, undo: Cleanup) {
  const logPath = join(workDir, "sluice-run.log");
  const log = createWriteStream(logPath);
  const args = [
    join(repoRoot, "bin/sluice.mjs"),
    "run",
    "--source",
    repoDir,
    "--path",
    "network",
    // The NetworkFunctions' sourceRef names the GitSource of the bootstrap manifest: edge.
    "--name",
    "edge",
    "--interval",
    "1s",
    "--port",
    "0",
    "--data-dir",
    join(workDir, "data"),
    "--bpffs-root",
    bpffsRoot,
    "--netns",
    t.node,
  ];
  // The command itself, as a user runs it: its first line gives Node the flags it runs with.
  const child = start(args);
  undo.add("sluice run", () => stopProcess(child));
  child.stdout?.pipe(log, { end: false });
  let tail = "";
  const port = await new Promise<number>((resolvePort, reject) => {
    child.stderr?.on("data", (chunk: Buffer) => {
      log.write(chunk);
      tail = (tail + chunk.toString()).slice(-8000);
      const m = /status at http:\/\/127\.0\.0\.1:(\d+)\/status/.exec(tail);
      if (m) resolvePort(Number(m[1]));
    });
    child.once("exit", (code) => reject(new Error(`sluice run exited (code ${code}):\n${tail.trim()}`)));
    setTimeout(
      () => reject(new Error(`sluice run did not start within 60 s:\n${tail.trim()}`)),
      60_000,
    ).unref();
  });
  return { port, child, logPath } satisfies Sluice;
}

// ---------------------------------------------------------------------------------------------
// The screen

/** What the demo shows: in a terminal a table redrawn every second, else plain lines. */
class Screen {
  readonly tty = Boolean(process.stdout.isTTY);
  readonly #events: string[] = [];

  constructor(private readonly header: string[]) {}

  /** Something happened: kept for the screen, printed at once when not in a terminal. */
  event(text: string): void {
    const line = `${new Date().toTimeString().slice(0, 8)} ${text}`;
    this.#events.push(line);
    if (this.#events.length > 12) this.#events.shift();
    if (!this.tty) process.stdout.write(`demo: ${text}\n`);
  }

  /** One frame: the chain's counters and the flow's counts. */
  frame(doc: SingleHostStatus | undefined, flow: FlowProgress | undefined, footer: string): void {
    const out: string[] = [...this.header, ""];
    const chain = doc?.chains[0];
    if (doc)
      out.push(`source ${doc.source.revision ?? "(syncing)"}   ready ${doc.source.ready ?? "Unknown"}`);
    if (chain) {
      out.push(`chain ${chain.name}  revision ${chain.revision}  ready ${chain.ready ?? "Unknown"}`);
      out.push(
        ...formatTable([
          ["NF", "PACKETS", "PKT/S", "DROPS", "DROP/S"],
          ...chain.nfs.map((n) => [
            n.name,
            n.packets,
            formatRate(n.packetsPerSecond),
            n.drops,
            formatRate(n.dropsPerSecond),
          ]),
        ]),
      );
    } else out.push("no chain yet");
    if (flow)
      out.push(
        "",
        `traffic h1 -> h2: sent ${flow.sent}  received ${flow.received}  missing so far ${flow.missing}`,
      );
    if (this.tty) {
      out.push("", "events", ...this.#events.map((e) => `  ${e}`), "", footer);
      process.stdout.write("\x1b[H\x1b[2J" + out.join("\n") + "\n");
    } else {
      process.stdout.write(out.slice(this.header.length + 1).join("\n") + "\n");
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The demo

interface Options {
  /** Seconds of traffic; absent: until Ctrl-C. */
  durationS?: number;
  rate: number;
  /** Seconds between commits. */
  gapS: number;
}

/** A commit and what became of it. */
interface Switch {
  change: Change;
  sha: string;
  /** From the commit to the new revision being live, as `sluice status` shows it. */
  commitToLiveMs?: number;
  action?: string;
  totalMs?: number;
  flipUs?: number;
  carried?: number;
  revision?: string;
  error?: string;
}

async function waitForLive(
  port: number,
  sha: string,
  previousRevision: string | undefined,
  signal: AbortSignal,
): Promise<SingleHostStatus> {
  const deadline = Date.now() + SWITCH_TIMEOUT_MS;
  let last = "";
  while (Date.now() < deadline) {
    const got = await fetchStatus(port);
    if (got.ok) {
      const { doc } = got;
      const chain = doc.chains[0];
      const sc = doc.serviceChains[0];
      if (
        doc.source.revision?.endsWith(sha) &&
        chain &&
        chain.revision !== previousRevision &&
        chain.ready === "True" &&
        sc?.ready === "True"
      )
        return doc;
      if (doc.source.revision?.endsWith(sha) && sc?.ready === "False" && sc.reason !== "Progressing")
        last = `${sc.reason}: ${sc.message}`;
      if (doc.source.ready === "False") last = doc.source.message ?? "";
    } else last = got.error;
    await wait(250, signal);
  }
  throw new Error(
    `revision of commit ${sha.slice(0, 7)} not live within ${SWITCH_TIMEOUT_MS / 1000} s${last ? `: ${last}` : ""}`,
  );
}

async function runDemo(options: Options, signal: AbortSignal, undo: Cleanup): Promise<number> {
  if (process.getuid?.() !== 0)
    throw new DemoEnvironmentError(
      "run the demo as root: it creates network namespaces and loads BPF programs",
    );
  for (const line of await sweepStale()) process.stdout.write(`demo: removed a stale ${line}\n`);

  const id = `${PREFIX}${process.pid}`;
  const workDir = join(tmpdir(), `sluice-demo-${process.pid}`);
  const bpffsRoot = `${BPFFS_PREFIX}${process.pid}`;
  await mkdir(workDir, { recursive: true });
  undo.add(`files ${workDir}`, () => rmSync(workDir, { recursive: true, force: true }));
  undo.add(`pins ${bpffsRoot}`, () => rmSync(bpffsRoot, { recursive: true, force: true }));

  const t = await createTopology(id, undo);
  process.stdout.write(
    `demo: namespaces ${t.h1} ${t.node} ${t.h2}; chain on ${t.chainIf} in ${t.node}; pins under ${bpffsRoot}\n`,
  );
  const repoDir = join(workDir, "repo");
  const firstSha = await createRepository(repoDir);
  process.stdout.write(`demo: repository ${repoDir} at ${firstSha.slice(0, 7)} (examples/gitops)\n`);

  const sluice = await interruptible(signal, startSluice(t, repoDir, workDir, bpffsRoot, undo));
  process.stdout.write(`demo: sluice run is following it; its log is ${sluice.logPath}\n`);
  const screen = new Screen([
    `sluice demo: ${t.h1} (${H1.ip}) -> ${t.node} [chain on ${t.chainIf}] -> ${t.h2} (${H2.ip})`,
    `sluice run --source ${repoDir} --path network   (status: sluice status --port ${sluice.port})`,
  ]);
  const sluiceExit = new Promise<never>((_, reject) =>
    sluice.child.once("exit", (code, sig) =>
      reject(new Error(`sluice run ended (${sig ?? `code ${code}`}); see ${sluice.logPath}`)),
    ),
  );
  sluiceExit.catch(() => undefined);
  const guard = <T>(p: Promise<T>) => interruptible(signal, Promise.race([p, sluiceExit]));

  const startedAt = Date.now();
  let doc = await guard(waitForLive(sluice.port, firstSha, undefined, signal));
  const first = doc.chains[0]!;
  screen.event(
    `chain ${first.name} live at revision ${first.revision} on ${first.interfaces.map((i) => `${i.name}(${i.xdpMode ?? "?"})`).join(",")}, ${Date.now() - startedAt} ms after start`,
  );

  const flow = await guard(startFlow(t, options.rate, undo));
  screen.event(
    `traffic: ${options.rate} packets/s from h1 to h2 udp/${FLOW_PORT}, probes at ${PROBE_RATE}/s to udp/${PROBE_PORT}`,
  );
  const trafficStart = Date.now();
  const footer = options.durationS
    ? `ends by itself after ${options.durationS} s of traffic; Ctrl-C stops it now and cleans up`
    : "Ctrl-C stops the traffic, prints the totals and cleans up";
  // The screen refreshes every second whatever the demo is waiting for (in a log, every 5 s).
  let latest: SingleHostStatus | undefined = doc;
  const refresh = setInterval(
    () => {
      void fetchStatus(sluice.port).then((got) => {
        if (got.ok) latest = got.doc;
        screen.frame(latest, flow.progress, footer);
      });
    },
    screen.tty ? 1000 : 5000,
  );

  const switches: Switch[] = [];
  let interrupted = false;
  try {
    for (const change of CHANGES) {
      await wait(options.gapS * 1000, signal);
      const before = latest?.chains[0]?.revision ?? doc.chains[0]?.revision;
      const sha = await commitChange(repoDir, change);
      const committedAt = Date.now();
      const sw: Switch = { change, sha };
      switches.push(sw);
      screen.event(`commit ${sha.slice(0, 7)} "${change.title}": ${change.expect}`);
      try {
        doc = await guard(waitForLive(sluice.port, sha, before, signal));
        const chain = doc.chains[0]!;
        const a = chain.lastApply;
        sw.commitToLiveMs = Date.now() - committedAt;
        sw.revision = chain.revision;
        sw.action = a?.action;
        sw.totalMs = a?.totalMs;
        sw.flipUs = a?.flipUs;
        sw.carried = a?.carriedMaps.length;
        screen.event(
          `revision ${chain.revision} live ${sw.commitToLiveMs} ms after the commit: ${a?.action ?? "?"} on the host in ${a?.totalMs ?? "?"} ms` +
            (a?.action === "switched"
              ? ` (switch ${a.flipUs} µs, ${a.carriedMaps.length} maps carried over)`
              : "") +
            `; missing so far ${flow.progress.missing}`,
        );
      } catch (err) {
        if (err instanceof Interrupted) throw err;
        sw.error = err instanceof Error ? err.message : String(err);
        screen.event(`commit ${sha.slice(0, 7)} did not go live: ${sw.error}`);
      }
    }
    if (options.durationS !== undefined) {
      const left = options.durationS * 1000 - (Date.now() - trafficStart);
      await wait(Math.max(left, 2000), signal);
    } else {
      screen.event("all changes are in; Ctrl-C to stop");
      await wait(2 ** 31 - 1, signal);
    }
  } catch (err) {
    if (!(err instanceof Interrupted)) throw err;
    interrupted = true;
  } finally {
    clearInterval(refresh);
  }

  const result = await flow.stop();
  const final = await fetchStatus(sluice.port);
  if (final.ok)
    screen.frame(final.doc, { ...flow.progress, sent: result.sent, received: result.received }, "");
  const live = switches.filter((s) => !s.error && s.revision);
  const revisions = [first.revision, ...live.map((s) => s.revision!)].map((r) => r.slice(0, 7)).join(" -> ");
  process.stdout.write("\n");
  for (const s of switches)
    process.stdout.write(
      `demo:   ${s.sha.slice(0, 7)} ${s.change.title}: ${
        s.error
          ? `FAILED ${s.error}`
          : s.revision
            ? `${s.action} in ${s.totalMs} ms on the host${s.action === "switched" ? ` (switch ${s.flipUs} µs)` : ""}, live ${s.commitToLiveMs} ms after the commit`
            : "not live yet"
      }\n`,
    );
  if (result.lost !== 0 && result.missingSample.length)
    process.stdout.write(`demo:   first missing sequence numbers: ${result.missingSample.join(", ")}\n`);
  process.stdout.write(
    `demo: sent ${result.sent}, received ${result.received}, lost ${result.lost}; ` +
      `${live.length} of ${CHANGES.length} commits switched in (revisions ${revisions})` +
      `${result.receiverDrops ? `; receiver socket drops ${result.receiverDrops}` : ""}` +
      `${interrupted ? "; stopped by Ctrl-C" : ""}\n`,
  );
  const allIn = live.length === CHANGES.length;
  // Ctrl-C before the last commit is the viewer's choice, not a failure of the demo.
  return result.lost === 0 && (allIn || (interrupted && switches.every((s) => !s.error))) ? 0 : 1;
}

async function main(): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      options: {
        duration: { type: "string", default: process.env.SLUICE_DEMO_DURATION },
        rate: { type: "string", default: "5000" },
        gap: { type: "string" },
        help: { type: "boolean", short: "h", default: false },
      },
      strict: true,
    }));
  } catch (err) {
    process.stderr.write(`demo: ${(err as Error).message}\n`);
    return 2;
  }
  if (values.help) {
    process.stdout.write(
      "usage: npm run demo -- [--duration SECONDS] [--rate PACKETS_PER_SECOND] [--gap SECONDS]\n" +
        "  --duration  end by itself after this much traffic (also SLUICE_DEMO_DURATION); default: until Ctrl-C\n" +
        "  --rate      packets per second from h1 to h2 (default 5000)\n" +
        "  --gap       seconds between commits (default 8, or a fifth of --duration)\n",
    );
    return 0;
  }
  const durationS = values.duration ? Number(values.duration) : undefined;
  const rate = Number(values.rate);
  if ((durationS !== undefined && !(durationS > 0)) || !(rate > 0 && rate <= 100_000)) {
    process.stderr.write("demo: --duration must be > 0 seconds and --rate within 1..100000\n");
    return 2;
  }
  const gapS = values.gap ? Number(values.gap) : durationS ? Math.min(8, Math.max(2, durationS / 5)) : 8;

  const undo = new Cleanup();
  const interrupt = new AbortController();
  let signals = 0;
  const onSignal = () => {
    signals++;
    if (signals === 1) {
      process.stdout.write("\ndemo: stopping (Ctrl-C again to skip the totals and just clean up)\n");
      interrupt.abort();
    } else {
      void undo.run().then(() => process.exit(130));
    }
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  process.on("SIGHUP", onSignal);

  let code: number;
  try {
    code = await runDemo({ durationS, rate, gapS }, interrupt.signal, undo);
  } catch (err) {
    if (err instanceof Interrupted) {
      process.stdout.write("demo: stopped before the traffic started\n");
      code = 130;
    } else {
      process.stderr.write(`demo: ${err instanceof Error ? err.message : String(err)}\n`);
      code = err instanceof DemoEnvironmentError ? 3 : 1;
    }
  }
  const { done, failed } = await undo.run();
  if (failed.length) process.stderr.write(`demo: cleanup failed for:\n  ${failed.join("\n  ")}\n`);
  else process.stdout.write(`demo: cleaned up: ${done.length ? done.join(", ") : "nothing to undo"}\n`);
  return failed.length ? 1 : code;
}

const code = await main();
// Exit now: the status fetches' keep-alive sockets would hold the process for a few seconds.
process.stdout.write("", () => process.exit(code));
