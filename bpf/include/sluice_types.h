/* SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause */
/*
 * Structures of the chain contract that user space reads or writes.
 *
 * Mirrored field by field in node-agent/src/nf/structs.ts; a change here is a change of the
 * on-map format and must be made there too (the loader compares both against the BTF).
 */
#ifndef __SLUICE_TYPES_H
#define __SLUICE_TYPES_H

#include <linux/types.h>

/* Most NFs in one chain; sluice_progs has one more slot so that slot indexes stay 0-based. */
#define SLUICE_MAX_NFS 32
#define SLUICE_PROGS_ENTRIES (SLUICE_MAX_NFS + 1)
/* Stats slots per chain: indexes are stable per NF name across revisions, so leave headroom. */
#define SLUICE_STATS_ENTRIES 64

/*
 * Per-function time, sampled (off unless the loader sets sluice_time_sample). It lives in the
 * chain's per-CPU sluice_scratch map after the parse entry (key 0): key SLUICE_TIME_STAMP holds
 * the clock stamp of the sampled packet in flight (ns; 0: this packet is not timed) and the
 * packet counter that picks the samples (samples); key SLUICE_TIME_BASE + i holds the time sums
 * of the NF with stats index i. Every value is SLUICE_SCRATCH_VALUE_SIZE bytes (struct
 * sluice_scratch); these entries use the first 16.
 */
#define SLUICE_TIME_STAMP 1
#define SLUICE_TIME_BASE 2
#define SLUICE_SCRATCH_ENTRIES (SLUICE_TIME_BASE + SLUICE_STATS_ENTRIES)
#define SLUICE_SCRATCH_VALUE_SIZE 104

/* Time of sampled packets charged to one NF: from the stamp before it to its exit. */
struct sluice_nf_time {
	__u64 ns;      /* sum of the sampled packets' time in this NF */
	__u64 samples; /* sampled packets that went through this NF */
};

/*
 * Per-NF counters in sluice_stats (per CPU; user space sums the CPUs).
 *
 * A packet is counted once, by the NF where its walk through the chain ended, so that
 * packets == drops + passes + errors for every NF.
 */
struct sluice_nf_stats {
	__u64 packets; /* packets whose walk ended in this NF */
	__u64 bytes;   /* their bytes, as the hook saw them */
	__u64 drops;   /* ended with drop */
	__u64 passes;  /* ended with pass, tx or redirect (including the chain's final pass) */
	__u64 errors;  /* ended with aborted, or a tail call that missed (packet passed) */
};

/*
 * An IP address in 16 bytes, network byte order. IPv4 addresses are stored IPv4-mapped
 * (::ffff:a.b.c.d) so that one key type serves both families.
 */
union sluice_addr {
	__u8 u8[16];
	__be32 be32[4];
	__u64 u64[2];
};

/* Directional 5-tuple (plus family). Padding must be zero: the struct is used as a map key. */
struct sluice_flow_key {
	union sluice_addr src; /* offset 0 */
	union sluice_addr dst; /* offset 16 */
	__be16 sport;          /* offset 32; 0 when the protocol has no ports */
	__be16 dport;          /* offset 34 */
	__u8 proto;            /* offset 36; IPPROTO_* of the transport header */
	__u8 family;           /* offset 37; 4 or 6 */
	__u8 pad[2];           /* offset 38 */
};

#endif /* __SLUICE_TYPES_H */
