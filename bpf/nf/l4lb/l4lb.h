/* SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause */
/*
 * l4lb: layer-4 load balancer. A TCP or UDP packet to a virtual IP and port (a service in
 * l4lb_services) gets a backend by Maglev consistent hashing of its 5-tuple, and its destination
 * rewritten to that backend's address and port (DNAT, IPv4 and IPv6, with the IP and TCP/UDP
 * checksums updated incrementally); the chain then goes on and the stack (or a router NF after
 * this one) forwards it. The backend's reply, when it passes through the chain, gets the virtual
 * IP and port back as its source (l4lb_reverse), so the client sees one peer.
 *
 * - Affinity: the backend chosen for a flow is remembered in l4lb_flows (LRU). Later packets of
 *   the flow go to it while it is in the service and healthy, whatever the table says since:
 *   a backend added, removed or a revision switched moves no established connection. The map's
 *   shape never depends on parameters, so it carries over to every new revision of the chain.
 * - Maglev (see Eisenbud et al., NSDI 2016): user space fills each service's ring (a prime
 *   number of entries) so that every healthy backend owns an equal share of entries and a
 *   backend change moves about its own share of them. The data path is one hash and one index.
 * - Health: each backend has a flag in the service value. Unhealthy backends are not in the
 *   ring, and flows remembered on one are given a new backend (and remembered again).
 * - A service is one map value, replaced as a whole by RCU: a packet sees the old or the new
 *   service, never a mix of them.
 *
 * Not handled: IP fragments after the first (no ports: they go on unchanged), ICMP errors about
 * a balanced flow (not translated), IPv4 options with a TCP/UDP header past them are fine (the
 * parser finds the transport header).
 */
#ifndef __SLUICE_NF_L4LB_H
#define __SLUICE_NF_L4LB_H

#include "sluice.h"
#include "l4lb_types.h"

#ifndef BPF_F_PSEUDO_HDR
#define BPF_F_PSEUDO_HDR (1ULL << 4)
#endif
#ifndef BPF_F_MARK_MANGLED_0
#define BPF_F_MARK_MANGLED_0 (1ULL << 5)
#endif

/* Virtual IP, port, protocol -> the service (backends and Maglev ring). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, L4LB_MAX_SERVICES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct l4lb_vip);
	__type(value, struct l4lb_service);
} l4lb_services SEC(".maps");

/* Client 5-tuple towards the virtual IP -> its backend (connection affinity). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, L4LB_MAX_FLOWS);
	__type(key, struct sluice_flow_key);
	__type(value, struct l4lb_flow);
} l4lb_flows SEC(".maps");

/* Backend's reply 5-tuple -> the virtual IP and port to put back as its source. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, L4LB_MAX_FLOWS);
	__type(key, struct sluice_flow_key);
	__type(value, struct l4lb_nat);
} l4lb_reverse SEC(".maps");

/* 1: remember each flow's backend (connection affinity); 0: every packet follows the ring. */
const volatile __u32 l4lb_affinity = 1;

#define L4LB_NOT_FOUND 0xffff

/*
 * After a rewrite: NFs after this one must not take a parse result shared along the chain (it
 * holds the addresses from before), where the chain header shares one.
 */
#ifdef SLUICE_PARSE_FORGET
#define L4LB_REWRITTEN() SLUICE_PARSE_FORGET()
#else
#define L4LB_REWRITTEN() ((void)0)
#endif

static __always_inline __u32 l4lb_rotl(__u32 x, int r)
{
	return (x << r) | (x >> (32 - r));
}

/* One round of MurmurHash3's 32-bit body. */
static __always_inline __u32 l4lb_mix(__u32 h, __u32 k)
{
	k *= 0xcc9e2d51;
	k = l4lb_rotl(k, 15);
	k *= 0x1b873593;
	h ^= k;
	h = l4lb_rotl(h, 13);
	return h * 5 + 0xe6546b64;
}

/* Hash of a flow's 5-tuple (the same for every packet of the flow, on every node). */
static __always_inline __u32 l4lb_hash(const struct sluice_flow_key *flow)
{
	__u32 h = 0x9747b28c ^ flow->proto;

	h = l4lb_mix(h, flow->src.be32[0]);
	h = l4lb_mix(h, flow->src.be32[1]);
	h = l4lb_mix(h, flow->src.be32[2]);
	h = l4lb_mix(h, flow->src.be32[3]);
	h = l4lb_mix(h, flow->dst.be32[3]);
	h = l4lb_mix(h, ((__u32)flow->sport << 16) | flow->dport);
	/* MurmurHash3's finalizer: every input bit reaches every output bit. */
	h ^= h >> 16;
	h *= 0x85ebca6b;
	h ^= h >> 13;
	h *= 0xc2b2ae35;
	h ^= h >> 16;
	return h;
}

static __always_inline int l4lb_same_backend(const struct l4lb_backend *be, const struct l4lb_flow *flow)
{
	return be->addr.u64[0] == flow->addr.u64[0] && be->addr.u64[1] == flow->addr.u64[1] &&
	       be->port == flow->port;
}

/*
 * Index of flow's backend in svc, or L4LB_NOT_FOUND. Only after the service changed (the
 * backend's index moved): a global function, verified once on its own.
 */
__attribute__((noinline)) int l4lb_find_backend(const struct l4lb_service *svc,
						const struct l4lb_flow *flow)
{
	__u32 count, left, i;

	if (!svc || !flow)
		return L4LB_NOT_FOUND;
	count = svc->backend_count;
	for (left = SLUICE_RELOAD(svc->backend_count); left > 0 && SLUICE_CAN_LOOP(); left--) {
		asm volatile("" : "+r"(left));
		i = count - left;
		if (i >= L4LB_MAX_BACKENDS)
			break;
		if (l4lb_same_backend(&svc->backends[i], flow))
			return i;
	}
	return L4LB_NOT_FOUND;
}

static __always_inline __u32 l4lb_csum_add(__u32 a, __u32 b)
{
	__u32 sum = a + b;

	return sum + (sum < a);
}

/* A checksum field updated by a ones'-complement difference (RFC 1624, eqn. 3). */
static __always_inline __u16 l4lb_csum_update(__u16 check, __u32 diff)
{
	__u32 sum = l4lb_csum_add((__u16)~check, diff);

	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)~sum;
}

/* What l4lb_rewrite_xdp / _tc change in a packet (filled by l4lb_rewrite). */
struct l4lb_rw {
	union sluice_addr old_addr; /* the address being replaced */
	union sluice_addr new_addr;
	__u32 l3_off;
	__u32 l4_off;
	__be32 old_port;    /* in the low 16 bits, as in the packet */
	__be32 new_port;
	__u32 addr_diff;    /* ones'-complement difference of the address (written by the rewrite) */
	__u8 family;        /* 4 or 6 */
	__u8 udp;           /* 1 UDP, 0 TCP */
	__u8 dst;           /* 1 destination, 0 source */
	__u8 pad;
};

/*
 * The rewrite as global functions, one per hook, each verified once on its own. Inside, the
 * address part forks on the family; the port and TCP/UDP checksum part then reads what it needs
 * back from *rw (memory the verifier does not track), so both families continue as one path.
 * XDP writes the frame directly; tc uses the skb helpers, which also handle a checksum the
 * device is still to complete (CHECKSUM_PARTIAL from a local socket). Return 0, or -1 when the
 * headers are not where the parser found them.
 */
__attribute__((noinline)) int l4lb_rewrite_xdp(struct xdp_md *ctx, struct l4lb_rw *rw)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 l3, l4, port_diff, sum;
	__u16 *check, *ip_check;
	__be16 *port_field;
	__u8 *field;
	int udp;

	if (!rw)
		return -1;
	l3 = rw->l3_off;
	if (l3 > SLUICE_MAX_HDR_OFF)
		return -1;
	if (rw->family == 4) {
		if (!sluice_hdr((void **)&field, data, data_end, l3 + (rw->dst ? 16 : 12), 4) ||
		    !sluice_hdr((void **)&ip_check, data, data_end, l3 + 10, 2))
			return -1;
		rw->addr_diff = bpf_csum_diff(&rw->old_addr.be32[3], 4, &rw->new_addr.be32[3], 4, 0);
		*(__be32 *)field = rw->new_addr.be32[3];
		*ip_check = l4lb_csum_update(*ip_check, rw->addr_diff);
	} else {
		if (!sluice_hdr((void **)&field, data, data_end, l3 + (rw->dst ? 24 : 8), 16))
			return -1;
		rw->addr_diff = bpf_csum_diff(rw->old_addr.be32, 16, rw->new_addr.be32, 16, 0);
		__builtin_memcpy(field, rw->new_addr.u8, 16);
	}

	l4 = SLUICE_RELOAD(rw->l4_off);
	udp = SLUICE_RELOAD(rw->udp) & 1;
	if (l4 > SLUICE_MAX_HDR_OFF)
		return -1;
	if (!sluice_hdr((void **)&check, data, data_end, l4 + (udp ? 6 : 16), 2) ||
	    !sluice_hdr((void **)&port_field, data, data_end, l4 + ((rw->dst & 1) << 1), 2))
		return -1;
	port_diff = bpf_csum_diff(&rw->old_port, 4, &rw->new_port, 4, 0);
	*port_field = (__be16)rw->new_port;
	/* A UDP checksum of 0 means none (IPv4); a computed 0 is sent as 0xffff. */
	if (!udp || *check) {
		sum = l4lb_csum_update(*check, l4lb_csum_add(SLUICE_RELOAD(rw->addr_diff), port_diff));
		*check = udp && sum == 0 ? 0xffff : sum;
	}
	return 0;
}

__attribute__((noinline)) int l4lb_rewrite_tc(struct __sk_buff *skb, struct l4lb_rw *rw)
{
	__u32 l3, check_off;
	__u64 mangled0;

	if (!rw)
		return -1;
	l3 = rw->l3_off;
	if (l3 > SLUICE_MAX_HDR_OFF)
		return -1;
	if (rw->family == 4) {
		rw->addr_diff = bpf_csum_diff(&rw->old_addr.be32[3], 4, &rw->new_addr.be32[3], 4, 0);
		if (bpf_skb_store_bytes(skb, l3 + (rw->dst ? 16 : 12), &rw->new_addr.be32[3], 4, 0) ||
		    bpf_l3_csum_replace(skb, l3 + 10, 0, rw->addr_diff, 0))
			return -1;
	} else {
		rw->addr_diff = bpf_csum_diff(rw->old_addr.be32, 16, rw->new_addr.be32, 16, 0);
		if (bpf_skb_store_bytes(skb, l3 + (rw->dst ? 24 : 8), rw->new_addr.u8, 16, 0))
			return -1;
	}

	check_off = SLUICE_RELOAD(rw->l4_off);
	if (check_off > SLUICE_MAX_HDR_OFF)
		return -1;
	mangled0 = (SLUICE_RELOAD(rw->udp) & 1) ? BPF_F_MARK_MANGLED_0 : 0;
	check_off += mangled0 ? 6 : 16;
	if (bpf_l4_csum_replace(skb, check_off, 0, SLUICE_RELOAD(rw->addr_diff), BPF_F_PSEUDO_HDR | mangled0) ||
	    bpf_skb_store_bytes(skb, rw->l4_off + ((rw->dst & 1) << 1), &rw->new_port, 2, 0) ||
	    bpf_l4_csum_replace(skb, check_off, rw->old_port, rw->new_port, 2 | mangled0))
		return -1;
	return 0;
}

/*
 * Rewrites the destination (dst 1) or source (dst 0) address and port of the parsed TCP/UDP
 * packet to addr:port, updating the IPv4 header checksum and the TCP/UDP checksum (whose
 * pseudo-header holds the address). Returns 0, or -1 (see l4lb_rewrite_xdp).
 */
static __always_inline int l4lb_rewrite(void *ctx, int is_xdp, const struct sluice_pkt *pkt, int dst,
					const union sluice_addr *addr, __be16 port)
{
	struct l4lb_rw rw = {
		.old_addr = dst ? pkt->flow.dst : pkt->flow.src,
		.new_addr = *addr,
		.l3_off = pkt->l3_off,
		.l4_off = pkt->l4_off,
		.old_port = dst ? pkt->flow.dport : pkt->flow.sport,
		.new_port = port,
		.family = pkt->family,
		.udp = pkt->flow.proto == IPPROTO_UDP,
		.dst = dst,
	};

	return is_xdp ? l4lb_rewrite_xdp(ctx, &rw) : l4lb_rewrite_tc(ctx, &rw);
}

/* Remembers where the backend's replies to this flow must come from: the virtual IP and port. */
static __always_inline void l4lb_remember_reply(const struct sluice_pkt *pkt, const struct l4lb_backend *be)
{
	struct sluice_flow_key reply = {};
	struct l4lb_nat nat = {};

	reply.src = be->addr;
	reply.dst = pkt->flow.src;
	reply.sport = be->port;
	reply.dport = pkt->flow.sport;
	reply.proto = pkt->flow.proto;
	reply.family = pkt->flow.family;
	if (!l4lb_affinity && bpf_map_lookup_elem(&l4lb_reverse, &reply))
		return;
	nat.addr = pkt->flow.dst;
	nat.port = pkt->flow.dport;
	bpf_map_update_elem(&l4lb_reverse, &reply, &nat, BPF_ANY);
}

/* A packet to the service svc: to its remembered backend if that one is healthy, else by the ring. */
static __always_inline enum sluice_verdict l4lb_to_backend(void *ctx, int is_xdp,
							   struct sluice_pkt *pkt,
							   const struct l4lb_service *svc)
{
	const struct l4lb_backend *be = 0;
	struct l4lb_flow *known = 0;
	__u32 slot, idx, size;

	if (l4lb_affinity) {
		known = bpf_map_lookup_elem(&l4lb_flows, &pkt->flow);
		if (known) {
			slot = known->slot;
			if (slot >= L4LB_MAX_BACKENDS || !l4lb_same_backend(&svc->backends[slot], known)) {
				/* The service changed since: find the backend by its address. */
				slot = l4lb_find_backend(svc, known);
				if (slot < L4LB_MAX_BACKENDS)
					known->slot = slot;
			}
			if (slot < L4LB_MAX_BACKENDS && (svc->backends[slot].flags & L4LB_BACKEND_HEALTHY))
				be = &svc->backends[slot];
		}
	}
	if (!be) {
		size = svc->ring_size;
		if (svc->healthy_count == 0 || size == 0)
			return SLUICE_DROP; /* no backend can take it */
		idx = l4lb_hash(&pkt->flow) % size;
		if (idx >= L4LB_RING_MAX)
			return SLUICE_ABORTED;
		slot = svc->ring[idx];
		be = &svc->backends[slot];
		if (!(be->flags & L4LB_BACKEND_HEALTHY))
			return SLUICE_ABORTED; /* a ring the table encoder would not write */
		if (l4lb_affinity) {
			struct l4lb_flow chosen = { .addr = be->addr, .port = be->port, .slot = slot };

			bpf_map_update_elem(&l4lb_flows, &pkt->flow, &chosen, BPF_ANY);
		}
		l4lb_remember_reply(pkt, be);
	}
	if (l4lb_rewrite(ctx, is_xdp, pkt, 1, &be->addr, be->port))
		return SLUICE_ABORTED;
	pkt->flow.dst = be->addr;
	pkt->flow.dport = be->port;
	L4LB_REWRITTEN();
	return SLUICE_CONTINUE;
}

/*
 * The whole NF for a parsed packet. is_xdp is a constant (1 for XDP, 0 for tc): it picks how
 * the packet is written. pkt is not const: after a rewrite it holds the new addresses and
 * ports, so that the NFs after this one in a fused program (which share this parse) see the
 * packet as it now is.
 */
static __always_inline enum sluice_verdict l4lb_process(void *ctx, int is_xdp,
							struct sluice_pkt *pkt, int parsed)
{
	const struct l4lb_service *svc;
	struct l4lb_vip vip = {};
	struct l4lb_nat *nat;

	/* TCP or UDP with ports (not a later fragment). */
	if (parsed != SLUICE_PARSE_IP || !(pkt->flags & SLUICE_PKT_PORTS))
		return SLUICE_CONTINUE;
	vip.addr = pkt->flow.dst;
	vip.port = pkt->flow.dport;
	vip.proto = pkt->flow.proto;
	svc = bpf_map_lookup_elem(&l4lb_services, &vip);
	if (svc)
		return l4lb_to_backend(ctx, is_xdp, pkt, svc);

	/* A backend's reply: its source becomes the virtual IP and port again. */
	nat = bpf_map_lookup_elem(&l4lb_reverse, &pkt->flow);
	if (!nat)
		return SLUICE_CONTINUE;
	if (l4lb_rewrite(ctx, is_xdp, pkt, 0, &nat->addr, nat->port))
		return SLUICE_ABORTED;
	pkt->flow.src = nat->addr;
	pkt->flow.sport = nat->port;
	L4LB_REWRITTEN();
	return SLUICE_CONTINUE;
}

#endif /* __SLUICE_NF_L4LB_H */
