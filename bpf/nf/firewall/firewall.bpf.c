// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/* firewall: see firewall.h for the rule semantics and the design of the rule table. */
#include "sluice.h"
#include "firewall.h"

SEC("xdp")
int firewall_xdp(struct xdp_md *ctx)
{
	const struct sluice_pkt *pkt;
	int parsed = SLUICE_PARSE_ONCE_INLINE(ctx, &pkt);

	return SLUICE_EXIT(ctx, firewall_process(pkt, parsed));
}

SEC("tc")
int firewall_tc(struct __sk_buff *skb)
{
	const struct sluice_pkt *pkt;
	int parsed = SLUICE_PARSE_ONCE_INLINE(skb, &pkt);

	return SLUICE_EXIT(skb, firewall_process(pkt, parsed));
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
