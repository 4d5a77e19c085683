/**
 * The data-plane benchmark: what a chain costs per packet and per hop, what linking by tail
 * calls costs against one fused program, how long a switch takes and whether switching under
 * traffic loses packets. Needs root, bpffs, clang and libbpf (as the kernel tests do).
 *
 *   node --import tsx bench/dataplane.ts [--json] [--quick] [--only load]
 *
 * `--json` prints one JSON object on stdout (logs go to stderr); without it, a table. `--quick`
 * keeps the run under a minute with fewer repeats. `--only load` compiles the objects and
 * measures only the NF loads (`load_ms_p50`, `load_ms_p90`, `load_open_ms_p50`,
 * `verified_insns`), in JSON. Missed targets are reported, not fatal: the
 * exit code is non-zero only when the benchmark itself fails. Everything it creates
 * (namespaces, veth pairs, pins, links, temporary files) is removed at the end, also on errors
 * and on Ctrl-C.
 */
import { execFileSync } from "node:child_process";
import { cpus, loadavg, release } from "node:os";
import { pino } from "pino";
import { rootLogger } from "../common/log.ts";
import { createBpffsDir, createVethNetwork, TestScope, type VethNetwork } from "../test/kernel/harness.ts";
import { measureLoads, type LoadFigures } from "./load.ts";
import {
  chain3Specs,
  chain3UnseenSpecs,
  measureManagerSwap,
  measureManagerSwitches,
  noop3Specs,
  type ManagerLeftovers,
  type SpecFactory,
} from "./manager.ts";
import { compileObjects, type CompileFigures } from "./objects.ts";
import { atMost, equals, tally, table, targetTable, type TargetCheck } from "./report.ts";
import { round } from "./stats.ts";
import { measureSwapFlips, type SwapFigures } from "./swap.ts";
import { measureSwitchFloor, type SwitchFigures } from "./switching.ts";
import { measureIps, type IpsFigures } from "./ips.ts";
import { measureRouter, type RouterFigures } from "./router.ts";
import { measureL4lb, type L4lbFigures } from "./l4lb.ts";
import { measureOverlay, type OverlayFigures } from "./overlay.ts";
import { measureRootHop, type RootHopFigures } from "./roothop.ts";
import { measureTestRuns, type TestRunFigures } from "./testrun.ts";
import { measureFused, type FusedFigures } from "./fused.ts";
import { measureLinked, type LinkedFigures } from "./linked.ts";
import { measureTiming, type TimingFigures } from "./timing.ts";

/** How much of everything a run does. */
interface RunPlan {
  mode: "quick" | "full";
  compile: { cold: number; cached: number };
  loadRounds: number;
  testrun: { repeat: number; rounds: number };
  /** Test runs of the ips NF on a 1,400-byte payload (each run scans every byte). */
  ips: { repeat: number; rounds: number };
  /** Test runs of the router NF (forwarded IPv4/IPv6, TTL 1 to the stack). */
  router: { repeat: number; rounds: number };
  /** Test runs of the l4lb NF (remembered flow, no affinity, reply, other traffic). */
  l4lb: { repeat: number; rounds: number };
  /** Test runs of the overlay NF (wrap for a remote segment, unwrap, no segment). */
  overlay: { repeat: number; rounds: number };
  /** Switches through the chain manager (first apply, the creation, not counted). */
  managerSwitches: number;
  /** Switches of a 3-noop chain through the chain manager (its own cost, little to verify). */
  noopSwitches: number;
  /** Root hop, direct vs indirect: test runs per variant and round, and flips per root. */
  rootHop: { repeat: number; rounds: number; flips: number };
  /** Switches done by hand on the libbpf layer (the floor). */
  floorSwitches: number;
  /** Flip swap: traffic for the whole run; switches must reach `minSwitches`. */
  swap: { packets: number; rate: number; minSwitches: number };
  /** Manager swap: traffic while the manager switches whole chains. */
  managerSwap: { packets: number; rate: number };
}

const PLANS: Record<RunPlan["mode"], RunPlan> = {
  quick: {
    mode: "quick",
    compile: { cold: 1, cached: 10 },
    loadRounds: 10,
    testrun: { repeat: 100_000, rounds: 7 },
    ips: { repeat: 10_000, rounds: 7 },
    router: { repeat: 1_000, rounds: 7 },
    l4lb: { repeat: 100_000, rounds: 7 },
    overlay: { repeat: 1_000, rounds: 7 },
    managerSwitches: 30,
    noopSwitches: 30,
    rootHop: { repeat: 100_000, rounds: 7, flips: 200 },
    floorSwitches: 10,
    swap: { packets: 60_000, rate: 30_000, minSwitches: 1_000 },
    managerSwap: { packets: 60_000, rate: 20_000 },
  },
  full: {
    mode: "full",
    compile: { cold: 3, cached: 50 },
    loadRounds: 40,
    testrun: { repeat: 1_000_000, rounds: 15 },
    ips: { repeat: 100_000, rounds: 15 },
    router: { repeat: 5_000, rounds: 15 },
    l4lb: { repeat: 1_000_000, rounds: 15 },
    overlay: { repeat: 5_000, rounds: 15 },
    managerSwitches: 200,
    noopSwitches: 200,
    rootHop: { repeat: 1_000_000, rounds: 15, flips: 1_000 },
    floorSwitches: 40,
    swap: { packets: 480_000, rate: 40_000, minSwitches: 10_000 },
    managerSwap: { packets: 600_000, rate: 30_000 },
  },
};

/** Stops the run at the next check after Ctrl-C / SIGTERM. */
class Interrupted extends Error {
  override name = "Interrupted";
}

const USAGE = "usage: node --import tsx bench/dataplane.ts [--json] [--quick] [--only load]\n";
const argv = process.argv.slice(2);
/** Phases a run is limited to (`--only load`); empty: all. */
const only = new Set<string>();
const args = new Set<string>();
for (let i = 0; i < argv.length; i++) {
  const arg = argv[i]!;
  if (arg === "--only" || arg.startsWith("--only=")) {
    const phase = arg === "--only" ? argv[++i] : arg.slice("--only=".length);
    if (phase !== "load") {
      process.stderr.write(`--only: unknown phase ${phase ?? "(none)"}\n${USAGE}`);
      process.exit(2);
    }
    only.add(phase);
  } else if (["--json", "--quick"].includes(arg)) {
    args.add(arg);
  } else {
    process.stderr.write(`unknown argument ${arg}\n${USAGE}`);
    process.exit(2);
  }
}
const json = args.has("--json");
const plan = PLANS[args.has("--quick") ? "quick" : "full"];

// stdout carries only the result: the project's logger (and anything it logs from the agent
// code measured here) goes to stderr, at warn unless SLUICE_LOG_LEVEL says otherwise.
(rootLogger as unknown as Record<symbol, unknown>)[pino.symbols.streamSym] = pino.destination({
  dest: 2,
  sync: true,
});
if (process.env.SLUICE_LOG_LEVEL === undefined) rootLogger.level = "warn";

const startedAt = Date.now();
const log = (msg: string) =>
  process.stderr.write(`[${((Date.now() - startedAt) / 1000).toFixed(1)}s] ${msg}\n`);

const scope = new TestScope();
let interrupted = false;
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.on(signal, () => {
    if (interrupted) return;
    interrupted = true;
    log(`${signal}: cleaning up`);
    scope.dispose().then(
      () => process.exit(signal === "SIGINT" ? 130 : 143),
      (err: unknown) => {
        log(`cleanup failed: ${String(err)}`);
        process.exit(1);
      },
    );
  });
}
function checkpoint(): void {
  if (interrupted) throw new Interrupted("interrupted");
}

function machineInfo() {
  let clang = "unknown";
  try {
    clang =
      execFileSync(process.env.SLUICE_CLANG ?? "clang", ["--version"], { encoding: "utf8" }).split("\n")[0] ??
      "";
  } catch {
    // reported as unknown; compile() fails loudly later if clang is really missing
  }
  return {
    kernel: release(),
    cpus: cpus().length,
    cpu_model: cpus()[0]?.model ?? "unknown",
    node: process.version,
    clang,
    loadavg_start: loadavg().map((l) => round(l, 2)),
  };
}

async function main(): Promise<number> {
  if (process.getuid?.() !== 0) throw new Error("the data-plane benchmark needs root (BPF, namespaces)");
  const machine = machineInfo();
  log(`data-plane benchmark, ${plan.mode} run, kernel ${machine.kernel}, ${machine.cpus} CPUs`);

  const { objects, figures: compileFigures } = await compileObjects(
    scope,
    only.size > 0 ? { cold: 1, cached: 1 } : plan.compile,
    log,
  );
  checkpoint();
  const loads: LoadFigures = measureLoads(objects, scope, plan.loadRounds, log);
  checkpoint();
  if (only.has("load")) {
    const result = {
      benchmark: "sluice data plane",
      mode: plan.mode,
      only: [...only],
      started_at: new Date(startedAt).toISOString(),
      duration_s: round((Date.now() - startedAt) / 1000, 1),
      machine: { ...machine, loadavg_end: loadavg().map((l) => round(l, 2)) },
      repeats: { load_rounds: loads.load_rounds },
      load_ms_p50: loads.load_ms_p50,
      load_ms_p90: loads.load_ms_p90,
      load_open_ms_p50: loads.open_ms_p50,
      verified_insns: loads.verified_insns,
      targets: { load_ms_p50: atMost(Math.max(...Object.values(loads.load_ms_p50)), 1, "ms (slowest NF)") },
    };
    process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
    return 0;
  }
  const runs: TestRunFigures = measureTestRuns(objects, scope, plan.testrun, log);
  checkpoint();
  const fusedMode: FusedFigures = await measureFused(objects, scope, plan.testrun, log);
  checkpoint();
  const linked: LinkedFigures = measureLinked(objects, scope, plan.testrun, log);
  checkpoint();
  const timing: TimingFigures = measureTiming(objects, scope, plan.testrun, log);
  checkpoint();
  const ips: IpsFigures = measureIps(objects, scope, plan.ips, log);
  checkpoint();
  const router: RouterFigures = await measureRouter(objects, scope, plan.router, log);
  checkpoint();
  const l4lb: L4lbFigures = measureL4lb(objects, scope, plan.l4lb, log);
  checkpoint();
  const overlay: OverlayFigures = await measureOverlay(objects, scope, plan.overlay, log);
  checkpoint();
  const rootHop: RootHopFigures = measureRootHop(objects, scope, plan.rootHop, log);
  checkpoint();

  const net: VethNetwork = await createVethNetwork(scope);
  const bpffs = createBpffsDir(scope);
  checkpoint();

  const floor: SwitchFigures = measureSwitchFloor(objects, scope, plan.floorSwitches, log);
  checkpoint();

  // A failing phase of the chain manager is reported (and makes the exit code non-zero) without
  // losing the figures of the other phases.
  const errors: string[] = [];
  const failed: Record<string, string> = {};
  const guarded = async <T>(what: string, run: () => Promise<T>): Promise<T | undefined> => {
    try {
      return await run();
    } catch (err) {
      if (interrupted) throw err;
      const message = err instanceof Error ? err.message : String(err);
      errors.push(`${what}: ${message}`);
      failed[what] = `${what} failed`;
      log(`${what} failed: ${err instanceof Error ? (err.stack ?? message) : message}`);
      return undefined;
    }
  };
  /** One series of `count` switches through the chain manager, named `what` in errors. */
  const series = (
    what: string,
    name: string,
    makeSpec: SpecFactory,
    count = plan.managerSwitches,
    keepStandby = true,
  ): Promise<(SwitchFigures & ManagerLeftovers) | undefined> =>
    guarded(what, () => {
      checkpoint();
      return measureManagerSwitches(
        name,
        makeSpec,
        objects,
        net,
        bpffs.path,
        scope,
        count,
        log,
        checkpoint,
        keepStandby,
      );
    });
  const managerSwitch = await series("chain manager switches", "bench-switch", chain3Specs(objects, net));
  // The same alternating series with the standby off: every switch loads (what it cost before).
  const noStandbySwitch = await series(
    "chain manager switches without standby",
    "bench-nostandby",
    chain3Specs(objects, net),
    plan.managerSwitches,
    false,
  );
  const unseenSwitch = await series(
    "chain manager unseen switches",
    "bench-unseen",
    chain3UnseenSpecs(objects, net),
  );
  // The same two series with the chain fused, as `mode: auto` runs it where it verifies.
  const fusedSwitch = await series(
    "chain manager fused switches",
    "bench-fused",
    chain3Specs(objects, net, "fused"),
  );
  const unseenFusedSwitch = await series(
    "chain manager fused unseen switches",
    "bench-unseenf",
    chain3UnseenSpecs(objects, net, "fused"),
  );
  const noopSwitch = await series(
    "chain manager noop switches",
    "bench-noop",
    noop3Specs(objects, net),
    plan.noopSwitches,
  );
  checkpoint();
  const managerSwap: SwapFigures | undefined = await guarded("chain manager swap", () =>
    measureManagerSwap(objects, net, bpffs.path, scope, plan.managerSwap, log, checkpoint),
  );
  checkpoint();

  const swap = await measureSwapFlips(objects, net, scope, plan.swap, log, checkpoint);
  checkpoint();

  const swapOk = (s: SwapFigures | undefined, min: number, reason?: string): TargetCheck => {
    if (!s)
      return {
        target: `lost == 0, root misses == 0, >= ${min} switches`,
        value: null,
        unit: "packets lost",
        pass: null,
        reason: reason ?? "not measured",
      };
    const enough = s.switches >= min;
    return {
      target: `lost == 0, root misses == 0, >= ${min} switches`,
      value: s.lost,
      unit: "packets lost",
      pass: s.lost === 0 && s.root_misses === 0 && enough,
      ...(enough ? {} : { reason: `only ${s.switches} switches` }),
    };
  };
  const loadWorst = Math.max(...Object.values(loads.load_ms_p50));
  const targets: Record<string, TargetCheck> = {
    hop_ns: atMost(runs.hop_ns, 15, "ns"),
    fused_ratio: atMost(runs.fused_ratio, 1.15, ""),
    fused_mode_ratio: atMost(fusedMode.fused_mode_ratio, 1.05, ""),
    fused_ns_per_nf: atMost(fusedMode.fused_ns_per_nf, 1, "ns"),
    linked_ratio: atMost(linked.linked_ratio, 1.1, ""),
    switch_ms_p50: atMost(managerSwitch?.p50_ms, 3, "ms", failed["chain manager switches"]),
    switch_ms_p99: atMost(managerSwitch?.p99_ms, 20, "ms", failed["chain manager switches"]),
    switch_unseen_ms_p50: atMost(unseenSwitch?.p50_ms, 5, "ms", failed["chain manager unseen switches"]),
    switch_fused_ms_p50: atMost(fusedSwitch?.p50_ms, 3, "ms", failed["chain manager fused switches"]),
    switch_unseen_fused_ms_p50: atMost(
      unseenFusedSwitch?.p50_ms,
      5,
      "ms",
      failed["chain manager fused unseen switches"],
    ),
    flip_us_p50: atMost(managerSwitch?.flip_us_p50, 50, "us", failed["chain manager switches"]),
    load_ms_p50: atMost(loadWorst, 1, "ms (slowest NF)"),
    compile_cached_compiles: equals(compileFigures.compile_cached_compiles, 0, "clang runs"),
    swap: swapOk(swap, plan.swap.minSwitches),
  };
  targets.swap_manager = swapOk(managerSwap, 1, failed["chain manager swap"]);
  const leftovers = [
    managerSwitch,
    noStandbySwitch,
    unseenSwitch,
    fusedSwitch,
    unseenFusedSwitch,
    noopSwitch,
  ].filter((f) => f !== undefined);
  targets.manager_leftovers = equals(
    leftovers.length > 0
      ? leftovers.reduce((sum, f) => sum + f.stale_programs + f.programs_after_remove, 0)
      : undefined,
    0,
    "programs",
  );

  const figures: Figures = {
    runs,
    fusedMode,
    ips,
    router,
    l4lb,
    overlay,
    loads,
    compile: compileFigures,
    floor,
    managerSwitch,
    noStandbySwitch,
    unseenSwitch,
    fusedSwitch,
    unseenFusedSwitch,
    noopSwitch,
    rootHop,
    swap,
    managerSwap,
  };
  const result = {
    benchmark: "sluice data plane",
    mode: plan.mode,
    started_at: new Date(startedAt).toISOString(),
    duration_s: round((Date.now() - startedAt) / 1000, 1),
    machine: { ...machine, loadavg_end: loadavg().map((l) => round(l, 2)) },
    repeats: {
      testrun_repeat: runs.testrun_repeat,
      testrun_rounds: runs.testrun_rounds,
      load_rounds: loads.load_rounds,
      compile_rounds: compileFigures.compile_rounds,
      manager_switches: managerSwitch?.switches ?? 0,
      manager_unseen_switches: unseenSwitch?.switches ?? 0,
      manager_noop_switches: noopSwitch?.switches ?? 0,
      floor_switches: floor.switches,
      swap_packets: plan.swap.packets,
      manager_swap_packets: managerSwap ? plan.managerSwap.packets : 0,
    },
    hop_ns: runs.hop_ns,
    hop_ns_slope: runs.hop_ns_slope,
    hop_ns_between_nfs: runs.hop_ns_between_nfs,
    chain_ns: runs.chain_ns,
    fused_ratio: runs.fused_ratio,
    fused_ratio_direct: runs.fused_ratio_direct,
    fused: runs.fused,
    fused_mode_ratio: fusedMode.fused_mode_ratio,
    fused_ns_per_nf: fusedMode.fused_ns_per_nf,
    fused_mode: fusedMode,
    linked_ratio: linked.linked_ratio,
    linked,
    nf_timing_ns: timing.overhead_ns,
    nf_timing: timing,
    ips_ns: ips.ips_ns,
    ips,
    router_ns: router.router_ns,
    router,
    l4lb_ns: l4lb.l4lb_ns,
    l4lb,
    overlay_ns: overlay.overlay_ns,
    overlay,
    switch_ms_p50: managerSwitch?.p50_ms ?? null,
    switch_ms_p99: managerSwitch?.p99_ms ?? null,
    flip_us_p50: managerSwitch?.flip_us_p50 ?? null,
    switch: managerSwitch ?? null,
    switch_unseen_ms_p50: unseenSwitch?.p50_ms ?? null,
    switch_unseen_ms_p99: unseenSwitch?.p99_ms ?? null,
    switch_unseen: unseenSwitch ?? null,
    switch_fused_ms_p50: fusedSwitch?.p50_ms ?? null,
    switch_fused_ms_p99: fusedSwitch?.p99_ms ?? null,
    switch_fused: fusedSwitch ?? null,
    switch_unseen_fused_ms_p50: unseenFusedSwitch?.p50_ms ?? null,
    switch_unseen_fused_ms_p99: unseenFusedSwitch?.p99_ms ?? null,
    switch_unseen_fused: unseenFusedSwitch ?? null,
    switch_without_standby: noStandbySwitch ?? null,
    root_hop: rootHop,
    switch_noop3: noopSwitch ?? null,
    switch_floor: floor,
    load_ms_p50: loads.load_ms_p50,
    load_ms_p90: loads.load_ms_p90,
    load_open_ms_p50: loads.open_ms_p50,
    verified_insns: loads.verified_insns,
    compile_ms_cold: round(compileFigures.compile_ms_cold, 1),
    compile_ms_cached: round(compileFigures.compile_ms_cached, 2),
    compile_cached_compiles: compileFigures.compile_cached_compiles,
    compile_per_object: Object.fromEntries(
      Object.entries(compileFigures.compile_per_object).map(([k, v]) => [
        k,
        { cold_ms: round(v.cold_ms, 1), cached_ms: round(v.cached_ms, 2) },
      ]),
    ),
    swap,
    swap_manager: managerSwap ?? null,
    targets,
    summary: tally(targets),
    notes: explain(figures),
    errors,
  };

  if (json) process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
  else process.stdout.write(`${render(result, figures)}\n`);
  return errors.length > 0 ? 1 : 0;
}

/** Every figure of a run, as the phases returned them. */
interface Figures {
  runs: TestRunFigures;
  fusedMode: FusedFigures;
  ips: IpsFigures;
  router: RouterFigures;
  l4lb: L4lbFigures;
  overlay: OverlayFigures;
  loads: LoadFigures;
  compile: CompileFigures;
  floor: SwitchFigures;
  managerSwitch: (SwitchFigures & ManagerLeftovers) | undefined;
  /** The alternating series with ChainManagerOptions.keepStandby off. */
  noStandbySwitch: (SwitchFigures & ManagerLeftovers) | undefined;
  unseenSwitch: (SwitchFigures & ManagerLeftovers) | undefined;
  fusedSwitch: (SwitchFigures & ManagerLeftovers) | undefined;
  unseenFusedSwitch: (SwitchFigures & ManagerLeftovers) | undefined;
  noopSwitch: (SwitchFigures & ManagerLeftovers) | undefined;
  rootHop: RootHopFigures;
  swap: SwapFigures;
  managerSwap: SwapFigures | undefined;
}

/** Reading aids derived from this run's figures: where the time behind a figure goes. */
function explain({
  runs,
  loads,
  compile,
  managerSwitch,
  noStandbySwitch,
  unseenSwitch,
  fusedSwitch,
  unseenFusedSwitch,
  noopSwitch,
  rootHop,
}: Figures): string[] {
  const notes: string[] = [];
  const extra = round(runs.fused.linked_ns - runs.fused.fused_ns, 1);
  notes.push(
    `linked - fused = ${extra} ns per packet; the two extra tail calls account for about ` +
      `${round(2 * runs.hop_ns, 1)} ns (2 x hop_ns); the rest is work the separate NFs do more than once ` +
      "(each parses the packet, ratelimit and flowmon each read the clock) or that the compiler shares only " +
      "within one program",
  );
  const chain3 = ["firewall", "ratelimit", "flowmon"];
  const insns = chain3.reduce((sum, nf) => sum + (loads.verified_insns[nf] ?? 0), 0);
  const loadMs = round(
    chain3.reduce((sum, nf) => sum + (loads.load_ms_p50[nf] ?? 0), 0),
    1,
  );
  notes.push(
    `loading firewall + ratelimit + flowmon verifies ${insns} instructions ` +
      `(${chain3.map((nf) => `${nf} ${loads.verified_insns[nf]}`).join(", ")}) and takes ${loadMs} ms ` +
      "(sum of p50s); a switch loads the chain twice: the self-test instance, then the live revision",
  );
  if (managerSwitch) {
    const p = managerSwitch.parts_ms_p50;
    notes.push(
      `chain manager switch p50 ${managerSwitch.p50_ms} ms: self-test ${p.self_test} ms, load ${p.load} ms, ` +
        `after the flip ${p.after_flip} ms; first/last quarter p50 ${managerSwitch.p50_first_quarter_ms}/` +
        `${managerSwitch.p50_last_quarter_ms} ms`,
    );
  }
  for (const [what, s] of [
    ["alternating", managerSwitch],
    ["alternating without standby", noStandbySwitch],
    ["never-seen", unseenSwitch],
    ["fused alternating", fusedSwitch],
    ["fused never-seen", unseenFusedSwitch],
  ] as const) {
    if (!s) continue;
    const p = s.parts_ms_p50;
    notes.push(
      `${what} switch p50 ${s.p50_ms} ms, parts (p50, ms): self-test load ${p.selfTestLoadMs}, vectors ` +
        `${p.vectorsMs}, NF loads ${p.nfLoadMs} (these three overlap), rest of the build ${p.revisionMs}, flip ` +
        `${round(s.flip_us_p50 / 1000, 3)}, release ${p.releaseMs}; before apply, the compile cache lookup of ` +
        `the three objects takes ${round(compile.compile_ms_cached, 2)} ms`,
    );
  }
  notes.push(
    `root hop: the indirect hop costs ${rootHop.indirect_extra_ns.noop1} ns more per packet ` +
      `(${rootHop.ns.direct.noop1} -> ${rootHop.ns.indirect.noop1} ns with one noop NF) and makes a flip ` +
      `${rootHop.flip_us_p50.direct} -> ${rootHop.flip_us_p50.indirect} us: the direct jump costs less as ` +
      `soon as more than ${rootHop.break_even_packets} packets pass between two switches`,
  );
  if (noopSwitch) {
    notes.push(
      `the same switch with three noop NFs (${loads.verified_insns.noop} verified instructions each) takes ` +
        `p50 ${noopSwitch.p50_ms} ms / p99 ${noopSwitch.p99_ms} ms: the chain manager's own cost`,
    );
  }
  return notes;
}

/** The readable report. */
function render(
  result: {
    mode: string;
    duration_s: number;
    machine: ReturnType<typeof machineInfo>;
    targets: Record<string, TargetCheck>;
    notes: string[];
    errors: string[];
  },
  {
    runs,
    fusedMode: fm,
    ips,
    router,
    l4lb,
    overlay,
    loads,
    compile,
    floor,
    managerSwitch,
    noStandbySwitch,
    unseenSwitch,
    fusedSwitch,
    unseenFusedSwitch,
    noopSwitch,
    swap,
    managerSwap,
  }: Figures,
): string {
  const out: string[] = [];
  const m = result.machine;
  out.push(
    `sluice data plane, ${result.mode} run (${result.duration_s} s): kernel ${m.kernel}, ` +
      `${m.cpus} x ${m.cpu_model}, node ${m.node}`,
  );
  out.push("");
  out.push(
    `Per packet, BPF_PROG_TEST_RUN x ${runs.testrun_repeat}, ${runs.testrun_rounds} interleaved rounds, ` +
      `${runs.packet_bytes}-byte UDP packet (medians):`,
  );
  out.push(
    table(
      ["variant", "ns/packet"],
      [
        ...Object.entries(runs.chain_ns).map(([n, ns]) => [
          n === "0" ? "root alone (slot empty)" : `root + ${n} noop NF${n === "1" ? "" : "s"}`,
          String(ns),
        ]),
        ["root + firewall + ratelimit + flowmon (linked)", String(runs.fused.linked_ns)],
        ["root + fused program", String(runs.fused.fused_ns)],
        ["fused program alone", String(runs.fused.fused_direct_ns)],
      ],
    ),
  );
  out.push(
    `hop: ${runs.hop_ns} ns ((t8-t0)/8), slope ${runs.hop_ns_slope} ns, between NFs ${runs.hop_ns_between_nfs} ns; ` +
      `linked/fused ${runs.fused_ratio} (without root ${runs.fused_ratio_direct})`,
  );
  out.push(
    `fused mode (generated by the agent): firewall + ratelimit + flowmon ${fm.fused_mode.generated_ns} ns ` +
      `vs hand-fused ${fm.fused_mode.hand_ns} ns: ratio ${fm.fused_mode_ratio} (without root ${fm.fused_mode_ratio_direct}); ` +
      `no-op NFs fused: ${Object.entries(fm.fused_chain_ns)
        .map(([n, ns]) => `${n}: ${ns}`)
        .join(", ")} ns, ${fm.fused_ns_per_nf} ns per NF ((t32-t0)/32), slope ${fm.fused_ns_per_nf_slope} ns`,
  );
  out.push("");
  out.push(
    `ips, ${ips.ips_payload_bytes}-byte UDP payload matching no signature, x ${ips.ips_repeat}, ` +
      `${ips.ips_rounds} rounds (medians):`,
  );
  out.push(
    table(
      ["variant", "ns/packet"],
      [
        ["root + 1 noop NF (same packet)", String(ips.ips_baseline_noop_ns)],
        ...Object.entries(ips.ips_ns).map(([n, ns]) => [`root + ips, ${n} signatures`, String(ns)]),
        [
          'root + ips, 100 signatures "/c...", payload "/c" x 700 (dropped: scan budget)',
          String(ips.ips_hostile_ns),
        ],
      ],
    ),
  );
  out.push("");
  out.push(
    `router, 64-byte UDP payload, x ${router.router_repeat}, ${router.router_rounds} rounds (medians):`,
  );
  out.push(
    table(
      ["variant", "ns/packet"],
      [
        ["root + 1 noop NF (same packet)", String(router.router_baseline_noop_ns)],
        [
          "root + router, IPv4 forwarded (FIB lookup, TTL, MACs, redirect)",
          String(router.router_ns.forward_v4),
        ],
        ["root + router, IPv6 forwarded", String(router.router_ns.forward_v6)],
        ["root + router, TTL 1 (left to the stack)", String(router.router_ns.ttl1_to_stack)],
      ],
    ),
  );
  out.push("");
  out.push(
    `l4lb, TCP segment with 64 payload bytes, x ${l4lb.l4lb_repeat}, ${l4lb.l4lb_rounds} rounds (medians):`,
  );
  out.push(
    table(
      ["variant", "ns/packet"],
      [
        ["root + 1 noop NF (same packet)", String(l4lb.l4lb_baseline_noop_ns)],
        ["root + l4lb, remembered flow (lookups, DNAT, checksums)", String(l4lb.l4lb_ns.known_flow)],
        ["root + l4lb, affinity off (Maglev hash and ring, DNAT)", String(l4lb.l4lb_ns.no_affinity)],
        ["root + l4lb, a backend's reply (source back to the VIP)", String(l4lb.l4lb_ns.reply)],
        ["root + l4lb, other traffic (two lookups that miss)", String(l4lb.l4lb_ns.other)],
      ],
    ),
  );
  out.push("");
  out.push(
    `overlay, 64-byte UDP payload, x ${overlay.overlay_repeat}, ${overlay.overlay_rounds} rounds (medians):`,
  );
  out.push(
    table(
      ["variant", "ns/packet"],
      [
        ["root + 1 noop NF (same packet)", String(overlay.overlay_baseline_noop_ns)],
        [
          "root + overlay, remote segment (LPM, FIB lookup, 50 bytes pushed, redirect)",
          String(overlay.overlay_ns.encap),
        ],
        [
          "root + overlay, VXLAN from a node (checks, node lookup, 50 bytes pulled)",
          String(overlay.overlay_ns.decap),
        ],
        ["root + overlay, no segment (the LPM lookup misses)", String(overlay.overlay_ns.no_segment)],
      ],
    ),
  );
  out.push("");
  out.push("Load of one NF (open + .rodata + map reuse + verifier), ms:");
  out.push(
    table(
      ["NF", "p50", "p90", "verified insns"],
      Object.keys(loads.load_ms_p50).map((nf) => [
        nf,
        String(loads.load_ms_p50[nf]),
        String(loads.load_ms_p90[nf]),
        String(loads.verified_insns[nf]),
      ]),
    ),
  );
  out.push("");
  out.push(
    `Compile (firewall + ratelimit + flowmon): cold ${round(compile.compile_ms_cold, 1)} ms, ` +
      `cached ${round(compile.compile_ms_cached, 2)} ms, clang runs on the cached path: ${compile.compile_cached_compiles}`,
  );
  out.push("");
  const sw = (name: string, s: SwitchFigures) => [
    name,
    String(s.switches),
    String(s.p50_ms),
    String(s.p99_ms),
    String(s.flip_us_p50),
    Object.entries(s.parts_ms_p50)
      .map(([k, v]) => `${k} ${v}`)
      .join(", "),
  ];
  out.push("Switch of a 3-NF chain, warm compile cache:");
  out.push(
    table(
      ["chain, by", "switches", "p50 ms", "p99 ms", "flip us", "parts (p50 ms)"],
      [
        ...(managerSwitch ? [sw("fw+rl+fm, chain manager", managerSwitch)] : []),
        ...(noStandbySwitch ? [sw("fw+rl+fm, chain manager, no standby", noStandbySwitch)] : []),
        ...(unseenSwitch ? [sw("fw+rl+fm never-seen, chain manager", unseenSwitch)] : []),
        ...(fusedSwitch ? [sw("fw+rl+fm fused, chain manager", fusedSwitch)] : []),
        ...(unseenFusedSwitch ? [sw("fw+rl+fm fused never-seen, chain manager", unseenFusedSwitch)] : []),
        sw("fw+rl+fm, by hand (floor)", floor),
        ...(noopSwitch ? [sw("3 x noop, chain manager", noopSwitch)] : []),
      ],
    ),
  );
  for (const [what, f] of [
    ["fw+rl+fm", managerSwitch],
    ["fw+rl+fm without standby", noStandbySwitch],
    ["fw+rl+fm never-seen", unseenSwitch],
    ["fw+rl+fm fused", fusedSwitch],
    ["fw+rl+fm fused never-seen", unseenFusedSwitch],
    ["3 x noop", noopSwitch],
  ] as const) {
    if (f) {
      out.push(
        `chain manager leftovers (${what}): ${f.stale_programs} programs of replaced revisions still loaded ` +
          `beyond the standby, ` +
          `${f.programs_after_remove} programs after remove()`,
      );
    }
  }
  out.push("");
  const sp = (name: string, s: SwapFigures) => [
    name,
    String(s.switches),
    String(s.sent),
    String(s.received),
    String(s.lost),
    String(s.root_misses),
    s.xdp_mode,
  ];
  out.push("Switching under UDP traffic (veth, XDP on the receiver):");
  out.push(
    table(
      ["by", "switches", "sent", "received", "lost", "root misses", "xdp"],
      [sp("root slot flips", swap), ...(managerSwap ? [sp("chain manager", managerSwap)] : [])],
    ),
  );
  out.push("");
  out.push(targetTable(result.targets));
  for (const note of result.notes) out.push(`note: ${note}`);
  for (const error of result.errors) out.push(`ERROR: ${error}`);
  return out.join("\n");
}

let code = 1;
try {
  code = await main();
} catch (err) {
  if (interrupted) {
    // The signal handler cleans up and exits; whatever failed here failed because of it.
    await new Promise(() => undefined);
  }
  log(`benchmark failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
  code = 1;
} finally {
  if (!interrupted) {
    try {
      await scope.dispose();
    } catch (err) {
      log(`cleanup failed: ${String(err)}`);
      code = 1;
    }
  }
}
if (!interrupted) process.exit(code);
