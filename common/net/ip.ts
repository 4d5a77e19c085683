import { isIPv4, isIPv6 } from "node:net";

/** Address family as the data plane stores it (`family` byte of `struct sluice_flow_key`). */
export type IpFamily = 4 | 6;

/** A parsed address: its family and its 16-byte form (IPv4 mapped to `::ffff:a.b.c.d`). */
export interface ParsedAddress {
  family: IpFamily;
  /** 16 bytes, network order; the layout of `union sluice_addr`. */
  bytes: Buffer;
}

/** A parsed CIDR block in the 16-byte address space of `union sluice_addr`. */
export interface ParsedCidr {
  family: IpFamily;
  /** The network address (host bits zero), 16 bytes. */
  network: Buffer;
  /** The mask in the 16-byte space: an IPv4 /8 becomes 96 + 8 leading one bits. */
  mask: Buffer;
  /** Prefix length as the user wrote it (0-32 for IPv4, 0-128 for IPv6). */
  prefixLength: number;
}

/** An address or CIDR string that does not parse; `message` says what is wrong with it. */
export class AddressParseError extends Error {
  override name = "AddressParseError";
}

/** The 4 bytes of a dotted-quad IPv4 address. */
export function ipv4Bytes(address: string): Buffer {
  if (!isIPv4(address)) throw new AddressParseError(`"${address}" is not an IPv4 address`);
  return Buffer.from(address.split(".").map((part) => Number(part)));
}

/** The 16 bytes of an IPv6 address (any textual form, including `::` and embedded IPv4). */
export function ipv6Bytes(address: string): Buffer {
  if (!isIPv6(address)) throw new AddressParseError(`"${address}" is not an IPv6 address`);
  let text = address;
  const zone = text.indexOf("%");
  if (zone >= 0) text = text.slice(0, zone);
  // An embedded IPv4 tail (::ffff:1.2.3.4) becomes two hex groups.
  const lastColon = text.lastIndexOf(":");
  const tail = text.slice(lastColon + 1);
  if (tail.includes(".")) {
    const v4 = ipv4Bytes(tail);
    text = `${text.slice(0, lastColon + 1)}${v4.readUInt16BE(0).toString(16)}:${v4.readUInt16BE(2).toString(16)}`;
  }
  const [head = "", rest] = text.split("::");
  const headGroups = head === "" ? [] : head.split(":");
  const tailGroups = rest === undefined || rest === "" ? [] : rest.split(":");
  const missing = 8 - headGroups.length - tailGroups.length;
  const groups =
    rest === undefined ? headGroups : [...headGroups, ...Array<string>(missing).fill("0"), ...tailGroups];
  const bytes = Buffer.alloc(16);
  groups.forEach((group, i) => bytes.writeUInt16BE(parseInt(group, 16), i * 2));
  return bytes;
}

/** Parse an IPv4 or IPv6 address into the 16-byte form of `union sluice_addr`. */
export function parseAddress(address: string): ParsedAddress {
  if (isIPv4(address)) return { family: 4, bytes: mapIpv4(ipv4Bytes(address)) };
  if (isIPv6(address)) return { family: 6, bytes: ipv6Bytes(address) };
  throw new AddressParseError(`"${address}" is not an IPv4 or IPv6 address`);
}

/** `::ffff:a.b.c.d` for the 4 bytes of an IPv4 address. */
export function mapIpv4(v4: Buffer): Buffer {
  const bytes = Buffer.alloc(16);
  bytes[10] = 0xff;
  bytes[11] = 0xff;
  v4.copy(bytes, 12);
  return bytes;
}

/**
 * Format 16 address bytes as text: dotted quad for family 4 (the last 4 bytes), the canonical
 * compressed IPv6 form (RFC 5952) for family 6.
 */
export function formatAddress(bytes: Buffer, family: IpFamily): string {
  if (family === 4) return `${bytes[12]}.${bytes[13]}.${bytes[14]}.${bytes[15]}`;
  const groups = Array.from({ length: 8 }, (_, i) => bytes.readUInt16BE(i * 2));
  // Longest run of two or more zero groups is compressed (first one on a tie).
  let bestStart = -1;
  let bestLength = 1;
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLength) {
      bestStart = i;
      bestLength = j - i;
    }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestStart < 0) return hex.join(":");
  const left = hex.slice(0, bestStart).join(":");
  const right = hex.slice(bestStart + bestLength).join(":");
  return `${left}::${right}`;
}

/**
 * Parse `a.b.c.d/n`, `x::y/n`, or a bare address (a host: /32 or /128). Host bits must be zero,
 * so that a typo like `10.0.0.1/8` is reported instead of silently widened.
 */
export function parseCidr(text: string): ParsedCidr {
  const slash = text.indexOf("/");
  const addressText = slash < 0 ? text : text.slice(0, slash);
  const { family, bytes } = parseAddress(addressText);
  const maxLength = family === 4 ? 32 : 128;
  let prefixLength = maxLength;
  if (slash >= 0) {
    const lengthText = text.slice(slash + 1);
    if (!/^\d{1,3}$/.test(lengthText) || Number(lengthText) > maxLength) {
      throw new AddressParseError(`"${text}" has an invalid prefix length (0-${maxLength})`);
    }
    prefixLength = Number(lengthText);
  }
  const bits = family === 4 ? 96 + prefixLength : prefixLength;
  const mask = prefixMask(bits);
  const network = Buffer.from(bytes.map((b, i) => b & (mask[i] ?? 0)));
  if (!network.equals(bytes)) {
    const suggestion = `${formatAddress(network, family)}/${prefixLength}`;
    throw new AddressParseError(`"${text}" has host bits set; did you mean ${suggestion}?`);
  }
  return { family, network, mask, prefixLength };
}

/** A 16-byte mask with `bits` leading one bits. */
export function prefixMask(bits: number): Buffer {
  const mask = Buffer.alloc(16);
  for (let i = 0; i < 16; i++) {
    const take = Math.max(0, Math.min(8, bits - i * 8));
    mask[i] = take === 0 ? 0 : (0xff << (8 - take)) & 0xff;
  }
  return mask;
}

/** Number of leading one bits of a 16-byte mask (the inverse of {@link prefixMask}). */
export function maskLength(mask: Buffer): number {
  let bits = 0;
  for (const byte of mask) {
    if (byte === 0xff) {
      bits += 8;
      continue;
    }
    let b = byte;
    while (b & 0x80) {
      bits++;
      b = (b << 1) & 0xff;
    }
    break;
  }
  return bits;
}
