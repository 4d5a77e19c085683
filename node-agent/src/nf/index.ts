/**
 * Built-in network functions: where their C lives, their typed parameters and runtime tables,
 * the encoders that turn tables into map entries and the decoders for what they record.
 */
export {
  BUILTIN_NFS,
  BuiltinNfName,
  getBuiltinNf,
  configureBuiltinNf,
  formatPath,
  NfConfigError,
  type ConfigureResult,
  type ConfiguredBuiltinNf,
  type NfConfigIssue,
  type NfConfigPart,
} from "./registry.ts";
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
export {
  firewall,
  FirewallParams,
  FirewallRule,
  FirewallTables,
  PortRange,
  Cidr,
  PROTOCOL_NUMBERS,
} from "./firewall.ts";
export {
  ratelimit,
  RatelimitParams,
  RatelimitTables,
  decodeRatelimitEntry,
  type RatelimitBucket,
} from "./ratelimit.ts";
export {
  flowmon,
  FlowmonParams,
  FlowmonTables,
  decodeFlowEntry,
  topTalkers,
  type FlowRecord,
} from "./flowmon.ts";
export { noop, NoopParams, NoopTables } from "./noop.ts";
export * from "./structs.ts";
