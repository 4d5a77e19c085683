import { z } from "zod";

/** Parameters of `router` (load-time settings). */
export const RouterParams = z.strictObject({
  families: z
    .enum(["both", "ipv4", "ipv6"])
    .default("both")
    .describe("Address families to forward: both, ipv4 or ipv6; packets of the other go on to the stack."),
  decrementTtl: z
    .boolean()
    .default(true)
    .describe(
      "Decrement the IPv4 TTL / IPv6 hop limit of forwarded packets (packets at 1 or below go to the stack, which answers with ICMP time exceeded). false forwards them unchanged.",
    ),
});
export type RouterParams = z.infer<typeof RouterParams>;

/** `router` has no runtime tables: routes and neighbours come from the kernel's FIB. */
export const RouterTables = z.strictObject({});
export type RouterTables = z.infer<typeof RouterTables>;
