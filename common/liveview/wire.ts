/**
 * A node's chains as its agent last read them, over HTTP (`GET /live/readings` of the agent's
 * metrics endpoint): what the operator's cluster view draws its per-node rates from. Counters
 * travel as decimal strings (they are 64-bit); the operator parses the answer with
 * {@link NodeReadings} where it enters.
 */
import { z } from "zod";
import type { ChainReading } from "./model.ts";

const counter = z
  .string()
  .regex(/^\d{1,20}$/)
  .transform((v) => BigInt(v));

const FunctionReadingWire = z.object({
  name: z.string(),
  packets: counter,
  drops: counter,
  passes: counter,
  errors: counter,
  timeNs: counter.optional(),
  timeSamples: counter.optional(),
});

const ChainReadingWire = z.object({
  node: z.string(),
  chain: z.string(),
  ref: z.string().optional(),
  hook: z.string(),
  revision: z.string(),
  phase: z.string(),
  lastSwitch: z.string().optional(),
  functions: z.array(FunctionReadingWire),
  rootMisses: counter,
  runs: counter.optional(),
  runTimeNs: counter.optional(),
  runTimeAbsent: z.string().optional(),
  maps: z
    .array(
      z.object({
        nf: z.string(),
        map: z.string(),
        entries: z.number().int().nonnegative(),
        maxEntries: z.number().int().nonnegative(),
      }),
    )
    .optional(),
});

/**
 * The answer of `GET /live/readings`: every chain of the node, read at `atMs` (0: not yet), and
 * the agent's clock when it answered (`nowMs`), so that the reader can map `atMs` onto its own.
 */
export const NodeReadings = z.object({
  atMs: z.number().nonnegative(),
  nowMs: z.number().nonnegative(),
  chains: z.array(ChainReadingWire),
});
export type NodeReadings = z.infer<typeof NodeReadings>;

/** The fields of a reading that travel (counters as strings); the rest stays on the node. */
export function encodeReadings(atMs: number, readings: readonly ChainReading[]): string {
  const chains = readings.map((r) => ({
    node: r.node,
    chain: r.chain,
    ...(r.ref ? { ref: r.ref } : {}),
    hook: r.hook,
    revision: r.revision,
    phase: r.phase,
    ...(r.lastSwitch ? { lastSwitch: r.lastSwitch } : {}),
    functions: r.functions.map((f) => ({
      name: f.name,
      packets: String(f.packets),
      drops: String(f.drops),
      passes: String(f.passes),
      errors: String(f.errors),
      ...(f.timeNs !== undefined ? { timeNs: String(f.timeNs) } : {}),
      ...(f.timeSamples !== undefined ? { timeSamples: String(f.timeSamples) } : {}),
    })),
    rootMisses: String(r.rootMisses),
    ...(r.runs !== undefined ? { runs: String(r.runs) } : {}),
    ...(r.runTimeNs !== undefined ? { runTimeNs: String(r.runTimeNs) } : {}),
    ...(r.runTimeAbsent ? { runTimeAbsent: r.runTimeAbsent } : {}),
    ...(r.maps ? { maps: r.maps } : {}),
  }));
  return JSON.stringify({ atMs, nowMs: Date.now(), chains });
}
