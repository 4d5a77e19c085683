/* SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause */
/*
 * flowmon: packet and byte counters per directional 5-tuple; never changes a packet's fate.
 * Counters are shared between CPUs and updated with atomic adds, so user space reads one value
 * per flow. Non-IP and malformed packets are not counted here (sluice_stats still counts them).
 */
#ifndef __SLUICE_NF_FLOWMON_H
#define __SLUICE_NF_FLOWMON_H

#include "sluice.h"
#include "flowmon_types.h"

/* Flow -> counters. LRU: when full, the least recently seen flows are forgotten. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, FLOWMON_MAX_FLOWS);
	__type(key, struct sluice_flow_key);
	__type(value, struct flowmon_counters);
} flowmon_flows SEC(".maps");

static __always_inline enum sluice_verdict flowmon_process_at(const struct sluice_pkt *pkt,
							      int parsed, __u64 now)
{
	struct flowmon_counters *counters;

	if (parsed != SLUICE_PARSE_IP)
		return SLUICE_CONTINUE;

	counters = bpf_map_lookup_elem(&flowmon_flows, &pkt->flow);
	if (!counters) {
		struct flowmon_counters fresh = {
			.packets = 1,
			.bytes = pkt->len,
			.first_seen_ns = now,
			.last_seen_ns = now,
		};

		if (bpf_map_update_elem(&flowmon_flows, &pkt->flow, &fresh, BPF_NOEXIST) == 0)
			return SLUICE_CONTINUE;
		/* Another CPU created the flow first: add to its entry. */
		counters = bpf_map_lookup_elem(&flowmon_flows, &pkt->flow);
		if (!counters)
			return SLUICE_CONTINUE;
	}
	__sync_fetch_and_add(&counters->packets, 1);
	__sync_fetch_and_add(&counters->bytes, pkt->len);
	counters->last_seen_ns = now;
	return SLUICE_CONTINUE;
}

/* parsed: the result of SLUICE_PARSE() for pkt. */
static __always_inline enum sluice_verdict flowmon_process(const struct sluice_pkt *pkt,
							   int parsed)
{
	if (parsed != SLUICE_PARSE_IP)
		return SLUICE_CONTINUE;
	return flowmon_process_at(pkt, parsed, bpf_ktime_get_ns());
}

#endif /* __SLUICE_NF_FLOWMON_H */
