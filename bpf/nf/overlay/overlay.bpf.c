// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/* overlay: see overlay.h for what is wrapped, unwrapped and left alone. */
#include "sluice.h"
#include "overlay.h"

SEC("xdp")
int overlay_xdp(struct xdp_md *ctx)
{
	return SLUICE_EXIT(ctx, overlay_process(ctx, 0, ctx->ingress_ifindex, 1));
}

SEC("tc")
int overlay_tc(struct __sk_buff *skb)
{
	/* Outer and inner headers in the linear area (a no-op when they already are). */
	if ((long)skb->data + ETH_HLEN + OVERLAY_OVERHEAD + sizeof(struct ipv6hdr) > (long)skb->data_end)
		bpf_skb_pull_data(skb, ETH_HLEN + OVERLAY_OVERHEAD + sizeof(struct ipv6hdr));
	/* On tc ingress skb->ifindex is the receiving device. */
	return SLUICE_EXIT(skb, overlay_process(skb, 0, skb->ifindex, 0));
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
