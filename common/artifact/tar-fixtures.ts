/**
 * Hand-made tar members for tests of the reader on archives its writer never produces:
 * arbitrary header fields, pax records and member types.
 */

const BLOCK = 512;

/** The end-of-archive marker: two zero blocks. */
export const END: Buffer = Buffer.alloc(BLOCK * 2);

/** Header fields to override with raw text (or raw bytes for the size field). */
export interface RawFields {
  size?: string;
  sizeBytes?: number[];
  mode?: string;
}

function checksum(h: Buffer): void {
  h.fill(0x20, 148, 156);
  let sum = 0;
  for (const byte of h) sum += byte;
  h.write(`${sum.toString(8).padStart(6, "0")}\0 `, 148, "ascii");
}

/** One ustar header of `type` named `name`, followed by `data` padded to whole blocks. */
export function rawMember(name: string, type: string, data: string | Buffer, fields: RawFields = {}): Buffer {
  const content = typeof data === "string" ? Buffer.from(data) : data;
  const h = Buffer.alloc(BLOCK);
  h.write(name, 0, 100, "utf8");
  h.write(fields.mode ?? "0000644\0", 100, "ascii");
  h.write("0000000\0", 108, "ascii");
  h.write("0000000\0", 116, "ascii");
  if (fields.sizeBytes) Buffer.from(fields.sizeBytes).copy(h, 124);
  else h.write(fields.size ?? `${content.length.toString(8).padStart(11, "0")}\0`, 124, 12, "ascii");
  h.write("00000000000\0", 136, "ascii");
  h.write(type, 156, "latin1");
  h.write("ustar\0", 257, "ascii");
  h.write("00", 263, "ascii");
  checksum(h);
  const rest = content.length % BLOCK;
  return Buffer.concat([h, content, Buffer.alloc(rest === 0 ? 0 : BLOCK - rest)]);
}

/** A pax record `"<len> key=value\n"` with a correct length. */
export function paxRecord(key: string, value: string): string {
  const body = ` ${key}=${value}\n`;
  let length = Buffer.byteLength(body);
  while (String(length).length + Buffer.byteLength(body) !== length)
    length = String(length).length + Buffer.byteLength(body);
  return `${length}${body}`;
}

/** A pax header with `records`, then a member `name` of `type` holding `data`. */
export function paxMember(records: Record<string, string>, name: string, type: string, data: string): Buffer {
  const pax = Object.entries(records)
    .map(([k, v]) => paxRecord(k, v))
    .join("");
  return Buffer.concat([rawMember("PaxHeader", "x", pax), rawMember(name, type, data)]);
}

/** Archives broken in one specific way. */
export const hostileTar = {
  /** A pax header whose only record claims `length` bytes. */
  paxRecordLength(length: string): Buffer {
    return Buffer.concat([rawMember("PaxHeader", "x", `${length} path=a\n`), rawMember("a", "0", ""), END]);
  },
  /** A pax record whose declared length ends before its newline. */
  paxRecordNoNewline(): Buffer {
    return Buffer.concat([rawMember("PaxHeader", "x", "9 path=ab"), rawMember("a", "0", ""), END]);
  },
  /** A valid member whose checksum is off by one. */
  badChecksum(): Buffer {
    const member = rawMember("a", "0", "x");
    member[148] = member[148] === 0x30 ? 0x31 : 0x30;
    return Buffer.concat([member, END]);
  },
};
