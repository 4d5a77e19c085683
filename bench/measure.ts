/**
 * How the test-run benches measure: built-in NFs configured as the agent configures them, hand
 * chains closed with the run's scope, and variants measured in interleaved rounds and reported
 * as medians.
 */
import type { BpfProgram } from "../node-agent/src/libbpf/index.ts";
import { configureBuiltinNf, rodataValues, type ConfiguredBuiltinNf } from "../node-agent/src/nf/index.ts";
import type { TestScope } from "../test/kernel/harness.ts";
import { HandChain, type NfPart } from "./chain.ts";
import type { BenchObjects } from "./objects.ts";
import { median, round } from "./stats.ts";

/** Parameters and tables of a built-in NF, as a ServiceChain gives them. */
export interface BuiltinConfig {
  parameters?: unknown;
  tables?: unknown;
}

/** Built-in `name` with `config` checked and turned into settings and map contents; a bad config throws. */
export function configuredBuiltin(name: string, config: BuiltinConfig = {}): ConfiguredBuiltinNf {
  const result = configureBuiltinNf(name, config);
  if (!result.ok) throw result.error;
  return result.value;
}

/** The built-ins a bench loads alone, by their object's role. */
export type BenchBuiltin =
  "noop" | "firewall" | "ratelimit" | "flowmon" | "ips" | "router" | "l4lb" | "overlay";

/** Built-in `name` as one part of a hand chain: its XDP program with `config`'s settings and tables. */
export function builtinPart(objects: BenchObjects, name: BenchBuiltin, config: BuiltinConfig = {}): NfPart {
  const configured = configuredBuiltin(name, config);
  return {
    path: objects[name],
    program: `${name}_xdp`,
    rodata: rodataValues(configured.rodata),
    tables: configured.mapContents,
  };
}

/** Root + `parts` behind the root at `rootPath`, closed when `scope` is disposed. */
export function scopedChain(scope: TestScope, rootPath: string, parts: readonly NfPart[]): HandChain {
  const chain = HandChain.build(rootPath, parts);
  scope.defer(() => chain.close());
  return chain;
}

/** A measured variant: its name and one sample per round. */
export interface Sampled {
  name: string;
  samples: number[];
}

/**
 * Runs `rounds` rounds that each measure every variant once, each round starting one variant
 * further: slow spells of a shared machine then fall on every variant alike. `afterRound` gets
 * the number of rounds done.
 */
export function interleavedRounds<V>(
  variants: readonly V[],
  rounds: number,
  measure: (variant: V) => void,
  afterRound?: (done: number) => void,
): void {
  for (let r = 0; r < rounds; r++) {
    for (let k = 0; k < variants.length; k++) measure(variants[(k + r) % variants.length]!);
    afterRound?.(r + 1);
  }
}

/** The samples of the variant called `name`; a name not measured throws. */
export function samplesOf(variants: readonly Sampled[], name: string): number[] {
  const variant = variants.find((v) => v.name === name);
  if (!variant) throw new Error(`no variant ${name} was measured`);
  return variant.samples;
}

/** The median of `name`'s samples, to 0.1 (ns per packet). */
export function medianNs(variants: readonly Sampled[], name: string): number {
  return round(median(samplesOf(variants, name)), 1);
}

/**
 * ns per packet of about `packets` runs of `prog` on `data`, `perCall` runs per test run, as the
 * mean of the kernel's figure for each call. A test run repeats the program on one buffer without
 * restoring it, so a packet the program rewrites (a TTL decremented, headers pushed or pulled) is
 * another packet on the next repetition; `perCall` is how many repetitions stay on the path
 * measured. Each call starts from a fresh copy of `data`.
 */
export function nsPerPacket(prog: BpfProgram, data: Buffer, packets: number, perCall: number): number {
  const calls = Math.max(1, Math.round(packets / perCall));
  let total = 0;
  for (let i = 0; i < calls; i++) total += prog.testRun({ data, repeat: perCall }).durationNs;
  return total / calls;
}
