import { createHash } from "node:crypto";
import {
  backendName,
  healthApplies,
  L4LB_MAX_BACKENDS,
  L4LB_RING_MAX,
  type L4lbHealth,
  type L4lbParams,
  type L4lbService,
  type L4lbTables,
} from "../../../common/api/builtins/index.ts";
import { formatAddress, parseAddress } from "../../../common/net/ip.ts";
import {
  FLOW_KEY_LAYOUT,
  L4LB_FLOW_LAYOUT,
  L4LB_MAX_FLOWS,
  L4LB_MAX_SERVICES,
  L4LB_NAT_LAYOUT,
  L4LB_SERVICE_LAYOUT,
  L4LB_VIP_LAYOUT,
  L4LB_BACKEND_LAYOUT,
  L4lbBackendFlag,
  decodeFlowKey,
  type FlowKey,
} from "./structs.ts";
import { BPF_F_NO_PREALLOC, BpfMapType, type BuiltinNf, type MapContents, type MapEntry } from "./types.ts";

const IPPROTO = { tcp: 6, udp: 17 } as const;

/** Two independent 32-bit hashes of a backend's name: Maglev's offset and skip. */
function backendHashes(name: string): [number, number] {
  const digest = createHash("sha256").update(name).digest();
  return [digest.readUInt32LE(0), digest.readUInt32LE(4)];
}

/**
 * Maglev's lookup table (Eisenbud et al., "Maglev: A Fast and Reliable Software Network Load
 * Balancer", NSDI 2016, section 3.4): `size` entries (a prime), each the index in `names` of
 * the backend that owns it; -1 only when no backend takes part.
 *
 * Each backend has its own permutation of the entries, `(offset + j * skip) mod size`, from two
 * hashes of its name (so the permutation does not depend on the other backends). In turns, each
 * backend takes the next entry of its permutation that is still free, until all are taken:
 * every backend ends with `size / n` entries or one more, and removing a backend gives its
 * entries to the others while most other entries keep their owner.
 *
 * `take[i]` false leaves backend i out (unhealthy): the table is the one of the others, so
 * putting it back restores the table it had. `weights[i]` (default 1) is how many entries
 * backend i takes per turn, so its share is its weight over the sum (the paper's weighted
 * variant). The turn order is by name, so that the order of the list does not matter.
 */
export function maglevTable(
  names: readonly string[],
  size: number,
  take?: readonly boolean[],
  weights?: readonly number[],
): Int16Array {
  const table = new Int16Array(size).fill(-1);
  const members = names
    .map((name, index) => ({ name, index, weight: weights?.[index] ?? 1 }))
    .filter(({ index }) => take?.[index] ?? true)
    .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  if (members.length === 0) return table;
  if (members.length > size) throw new RangeError(`${members.length} backends do not fit ${size} entries`);
  const offset = new Uint32Array(members.length);
  const skip = new Uint32Array(members.length);
  const next = new Uint32Array(members.length);
  members.forEach(({ name }, m) => {
    const [h1, h2] = backendHashes(name);
    offset[m] = h1 % size;
    skip[m] = (h2 % (size - 1)) + 1;
  });
  let filled = 0;
  for (;;) {
    for (let m = 0; m < members.length; m++) {
      for (let turn = 0; turn < members[m]!.weight; turn++) {
        // Entry j of m's permutation, computed as it is needed: (offset + j * skip) mod size.
        let entry = (offset[m]! + ((next[m]! * skip[m]!) % size)) % size;
        while (table[entry] !== -1) {
          next[m]!++;
          entry = (offset[m]! + ((next[m]! * skip[m]!) % size)) % size;
        }
        table[entry] = members[m]!.index;
        next[m]!++;
        if (++filled === size) return table;
      }
    }
  }
}

/** `struct l4lb_vip` of a service. */
function encodeVip(svc: L4lbService): Buffer {
  const key = Buffer.alloc(L4LB_VIP_LAYOUT.size);
  parseAddress(svc.vip).bytes.copy(key, 0);
  key.writeUInt16BE(svc.port, 16);
  key[18] = IPPROTO[svc.proto];
  return key;
}

/** `struct l4lb_service`: the backends with their health, and the ring of the healthy ones. */
export function encodeL4lbService(svc: L4lbService, health: readonly L4lbHealth[]): Buffer {
  if (svc.backends.length > L4LB_MAX_BACKENDS)
    throw new RangeError(`${svc.backends.length} backends; at most ${L4LB_MAX_BACKENDS} fit`);
  if (svc.tableSize > L4LB_RING_MAX) throw new RangeError(`tableSize ${svc.tableSize} > ${L4LB_RING_MAX}`);
  const value = Buffer.alloc(L4LB_SERVICE_LAYOUT.size);
  const backendsAt = L4LB_SERVICE_LAYOUT.offsets.backends!;
  const ringAt = L4LB_SERVICE_LAYOUT.offsets.ring!;
  const names: string[] = [];
  const healthy: boolean[] = [];
  svc.backends.forEach((be, i) => {
    const port = be.port ?? svc.port;
    // The last entry that names a backend decides, so that a later entry can override a broad one.
    const verdict = health.filter((entry) => healthApplies(entry, be.address, port)).at(-1);
    const up = verdict?.healthy ?? true;
    const base = backendsAt + i * L4LB_BACKEND_LAYOUT.size;
    parseAddress(be.address).bytes.copy(value, base);
    value.writeUInt16BE(port, base + 16);
    value[base + 18] = up ? L4lbBackendFlag.HEALTHY : 0;
    names.push(backendName(be.address, port));
    healthy.push(up);
  });
  value.writeUInt32LE(svc.tableSize, 0);
  value.writeUInt16LE(svc.backends.length, 4);
  value.writeUInt16LE(healthy.filter(Boolean).length, 6);
  const ring = maglevTable(
    names,
    svc.tableSize,
    healthy,
    svc.backends.map((be) => be.weight),
  );
  for (let i = 0; i < ring.length; i++) value[ringAt + i] = Math.max(ring[i]!, 0);
  return value;
}

/** One remembered connection of `l4lb_flows`: the client's flow and its backend. */
export interface L4lbFlowRecord {
  flow: FlowKey;
  backend: string;
  backendPort: number;
}

/** Decode one `l4lb_flows` entry (key `struct sluice_flow_key`, value `struct l4lb_flow`). */
export function decodeL4lbFlow(entry: MapEntry): L4lbFlowRecord {
  const flow = decodeFlowKey(entry.key);
  if (entry.value.length !== L4LB_FLOW_LAYOUT.size)
    throw new RangeError(`struct l4lb_flow has ${L4LB_FLOW_LAYOUT.size} bytes, got ${entry.value.length}`);
  return {
    flow,
    backend: formatAddress(entry.value.subarray(0, 16), flow.family),
    backendPort: entry.value.readUInt16BE(16),
  };
}

/** The built-in `l4lb`. */
export const l4lb: BuiltinNf<L4lbParams, L4lbTables> = {
  name: "l4lb",
  entry: "nf/l4lb/l4lb.bpf.c",
  sourceDir: "nf/l4lb",
  programs: { xdp: "l4lb_xdp", tc: "l4lb_tc" },
  rodata: (params) => [{ variable: "l4lb_affinity", type: "u32", value: params.affinity ? 1n : 0n }],
  encodeTables(tables): MapContents {
    return {
      l4lb_services: tables.services.map((svc) => ({
        key: encodeVip(svc),
        value: encodeL4lbService(svc, tables.health),
      })),
    };
  },
  tableMaps: ["l4lb_services"],
  maps: {
    l4lb_services: {
      type: BpfMapType.HASH,
      keySize: L4LB_VIP_LAYOUT.size,
      valueSize: L4LB_SERVICE_LAYOUT.size,
      maxEntries: L4LB_MAX_SERVICES,
      flags: BPF_F_NO_PREALLOC,
    },
    l4lb_flows: {
      type: BpfMapType.LRU_HASH,
      keySize: FLOW_KEY_LAYOUT.size,
      valueSize: L4LB_FLOW_LAYOUT.size,
      maxEntries: L4LB_MAX_FLOWS,
      flags: 0,
    },
    l4lb_reverse: {
      type: BpfMapType.LRU_HASH,
      keySize: FLOW_KEY_LAYOUT.size,
      valueSize: L4LB_NAT_LAYOUT.size,
      maxEntries: L4LB_MAX_FLOWS,
      flags: 0,
    },
  },
};
