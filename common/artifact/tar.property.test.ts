import { mkdir, mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ArtifactError, ArtifactFormatError } from "./errors.ts";
import { extract } from "./extract.ts";
import { paxRecord, rawMember, END } from "./tar-fixtures.ts";
import { readTar, writeTar, type TarEntry } from "./tar.ts";

/**
 * Hostile archives, generated: whatever the bytes, the reader returns or throws an
 * ArtifactFormatError, in time linear in the input, and every member it hands out lies inside
 * the archive. The extractor writes nothing outside its directory and fails only with
 * ArtifactErrors. Case counts are part of the contract (100,000+ generated cases across the
 * property suites); the seed is printed on failure, so a failure replays.
 */

const BLOCK = 512;

/** Reads everything; returns the error thrown, if any, after checking each member. */
function readChecked(tar: Buffer): unknown {
  const started = performance.now();
  try {
    readTar(tar, (entry) => {
      if (!(entry.size >= 0 && Number.isSafeInteger(entry.size))) throw new Error(`size ${entry.size}`);
      if (entry.type === "file" && entry.content.length !== entry.size)
        throw new Error(`content ${entry.content.length} != size ${entry.size}`);
    });
    return undefined;
  } catch (err) {
    return err;
  } finally {
    // Linear work, a few microseconds per block; the bound leaves room for a loaded machine.
    expect(performance.now() - started).toBeLessThan(1_000 + tar.length / 100);
  }
}

function expectTyped(err: unknown): void {
  if (err !== undefined) expect(err, String(err)).toBeInstanceOf(ArtifactFormatError);
}

/** Recomputes the checksum of every block that looks like a ustar header, so edits go deeper. */
function fixChecksums(tar: Buffer): Buffer {
  for (let pos = 0; pos + BLOCK <= tar.length; pos += BLOCK) {
    const h = tar.subarray(pos, pos + BLOCK);
    if (h.toString("latin1", 257, 262) !== "ustar") continue;
    h.fill(0x20, 148, 156);
    let sum = 0;
    for (const byte of h) sum += byte;
    h.write(`${sum.toString(8).padStart(6, "0")}\0 `, 148, "ascii");
  }
  return tar;
}

const segment = fc.stringMatching(/^[A-Za-z0-9_.-]{1,12}$/).filter((s) => s !== "." && s !== "..");
const entryPath = fc.array(segment, { minLength: 1, maxLength: 12 }).map((s) => s.join("/"));
const entries: fc.Arbitrary<TarEntry[]> = fc
  .array(
    fc.oneof(
      entryPath.map((path): TarEntry => ({ type: "directory", path })),
      fc
        .record({ path: entryPath, executable: fc.boolean(), content: fc.uint8Array({ maxLength: 1500 }) })
        .map((e): TarEntry => ({ type: "file", ...e, content: Buffer.from(e.content) })),
    ),
    { maxLength: 6 },
  )
  .map((list) => {
    const seen = new Set<string>();
    return list.filter((e) => !seen.has(e.path) && seen.add(e.path));
  });

/** Values a pax `size` (or any numeric record) might hold in a hostile archive. */
const hostileNumber = fc.oneof(
  fc.integer({ min: -100_000, max: 100_000 }).map(String),
  fc.bigInt({ min: -(2n ** 80n), max: 2n ** 80n }).map(String),
  fc.double().map(String),
  fc.constantFrom(
    "",
    " ",
    "-0",
    "+1",
    "0x10",
    "1e3",
    "01",
    "1 ",
    "\n",
    "NaN",
    "Infinity",
    "-1536",
    "9007199254740993",
  ),
  fc.string({ maxLength: 12 }),
);

describe("tar reader properties", () => {
  it("what the writer writes, the reader reads back unchanged (5,000 archives)", () => {
    fc.assert(
      fc.property(entries, (list) => {
        const read: TarEntry[] = [];
        readTar(writeTar(list), (e) =>
          read.push(
            e.type === "directory"
              ? { type: "directory", path: e.path }
              : {
                  type: "file",
                  path: e.path,
                  executable: (e.mode & 0o111) !== 0,
                  content: Buffer.from(e.content),
                },
          ),
        );
        expect(read).toEqual(list);
      }),
      { numRuns: 5_000 },
    );
  }, 60_000);

  it("random bytes are read or refused with an ArtifactFormatError (25,000 inputs)", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 4 * BLOCK }), fc.boolean(), (bytes, headerLike) => {
        const tar = Buffer.from(bytes);
        if (headerLike && tar.length >= BLOCK) {
          tar.write("ustar\0", 257, "latin1");
          fixChecksums(tar);
        }
        expectTyped(readChecked(tar));
      }),
      { numRuns: 25_000 },
    );
  }, 60_000);

  it("valid archives with random byte edits, checksums fixed up, never hang or escape (20,000 inputs)", () => {
    fc.assert(
      fc.property(
        entries,
        fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 8 }),
        fc.nat(),
        fc.boolean(),
        (list, edits, cut, truncate) => {
          let tar = writeTar(list);
          for (const [at, value] of edits) tar[at % tar.length] = value;
          if (truncate) tar = tar.subarray(0, cut % (tar.length + 1));
          expectTyped(readChecked(fixChecksums(Buffer.from(tar))));
        },
      ),
      { numRuns: 20_000 },
    );
  }, 60_000);

  it("pax headers with hostile size, path and record lengths give a typed error or a sane member (20,000 inputs)", () => {
    const record = fc.oneof(
      fc
        .tuple(fc.constantFrom("size", "path", "linkpath", "mtime", "uid"), hostileNumber)
        .map(([k, v]) => paxRecord(k, v)),
      fc
        .tuple(fc.constantFrom("path", "size"), fc.string({ maxLength: 40 }))
        .map(([k, v]) => paxRecord(k, v)),
      // Records whose length field lies.
      fc.tuple(hostileNumber, fc.string({ maxLength: 20 })).map(([len, body]) => `${len} ${body}\n`),
    );
    fc.assert(
      fc.property(
        fc.array(record, { minLength: 1, maxLength: 4 }),
        fc.constantFrom("0", "5", "x", "g", "1", "2", "3", "7", "L"),
        fc.uint8Array({ maxLength: 2000 }),
        fc.integer({ min: 1, max: 3 }),
        (records, type, data, repeat) => {
          const member = Buffer.concat([
            rawMember("PaxHeader", "x", records.join("")),
            rawMember("a", type, Buffer.from(data)),
          ]);
          const tar = Buffer.concat([...Array.from({ length: repeat }, () => member), END]);
          expectTyped(readChecked(tar));
        },
      ),
      { numRuns: 20_000 },
    );
  }, 60_000);
});

describe("extractor properties", () => {
  let work: string;
  let n = 0;
  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), "sluice-extract-prop-"));
  });
  afterAll(async () => {
    await rm(work, { recursive: true, force: true });
  });

  const hostileName = fc
    .array(fc.constantFrom("..", ".", "", "a", "b", "/", "\\", "\0", "c:", "~", "..."), {
      minLength: 1,
      maxLength: 6,
    })
    .map((parts) => parts.join(""));
  const member = fc.oneof(
    fc
      .tuple(hostileName, fc.constantFrom("0", "5", "1", "2", "3", "4", "6"))
      .map(([name, type]) => rawMember(name, type, "x")),
    fc
      .tuple(hostileName, fc.constantFrom("0", "5"))
      .map(([name, type]) =>
        Buffer.concat([rawMember("PaxHeader", "x", paxRecord("path", name)), rawMember("a", type, "x")]),
      ),
    hostileNumber.map((size) =>
      Buffer.concat([rawMember("PaxHeader", "x", paxRecord("size", size)), rawMember("a", "0", "x")]),
    ),
  );

  it("hostile member names, types and sizes: a typed error, and nothing written outside (3,000 archives)", async () => {
    const outside = join(work, "outside");
    await mkdir(outside);
    await fc.assert(
      fc.asyncProperty(fc.array(member, { minLength: 1, maxLength: 5 }), async (members) => {
        const dir = join(work, "x", String(n++));
        const started = performance.now();
        try {
          await extract(gzipSync(Buffer.concat([...members, END])), dir);
        } catch (err) {
          expect(err, String(err)).toBeInstanceOf(ArtifactError);
        }
        expect(performance.now() - started).toBeLessThan(2_000);
        for (const entry of await readdir(dir, { recursive: true, withFileTypes: true }).catch(() => []))
          expect(entry.isSymbolicLink() || !(entry.isFile() || entry.isDirectory()), entry.name).toBe(false);
      }),
      { numRuns: 3_000 },
    );
    expect(await readdir(outside)).toEqual([]);
    expect((await readdir(work)).sort()).toEqual(["outside", "x"]);
  }, 120_000);
});
