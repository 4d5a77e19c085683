/**
 * Digests of a chain spec that decide what an apply must do: new code needs a switch
 * (codeDigest, in spec.ts), new tables an in-place write, new vectors a self-test. Recorded in
 * each revision's meta, so a new process decides the same way.
 */
import { createHash, type Hash } from "node:crypto";
import { codeDigest, type ChainSpec, type NfLoadSpec } from "./spec.ts";

/** The digests of one spec. */
export interface Digests {
  code: string;
  tables: string;
  tests: string;
}

/** Every digest of `spec`. */
export function specDigests(spec: ChainSpec): Digests {
  return { code: codeDigest(spec), tables: tablesDigest(spec), tests: testsDigest(spec) };
}

/** Hashes one NF's tables, entries sorted by key (a table is a set). */
function hashTables(h: Hash, spec: NfLoadSpec): void {
  for (const mapName of Object.keys(spec.tables ?? {}).sort()) {
    const entries = (spec.tables?.[mapName] ?? [])
      .map((e) => `${e.key.toString("hex")}=${e.value.toString("hex")}`)
      .sort();
    h.update(`\0map ${mapName}\0${entries.join(",")}`);
  }
}

/** Digest of one NF's tables. */
export function nfTablesDigest(spec: NfLoadSpec): string {
  const h = createHash("sha256");
  hashTables(h, spec);
  return h.digest("hex");
}

/** Digest of every NF's tables. */
export function tablesDigest(spec: ChainSpec): string {
  const h = createHash("sha256");
  for (const nf of spec.functions) {
    h.update(`\0nf ${nf.name}`);
    hashTables(h, nf);
  }
  return h.digest("hex");
}

/** Digest of every vector of the chain and of its NFs. */
export function testsDigest(spec: ChainSpec): string {
  return createHash("sha256")
    .update(JSON.stringify([spec.tests ?? [], spec.functions.map((nf) => [nf.name, nf.tests ?? []])]))
    .digest("hex");
}
