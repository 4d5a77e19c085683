// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/*
 * ttl-guard: a custom network function kept in the platform team's own repository. It drops
 * IP packets whose TTL (or IPv6 hop limit) is below MIN_TTL, a compile-time parameter set by the
 * NetworkFunction, and counts the drops per source address. Everything else goes on.
 */
#include "sluice.h"

#ifndef MIN_TTL
#define MIN_TTL 2
#endif

/* Source address -> packets dropped. The NF's own map: it carries over across updates. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, union sluice_addr);
	__type(value, __u64);
} ttl_guard_drops SEC(".maps");

static __always_inline enum sluice_verdict ttl_guard(const struct sluice_pkt *pkt, int parsed)
{
	__u64 one = 1, *count;

	if (parsed != SLUICE_PARSE_IP || pkt->ttl >= MIN_TTL)
		return SLUICE_CONTINUE;
	count = bpf_map_lookup_elem(&ttl_guard_drops, &pkt->flow.src);
	if (count)
		__sync_fetch_and_add(count, 1);
	else
		bpf_map_update_elem(&ttl_guard_drops, &pkt->flow.src, &one, BPF_NOEXIST);
	return SLUICE_DROP;
}

SEC("xdp")
int ttl_guard_xdp(struct xdp_md *ctx)
{
	struct sluice_pkt pkt;
	int parsed = SLUICE_PARSE(ctx, &pkt);

	return SLUICE_EXIT(ctx, ttl_guard(&pkt, parsed));
}

SEC("tc")
int ttl_guard_tc(struct __sk_buff *skb)
{
	struct sluice_pkt pkt;
	int parsed = SLUICE_PARSE(skb, &pkt);

	return SLUICE_EXIT(skb, ttl_guard(&pkt, parsed));
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
