/* SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause */
/*
 * overlay: the segment table as user space writes it, and the NF's counters. Mirrored in
 * node-agent/src/nf/structs.ts.
 */
#ifndef __SLUICE_NF_OVERLAY_TYPES_H
#define __SLUICE_NF_OVERLAY_TYPES_H

#include <linux/types.h>

#include "sluice_types.h"

/* Most segments (prefixes) and nodes one overlay knows. */
#define OVERLAY_MAX_SEGMENTS 4096
#define OVERLAY_MAX_NODES 1024

/*
 * Bytes VXLAN over IPv4 adds in front of an IP packet: outer IPv4 (20), UDP (8), VXLAN (8) and
 * the inner Ethernet header (14). An inner IP packet of L bytes leaves as an outer one of L + 50.
 */
#define OVERLAY_OVERHEAD 50

/*
 * Key of overlay_segments (an LPM trie): a prefix in the 16-byte form of union sluice_addr, IPv4 as
 * ::ffff:a.b.c.d (prefix length 96 + n). prefixlen counts bits of addr. The kernel wants the bytes
 * right after prefixlen, so addr is a byte array (the union's 8-byte alignment would pad it).
 */
struct overlay_segment_key {
	__u32 prefixlen; /* offset 0 */
	__u8 addr[16];   /* offset 4 */
};

/* Value of overlay_segments: the node that hosts the segment. */
struct overlay_remote {
	__be32 node; /* offset 0; the node's IPv4 underlay address */
	__u32 pad;   /* offset 4 */
};

/* Keys of overlay_counters (per CPU, __u64 each). */
enum overlay_counter {
	OVERLAY_ENCAPSULATED = 0, /* sent to a remote node in VXLAN */
	OVERLAY_DECAPSULATED = 1, /* arrived from a known node with our VNI, unwrapped */
	OVERLAY_TOO_BIG = 2,      /* for a remote segment, but too big with the 50 bytes: dropped */
	OVERLAY_NO_NEIGH = 3,     /* the node's MAC not resolved yet: tc resolves (bpf_redirect_neigh), XDP drops */
	OVERLAY_NO_ROUTE = 4,     /* for a remote segment, no route to its node: left alone */
	OVERLAY_FOREIGN = 5,      /* VXLAN on our port from an unknown node or with another VNI: left alone */
	OVERLAY_COUNTERS = 6,
};

#endif /* __SLUICE_NF_OVERLAY_TYPES_H */
