import { describe, expect, it } from "vitest";
import { AddressParseError, formatAddress, maskLength, parseAddress, parseCidr } from "./ip.ts";

describe("addresses", () => {
  it.each([
    ["10.0.0.1", 4, "00000000000000000000ffff0a000001"],
    ["::", 6, "00000000000000000000000000000000"],
    ["fd00::1", 6, "fd000000000000000000000000000001"],
    ["2001:db8:0:0:1::", 6, "20010db8000000000001000000000000"],
    ["::ffff:1.2.3.4", 6, "00000000000000000000ffff01020304"],
    ["1:2:3:4:5:6:7:8", 6, "00010002000300040005000600070008"],
  ] as const)("%s parses to family %i and 16 bytes", (text, family, hex) => {
    const parsed = parseAddress(text);
    expect(parsed.family).toBe(family);
    expect(parsed.bytes.toString("hex")).toBe(hex);
  });

  it.each([
    ["10.0.0.1", 4],
    ["fd00::1", 6],
    ["2001:db8::1:0:0:1", 6],
    ["1:0:0:2::3", 6],
    ["::", 6],
    ["1:2:3:4:5:6:7:8", 6],
  ] as const)("%s formats back to itself", (text, family) => {
    expect(formatAddress(parseAddress(text).bytes, family)).toBe(text);
  });

  it("rejects what is not an address", () => {
    expect(() => parseAddress("10.0.0.256")).toThrow(AddressParseError);
    expect(() => parseAddress("fd00:::1")).toThrow(AddressParseError);
  });
});

describe("CIDR blocks", () => {
  it("an IPv4 /8 becomes a /104 in the mapped 16-byte space", () => {
    const cidr = parseCidr("10.0.0.0/8");
    expect(cidr.family).toBe(4);
    expect(cidr.network.toString("hex")).toBe("00000000000000000000ffff0a000000");
    expect(cidr.mask.toString("hex")).toBe("ffffffffffffffffffffffffff000000");
    expect(maskLength(cidr.mask)).toBe(104);
  });

  it("a bare address is a host route", () => {
    expect(parseCidr("fd00::1").prefixLength).toBe(128);
    expect(parseCidr("192.0.2.7").prefixLength).toBe(32);
  });

  it("IPv6 prefixes that do not end on a byte", () => {
    const cidr = parseCidr("fc00::/7");
    expect(cidr.mask.toString("hex")).toBe("fe000000000000000000000000000000");
    expect(cidr.network.toString("hex")).toBe("fc000000000000000000000000000000");
    expect(() => parseCidr("fd00::/7")).toThrow("did you mean fc00::/7?");
  });

  it("host bits set are refused with the intended block suggested", () => {
    expect(() => parseCidr("10.0.0.1/8")).toThrow('"10.0.0.1/8" has host bits set; did you mean 10.0.0.0/8?');
    expect(() => parseCidr("fd00::1/64")).toThrow("did you mean fd00::/64?");
  });

  it("prefix lengths out of range are refused", () => {
    expect(() => parseCidr("10.0.0.0/33")).toThrow(/invalid prefix length \(0-32\)/);
    expect(() => parseCidr("fd00::/129")).toThrow(/0-128/);
    expect(() => parseCidr("fd00::/x")).toThrow(AddressParseError);
  });
});
