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
 *
 * The parts: support.ts (names, commands, processes, cleanup), topology.ts (namespaces and
 * links), repository.ts (the Git repository and its commits), traffic.ts (the counted flow),
 * sluice.ts (the `sluice run` process) and screen.ts (what is shown).
 */
import { rmSync } from "node:fs";
import { mkdir } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { fetchStatus } from "../../bin/format.ts";
import type { SingleHostStatus } from "../../bin/run.ts";
import { CHANGES, commitChange, createRepository, type Change } from "./repository.ts";
import { Screen } from "./screen.ts";
import { startSluice } from "./sluice.ts";
import {
  BPFFS_PREFIX,
  Cleanup,
  DemoEnvironmentError,
  FLOW_PORT,
  H1,
  H2,
  interruptible,
  Interrupted,
  PREFIX,
  PROBE_PORT,
  PROBE_RATE,
  SWITCH_TIMEOUT_MS,
  sweepStale,
  wait,
} from "./support.ts";
import { createTopology } from "./topology.ts";
import { startFlow } from "./traffic.ts";

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
  process.stdout.write(`demo: live view (graphs, commits as markers): http://127.0.0.1:${sluice.port}/\n`);
  const screen = new Screen([
    `sluice demo: ${t.h1} (${H1.ip}) -> ${t.node} [chain on ${t.chainIf}] -> ${t.h2} (${H2.ip})`,
    `sluice run --source ${repoDir} --path network   (status: sluice status --port ${sluice.port}; live view: http://127.0.0.1:${sluice.port}/)`,
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
