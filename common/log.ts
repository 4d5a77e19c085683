import { pino, type Logger } from "pino";

/**
 * The one root logger of a sluice process. Parts derive child loggers from it with the context
 * they work in (`{ kind, namespace, name, revision }` in the operator, `{ node, ifname, chain }`
 * in the agent) and log errors as `log.error({ err }, msg)`.
 *
 * The level comes from `SLUICE_LOG_LEVEL` (default `info`; tests default to `silent` so that
 * vitest output stays readable unless a test run asks for logs).
 */
export const rootLogger: Logger = pino({
  name: "sluice",
  level: process.env.SLUICE_LOG_LEVEL ?? (process.env.VITEST ? "silent" : "info"),
});

export type { Logger };
