/**
 * The ServiceChain controller: planning (resolve functions, select nodes, one NodeChain per
 * node) and progressive rollout. Written against the Store interface, so the same code drives a
 * cluster and a single host.
 */
export { reconcileServiceChain, serviceChainKeysFor, type ServiceChainDeps } from "./reconciler.ts";
export {
  canonicalJson,
  nodeChainName,
  nodeLabelValue,
  planRevision,
  resolvePlan,
  selectNodes,
  REVISION_LENGTH,
  type NodeInfo,
  type PlanInputs,
  type PlanResult,
} from "./plan.ts";
export {
  decideRollout,
  nodeHealth,
  resolveMaxUnavailable,
  type NodeChainState,
  type NodeHealth,
  type RolloutDecision,
  type RolloutInput,
  type RolloutPhase,
} from "./rollout.ts";
