// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/*
 * The root of bpf/root/root.bpf.c with an indirect hop, for the benchmark only: the slot comes
 * from a writable global, which the verifier cannot treat as a constant, so the tail call is an
 * indirect jump through the prog array (a retpoline on CPUs that need one) instead of a direct
 * jump the kernel patches on every update of the slot. bench/roothop.ts weighs the two: what a
 * packet pays for the hop against what a flip (update of slot 0) costs.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "sluice_types.h"

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} sluice_root SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sluice_nf_stats);
} sluice_root_stats SEC(".maps");

/* Always 0, but in .bss: not a constant to the verifier. */
__u32 sluice_root_slot;

SEC("xdp")
int sluice_root_xdp(struct xdp_md *ctx)
{
	__u32 key = 0;
	struct sluice_nf_stats *st;

	bpf_tail_call(ctx, &sluice_root, sluice_root_slot);
	st = bpf_map_lookup_elem(&sluice_root_stats, &key);
	if (st) {
		st->packets++;
		st->bytes += (__u64)ctx->data_end - (__u64)ctx->data;
		st->errors++;
	}
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
