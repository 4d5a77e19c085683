/**
 * What a kernel test of built-in chains sets up: the built-in NFs compiled once per test file,
 * and per test a veth pair whose B end a chain manager serves as the chart runs the agent.
 *
 * Both ends of the pair know each other's MAC for good, so no ARP crosses a chain on B's end and
 * its counters equal exactly the packets a test sent.
 */
import { afterAll, beforeAll } from "vitest";
import { startChartManager, type ChartManager } from "./chart-manager.ts";
import { compileBuiltins, makeCacheDir, staticNeighbors, type BuiltinObjects } from "./fixtures/chains.ts";
import {
  createBpffsDir,
  createVethNetwork,
  testScope,
  type BpffsDir,
  type TestNetns,
  type TestScope,
  type VethNetwork,
  type VethNetworkOptions,
} from "./harness.ts";

/**
 * The built-in NFs and the root program, compiled in `beforeAll` into a cache that `afterAll`
 * removes. Call it at the top of a test file; read the objects inside hooks and tests (reading
 * them earlier throws). `cacheDir` is there at once, for a file's own objects compiled in a
 * later `beforeAll`.
 */
export function useBuiltinObjects(): BuiltinObjects {
  const cache = makeCacheDir();
  let compiled: BuiltinObjects | undefined;
  beforeAll(async () => {
    compiled = await compileBuiltins(cache.path);
  });
  afterAll(() => cache.remove());
  const get = (): BuiltinObjects => {
    if (!compiled) throw new Error("the built-in NFs are compiled in beforeAll: read them in a hook or test");
    return compiled;
  };
  return {
    cacheDir: cache.path,
    get root() {
      return get().root;
    },
    get nf() {
      return get().nf;
    },
  };
}

/** Options of a chart-run manager in a test. */
export interface NodeManagerOptions {
  /** Per-function time of 1 in this many packets; absent: off. */
  timeSample?: number;
}

/** A chain manager serving one namespace, with its own bpffs directory. */
export interface NodeManager {
  bpffs: BpffsDir;
  manager: ChartManager;
  /** A fresh manager on the same bpffs directory and namespace: another agent process. */
  startManager(): Promise<ChartManager>;
}

/**
 * Starts chart-run chain managers in `netns` (the node's namespace) on `bpffs`, each closed when
 * `scope` is disposed.
 */
export function chartManagerStarter(
  scope: TestScope,
  netns: TestNetns,
  bpffs: BpffsDir,
  objects: BuiltinObjects,
  options: NodeManagerOptions = {},
): () => Promise<ChartManager> {
  return () =>
    startChartManager({
      root: bpffs.path,
      netns: netns.path,
      rootObjectPath: objects.root,
      ...(options.timeSample ? { timeSample: options.timeSample } : {}),
      scope,
    });
}

/**
 * Starts a chart-run chain manager in `netns` on a fresh bpffs directory; both are undone when
 * `scope` is disposed.
 */
export async function startNodeManager(
  scope: TestScope,
  netns: TestNetns,
  objects: BuiltinObjects,
  options: NodeManagerOptions = {},
): Promise<NodeManager> {
  const bpffs = createBpffsDir(scope);
  const startManager = chartManagerStarter(scope, netns, bpffs, objects, options);
  return { bpffs, manager: await startManager(), startManager };
}

/** A veth pair with static neighbours and a bpffs directory for the chains on B's end. */
export interface ChainBed {
  scope: TestScope;
  net: VethNetwork;
  bpffs: BpffsDir;
}

/** Options of {@link createChainBed}. */
export interface ChainBedOptions {
  /** The scope that undoes it all; default: one disposed when the current test finishes. */
  scope?: TestScope;
  veth?: VethNetworkOptions;
}

/** Creates a {@link ChainBed}, with no manager yet (see {@link createChainTestbed}). */
export async function createChainBed(options: ChainBedOptions = {}): Promise<ChainBed> {
  const scope = options.scope ?? testScope();
  const net = await createVethNetwork(scope, options.veth);
  await staticNeighbors(net);
  return { scope, net, bpffs: createBpffsDir(scope) };
}

/** A chain bed whose B namespace a chart-run manager serves. */
export interface ChainTestbed extends ChainBed, NodeManager {}

/**
 * A veth pair with static neighbours and a chart-run manager for namespace B's end, all undone
 * when the current test finishes (or `options.scope` is disposed).
 */
export async function createChainTestbed(
  objects: BuiltinObjects,
  options: ChainBedOptions & NodeManagerOptions = {},
): Promise<ChainTestbed> {
  const bed = await createChainBed(options);
  const startManager = chartManagerStarter(bed.scope, bed.net.b.ns, bed.bpffs, objects, options);
  return { ...bed, manager: await startManager(), startManager };
}
