import type { RouterParams, RouterTables } from "../../../common/api/builtins/index.ts";
import type { BuiltinNf } from "./types.ts";

/** `router_families` bits (`ROUTER_IPV4` 1, `ROUTER_IPV6` 2 in `bpf/nf/router/router.h`). */
const FAMILY_BITS = { both: 3n, ipv4: 1n, ipv6: 2n } as const;

/** The built-in `router`: forwards with bpf_fib_lookup and a redirect; the rest goes to the stack. */
export const router: BuiltinNf<RouterParams, RouterTables> = {
  name: "router",
  entry: "nf/router/router.bpf.c",
  sourceDir: "nf/router",
  programs: { xdp: "router_xdp", tc: "router_tc" },
  rodata: (params) => [
    {
      variable: "router_families",
      type: "u32",
      value: FAMILY_BITS[params.families],
    },
    { variable: "router_decrement_ttl", type: "u32", value: params.decrementTtl ? 1n : 0n },
  ],
  encodeTables: () => ({}),
  tableMaps: [],
  maps: {},
};
