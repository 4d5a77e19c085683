// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/* ratelimit: see ratelimit.h. */
#include "sluice.h"
#include "ratelimit.h"

SEC("xdp")
int ratelimit_xdp(struct xdp_md *ctx)
{
	const struct sluice_pkt *pkt;
	int parsed = SLUICE_PARSE_ONCE_INLINE(ctx, &pkt);

	return SLUICE_EXIT(ctx, ratelimit_process_at(pkt, parsed,
						    parsed == SLUICE_PARSE_IP ? SLUICE_NOW_OF(pkt) : 0));
}

SEC("tc")
int ratelimit_tc(struct __sk_buff *skb)
{
	const struct sluice_pkt *pkt;
	int parsed = SLUICE_PARSE_ONCE_INLINE(skb, &pkt);

	return SLUICE_EXIT(skb, ratelimit_process_at(pkt, parsed,
						    parsed == SLUICE_PARSE_IP ? SLUICE_NOW_OF(pkt) : 0));
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
