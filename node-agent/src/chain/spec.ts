import { createHash } from "node:crypto";
import { readFileSync, statSync } from "node:fs";
import { Reason } from "../../../common/api/conditions.ts";
import { MAX_CHAIN_LENGTH } from "../../../common/api/servicechain.ts";
import { SluiceError, type FieldIssue } from "../../../common/errors.ts";
import type { Hook } from "../../../common/api/meta.ts";
import type { TestVector } from "../../../common/api/testvector.ts";
import type { FusedPlan } from "./fused.ts";
import type { FusionSource } from "./fusedgen.ts";

export type { Hook };
export { MAX_CHAIN_LENGTH };

/** How an XDP chain is attached: the driver's native mode, generic (skb) mode, or native with generic fallback. */
export type XdpMode = "native" | "generic" | "auto";

/** One map entry of a runtime table, already encoded to the map's key and value layout. */
export interface TableEntry {
  key: Buffer;
  value: Buffer;
}

/** A value for a `const volatile` setting in an NF's `.rodata`. */
export type RodataValue = number | bigint | boolean;

/**
 * One network function of a chain, ready to load: its compiled object, the values of its
 * `const volatile` parameters and the full contents of its runtime tables.
 */
export interface NfLoadSpec {
  /** Name of the NF in the chain (unique in the chain; keys its counters and carried maps). */
  name: string;
  /** Path of the compiled BPF ELF object. */
  objectPath: string;
  /** Program to run; default: the one program of the hook's type whose name ends in `_xdp` / `_tc`. */
  programName?: string;
  /** `const volatile` parameter values by variable name. */
  rodata?: Record<string, RodataValue>;
  /** Runtime tables: map name -> every entry the map must hold (others are removed). */
  tables?: Record<string, TableEntry[]>;
  /**
   * The NF's own test vectors: run on this NF alone (as if it were the last NF of the chain) in
   * the self-test before the chain is switched in. Counters are keyed by this NF's `name`.
   */
  tests?: TestVector[];
  /** Where the NF's inline contract lives, for a fused chain (see fusedgen.ts); none: linked only. */
  fusion?: FusionSource;
}

/**
 * A chain as it should run: a pure, deterministic description (no fds). The chain manager turns
 * it into kernel objects; two specs with the same `codeDigest` differ at most in their tables.
 */
export interface ChainSpec {
  /** Chain name: the directory of its pins (letters, digits, `-`, `_`, `.`). */
  name: string;
  /** Revision label shown in status (the operator uses a hash of the plan). */
  revision: string;
  hook: Hook;
  /** Interfaces the chain is attached to, by name. */
  interfaces: string[];
  xdpMode?: XdpMode;
  /** Network functions in order; at most MAX_CHAIN_LENGTH. */
  functions: NfLoadSpec[];
  /** Test vectors the chain must pass on this kernel before it is switched in. */
  tests?: TestVector[];
  /**
   * `linked`: one program per NF, tail calls; `fused`: one generated program for the chain;
   * `auto`: fused when it builds, verifies and passes the self-test, else linked (with the
   * reason). Default here `linked`; the API's default is `auto`, which the agent passes on.
   */
  mode?: "linked" | "fused" | "auto";
  /**
   * Set by the chain manager, not by callers: the compiled fused program this spec runs as
   * (see fused.ts); absent: linked.
   */
  fused?: FusedPlan;
}

/**
 * Refused before anything is loaded; the same spec is refused again, so it is not retried.
 * `issues` name the fields of the chain spec at fault, when the thrower knows them.
 */
export class ChainSpecError extends SluiceError {
  override name = "ChainSpecError";
  constructor(message: string, issues: readonly FieldIssue[] = []) {
    super(Reason.InvalidSpec, message, { retry: "stall", issues });
  }
}

const chainNamePattern = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,100}$/;
/** Linux interface names: 1-15 bytes, no `/`, no whitespace, not `.` or `..`. */
const interfaceNamePattern = /^(?!\.\.?$)[^/\s:]{1,15}$/;

/** Checks what can be checked without the kernel; throws ChainSpecError naming the field. */
export function validateChainSpec(spec: ChainSpec): void {
  if (!chainNamePattern.test(spec.name))
    throw new ChainSpecError(`name: ${JSON.stringify(spec.name)} is not a valid chain name`);
  if (spec.functions.length === 0)
    throw new ChainSpecError("functions: a chain needs at least one network function");
  if (spec.functions.length > MAX_CHAIN_LENGTH) {
    throw new ChainSpecError(
      `functions: ${spec.functions.length} network functions; at most ${MAX_CHAIN_LENGTH} fit in one chain (the kernel allows 33 tail calls per packet)`,
    );
  }
  if (spec.interfaces.length === 0)
    throw new ChainSpecError("interfaces: a chain needs at least one interface");
  const interfaces = new Set<string>();
  spec.interfaces.forEach((ifname, i) => {
    if (!interfaceNamePattern.test(ifname))
      throw new ChainSpecError(`interfaces[${i}]: ${JSON.stringify(ifname)} is not an interface name`);
    if (interfaces.has(ifname)) throw new ChainSpecError(`interfaces[${i}]: ${ifname} appears twice`);
    interfaces.add(ifname);
  });
  const seen = new Set<string>();
  spec.functions.forEach((nf, i) => {
    if (!chainNamePattern.test(nf.name))
      throw new ChainSpecError(`functions[${i}].name: ${JSON.stringify(nf.name)} is not a valid name`);
    if (seen.has(nf.name))
      throw new ChainSpecError(`functions[${i}].name: ${nf.name} appears twice in the chain`);
    seen.add(nf.name);
  });
}

const OBJECT_DIGESTS_KEPT = 256;
/** A file modified less than this long before it was hashed may change again unnoticed. */
const SETTLE_MS = 2000;
const objectDigests = new Map<string, { stamp: string; digest: string }>();

/**
 * sha256 of a compiled object. Remembered while the file keeps its inode, size and modification
 * time, so that every apply does not read and hash every object again (objects come from a
 * content-addressed cache and are never rewritten in place). A file modified within the last
 * seconds is hashed every time: file times are coarse, and a rewrite of the same size within
 * one tick would otherwise go unnoticed.
 */
export function objectDigest(path: string): string {
  const st = statSync(path, { bigint: true });
  const stamp = `${st.dev}:${st.ino}:${st.size}:${st.mtimeNs}:${st.ctimeNs}`;
  const known = objectDigests.get(path);
  if (known?.stamp === stamp) return known.digest;
  const digest = createHash("sha256").update(readFileSync(path)).digest("hex");
  objectDigests.delete(path);
  if (Date.now() - Number(st.mtimeMs) > SETTLE_MS && Date.now() - Number(st.ctimeMs) > SETTLE_MS) {
    if (objectDigests.size >= OBJECT_DIGESTS_KEPT) objectDigests.delete(objectDigests.keys().next().value!);
    objectDigests.set(path, { stamp, digest });
  }
  return digest;
}

/**
 * Digest of everything that needs new programs when it changes: order, objects, programs and
 * parameters, hook and attach mode. Tables are not part of it: a table-only change is applied in
 * place, without a switch.
 */
export function codeDigest(spec: ChainSpec): string {
  const h = createHash("sha256");
  h.update(JSON.stringify({ hook: spec.hook, xdpMode: spec.xdpMode ?? "auto" }));
  // A spec without a mode is linked and hashes as before modes existed.
  if ((spec.mode ?? "linked") !== "linked") h.update(JSON.stringify({ mode: spec.mode }));
  for (const nf of spec.functions) {
    h.update(
      JSON.stringify({
        name: nf.name,
        object: objectDigest(nf.objectPath),
        program: nf.programName ?? "",
        rodata: Object.entries(nf.rodata ?? {})
          .sort(([a], [b]) => a.localeCompare(b))
          .map(([k, v]) => [k, String(v)]),
      }),
    );
  }
  return h.digest("hex");
}
