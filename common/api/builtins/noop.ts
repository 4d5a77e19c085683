import { z } from "zod";

/** `noop` has no parameters. */
export const NoopParams = z.strictObject({});
export type NoopParams = z.infer<typeof NoopParams>;

/** `noop` has no runtime tables. */
export const NoopTables = z.strictObject({});
export type NoopTables = z.infer<typeof NoopTables>;
