/**
 * Kernel-object plumbing shared by maps, programs and links: pin and open pinned objects,
 * object info, and the conversion of `-errno` results into typed errors. (Lookups by id need
 * CAP_SYS_ADMIN and live apart, in byid.ts.)
 */
import { mkdirSync } from "node:fs";
import { dirname } from "node:path";
import { BpfError, NotSupportedError } from "./errors.ts";
import { lastErrno, lib } from "./ffi.ts";

/** `-errno` from a libbpf call becomes a typed error; EOPNOTSUPP/ENOTSUPP name the missing feature. */
export function failure(ret: number, subject: string, op: string, libbpfLog?: readonly string[]): Error {
  const errno = ret < 0 ? -ret : lastErrno();
  if (errno === 95 || errno === 524) return new NotSupportedError(`${op} (${subject})`, errno);
  return new BpfError(subject, op, errno, undefined, libbpfLog);
}

/** Throws the typed error for a negative libbpf result; returns non-negative results unchanged. */
export function check(ret: number, subject: string, op: string): number {
  if (ret < 0) throw failure(ret, subject, op);
  return ret;
}

/**
 * Pins `fd` at `path` on bpffs, creating the parent directories. The pin keeps the object alive
 * after every fd is closed; remove it with `unlink` (fs.rmSync) when the object is no longer
 * wanted.
 */
export function pinFd(fd: number, path: string, subject: string): void {
  mkdirSync(dirname(path), { recursive: true });
  check(lib.objPin(fd, path), subject, `pin ${path}`);
}

/** Opens a pinned object; the caller owns the returned fd. */
export function openPinned(path: string, subject = "pinned object"): number {
  return check(lib.objGet(path), subject, `open pinned ${path}`);
}

const infoLen = new Uint32Array(1);

/**
 * Fills `buf` with the kernel's `bpf_{prog,map,link}_info` for `fd` (the buffer's length is the
 * struct prefix asked for) and returns it.
 */
export function objInfo(fd: number, buf: Buffer, subject: string): Buffer {
  infoLen[0] = buf.length;
  check(lib.objGetInfoByFd(fd, buf, infoLen), subject, "get info");
  return buf;
}

/** Reads a fixed-size, NUL-padded name field (`BPF_OBJ_NAME_LEN`). */
export function fixedName(buf: Buffer, offset: number, size = 16): string {
  const end = buf.indexOf(0, offset);
  return buf.toString("utf8", offset, end < 0 || end > offset + size ? offset + size : end);
}

let possibleCpus = 0;

/** Number of possible CPUs: per-CPU map values hold one slot per possible CPU. */
export function numPossibleCpus(): number {
  if (possibleCpus === 0)
    possibleCpus = check(lib.numPossibleCpus() as number, "libbpf", "num possible cpus");
  return possibleCpus;
}
