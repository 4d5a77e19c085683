/**
 * NF objects opened ahead of their load. Opening an object (libbpf reads the ELF file, its BTF
 * and its relocations; nothing reaches the kernel, no fd stays open) costs about 0.1 ms, a
 * tenth of a small NF's load, and libbpf loads an opened object only once, so every load needs
 * an open of its own. The pool keeps opened objects of the files loaded lately and opens the
 * next ones when the main thread has nothing else to do (after the switch that took them), so
 * that a switch finds its objects opened.
 *
 * An object is handed out only while its file keeps the device, inode, size and times it had
 * when it was opened; anything else is opened on the spot.
 */
import { statSync } from "node:fs";
import { BpfObject } from "../libbpf/index.ts";

/** Opened objects kept per file: a switch loads an NF for its self-test and for the revision. */
const PER_FILE = 2;
/** Files the pool keeps objects for, the most recently used ones. */
const FILES_KEPT = 16;

interface Spare {
  stamp: string;
  object: BpfObject;
}

/** Opened objects by file, least recently used first. */
const spares = new Map<string, Spare[]>();
/** Files to open objects for when the main thread is free. */
const wanted = new Set<string>();
let refilling = false;

function stampOf(path: string): string | undefined {
  try {
    const st = statSync(path, { bigint: true });
    return `${st.dev}:${st.ino}:${st.size}:${st.mtimeNs}:${st.ctimeNs}`;
  } catch {
    return undefined;
  }
}

/**
 * An opened object of `path` (see BpfObject.open): one opened ahead if the file did not change
 * since, else opened now. The caller owns it. Another one is opened for the next call once the
 * main thread is free.
 */
export function openObject(path: string): BpfObject {
  const stamp = stampOf(path);
  const list = spares.get(path);
  let found: BpfObject | undefined;
  while (list && list.length > 0 && !found) {
    const spare = list.pop()!;
    if (spare.stamp === stamp) found = spare.object;
    else spare.object.close();
  }
  // Most recently used last.
  if (list) {
    spares.delete(path);
    spares.set(path, list);
  }
  wanted.add(path);
  if (!refilling) {
    refilling = true;
    setImmediate(refill);
  }
  return found ?? BpfObject.open(path);
}

/** Opens what the last takes used up; drops files beyond FILES_KEPT. */
function refill(): void {
  refilling = false;
  for (const path of wanted) {
    const stamp = stampOf(path);
    if (stamp === undefined) continue;
    let list = spares.get(path);
    if (!list) {
      list = [];
      spares.set(path, list);
    }
    try {
      while (list.length < PER_FILE) list.push({ stamp, object: BpfObject.open(path) });
    } catch {
      // Opened on the spot next time, which reports the error.
    }
  }
  wanted.clear();
  while (spares.size > FILES_KEPT) {
    const [oldest, list] = spares.entries().next().value!;
    for (const spare of list) spare.object.close();
    spares.delete(oldest);
  }
}

/** Closes every object opened ahead (for tests and shutdown; the pool fills again on use). */
export function drainObjectPool(): void {
  for (const list of spares.values()) for (const spare of list) spare.object.close();
  spares.clear();
  wanted.clear();
}
