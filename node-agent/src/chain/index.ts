/**
 * Chains of network functions in the kernel: build a revision next to the live one, self-test
 * it, switch it in atomically, carry state over, and adopt what an earlier process left pinned.
 */
export {
  ChainManager,
  DEFAULT_BPFFS_ROOT,
  type AdoptedChain,
  type ApplyResult,
  type ChainManagerOptions,
  type ChainStatus,
  type InterfaceStatus,
  type NfMapRef,
  type NfStatus,
  type RecreatedMap,
  type SwitchPhase,
} from "./manager.ts";
export {
  ChainSpecError,
  codeDigest,
  MAX_CHAIN_LENGTH,
  validateChainSpec,
  type ChainSpec,
  type Hook,
  type NfLoadSpec,
  type RodataValue,
  type TableEntry,
  type XdpMode,
} from "./spec.ts";
export { AttachError, ChainStateError, NfContractError } from "./errors.ts";
export { deriveCounters, diffCounters, zeroEnded, type EndedCounters, type NfCounters } from "./counters.ts";
export { chainPaths, type ChainPaths } from "./layout.ts";
export { SelfTestError, type SelfTestReport, type VectorResult } from "../selftest/index.ts";
