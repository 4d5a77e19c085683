import type { RatelimitParams, RatelimitTables } from "../../../common/api/builtins/index.ts";
import { formatAddress } from "../../../common/net/ip.ts";
import {
  ADDR_SIZE,
  RATELIMIT_BUCKET_LAYOUT,
  RATELIMIT_MAX_SOURCES,
  decodeRatelimitBucket,
} from "./structs.ts";
import { BpfMapType, type BuiltinNf } from "./types.ts";

/** One source's bucket, as read from `ratelimit_state`. */
export interface RatelimitBucket {
  source: string;
  family: 4 | 6;
  /** GCRA theoretical arrival time of the next conforming packet (kernel monotonic ns). */
  tatNs: bigint;
}

/** Decode one `ratelimit_state` entry (key `union sluice_addr`, value `struct ratelimit_bucket`). */
export function decodeRatelimitEntry(key: Buffer, value: Buffer): RatelimitBucket {
  if (key.length !== ADDR_SIZE)
    throw new RangeError(`ratelimit key has ${key.length} bytes, expected ${ADDR_SIZE}`);
  const mapped = key.subarray(0, 12).equals(Buffer.from([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]));
  const family = mapped ? 4 : 6;
  return { source: formatAddress(key, family), family, tatNs: decodeRatelimitBucket(value).tatNs };
}

/** The built-in `ratelimit`. */
export const ratelimit: BuiltinNf<RatelimitParams, RatelimitTables> = {
  name: "ratelimit",
  entry: "nf/ratelimit/ratelimit.bpf.c",
  sourceDir: "nf/ratelimit",
  programs: { xdp: "ratelimit_xdp", tc: "ratelimit_tc" },
  rodata: (params) => [
    { variable: "ratelimit_rate", type: "u32", value: BigInt(params.rate) },
    { variable: "ratelimit_burst", type: "u32", value: BigInt(params.burst) },
  ],
  encodeTables: () => ({}),
  tableMaps: [],
  maps: {
    ratelimit_state: {
      type: BpfMapType.LRU_HASH,
      keySize: ADDR_SIZE,
      valueSize: RATELIMIT_BUCKET_LAYOUT.size,
      maxEntries: RATELIMIT_MAX_SOURCES,
      flags: 0,
    },
  },
};
