/**
 * sluice's binding to libbpf (libbpf.so.1 through koffi): load BPF objects, use maps, run and
 * attach programs. It knows nothing of Kubernetes, so the agent, the embedded mode and the tests
 * drive it the same way. Every handle that holds an fd has `close()` and says who owns the fd.
 */
export {
  BpfError,
  BpfSpecError,
  NotSupportedError,
  VerifierError,
  errnoName,
  trimVerifierLog,
} from "./errors.ts";
export {
  AttachType,
  BPF_F_REPLACE,
  LinkType,
  MapType,
  ProgType,
  TcAction,
  UpdateFlags,
  XdpAction,
  XdpFlags,
  isPerCpuMapType,
  linkTypeName,
  mapTypeName,
  progTypeName,
} from "./constants.ts";
export { BpfMap, readMapInfo, sameMapDefinition, u32, u64 } from "./map.ts";
export type { Bytes, MapCreateOptions, MapDefinition, MapInfo } from "./map.ts";
export { BpfProgram, readProgInfo } from "./program.ts";
export type { ProgInfo, TestRunOptions, TestRunResult } from "./program.ts";
export { BpfLink, readLinkInfo, xdpQuery } from "./link.ts";
export type { LinkInfo, TcxDirection, XdpMode, XdpQueryResult } from "./link.ts";
export { BpfObject } from "./object.ts";
export type {
  BpfObjectOpenOptions,
  BpfObjectSpec,
  ObjectMapSpec,
  ProgramSpec,
  RodataValue,
  RodataVariable,
} from "./object.ts";
export { numPossibleCpus, openPinned } from "./sys.ts";
export { closeFd, dupFd, LIBBPF_SONAME } from "./ffi.ts";
