import { z } from "zod";

/** Parameters of `ratelimit` (load-time settings). */
export const RatelimitParams = z.strictObject({
  rate: z
    .number()
    .int()
    .min(1)
    .max(1_000_000_000)
    .default(1000)
    .describe("Average packets per second each source address may send."),
  burst: z
    .number()
    .int()
    .min(1)
    .max(1_000_000)
    .default(100)
    .describe("Packets a source may send back to back before the rate applies."),
});
export type RatelimitParams = z.infer<typeof RatelimitParams>;

/** `ratelimit` has no runtime tables. */
export const RatelimitTables = z.strictObject({});
export type RatelimitTables = z.infer<typeof RatelimitTables>;
