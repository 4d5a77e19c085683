/** The numbered UDP flow from h1 to h2, and the probe beside it, counted at both ends. */
import type { ChildProcess } from "node:child_process";
import { randomInt } from "node:crypto";
import { createInterface } from "node:readline";
import { setTimeout as sleep } from "node:timers/promises";
import {
  FLOW_PORT,
  FLOW_SCRIPT,
  H2,
  PROBE_PORT,
  PROBE_RATE,
  start,
  stopProcess,
  type Cleanup,
} from "./support.ts";
import type { Topology } from "./topology.ts";

/** Latest counts of the flow, as its two ends report them. */
export interface FlowProgress {
  sent: number;
  received: number;
  /** Sequence numbers below the highest received that have not arrived. */
  missing: number;
}

/** The final counts of the flow. */
export interface FlowResult {
  sent: number;
  received: number;
  lost: number;
  failedSends: number;
  receiverDrops: number;
  duplicates: number;
  missingSample: number[];
  probes: number;
}

/** The running flow: its progress as it goes, and its end. */
export interface Flow {
  progress: FlowProgress;
  stop(): Promise<FlowResult>;
}

/** JSON lines of a child, with a way to wait for the next one that matches. */
function lines(child: ChildProcess, onLine: (obj: Record<string, unknown>) => void) {
  let stderr = "";
  child.stderr?.on("data", (c: Buffer) => (stderr = (stderr + c.toString()).slice(-4000)));
  const waiters: Array<{
    test: (o: Record<string, unknown>) => boolean;
    resolve: (o: Record<string, unknown>) => void;
  }> = [];
  createInterface({ input: child.stdout! }).on("line", (line) => {
    let obj: Record<string, unknown>;
    try {
      obj = JSON.parse(line) as Record<string, unknown>;
    } catch {
      return;
    }
    onLine(obj);
    for (const w of [...waiters])
      if (w.test(obj)) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(obj);
      }
  });
  const next = (what: string, test: (o: Record<string, unknown>) => boolean, timeoutMs = 10_000) =>
    new Promise<Record<string, unknown>>((resolveLine, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`traffic: no ${what} within ${timeoutMs} ms: ${stderr}`)),
        timeoutMs,
      );
      child.once("exit", () => reject(new Error(`traffic: process ended before ${what}: ${stderr.trim()}`)));
      waiters.push({
        test,
        resolve: (o) => {
          clearTimeout(timer);
          resolveLine(o);
        },
      });
    });
  return { next };
}

/** Starts the receiver in h2, then the sender in h1, at `rate` packets per second. */
export async function startFlow(t: Topology, rate: number, undo: Cleanup): Promise<Flow> {
  const magic = randomInt(1, 0x7fffffff).toString(16);
  const progress: FlowProgress = { sent: 0, received: 0, missing: 0 };
  const receiver = start([process.execPath, FLOW_SCRIPT, "recv", H2.ip, String(FLOW_PORT), magic], {
    netns: t.h2,
  });
  undo.add("traffic receiver", () => stopProcess(receiver, 1000));
  const recv = lines(receiver, (o) => {
    if (typeof o.received === "number") progress.received = o.received;
    if (typeof o.highest === "number") progress.missing = Math.max(0, o.highest + 1 - progress.received);
  });
  await recv.next("receiver ready", (o) => o.ready === true);
  const sender = start(
    [
      process.execPath,
      FLOW_SCRIPT,
      "send",
      H2.ip,
      String(FLOW_PORT),
      String(rate),
      magic,
      String(PROBE_PORT),
      String(PROBE_RATE),
    ],
    { netns: t.h1 },
  );
  undo.add("traffic sender", () => stopProcess(sender, 1000));
  const send = lines(sender, (o) => {
    if (typeof o.sent === "number") progress.sent = o.sent;
  });
  await send.next("sender start", (o) => o.started === true);
  let result: Promise<FlowResult> | undefined;
  return {
    progress,
    stop: () =>
      (result ??= (async () => {
        const sentDone = send.next("sender result", (o) => o.done === true);
        sender.stdin?.end("stop\n");
        const s = await sentDone;
        // Packets still on their way to h2.
        await sleep(500);
        const recvDone = recv.next("receiver result", (o) => o.done === true);
        receiver.stdin?.end("stop\n");
        const r = await recvDone;
        const sent = Number(s.sent);
        const received = Number(r.received);
        return {
          sent,
          received,
          lost: sent - received,
          failedSends: Number(s.failed),
          receiverDrops: Number(r.socketDrops),
          duplicates: Number(r.duplicates),
          missingSample: r.missingSample as number[],
          probes: Number(s.probes),
        };
      })()),
  };
}
