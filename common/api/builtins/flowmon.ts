import { z } from "zod";

/** `flowmon` has no parameters. */
export const FlowmonParams = z.strictObject({});
export type FlowmonParams = z.infer<typeof FlowmonParams>;

/** `flowmon` has no runtime tables. */
export const FlowmonTables = z.strictObject({});
export type FlowmonTables = z.infer<typeof FlowmonTables>;
