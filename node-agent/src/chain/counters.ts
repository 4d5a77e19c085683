/**
 * Per-NF counters as users read them, derived from what the kernel counts.
 *
 * The kernel counts once per packet, in the NF where the packet's walk through the chain ended
 * (see bpf/include/sluice.h): `packets`/`bytes` ended there, split into `passes`, `drops` and
 * `errors`. A packet that ended in NF j went through every NF before j, so what NF i saw is the
 * sum of what ended in i and in every NF after it in the live order.
 */

/** What the kernel counted for one NF (summed over CPUs). */
export interface EndedCounters {
  packets: bigint;
  bytes: bigint;
  drops: bigint;
  passes: bigint;
  errors: bigint;
}

/** What a user reads for one NF. */
export interface NfCounters {
  /** Packets that reached this NF. */
  packets: bigint;
  bytes: bigint;
  /** Packets this NF dropped. */
  drops: bigint;
  /** Packets this NF passed on to the next NF, or delivered when it ended the chain. */
  passes: bigint;
  /** Packets this NF aborted, or could not hand to the next NF (then delivered: fail-open). */
  errors: bigint;
}

/** The zero value. */
export const zeroEnded = (): EndedCounters => ({ packets: 0n, bytes: 0n, drops: 0n, passes: 0n, errors: 0n });

/** Derives user-facing counters for NFs in `order` from what ended in each. */
export function deriveCounters(
  order: string[],
  ended: ReadonlyMap<string, EndedCounters>,
): Map<string, NfCounters> {
  const out = new Map<string, NfCounters>();
  let seenPackets = 0n;
  let seenBytes = 0n;
  for (let i = order.length - 1; i >= 0; i--) {
    const name = order[i]!;
    const e = ended.get(name) ?? zeroEnded();
    seenPackets += e.packets;
    seenBytes += e.bytes;
    out.set(name, {
      packets: seenPackets,
      bytes: seenBytes,
      drops: e.drops,
      errors: e.errors,
      passes: seenPackets - e.drops - e.errors,
    });
  }
  return new Map(order.map((n) => [n, out.get(n)!]));
}

/** Field-wise difference `after - before` (what one test vector or one interval did). */
export function diffCounters(after: NfCounters, before: NfCounters): NfCounters {
  return {
    packets: after.packets - before.packets,
    bytes: after.bytes - before.bytes,
    drops: after.drops - before.drops,
    passes: after.passes - before.passes,
    errors: after.errors - before.errors,
  };
}
