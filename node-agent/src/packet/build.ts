import { parseContent } from "../../../common/api/builtins/ips.ts";
import type { PacketSpec } from "../../../common/api/testvector.ts";
import { ipv4Bytes, ipv6Bytes } from "../../../common/net/ip.ts";

/** Source MAC when a vector gives none (locally administered unicast). */
export const DEFAULT_SRC_MAC = "02:00:00:00:00:01";
/** Destination MAC when a vector gives none. */
export const DEFAULT_DST_MAC = "02:00:00:00:00:02";
/**
 * IP protocol number of a packet without a transport header: 253, "use for experimentation and
 * testing" (RFC 3692), so that it never looks like a real protocol to an NF.
 */
export const EXPERIMENTAL_PROTOCOL = 253;

const ETH_HEADER = 14;
const IPV4_HEADER = 20;
const IPV6_HEADER = 40;
const TCP_HEADER = 20;
const UDP_HEADER = 8;
const ICMP_HEADER = 8;

const TCP_FLAG_BITS = { fin: 0x01, syn: 0x02, rst: 0x04, psh: 0x08, ack: 0x10, urg: 0x20 } as const;

/** A packet spec that names an impossible combination (the schema refuses these too). */
export class PacketBuildError extends Error {
  override name = "PacketBuildError";
}

/**
 * Build the bytes of one Ethernet frame from a test vector's packet spec: Ethernet II, IPv4
 * (header checksum, DF set, id 0) or IPv6, then TCP (seq/ack 0, window 65535), UDP or ICMP /
 * ICMPv6 (id and sequence 0) with correct checksums, then the payload (`payload`'s bytes,
 * then zero bytes up to `payloadLength`). No
 * padding to the Ethernet minimum: what the spec says is what the program sees.
 */
export function buildPacket(spec: PacketSpec): Buffer {
  if (Boolean(spec.ipv4) === Boolean(spec.ipv6)) {
    throw new PacketBuildError("a packet needs exactly one of ipv4 or ipv6");
  }
  const transports = [spec.tcp, spec.udp, spec.icmp].filter((t) => t !== undefined).length;
  if (transports > 1) throw new PacketBuildError("a packet has at most one of tcp, udp or icmp");

  const payload = payloadOf(spec);
  const l4 = buildTransport(spec, payload);
  const l3 = spec.ipv4 ? buildIpv4(spec, l4) : buildIpv6(spec, l4);

  const eth = Buffer.alloc(ETH_HEADER);
  macBytes(spec.eth?.dst ?? DEFAULT_DST_MAC).copy(eth, 0);
  macBytes(spec.eth?.src ?? DEFAULT_SRC_MAC).copy(eth, 6);
  eth.writeUInt16BE(spec.ipv4 ? 0x0800 : 0x86dd, 12);
  return Buffer.concat([eth, l3, l4.bytes]);
}

interface Transport {
  protocol: number;
  /** Header and payload; the checksum field is filled in by the IP layer builder. */
  bytes: Buffer;
  /** Offset of the checksum field in `bytes`, if the protocol has one. */
  checksumOffset?: number;
  /** Whether the checksum covers the IP pseudo-header (TCP, UDP, ICMPv6; not ICMPv4). */
  pseudoHeader: boolean;
}

function buildTransport(spec: PacketSpec, payload: Buffer): Transport {
  if (spec.tcp) {
    const header = Buffer.alloc(TCP_HEADER);
    header.writeUInt16BE(spec.tcp.sport, 0);
    header.writeUInt16BE(spec.tcp.dport, 2);
    header[12] = (TCP_HEADER / 4) << 4;
    header[13] = (spec.tcp.flags ?? ["syn"]).reduce((bits, flag) => bits | TCP_FLAG_BITS[flag], 0);
    header.writeUInt16BE(65535, 14);
    return { protocol: 6, bytes: Buffer.concat([header, payload]), checksumOffset: 16, pseudoHeader: true };
  }
  if (spec.udp) {
    const header = Buffer.alloc(UDP_HEADER);
    header.writeUInt16BE(spec.udp.sport, 0);
    header.writeUInt16BE(spec.udp.dport, 2);
    header.writeUInt16BE(UDP_HEADER + payload.length, 4);
    return { protocol: 17, bytes: Buffer.concat([header, payload]), checksumOffset: 6, pseudoHeader: true };
  }
  if (spec.icmp) {
    const v6 = spec.ipv6 !== undefined;
    const header = Buffer.alloc(ICMP_HEADER);
    header[0] = spec.icmp.type ?? (v6 ? 128 : 8);
    header[1] = spec.icmp.code ?? 0;
    return {
      protocol: v6 ? 58 : 1,
      bytes: Buffer.concat([header, payload]),
      checksumOffset: 2,
      pseudoHeader: v6,
    };
  }
  return { protocol: EXPERIMENTAL_PROTOCOL, bytes: payload, pseudoHeader: false };
}

function buildIpv4(spec: PacketSpec, l4: Transport): Buffer {
  const ip = spec.ipv4!;
  const src = ipv4Bytes(ip.src);
  const dst = ipv4Bytes(ip.dst);
  const header = Buffer.alloc(IPV4_HEADER);
  header[0] = 0x45;
  header.writeUInt16BE(IPV4_HEADER + l4.bytes.length, 2);
  header.writeUInt16BE(0x4000, 6); // DF, offset 0
  header[8] = ip.ttl ?? 64;
  header[9] = l4.protocol;
  src.copy(header, 12);
  dst.copy(header, 16);
  header.writeUInt16BE(internetChecksum([header]), 10);

  if (l4.checksumOffset !== undefined) {
    const parts = [l4.bytes];
    if (l4.pseudoHeader) {
      const pseudo = Buffer.alloc(12);
      src.copy(pseudo, 0);
      dst.copy(pseudo, 4);
      pseudo[9] = l4.protocol;
      pseudo.writeUInt16BE(l4.bytes.length, 10);
      parts.unshift(pseudo);
    }
    writeTransportChecksum(l4, internetChecksum(parts));
  }
  return header;
}

function buildIpv6(spec: PacketSpec, l4: Transport): Buffer {
  const ip = spec.ipv6!;
  const src = ipv6Bytes(ip.src);
  const dst = ipv6Bytes(ip.dst);
  const header = Buffer.alloc(IPV6_HEADER);
  header.writeUInt32BE(0x60000000, 0);
  header.writeUInt16BE(l4.bytes.length, 4);
  header[6] = l4.protocol;
  header[7] = ip.hopLimit ?? 64;
  src.copy(header, 8);
  dst.copy(header, 24);

  if (l4.checksumOffset !== undefined) {
    const pseudo = Buffer.alloc(40);
    src.copy(pseudo, 0);
    dst.copy(pseudo, 16);
    pseudo.writeUInt32BE(l4.bytes.length, 32);
    pseudo[39] = l4.protocol;
    writeTransportChecksum(l4, internetChecksum([pseudo, l4.bytes]));
  }
  return header;
}

function writeTransportChecksum(l4: Transport, checksum: number): void {
  // UDP sends a computed 0 as 0xffff: 0 means "no checksum" there.
  const value = l4.protocol === 17 && checksum === 0 ? 0xffff : checksum;
  l4.bytes.writeUInt16BE(value, l4.checksumOffset!);
}

/** RFC 1071 ones' complement checksum over the concatenation of `parts`. */
export function internetChecksum(parts: Buffer[]): number {
  const data = Buffer.concat(parts);
  let sum = 0;
  for (let i = 0; i + 1 < data.length; i += 2) sum += data.readUInt16BE(i);
  if (data.length % 2 === 1) sum += data[data.length - 1]! << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

function macBytes(mac: string): Buffer {
  return Buffer.from(mac.split(":").map((part) => parseInt(part, 16)));
}

/** `payload`'s bytes (text with |hex| blocks), then zero bytes up to `payloadLength`. */
function payloadOf(spec: PacketSpec): Buffer {
  let content: Buffer = Buffer.alloc(0);
  if (spec.payload !== undefined) {
    const parsed = parseContent(spec.payload);
    if (!parsed.ok) throw new PacketBuildError(`payload: ${parsed.message}`);
    content = parsed.bytes;
  }
  const length = Math.max(content.length, spec.payloadLength ?? 0);
  return Buffer.concat([content, Buffer.alloc(length - content.length)]);
}
