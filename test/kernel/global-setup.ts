/**
 * Global setup of the kernel test project: checks that this machine can run real BPF and says
 * exactly what is missing if it cannot. Kernel tests never skip: a missing prerequisite fails
 * the run loudly. It also removes namespaces and pins left behind by test processes that died.
 */
import { execFileSync } from "node:child_process";
import { accessSync, constants, existsSync, mkdirSync, readdirSync, rmSync, statfsSync } from "node:fs";
import { delimiter, join } from "node:path";
import koffi from "koffi";

/** Parent of every test's bpffs subtree. */
export const BPFFS_TEST_ROOT = "/sys/fs/bpf/sluice-test";
/** Prefix of network namespace names made by the harness (`sltest-<pid>-<n>-<label>`). */
export const NETNS_PREFIX = "sltest-";

const BPF_FS_MAGIC = 0xcafe4a11;

function onPath(binary: string): boolean {
  return (process.env.PATH ?? "").split(delimiter).some((dir) => {
    try {
      accessSync(join(dir, binary), constants.X_OK);
      return true;
    } catch {
      return false;
    }
  });
}

/** Each prerequisite: what it is, and whether this machine has it. */
function missingPrerequisites(): string[] {
  const missing: string[] = [];
  if (process.getuid?.() !== 0) missing.push("root privileges (run the kernel tests as root)");
  let bpffs = false;
  try {
    bpffs = statfsSync("/sys/fs/bpf").type === BPF_FS_MAGIC;
  } catch {
    bpffs = false;
  }
  if (!bpffs) missing.push("bpffs mounted at /sys/fs/bpf (mount -t bpf bpf /sys/fs/bpf)");
  if (!onPath("clang")) missing.push("clang on PATH (Debian package clang)");
  try {
    koffi.load("libbpf.so.1");
  } catch {
    missing.push("libbpf.so.1 (Debian package libbpf1 / libbpf-dev)");
  }
  if (!existsSync("/usr/include/bpf/bpf_helpers.h"))
    missing.push("libbpf headers /usr/include/bpf (Debian package libbpf-dev)");
  if (!existsSync("/sys/kernel/btf/vmlinux"))
    missing.push("kernel BTF at /sys/kernel/btf/vmlinux (a kernel built with CONFIG_DEBUG_INFO_BTF=y)");
  if (!onPath("ip")) missing.push("ip on PATH (Debian package iproute2)");
  if (!onPath("nsenter")) missing.push("nsenter on PATH (Debian package util-linux)");
  return missing;
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

/**
 * Removes namespaces and bpffs directories left by test processes that no longer run (a crash
 * or a killed run skips cleanups); those of running processes are left alone, because other
 * test runs may share the machine. Returns what was removed.
 */
export function removeStaleTestObjects(): string[] {
  const removed: string[] = [];
  const ownerDead = (name: string) => {
    const pid = Number(/^(\d+)-/.exec(name)?.[1]);
    return Number.isInteger(pid) && pid > 0 && !processAlive(pid);
  };
  const list = (dir: string) => (existsSync(dir) ? readdirSync(dir) : []);
  for (const ns of list("/run/netns")) {
    if (ns.startsWith(NETNS_PREFIX) && ownerDead(ns.slice(NETNS_PREFIX.length))) {
      try {
        execFileSync("ip", ["netns", "del", ns], { stdio: "ignore" });
        removed.push(`netns ${ns}`);
      } catch {
        // already gone
      }
    }
  }
  for (const dir of list(BPFFS_TEST_ROOT)) {
    if (ownerDead(dir)) {
      rmSync(join(BPFFS_TEST_ROOT, dir), { recursive: true, force: true });
      removed.push(`bpffs ${dir}`);
    }
  }
  return removed;
}

/** vitest global setup: fail with the list of what is missing, else clean up stale leftovers. */
export default function setup(): void {
  const missing = missingPrerequisites();
  if (missing.length > 0) {
    throw new Error(`kernel tests cannot run on this machine; missing:\n  - ${missing.join("\n  - ")}`);
  }
  removeStaleTestObjects();
  mkdirSync(BPFFS_TEST_ROOT, { recursive: true });
}
