// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/* router: see router.h for what is forwarded and what is left to the stack. */
#include "sluice.h"
#include "router.h"

SEC("xdp")
int router_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;

	return SLUICE_EXIT(ctx, router_process(ctx, data, data_end, ctx->ingress_ifindex));
}

SEC("tc")
int router_tc(struct __sk_buff *skb)
{
	void *data, *data_end;

	/* Both headers in the linear area (a no-op when they already are). */
	if ((long)skb->data + sizeof(struct ethhdr) + sizeof(struct ipv6hdr) > (long)skb->data_end)
		bpf_skb_pull_data(skb, sizeof(struct ethhdr) + sizeof(struct ipv6hdr));
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	/* On tc ingress skb->ifindex is the receiving device. */
	return SLUICE_EXIT(skb, router_process(skb, data, data_end, skb->ifindex));
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
