/**
 * Real traffic between test namespaces.
 *
 * - {@link udpFlow} / {@link startUdpFlow}: a UDP sender in one namespace and a receiver in
 *   another (separate Node processes started with `nsenter --net=`, so the test process stays
 *   free to swap programs meanwhile). Packets carry a flow id and a sequence number; loss is
 *   counted by sequence number after a short drain.
 * - {@link ping}: ICMP echo from a namespace, through a raw socket opened inside it.
 *
 * Both are bounded in time: they fail with a clear error rather than hang.
 */
import { spawn, type ChildProcessWithoutNullStreams } from "node:child_process";
import { randomInt } from "node:crypto";
import { createInterface } from "node:readline";
import { setTimeout as sleep } from "node:timers/promises";
import koffi from "koffi";
import { netnsPath, withNetns } from "../../node-agent/src/netns/index.ts";
import { fixture, type TestScope } from "./harness.ts";

/** Where one side of a flow runs: a namespace (name or path) and an IPv4 or IPv6 address in it. */
export interface FlowEndpoint {
  /** Namespace name under /run/netns, or its path. */
  ns: string | { path: string };
  /** IPv4 or IPv6 address: the receiver binds it, the sender sends to the receiver's. */
  ip: string;
}

/** Options of {@link udpFlow}. */
export interface UdpFlowOptions {
  from: FlowEndpoint;
  to: FlowEndpoint;
  /** Packets to send. */
  count: number;
  /** Packets per second (this machine tops out near 100k/s between namespaces). */
  rate: number;
  /** UDP payload bytes (at least 8: flow id + sequence number); default 64. */
  payloadSize?: number;
  /** How long to wait after the last send for packets still on their way; default 300 ms. */
  drainMs?: number;
  /** UDP port the receiver binds; default: any free one. */
  port?: number;
}

/** What a flow saw. */
export interface UdpFlowResult {
  /** Packets the sender handed to the kernel successfully. */
  sent: number;
  /** Distinct sequence numbers that arrived. */
  received: number;
  /** Sent but never received (`sent - received`, by sequence number). */
  lost: number;
  /** Sends the sender's kernel refused (e.g. ENOBUFS); not counted in `sent`. */
  sendFailures: number;
  /** Packets that arrived more than once. */
  duplicates: number;
  /** Drops at the receiving socket (buffer full): loss caused by the receiver, not the path. */
  receiverDrops: number;
  /** First missing sequence numbers (up to 20), to tell a burst from scattered loss. */
  missingSample: number[];
  /** Sender's time from first to last send completion. */
  durationMs: number;
}

/** A flow in progress. */
export interface RunningUdpFlow {
  /** Waits for the sender to finish and the drain, stops the receiver and returns the counts. */
  done(): Promise<UdpFlowResult>;
  /** Kills both processes (idempotent); `done()` then rejects. */
  abort(): void;
}

const READY_TIMEOUT_MS = 10_000;

function nsPathOf(ns: FlowEndpoint["ns"]): string {
  return typeof ns === "string" ? netnsPath(ns) : ns.path;
}

/** A Node script running inside a namespace, talking in JSON lines. */
export interface NetnsScript {
  child: ChildProcessWithoutNullStreams;
  /**
   * The next JSON line the script printed; rejects after `timeoutMs`, or when the script ends
   * first (with its stderr). `what` names the line in those errors.
   */
  nextLine<T>(what: string, timeoutMs: number): Promise<T>;
  /** Writes one line to the script's stdin. */
  tell(line: string): void;
}

/**
 * Starts fixture `script` with Node inside namespace `ns` (a path); its stdout is read as JSON
 * lines. With `scope`, the script is killed (if still running) when the scope is disposed.
 */
export function spawnInNetns(
  ns: string,
  script: string,
  args: readonly (string | number)[],
  options: { scope?: TestScope } = {},
): NetnsScript {
  const child = spawn("nsenter", [`--net=${ns}`, process.execPath, fixture(script), ...args.map(String)], {
    stdio: ["pipe", "pipe", "pipe"],
  });
  options.scope?.defer(() => kill(child));
  let stderr = "";
  child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
  const lines: unknown[] = [];
  const waiters: (() => void)[] = [];
  let exited = false;
  createInterface({ input: child.stdout }).on("line", (line) => {
    lines.push(JSON.parse(line));
    waiters.splice(0).forEach((w) => w());
  });
  child.on("exit", () => {
    exited = true;
    waiters.splice(0).forEach((w) => w());
  });
  const nextLine = async <T>(what: string, timeoutMs: number): Promise<T> => {
    const deadline = Date.now() + timeoutMs;
    while (lines.length === 0) {
      if (exited)
        throw new Error(
          `${script} in ${ns} exited before ${what}: ${stderr.trim() || `code ${child.exitCode}`}`,
        );
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`${script} in ${ns}: no ${what} within ${timeoutMs} ms`);
      await Promise.race([new Promise<void>((r) => waiters.push(r)), sleep(left)]);
    }
    return lines.shift() as T;
  };
  return { child, nextLine, tell: (line) => child.stdin.write(`${line}\n`) };
}

function kill(child: ChildProcessWithoutNullStreams): void {
  if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
}

/**
 * Starts a flow and resolves once the receiver listens and the first packet is on its way, so
 * the caller can change the data plane while traffic runs, then `await flow.done()`.
 */
export async function startUdpFlow(options: UdpFlowOptions): Promise<RunningUdpFlow> {
  const { count, rate } = options;
  if (!(count >= 0 && rate > 0)) throw new RangeError("udpFlow: count must be >= 0 and rate > 0");
  const magic = randomInt(1, 0x7fffffff).toString(16);
  const receiver = spawnInNetns(nsPathOf(options.to.ns), "udp-receiver.mjs", [
    options.to.ip,
    count,
    magic,
    ...(options.port ? [options.port] : []),
  ]);
  let sender: NetnsScript | undefined;
  const abort = () => {
    kill(receiver.child);
    if (sender) kill(sender.child);
  };
  try {
    const { port } = await receiver.nextLine<{ port: number }>("ready line", READY_TIMEOUT_MS);
    sender = spawnInNetns(nsPathOf(options.from.ns), "udp-sender.mjs", [
      options.to.ip,
      port,
      count,
      rate,
      options.payloadSize ?? 64,
      magic,
    ]);
    await sender.nextLine("start line", READY_TIMEOUT_MS);
  } catch (err) {
    abort();
    throw err;
  }
  const running = sender;
  const sendBudgetMs = (count / rate) * 1000 * 2 + 10_000;
  return {
    abort,
    async done() {
      try {
        const sent = await running.nextLine<{ sent: number; failedCount: number; durationMs: number }>(
          "result",
          sendBudgetMs,
        );
        await sleep(options.drainMs ?? 300);
        receiver.child.stdin.write("stop\n");
        const got = await receiver.nextLine<{
          received: number;
          duplicates: number;
          socketDrops: number;
          missingSample: number[];
        }>("result", READY_TIMEOUT_MS);
        return {
          sent: sent.sent,
          received: got.received,
          lost: sent.sent - got.received,
          sendFailures: sent.failedCount,
          duplicates: got.duplicates,
          receiverDrops: got.socketDrops,
          missingSample: got.missingSample,
          durationMs: sent.durationMs,
        };
      } finally {
        abort();
      }
    },
  };
}

/** Sends `count` numbered UDP packets at `rate` from one namespace to another and counts what arrived. */
export async function udpFlow(options: UdpFlowOptions): Promise<UdpFlowResult> {
  return (await startUdpFlow(options)).done();
}

// ---------------------------------------------------------------------------------------------
// ping over a raw ICMP socket: no ping binary needed, and the socket is made inside the
// namespace, then used from outside (a socket keeps the namespace it was created in).

/** libc calls for raw sockets, shared by the kernel tests that capture or ping. */
const libc = koffi.load("libc.so.6");
export const socketFn = libc.func("int socket(int domain, int type, int protocol)") as (
  d: number,
  t: number,
  p: number,
) => number;
const sendtoFn = libc.func(
  "intptr_t sendto(int fd, void *buf, size_t len, int flags, void *addr, uint32_t addrlen)",
) as (fd: number, buf: Buffer, len: number, flags: number, addr: Buffer, addrlen: number) => number;
export const recvFn = libc.func("intptr_t recv(int fd, void *buf, size_t len, int flags)") as (
  fd: number,
  buf: Buffer,
  len: number,
  flags: number,
) => number;
export const closeFn = libc.func("int close(int fd)") as (fd: number) => number;

const AF_INET = 2;
export const SOCK_RAW = 3;
export const SOCK_NONBLOCK = 0o4000;
export const SOCK_CLOEXEC = 0o2000000;
const IPPROTO_ICMP = 1;
export const MSG_DONTWAIT = 0x40;

/** Result of {@link ping}. */
export interface PingResult {
  sent: number;
  received: number;
  lost: number;
}

/** Options of {@link ping}. */
export interface PingOptions {
  /** Time between echo requests; default 20 ms. */
  intervalMs?: number;
  /** How long to wait for each reply; default 1000 ms. */
  timeoutMs?: number;
}

function icmpChecksum(buf: Buffer): number {
  let sum = 0;
  for (let i = 0; i + 1 < buf.length; i += 2) sum += buf.readUInt16BE(i);
  if (buf.length % 2) sum += (buf[buf.length - 1] ?? 0) << 8;
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return ~sum & 0xffff;
}

/**
 * Sends `count` ICMP echo requests from namespace `ns` to `addr`, one at a time, and counts the
 * replies (each awaited up to `timeoutMs`).
 */
export async function ping(
  ns: string | { path: string },
  addr: string,
  count: number,
  options: PingOptions = {},
): Promise<PingResult> {
  const intervalMs = options.intervalMs ?? 20;
  const timeoutMs = options.timeoutMs ?? 1000;
  const fd = withNetns(nsPathOf(ns), () =>
    socketFn(AF_INET, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_ICMP),
  );
  if (fd < 0) throw new Error(`ping: raw socket in ${nsPathOf(ns)}: errno ${koffi.errno()}`);
  const id = randomInt(1, 0xffff);
  const dest = Buffer.alloc(16);
  dest.writeUInt16LE(AF_INET, 0);
  Buffer.from(addr.split(".").map(Number)).copy(dest, 4);
  const reply = Buffer.alloc(2048);
  let received = 0;
  try {
    for (let seq = 1; seq <= count; seq++) {
      const request = Buffer.alloc(64);
      request.writeUInt8(8, 0); // echo request
      request.writeUInt16BE(id, 4);
      request.writeUInt16BE(seq, 6);
      request.writeUInt16BE(icmpChecksum(request), 2);
      if (sendtoFn(fd, request, request.length, 0, dest, dest.length) < 0) {
        throw new Error(`ping ${addr} from ${nsPathOf(ns)}: sendto: errno ${koffi.errno()}`);
      }
      const deadline = Date.now() + timeoutMs;
      let answered = false;
      while (!answered && Date.now() < deadline) {
        const n = recvFn(fd, reply, reply.length, MSG_DONTWAIT);
        if (n < 0) {
          await sleep(1);
          continue;
        }
        const ihl = ((reply[0] ?? 0) & 0x0f) * 4;
        answered =
          n >= ihl + 8 &&
          reply[ihl] === 0 &&
          reply.readUInt16BE(ihl + 4) === id &&
          reply.readUInt16BE(ihl + 6) === seq;
      }
      if (answered) received++;
      if (seq < count) await sleep(intervalMs);
    }
  } finally {
    closeFn(fd);
  }
  return { sent: count, received, lost: count - received };
}
