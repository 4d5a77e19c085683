import { isIP } from "node:net";
import { z } from "zod";

/** `L4LB_MAX_SERVICES` of `bpf/nf/l4lb/l4lb_types.h`: most services one table holds. */
export const L4LB_MAX_SERVICES = 64;
/** `L4LB_MAX_BACKENDS`: most backends of one service (a ring entry is one byte). */
export const L4LB_MAX_BACKENDS = 256;
/** `L4LB_RING_MAX`: the largest Maglev lookup table, a prime. */
export const L4LB_RING_MAX = 65537;

/** Whether n is a prime (trial division; n is at most {@link L4LB_RING_MAX}). */
export function isPrime(n: number): boolean {
  if (!Number.isInteger(n) || n < 2) return false;
  for (let d = 2; d * d <= n; d++) if (n % d === 0) return false;
  return true;
}

/** Parameters of `l4lb` (load-time settings). */
export const L4lbParams = z.strictObject({
  affinity: z
    .boolean()
    .default(true)
    .describe(
      "Remember each connection's backend (LRU map, carried over across revisions): a backend added, removed or a new revision moves no established connection. false: every packet follows the Maglev table.",
    ),
});
export type L4lbParams = z.infer<typeof L4lbParams>;

const Address = z.string().refine((text) => isIP(text) !== 0, {
  message: "must be an IPv4 or IPv6 address like 10.0.0.1 or fd00::1",
});

const Port = z.number().int().min(1).max(65535);

/** The family (4 or 6) of a validated address. */
function familyOf(address: string): 4 | 6 {
  return isIP(address) === 6 ? 6 : 4;
}

/** One backend of a service. */
export const L4lbBackend = z.strictObject({
  address: Address.describe("The backend's address; the same family as the service's vip."),
  port: Port.optional().describe("The backend's port (default: the service's port)."),
  weight: z
    .number()
    .int()
    .min(1)
    .max(100)
    .default(1)
    .describe("Relative share of the service's flows: weight 2 takes twice the table entries of weight 1."),
});
export type L4lbBackend = z.infer<typeof L4lbBackend>;

/** The identity of a backend (its address and port), as health entries and Maglev name it. */
export function backendName(address: string, port: number): string {
  return familyOf(address) === 6 ? `[${address}]:${port}` : `${address}:${port}`;
}

/** One virtual service: packets to vip:port (proto) are balanced over the backends. */
export const L4lbService = z
  .strictObject({
    vip: Address.describe("The virtual IP clients send to (not an address of the node)."),
    port: Port.describe("The virtual port."),
    proto: z.enum(["tcp", "udp"]).default("tcp").describe("Transport protocol: tcp or udp."),
    backends: z
      .array(L4lbBackend)
      .max(L4LB_MAX_BACKENDS)
      .default([])
      .describe(
        `Backends, at most ${L4LB_MAX_BACKENDS}; with none healthy, packets to the service are dropped.`,
      ),
    tableSize: z
      .number()
      .int()
      .min(2)
      .max(L4LB_RING_MAX)
      .default(L4LB_RING_MAX)
      .refine(isPrime, { message: "must be a prime (e.g. 251, 1021, 4093, 16381, 65537)" })
      .describe(
        "Entries of the Maglev lookup table, a prime; backends share it equally, so flows spread within about backends/tableSize of even.",
      ),
  })
  .superRefine((svc, ctx) => {
    if (isIP(svc.vip) === 0) return; // reported by the field's own check
    const family = familyOf(svc.vip);
    const seen = new Map<string, number>();
    svc.backends.forEach((be, i) => {
      if (isIP(be.address) === 0) return;
      if (familyOf(be.address) !== family)
        ctx.addIssue({
          code: "custom",
          path: ["backends", i, "address"],
          message: `is IPv${familyOf(be.address)}, the vip ${svc.vip} IPv${family}: one service balances within one family`,
        });
      const name = backendName(be.address, be.port ?? svc.port);
      const first = seen.get(name);
      if (first !== undefined)
        ctx.addIssue({
          code: "custom",
          path: ["backends", i],
          message: `${name} is also backends[${first}]`,
        });
      else seen.set(name, i);
    });
    if (svc.backends.length > svc.tableSize)
      ctx.addIssue({
        code: "custom",
        path: ["tableSize"],
        message: `${svc.tableSize} entries cannot hold ${svc.backends.length} backends`,
      });
  });
export type L4lbService = z.infer<typeof L4lbService>;

/** A health entry: the backends with this address (and port, if given) in every service. */
export const L4lbHealth = z.strictObject({
  address: Address.describe("A backend's address."),
  port: Port.optional().describe("Only the backend on this port (default: every port of the address)."),
  healthy: z
    .boolean()
    .describe(
      "false: new flows avoid the backend and flows remembered on it get another one; true (or no entry): it takes its share.",
    ),
});
export type L4lbHealth = z.infer<typeof L4lbHealth>;

/** Whether a health entry names the backend at address:port. */
export function healthApplies(entry: L4lbHealth, address: string, port: number): boolean {
  const same = isIP(address) === 6 ? sameIpv6(entry.address, address) : entry.address === address;
  return same && (entry.port === undefined || entry.port === port);
}

function sameIpv6(a: string, b: string): boolean {
  if (isIP(a) !== 6) return false;
  // One canonical text: URL parsing writes an IPv6 host in its compressed form.
  const canonical = (text: string) => new URL(`http://[${text}]/`).hostname;
  return canonical(a) === canonical(b);
}

/** Runtime tables of `l4lb`: the services and the health of their backends. */
export const L4lbTables = z
  .strictObject({
    services: z
      .array(L4lbService)
      .max(L4LB_MAX_SERVICES)
      .default([])
      .describe(`Virtual services, at most ${L4LB_MAX_SERVICES}; vip, port and proto unique.`),
    health: z
      .array(L4lbHealth)
      .max(4096)
      .default([])
      .describe("Backend health, updated in place (no recompile); a backend without an entry is healthy."),
  })
  .superRefine((tables, ctx) => {
    const seen = new Map<string, number>();
    tables.services.forEach((svc, i) => {
      const key = `${svc.proto} ${backendName(svc.vip, svc.port)}`;
      const first = seen.get(key);
      if (first !== undefined)
        ctx.addIssue({
          code: "custom",
          path: ["services", i, "vip"],
          message: `${key} is also services[${first}]`,
        });
      else seen.set(key, i);
    });
    tables.health.forEach((entry, i) => {
      if (isIP(entry.address) === 0) return;
      const known = tables.services.some((svc) =>
        svc.backends.some((be) => healthApplies(entry, be.address, be.port ?? svc.port)),
      );
      if (!known)
        ctx.addIssue({
          code: "custom",
          path: ["health", i, "address"],
          message: `${entry.port === undefined ? entry.address : backendName(entry.address, entry.port)} is no backend of any service`,
        });
    });
  });
export type L4lbTables = z.infer<typeof L4lbTables>;
