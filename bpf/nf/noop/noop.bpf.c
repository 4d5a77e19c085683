// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/* noop: no parsing, no map access; one direct tail call per hop. */
#include "sluice.h"
#include "noop.h"

SEC("xdp")
int noop_xdp(struct xdp_md *ctx)
{
	return SLUICE_EXIT(ctx, noop_process());
}

SEC("tc")
int noop_tc(struct __sk_buff *skb)
{
	return SLUICE_EXIT(skb, noop_process());
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
