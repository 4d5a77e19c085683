// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/*
 * portblock: a template for a custom NF. Drops UDP and TCP packets to one destination port and
 * counts them per source; everything else goes on to the next NF.
 */
#include "sluice.h"

#include "portblock.h"

SEC("xdp")
int portblock_xdp(struct xdp_md *ctx)
{
	struct sluice_pkt pkt;
	int parsed = SLUICE_PARSE(ctx, &pkt);

	return SLUICE_EXIT(ctx, portblock_process(&pkt, parsed));
}

SEC("tc")
int portblock_tc(struct __sk_buff *skb)
{
	struct sluice_pkt pkt;
	int parsed = SLUICE_PARSE(skb, &pkt);

	return SLUICE_EXIT(skb, portblock_process(&pkt, parsed));
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
