/**
 * The fleet simulation's agents: a worker process (`simulated-agents-worker.ts`) runs many node
 * agents made of the real agent code (`NodeAgent`: its own node's NodeChains only, through a store with the node's label selector,
 * authenticated with a token bound to that Node; artifacts fetched by digest and compiled once
 * per process through the shared cache), each on a *simulated* data plane: a recorder that stands
 * in for the kernel, takes a set time per switch, fails on chosen nodes, and timestamps the start
 * and end of every switch. The parent talks to it over the IPC channel (see {@link WorkerRequest}).
 */
import { readFileSync } from "node:fs";
import { Reason } from "../../../common/api/index.ts";
import { SluiceError } from "../../../common/errors.ts";
import type { DataPlane, DataPlaneResult } from "../../../node-agent/src/agent/agent.ts";
import type { ChainSpec } from "../../../node-agent/src/chain/spec.ts";

/** One switch as the simulated data plane recorded it (epoch milliseconds). */
export interface RecordedSwitch {
  node: string;
  revision: string;
  start: number;
  end: number;
  ok: boolean;
}

/** Identity and place of one simulated agent. */
export interface SimulatedAgentSpec {
  node: string;
  /** ServiceAccount token bound to the Node (TokenRequest), as the chart's agent pod has. */
  token: string;
}

/** What the parent asks a worker. */
export type WorkerRequest =
  | {
      type: "start";
      server: string;
      /** The API server's CA, base64 (kubeconfig `certificate-authority-data`). */
      caData: string;
      agents: SimulatedAgentSpec[];
      cacheDir: string;
      switchMs: number;
    }
  /** From now on, switches of `nodes` to a revision this worker has not run before fail. */
  | { type: "fail"; nodes: string[] }
  | { type: "history" }
  | { type: "stop" };

/** What a worker answers. */
export type WorkerReply =
  | { type: "started"; agents: number; ms: number }
  | { type: "failArmed" }
  | { type: "history"; switches: RecordedSwitch[]; rssMb: number; peakRssMb: number }
  | { type: "error"; message: string };

/** The simulated failure: a stalling load error, as a verifier rejection would be. */
export class SimulatedSwitchError extends SluiceError {
  override name = "SimulatedSwitchError";
}

/** Shared by the recorders of one worker. */
export interface RecorderState {
  switchMs: number;
  history: RecordedSwitch[];
  /** Nodes that fail every revision not in `knownRevisions` at the time they were chosen. */
  failing: Map<string, Set<string>>;
  /** Every revision any recorder of this worker switched to. */
  seenRevisions: Set<string>;
}

/**
 * The simulated data plane of one node: no kernel object is touched. A switch takes
 * `switchMs`, is recorded with its start and end, and fails on a chosen node.
 */
export class RecordingDataPlane implements DataPlane {
  constructor(
    private readonly node: string,
    private readonly state: RecorderState,
  ) {}

  async apply(spec: ChainSpec): Promise<DataPlaneResult> {
    const start = Date.now();
    await new Promise((ok) => setTimeout(ok, this.state.switchMs));
    const known = this.state.failing.get(this.node);
    const ok = !known || known.has(spec.revision);
    this.state.history.push({ node: this.node, revision: spec.revision, start, end: Date.now(), ok });
    if (!ok) {
      throw new SimulatedSwitchError(
        Reason.LoadFailed,
        `simulated data plane: switch to revision ${spec.revision} fails on this node`,
        { retry: "stall" },
      );
    }
    this.state.seenRevisions.add(spec.revision);
    return { revision: spec.revision, programIds: [], attachedInterfaces: spec.interfaces };
  }

  adopt(): Promise<Array<{ name: string; revision: string }>> {
    return Promise.resolve([]);
  }

  remove(): Promise<void> {
    return Promise.resolve();
  }
}

/** `VmRSS` (now) or `VmHWM` (peak) of process `pid`, in MiB. */
export function rssOf(pid: number, field: "VmRSS" | "VmHWM"): number {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const kb = Number(new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(status)?.[1] ?? "0");
  return Math.round((kb / 1024) * 10) / 10;
}
