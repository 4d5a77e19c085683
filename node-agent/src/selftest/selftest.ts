/**
 * The in-kernel self-test: test vectors run with BPF_PROG_TEST_RUN on a freshly loaded chain
 * instance before it may be switched in. The instance is the caller's (see the chain manager);
 * this module only runs packets through it and compares what happened with what was expected.
 */
import { Reason } from "../../../common/api/conditions.ts";
import type { ExpectedCounters, TestVector } from "../../../common/api/testvector.ts";
import { SluiceError } from "../../../common/errors.ts";
import { deriveCounters, type EndedCounters, type NfCounters, zeroEnded } from "../chain/counters.ts";
import type { BpfProgram } from "../libbpf/index.ts";
import { buildPacket, returnCodeToVerdict, type ProgramHook } from "../packet/index.ts";

/**
 * A loaded chain instance to run vectors on. Its programs and maps are private to the
 * self-test (never attached, never shared with live traffic); the caller owns and closes them.
 */
export interface SelfTestTarget {
  /** Program type of the chain. */
  hook: ProgramHook;
  /** NF names in chain order. */
  order: readonly string[];
  /** The program of NF `i` (a chain vector enters at NF 0). */
  program(i: number): BpfProgram;
  /** What ended in each NF so far (summed over CPUs), by NF name. */
  readEnded(): Map<string, EndedCounters>;
  /**
   * Makes NF `i` the end of every walk until the returned function is called: its CONTINUE then
   * finds no next NF and passes the packet (the kernel counts that as an error, which the
   * self-test reads back as the NF's own pass).
   */
  isolate(i: number): () => void;
  /** Empties the NFs' own state maps (not their tables), so that every vector starts fresh. */
  resetState(): void;
  /**
   * Makes the next run a new packet to every NF, when NF 0 does not run (an NF alone, entered
   * at its own program): the chain's shared parse result and clock reading are forgotten.
   */
  forgetPacket?(): void;
}

/** The outcome of one vector, in the shape NodeChain status shows it. */
export interface VectorResult {
  /** Vector name; `<nf>/<vector>` for an NF's own vectors. */
  vector: string;
  passed: boolean;
  /** What the vector expects, e.g. `drop, dropped=3, firewall.drops=1`. */
  expected: string;
  /** What the chain did, for the same items. */
  got: string;
}

/** All vectors of one self-test. */
export interface SelfTestReport {
  /** Vectors that passed. */
  passed: number;
  /** Vectors that failed. */
  failed: number;
  /** Every vector's outcome, failures first. */
  results: VectorResult[];
  /** Wall time of running the vectors (not of loading the instance). */
  durationMs: number;
}

/** Vectors to run: the chain's own, and each NF's own by NF name. */
export interface SelfTestVectors {
  chain?: readonly TestVector[];
  nf?: ReadonlyMap<string, readonly TestVector[]>;
}

/**
 * A self-test vector failed: nothing was switched in. `results` holds every vector's outcome
 * (failures first); the message names the first failures with expected and got.
 */
export class SelfTestError extends SluiceError {
  override name = "SelfTestError";
  readonly results: VectorResult[];
  readonly report: SelfTestReport;

  constructor(report: SelfTestReport) {
    const failures = report.results.filter((r) => !r.passed);
    const shown = failures
      .slice(0, 3)
      .map((r) => `${r.vector}: expected ${r.expected}, got ${r.got}`)
      .join("; ");
    const more = failures.length > 3 ? ` (and ${failures.length - 3} more)` : "";
    super(
      Reason.SelfTestFailed,
      `self-test failed: ${failures.length} of ${report.results.length} vectors: ${shown}${more}`,
      // The revision fails the same vectors until it changes.
      { retry: "stall" },
    );
    this.report = report;
    this.results = report.results;
  }
}

/** True when at least one vector would run. */
export function hasVectors(vectors: SelfTestVectors): boolean {
  if ((vectors.chain?.length ?? 0) > 0) return true;
  for (const list of vectors.nf?.values() ?? []) if (list.length > 0) return true;
  return false;
}

/**
 * Runs every vector: first each NF's own (on that NF alone, in chain order), then the chain's
 * (entering at NF 0). Each vector starts from empty NF state; tables stay as configured.
 */
export function runSelfTest(target: SelfTestTarget, vectors: SelfTestVectors): SelfTestReport {
  const started = performance.now();
  const results: VectorResult[] = [];
  target.order.forEach((nf, i) => {
    const own = vectors.nf?.get(nf) ?? [];
    if (own.length === 0) return;
    const restore = target.isolate(i);
    try {
      for (const vector of own) results.push(runVector(target, vector, { nf, index: i }));
    } finally {
      restore();
    }
  });
  for (const vector of vectors.chain ?? []) results.push(runVector(target, vector, undefined));
  results.sort((a, b) => Number(a.passed) - Number(b.passed));
  const passed = results.filter((r) => r.passed).length;
  return { passed, failed: results.length - passed, results, durationMs: performance.now() - started };
}

/** Throws {@link SelfTestError} when any vector failed. */
export function assertSelfTestPassed(report: SelfTestReport): void {
  if (report.failed > 0) throw new SelfTestError(report);
}

const COUNTER_FIELDS = ["packets", "drops", "passes"] as const satisfies readonly (keyof ExpectedCounters)[];

function runVector(
  target: SelfTestTarget,
  vector: TestVector,
  alone: { nf: string; index: number } | undefined,
): VectorResult {
  const name = alone ? `${alone.nf}/${vector.name}` : vector.name;
  const expect = vector.expect;
  const expectedParts: string[] = [expect.verdict];
  if (expect.passed !== undefined) expectedParts.push(`passed=${expect.passed}`);
  if (expect.dropped !== undefined) expectedParts.push(`dropped=${expect.dropped}`);
  for (const [nf, counters] of Object.entries(expect.counters ?? {})) {
    for (const field of COUNTER_FIELDS) {
      if (counters[field] !== undefined) expectedParts.push(`${nf}.${field}=${counters[field]}`);
    }
  }
  const expected = expectedParts.join(", ");
  const failure = (got: string): VectorResult => ({ vector: name, passed: false, expected, got });

  let packet: Buffer;
  try {
    packet = buildPacket(vector.packet);
  } catch (err) {
    return failure(`no packet: ${(err as Error).message}`);
  }

  target.resetState();
  const program = target.program(alone?.index ?? 0);
  const count = vector.count ?? 1;
  const before = target.readEnded();
  let last = "";
  let passed = 0;
  let dropped = 0;
  let aborted = 0;
  try {
    for (let k = 0; k < count; k++) {
      if (alone && alone.index > 0) target.forgetPacket?.();
      const { retval } = program.testRun({ data: packet });
      last = returnCodeToVerdict(target.hook, retval) ?? `return code ${retval | 0}`;
      if (last === "pass") passed++;
      else if (last === "drop") dropped++;
      else if (last === "aborted") aborted++;
    }
  } catch (err) {
    return failure(`test run failed: ${(err as Error).message}`);
  }
  const after = target.readEnded();

  const order = alone ? [alone.nf] : [...target.order];
  const ended = new Map<string, EndedCounters>();
  for (const nf of order) ended.set(nf, diffEnded(after.get(nf), before.get(nf)));
  if (alone && alone.index < target.order.length - 1) {
    // Alone, a CONTINUE ends as a tail call into the emptied next slot: the packet passed and
    // the kernel counted an error. Aborted runs are the other errors (on tc they return SHOT
    // like drops, told apart by the drop counter).
    const own = ended.get(alone.nf)!;
    const abortedRuns = target.hook === "xdp" ? BigInt(aborted) : BigInt(dropped) - own.drops;
    const continued = own.errors - abortedRuns;
    if (continued > 0n) {
      own.errors -= continued;
      own.passes += continued;
    }
  }
  const derived = deriveCounters(order, ended);

  const gotParts = [last];
  let ok = last === expect.verdict;
  if (expect.passed !== undefined) {
    gotParts.push(`passed=${passed}`);
    ok &&= passed === expect.passed;
  }
  if (expect.dropped !== undefined) {
    gotParts.push(`dropped=${dropped}`);
    ok &&= dropped === expect.dropped;
  }
  for (const [nf, counters] of Object.entries(expect.counters ?? {})) {
    const got: NfCounters | undefined = derived.get(nf);
    for (const field of COUNTER_FIELDS) {
      const want = counters[field];
      if (want === undefined) continue;
      if (!got) {
        gotParts.push(`${nf}.${field}=(no NF named ${nf}${alone ? " here" : " in the chain"})`);
        ok = false;
        continue;
      }
      gotParts.push(`${nf}.${field}=${got[field]}`);
      ok &&= got[field] === BigInt(want);
    }
  }
  return { vector: name, passed: ok, expected, got: gotParts.join(", ") };
}

function diffEnded(after: EndedCounters | undefined, before: EndedCounters | undefined): EndedCounters {
  const a = after ?? zeroEnded();
  const b = before ?? zeroEnded();
  return {
    packets: a.packets - b.packets,
    bytes: a.bytes - b.bytes,
    drops: a.drops - b.drops,
    passes: a.passes - b.passes,
    errors: a.errors - b.errors,
  };
}
