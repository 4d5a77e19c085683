// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/* flowmon: see flowmon.h. */
#include "sluice.h"
#include "flowmon.h"

SEC("xdp")
int flowmon_xdp(struct xdp_md *ctx)
{
	const struct sluice_pkt *pkt;
	int parsed = SLUICE_PARSE_ONCE_INLINE(ctx, &pkt);

	return SLUICE_EXIT(ctx, flowmon_process_at(pkt, parsed,
						    parsed == SLUICE_PARSE_IP ? SLUICE_NOW_OF(pkt) : 0));
}

SEC("tc")
int flowmon_tc(struct __sk_buff *skb)
{
	const struct sluice_pkt *pkt;
	int parsed = SLUICE_PARSE_ONCE_INLINE(skb, &pkt);

	return SLUICE_EXIT(skb, flowmon_process_at(pkt, parsed,
						    parsed == SLUICE_PARSE_IP ? SLUICE_NOW_OF(pkt) : 0));
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
