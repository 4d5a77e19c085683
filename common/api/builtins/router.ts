import { z } from "zod";

/** Parameters of `router` (load-time settings). */
export const RouterParams = z.strictObject({
  families: z
    .array(z.enum(["ipv4", "ipv6"]))
    .min(1, "must name at least one of ipv4, ipv6")
    .max(2)
    .refine((list) => new Set(list).size === list.length, "must not name a family twice")
    .default(["ipv4", "ipv6"])
    .describe("Address families to forward; packets of the others go on to the stack."),
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
