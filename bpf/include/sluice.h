/* SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause */
/*
 * The sluice chain contract. Every network function (NF) includes this header once, in its
 * .bpf.c file, and ends each program with
 *
 *	return SLUICE_EXIT(ctx, verdict);
 *
 * A chain is a root program on the hook that tail-calls slot 0 of its revision's prog array;
 * each NF then tail-calls the next slot. The loader sets the settings below in .rodata before
 * load, so the verifier sees them as constants: the tail call becomes a direct jump and the
 * branches on sluice_is_last disappear.
 *
 * Counting: only the NF where a packet's walk ends writes sluice_stats[sluice_nf_index], once.
 * A no-op hop therefore costs one direct tail call and no map write.
 */
#ifndef __SLUICE_H
#define __SLUICE_H

#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "sluice_types.h"
#include "sluice_parse.h"

/* What an NF decided for a packet. */
enum sluice_verdict {
	SLUICE_CONTINUE = 0, /* hand the packet to the next NF (or end the chain with pass) */
	SLUICE_PASS = 1,     /* end the chain here and deliver the packet */
	SLUICE_DROP = 2,     /* end the chain here and drop the packet */
	SLUICE_TX = 3,       /* XDP only: bounce out of the receiving interface (XDP_TX) */
	SLUICE_REDIRECT = 4, /* after bpf_redirect*(): XDP_REDIRECT / TC_ACT_REDIRECT */
	SLUICE_ABORTED = 5,  /* NF error: XDP_ABORTED / TC_ACT_SHOT, counted as an error */
};

/*
 * The revision's prog array. All NFs of one revision share it (the loader reuses one fd), so
 * a packet that entered a revision stays in that revision.
 */
struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, SLUICE_PROGS_ENTRIES);
	__type(key, __u32);
	__type(value, __u32);
} sluice_progs SEC(".maps");

/* The chain's counters, indexed by the NF's stable index (sluice_nf_index). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SLUICE_STATS_ENTRIES);
	__type(key, __u32);
	__type(value, struct sluice_nf_stats);
} sluice_stats SEC(".maps");

/*
 * Settings written by the loader before load. The defaults make a lone NF (loaded without a
 * chain) end every packet itself, which is what a test run of one program wants.
 */
const volatile __u32 sluice_next_slot = 0; /* slot of the next NF in sluice_progs */
const volatile __u32 sluice_is_last = 1;   /* 1: SLUICE_CONTINUE ends the chain with pass */
const volatile __u32 sluice_nf_index = 0;  /* this NF's index in sluice_stats */
/*
 * Per-function time: 0 (the default) off, and the verifier removes the code below; N (a power
 * of two) times 1 in N packets. The root picks the packet and stamps the clock; each NF adds the
 * time since the last stamp to its sum at its exit (see SLUICE_TIME_STAMP in sluice_types.h).
 */
const volatile __u32 sluice_time_sample = 0;

/* How a packet's walk ended, for the counters. */
enum sluice_end {
	SLUICE_END_PASS,
	SLUICE_END_DROP,
	SLUICE_END_ERROR,
};

static __always_inline void sluice_count(__u64 len, enum sluice_end end)
{
	__u32 key = sluice_nf_index;
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

/*
 * Charges the time since the last stamp of a sampled packet to the NF with stats index `index`
 * and stamps again (ends: the packet's walk ends here, nothing to stamp for). Each figure so
 * includes about one clock read (the end of the previous one and the start of this one).
 */
static __always_inline void sluice_time_hop(__u32 index, int ends)
{
	struct sluice_nf_time *stamp, *sum;
	__u32 key;
	__u64 now;

	if (!sluice_time_sample)
		return;
	/* Nothing of the timing may be moved before the test: off, it must leave no instruction. */
	asm volatile("" ::: "memory");
	key = SLUICE_TIME_STAMP;
	stamp = bpf_map_lookup_elem(&sluice_scratch, &key);
	if (!stamp || !stamp->ns)
		return;
	now = bpf_ktime_get_ns();
	key = SLUICE_TIME_BASE + (index & (SLUICE_STATS_ENTRIES - 1));
	sum = bpf_map_lookup_elem(&sluice_scratch, &key);
	if (sum) {
		sum->ns += now - stamp->ns;
		sum->samples++;
	}
	stamp->ns = ends ? 0 : now;
}

static __always_inline __u64 sluice_xdp_len(struct xdp_md *ctx)
{
	return (__u64)ctx->data_end - (__u64)ctx->data;
}

static __always_inline int sluice_exit_xdp(struct xdp_md *ctx, enum sluice_verdict verdict)
{
	sluice_time_hop(sluice_nf_index, verdict != SLUICE_CONTINUE || sluice_is_last);
	sluice_share_done();
	if (verdict == SLUICE_CONTINUE) {
		if (!sluice_is_last) {
			bpf_tail_call(ctx, &sluice_progs, sluice_next_slot);
			/* Slot empty (chain being rebuilt, or >33 tail calls): fail open. */
			sluice_count(sluice_xdp_len(ctx), SLUICE_END_ERROR);
			return XDP_PASS;
		}
		verdict = SLUICE_PASS;
	}
	switch (verdict) {
	case SLUICE_PASS:
		sluice_count(sluice_xdp_len(ctx), SLUICE_END_PASS);
		return XDP_PASS;
	case SLUICE_DROP:
		sluice_count(sluice_xdp_len(ctx), SLUICE_END_DROP);
		return XDP_DROP;
	case SLUICE_TX:
		sluice_count(sluice_xdp_len(ctx), SLUICE_END_PASS);
		return XDP_TX;
	case SLUICE_REDIRECT:
		sluice_count(sluice_xdp_len(ctx), SLUICE_END_PASS);
		return XDP_REDIRECT;
	default:
		sluice_count(sluice_xdp_len(ctx), SLUICE_END_ERROR);
		return XDP_ABORTED;
	}
}

static __always_inline int sluice_exit_tc(struct __sk_buff *skb, enum sluice_verdict verdict)
{
	sluice_time_hop(sluice_nf_index, verdict != SLUICE_CONTINUE || sluice_is_last);
	sluice_share_done();
	if (verdict == SLUICE_CONTINUE) {
		if (!sluice_is_last) {
			bpf_tail_call(skb, &sluice_progs, sluice_next_slot);
			sluice_count(skb->len, SLUICE_END_ERROR);
			return TC_ACT_OK;
		}
		verdict = SLUICE_PASS;
	}
	switch (verdict) {
	case SLUICE_PASS:
		sluice_count(skb->len, SLUICE_END_PASS);
		return TC_ACT_OK;
	case SLUICE_DROP:
		sluice_count(skb->len, SLUICE_END_DROP);
		return TC_ACT_SHOT;
	case SLUICE_REDIRECT:
		sluice_count(skb->len, SLUICE_END_PASS);
		return TC_ACT_REDIRECT;
	default:
		/* SLUICE_ABORTED, and SLUICE_TX which tc has no equivalent for. */
		sluice_count(skb->len, SLUICE_END_ERROR);
		return TC_ACT_SHOT;
	}
}

/*
 * The single exit of every NF program: SLUICE_CONTINUE tail-calls the next NF (or ends the
 * chain with pass in the last NF); any other verdict is counted and returned as the hook's code.
 */
#define SLUICE_EXIT(ctx, verdict)                                                                 \
	_Generic((ctx), struct xdp_md *: sluice_exit_xdp, struct __sk_buff *: sluice_exit_tc)(    \
		(ctx), (verdict))

#endif /* __SLUICE_H */
