// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/* ips: see ips.h for the signatures, the stateful rules and how the scan stays cheap. */
#include "sluice.h"
#include "ips.h"

SEC("xdp")
int ips_xdp(struct xdp_md *ctx)
{
	const struct sluice_pkt *pkt;
	int parsed = SLUICE_PARSE_ONCE(ctx, &pkt);

	return SLUICE_EXIT(ctx, ips_process(ctx, 1, pkt, parsed));
}

SEC("tc")
int ips_tc(struct __sk_buff *skb)
{
	const struct sluice_pkt *pkt;
	int parsed = SLUICE_PARSE_ONCE(skb, &pkt);

	return SLUICE_EXIT(skb, ips_process(skb, 0, pkt, parsed));
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
