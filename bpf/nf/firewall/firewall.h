/* SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause */
/*
 * firewall: ordered allow/deny rules on source/destination CIDR (IPv4 and IPv6), transport
 * protocol and port ranges; the first matching rule decides, else the default action.
 *
 * Design: the rule set is one value (struct firewall_table) in a one-entry hash map. A
 * preallocation-free hash map replaces a value by RCU, so an update from user space is atomic
 * for packets in flight (an array map would be overwritten in place and could be read torn).
 * Matching is a bounded linear scan in priority order, cheapest conditions first (family and
 * protocol bytes, port ranges, then two masked 128-bit compares). With at most 64 rules that is
 * predictable, verifier-friendly and exact; rule order is the array order, so there is no
 * priority to encode. Malformed IP packets are dropped: they cannot be matched safely.
 */
#ifndef __SLUICE_NF_FIREWALL_H
#define __SLUICE_NF_FIREWALL_H

#include "sluice.h"
#include "firewall_types.h"

/* Key 0 -> the rule table. No entry means no rules. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u32);
	__type(value, struct firewall_table);
} firewall_rules SEC(".maps");

const volatile __u32 firewall_default_action = FIREWALL_ALLOW; /* when no rule matches */
const volatile __u32 firewall_non_ip_action = FIREWALL_ALLOW;  /* ARP, LLDP, ... */

static __always_inline enum sluice_verdict firewall_verdict(__u32 action)
{
	return action == FIREWALL_DENY ? SLUICE_DROP : SLUICE_CONTINUE;
}

static __always_inline int firewall_addr_match(const union sluice_addr *addr,
					       const union sluice_addr *want,
					       const union sluice_addr *mask)
{
	return ((addr->u64[0] & mask->u64[0]) == want->u64[0]) &&
	       ((addr->u64[1] & mask->u64[1]) == want->u64[1]);
}

/* parsed: the result of SLUICE_PARSE() for pkt. */
static __always_inline enum sluice_verdict firewall_process(const struct sluice_pkt *pkt,
							    int parsed)
{
	const struct firewall_table *table;
	__u32 key = 0, count, left, i;

	if (parsed == SLUICE_PARSE_NOT_IP)
		return firewall_verdict(firewall_non_ip_action);
	if (parsed != SLUICE_PARSE_IP)
		return SLUICE_DROP;

	table = bpf_map_lookup_elem(&firewall_rules, &key);
	if (!table)
		return firewall_verdict(firewall_default_action);

	/*
	 * Written for a verifier that checks the body about twice rather than once per rule:
	 * counting down from the rule count read from the map, with SLUICE_CAN_LOOP, the loop
	 * state has the same shape in every round. The counter is a second read of the count, so
	 * that the verifier does not tie the two together, and the packet fields are read inside
	 * the loop (SLUICE_RELOAD), so that what one round learned about them does not make the
	 * next round look new. (The table cannot change under a running program: an update
	 * replaces the whole value.)
	 */
	count = table->count;
	for (left = SLUICE_RELOAD(table->count); left > 0 && SLUICE_CAN_LOOP(); left--) {
		const struct firewall_rule *rule;
		__u8 match, family_bit;
		__u16 sport, dport;

		/* Keep the compiler from turning i into a counter from 0 (or rules[i] into a
		 * pointer stepping by one rule): a different constant in every round to the verifier. */
		asm volatile("" : "+r"(left));
		i = count - left;
		if (i >= FIREWALL_MAX_RULES)
			break;
		rule = &table->rules[i];
		match = rule->match;

		if (match & (FIREWALL_MATCH_IPV4 | FIREWALL_MATCH_IPV6)) {
			family_bit = SLUICE_RELOAD(pkt->family) == 4 ? FIREWALL_MATCH_IPV4
								      : FIREWALL_MATCH_IPV6;
			if (!(match & family_bit))
				continue;
		}
		if ((match & FIREWALL_MATCH_PROTO) && rule->proto != SLUICE_RELOAD(pkt->flow.proto))
			continue;
		if (match & FIREWALL_MATCH_PORTS) {
			if (!(SLUICE_RELOAD(pkt->flags) & SLUICE_PKT_PORTS))
				continue;
			sport = bpf_ntohs(SLUICE_RELOAD(pkt->flow.sport));
			dport = bpf_ntohs(SLUICE_RELOAD(pkt->flow.dport));
			if (sport < rule->sport_min || sport > rule->sport_max)
				continue;
			if (dport < rule->dport_min || dport > rule->dport_max)
				continue;
		}
		if ((match & FIREWALL_MATCH_SRC) &&
		    !firewall_addr_match(&pkt->flow.src, &rule->src, &rule->src_mask))
			continue;
		if ((match & FIREWALL_MATCH_DST) &&
		    !firewall_addr_match(&pkt->flow.dst, &rule->dst, &rule->dst_mask))
			continue;
		return firewall_verdict(rule->action);
	}
	return firewall_verdict(firewall_default_action);
}

#endif /* __SLUICE_NF_FIREWALL_H */
