/**
 * The entry of a fleet worker process (see `simulated-agents.ts`): starts the simulated agents
 * it is given and answers the parent's requests over the IPC channel. Started by `fleet.ts` with
 * `node --import tsx`, so the agent code is the sources, not a copy.
 */
import { mkdir } from "node:fs/promises";
import { KubeConfig } from "@kubernetes/client-node";
import { NODE_LABEL } from "../../../common/api/index.ts";
import { KubeClient } from "../../../common/kube/client.ts";
import { KubeStore } from "../../../common/kube/store.ts";
import { rootLogger } from "../../../common/log.ts";
import { NodeAgent } from "../../../node-agent/src/agent/agent.ts";
import {
  RecordingDataPlane,
  rssOf,
  type RecorderState,
  type SimulatedAgentSpec,
  type WorkerReply,
  type WorkerRequest,
} from "./simulated-agents.ts";

const log = rootLogger.child({ component: "simulated-agents" });
const agents: { agent: NodeAgent; store: KubeStore }[] = [];
const state: RecorderState = { switchMs: 50, history: [], failing: new Map(), seenRevisions: new Set() };

/** Agents started at once: each lists and opens a watch; a few at a time keeps start-up smooth. */
const START_CONCURRENCY = 16;

async function start(request: Extract<WorkerRequest, { type: "start" }>): Promise<WorkerReply> {
  const began = Date.now();
  state.switchMs = request.switchMs;
  await mkdir(request.cacheDir, { recursive: true });
  const queue = [...request.agents];
  const startOne = async (spec: SimulatedAgentSpec): Promise<void> => {
    const kc = new KubeConfig();
    const user = `agent-${spec.node}`;
    kc.loadFromOptions({
      clusters: [{ name: "fleet", server: request.server, caData: request.caData, skipTLSVerify: false }],
      users: [{ name: user, token: spec.token }],
      contexts: [{ name: user, cluster: "fleet", user }],
      currentContext: user,
    });
    const agentLog = log.child({ node: spec.node });
    // As `sluice agent` builds it: its own node's NodeChains only.
    const store = new KubeStore(new KubeClient(kc), agentLog, {
      labelSelectors: { NodeChain: `${NODE_LABEL}=${spec.node}` },
    });
    const agent = new NodeAgent({
      nodeName: spec.node,
      store,
      dataPlane: new RecordingDataPlane(spec.node, state),
      cacheDir: request.cacheDir,
      log: agentLog,
    });
    await agent.start();
    agents.push({ agent, store });
  };
  await Promise.all(
    Array.from({ length: START_CONCURRENCY }, async () => {
      for (let spec = queue.shift(); spec; spec = queue.shift()) await startOne(spec);
    }),
  );
  return { type: "started", agents: agents.length, ms: Date.now() - began };
}

function memoryMb(field: "VmRSS" | "VmHWM"): number {
  return rssOf(process.pid, field);
}

async function handle(request: WorkerRequest): Promise<WorkerReply | undefined> {
  switch (request.type) {
    case "start":
      return start(request);
    case "fail":
      for (const node of request.nodes) state.failing.set(node, new Set(state.seenRevisions));
      return { type: "failArmed" };
    case "history":
      return {
        type: "history",
        switches: state.history,
        rssMb: memoryMb("VmRSS"),
        peakRssMb: memoryMb("VmHWM"),
      };
    case "stop":
      await Promise.all(agents.map(async ({ agent, store }) => (await agent.stop(), await store.stop())));
      process.exit(0);
  }
}

if (process.send) {
  process.on("message", (request: WorkerRequest) => {
    handle(request).then(
      (reply) => reply && process.send!(reply),
      (err: unknown) =>
        process.send!({ type: "error", message: err instanceof Error ? err.stack : String(err) }),
    );
  });
  // The parent gone, nothing here has a purpose.
  process.on("disconnect", () => process.exit(0));
}
