/**
 * Kernel-wide lookups by id: the ids of every program, map or link (`BPF_*_GET_NEXT_ID`), and
 * opening one by id (`BPF_*_GET_FD_BY_ID`).
 *
 * The kernel allows both only with CAP_SYS_ADMIN. The agent does not have it (the Helm chart
 * gives it CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN): it keeps fds of what it creates and pins of
 * what a later process must take over, and never looks an object up by id. This module is for
 * tests and benchmarks, which run as root to check what the kernel holds; it is deliberately not
 * exported from the library's index, and a unit test keeps the agent, the operator and the CLI
 * from importing it.
 */
import { lib } from "./ffi.ts";
import { BpfLink } from "./link.ts";
import { BpfMap } from "./map.ts";
import { BpfProgram } from "./program.ts";
import { check, failure } from "./sys.ts";

/** Kinds of kernel objects that have ids. */
export type ObjectKind = "prog" | "map" | "link";

const nextIdFns = { prog: lib.progGetNextId, map: lib.mapGetNextId, link: lib.linkGetNextId } as const;
const fdByIdFns = { prog: lib.progGetFdById, map: lib.mapGetFdById, link: lib.linkGetFdById } as const;

/**
 * Ids of all live kernel objects of a kind, ascending (a snapshot; objects come and go).
 * Needs CAP_SYS_ADMIN (EPERM without).
 */
export function listIds(kind: ObjectKind): number[] {
  const ids: number[] = [];
  const next = new Uint32Array(1);
  let id = 0;
  for (;;) {
    const ret = nextIdFns[kind](id, next) as number;
    if (ret < 0) {
      if (-ret === 2) return ids; // ENOENT: end of the list
      throw failure(ret, `${kind} ids`, "next id");
    }
    id = next[0] ?? 0;
    ids.push(id);
  }
}

/**
 * Opens a kernel object by id; the caller owns the returned fd. ENOENT when it is gone, EPERM
 * without CAP_SYS_ADMIN.
 */
export function fdById(kind: ObjectKind, id: number): number {
  return check(fdByIdFns[kind](id) as number, `${kind} ${id}`, "open by id");
}

/** Opens program `id`; the handle owns the new fd. Needs CAP_SYS_ADMIN. */
export function programById(id: number): BpfProgram {
  return BpfProgram.fromFd(fdById("prog", id), { owned: true });
}

/** Opens map `id`; the handle owns the new fd. Needs CAP_SYS_ADMIN. */
export function mapById(id: number): BpfMap {
  return BpfMap.fromFd(fdById("map", id), { owned: true });
}

/** Opens link `id`; the handle owns the new fd. Needs CAP_SYS_ADMIN. */
export function linkById(id: number): BpfLink {
  return BpfLink.fromFd(fdById("link", id), { owned: true });
}
