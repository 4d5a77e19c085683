/**
 * Fused chains: one generated program per revision that runs every NF inline (see fusedgen.ts
 * for the source and the inline contract, bpf/include/sluice_fused.h for the walk's end).
 *
 * A fused revision is loaded as the same LoadedNf list a linked one is: each NF keeps its own
 * maps (by the names of its own object, reused from the chain's pins: state carries over
 * between linked and fused revisions both ways), its own `.rodata` parameters and its stats
 * slot; only the program is one, shared by all NFs (slot 0 of the revision's prog array).
 */
import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir, readFile, rename, writeFile } from "node:fs/promises";
import { join } from "node:path";
import {
  BpfObject,
  BpfSpecError,
  sameMapDefinition,
  type BpfMap,
  type ObjectMapSpec,
} from "../libbpf/index.ts";
import { compile, CompileError } from "../compile/index.ts";
import { ChainContract } from "../nf/types.ts";
import type { ProgramHook } from "../packet/index.ts";
import { NfContractError } from "./errors.ts";
import { generateFused, type FusedNfInput, type FusedSource, type FusedSymbol } from "./fusedgen.ts";
import {
  HASH_LIKE,
  PROGS_DEFINITION,
  SCRATCH_DEFINITION,
  STATS_DEFINITION,
  type LoadedNf,
  type LoadNfsOptions,
  type MapOrigin,
} from "./nfload.ts";
import { objectDigest, type NfLoadSpec } from "./spec.ts";
import { checkTables } from "./tables.ts";

import type { FusionSource } from "./fusedgen.ts";
export type { FusionSource };

/** How a chain runs: one program per NF (tail calls) or one program for all. */
export type ChainMode = "linked" | "fused";
/** What a spec asks for; `auto` fuses when the fused program builds and verifies. */
export type RequestedMode = ChainMode | "auto";

/** A compiled fused program of a chain, ready to load. */
export interface FusedPlan {
  objectPath: string;
  program: string;
  maps: FusedSymbol[];
  rodata: FusedSymbol[];
  indexVariables: string[];
}

export type FusedPlanResult = { ok: true; plan: FusedPlan } | { ok: false; reason: string };

const CHAIN_SETTINGS = new Set<string>(Object.values(ChainContract.rodata));
const CONTRACT_MAPS = new Set<string>([ChainContract.progsMap, ChainContract.statsMap]);

/** Names the chain contract (sluice.h and the headers it includes) reserves: `sluice_*`. */
function isContractName(name: string): boolean {
  return name.startsWith("sluice_");
}

/** NF-owned maps and parameters of a linked object. */
function symbolsOf(objectPath: string): { maps: string[]; rodata: string[] } {
  const object = BpfObject.open(objectPath);
  try {
    return {
      maps: object
        .mapSpecs()
        .filter((m) => !m.internal && !CONTRACT_MAPS.has(m.name) && !isContractName(m.name))
        .map((m) => m.name),
      rodata: object
        .rodataVariables()
        .map((v) => v.name)
        .filter((n) => !CHAIN_SETTINGS.has(n) && !isContractName(n)),
    };
  } finally {
    object.close();
  }
}

/**
 * Generates and compiles the fused program of `functions` for `hook` (cached by content under
 * `cacheDir`), or says why the chain cannot be fused.
 */
export async function planFused(
  hook: ProgramHook,
  functions: readonly NfLoadSpec[],
  cacheDir: string,
): Promise<FusedPlanResult> {
  // The plan depends on the NFs' objects (their symbols; an object changes with its sources,
  // headers included), where their headers are, their programs and defines, and their order:
  // a switch that changes only parameters or tables plans nothing again. Parameters count only
  // for NFs that share one source, whose values must agree (see planFusedUncached).
  let key: string | undefined;
  try {
    const codeOf = (nf: NfLoadSpec) =>
      JSON.stringify([nf.fusion?.dir, nf.fusion?.header, nf.fusion?.defines]);
    const codes = functions.map(codeOf);
    key = JSON.stringify([
      hook,
      cacheDir,
      functions.map((nf) => [nf.name, objectDigest(nf.objectPath), nf.fusion ?? null, nf.programName ?? ""]),
      functions.map((nf, i) =>
        codes.indexOf(codes[i]!) !== codes.lastIndexOf(codes[i]!)
          ? Object.entries(nf.rodata ?? {}).map(([k, v]) => [k, String(v)])
          : null,
      ),
    ]);
  } catch {
    key = undefined;
  }
  const known = key === undefined ? undefined : plans.get(key);
  if (known && (!known.ok || existsSync(known.plan.objectPath))) return known;
  const planned = await planFusedUncached(hook, functions, cacheDir);
  if (key !== undefined) {
    if (plans.size >= PLANS_KEPT) plans.delete(plans.keys().next().value!);
    plans.set(key, planned);
  }
  return planned;
}

const PLANS_KEPT = 64;
const plans = new Map<string, FusedPlanResult>();

async function planFusedUncached(
  hook: ProgramHook,
  functions: readonly NfLoadSpec[],
  cacheDir: string,
): Promise<FusedPlanResult> {
  const inputs: FusedNfInput[] = [];
  for (const nf of functions) {
    const source = nf.fusion;
    if (!source) return { ok: false, reason: `${nf.name}: no inline contract (inline C source)` };
    const headerPath = join(source.dir, source.header);
    if (!existsSync(headerPath)) {
      return {
        ok: false,
        reason: `${nf.name}: no ${source.header} next to its source (the inline contract: ${source.header} with ${source.stem}_process)`,
      };
    }
    // The conventional program (`<stem>_xdp` / `<stem>_tc`, what the agent names for a built-in)
    // runs `<stem>_process`; another one may run other code.
    if (nf.programName !== undefined && nf.programName !== `${source.stem}_${hook}`) {
      return {
        ok: false,
        reason: `${nf.name}: runs program ${nf.programName}, not ${source.stem}_${hook}; fused runs ${source.stem}_process`,
      };
    }
    inputs.push({
      name: nf.name,
      source,
      headerText: await readFile(headerPath, "utf8"),
      ...symbolsOf(nf.objectPath),
    });
  }
  const byCode = new Map<string, NfLoadSpec>();
  for (const nf of functions) {
    const key = JSON.stringify([
      nf.fusion!.dir,
      nf.fusion!.header,
      Object.entries(nf.fusion!.defines ?? {}).sort(),
    ]);
    const first = byCode.get(key);
    if (!first) {
      byCode.set(key, nf);
      continue;
    }
    const values = (spec: NfLoadSpec) =>
      JSON.stringify(
        Object.entries(spec.rodata ?? {})
          .map(([k, v]) => [k, String(v)])
          .sort(),
      );
    if (values(first) !== values(nf)) {
      return {
        ok: false,
        reason: `${first.name} and ${nf.name} share one source with different parameters; a fused program holds one copy of it`,
      };
    }
  }
  const generated = generateFused(hook, inputs);
  if (!generated.ok) return generated;
  const source: FusedSource = generated.value;
  const hash = createHash("sha256").update(source.text).digest("hex").slice(0, 32);
  const dir = join(cacheDir, "fused-src", hash);
  if (!existsSync(join(dir, "fused.bpf.c"))) {
    await mkdir(dir, { recursive: true });
    const tmp = join(dir, `fused.bpf.c.${process.pid}.tmp`);
    await writeFile(tmp, source.text);
    await rename(tmp, join(dir, "fused.bpf.c"));
  }
  try {
    const compiled = await compile({
      sourceRoot: dir,
      entry: "fused.bpf.c",
      cacheDir: join(cacheDir, "objects"),
      includeDirs: source.includeDirs,
    });
    return {
      ok: true,
      plan: {
        objectPath: compiled.objectPath,
        program: source.program,
        maps: source.maps,
        rodata: source.rodata,
        indexVariables: source.indexVariables,
      },
    };
  } catch (err) {
    if (err instanceof CompileError) {
      const first = (err.stderr ?? err.message).split("\n").find((l) => /error/.test(l)) ?? err.message;
      return { ok: false, reason: `the fused program does not compile: ${first.trim()}` };
    }
    throw err;
  }
}

/** Options of {@link loadFused}: those of a linked load, and optionally maps to use for every map. */
export interface LoadFusedOptions extends LoadNfsOptions {
  /**
   * A map to use for NF `nf`'s map `map`, tables included (a self-test's fused program runs on the
   * maps of the self-test's linked NFs). Takes precedence over `chooseMap`.
   */
  useMap?: (nf: string, map: ObjectMapSpec) => BpfMap | undefined;
}

/**
 * Loads the fused program of `plan` for `options.functions` (verified on a worker thread).
 * Returns one LoadedNf per NF, all running the one program: the first owns the object, the others
 * hold a duplicate of the program's fd (close all with closeNfs). Throws VerifierError,
 * NfContractError, BpfError.
 */
export async function loadFused(options: LoadFusedOptions, plan: FusedPlan): Promise<LoadedNf[]> {
  const object = BpfObject.open(plan.objectPath);
  const dups: { close(): void }[] = [];
  try {
    object.selectPrograms([plan.program]);
    const mapSpecs = object.mapSpecs();
    for (const [name, definition] of [
      [ChainContract.progsMap, PROGS_DEFINITION],
      [ChainContract.statsMap, STATS_DEFINITION],
    ] as const) {
      const declared = mapSpecs.find((m) => m.name === name);
      if (!declared || !sameMapDefinition(declared, definition))
        throw new NfContractError("fused", `${plan.objectPath}: map ${name} unlike the chain contract`);
    }
    const rodata: Record<string, number | bigint | boolean> = {};
    options.functions.forEach((spec, i) => {
      const own = new Map(plan.rodata.filter((s) => s.nf === spec.name).map((s) => [s.name, s.objectName]));
      for (const [name, value] of Object.entries(spec.rodata ?? {})) {
        const objectName = own.get(name);
        if (objectName === undefined) {
          throw new NfContractError(
            spec.name,
            `no .rodata variable ${name} (variables: ${[...own.keys()].join(", ") || "none"})`,
          );
        }
        rodata[objectName] = value;
      }
      rodata[plan.indexVariables[i]!] = options.statsIndexes[i] ?? i;
    });
    // Per-function time: the generated program stamps between the NFs' calls into the chain's
    // scratch map, where the root stamped the packet's start.
    const scratch = mapSpecs.find((m) => m.name === ChainContract.scratchMap);
    const timed =
      (options.timeSample ?? 0) > 0 &&
      options.scratch !== undefined &&
      scratch !== undefined &&
      sameMapDefinition(scratch, SCRATCH_DEFINITION) &&
      object.rodataVariables().some((v) => v.name === ChainContract.rodata.timeSample);
    if (timed) rodata[ChainContract.rodata.timeSample] = options.timeSample!;
    try {
      object.setRodata(rodata);
    } catch (err) {
      if (err instanceof BpfSpecError) throw new NfContractError("fused", err.message);
      throw err;
    }
    object.reuseMap(ChainContract.progsMap, options.progs);
    object.reuseMap(ChainContract.statsMap, options.stats);
    if (timed) object.reuseMap(ChainContract.scratchMap, options.scratch!);

    const perNf = options.functions.map((spec) => {
      const symbols = plan.maps.filter((s) => s.nf === spec.name);
      const own = symbols.map((s) => ({ symbol: s, spec: mapSpecs.find((m) => m.name === s.objectName)! }));
      const asOwn = (m: { symbol: FusedSymbol; spec: ObjectMapSpec }): ObjectMapSpec => ({
        ...m.spec,
        name: m.symbol.name,
      });
      checkTables(
        spec,
        (name) => own.map(asOwn).find((m) => m.name === name),
        own.map((m) => m.symbol.name),
      );
      const origins = new Map<string, MapOrigin>();
      const tables = spec.tables ?? {};
      for (const m of own) {
        const name = m.symbol.name;
        const given = options.useMap?.(spec.name, asOwn(m));
        if (given) {
          object.reuseMap(m.symbol.objectName, given);
          origins.set(name, name in tables ? { kind: "table" } : { kind: "new" });
          continue;
        }
        if (name in tables) {
          origins.set(name, { kind: "table" });
          continue;
        }
        const choice = options.chooseMap?.(spec, asOwn(m)) ?? { origin: { kind: "new" } };
        if (choice.reuse) object.reuseMap(m.symbol.objectName, choice.reuse);
        origins.set(name, choice.origin);
      }
      return { spec, own, origins };
    });

    await object.loadAsync();
    const program = object.program(plan.program);
    return perNf.map(({ spec, own, origins }, i): LoadedNf => {
      const maps = new Map<string, BpfMap>();
      for (const m of own) maps.set(m.symbol.name, object.map(m.symbol.objectName));
      let nfProgram = program;
      if (i > 0) {
        nfProgram = program.dup();
        dups.push(nfProgram);
      }
      return {
        spec,
        object: i === 0 ? object : undefined,
        program: nfProgram,
        programName: plan.program,
        statsIndex: options.statsIndexes[i] ?? i,
        maps,
        origins,
        sharable: false,
        globals: [],
        clearable: own.every((m) => m.symbol.name in (spec.tables ?? {}) || HASH_LIKE.has(m.spec.type)),
      };
    });
  } catch (err) {
    for (const d of dups) d.close();
    object.close();
    throw err;
  }
}

/** Whether a load of `nfs` is a fused one (every NF runs the same program). */
export function isFusedLoad(nfs: readonly LoadedNf[]): boolean {
  return (
    nfs.length > 0 &&
    nfs.every((nf) => nf.programName === nfs[0]!.programName) &&
    nfs[0]!.programName.startsWith("sluice_fused_")
  );
}

/**
 * The inline contract's place for an NF compiled from `entry` in `dir`: `<stem>.h` beside
 * `<stem>.bpf.c` (or `<stem>.c`), defining `<stem>_process`. Whether the header exists is checked
 * when a fused program is planned.
 */
export function fusionSourceOf(dir: string, entry: string, defines?: Record<string, string>): FusionSource {
  const base = entry.slice(entry.lastIndexOf("/") + 1);
  const stem = base.replace(/(\.bpf)?\.c$/, "");
  const sub = entry.includes("/") ? entry.slice(0, entry.lastIndexOf("/")) : "";
  return {
    dir: sub ? join(dir, sub) : dir,
    header: `${stem}.h`,
    stem,
    ...(defines && Object.keys(defines).length > 0 ? { defines } : {}),
  };
}
