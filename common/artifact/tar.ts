/**
 * The tar dialect of sluice artifacts, written and read here rather than with a general tar
 * library: the writer must produce the same bytes for the same tree on every run, and the
 * reader must accept only what the writer produces (regular files and directories, no links,
 * no devices, no surprises from hostile archives). POSIX ustar headers, with a pax `path`
 * record for names longer than 100 bytes.
 */
import { ArtifactFormatError } from "./errors.ts";

const BLOCK = 512;

/** One archive member. Directory names have no trailing slash here. */
export type TarEntry =
  { type: "directory"; path: string } | { type: "file"; path: string; executable: boolean; content: Buffer };

function octal(value: number, width: number): string {
  return `${value.toString(8).padStart(width - 1, "0")}\0`;
}

function header(name: string, type: string, mode: number, size: number): Buffer {
  const h = Buffer.alloc(BLOCK);
  h.write(name, 0, 100, "utf8");
  h.write(octal(mode, 8), 100, "ascii");
  h.write(octal(0, 8), 108, "ascii"); // uid
  h.write(octal(0, 8), 116, "ascii"); // gid
  h.write(octal(size, 12), 124, "ascii");
  h.write(octal(0, 12), 136, "ascii"); // mtime: fixed, so the digest depends on content only
  h.write(type, 156, "ascii");
  h.write("ustar\0", 257, "ascii");
  h.write("00", 263, "ascii");
  h.fill(0x20, 148, 156); // the checksum is computed over spaces in its own field
  let sum = 0;
  for (const byte of h) sum += byte;
  h.write(`${sum.toString(8).padStart(6, "0")}\0 `, 148, "ascii");
  return h;
}

function padded(content: Buffer): Buffer[] {
  const rest = content.length % BLOCK;
  return rest === 0 ? [content] : [content, Buffer.alloc(BLOCK - rest)];
}

/** A pax record `"<len> path=<value>\n"`, whose length counts its own digits. */
function paxRecord(key: string, value: string): string {
  const body = ` ${key}=${value}\n`;
  let length = Buffer.byteLength(body);
  while (String(length).length + Buffer.byteLength(body) !== length)
    length = String(length).length + Buffer.byteLength(body);
  return `${length}${body}`;
}

/** Serializes entries, in the order given, to an uncompressed tar stream. */
export function writeTar(entries: readonly TarEntry[]): Buffer {
  const out: Buffer[] = [];
  for (const entry of entries) {
    const name = entry.type === "directory" ? `${entry.path}/` : entry.path;
    let headerName = name;
    if (Buffer.byteLength(name) > 100) {
      const pax = Buffer.from(paxRecord("path", name));
      out.push(header("PaxHeader", "x", 0o644, pax.length), ...padded(pax));
      // Readers that know pax use the record; others get a recognisable ASCII stand-in.
      headerName = name.replace(/[^\x20-\x7e]/g, "_").slice(0, 99);
    }
    if (entry.type === "directory") {
      out.push(header(headerName, "5", 0o755, 0));
    } else {
      out.push(
        header(headerName, "0", entry.executable ? 0o755 : 0o644, entry.content.length),
        ...padded(entry.content),
      );
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
