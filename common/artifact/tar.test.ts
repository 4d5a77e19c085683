import { gzipSync } from "node:zlib";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ArtifactError, ArtifactFormatError, ArtifactLimitError, ArtifactPathError } from "./errors.ts";
import { extract } from "./extract.ts";
import { readTar, writeTar } from "./tar.ts";
import { hostileTar, paxMember, rawMember, END } from "./tar-fixtures.ts";

/** Reads a whole archive, returning the members or the error it stopped with. */
function readAll(tar: Buffer): { paths: string[] } | { error: unknown } {
  const paths: string[] = [];
  try {
    readTar(tar, (entry) => paths.push(entry.path));
    return { paths };
  } catch (error) {
    return { error };
  }
}

describe("tar reader on hostile archives", () => {
  const cases: [string, Buffer, RegExp][] = [
    [
      "a pax size of -1536, pointing back at its own pax header (used to loop forever)",
      paxMember({ size: "-1536" }, "a", "0", "x"),
      /invalid pax size/,
    ],
    ["a pax size of -1", paxMember({ size: "-1" }, "a", "0", ""), /invalid pax size/],
    ["a pax size in hex", paxMember({ size: "0x10" }, "a", "0", "x"), /invalid pax size/],
    ["a pax size with an exponent", paxMember({ size: "1e3" }, "a", "0", "x"), /invalid pax size/],
    ["a pax size past 2^53", paxMember({ size: "99999999999999999999" }, "a", "0", "x"), /invalid pax size/],
    ["a pax size that is empty", paxMember({ size: "" }, "a", "0", "x"), /invalid pax size/],
    ["a pax size larger than the archive", paxMember({ size: "1048576" }, "a", "0", "x"), /truncated/],
    ["a header size that is not octal", rawMember("a", "0", "x", { size: "-0000001" }), /size is not octal/],
    [
      "a base-256 header size",
      rawMember("a", "0", "x", { sizeBytes: [0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1] }),
      /not octal/,
    ],
    ["a pax record whose length is zero", hostileTar.paxRecordLength("0"), /corrupt pax header/],
    ["a pax record whose length is negative", hostileTar.paxRecordLength("-5"), /corrupt pax header/],
    [
      "a pax record whose length runs past the header",
      hostileTar.paxRecordLength("900"),
      /corrupt pax header/,
    ],
    ["a pax record without its newline", hostileTar.paxRecordNoNewline(), /corrupt pax header/],
    ["a symbolic link", rawMember("l", "2", ""), /is a link/],
    ["a hard link", rawMember("h", "1", ""), /is a link/],
    ["a character device", rawMember("c", "3", ""), /unsupported type "3"/],
    ["a block device", rawMember("b", "4", ""), /unsupported type "4"/],
    ["a FIFO", rawMember("f", "6", ""), /unsupported type "6"/],
    ["a GNU long name", rawMember("n", "L", "x".repeat(200)), /unsupported type "L"/],
    ["a bad checksum", hostileTar.badChecksum(), /bad checksum/],
    [
      "an archive cut inside a member",
      writeTar([{ type: "file", path: "a", executable: false, content: Buffer.alloc(2000) }]).subarray(
        0,
        1024,
      ),
      /truncated/,
    ],
    [
      "an archive without its end marker",
      writeTar([{ type: "directory", path: "d" }]).subarray(0, 512),
      /end-of-archive/,
    ],
  ];
  for (const [name, tar, message] of cases) {
    it(`${name} is an ArtifactFormatError`, () => {
      const started = performance.now();
      const result = readAll(tar);
      expect(performance.now() - started).toBeLessThan(1000);
      expect("error" in result && result.error).toBeInstanceOf(ArtifactFormatError);
      expect(String((result as { error: Error }).error.message)).toMatch(message);
    });
  }

  it("a stream of 20,000 empty pax headers is read in bounded time", () => {
    const pax = paxMember({}, "a", "0", "").subarray(0, 512);
    const tar = Buffer.concat([...Array.from({ length: 20_000 }, () => pax), END]);
    const started = performance.now();
    expect(readAll(tar)).toEqual({ paths: [] });
    expect(performance.now() - started).toBeLessThan(2000);
  });
});

describe("extracting hostile archives", () => {
  let tmp: string;
  let n = 0;
  beforeAll(async () => {
    tmp = await mkdtemp(join(tmpdir(), "sluice-tar-"));
  });
  afterAll(async () => {
    await rm(tmp, { recursive: true, force: true });
  });
  const dir = () => join(tmp, String(n++));

  it("a negative pax size fails extraction at once", async () => {
    await expect(extract(gzipSync(paxMember({ size: "-512" }, "a", "0", "x")), dir())).rejects.toThrow(
      ArtifactFormatError,
    );
  });
  it("a pax path that climbs out is an ArtifactPathError", async () => {
    const tar = Buffer.concat([paxMember({ path: "../../etc/cron.d/x" }, "a", "0", "x"), END]);
    await expect(extract(gzipSync(tar), dir())).rejects.toThrow(ArtifactPathError);
  });
  it("an absolute member name is an ArtifactPathError", async () => {
    const tar = Buffer.concat([rawMember("/etc/passwd", "0", "x"), END]);
    await expect(extract(gzipSync(tar), dir())).rejects.toThrow(ArtifactPathError);
  });
  it("more members than the limit is an ArtifactLimitError", async () => {
    const entries = Array.from({ length: 50 }, (_, i) => ({ type: "directory" as const, path: `d${i}` }));
    const limits = { maxFiles: 10, maxFileBytes: 1024, maxTotalBytes: 4096 };
    await expect(extract(gzipSync(writeTar(entries)), dir(), limits)).rejects.toThrow(ArtifactLimitError);
  });
  it("every refusal is an ArtifactError", async () => {
    await expect(extract(Buffer.from("not gzip"), dir())).rejects.toThrow(ArtifactError);
  });
});
