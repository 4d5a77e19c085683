/* SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause */
/*
 * ips: intrusion prevention. Drops (or, with ips_detect_only, only counts) packets whose TCP,
 * UDP or ICMP payload holds the content of a signature from the table, and sources that send
 * SYNs faster than a threshold per second or probe many destination ports in a time window.
 *
 * Signatures: a subset of Snort's content rules: content bytes (case-insensitive with nocase),
 * where in the payload they may start (offset) and must end (offset + depth), transport
 * protocol and port ranges, and an action (drop or alert). The first IPS_SCAN_MAX payload bytes
 * are scanned; IP fragments after the first carry no transport header and are not scanned.
 *
 * Design, so that the scan stays cheap for the verifier and at run time:
 * - The table is one value of a one-entry hash map (like the firewall's): an update replaces it
 *   atomically, so a packet is scanned against the old or the new set, never a mix.
 * - The payload is copied once (bpf_xdp_load_bytes / bpf_skb_load_bytes, which also reads the
 *   non-linear part of an skb) into a per-CPU buffer, then scanned with masked indexes.
 * - A prefilter bit per two-byte prefix (every case variant for nocase signatures) rejects
 *   almost every position; a position whose two bytes start some signature tries only the
 *   signatures in the bucket of those two bytes. One 8-byte load serves four positions. The
 *   cost grows with the payload, barely with the number of signatures.
 * - Each loop is a count-down with SLUICE_CAN_LOOP (may_goto), and the inner two live in global
 *   functions, which the verifier checks once each, on their own.
 * - Each signature tried at a position costs one unit of a per-packet budget (ips_scan_budget):
 *   a payload crafted to hit the prefilter at every position cannot make the scan unbounded in
 *   practice; a packet that spends the budget is dropped (or passed, with ips_budget_drop 0)
 *   and counted under IPS_HIT_SCAN_BUDGET.
 * Hits are counted per signature id (once per packet) in an LRU hash; the stateful rules
 * count under IPS_HIT_SYN_FLOOD and IPS_HIT_PORT_SCAN. Counting is approximate under races
 * between CPUs (no locks on the per-source state), which errs by a packet, not by a rule.
 */
#ifndef __SLUICE_NF_IPS_H
#define __SLUICE_NF_IPS_H

#include "sluice.h"
#include "ips_types.h"

/* Key 0 -> the signature table. No entry means no signatures. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u32);
	__type(value, struct ips_table);
} ips_signatures SEC(".maps");

/*
 * Signature id (or IPS_HIT_*) -> packets it matched. Matches are rare next to packets, so one
 * shared counter with an atomic add costs less than summing per-CPU values on every read.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, IPS_MAX_HIT_KEYS);
	__type(key, __u32);
	__type(value, __u64);
} ips_hits SEC(".maps");

/* Source address -> SYN and port-scan windows. LRU: idle sources make room. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, IPS_MAX_SOURCES);
	__type(key, union sluice_addr);
	__type(value, struct ips_source);
} ips_sources SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ips_scratch);
} ips_scratch SEC(".maps");

const volatile __u32 ips_detect_only = 0;   /* 1: count matches, never drop */
const volatile __u32 ips_syn_threshold = 0; /* SYNs per second per source; 0: off */
const volatile __u32 ips_scan_ports = 0;    /* distinct destination ports; 0: off */
const volatile __u64 ips_scan_window_ns = 10000000000ULL;
/* Signatures one packet may try (past the prefilter) before the scan gives up on it. */
const volatile __u32 ips_scan_budget = 8192;
const volatile __u32 ips_budget_drop = 1; /* 1: drop a packet that used the whole budget */

/* What a scan found. */
enum ips_scan_result {
	IPS_SCAN_CLEAN = 0,     /* no dropping signature matched */
	IPS_SCAN_DROP = 1,      /* a drop signature matched (and the mode is prevent) */
	IPS_SCAN_EXHAUSTED = 2, /* the budget ran out before the scan ended */
};

#define IPS_TCP_SYN 0x02
#define IPS_TCP_ACK 0x10

/* What the scan functions need of the packet (they see no packet pointers). */
struct ips_pkt_info {
	__u32 len;     /* payload bytes copied to the scratch buffer */
	__u16 sport;   /* host order */
	__u16 dport;   /* host order */
	__u8 proto;
	__u8 ports;    /* sport/dport valid */
	__u8 pad[2];
	__u32 budget;  /* signatures this packet may still try */
	__u32 pad2;
	__u64 seen[2]; /* signatures already counted for this packet, by table index */
};

static __always_inline void ips_count(__u32 id)
{
	__u64 one = 1, *hits;

	hits = bpf_map_lookup_elem(&ips_hits, &id);
	if (hits) {
		__sync_fetch_and_add(hits, 1);
		return;
	}
	bpf_map_update_elem(&ips_hits, &id, &one, BPF_NOEXIST);
}

static __always_inline __u8 ips_fold(__u8 c)
{
	return c + ((__u8)(c - 'A') < 26 ? 32 : 0);
}

/* Bucket of a case-folded two-byte prefix (first | second << 8): Fibonacci hashing to 12 bits. */
static __always_inline __u32 ips_bucket_of(__u32 folded)
{
	return ((folded * 2654435761u) >> 20) & (IPS_BUCKETS - 1);
}

/* Whether the content of sig is at pos of the scratch buffer. */
__attribute__((noinline)) int ips_content_at(const struct ips_scratch *s, __u32 pos,
					     const struct ips_signature *sig)
{
	__u32 n, left, j;
	__u8 nocase, c;

	if (!s || !sig)
		return 0;
	n = sig->content_len;
	nocase = sig->flags & IPS_SIG_NOCASE;
	pos &= IPS_SCAN_MAX - 1;
	for (left = SLUICE_RELOAD(sig->content_len); left > 0 && SLUICE_CAN_LOOP(); left--) {
		asm volatile("" : "+r"(left));
		j = n - left;
		if (j >= IPS_MAX_CONTENT)
			return 0;
		c = s->buf[pos + j];
		if (nocase)
			c = ips_fold(c);
		if (c != sig->content[j])
			return 0;
	}
	return 1;
}

/*
 * Tries the signatures of pos's bucket at pos, whose two bytes (first | second << 8) are pair
 * and passed the prefilter. Returns an enum ips_scan_result. Every signature tried costs one
 * unit of the packet's budget, so a payload built to hit the prefilter everywhere costs a
 * bounded amount.
 */
__attribute__((noinline)) int ips_match_at(const struct ips_table *table,
					   const struct ips_scratch *s,
					   struct ips_pkt_info *info, __u32 pos, __u32 pair)
{
	__u32 count, left, first, i, len, end, want, got, folded;
	const struct ips_bucket *bucket;
	const struct ips_signature *sig;
	__u64 bit;

	if (!table || !s || !info)
		return 0;
	len = info->len;
	folded = ips_fold(pair & 0xff) | (__u32)ips_fold((pair >> 8) & 0xff) << 8;
	bucket = &table->buckets[ips_bucket_of(folded)];
	first = bucket->start;
	count = bucket->count;
	for (left = SLUICE_RELOAD(bucket->count); left > 0 && SLUICE_CAN_LOOP(); left--) {
		asm volatile("" : "+r"(left));
		i = first + (count - left);
		if (i >= IPS_MAX_SIGNATURES)
			break;
		if (info->budget == 0)
			return IPS_SCAN_EXHAUSTED;
		info->budget--;
		sig = &table->sigs[i];
		want = sig->content[0] | (__u32)sig->content[1] << 8;
		got = (sig->flags & IPS_SIG_NOCASE) ? folded : pair;
		if (want != got)
			continue;
		end = pos + sig->content_len;
		if (pos < sig->offset || end > len)
			continue;
		if (sig->depth && end > (__u32)sig->offset + sig->depth)
			continue;
		if ((sig->flags & IPS_SIG_PROTO) && sig->proto != info->proto)
			continue;
		if (sig->flags & IPS_SIG_PORTS) {
			if (!info->ports)
				continue;
			if (info->sport < sig->sport_min || info->sport > sig->sport_max)
				continue;
			if (info->dport < sig->dport_min || info->dport > sig->dport_max)
				continue;
		}
		bit = 1ULL << (i & 63);
		if (info->seen[(i >> 6) & 1] & bit)
			continue;
		if (!ips_content_at(s, pos, sig))
			continue;
		info->seen[(i >> 6) & 1] |= bit;
		ips_count(sig->id);
		if (sig->action == IPS_DROP && !ips_detect_only)
			return IPS_SCAN_DROP;
	}
	return IPS_SCAN_CLEAN;
}

/* The prefilter bit of the two bytes in the low 16 bits of word (first byte lowest). */
static __always_inline __u32 ips_prefix_bit(const struct ips_table *table, __u64 word)
{
	__u32 key = word & 0xffff;

	return (table->prefix[key >> 6] >> (key & 63)) & 1;
}

/*
 * Scans the copied payload; returns an enum ips_scan_result. Four positions per round: one
 * 8-byte load gives the two-byte keys of positions pos .. pos+3, and a round whose four bits
 * are all clear (nearly every round) costs that load, four bit tests and the loop.
 */
__attribute__((noinline)) int ips_scan(const struct ips_table *table, const struct ips_scratch *s,
				       struct ips_pkt_info *info)
{
	__u32 blocks, left, pos, hits, i;
	__u64 word;
	int found;

	if (!table || !s || !info)
		return IPS_SCAN_CLEAN;
	/* Positions 0 .. len-2 (each reads two bytes), in blocks of four. */
	blocks = (info->len + 2) / 4;
	if (blocks > IPS_SCAN_MAX / 4)
		return IPS_SCAN_CLEAN;
	for (left = (SLUICE_RELOAD(info->len) + 2) / 4; left > 0 && SLUICE_CAN_LOOP(); left--) {
		asm volatile("" : "+r"(left));
		pos = ((blocks - left) * 4) & (IPS_SCAN_MAX - 1);
		/* Bytes past len are left over from earlier packets: ips_match_at checks len. */
		word = *(const __u64 *)&s->buf[pos];
		hits = ips_prefix_bit(table, word) | ips_prefix_bit(table, word >> 8) << 1 |
		       ips_prefix_bit(table, word >> 16) << 2 | ips_prefix_bit(table, word >> 24) << 3;
		if (!hits)
			continue;
#pragma unroll
		for (i = 0; i < 4; i++) {
			if (!(hits & (1 << i)))
				continue;
			found = ips_match_at(table, s, info, pos + i, (word >> (8 * i)) & 0xffff);
			if (found != IPS_SCAN_CLEAN)
				return found;
		}
	}
	return IPS_SCAN_CLEAN;
}

/* The SYN-flood and port-scan rules for a packet from pkt's source at time now. */
static __always_inline enum sluice_verdict ips_stateful(const struct sluice_pkt *pkt, int parsed,
							__u64 now)
{
	struct ips_source *src;
	__u32 hash, word;
	int syn, probe;
	__u64 bit;

	if (parsed != SLUICE_PARSE_IP || (!ips_syn_threshold && !ips_scan_ports))
		return SLUICE_CONTINUE;
	syn = pkt->flow.proto == IPPROTO_TCP && (pkt->flags & SLUICE_PKT_L4) &&
	      (pkt->tcp_flags & (IPS_TCP_SYN | IPS_TCP_ACK)) == IPS_TCP_SYN;
	probe = syn || (pkt->flow.proto == IPPROTO_UDP && (pkt->flags & SLUICE_PKT_PORTS));
	if (!probe)
		return SLUICE_CONTINUE;

	src = bpf_map_lookup_elem(&ips_sources, &pkt->flow.src);
	if (!src) {
		struct ips_source fresh = { .syn_window_ns = now, .scan_window_ns = now };

		bpf_map_update_elem(&ips_sources, &pkt->flow.src, &fresh, BPF_NOEXIST);
		src = bpf_map_lookup_elem(&ips_sources, &pkt->flow.src);
		if (!src)
			return SLUICE_CONTINUE;
	}

	if (syn && ips_syn_threshold) {
		if (now - src->syn_window_ns >= 1000000000ULL) {
			src->syn_window_ns = now;
			src->syn_count = 0;
		}
		__sync_fetch_and_add(&src->syn_count, 1);
		if (src->syn_count > ips_syn_threshold) {
			ips_count(IPS_HIT_SYN_FLOOD);
			if (!ips_detect_only)
				return SLUICE_DROP;
		}
	}
	if (ips_scan_ports) {
		if (now - src->scan_window_ns >= ips_scan_window_ns) {
			src->scan_window_ns = now;
			src->scan_ports = 0;
			__builtin_memset(src->scan_bits, 0, sizeof(src->scan_bits));
		}
		/* Fibonacci hashing of the port into 512 bits. */
		hash = ((__u32)bpf_ntohs(pkt->flow.dport) * 2654435761u) >> 23;
		word = (hash >> 6) & 7;
		bit = 1ULL << (hash & 63);
		if (!(src->scan_bits[word] & bit)) {
			src->scan_bits[word] |= bit;
			__sync_fetch_and_add(&src->scan_ports, 1);
		}
		if (src->scan_ports >= ips_scan_ports) {
			ips_count(IPS_HIT_PORT_SCAN);
			if (!ips_detect_only)
				return SLUICE_DROP;
		}
	}
	return SLUICE_CONTINUE;
}

/*
 * The whole NF for a parsed packet. is_xdp is a constant: the helper that copies the payload
 * is bpf_xdp_load_bytes for XDP and bpf_skb_load_bytes for tc (non-linear data included).
 */
static __always_inline enum sluice_verdict ips_process(void *ctx, int is_xdp,
						       const struct sluice_pkt *pkt, int parsed)
{
	struct ips_pkt_info info = {};
	const struct ips_table *table;
	struct ips_scratch *scratch;
	enum sluice_verdict verdict;
	__u32 key = 0, off, len;
	__u8 doff = 0;
	long err;

	verdict = ips_stateful(pkt, parsed, bpf_ktime_get_ns());
	if (verdict != SLUICE_CONTINUE || parsed != SLUICE_PARSE_IP || !(pkt->flags & SLUICE_PKT_L4))
		return verdict;
	table = bpf_map_lookup_elem(&ips_signatures, &key);
	if (!table || table->count == 0)
		return SLUICE_CONTINUE;

	off = pkt->l4_off;
	if (pkt->flow.proto == IPPROTO_TCP) {
		err = is_xdp ? bpf_xdp_load_bytes(ctx, off + 12, &doff, 1)
			     : bpf_skb_load_bytes(ctx, off + 12, &doff, 1);
		if (err)
			return SLUICE_CONTINUE;
		off += (doff >> 4) * 4;
	} else {
		off += 8; /* UDP, ICMP and ICMPv6 headers */
	}
	if (pkt->len <= off)
		return SLUICE_CONTINUE;
	len = pkt->len - off;
	if (len > IPS_SCAN_MAX)
		len = IPS_SCAN_MAX;
	if (len < IPS_MIN_CONTENT)
		return SLUICE_CONTINUE;
	scratch = bpf_map_lookup_elem(&ips_scratch, &key);
	if (!scratch)
		return SLUICE_CONTINUE;
	err = is_xdp ? bpf_xdp_load_bytes(ctx, off, scratch->buf, len)
		     : bpf_skb_load_bytes(ctx, off, scratch->buf, len);
	if (err)
		return SLUICE_CONTINUE;

	info.len = len;
	info.proto = pkt->flow.proto;
	info.ports = !!(pkt->flags & SLUICE_PKT_PORTS);
	info.sport = bpf_ntohs(pkt->flow.sport);
	info.dport = bpf_ntohs(pkt->flow.dport);
	info.budget = ips_scan_budget;
	switch (ips_scan(table, scratch, &info)) {
	case IPS_SCAN_DROP:
		return SLUICE_DROP;
	case IPS_SCAN_EXHAUSTED:
		ips_count(IPS_HIT_SCAN_BUDGET);
		return ips_budget_drop && !ips_detect_only ? SLUICE_DROP : SLUICE_CONTINUE;
	default:
		return SLUICE_CONTINUE;
	}
}

#endif /* __SLUICE_NF_IPS_H */
