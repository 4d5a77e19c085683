import { describe, expect, it } from "vitest";
import { PacketSpec } from "../../../common/api/testvector.ts";
import { buildPacket, internetChecksum, PacketBuildError } from "./build.ts";

// Expected bytes were written out field by field (one string per header, fields separated by
// spaces) and their checksums verified with an independent RFC 1071 implementation.
const hex = (...headers: string[]): string => headers.join("").replaceAll(" ", "");
const ETH_V4 = "020000000002 020000000001 0800";
const ETH_V6 = "020000000002 020000000001 86dd";

const cases: { name: string; spec: PacketSpec; bytes: string }[] = [
  {
    name: "IPv4/UDP with payload gets header and UDP checksums and default MACs",
    spec: { ipv4: { src: "10.0.0.1", dst: "10.0.0.2" }, udp: { sport: 1234, dport: 53 }, payloadLength: 18 },
    bytes: hex(
      ETH_V4,
      "4500 002e 0000 4000 40 11 26bd 0a000001 0a000002",
      "04d2 0035 001a e6b0",
      "00".repeat(18),
    ),
  },
  {
    name: "IPv4/TCP carries given MACs, TTL and flags (SYN|ACK = 0x12)",
    spec: {
      eth: { src: "aa:bb:cc:dd:ee:ff", dst: "11:22:33:44:55:66" },
      ipv4: { src: "192.168.1.10", dst: "8.8.8.8", ttl: 3 },
      tcp: { sport: 443, dport: 51000, flags: ["syn", "ack"] },
    },
    bytes: hex(
      "112233445566 aabbccddeeff 0800",
      "4500 0028 0000 4000 03 06 a60e c0a8010a 08080808",
      "01bb c738 00000000 00000000 50 12 ffff 151d 0000",
    ),
  },
  {
    name: "IPv4/ICMP defaults to echo request with checksum over the ICMP message",
    spec: { ipv4: { src: "10.1.2.3", dst: "10.3.2.1" }, icmp: {}, payloadLength: 4 },
    bytes: hex(
      ETH_V4,
      "4500 0020 0000 4000 40 01 22d6 0a010203 0a030201",
      "08 00 f7ff 0000 0000",
      "00000000",
    ),
  },
  {
    name: "IPv4 without transport header uses protocol 253 (testing)",
    spec: { ipv4: { src: "10.1.2.3", dst: "10.3.2.1" }, payloadLength: 3 },
    bytes: hex(ETH_V4, "4500 0017 0000 4000 40 fd 21e3 0a010203 0a030201", "000000"),
  },
  {
    name: "IPv6/TCP defaults to SYN with the pseudo-header checksum",
    spec: { ipv6: { src: "fd00::1", dst: "fd00::2" }, tcp: { sport: 40000, dport: 443 } },
    bytes: hex(
      ETH_V6,
      "60000000 0014 06 40 fd000000000000000000000000000001 fd000000000000000000000000000002",
      "9c40 01bb 00000000 00000000 50 02 ffff 17e3 0000",
    ),
  },
  {
    name: "IPv6/ICMPv6 defaults to echo request (128)",
    spec: { ipv6: { src: "fd00::1", dst: "fd00::2" }, icmp: {} },
    bytes: hex(
      ETH_V6,
      "60000000 0008 3a 40 fd000000000000000000000000000001 fd000000000000000000000000000002",
      "80 00 85b8 0000 0000",
    ),
  },
  {
    name: "IPv6/UDP with hop limit 1 and an odd payload",
    spec: {
      ipv6: { src: "::1", dst: "2001:db8::ffff:1", hopLimit: 1 },
      udp: { sport: 53, dport: 53 },
      payloadLength: 1,
    },
    bytes: hex(
      ETH_V6,
      "60000000 0009 11 01 00000000000000000000000000000001 20010db80000000000000000ffff0001",
      "0035 0035 0009 d1b7",
      "00",
    ),
  },
];

describe("buildPacket", () => {
  for (const { name, spec, bytes } of cases) {
    it(name, () => {
      expect(buildPacket(PacketSpec.parse(spec)).toString("hex")).toBe(bytes);
    });
  }

  it("every checksum verifies to zero over the built packet", () => {
    const packet = buildPacket({
      ipv4: { src: "172.16.0.1", dst: "172.16.0.2" },
      tcp: { sport: 1, dport: 2 },
      payloadLength: 7,
    });
    expect(internetChecksum([packet.subarray(14, 34)])).toBe(0);
    const pseudo = Buffer.concat([packet.subarray(26, 34), Buffer.from([0, 6, 0, 27])]);
    expect(internetChecksum([pseudo, packet.subarray(34)])).toBe(0);
  });

  it("puts the payload's bytes (text and |hex|) after the headers, then zeros up to payloadLength", () => {
    const frame = buildPacket({
      ipv4: { src: "10.0.0.1", dst: "10.0.0.2" },
      udp: { sport: 1, dport: 2 },
      payload: "GET|0d 0a|",
      payloadLength: 8,
    });
    expect(frame.subarray(14 + 20 + 8).toString("hex")).toBe("4745540d0a000000");
    expect(frame.readUInt16BE(14 + 20 + 4)).toBe(8 + 8);
  });

  it("refuses a packet with both IPv4 and IPv6", () => {
    expect(() =>
      buildPacket({ ipv4: { src: "10.0.0.1", dst: "10.0.0.2" }, ipv6: { src: "::1", dst: "::2" } }),
    ).toThrow(PacketBuildError);
  });

  it("refuses a packet with two transport headers", () => {
    expect(() =>
      buildPacket({
        ipv4: { src: "10.0.0.1", dst: "10.0.0.2" },
        tcp: { sport: 1, dport: 2 },
        udp: { sport: 1, dport: 2 },
      }),
    ).toThrow(/at most one of tcp, udp or icmp/);
  });
});
