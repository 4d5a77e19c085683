/* SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause */
/*
 * Bounded packet parsing shared by all NFs: Ethernet, up to two VLAN tags, IPv4 or IPv6 (with
 * up to SLUICE_IPV6_MAX_EXT extension headers), then TCP, UDP, ICMP or ICMPv6.
 *
 * The result is a small struct of scalars (no packet pointers), so NF logic can be written as
 * plain functions over it and a fused program parses once for several NFs.
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
};

#define SLUICE_IPPROTO_ICMPV6 58
#define SLUICE_IPV6_HOPOPTS 0
#define SLUICE_IPV6_ROUTING 43
#define SLUICE_IPV6_FRAGMENT 44
#define SLUICE_IPV6_AH 51
#define SLUICE_IPV6_DSTOPTS 60

/* Parse the transport header at off; returns SLUICE_PARSE_IP or SLUICE_PARSE_MALFORMED. */
static __always_inline int sluice_parse_l4(struct sluice_pkt *pkt, void *data, void *data_end,
					   __u32 off)
{
	__u8 proto = pkt->flow.proto;

	/* Keep the offset visibly bounded for the verifier. */
	if (off > 0x3fff)
		return SLUICE_PARSE_MALFORMED;
	pkt->l4_off = off;

	if (proto == IPPROTO_TCP) {
		struct tcphdr *tcp = data + off;

		if ((void *)(tcp + 1) > data_end)
			return SLUICE_PARSE_MALFORMED;
		pkt->flow.sport = tcp->source;
		pkt->flow.dport = tcp->dest;
		pkt->tcp_flags = ((__u8 *)tcp)[13];
		pkt->flags |= SLUICE_PKT_L4 | SLUICE_PKT_PORTS;
	} else if (proto == IPPROTO_UDP) {
		struct udphdr *udp = data + off;

		if ((void *)(udp + 1) > data_end)
			return SLUICE_PARSE_MALFORMED;
		pkt->flow.sport = udp->source;
		pkt->flow.dport = udp->dest;
		pkt->flags |= SLUICE_PKT_L4 | SLUICE_PKT_PORTS;
	} else if (proto == IPPROTO_ICMP || proto == SLUICE_IPPROTO_ICMPV6) {
		__u8 *icmp = data + off;

		/* type, code, checksum */
		if ((void *)(icmp + 4) > data_end)
			return SLUICE_PARSE_MALFORMED;
		pkt->icmp_type = icmp[0];
		pkt->icmp_code = icmp[1];
		pkt->flags |= SLUICE_PKT_L4;
	}
	return SLUICE_PARSE_IP;
}

static __always_inline int sluice_parse_ipv4(struct sluice_pkt *pkt, void *data, void *data_end)
{
	struct iphdr *ip = data + pkt->l3_off;
	__u32 hdr_len;

	if ((void *)(ip + 1) > data_end)
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
	return sluice_parse_l4(pkt, data, data_end, pkt->l3_off + hdr_len);
}

static __always_inline int sluice_parse_ipv6(struct sluice_pkt *pkt, void *data, void *data_end)
{
	struct ipv6hdr *ip6 = data + pkt->l3_off;
	__u32 off;
	__u8 nexthdr;
	int i;

	if ((void *)(ip6 + 1) > data_end)
		return SLUICE_PARSE_MALFORMED;
	if (ip6->version != 6)
		return SLUICE_PARSE_MALFORMED;

	pkt->family = 6;
	pkt->flow.family = 6;
	pkt->ttl = ip6->hop_limit;
	__builtin_memcpy(&pkt->flow.src, &ip6->saddr, sizeof(pkt->flow.src));
	__builtin_memcpy(&pkt->flow.dst, &ip6->daddr, sizeof(pkt->flow.dst));

	nexthdr = ip6->nexthdr;
	off = pkt->l3_off + sizeof(*ip6);

	/*
	 * Walk a bounded number of extension headers. A packet with more of them than we follow
	 * is reported malformed rather than unclassified, so that it cannot slip past port rules.
	 */
	for (i = 0; i < SLUICE_IPV6_MAX_EXT; i++) {
		__u8 *ext;

		if (nexthdr != SLUICE_IPV6_HOPOPTS && nexthdr != SLUICE_IPV6_ROUTING &&
		    nexthdr != SLUICE_IPV6_DSTOPTS && nexthdr != SLUICE_IPV6_FRAGMENT &&
		    nexthdr != SLUICE_IPV6_AH)
			break;
		if (off > 0x3fff)
			return SLUICE_PARSE_MALFORMED;
		ext = data + off;
		if ((void *)(ext + 8) > data_end)
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
		nexthdr = ext[0];
	}
	pkt->flow.proto = nexthdr;
	if (nexthdr == SLUICE_IPV6_HOPOPTS || nexthdr == SLUICE_IPV6_ROUTING ||
	    nexthdr == SLUICE_IPV6_DSTOPTS || nexthdr == SLUICE_IPV6_FRAGMENT ||
	    nexthdr == SLUICE_IPV6_AH)
		return SLUICE_PARSE_MALFORMED;
	return sluice_parse_l4(pkt, data, data_end, off);
}

/*
 * Parse the frame in [data, data_end). len is the packet length to account (it may exceed
 * data_end - data for a non-linear skb). Returns an enum sluice_parse_result.
 */
static __always_inline int sluice_parse(struct sluice_pkt *pkt, void *data, void *data_end,
					__u32 len)
{
	struct ethhdr *eth = data;
	__u16 proto;
	__u32 off;
	int i;

	__builtin_memset(pkt, 0, sizeof(*pkt));
	pkt->len = len;

	if ((void *)(eth + 1) > data_end)
		return SLUICE_PARSE_MALFORMED;
	proto = eth->h_proto;
	off = sizeof(*eth);

	for (i = 0; i < SLUICE_MAX_VLAN; i++) {
		__be16 *tag;

		if (proto != bpf_htons(ETH_P_8021Q) && proto != bpf_htons(ETH_P_8021AD))
			break;
		/* TCI (2 bytes), then the inner EtherType. */
		tag = data + off;
		if ((void *)(tag + 2) > data_end)
			return SLUICE_PARSE_MALFORMED;
		proto = tag[1];
		off += 4;
	}
	pkt->eth_proto = bpf_ntohs(proto);
	pkt->l3_off = off;

	if (proto == bpf_htons(ETH_P_IP))
		return sluice_parse_ipv4(pkt, data, data_end);
	if (proto == bpf_htons(ETH_P_IPV6))
		return sluice_parse_ipv6(pkt, data, data_end);
	if (proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD))
		return SLUICE_PARSE_MALFORMED; /* more tags than we follow */
	return SLUICE_PARSE_NOT_IP;
}

static __always_inline int sluice_parse_xdp(struct xdp_md *ctx, struct sluice_pkt *pkt)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;

	return sluice_parse(pkt, data, data_end, (__u32)(data_end - data));
}

static __always_inline int sluice_parse_tc(struct __sk_buff *skb, struct sluice_pkt *pkt)
{
	__u32 want = skb->len < SLUICE_TC_PULL_LEN ? skb->len : SLUICE_TC_PULL_LEN;

	/* Headers of a non-linear skb may sit in fragments; bring them into the linear area. */
	if ((long)skb->data_end - (long)skb->data < (long)want)
		bpf_skb_pull_data(skb, want);
	return sluice_parse(pkt, (void *)(long)skb->data, (void *)(long)skb->data_end, skb->len);
}

/* Parse the packet of an XDP or tc context: SLUICE_PARSE(ctx, &pkt). */
#define SLUICE_PARSE(ctx, pkt)                                                                    \
	_Generic((ctx), struct xdp_md *: sluice_parse_xdp, struct __sk_buff *: sluice_parse_tc)(  \
		(ctx), (pkt))

#endif /* __SLUICE_PARSE_H */
