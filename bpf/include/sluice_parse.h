/* SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause */
/*
 * Bounded packet parsing shared by all NFs: Ethernet, up to two VLAN tags, IPv4 or IPv6 (with
 * up to SLUICE_IPV6_MAX_EXT extension headers), then TCP, UDP, ICMP or ICMPv6.
 *
 * The result is a small struct of scalars (no packet pointers), so NF logic can be written as
 * plain functions over it and a fused program parses once for several NFs.
 *
 * Built for a cheap verification, because every chain switch verifies every NF again:
 * - SLUICE_PARSE calls a global function (sluice_parse_xdp_global / sluice_parse_tc_global).
 *   The verifier checks a global function once, on its own, and its caller sees only "returns
 *   an int, writes *pkt": the NF's logic is verified once, not once per way the packet can
 *   look. (SLUICE_PARSE_INLINE saves the call where that does not matter; see there.)
 * - Inside it, each stage (VLAN tag, extension header, transport header) starts from a cursor
 *   the previous stage left in *pkt (offset and next protocol), read back with a volatile load.
 *   The verifier does not track values through that memory, so every path into a stage looks
 *   the same to it and the stage is verified once instead of once per path that reaches it.
 *   Packet pointers are always the start of the frame plus such an offset, bounds-checked
 *   right before use (sluice_hdr).
 * The cost at run time: a few stores and loads to the stack, and with SLUICE_PARSE a call.
 */
#ifndef __SLUICE_PARSE_H
#define __SLUICE_PARSE_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "sluice_types.h"

#ifndef ETH_P_8021Q
#define ETH_P_8021Q 0x8100
#endif
#ifndef ETH_P_8021AD
#define ETH_P_8021AD 0x88A8
#endif

#define SLUICE_MAX_VLAN 2
#define SLUICE_IPV6_MAX_EXT 4
/* Bytes a tc program pulls into the linear area before parsing (headers of any sane packet). */
#define SLUICE_TC_PULL_LEN 128
/* Headers further into the frame than this are not followed (the packet is malformed). */
#define SLUICE_MAX_HDR_OFF 0x3fff

/* struct sluice_pkt.flags */
#define SLUICE_PKT_L4 0x01       /* a TCP/UDP/ICMP/ICMPv6 header was parsed at l4_off */
#define SLUICE_PKT_PORTS 0x02    /* flow.sport/dport are valid (TCP or UDP) */
#define SLUICE_PKT_FRAGMENT 0x04 /* a non-first IP fragment: no transport header */

/* What sluice_parse() found. */
enum sluice_parse_result {
	SLUICE_PARSE_IP = 0,         /* an IPv4 or IPv6 packet; flow is filled in */
	SLUICE_PARSE_NOT_IP = 1,     /* well-formed Ethernet frame that is not IP (ARP, LLDP, ...) */
	SLUICE_PARSE_MALFORMED = -1, /* truncated or inconsistent headers: cannot be classified */
};

/* Parsed view of a packet. Only scalars: it can live on the stack across helper calls. */
struct sluice_pkt {
	struct sluice_flow_key flow; /* 5-tuple; valid for SLUICE_PARSE_IP */
	__u32 len;                   /* bytes as the hook sees them (XDP: linear; tc: skb->len) */
	__u16 eth_proto;             /* EtherType after VLAN tags, host order */
	__u16 l3_off;                /* offset of the IP header from the start of the frame */
	__u16 l4_off;                /* offset of the transport header (with SLUICE_PKT_L4) */
	__u8 family;                 /* 4, 6, or 0 when not IP */
	__u8 flags;                  /* SLUICE_PKT_* */
	__u8 ttl;                    /* IPv4 TTL or IPv6 hop limit */
	__u8 tcp_flags;              /* TCP flags byte (FIN=0x01 SYN=0x02 RST=0x04 ...), TCP only */
	__u8 icmp_type;              /* ICMP/ICMPv6 only */
	__u8 icmp_code;
	/* The parser's cursor between stages (see the top of this file); not for NFs. */
	__u16 cursor_off;  /* offset of the next header */
	__u16 cursor_next; /* what it is: EtherType (host order) or IP protocol */
	__u8 cursor_left;  /* extension headers still to follow */
	__u8 cursor_pad;
};

/* sluice_parse_ipv4/6: the transport header at the cursor is next (internal). */
#define SLUICE_PARSE_L4_NEXT 2

#define SLUICE_IPPROTO_ICMPV6 58
#define SLUICE_IPV6_HOPOPTS 0
#define SLUICE_IPV6_ROUTING 43
#define SLUICE_IPV6_FRAGMENT 44
#define SLUICE_IPV6_AH 51
#define SLUICE_IPV6_DSTOPTS 60

/*
 * Reads back a field of *pkt that the parser wrote: a real load, so the verifier sees an unknown
 * value of the field's type rather than the value of the path it came by.
 */
#define SLUICE_RELOAD(field) (*(volatile __typeof__(field) *)&(field))

/*
 * Loop condition that lets the verifier check a loop body a few times instead of once per
 * round: the may_goto instruction (kernel 6.9 or later), written as bytes because clang 14 does
 * not know it. When the kernel's loop budget (millions of rounds per run) is spent, it is 0.
 * Works for loops whose state the verifier can see repeating: counters read from a map or the
 * packet, not counted up from a constant.
 */
static __always_inline int sluice_can_loop(void)
{
	int more = 0;

	/* may_goto +1: skips the next instruction once the budget is spent */
	asm volatile(".byte 0xe5, 0, 1, 0, 0, 0, 0, 0\n\t%[more] = 1" : [more] "+r"(more));
	return more;
}
#define SLUICE_CAN_LOOP() sluice_can_loop()

/* Points *hdr at size bytes at offset off of the frame; 0 when they are not all there. */
static __always_inline int sluice_hdr(void **hdr, void *data, void *data_end, __u32 off,
				      __u32 size)
{
	/* Keep the offset visibly bounded for the verifier. */
	if (off > SLUICE_MAX_HDR_OFF)
		return 0;
	*hdr = data + off;
	return *hdr + size <= data_end;
}

static __always_inline int sluice_is_vlan(__u16 proto)
{
	return proto == ETH_P_8021Q || proto == ETH_P_8021AD;
}

/* The extension headers followed, as a bit set over their next-header numbers (all below 64). */
#define SLUICE_IPV6_EXT_SET                                                                       \
	((1ULL << SLUICE_IPV6_HOPOPTS) | (1ULL << SLUICE_IPV6_ROUTING) |                          \
	 (1ULL << SLUICE_IPV6_DSTOPTS) | (1ULL << SLUICE_IPV6_FRAGMENT) | (1ULL << SLUICE_IPV6_AH))

static __always_inline int sluice_is_ipv6_ext(__u16 nexthdr)
{
	/* One test rather than five: fewer paths for the verifier to walk. */
	return nexthdr < 64 && ((SLUICE_IPV6_EXT_SET >> nexthdr) & 1);
}

/* The transport header at the cursor (protocol in flow.proto); SLUICE_PARSE_IP or _MALFORMED. */
static __always_inline int sluice_parse_l4(struct sluice_pkt *pkt, void *data, void *data_end)
{
	__u32 off = SLUICE_RELOAD(pkt->cursor_off);
	__u8 proto = SLUICE_RELOAD(pkt->flow.proto);

	if (off > SLUICE_MAX_HDR_OFF)
		return SLUICE_PARSE_MALFORMED;
	pkt->l4_off = off;

	if (proto == IPPROTO_TCP) {
		struct tcphdr *tcp;

		if (!sluice_hdr((void **)&tcp, data, data_end, off, sizeof(*tcp)))
			return SLUICE_PARSE_MALFORMED;
		pkt->flow.sport = tcp->source;
		pkt->flow.dport = tcp->dest;
		pkt->tcp_flags = ((__u8 *)tcp)[13];
		pkt->flags |= SLUICE_PKT_L4 | SLUICE_PKT_PORTS;
	} else if (proto == IPPROTO_UDP) {
		struct udphdr *udp;

		if (!sluice_hdr((void **)&udp, data, data_end, off, sizeof(*udp)))
			return SLUICE_PARSE_MALFORMED;
		pkt->flow.sport = udp->source;
		pkt->flow.dport = udp->dest;
		pkt->flags |= SLUICE_PKT_L4 | SLUICE_PKT_PORTS;
	} else if (proto == IPPROTO_ICMP || proto == SLUICE_IPPROTO_ICMPV6) {
		/* type, code, checksum */
		__u8 *icmp;

		if (!sluice_hdr((void **)&icmp, data, data_end, off, 4))
			return SLUICE_PARSE_MALFORMED;
		pkt->icmp_type = icmp[0];
		pkt->icmp_code = icmp[1];
		pkt->flags |= SLUICE_PKT_L4;
	}
	return SLUICE_PARSE_IP;
}

static __always_inline int sluice_parse_ipv4(struct sluice_pkt *pkt, void *data, void *data_end)
{
	__u32 off = SLUICE_RELOAD(pkt->l3_off);
	struct iphdr *ip;
	__u32 hdr_len;

	if (!sluice_hdr((void **)&ip, data, data_end, off, sizeof(*ip)))
		return SLUICE_PARSE_MALFORMED;
	if (ip->version != 4 || ip->ihl < 5)
		return SLUICE_PARSE_MALFORMED;
	hdr_len = ip->ihl * 4;
	if (bpf_ntohs(ip->tot_len) < hdr_len)
		return SLUICE_PARSE_MALFORMED;

	pkt->family = 4;
	pkt->flow.family = 4;
	pkt->flow.proto = ip->protocol;
	pkt->ttl = ip->ttl;
	pkt->flow.src.be32[2] = bpf_htonl(0xffff);
	pkt->flow.src.be32[3] = ip->saddr;
	pkt->flow.dst.be32[2] = bpf_htonl(0xffff);
	pkt->flow.dst.be32[3] = ip->daddr;

	/* Fragment offset != 0: later fragments carry no transport header. */
	if (ip->frag_off & bpf_htons(0x1fff)) {
		pkt->flags |= SLUICE_PKT_FRAGMENT;
		return SLUICE_PARSE_IP;
	}
	pkt->cursor_off = off + hdr_len;
	return SLUICE_PARSE_L4_NEXT;
}

static __always_inline int sluice_parse_ipv6(struct sluice_pkt *pkt, void *data, void *data_end)
{
	__u32 off = SLUICE_RELOAD(pkt->l3_off);
	struct ipv6hdr *ip6;
	__u16 nexthdr;

	if (!sluice_hdr((void **)&ip6, data, data_end, off, sizeof(*ip6)))
		return SLUICE_PARSE_MALFORMED;
	if (ip6->version != 6)
		return SLUICE_PARSE_MALFORMED;

	pkt->family = 6;
	pkt->flow.family = 6;
	pkt->ttl = ip6->hop_limit;
	__builtin_memcpy(&pkt->flow.src, &ip6->saddr, sizeof(pkt->flow.src));
	__builtin_memcpy(&pkt->flow.dst, &ip6->daddr, sizeof(pkt->flow.dst));
	pkt->cursor_off = off + sizeof(*ip6);
	pkt->cursor_next = ip6->nexthdr;
	pkt->cursor_left = SLUICE_IPV6_MAX_EXT;

	/*
	 * Walk a bounded number of extension headers. A packet with more of them than we follow
	 * is reported malformed rather than unclassified, so that it cannot slip past port rules.
	 */
	while (SLUICE_CAN_LOOP()) {
		__u8 left = SLUICE_RELOAD(pkt->cursor_left);
		__u8 *ext;

		off = SLUICE_RELOAD(pkt->cursor_off);
		nexthdr = SLUICE_RELOAD(pkt->cursor_next);
		if (left == 0 || !sluice_is_ipv6_ext(nexthdr))
			break;
		if (!sluice_hdr((void **)&ext, data, data_end, off, 8))
			return SLUICE_PARSE_MALFORMED;
		if (nexthdr == SLUICE_IPV6_FRAGMENT) {
			/* Bytes 2-3: offset in 8-byte units (upper 13 bits) and flags. */
			if ((((__u16)ext[2] << 8) | ext[3]) & 0xfff8) {
				pkt->flow.proto = ext[0];
				pkt->flags |= SLUICE_PKT_FRAGMENT;
				return SLUICE_PARSE_IP;
			}
			off += 8;
		} else if (nexthdr == SLUICE_IPV6_AH) {
			off += ((__u32)ext[1] + 2) * 4;
		} else {
			off += ((__u32)ext[1] + 1) * 8;
		}
		pkt->cursor_off = off;
		pkt->cursor_next = ext[0];
		pkt->cursor_left = left - 1;
	}
	nexthdr = SLUICE_RELOAD(pkt->cursor_next);
	pkt->flow.proto = nexthdr;
	if (sluice_is_ipv6_ext(nexthdr))
		return SLUICE_PARSE_MALFORMED;
	return SLUICE_PARSE_L4_NEXT;
}

/*
 * Parse the frame in [data, data_end) into *pkt (which the caller zeroed). len is the packet
 * length to account (it may exceed data_end - data for a non-linear skb). Returns an enum
 * sluice_parse_result. Called through the global functions below.
 */
static __always_inline int sluice_parse(struct sluice_pkt *pkt, void *data, void *data_end,
					__u32 len)
{
	struct ethhdr *eth = data;
	__u16 proto;
	int ret, i;

	pkt->len = len;
	if ((void *)(eth + 1) > data_end)
		return SLUICE_PARSE_MALFORMED;
	pkt->cursor_off = sizeof(*eth);
	pkt->cursor_next = bpf_ntohs(eth->h_proto);

	/* Unrolled: each round is verified once, starting from the reloaded cursor. */
#pragma unroll
	for (i = 0; i < SLUICE_MAX_VLAN; i++) {
		__u32 off = SLUICE_RELOAD(pkt->cursor_off);
		__be16 *tag;

		if (!sluice_is_vlan(SLUICE_RELOAD(pkt->cursor_next)))
			break;
		/* TCI (2 bytes), then the inner EtherType. */
		if (!sluice_hdr((void **)&tag, data, data_end, off, 4))
			return SLUICE_PARSE_MALFORMED;
		pkt->cursor_next = bpf_ntohs(tag[1]);
		pkt->cursor_off = off + 4;
	}
	proto = SLUICE_RELOAD(pkt->cursor_next);
	pkt->eth_proto = proto;
	pkt->l3_off = SLUICE_RELOAD(pkt->cursor_off);

	if (proto == ETH_P_IP)
		ret = sluice_parse_ipv4(pkt, data, data_end);
	else if (proto == ETH_P_IPV6)
		ret = sluice_parse_ipv6(pkt, data, data_end);
	else if (sluice_is_vlan(proto))
		return SLUICE_PARSE_MALFORMED; /* more tags than we follow */
	else
		return SLUICE_PARSE_NOT_IP;
	if (ret != SLUICE_PARSE_L4_NEXT)
		return ret;
	return sluice_parse_l4(pkt, data, data_end);
}

/*
 * The parser of XDP programs, verified once per program (global function). pkt may not be
 * NULL; the verifier needs to see that checked.
 */
__attribute__((noinline)) int sluice_parse_xdp_global(struct xdp_md *ctx, struct sluice_pkt *pkt)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;

	if (!pkt)
		return SLUICE_PARSE_MALFORMED;
	return sluice_parse(pkt, data, data_end, (__u32)(data_end - data));
}

/* The parser of tc programs (see sluice_parse_xdp_global); the caller pulled the headers in. */
__attribute__((noinline)) int sluice_parse_tc_global(struct __sk_buff *skb, struct sluice_pkt *pkt)
{
	if (!pkt)
		return SLUICE_PARSE_MALFORMED;
	return sluice_parse(pkt, (void *)(long)skb->data, (void *)(long)skb->data_end, skb->len);
}

static __always_inline int sluice_parse_xdp(struct xdp_md *ctx, struct sluice_pkt *pkt)
{
	__builtin_memset(pkt, 0, sizeof(*pkt));
	return sluice_parse_xdp_global(ctx, pkt);
}

/* Headers of a non-linear skb may sit in fragments; bring them into the linear area. */
static __always_inline void sluice_pull_headers(struct __sk_buff *skb)
{
	__u32 want = skb->len < SLUICE_TC_PULL_LEN ? skb->len : SLUICE_TC_PULL_LEN;

	if ((long)skb->data_end - (long)skb->data < (long)want)
		bpf_skb_pull_data(skb, want);
}

static __always_inline int sluice_parse_tc(struct __sk_buff *skb, struct sluice_pkt *pkt)
{
	sluice_pull_headers(skb);
	__builtin_memset(pkt, 0, sizeof(*pkt));
	return sluice_parse_tc_global(skb, pkt);
}

static __always_inline int sluice_parse_xdp_inline(struct xdp_md *ctx, struct sluice_pkt *pkt)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;

	__builtin_memset(pkt, 0, sizeof(*pkt));
	return sluice_parse(pkt, data, data_end, (__u32)(data_end - data));
}

static __always_inline int sluice_parse_tc_inline(struct __sk_buff *skb, struct sluice_pkt *pkt)
{
	sluice_pull_headers(skb);
	__builtin_memset(pkt, 0, sizeof(*pkt));
	return sluice_parse(pkt, (void *)(long)skb->data, (void *)(long)skb->data_end, skb->len);
}

/*
 * Parse the packet of an XDP or tc context: SLUICE_PARSE(ctx, &pkt). A call of the parser's
 * global function: the NF's logic after it is verified once, whatever the packet looks like.
 */
#define SLUICE_PARSE(ctx, pkt)                                                                    \
	_Generic((ctx), struct xdp_md *: sluice_parse_xdp, struct __sk_buff *: sluice_parse_tc)(  \
		(ctx), (pkt))

/*
 * The same parser inlined into the program: no call (on some CPUs a call costs about as much as
 * the parsing), but the verifier may walk the NF's logic once per kind of packet the parser
 * tells apart. Fine for short NFs without loops (ratelimit and flowmon verify in about as many
 * instructions either way); an NF with a loop over packet fields wants SLUICE_PARSE (the
 * firewall: about 780 instructions instead of 2,500).
 */
#define SLUICE_PARSE_INLINE(ctx, pkt)                                                             \
	_Generic((ctx), struct xdp_md *: sluice_parse_xdp_inline,                                  \
		 struct __sk_buff *: sluice_parse_tc_inline)((ctx), (pkt))

#endif /* __SLUICE_PARSE_H */
