/**
 * Chain and revision state kept in pinned maps: a one-entry ARRAY map whose value is a length
 * and a JSON document. Read back by a new process to adopt a chain; parsed at the border.
 */
import { z } from "zod";
import { BpfMap, MapType } from "../libbpf/index.ts";
import { ChainStateError } from "./errors.ts";

/** Bytes of a meta value: ample for 32 NFs with their maps (about 200 bytes each). */
export const META_VALUE_SIZE = 16 * 1024;
/** Version of the documents below; a process refuses documents of a newer format. */
export const META_FORMAT = 1;

const HookSchema = z.enum(["xdp", "tc-ingress", "tc-egress"]);
const XdpModeSchema = z.enum(["native", "generic", "auto"]);

/** Chain-wide state (`<chain>/meta`): written at creation and when interfaces change. */
export const ChainMeta = z.object({
  format: z.number().int(),
  hook: HookSchema,
  /** The attach mode asked for (XDP only). */
  xdpMode: XdpModeSchema,
  /** Attached interfaces: ifindex and, for XDP, the mode the link runs in. */
  interfaces: z.record(
    z.string(),
    z.object({ ifindex: z.number().int(), mode: z.enum(["native", "generic"]).optional() }),
  ),
});
export type ChainMeta = z.infer<typeof ChainMeta>;

/** One NF of a revision. */
export const RevisionNf = z.object({
  name: z.string(),
  /** Stable index in `sluice_stats`. */
  statsIndex: z.number().int().min(0),
  /** Program run for the chain's hook. */
  program: z.string(),
  objectPath: z.string(),
  /** Every NF-owned map (pinned under maps/<nf>/). */
  maps: z.array(z.string()),
  /** Maps whose contents the spec's tables define. */
  tableMaps: z.array(z.string()),
  /**
   * Identity of the program load (see nfLoadDigest), recorded when the program keeps no state
   * of its own: a later revision may then take the program over instead of loading it again.
   */
  loadDigest: z.string().optional(),
  /** Digest of the NF's tables as they are now (see nfTablesDigest). */
  tablesDigest: z.string().optional(),
});
export type RevisionNf = z.infer<typeof RevisionNf>;

/** One revision (`<chain>/rev/<generation>/meta`): written before it is switched in. */
export const RevisionMeta = z.object({
  format: z.number().int(),
  generation: z.number().int().min(1),
  /** Revision label from the spec. */
  revision: z.string(),
  codeDigest: z.string(),
  tablesDigest: z.string(),
  testsDigest: z.string(),
  createdAt: z.string(),
  /** fused: one generated program runs every NF (each NF's pin is that program); absent: linked. */
  mode: z.enum(["linked", "fused"]).optional(),
  /**
   * What was loaded apart from tables (see standbyPlanKey), recorded when no NF keeps writable
   * globals: once replaced, the revision can serve as the chain's standby. Absent in revisions
   * of older agents.
   */
  planKey: z.string().optional(),
  nfs: z.array(RevisionNf),
});
export type RevisionMeta = z.infer<typeof RevisionMeta>;

const KEY0 = Buffer.alloc(4);

/** Creates an empty meta map (unpinned; the caller owns it). */
export function createMetaMap(): BpfMap {
  return BpfMap.create({
    name: "sluice_meta",
    type: MapType.ARRAY,
    keySize: 4,
    valueSize: META_VALUE_SIZE,
    maxEntries: 1,
    flags: 0,
  });
}

/** Writes `doc` as JSON into the meta map. */
export function writeMeta(map: BpfMap, doc: ChainMeta | RevisionMeta): void {
  const json = Buffer.from(JSON.stringify(doc));
  if (json.length + 4 > map.valueSize) {
    throw new ChainStateError(`meta document of ${json.length} bytes does not fit in ${map.valueSize}`);
  }
  const value = Buffer.alloc(map.valueSize);
  value.writeUInt32LE(json.length, 0);
  json.copy(value, 4);
  map.update(KEY0, value);
}

/** Reads and parses the document in a meta map; `what` names it in errors. */
export function readMeta<T extends z.ZodType>(map: BpfMap, schema: T, what: string): z.infer<T> {
  const value = map.lookup(KEY0);
  const length = value?.readUInt32LE(0) ?? 0;
  if (!value || length === 0 || length + 4 > value.length)
    throw new ChainStateError(`${what}: empty or damaged`);
  let doc: unknown;
  try {
    doc = JSON.parse(value.toString("utf8", 4, 4 + length));
  } catch (err) {
    throw new ChainStateError(`${what}: not JSON: ${(err as Error).message}`);
  }
  const format = (doc as { format?: unknown }).format;
  if (typeof format === "number" && format > META_FORMAT) {
    throw new ChainStateError(`${what}: format ${format} is newer than this agent's (${META_FORMAT})`);
  }
  const parsed = schema.safeParse(doc);
  if (!parsed.success) throw new ChainStateError(`${what}: ${parsed.error.issues[0]?.message ?? "invalid"}`);
  return parsed.data;
}
