/**
 * The live view's memory: one point a second (rates per function, ns per packet per chain),
 * the last 15 minutes of them, the markers of what happened to the chains, and the problems
 * read off both. Fed by {@link LiveHistory.record}; read by the page as a snapshot, then point
 * by point (see server.ts).
 */
import type {
  ChainReading,
  ChainView,
  FunctionRates,
  LiveMarker,
  LivePoint,
  LiveProblem,
  LiveSnapshot,
  RolloutView,
} from "./model.ts";

/** How many one-second points are kept: 15 minutes. */
export const HISTORY_POINTS = 900;

/** Markers older than the history are dropped; at most this many are kept. */
const MAX_MARKERS = 500;

/** A map this full (entries / max_entries) is reported. */
export const MAP_NEAR_FULL = 0.9;

/**
 * How long the rates of a reading whose sample did not change are held (drawn again each
 * second): the operator asks a node's agent every few seconds while no page is open. Past this
 * the node's graphs show a gap.
 */
export const RATE_HOLD_MS = 15_000;

/** Maps smaller than this are sized to their content (a rule table of one entry), not reported. */
const MAP_MIN_REPORTED = 128;

interface Previous {
  atMs: number;
  packets: bigint;
  drops: bigint;
  passes: bigint;
  errors: bigint;
  rates?: FunctionRates;
  timeNs?: bigint;
  timeSamples?: bigint;
  /** Mean ns per sampled packet in this function over the last interval. */
  nsPerPacket?: number;
}

interface PreviousChain {
  atMs: number;
  runs?: bigint;
  runTimeNs?: bigint;
  rootMisses: bigint;
  nsPerPacket?: number;
}

const keyOf = (node: string, chain: string, nf?: string) =>
  nf ? `${node}/${chain}/${nf}` : `${node}/${chain}`;

function rate(now: bigint, before: bigint, seconds: number): number {
  // A counter that went backwards belongs to a chain made anew: no rate for that second.
  if (now < before || seconds <= 0) return 0;
  return Number(now - before) / seconds;
}

/** Keeps the last {@link HISTORY_POINTS} seconds of every chain, and what happened to them. */
export class LiveHistory {
  readonly #points: LivePoint[] = [];
  readonly #markers: LiveMarker[] = [];
  readonly #previous = new Map<string, Previous>();
  readonly #previousChain = new Map<string, PreviousChain>();
  /** `<node>/<chain>` -> seconds when root misses last grew. */
  readonly #missesAt = new Map<string, { t: number; perSecond: number }>();
  #chains: ChainView[] = [];
  #problems: LiveProblem[] = [];
  #rollouts: RolloutView[] | undefined;
  readonly #listeners = new Set<(event: LiveEvent) => void>();

  constructor(readonly title: string) {}

  /** Adds one reading of every chain taken at `atMs`; returns the point it made. */
  record(atMs: number, readings: readonly ChainReading[], rollouts?: RolloutView[]): LivePoint {
    const t = Math.round(atMs / 1000);
    const point: LivePoint = { t, functions: {}, nsPerPacket: {} };
    const seen = new Set<string>();
    for (const reading of readings) {
      const chainKey = keyOf(reading.node, reading.chain);
      seen.add(chainKey);
      if (reading.noCounters) continue;
      // Counters read elsewhere carry their own time; a sample seen before holds its rates.
      const sampledAt = reading.sampledAtMs ?? atMs;
      const held = atMs - sampledAt <= RATE_HOLD_MS;
      for (const fn of reading.functions) {
        const key = keyOf(reading.node, reading.chain, fn.name);
        seen.add(key);
        const before = this.#previous.get(key);
        if (before?.atMs === sampledAt) {
          if (before.rates && held) point.functions[key] = before.rates;
          if (before.nsPerPacket !== undefined && held) point.nsPerPacket[key] = before.nsPerPacket;
          continue;
        }
        let rates: FunctionRates | undefined;
        let nsPerPacket: number | undefined;
        if (
          before?.timeNs !== undefined &&
          before.timeSamples !== undefined &&
          fn.timeNs !== undefined &&
          fn.timeSamples !== undefined &&
          fn.timeSamples > before.timeSamples &&
          fn.timeNs >= before.timeNs
        ) {
          nsPerPacket = Number(fn.timeNs - before.timeNs) / Number(fn.timeSamples - before.timeSamples);
          if (held) point.nsPerPacket[key] = nsPerPacket;
        }
        if (before) {
          const seconds = (sampledAt - before.atMs) / 1000;
          rates = [
            rate(fn.packets, before.packets, seconds),
            rate(fn.drops, before.drops, seconds),
            rate(fn.passes, before.passes, seconds),
            rate(fn.errors, before.errors, seconds),
          ];
          if (held) point.functions[key] = rates;
        }
        this.#previous.set(key, {
          atMs: sampledAt,
          ...fn,
          ...(rates ? { rates } : {}),
          ...(nsPerPacket !== undefined ? { nsPerPacket } : {}),
        });
      }
      const before = this.#previousChain.get(chainKey);
      if (before?.atMs === sampledAt) {
        if (before.nsPerPacket !== undefined && held) point.nsPerPacket[chainKey] = before.nsPerPacket;
        continue;
      }
      if (before) {
        const seconds = (sampledAt - before.atMs) / 1000;
        if (
          reading.runs !== undefined &&
          reading.runTimeNs !== undefined &&
          before.runs !== undefined &&
          before.runTimeNs !== undefined &&
          reading.runs > before.runs
        ) {
          point.nsPerPacket[chainKey] =
            Number(reading.runTimeNs - before.runTimeNs) / Number(reading.runs - before.runs);
        }
        if (reading.rootMisses > before.rootMisses)
          this.#missesAt.set(chainKey, {
            t,
            perSecond: rate(reading.rootMisses, before.rootMisses, seconds),
          });
      }
      this.#previousChain.set(chainKey, {
        atMs: sampledAt,
        rootMisses: reading.rootMisses,
        ...(point.nsPerPacket[chainKey] !== undefined ? { nsPerPacket: point.nsPerPacket[chainKey] } : {}),
        ...(reading.runs !== undefined ? { runs: reading.runs } : {}),
        ...(reading.runTimeNs !== undefined ? { runTimeNs: reading.runTimeNs } : {}),
      });
    }
    for (const key of [...this.#previous.keys()]) if (!seen.has(key)) this.#previous.delete(key);
    for (const key of [...this.#previousChain.keys()]) if (!seen.has(key)) this.#previousChain.delete(key);

    this.#points.push(point);
    if (this.#points.length > HISTORY_POINTS) this.#points.shift();
    const oldest = this.#points[0]!.t;
    while (this.#markers.length > 0 && (this.#markers[0]!.t < oldest || this.#markers.length > MAX_MARKERS))
      this.#markers.shift();
    this.#chains = readings.map(viewOf);
    this.#problems = this.#findProblems(readings, t);
    this.#rollouts = rollouts;
    this.#emit({
      type: "point",
      point,
      chains: this.#chains,
      problems: this.#problems,
      ...(rollouts ? { rollouts } : {}),
    });
    return point;
  }

  /** Records something that happened to a chain (drawn as a marker with its message). */
  mark(marker: LiveMarker): void {
    this.#markers.push(marker);
    this.#emit({ type: "marker", marker });
  }

  /** Everything the page needs to draw from scratch. */
  snapshot(): LiveSnapshot {
    return {
      title: this.title,
      chains: this.#chains,
      points: [...this.#points],
      markers: [...this.#markers],
      problems: this.#problems,
      ...(this.#rollouts ? { rollouts: this.#rollouts } : {}),
    };
  }

  /** Calls `listener` with every point and marker from now on; returns the unsubscribe. */
  subscribe(listener: (event: LiveEvent) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** How many pages follow the history now (the kernel's run-time counting is held on for them). */
  get watchers(): number {
    return this.#listeners.size;
  }

  #emit(event: LiveEvent): void {
    for (const listener of this.#listeners) listener(event);
  }

  #findProblems(readings: readonly ChainReading[], now: number): LiveProblem[] {
    const problems: LiveProblem[] = [];
    const silentNodes = new Set<string>();
    for (const reading of readings) {
      const chainKey = keyOf(reading.node, reading.chain);
      const at = { node: reading.node, chain: reading.chain };
      // One problem per node: its agent stopped answering, so none of its chains has rates.
      if (reading.silent && !silentNodes.has(reading.node)) {
        silentNodes.add(reading.node);
        problems.push({
          kind: "node-silent",
          ...at,
          message: `node stopped reporting: its agent has not answered for ${reading.silent.seconds} s${reading.silent.error ? ` (${reading.silent.error})` : ""}; no rates from it, its chains keep forwarding as pinned`,
        });
      }
      const misses = this.#missesAt.get(chainKey);
      if (misses && now - misses.t <= 10)
        problems.push({
          kind: "tail-call-misses",
          ...at,
          message: `${Math.round(misses.perSecond)} packets/s found no revision in the root's tail call and went through unfiltered`,
        });
      if (reading.lastError && reading.phase === "Failed")
        problems.push({
          kind: "switch-failed",
          ...at,
          message: `revision not switched in: ${reading.lastError.reason}: ${reading.lastError.message.split("\n")[0]}`,
        });
      for (const map of reading.maps ?? [])
        if (map.maxEntries >= MAP_MIN_REPORTED && map.entries / map.maxEntries >= MAP_NEAR_FULL)
          problems.push({
            kind: "map-near-full",
            ...at,
            nf: map.nf,
            message: `map ${map.nf}/${map.map} holds ${map.entries} of ${map.maxEntries} entries`,
          });
      const first = reading.functions[0];
      if (first) {
        const packets = this.#series(keyOf(reading.node, reading.chain, first.name), 0);
        const recent = packets.filter((p) => p.t > now - 10);
        const earlier = packets.filter((p) => p.t <= now - 10 && p.t > now - 70);
        const earlierMean = mean(earlier.map((p) => p.v));
        if (recent.length >= 10 && recent.every((p) => p.v === 0) && earlierMean >= 1)
          problems.push({
            kind: "counters-stopped",
            ...at,
            message: `no packet counted for 10 s (${Math.round(earlierMean)} packets/s the minute before)`,
          });
      }
      // Each switch is compared with the one before: the seconds since the previous switch (at
      // most 30) against those until the next one (or now).
      const switches = this.#markers.filter(
        (m) => m.kind === "switch" && m.chain === reading.chain && (m.node ?? reading.node) === reading.node,
      );
      for (const [i, marker] of switches.entries()) {
        if (now - marker.t > 120 || now - marker.t < 3) continue;
        const from = Math.max(marker.t - 30, switches[i - 1]?.t ?? -Infinity);
        const until = switches[i + 1]?.t ?? Infinity;
        for (const fn of reading.functions) {
          const drops = this.#series(keyOf(reading.node, reading.chain, fn.name), 1);
          const before = mean(drops.filter((p) => p.t < marker.t && p.t >= from).map((p) => p.v));
          const after = mean(drops.filter((p) => p.t > marker.t && p.t < until).map((p) => p.v));
          if (after >= 1 && after > 2 * before + 1)
            problems.push({
              kind: "drop-rate-jump",
              ...at,
              nf: fn.name,
              message: `${fn.name} drops ${Math.round(after)}/s since ${marker.revision} was switched in (${Math.round(before)}/s before): ${marker.message}`,
            });
        }
      }
    }
    return problems;
  }

  #series(key: string, index: number): Array<{ t: number; v: number }> {
    const out: Array<{ t: number; v: number }> = [];
    for (const point of this.#points) {
      const rates = point.functions[key];
      if (rates) out.push({ t: point.t, v: rates[index]! });
    }
    return out;
  }
}

/** What subscribers receive. */
export type LiveEvent =
  | {
      type: "point";
      point: LivePoint;
      chains: ChainView[];
      problems: LiveProblem[];
      rollouts?: RolloutView[];
    }
  | { type: "marker"; marker: LiveMarker };

function mean(values: number[]): number {
  return values.length ? values.reduce((a, b) => a + b, 0) / values.length : 0;
}

function viewOf(reading: ChainReading): ChainView {
  return {
    key: keyOf(reading.node, reading.chain),
    node: reading.node,
    chain: reading.chain,
    hook: reading.hook,
    revision: reading.revision,
    phase: reading.phase,
    ...(reading.lastSwitch ? { lastSwitch: reading.lastSwitch } : {}),
    ...(reading.commit ? { commit: reading.commit } : {}),
    functions: reading.functions.map((f) => f.name),
    ...(reading.runTimeAbsent ? { runTimeAbsent: reading.runTimeAbsent } : {}),
    maps: reading.maps ?? [],
    ...(reading.lastError ? { lastError: reading.lastError } : {}),
    ...(reading.noCounters ? { noCounters: true } : {}),
    ...(reading.countersAbsent ? { countersAbsent: reading.countersAbsent } : {}),
  };
}
