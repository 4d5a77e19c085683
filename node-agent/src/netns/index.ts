/**
 * Network namespaces, entered in-process.
 *
 * A network namespace belongs to a thread. `withNetns` moves the calling (main) thread into a
 * namespace with setns(2), runs a synchronous function there and always moves back, so that
 * netlink, `if_nametoindex`, bpf_link attachment and socket creation happen inside while bpffs
 * pins, files and everything else stay as they are. `ip netns exec` is not an option: it
 * remounts /sys in a new mount namespace, hiding /sys/fs/bpf.
 */
import { closeSync, openSync } from "node:fs";
import koffi from "koffi";
import { Reason } from "../../../common/api/conditions.ts";
import { SluiceError } from "../../../common/errors.ts";

const libc = koffi.load("libc.so.6");
const setns = libc.func("int setns(int fd, int nstype)") as (fd: number, nstype: number) => number;
const ifNameToIndex = libc.func("unsigned int if_nametoindex(const char *ifname)") as (
  name: string,
) => number;

const CLONE_NEWNET = 0x40000000;

/** Entering or leaving a network namespace failed, or an interface does not exist. */
export class NetnsError extends SluiceError {
  override name = "NetnsError";
  /** An interface may appear (a pod's veth, a link coming up): retried. */
  constructor(message: string, options?: { cause?: unknown }) {
    super(Reason.InterfaceNotFound, message, { retry: "backoff", cause: options?.cause });
  }
}

/** `/run/netns/<name>` for a name made by `ip netns add`; a path (anything with `/`) as is. */
export function netnsPath(nameOrPath: string): string {
  return nameOrPath.includes("/") ? nameOrPath : `/run/netns/${nameOrPath}`;
}

/**
 * Runs `fn` inside the network namespace `nameOrPath` (a name under /run/netns or a path such as
 * `/proc/<pid>/ns/net`) and returns its result, always returning to the caller's namespace,
 * also when `fn` throws.
 *
 * `fn` must be synchronous: an `await` would let unrelated code run inside the namespace, and
 * the rest of an async function would run outside it. Sockets and fds created inside keep their
 * namespace after the return.
 */
export function withNetns<T>(nameOrPath: string, fn: () => T): T {
  const path = netnsPath(nameOrPath);
  let target: number;
  try {
    target = openSync(path, "r");
  } catch (err) {
    throw new NetnsError(`network namespace ${nameOrPath}: cannot open ${path}: ${(err as Error).message}`);
  }
  let home = -1;
  try {
    home = openSync("/proc/thread-self/ns/net", "r");
    if (setns(target, CLONE_NEWNET) !== 0) {
      throw new NetnsError(`network namespace ${nameOrPath}: setns: errno ${koffi.errno()}`);
    }
    let outcome: { ok: true; value: T } | { ok: false; error: unknown };
    try {
      outcome = { ok: true, value: fn() };
    } catch (error) {
      outcome = { ok: false, error };
    }
    if (setns(home, CLONE_NEWNET) !== 0) {
      // Staying in the wrong namespace would silently misroute every later call: this error wins.
      throw new NetnsError(
        `cannot return from network namespace ${nameOrPath}: setns: errno ${koffi.errno()}`,
      );
    }
    if (!outcome.ok) throw outcome.error;
    if (outcome.value instanceof Promise) {
      outcome.value.catch(() => undefined);
      throw new TypeError("withNetns needs a synchronous function: the namespace is left when it returns");
    }
    return outcome.value;
  } finally {
    closeSync(target);
    if (home >= 0) closeSync(home);
  }
}

/**
 * The index of interface `ifname` (if_nametoindex) in the current network namespace, or in
 * `netns` when given. Throws {@link NetnsError} when there is no such interface.
 */
export function ifIndex(ifname: string, netns?: string): number {
  const index = netns === undefined ? ifNameToIndex(ifname) : withNetns(netns, () => ifNameToIndex(ifname));
  if (index === 0)
    throw new NetnsError(`no interface ${ifname}${netns ? ` in network namespace ${netns}` : ""}`);
  return index;
}

const IfNameIndex = koffi.struct("sluice_if_nameindex", { if_index: "uint", if_name: "char *" });
const ifNameIndex = libc.func("void *if_nameindex(void)") as () => unknown;
const ifFreeNameIndex = libc.func("void if_freenameindex(void *ptr)") as (ptr: unknown) => void;

/**
 * Names of every interface in the current network namespace, or in `netns` when given
 * (if_nameindex(3), which asks the kernel over netlink, so it sees the namespace the thread is
 * in — unlike /sys/class/net, which shows the namespace sysfs was mounted in).
 */
export function listInterfaces(netns?: string): string[] {
  const read = (): string[] => {
    const head = ifNameIndex();
    if (!head) throw new NetnsError(`if_nameindex: errno ${koffi.errno()}`);
    try {
      const names: string[] = [];
      for (let i = 0; ; i++) {
        const entry = koffi.decode(head, i * koffi.sizeof(IfNameIndex), IfNameIndex) as {
          if_index: number;
          if_name: string | null;
        };
        if (entry.if_index === 0) break;
        if (entry.if_name) names.push(entry.if_name);
      }
      return names;
    } finally {
      ifFreeNameIndex(head);
    }
  };
  return netns === undefined ? read() : withNetns(netns, read);
}
