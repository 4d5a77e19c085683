/* SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause */
/*
 * Bounded packet parsing shared by all NFs: Ethernet, up to two VLAN tags, IPv4 or IPv6 (with
 * up to SLUICE_IPV6_MAX_EXT extension headers), then TCP, UDP, ICMP or ICMPv6.
 *
 * The result is a small struct of scalars (no packet pointers), so NF logic can be written as
 * plain functions over it and a fused program parses once for several NFs. A linked chain
 * parses once too: SLUICE_PARSE_ONCE leaves the result in the chain's sluice_scratch for the
 * NFs after the one that parsed (see "Parse once per packet" below).
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
 * - SLUICE_PARSE_ONCE(_INLINE) parses into the scratch map's entry and reads the result back
 *   from there: to the verifier every way out of the parser then looks alike, as after a
 *   global function, so even the inline parser leaves the NF's logic verified once (the
 *   firewall, with its rule loop, verifies in about as many instructions either way).
 * The cost at run time: a few stores and loads, and with SLUICE_PARSE / SLUICE_PARSE_ONCE a call.
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
 * Parse once per packet in a linked chain. Each NF is its own program, so a chain of n NFs
 * would parse the packet n times; instead the first NF that parses leaves the result in the
 * per-CPU map sluice_scratch, which the loader gives every NF of the chain (by fd, as
 * sluice_stats), and the NFs after it take it from there instead of parsing again.
 *
 * The result may only ever be used for the packet it was parsed from. A chain runs to
 * completion on one CPU without another packet in between (softirq or BH-disabled context), so
 * per CPU it is enough to know which packet the entry was written for:
 * - gen counts packets per CPU: the chain's first NF (the one in slot 0: sluice_next_slot <= 1)
 *   adds one on its way out, whatever its verdict. A result written by the first NF is stamped
 *   gen + 1, by a later NF gen; a later NF takes it only if the stamp equals gen. A packet that
 *   left the chain early therefore cannot leave a result the next packet takes: its first NF
 *   moved gen on before anyone reads.
 * - the chain's NFs share one map in every revision (the chain's, pinned with it), so a last NF
 *   that a new revision takes over from the live one reads the same gen as the NFs before it.
 * - sluice_share_parse (set to 1 by the loader only when it gives every NF of the chain the same
 *   map and every NF follows this contract) turns all of it on; at 0, as in a program loaded on
 *   its own or by other tools, every NF parses and reads the clock itself (SLUICE_PARSE_ONCE
 *   still parses into the scratch entry, as a per-CPU buffer). A lone NF (first and last)
 *   shares nothing either.
 * - a test run that enters at NF i > 0 is not a new packet to NF 0's counter: the self-test
 *   clears the scratch map before each such run (clearScratch in the agent).
 * Only scalars are kept (offsets, not packet pointers): NFs bounds-check again before reading
 * the packet at l3_off / l4_off, as after a parse. An NF that changes the packet's headers or
 * moves its start (bpf_xdp_adjust_head, VLAN push/pop, encapsulation) and then continues must
 * call SLUICE_PARSE_FORGET() so that the next NF parses again.
 *
 * The clock is shared the same way: SLUICE_NOW() reads bpf_ktime_get_ns() once per packet for
 * all NFs of the chain (stamped like the parse result), as one fused program would.
 */
struct sluice_scratch {
	__u64 gen;         /* packets the chain's first NF handed on or ended, this CPU */
	__u64 parse_stamp; /* packet (gen) whose parse result is in parsed and pkt; 0: none */
	__u64 now_stamp;   /* packet (gen) whose clock reading is now_ns; 0: none */
	__u64 now_ns;
	__s32 parsed; /* enum sluice_parse_result */
	__u32 pad;
	struct sluice_pkt pkt;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SLUICE_SCRATCH_ENTRIES); /* key 0: this; the rest: sluice_time_* */
	__type(key, __u32);
	__type(value, struct sluice_scratch);
} sluice_scratch SEC(".maps");

_Static_assert(sizeof(struct sluice_scratch) == SLUICE_SCRATCH_VALUE_SIZE, "sluice_scratch size");

/* 1: share the parse result and the clock through sluice_scratch (written by the loader). */
const volatile __u32 sluice_share_parse = 0;
/* Chain settings, defined in sluice.h. */
extern const volatile __u32 sluice_next_slot;
extern const volatile __u32 sluice_is_last;

/* This NF is the chain's first (slot 0), or runs alone. */
static __always_inline int sluice_is_first(void)
{
	return sluice_next_slot <= 1;
}

/* Sharing is on and someone can use it: not a lone NF. */
static __always_inline int sluice_sharing(void)
{
	return sluice_share_parse && !(sluice_is_first() && sluice_is_last);
}

static __always_inline struct sluice_scratch *sluice_scratch_get(void)
{
	__u32 key = 0;

	return bpf_map_lookup_elem(&sluice_scratch, &key);
}

/* The stamp of the packet at hand (0 when gen never moved: nothing can be taken then). */
static __always_inline __u64 sluice_scratch_stamp(const struct sluice_scratch *s)
{
	return sluice_is_first() ? s->gen + 1 : s->gen;
}

/* This NF is done with the packet (SLUICE_EXIT): the first NF moves gen on to the next packet. */
static __always_inline void sluice_share_done(void)
{
	struct sluice_scratch *s;

	if (!sluice_sharing() || !sluice_is_first())
		return;
	s = sluice_scratch_get();
	if (s)
		s->gen++;
}

/* After changing the packet's headers: the NFs after this one parse again. */
static __always_inline void sluice_parse_forget(void)
{
	struct sluice_scratch *s;

	if (!sluice_sharing())
		return;
	s = sluice_scratch_get();
	if (s)
		s->parse_stamp = 0;
}
#define SLUICE_PARSE_FORGET() sluice_parse_forget()

/* bpf_ktime_get_ns(), read once per packet for the whole chain (see above). */
static __always_inline __u64 sluice_now(void)
{
	struct sluice_scratch *s;
	__u64 stamp, now;

	if (!sluice_sharing())
		return bpf_ktime_get_ns();
	s = sluice_scratch_get();
	if (!s)
		return bpf_ktime_get_ns();
	stamp = sluice_scratch_stamp(s);
	if (!sluice_is_first() && stamp != 0 && s->now_stamp == stamp)
		return s->now_ns;
	now = bpf_ktime_get_ns();
	if (!sluice_is_last) {
		s->now_ns = now;
		s->now_stamp = stamp;
	}
	return now;
}
#define SLUICE_NOW() sluice_now()

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

/* Headers of a non-linear skb may sit in fragments; bring them into the linear area. */
static __always_inline void sluice_pull_headers(struct __sk_buff *skb)
{
	__u32 want = skb->len < SLUICE_TC_PULL_LEN ? skb->len : SLUICE_TC_PULL_LEN;

	if ((long)skb->data_end - (long)skb->data < (long)want)
		bpf_skb_pull_data(skb, want);
}

/* What *pkt points at when sluice_scratch cannot be read (never, but the verifier asks). */
static const struct sluice_pkt sluice_pkt_none;

#define SLUICE_HOOK_XDP 1
#define SLUICE_HOOK_TC 0

/*
 * The parse of this packet, once per chain: points *pktp at the parsed view in sluice_scratch
 * and returns the result (enum sluice_parse_result). An NF after the one that parsed the
 * packet takes its result; otherwise this one parses (into the scratch entry itself, so that
 * nothing is copied) and leaves the result for the NFs after it. use_global: parse with the
 * global function (see SLUICE_PARSE) rather than inline (see SLUICE_PARSE_INLINE).
 */
static __always_inline int sluice_parse_once(void *ctx, int is_xdp, int use_global,
					     const struct sluice_pkt **pktp)
{
	struct sluice_scratch *s = sluice_scratch_get();
	struct sluice_pkt *pkt;
	int ret;

	if (!s) {
		*pktp = &sluice_pkt_none;
		return SLUICE_PARSE_MALFORMED;
	}
	pkt = &s->pkt;
	*pktp = pkt;
	if (sluice_sharing() && !sluice_is_first() && s->gen != 0 && s->parse_stamp == s->gen)
		return s->parsed;

	if (!is_xdp)
		sluice_pull_headers(ctx);
	__builtin_memset(pkt, 0, sizeof(*pkt));
	if (use_global)
		ret = is_xdp ? sluice_parse_xdp_global(ctx, pkt) : sluice_parse_tc_global(ctx, pkt);
	else if (is_xdp) {
		void *data = (void *)(long)((struct xdp_md *)ctx)->data;
		void *data_end = (void *)(long)((struct xdp_md *)ctx)->data_end;

		ret = sluice_parse(pkt, data, data_end, (__u32)(data_end - data));
	} else {
		struct __sk_buff *skb = ctx;

		ret = sluice_parse(pkt, (void *)(long)skb->data, (void *)(long)skb->data_end, skb->len);
	}
	/*
	 * Read back: to the verifier every way out of the parser then looks alike (the result
	 * and the parsed view both unknown, as when taken), so the NF's logic is checked once.
	 */
	s->parsed = ret;
	if (sluice_sharing() && !sluice_is_last)
		s->parse_stamp = sluice_scratch_stamp(s);
	return SLUICE_RELOAD(s->parsed);
}

/*
 * Copies a shared parse result into an NF's own struct. A global function, so that to the
 * verifier the copy is unknown bytes, as after the parser: copied inline, every field on the
 * stack would carry what the verifier knows of it, and the NF's logic be walked once more for
 * every way its branches narrowed those fields (l4lb: 2,067 instructions instead of 1,726).
 */
__attribute__((noinline)) int sluice_copy_pkt(struct sluice_pkt *dst, const struct sluice_pkt *src)
{
	if (!dst || !src)
		return 0;
	__builtin_memcpy(dst, src, sizeof(*dst));
	return 0;
}

static __always_inline int sluice_parse_xdp(struct xdp_md *ctx, struct sluice_pkt *pkt)
{
	const struct sluice_pkt *shared;
	int ret;

	if (!sluice_sharing()) {
		__builtin_memset(pkt, 0, sizeof(*pkt));
		return sluice_parse_xdp_global(ctx, pkt);
	}
	ret = sluice_parse_once(ctx, SLUICE_HOOK_XDP, 1, &shared);
	sluice_copy_pkt(pkt, shared);
	return ret;
}

static __always_inline int sluice_parse_tc(struct __sk_buff *skb, struct sluice_pkt *pkt)
{
	const struct sluice_pkt *shared;
	int ret;

	if (!sluice_sharing()) {
		sluice_pull_headers(skb);
		__builtin_memset(pkt, 0, sizeof(*pkt));
		return sluice_parse_tc_global(skb, pkt);
	}
	ret = sluice_parse_once(skb, SLUICE_HOOK_TC, 1, &shared);
	sluice_copy_pkt(pkt, shared);
	return ret;
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
 * The parse of this packet shared along the chain: `const struct sluice_pkt *pkt; int parsed =
 * SLUICE_PARSE_ONCE(ctx, &pkt);` points pkt at the result (in sluice_scratch; read it, do not
 * write it) and returns what SLUICE_PARSE returns. Parses with the global function, like
 * SLUICE_PARSE; SLUICE_PARSE_ONCE_INLINE parses inline, like SLUICE_PARSE_INLINE. Either
 * parses only when no NF before it in the chain did for this packet.
 */
/*
 * SLUICE_NOW() without its map lookup, for an NF whose pkt came from SLUICE_PARSE_ONCE(_INLINE):
 * the scratch entry is the one pkt points into. Call it only where parsed is SLUICE_PARSE_IP or
 * SLUICE_PARSE_NOT_IP (as ratelimit and flowmon do): with no scratch entry (which the verifier of
 * an older kernel may consider) the parse says SLUICE_PARSE_MALFORMED and pkt points elsewhere.
 */
static __always_inline __u64 sluice_now_of(const struct sluice_pkt *pkt)
{
	struct sluice_scratch *s = (void *)pkt - __builtin_offsetof(struct sluice_scratch, pkt);
	__u64 stamp, now;

	if (!sluice_sharing())
		return bpf_ktime_get_ns();
	stamp = sluice_scratch_stamp(s);
	if (!sluice_is_first() && stamp != 0 && s->now_stamp == stamp)
		return s->now_ns;
	now = bpf_ktime_get_ns();
	if (!sluice_is_last) {
		s->now_ns = now;
		s->now_stamp = stamp;
	}
	return now;
}
#define SLUICE_NOW_OF(pkt) sluice_now_of(pkt)

#define SLUICE_PARSE_ONCE(ctx, pktp)                                                              \
	sluice_parse_once((ctx), _Generic((ctx), struct xdp_md *: SLUICE_HOOK_XDP,                 \
					  struct __sk_buff *: SLUICE_HOOK_TC),                     \
			  1, (pktp))
#define SLUICE_PARSE_ONCE_INLINE(ctx, pktp)                                                       \
	sluice_parse_once((ctx), _Generic((ctx), struct xdp_md *: SLUICE_HOOK_XDP,                 \
					  struct __sk_buff *: SLUICE_HOOK_TC),                     \
			  0, (pktp))

/*
 * Parse the packet of an XDP or tc context into the NF's own copy: SLUICE_PARSE(ctx, &pkt). A
 * call of the parser's global function: the NF's logic after it is verified once, whatever the
 * packet looks like. In a chain that shares the parse it takes (or leaves) the shared result as
 * SLUICE_PARSE_ONCE does, and copies it into *pkt (64 bytes).
 */
#define SLUICE_PARSE(ctx, pkt)                                                                    \
	_Generic((ctx), struct xdp_md *: sluice_parse_xdp, struct __sk_buff *: sluice_parse_tc)(  \
		(ctx), (pkt))

/*
 * The same parser inlined into the program: no call (on some CPUs a call costs about as much as
 * the parsing), but the verifier may walk the NF's logic once per kind of packet the parser
 * tells apart. Fine for short NFs without loops; an NF with a loop over packet fields wants
 * SLUICE_PARSE or SLUICE_PARSE_ONCE_INLINE (the firewall with this one: about 2,500
 * instructions instead of 800-900). It never shares the parse along the chain.
 */
#define SLUICE_PARSE_INLINE(ctx, pkt)                                                             \
	_Generic((ctx), struct xdp_md *: sluice_parse_xdp_inline,                                  \
		 struct __sk_buff *: sluice_parse_tc_inline)((ctx), (pkt))

#endif /* __SLUICE_PARSE_H */
