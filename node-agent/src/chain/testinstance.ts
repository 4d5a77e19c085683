/**
 * The private chain instance a chain's self-tests run on, kept from one self-test to the next.
 *
 * Test packets must never touch live state, so a self-test runs on NFs of its own: its own prog
 * array, stats map and state maps. Building that instance from scratch for every switch cost
 * as much as loading the live revision: every NF verified a second time, and the state maps of
 * real NFs are large preallocated hashes (an LRU of 65,536 flows takes milliseconds to create
 * and to free). Kept instead:
 * - NF programs, by {@link nfLoadDigest}: an NF loaded the same way in one of the last two
 *   self-tests is not loaded again (a typical change touches one NF; a rollback returns to the
 *   previous revision). Only NFs that keep no writable globals and whose state maps
 *   {@link clearState} empties qualify, so a reused NF starts every vector as a new one would.
 * - state maps, by NF and map name: every vector starts by emptying them, so a kept map behaves
 *   like a new one.
 * Tables are written from the spec at every self-test; the prog array gets the spec's order.
 */
import { sameMapDefinition, u32, type BpfMap, type ObjectMapSpec } from "../libbpf/index.ts";
import type { ProgramHook } from "../packet/index.ts";
import {
  closeNfs,
  createProgArray,
  createScratchMap,
  createStatsMap,
  HASH_LIKE,
  loadNfsConcurrently,
  nfLoadDigest,
  type LoadedNf,
  type LoadNfsOptions,
  type MapOrigin,
} from "./nfload.ts";
import type { NfLoadSpec } from "./spec.ts";
import { checkTables, replaceEntries } from "./tables.ts";

/** Self-tests an unused NF stays loaded for: the current one and the one before. */
const KEPT_ROUNDS = 2;

/**
 * Entries of the instance's state maps (hash-like, not tables), at most: a vector is one
 * packet sent up to 10,000 times, which puts a few entries there, and every vector starts by
 * emptying them, a walk over all buckets that a map of the NF's full size (65,536 flows, say)
 * makes cost about 70 µs per map and vector.
 */
export const SELF_TEST_STATE_ENTRIES = 4096;

/**
 * An NF kept loaded between self-tests, slimmed to what a self-test uses: its program and its
 * maps (own fds each), not the whole object (whose fds on `.rodata`, the prog array and the
 * stats map the program no longer needs): two or three fds per NF rather than six or more.
 */
interface KeptNf {
  /** A view for the self-test: no object; `program` and `maps` are the kept fds. */
  nf: LoadedNf;
  /** The last self-test (round) that used it. */
  usedIn: number;
}

/** Keeps what a self-test needs of a loaded NF (new fds), so that its object can close. */
function slim(nf: LoadedNf): LoadedNf {
  const program = nf.program.dup();
  const maps = new Map<string, BpfMap>();
  try {
    for (const [name, map] of nf.maps) maps.set(name, map.dup());
  } catch (err) {
    program.close();
    for (const map of maps.values()) map.close();
    throw err;
  }
  return { ...nf, object: undefined, program, maps };
}

/** Closes a kept NF's fds. */
function dispose(kept: KeptNf): void {
  kept.nf.program.close();
  for (const map of kept.nf.maps.values()) map.close();
}

/**
 * One chain's self-test instance for one hook (a prog array holds programs of one type).
 * Owned by the chain manager; `close()` releases every program and map it holds.
 */
export class TestInstance {
  readonly hook: ProgramHook;
  /** The instance's prog array (borrowed). */
  readonly progs: BpfMap;
  /** The instance's counters, indexed by NF position (borrowed). */
  readonly stats: BpfMap;
  /** The instance's parse scratch, shared by its NFs as a chain's (borrowed). */
  readonly scratch: BpfMap;
  readonly #loaded = new Map<string, KeptNf>();
  /** State maps by `<nf>\0<map>`: the instance's own dups. */
  readonly #stateMaps = new Map<string, BpfMap>();
  #round = 0;
  #slotsUsed = 0;
  /** NFs of the last prepare(), each with the load digest it is kept under (if it is kept). */
  #current: { nf: LoadedNf; key: string | undefined }[] = [];

  constructor(hook: ProgramHook) {
    this.hook = hook;
    this.progs = createProgArray();
    try {
      this.stats = createStatsMap();
    } catch (err) {
      this.progs.close();
      throw err;
    }
    try {
      this.scratch = createScratchMap();
    } catch (err) {
      this.progs.close();
      this.stats.close();
      throw err;
    }
  }

  /**
   * Makes the instance run `functions`: each NF reused or loaded (NF `i` as the chain's NF `i`,
   * counting in stats slot `i`; the missing ones at once, see loadNfsConcurrently), the spec's
   * tables written, slots 0..n-1 of the prog array set.
   * The NFs stay owned by the instance and are valid until the next `prepare` or `close`.
   * Throws what loading throws (VerifierError, NfContractError, ChainSpecError, BpfError).
   */
  async prepare(functions: readonly NfLoadSpec[]): Promise<LoadedNf[]> {
    this.#releaseUnkept();
    const round = ++this.#round;
    const options: LoadNfsOptions = {
      hook: this.hook,
      functions,
      statsIndexes: functions.map((_, i) => i),
      progs: this.progs,
      stats: this.stats,
      scratch: this.scratch,
      chooseMap: this.#chooseStateMap,
      maxStateEntries: SELF_TEST_STATE_ENTRIES,
      onLoaded: (i, program) => this.progs.update(u32(i), u32(program.fd)),
    };
    const n = functions.length;
    const keys = functions.map((spec, i) => nfLoadDigest(this.hook, spec, i, n, i));
    const missing: number[] = [];
    functions.forEach((spec, i) => {
      const kept = this.#loaded.get(keys[i]!);
      if (!kept) {
        missing.push(i);
        return;
      }
      checkTables(spec, (name) => kept.nf.maps.get(name), [...kept.nf.maps.keys()]);
    });
    // Kept NFs go into their slots first and new ones as soon as they load, so that a new NF
    // finds its next slot filled when it is compiled (see buildRevision).
    functions.forEach((_, i) => {
      const kept = missing.includes(i) ? undefined : this.#loaded.get(keys[i]!);
      if (kept) this.progs.update(u32(i), u32(kept.nf.program.fd));
    });
    let fresh: LoadedNf[];
    try {
      fresh = await loadNfsConcurrently(options, missing);
    } catch (err) {
      // Slots of NFs that loaded before another failed would keep them loaded.
      for (const i of missing) this.progs.delete(u32(i));
      throw err;
    }
    // NFs loaded just now and not yet placed: closed if anything below fails.
    const unplaced = new Map<number, LoadedNf>(missing.map((i, k) => [i, fresh[k]!]));
    try {
      functions.forEach((_, i) => {
        const key = keys[i]!;
        const nf = unplaced.get(i);
        if (!nf) {
          const kept = this.#loaded.get(key)!;
          kept.usedIn = round;
          this.#current.push({ nf: kept.nf, key });
          return;
        }
        this.#keepStateMaps(nf);
        if (nf.sharable && nf.clearable) {
          const kept = { nf: slim(nf), usedIn: round };
          this.#loaded.set(key, kept);
          this.#current.push({ nf: kept.nf, key });
          unplaced.delete(i);
          closeNfs([nf]);
        } else {
          this.#current.push({ nf, key: undefined });
          unplaced.delete(i);
        }
      });
    } catch (err) {
      closeNfs([...unplaced.values()]);
      throw err;
    }
    const nfs = this.#current.map((c) => c.nf);
    functions.forEach((spec, i) => {
      for (const [mapName, entries] of Object.entries(spec.tables ?? {})) {
        replaceEntries(nfs[i]!.maps.get(mapName)!, entries);
      }
    });
    nfs.forEach((nf, i) => this.progs.update(u32(i), u32(nf.program.fd)));
    for (let slot = n; slot < this.#slotsUsed; slot++) this.progs.delete(u32(slot));
    this.#slotsUsed = n;
    this.#forget(round, functions);
    return nfs;
  }

  /** Releases every program and map of the instance. */
  close(): void {
    this.#releaseUnkept();
    for (const kept of this.#loaded.values()) dispose(kept);
    this.#loaded.clear();
    for (const map of this.#stateMaps.values()) map.close();
    this.#stateMaps.clear();
    this.progs.close();
    this.stats.close();
    this.scratch.close();
  }

  /** Closes the NFs of the last round that are not kept (they were loaded for it alone). */
  #releaseUnkept(): void {
    closeNfs(this.#current.filter((c) => c.key === undefined).map((c) => c.nf));
    this.#current = [];
  }

  readonly #chooseStateMap = (nf: NfLoadSpec, map: ObjectMapSpec): { reuse?: BpfMap; origin: MapOrigin } => {
    const kept = this.#stateMaps.get(stateMapKey(nf.name, map.name));
    if (kept && sameMapDefinition(kept.definition(), map)) return { reuse: kept, origin: { kind: "new" } };
    return { origin: { kind: "new" } };
  };

  /** Remembers the state maps of a newly loaded NF for the NFs loaded after it. */
  #keepStateMaps(nf: LoadedNf): void {
    for (const [name, map] of nf.maps) {
      if (nf.origins.get(name)?.kind === "table" || !HASH_LIKE.has(map.type)) continue;
      const key = stateMapKey(nf.spec.name, name);
      const kept = this.#stateMaps.get(key);
      if (kept?.id === map.id) continue;
      kept?.close();
      this.#stateMaps.set(key, map.dup());
    }
  }

  /** Unloads NFs no self-test of the last KEPT_ROUNDS used, and state maps of departed NFs. */
  #forget(round: number, functions: readonly NfLoadSpec[]): void {
    for (const [key, kept] of this.#loaded) {
      if (kept.usedIn > round - KEPT_ROUNDS) continue;
      dispose(kept);
      this.#loaded.delete(key);
    }
    const names = new Set(functions.map((f) => f.name));
    for (const kept of this.#loaded.values()) names.add(kept.nf.spec.name);
    for (const [key, map] of this.#stateMaps) {
      if (names.has(key.slice(0, key.indexOf("\0")))) continue;
      map.close();
      this.#stateMaps.delete(key);
    }
  }
}

function stateMapKey(nf: string, map: string): string {
  return `${nf}\0${map}`;
}
