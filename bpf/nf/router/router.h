/* SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause */
/*
 * router: L3 forwarding in the hook. For an IPv4 or IPv6 packet the kernel's FIB would forward,
 * bpf_fib_lookup gives the egress interface and both MAC addresses (from the neighbour table);
 * the NF decrements the TTL / hop limit (IPv4 header checksum updated incrementally, RFC 1624),
 * rewrites the Ethernet addresses and redirects the packet out of that interface (XDP_REDIRECT
 * or TC_ACT_REDIRECT), past the rest of the chain and the stack.
 *
 * It answers nothing itself: whatever it cannot forward goes on (SLUICE_CONTINUE) to the next NF
 * and then to the stack, which does what a router must: no route (ICMP unreachable), TTL or hop
 * limit at most 1 (ICMP time exceeded), no neighbour entry yet (ARP / neighbour discovery),
 * fragmentation needed (ICMP / packet too big), packets for the host itself, forwarding off on
 * the ingress interface, not IP (ARP, LLDP, ...), IP with options or malformed headers.
 */
#ifndef __SLUICE_NF_ROUTER_H
#define __SLUICE_NF_ROUTER_H

#include "sluice.h"

#ifndef AF_INET
#define AF_INET 2
#endif
#ifndef AF_INET6
#define AF_INET6 10
#endif

#define ROUTER_IPV4 0x1
#define ROUTER_IPV6 0x2

/* Settings (parameters, written by the loader). */
const volatile __u32 router_families = ROUTER_IPV4 | ROUTER_IPV6; /* ROUTER_* bits to forward */
const volatile __u32 router_decrement_ttl = 1; /* 0: forward with TTL / hop limit unchanged */

/* TTL - 1 with the header checksum updated as the kernel's ip_decrease_ttl does. */
static __always_inline void router_ipv4_decrease_ttl(struct iphdr *ip)
{
	__u32 check = (__u32)ip->check;

	check += (__u32)bpf_htons(0x0100);
	ip->check = (__u16)(check + (check >= 0xFFFF));
	ip->ttl--;
}

/*
 * Forwards the frame at data..data_end that arrived on ifindex, or says SLUICE_CONTINUE.
 * ctx is the hook's context (bpf_fib_lookup takes either).
 */
static __always_inline enum sluice_verdict router_process(void *ctx, void *data, void *data_end,
							  __u32 ifindex)
{
	struct bpf_fib_lookup fib = {};
	struct ethhdr *eth = data;
	struct ipv6hdr *ip6 = 0;
	struct iphdr *ip = 0;
	long rc;

	if ((void *)(eth + 1) > data_end)
		return SLUICE_CONTINUE;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		if (!(router_families & ROUTER_IPV4))
			return SLUICE_CONTINUE;
		ip = (void *)(eth + 1);
		/* Options (ihl > 5) are left to the stack, as are malformed headers. */
		if ((void *)(ip + 1) > data_end || ip->ihl != 5 || ip->version != 4)
			return SLUICE_CONTINUE;
		if (router_decrement_ttl && ip->ttl <= 1)
			return SLUICE_CONTINUE;
		fib.family = AF_INET;
		fib.tos = ip->tos;
		fib.l4_protocol = ip->protocol;
		fib.tot_len = bpf_ntohs(ip->tot_len);
		fib.ipv4_src = ip->saddr;
		fib.ipv4_dst = ip->daddr;
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		if (!(router_families & ROUTER_IPV6))
			return SLUICE_CONTINUE;
		ip6 = (void *)(eth + 1);
		if ((void *)(ip6 + 1) > data_end || ip6->version != 6)
			return SLUICE_CONTINUE;
		if (router_decrement_ttl && ip6->hop_limit <= 1)
			return SLUICE_CONTINUE;
		fib.family = AF_INET6;
		fib.flowinfo = *(__be32 *)ip6 & bpf_htonl(0x0FFFFFFF);
		fib.l4_protocol = ip6->nexthdr;
		fib.tot_len = bpf_ntohs(ip6->payload_len) + sizeof(*ip6);
		__builtin_memcpy(fib.ipv6_src, &ip6->saddr, sizeof(fib.ipv6_src));
		__builtin_memcpy(fib.ipv6_dst, &ip6->daddr, sizeof(fib.ipv6_dst));
	} else {
		return SLUICE_CONTINUE;
	}
	fib.ifindex = ifindex;

	rc = bpf_fib_lookup(ctx, &fib, sizeof(fib), 0);
	/*
	 * Anything but SUCCESS is the stack's: NOT_FWDED (local or broadcast destination),
	 * FWD_DISABLED, BLACKHOLE / UNREACHABLE / PROHIBIT, NO_NEIGH, FRAG_NEEDED, UNSUPP_LWT.
	 */
	if (rc != BPF_FIB_LKUP_RET_SUCCESS)
		return SLUICE_CONTINUE;

	if (router_decrement_ttl) {
		if (ip)
			router_ipv4_decrease_ttl(ip);
		else if (ip6)
			ip6->hop_limit--;
	}
	__builtin_memcpy(eth->h_dest, fib.dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, fib.smac, ETH_ALEN);
	bpf_redirect(fib.ifindex, 0);
	return SLUICE_REDIRECT;
}

#endif /* __SLUICE_NF_ROUTER_H */
