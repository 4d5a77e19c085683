/**
 * The tar dialect of sluice artifacts. POSIX ustar headers (a name longer than 100 bytes is
 * split into the ustar prefix, or carried in a pax `path` record), regular files and
 * directories only, every member with mtime 0, uid/gid 0 and no owner names, so the same tree
 * gives the same bytes, and the same digest, on every run and in every clone.
 *
 * Writing: the `tar` package's own `Header` and `Pax` encoders. The archive is assembled here
 * from members already in memory (the builder has resolved links and applied its limits), in
 * the order given; node-tar's `Pack` would read the files again from disk and stat them.
 *
 * Reading stays hand-written below, because node-tar's parser (7.5, `strict: true`) accepts
 * archives this reader must refuse. Measured on the hostile fixtures of `tar.test.ts`:
 * - a pax `size` of `-1536`, `-1` or `0x10` is dropped silently and the header's size is used
 *   instead, so it and a reader that refuses the record disagree on where members start;
 * - pax records whose length is 0, runs past the header or misses its newline are skipped
 *   silently, keeping the rest of the member;
 * - an archive that stops at a block boundary without its end-of-archive marker is read
 *   without an error, so a truncated artifact would pass for a smaller tree;
 * - base-256 (GNU) numeric fields and GNU long names (`L`) are honoured.
 * Each of these is one ArtifactFormatError here, and the checks need the raw header bytes,
 * which node-tar's parser does not hand out: wrapping it would mean parsing every header twice.
 */
// The encoders alone: the package's index would bundle its whole stream and fs machinery too
// (87 KB of JavaScript against 11 KB).
import { Header } from "tar/header";
import { Pax } from "tar/pax";
import { ArtifactFormatError } from "./errors.ts";

const BLOCK = 512;

/** One archive member. Directory names have no trailing slash here. */
export type TarEntry =
  { type: "directory"; path: string } | { type: "file"; path: string; executable: boolean; content: Buffer };

/** The fixed mtime of every member: the digest depends on content only. */
const EPOCH = new Date(0);

/** The header of one member, preceded by a pax header when node-tar says the name needs one. */
function memberHeader(path: string, type: "File" | "Directory", mode: number, size: number): Buffer[] {
  const header = new Header({ path, type, mode, size, mtime: EPOCH, uid: 0, gid: 0, uname: "", gname: "" });
  const needsPax = header.encode();
  // The pax header names the member only: any other field would differ between runs or hosts.
  return needsPax ? [new Pax({ path }).encode(), header.block!] : [header.block!];
}

function padded(content: Buffer): Buffer[] {
  const rest = content.length % BLOCK;
  return rest === 0 ? [content] : [content, Buffer.alloc(BLOCK - rest)];
}

/** Serializes entries, in the order given, to an uncompressed tar stream. */
export function writeTar(entries: readonly TarEntry[]): Buffer {
  const out: Buffer[] = [];
  for (const entry of entries) {
    if (entry.type === "directory") {
      out.push(...memberHeader(`${entry.path}/`, "Directory", 0o755, 0));
    } else {
      const mode = entry.executable ? 0o755 : 0o644;
      out.push(...memberHeader(entry.path, "File", mode, entry.content.length), ...padded(entry.content));
    }
  }
  out.push(Buffer.alloc(BLOCK * 2));
  return Buffer.concat(out);
}

function readString(block: Buffer, offset: number, length: number): string {
  const field = block.subarray(offset, offset + length);
  const end = field.indexOf(0);
  return field.subarray(0, end < 0 ? length : end).toString("utf8");
}

/**
 * A numeric header field: octal digits, padded with spaces or NULs. Base-256 (GNU) and anything
 * else is refused, so every value is a non-negative safe integer below 8^11.
 */
function readOctal(block: Buffer, offset: number, length: number, what: string): number {
  const text = readString(block, offset, length).trim();
  if (!/^[0-7]*$/.test(text)) throw new ArtifactFormatError(`corrupt tar header: ${what} is not octal`);
  return text === "" ? 0 : Number.parseInt(text, 8);
}

/** Decimal digits only: no sign, exponent, hex prefix or spaces that `Number()` would accept. */
const DECIMAL = /^(0|[1-9][0-9]*)$/;

/**
 * The records of a pax extended header, `"<length> <key>=<value>\n"` each. A record whose length
 * is not plain decimal, points outside the header or does not end in a newline is refused: a
 * reader that guessed would disagree with other readers about where members start.
 */
function parsePax(data: Buffer): Map<string, string> {
  const records = new Map<string, string>();
  let pos = 0;
  while (pos < data.length) {
    const space = data.indexOf(0x20, pos);
    const digits = space < 0 ? "" : data.subarray(pos, space).toString("latin1");
    const length = DECIMAL.test(digits) && digits.length <= 15 ? Number(digits) : NaN;
    if (!(length > space - pos + 1) || pos + length > data.length || data[pos + length - 1] !== 0x0a) {
      throw new ArtifactFormatError("corrupt pax header");
    }
    const record = data.subarray(space + 1, pos + length - 1).toString("utf8");
    const eq = record.indexOf("=");
    if (eq > 0) records.set(record.slice(0, eq), record.slice(eq + 1));
    pos += length;
  }
  return records;
}

/** A member's size from its pax `size` record or its header, checked to be a byte count. */
function memberSize(block: Buffer, pax: Map<string, string> | undefined, path: string): number {
  const record = pax?.get("size");
  if (record === undefined) return readOctal(block, 124, 12, "size");
  const size = DECIMAL.test(record) ? Number(record) : NaN;
  if (!Number.isSafeInteger(size))
    throw new ArtifactFormatError(
      `tar member ${path} has an invalid pax size ${JSON.stringify(record.slice(0, 32))}`,
      path,
    );
  return size;
}

/**
 * Visits the members of an uncompressed tar stream. Hard links, symlinks, devices, FIFOs and
 * GNU extensions are refused with {@link ArtifactFormatError} naming the member; global pax
 * headers (which `git archive` writes) are ignored. `onEntry` sees each member before the next
 * header is parsed, so limits can stop the walk early.
 */
export function readTar(
  tar: Buffer,
  onEntry: (entry: {
    type: "directory" | "file";
    path: string;
    mode: number;
    size: number;
    content: Buffer;
  }) => void,
): void {
  let pos = 0;
  let pax: Map<string, string> | undefined;
  while (pos + BLOCK <= tar.length) {
    const block = tar.subarray(pos, pos + BLOCK);
    if (block.every((b) => b === 0)) return; // end-of-archive marker
    let sum = 0;
    for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 0x20 : block[i]!;
    if (readOctal(block, 148, 8, "checksum") !== sum)
      throw new ArtifactFormatError(`corrupt tar header at byte ${pos}: bad checksum`);
    const type = String.fromCharCode(block[156]!);
    const prefix = readString(block, 345, 155);
    const rawName = readString(block, 0, 100);
    let path = pax?.get("path") ?? (prefix ? `${prefix}/${rawName}` : rawName);
    const size = memberSize(block, pax, path);
    const mode = readOctal(block, 100, 8, "mode");
    pax = undefined;
    const dataStart = pos + BLOCK;
    const dataEnd = dataStart + size;
    if (dataEnd > tar.length) throw new ArtifactFormatError(`tar member ${path} is truncated`, path);
    // size >= 0, so every member moves at least one block forward: the walk always ends.
    pos = dataStart + Math.ceil(size / BLOCK) * BLOCK;
    const content = tar.subarray(dataStart, dataEnd);
    switch (type) {
      case "x":
        pax = parsePax(content);
        break;
      case "g":
        break;
      case "0":
      case "\0":
      case "7":
        onEntry({ type: "file", path, mode, size, content });
        break;
      case "5":
        path = path.replace(/\/+$/, "");
        onEntry({ type: "directory", path, mode, size: 0, content });
        break;
      case "1":
      case "2":
        throw new ArtifactFormatError(
          `tar member ${path} is a link; artifacts hold only files and directories`,
          path,
        );
      default:
        throw new ArtifactFormatError(`tar member ${path} has unsupported type "${type}"`, path);
    }
  }
  throw new ArtifactFormatError("tar archive ends without its end-of-archive marker");
}
