// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/* ratelimit: see ratelimit.h. */
#include "sluice.h"
#include "ratelimit.h"

SEC("xdp")
int ratelimit_xdp(struct xdp_md *ctx)
{
	struct sluice_pkt pkt;
	int parsed = SLUICE_PARSE_INLINE(ctx, &pkt);

	return SLUICE_EXIT(ctx, ratelimit_process(&pkt, parsed));
}

SEC("tc")
int ratelimit_tc(struct __sk_buff *skb)
{
	struct sluice_pkt pkt;
	int parsed = SLUICE_PARSE_INLINE(skb, &pkt);

	return SLUICE_EXIT(skb, ratelimit_process(&pkt, parsed));
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
