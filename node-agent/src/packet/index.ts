/**
 * Test packets: bytes from a test vector's `PacketSpec`, and the mapping between verdicts and
 * the return codes of XDP and tc programs.
 */
export {
  buildPacket,
  internetChecksum,
  PacketBuildError,
  DEFAULT_DST_MAC,
  DEFAULT_SRC_MAC,
  EXPERIMENTAL_PROTOCOL,
} from "./build.ts";
export {
  verdictToReturnCode,
  returnCodeToVerdict,
  programHook,
  XdpAction,
  TcAction,
  type Hook,
  type ProgramHook,
} from "./verdict.ts";
export {
  parseAddress,
  parseCidr,
  formatAddress,
  ipv4Bytes,
  ipv6Bytes,
  mapIpv4,
  prefixMask,
  maskLength,
  AddressParseError,
  type IpFamily,
  type ParsedAddress,
  type ParsedCidr,
} from "../../../common/net/ip.ts";
