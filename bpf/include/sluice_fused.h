/* SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause */
/*
 * What a fused program needs beyond sluice.h. The agent generates a fused program per chain
 * (node-agent/src/chain/fused.ts): it includes every NF's header (`<nf>.h`), parses the packet
 * once and calls each NF's `static __always_inline` process function in chain order. The first
 * verdict other than SLUICE_CONTINUE ends the walk there, exactly as in a linked chain, and is
 * counted once, in the stats slot of the NF where the walk ended; a packet that every NF
 * continues ends at the last NF with pass.
 *
 * The stats slot of NF i is the `.rodata` setting sluice_fused_index_<i>, written by the loader
 * (the NF's stable index, as sluice_nf_index is in a linked chain). Hook codes are those of
 * SLUICE_EXIT: a fused chain and a linked one return, count and carry maps alike.
 */
#ifndef __SLUICE_FUSED_H
#define __SLUICE_FUSED_H

#include "sluice.h"

static __always_inline void sluice_fused_count(__u32 index, __u64 len, enum sluice_end end)
{
	__u32 key = index;
	struct sluice_nf_stats *st;

	st = bpf_map_lookup_elem(&sluice_stats, &key);
	if (!st)
		return;
	st->packets++;
	st->bytes += len;
	if (end == SLUICE_END_PASS)
		st->passes++;
	else if (end == SLUICE_END_DROP)
		st->drops++;
	else
		st->errors++;
}

/* The end of a walk at the NF with stats slot `index` (SLUICE_CONTINUE: the last NF passed). */
static __always_inline int sluice_fused_end_xdp(struct xdp_md *ctx, enum sluice_verdict verdict,
						__u32 index)
{
	__u64 len = sluice_xdp_len(ctx);

	switch (verdict) {
	case SLUICE_CONTINUE:
	case SLUICE_PASS:
		sluice_fused_count(index, len, SLUICE_END_PASS);
		return XDP_PASS;
	case SLUICE_DROP:
		sluice_fused_count(index, len, SLUICE_END_DROP);
		return XDP_DROP;
	case SLUICE_TX:
		sluice_fused_count(index, len, SLUICE_END_PASS);
		return XDP_TX;
	case SLUICE_REDIRECT:
		sluice_fused_count(index, len, SLUICE_END_PASS);
		return XDP_REDIRECT;
	default:
		sluice_fused_count(index, len, SLUICE_END_ERROR);
		return XDP_ABORTED;
	}
}

static __always_inline int sluice_fused_end_tc(struct __sk_buff *skb, enum sluice_verdict verdict,
					       __u32 index)
{
	switch (verdict) {
	case SLUICE_CONTINUE:
	case SLUICE_PASS:
		sluice_fused_count(index, skb->len, SLUICE_END_PASS);
		return TC_ACT_OK;
	case SLUICE_DROP:
		sluice_fused_count(index, skb->len, SLUICE_END_DROP);
		return TC_ACT_SHOT;
	case SLUICE_REDIRECT:
		sluice_fused_count(index, skb->len, SLUICE_END_PASS);
		return TC_ACT_REDIRECT;
	default:
		/* SLUICE_ABORTED, and SLUICE_TX which tc has no equivalent for. */
		sluice_fused_count(index, skb->len, SLUICE_END_ERROR);
		return TC_ACT_SHOT;
	}
}

#endif /* __SLUICE_FUSED_H */
