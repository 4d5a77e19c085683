// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/*
 * The root of a chain: the one program attached to the hook. It tail-calls slot 0 of
 * sluice_root, which holds NF 0 of the live revision; switching revisions is one update of that
 * slot. When the slot is empty (no chain yet, or a prog array that lost its last reference) the
 * packet passes and the miss is counted in sluice_root_stats.
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

#include "sluice_types.h"

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} sluice_root SEC(".maps");

/* Entry 0: packets that found no chain (packets, bytes and errors; they were passed). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sluice_nf_stats);
} sluice_root_stats SEC(".maps");

/*
 * The chain's per-CPU scratch map (declared in full in sluice_parse.h); the root uses only the
 * per-function time entries of it, and only with sluice_time_sample set.
 */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SLUICE_SCRATCH_ENTRIES);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, SLUICE_SCRATCH_VALUE_SIZE);
} sluice_scratch SEC(".maps");

/* 0: per-function time off (the code below is removed); N, a power of two: 1 in N packets. */
const volatile __u32 sluice_time_sample = 0;

/* Picks whether this packet is timed, and if so stamps its start (see sluice_time_hop). */
static __always_inline void root_time_start(void)
{
	struct sluice_nf_time *stamp;
	__u32 key;

	if (!sluice_time_sample)
		return;
	/* Nothing of the timing may be moved before the test: off, it must leave no instruction. */
	asm volatile("" ::: "memory");
	key = SLUICE_TIME_STAMP;
	stamp = bpf_map_lookup_elem(&sluice_scratch, &key);
	if (!stamp)
		return;
	stamp->samples++;
	stamp->ns = (stamp->samples & (sluice_time_sample - 1)) ? 0 : bpf_ktime_get_ns();
}

static __always_inline void root_count_miss(__u64 len)
{
	__u32 key = 0;
	struct sluice_nf_stats *st = bpf_map_lookup_elem(&sluice_root_stats, &key);

	if (!st)
		return;
	st->packets++;
	st->bytes += len;
	st->errors++;
}

SEC("xdp")
int sluice_root_xdp(struct xdp_md *ctx)
{
	root_time_start();
	bpf_tail_call(ctx, &sluice_root, 0);
	root_count_miss((__u64)ctx->data_end - (__u64)ctx->data);
	return XDP_PASS;
}

SEC("tc")
int sluice_root_tc(struct __sk_buff *skb)
{
	root_time_start();
	bpf_tail_call(skb, &sluice_root, 0);
	root_count_miss(skb->len);
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
