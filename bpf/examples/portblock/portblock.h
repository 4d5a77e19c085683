/* SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause */
/*
 * portblock: its parameter, map and logic, includable by a fused program (the inline contract:
 * <nf>.h beside <nf>.bpf.c, defining a static __always_inline <nf>_process).
 */
#ifndef __SLUICE_EXAMPLE_PORTBLOCK_H
#define __SLUICE_EXAMPLE_PORTBLOCK_H

#include "sluice.h"

/* A parameter: set by the loader before load (NetworkFunction parameters), no recompile. */
const volatile __u16 portblock_port = 11211;

/* Source address -> packets dropped. A map of the NF's own: it survives chain updates. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, union sluice_addr);
	__type(value, __u64);
} portblock_drops SEC(".maps");

static __always_inline enum sluice_verdict portblock_process(const struct sluice_pkt *pkt,
							     int parsed)
{
	__u64 one = 1, *count;

	if (parsed != SLUICE_PARSE_IP || !(pkt->flags & SLUICE_PKT_PORTS))
		return SLUICE_CONTINUE;
	if (pkt->flow.dport != bpf_htons(portblock_port))
		return SLUICE_CONTINUE;
	count = bpf_map_lookup_elem(&portblock_drops, &pkt->flow.src);
	if (count)
		__sync_fetch_and_add(count, 1);
	else
		bpf_map_update_elem(&portblock_drops, &pkt->flow.src, &one, BPF_NOEXIST);
	return SLUICE_DROP;
}

#endif /* __SLUICE_EXAMPLE_PORTBLOCK_H */
