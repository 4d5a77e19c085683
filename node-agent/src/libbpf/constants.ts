/**
 * Kernel constants from `<linux/bpf.h>` and `<linux/if_link.h>` that callers name. Only the
 * values the agent meets are listed; everything else still works by number.
 */

/** `enum bpf_map_type`. */
export const MapType = {
  HASH: 1,
  ARRAY: 2,
  PROG_ARRAY: 3,
  PERF_EVENT_ARRAY: 4,
  PERCPU_HASH: 5,
  PERCPU_ARRAY: 6,
  STACK_TRACE: 7,
  CGROUP_ARRAY: 8,
  LRU_HASH: 9,
  LRU_PERCPU_HASH: 10,
  LPM_TRIE: 11,
  ARRAY_OF_MAPS: 12,
  HASH_OF_MAPS: 13,
  DEVMAP: 14,
  SOCKMAP: 15,
  CPUMAP: 16,
  XSKMAP: 17,
  SOCKHASH: 18,
  CGROUP_STORAGE: 19,
  REUSEPORT_SOCKARRAY: 20,
  PERCPU_CGROUP_STORAGE: 21,
  QUEUE: 22,
  STACK: 23,
  SK_STORAGE: 24,
  DEVMAP_HASH: 25,
  STRUCT_OPS: 26,
  RINGBUF: 27,
  INODE_STORAGE: 28,
  TASK_STORAGE: 29,
  BLOOM_FILTER: 30,
} as const;

/** `enum bpf_prog_type`. */
export const ProgType = {
  UNSPEC: 0,
  SOCKET_FILTER: 1,
  KPROBE: 2,
  SCHED_CLS: 3,
  SCHED_ACT: 4,
  TRACEPOINT: 5,
  XDP: 6,
  PERF_EVENT: 7,
  CGROUP_SKB: 8,
  CGROUP_SOCK: 9,
  LWT_IN: 10,
  LWT_OUT: 11,
  LWT_XMIT: 12,
  SOCK_OPS: 13,
  SK_SKB: 14,
  CGROUP_DEVICE: 15,
  SK_MSG: 16,
  RAW_TRACEPOINT: 17,
  CGROUP_SOCK_ADDR: 18,
  LWT_SEG6LOCAL: 19,
  LIRC_MODE2: 20,
  SK_REUSEPORT: 21,
  FLOW_DISSECTOR: 22,
  CGROUP_SYSCTL: 23,
  RAW_TRACEPOINT_WRITABLE: 24,
  CGROUP_SOCKOPT: 25,
  TRACING: 26,
  STRUCT_OPS: 27,
  EXT: 28,
  LSM: 29,
  SK_LOOKUP: 30,
  SYSCALL: 31,
  NETFILTER: 32,
} as const;

/** `enum bpf_attach_type` values used for links. */
export const AttachType = {
  XDP: 37,
  TCX_INGRESS: 46,
  TCX_EGRESS: 47,
} as const;

/** `enum bpf_link_type`. */
export const LinkType = {
  UNSPEC: 0,
  RAW_TRACEPOINT: 1,
  TRACING: 2,
  CGROUP: 3,
  ITER: 4,
  NETNS: 5,
  XDP: 6,
  PERF_EVENT: 7,
  KPROBE_MULTI: 8,
  STRUCT_OPS: 9,
  NETFILTER: 10,
  TCX: 11,
  UPROBE_MULTI: 12,
  NETKIT: 13,
} as const;

/** `bpf_map_update_elem` flags. */
export const UpdateFlags = {
  /** Create or replace. */
  ANY: 0,
  /** Create only; EEXIST if the key exists. */
  NOEXIST: 1,
  /** Replace only; ENOENT if the key is missing. */
  EXIST: 2,
  /** Take the value's bpf_spin_lock. */
  F_LOCK: 4,
} as const;

/** XDP return codes (`enum xdp_action`). */
export const XdpAction = { ABORTED: 0, DROP: 1, PASS: 2, TX: 3, REDIRECT: 4 } as const;

/** tc return codes (`TC_ACT_*`) a sched_cls program returns. */
export const TcAction = {
  UNSPEC: -1,
  OK: 0,
  RECLASSIFY: 1,
  SHOT: 2,
  PIPE: 3,
  STOLEN: 4,
  REDIRECT: 7,
} as const;

/** `XDP_FLAGS_*` (if_link.h). */
export const XdpFlags = { UPDATE_IF_NOEXIST: 1, SKB_MODE: 2, DRV_MODE: 4, HW_MODE: 8, REPLACE: 16 } as const;

/** `BPF_F_REPLACE`: a link update that names the program it expects to replace. */
export const BPF_F_REPLACE = 4;

const invert = (table: Record<string, number>): ReadonlyMap<number, string> =>
  new Map(Object.entries(table).map(([name, value]) => [value, name.toLowerCase()]));

const mapTypeNames = invert(MapType);
const progTypeNames = invert(ProgType);
const linkTypeNames = invert(LinkType);

/** `percpu_array` for 6; `map type <n>` for numbers this table does not know. */
export function mapTypeName(type: number): string {
  return mapTypeNames.get(type) ?? `map type ${type}`;
}

/** `xdp` for 6, `sched_cls` for 3; `program type <n>` for unknown numbers. */
export function progTypeName(type: number): string {
  return progTypeNames.get(type) ?? `program type ${type}`;
}

/** `xdp` for 6, `tcx` for 11; `link type <n>` for unknown numbers. */
export function linkTypeName(type: number): string {
  return linkTypeNames.get(type) ?? `link type ${type}`;
}

/** Map types whose values are stored once per possible CPU. */
export function isPerCpuMapType(type: number): boolean {
  return (
    type === MapType.PERCPU_HASH ||
    type === MapType.PERCPU_ARRAY ||
    type === MapType.LRU_PERCPU_HASH ||
    type === MapType.PERCPU_CGROUP_STORAGE
  );
}
