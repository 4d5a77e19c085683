// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/* l4lb: see l4lb.h for the services, Maglev, affinity and the address rewrite. */
#include "sluice.h"
#include "l4lb.h"

SEC("xdp")
int l4lb_xdp(struct xdp_md *ctx)
{
	struct sluice_pkt pkt;
	int parsed = SLUICE_PARSE(ctx, &pkt);

	return SLUICE_EXIT(ctx, l4lb_process(ctx, 1, &pkt, parsed));
}

SEC("tc")
int l4lb_tc(struct __sk_buff *skb)
{
	struct sluice_pkt pkt;
	int parsed = SLUICE_PARSE(skb, &pkt);

	return SLUICE_EXIT(skb, l4lb_process(skb, 0, &pkt, parsed));
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
