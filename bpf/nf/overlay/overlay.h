/* SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause */
/*
 * overlay: one L3 network over the nodes of a chain, in VXLAN (RFC 7348) over UDP/IPv4.
 *
 * Encapsulation: an IPv4 or IPv6 packet whose destination lies in a segment of overlay_segments
 * (longest prefix) hosted by another node is wrapped in outer Ethernet / IPv4 / UDP / VXLAN
 * headers (50 bytes more, OVERLAY_OVERHEAD) and redirected towards that node. bpf_fib_lookup
 * (with BPF_FIB_LOOKUP_SRC) gives the egress interface, both MAC addresses and the node's own
 * source address from the node's routes, so one table serves every node: a segment hosted by
 * this node resolves to a local address (not forwarded) and goes on unchanged.
 *
 * Decapsulation: a VXLAN packet to overlay_port with overlay_vni, from a node in overlay_nodes,
 * is unwrapped and goes on (SLUICE_CONTINUE) as the inner packet, addressed to this interface's
 * MAC, so that router (or the stack) forwards it to its host.
 *
 * MTU: a packet that would exceed the egress MTU once wrapped is dropped and counted
 * (OVERLAY_TOO_BIG): hosts' MTU (or their routes' mtu) must leave room for the 50 bytes.
 */
#ifndef __SLUICE_NF_OVERLAY_H
#define __SLUICE_NF_OVERLAY_H

#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/udp.h>

#include "sluice.h"
#include "overlay_types.h"

#ifndef AF_INET
#define AF_INET 2
#endif
#ifndef BPF_F_ADJ_ROOM_DECAP_L3_IPV4
#define BPF_F_ADJ_ROOM_DECAP_L3_IPV4 (1ULL << 7)
#define BPF_F_ADJ_ROOM_DECAP_L3_IPV6 (1ULL << 8)
#endif

/* Settings (parameters, written by the loader). */
const volatile __u32 overlay_vni = 1;     /* VXLAN network identifier, 24 bits */
const volatile __u32 overlay_port = 4789; /* UDP destination port of VXLAN */
const volatile __u32 overlay_ttl = 64;    /* TTL of the outer IPv4 header */

/* Segment (prefix) -> the node that hosts it. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, OVERLAY_MAX_SEGMENTS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct overlay_segment_key);
	__type(value, struct overlay_remote);
} overlay_segments SEC(".maps");

/* Underlay addresses of the nodes: only their VXLAN packets are unwrapped. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, OVERLAY_MAX_NODES);
	__type(key, __be32);
	__type(value, __u32);
} overlay_nodes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, OVERLAY_COUNTERS);
	__type(key, __u32);
	__type(value, __u64);
} overlay_counters SEC(".maps");

struct overlay_vxlan {
	__be32 flags; /* 0x08000000: the VNI is valid */
	__be32 vni;   /* VNI << 8 */
};

/* The 50 bytes after the outer Ethernet header and before the inner IP header. */
struct overlay_outer {
	struct iphdr ip;
	struct udphdr udp;
	struct overlay_vxlan vxlan;
	struct ethhdr inner;
};
_Static_assert(__builtin_offsetof(struct overlay_outer, inner) + sizeof(struct ethhdr) ==
		       OVERLAY_OVERHEAD,
	       "the outer headers are OVERLAY_OVERHEAD bytes");

static __always_inline void overlay_count(__u32 counter)
{
	__u64 *value = bpf_map_lookup_elem(&overlay_counters, &counter);

	if (value)
		*value += 1;
}

static __always_inline __u16 overlay_ipv4_csum(struct iphdr *ip)
{
	__u16 *word = (__u16 *)ip;
	__u32 sum = 0;

#pragma unroll
	for (int i = 0; i < (int)sizeof(*ip) / 2; i++)
		sum += word[i];
	sum = (sum & 0xFFFF) + (sum >> 16);
	sum = (sum & 0xFFFF) + (sum >> 16);
	return (__u16)~sum;
}

/* The hook's packet bounds: xdp_md and __sk_buff both carry data/data_end. */
#define OVERLAY_DATA(ctx, xdp)                                                                    \
	((void *)(long)((xdp) ? ((struct xdp_md *)(ctx))->data : ((struct __sk_buff *)(ctx))->data))
#define OVERLAY_DATA_END(ctx, xdp)                                                                \
	((void *)(long)((xdp) ? ((struct xdp_md *)(ctx))->data_end                               \
			      : ((struct __sk_buff *)(ctx))->data_end))

/*
 * Unwraps a VXLAN packet of ours. Returns SLUICE_CONTINUE with the inner packet, or
 * SLUICE_ABORTED when the kernel refused to move the head. The NFs after this one see the inner
 * packet: a parse shared along a linked chain is voided, and pkt (the fused chain's one parse,
 * or NULL) is parsed again from the inner headers; a fused chain drops an inner packet whose
 * headers do not parse, since the NFs after it would otherwise read the outer packet's parse.
 */
static __always_inline enum sluice_verdict overlay_decap(void *ctx, struct sluice_pkt *pkt,
							 const int xdp)
{
	void *data = OVERLAY_DATA(ctx, xdp), *data_end = OVERLAY_DATA_END(ctx, xdp);
	struct ethhdr *eth = data;
	struct overlay_outer *outer = (void *)(eth + 1);
	unsigned char dst[ETH_ALEN], src[ETH_ALEN];
	__be16 inner_proto;

	if ((void *)outer + OVERLAY_OVERHEAD > data_end)
		return SLUICE_CONTINUE;
	__builtin_memcpy(dst, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(src, eth->h_source, ETH_ALEN);
	inner_proto = outer->inner.h_proto;
	if (inner_proto != bpf_htons(ETH_P_IP) && inner_proto != bpf_htons(ETH_P_IPV6))
		return SLUICE_CONTINUE;
	if (xdp) {
		if (bpf_xdp_adjust_head(ctx, OVERLAY_OVERHEAD))
			return SLUICE_ABORTED;
	} else {
		__u64 flags = inner_proto == bpf_htons(ETH_P_IP) ? BPF_F_ADJ_ROOM_DECAP_L3_IPV4
								  : BPF_F_ADJ_ROOM_DECAP_L3_IPV6;

		if (bpf_skb_adjust_room(ctx, -OVERLAY_OVERHEAD, BPF_ADJ_ROOM_MAC, flags))
			return SLUICE_ABORTED;
	}
	data = OVERLAY_DATA(ctx, xdp);
	data_end = OVERLAY_DATA_END(ctx, xdp);
	eth = data;
	if ((void *)(eth + 1) > data_end)
		return SLUICE_ABORTED;
	/* Addressed to this interface, as the outer frame was, for the stack or router. */
	__builtin_memcpy(eth->h_dest, dst, ETH_ALEN);
	__builtin_memcpy(eth->h_source, src, ETH_ALEN);
	eth->h_proto = inner_proto;
	overlay_count(OVERLAY_DECAPSULATED);
	SLUICE_PARSE_FORGET();
	if (pkt) {
		int parsed;

		__builtin_memset(pkt, 0, sizeof(*pkt));
		if (xdp) {
			parsed = sluice_parse_xdp_global(ctx, pkt);
		} else {
			sluice_pull_headers(ctx);
			parsed = sluice_parse_tc_global(ctx, pkt);
		}
		if (parsed != SLUICE_PARSE_IP)
			return SLUICE_DROP;
	}
	return SLUICE_CONTINUE;
}

/*
 * Wraps the frame (frame_len bytes, inner IP after the Ethernet header) in VXLAN to `node` from
 * `saddr`, with the outer Ethernet addresses dmac/smac. entropy picks the UDP source port.
 */
static __always_inline int overlay_encap(void *ctx, const int xdp, __u32 frame_len, __be32 saddr,
					 __be32 node, const unsigned char *dmac,
					 const unsigned char *smac, __u32 entropy)
{
	void *data = OVERLAY_DATA(ctx, xdp), *data_end = OVERLAY_DATA_END(ctx, xdp);
	struct ethhdr *eth = data, inner;
	struct overlay_outer *outer;

	if ((void *)(eth + 1) > data_end)
		return -1;
	__builtin_memcpy(&inner, eth, sizeof(inner));
	if (xdp) {
		if (bpf_xdp_adjust_head(ctx, -OVERLAY_OVERHEAD))
			return -1;
	} else {
		__u64 flags = BPF_F_ADJ_ROOM_ENCAP_L3_IPV4 | BPF_F_ADJ_ROOM_ENCAP_L4_UDP |
			      BPF_F_ADJ_ROOM_ENCAP_L2_ETH | BPF_F_ADJ_ROOM_ENCAP_L2(ETH_HLEN);

		if (bpf_skb_adjust_room(ctx, OVERLAY_OVERHEAD, BPF_ADJ_ROOM_MAC, flags))
			return -1;
	}
	data = OVERLAY_DATA(ctx, xdp);
	data_end = OVERLAY_DATA_END(ctx, xdp);
	eth = data;
	outer = (void *)(eth + 1);
	if ((void *)outer + OVERLAY_OVERHEAD > data_end)
		return -1;
	__builtin_memcpy(eth->h_dest, dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, smac, ETH_ALEN);
	eth->h_proto = bpf_htons(ETH_P_IP);
	/* On tc the room opened after the Ethernet header: the inner one goes in again. */
	__builtin_memcpy(&outer->inner, &inner, sizeof(inner));

	outer->ip.version = 4;
	outer->ip.ihl = 5;
	outer->ip.tos = 0;
	outer->ip.tot_len = bpf_htons(frame_len + OVERLAY_OVERHEAD - ETH_HLEN);
	outer->ip.id = 0;
	outer->ip.frag_off = bpf_htons(0x4000); /* DF: too big is decided here, never in transit */
	outer->ip.ttl = overlay_ttl;
	outer->ip.protocol = IPPROTO_UDP;
	outer->ip.check = 0;
	outer->ip.saddr = saddr;
	outer->ip.daddr = node;
	outer->ip.check = overlay_ipv4_csum(&outer->ip);

	/* RFC 7348: the source port carries the inner flow's hash, for ECMP on the way. */
	outer->udp.source = bpf_htons(49152 | ((entropy * 0x9E3779B1u) >> 18));
	outer->udp.dest = bpf_htons(overlay_port);
	outer->udp.len = bpf_htons(frame_len + sizeof(struct udphdr) + sizeof(struct overlay_vxlan));
	outer->udp.check = 0; /* allowed for UDP over IPv4 (RFC 7348) */
	outer->vxlan.flags = bpf_htonl(0x08000000);
	outer->vxlan.vni = bpf_htonl(overlay_vni << 8);
	return 0;
}

/*
 * The overlay's decision for the frame that arrived on ifindex: unwrap VXLAN from a known node,
 * wrap and redirect a packet for a remote segment, or leave it alone (SLUICE_CONTINUE). is_xdp
 * is 1 in an XDP program and 0 in a tc one (a constant: the other hook's branch compiles away).
 * pkt is the parse a fused chain shares (updated when the packet is unwrapped), or NULL in the
 * NF's own programs, which parse nothing. The packet moves (its head grows or shrinks): read
 * data/data_end again after the call.
 */
static __always_inline enum sluice_verdict overlay_process(void *ctx, struct sluice_pkt *pkt,
							   __u32 ifindex, int is_xdp)
{
	const int xdp = is_xdp;
	void *data = OVERLAY_DATA(ctx, xdp), *data_end = OVERLAY_DATA_END(ctx, xdp);
	struct bpf_fib_lookup fib = {};
	struct overlay_segment_key key = {};
	struct overlay_remote *remote;
	unsigned char dmac[ETH_ALEN], smac[ETH_ALEN];
	struct ethhdr *eth = data;
	__u32 frame_len, entropy;
	__be32 node;
	long rc;

	if ((void *)(eth + 1) > data_end)
		return SLUICE_CONTINUE;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);

		if ((void *)(ip + 1) > data_end || ip->version != 4)
			return SLUICE_CONTINUE;
		/* VXLAN to our port, unfragmented, without IP options? */
		if (ip->protocol == IPPROTO_UDP && ip->ihl == 5 && !(ip->frag_off & bpf_htons(0x3FFF))) {
			struct udphdr *udp = (void *)(ip + 1);
			struct overlay_vxlan *vx = (void *)(udp + 1);

			if ((void *)(vx + 1) <= data_end && udp->dest == bpf_htons(overlay_port)) {
				if (vx->flags & bpf_htonl(0x08000000) &&
				    vx->vni == bpf_htonl(overlay_vni << 8) &&
				    bpf_map_lookup_elem(&overlay_nodes, &ip->saddr))
					return overlay_decap(ctx, pkt, xdp);
				overlay_count(OVERLAY_FOREIGN);
				return SLUICE_CONTINUE;
			}
		}
		key.prefixlen = 128;
		key.addr[10] = 0xFF;
		key.addr[11] = 0xFF;
		__builtin_memcpy(&key.addr[12], &ip->daddr, 4);
		entropy = ip->saddr ^ ip->daddr;
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);

		if ((void *)(ip6 + 1) > data_end || ip6->version != 6)
			return SLUICE_CONTINUE;
		key.prefixlen = 128;
		__builtin_memcpy(key.addr, &ip6->daddr, sizeof(key.addr));
		entropy = ip6->saddr.in6_u.u6_addr32[3] ^ ip6->daddr.in6_u.u6_addr32[3] ^
			  ip6->saddr.in6_u.u6_addr32[1] ^ ip6->daddr.in6_u.u6_addr32[1];
	} else {
		return SLUICE_CONTINUE;
	}

	remote = bpf_map_lookup_elem(&overlay_segments, &key);
	if (!remote)
		return SLUICE_CONTINUE;

	frame_len = xdp ? (__u32)(data_end - data) : ((struct __sk_buff *)ctx)->len;
	fib.family = AF_INET;
	fib.l4_protocol = IPPROTO_UDP;
	fib.tot_len = frame_len + OVERLAY_OVERHEAD - ETH_HLEN;
	node = remote->node;
	fib.ipv4_dst = node;
	fib.ifindex = ifindex;
	rc = bpf_fib_lookup(ctx, &fib, sizeof(fib), BPF_FIB_LOOKUP_SRC);
	if (rc == BPF_FIB_LKUP_RET_FRAG_NEEDED) {
		overlay_count(OVERLAY_TOO_BIG);
		return SLUICE_DROP;
	}
	if (rc == BPF_FIB_LKUP_RET_NOT_FWDED)
		return SLUICE_CONTINUE; /* the node is this one: the segment is local */
	if ((rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_NO_NEIGH) || !fib.ipv4_src) {
		overlay_count(OVERLAY_NO_ROUTE);
		return SLUICE_CONTINUE;
	}
	if (rc == BPF_FIB_LKUP_RET_NO_NEIGH) {
		/*
		 * The next hop's MAC is not known yet. The stack cannot take the wrapped packet (its
		 * source is this node's own address: a martian on input), so tc hands it to the
		 * kernel's neighbour resolution, which sends it once resolved; XDP has no such way
		 * and drops it (the node's own traffic, or a static entry, resolves the neighbour).
		 */
		overlay_count(OVERLAY_NO_NEIGH);
		if (xdp)
			return SLUICE_DROP;
		__builtin_memcpy(dmac, eth->h_dest, ETH_ALEN);
		__builtin_memcpy(smac, eth->h_source, ETH_ALEN);
	} else {
		__builtin_memcpy(dmac, fib.dmac, ETH_ALEN);
		__builtin_memcpy(smac, fib.smac, ETH_ALEN);
	}
	/* fib.ipv4_dst is the next hop now; the outer destination stays the node. */
	if (overlay_encap(ctx, xdp, frame_len, fib.ipv4_src, node, dmac, smac, entropy))
		return SLUICE_ABORTED;
	if (rc == BPF_FIB_LKUP_RET_NO_NEIGH) {
		struct bpf_redir_neigh nh = { .nh_family = AF_INET, .ipv4_nh = fib.ipv4_dst };

		bpf_redirect_neigh(fib.ifindex, &nh, sizeof(nh), 0);
		return SLUICE_REDIRECT;
	}
	overlay_count(OVERLAY_ENCAPSULATED);
	bpf_redirect(fib.ifindex, 0);
	return SLUICE_REDIRECT;
}

#endif /* __SLUICE_NF_OVERLAY_H */
