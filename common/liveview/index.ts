/**
 * The live view: graphs of every chain's traffic, with markers where revisions were switched or
 * rolled back and the problems read off them, served by `sluice run` and by the operator.
 */
export { HISTORY_POINTS, LiveHistory, MAP_NEAR_FULL, type LiveEvent } from "./history.ts";
export { LiveView, liveViewAssets, type LiveRoute, type LiveViewOptions } from "./server.ts";
export { gitCommitInfo } from "./commit.ts";
export { encodeReadings, NodeReadings } from "./wire.ts";
export type * from "./model.ts";
