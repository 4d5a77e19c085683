/* SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause */
/*
 * ratelimit: token bucket per source address (IPv4 and IPv6); packets over the limit are
 * dropped, the others go on. Non-IP and malformed packets are not limited (the firewall is the
 * place to drop those).
 *
 * A source may send `burst` packets at once and `rate` packets per second on average. The
 * bucket update is a compare-and-swap, so two CPUs cannot both spend the same token; under
 * persistent contention the packet is let through (fail open) after a few attempts.
 */
#ifndef __SLUICE_NF_RATELIMIT_H
#define __SLUICE_NF_RATELIMIT_H

#include "sluice.h"
#include "ratelimit_types.h"

#define RATELIMIT_CAS_ATTEMPTS 4

/* Source address (IPv4-mapped for IPv4) -> bucket. LRU: idle sources make room for new ones. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, RATELIMIT_MAX_SOURCES);
	__type(key, union sluice_addr);
	__type(value, struct ratelimit_bucket);
} ratelimit_state SEC(".maps");

const volatile __u32 ratelimit_rate = 1000; /* packets per second per source; 0 = no limit */
const volatile __u32 ratelimit_burst = 100; /* packets a source may send back to back */

static __always_inline enum sluice_verdict ratelimit_process_at(const struct sluice_pkt *pkt,
								int parsed, __u64 now)
{
	struct ratelimit_bucket *bucket;
	__u64 interval, limit;
	int i;

	if (parsed != SLUICE_PARSE_IP || ratelimit_rate == 0)
		return SLUICE_CONTINUE;

	interval = 1000000000ULL / ratelimit_rate;
	limit = interval * ratelimit_burst;

	bucket = bpf_map_lookup_elem(&ratelimit_state, &pkt->flow.src);
	if (!bucket) {
		struct ratelimit_bucket fresh = { .tat_ns = now + interval };

		if (ratelimit_burst == 0)
			return SLUICE_DROP;
		/* Losing an insert race to another CPU only lets this one packet through. */
		bpf_map_update_elem(&ratelimit_state, &pkt->flow.src, &fresh, BPF_NOEXIST);
		return SLUICE_CONTINUE;
	}

	for (i = 0; i < RATELIMIT_CAS_ATTEMPTS; i++) {
		__u64 seen = *(volatile __u64 *)&bucket->tat_ns;
		__u64 next = (seen > now ? seen : now) + interval;

		if (next - now > limit)
			return SLUICE_DROP;
		if (__sync_val_compare_and_swap(&bucket->tat_ns, seen, next) == seen)
			return SLUICE_CONTINUE;
	}
	return SLUICE_CONTINUE;
}

/* parsed: the result of SLUICE_PARSE() for pkt. */
static __always_inline enum sluice_verdict ratelimit_process(const struct sluice_pkt *pkt,
							     int parsed)
{
	if (parsed != SLUICE_PARSE_IP)
		return SLUICE_CONTINUE;
	return ratelimit_process_at(pkt, parsed, bpf_ktime_get_ns());
}

#endif /* __SLUICE_NF_RATELIMIT_H */
