/**
 * Built-in network functions: where their C lives, their typed parameters and runtime tables,
 * the encoders that turn tables into map entries and the decoders for what they record.
 */
export {
  BUILTIN_NFS,
  getBuiltinNf,
  configureBuiltinNf,
  type ConfigureResult,
  type ConfiguredBuiltinNf,
} from "./registry.ts";
export {
  BuiltinNfName,
  BuiltinConfigError,
  formatPath,
  type BuiltinIssue,
  type BuiltinConfigPart,
} from "../../../common/api/builtins/index.ts";
export {
  ChainContract,
  BpfMapType,
  BPF_F_NO_PREALLOC,
  encodeRodataValue,
  rodataValues,
  type BuiltinNf,
  type MapContents,
  type MapDefinition,
  type MapEntry,
  type RodataSetting,
} from "./types.ts";
export { firewall, encodeFirewallRule } from "./firewall.ts";
export { ratelimit, decodeRatelimitEntry, type RatelimitBucket } from "./ratelimit.ts";
export { flowmon, decodeFlowEntry, topTalkers, type FlowRecord } from "./flowmon.ts";
export { noop } from "./noop.ts";
export { ips, encodeIpsSignature, decodeIpsHits, type IpsHits } from "./ips.ts";
export { router } from "./router.ts";
export { l4lb, maglevTable, decodeL4lbFlow, type L4lbFlowRecord } from "./l4lb.ts";
export {
  overlay,
  decodeOverlayCounters,
  encodeSegmentKey,
  OverlayCounter,
  type OverlayCounters,
} from "./overlay.ts";
export * from "./structs.ts";
