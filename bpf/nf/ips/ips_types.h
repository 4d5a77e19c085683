/* SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause */
/*
 * ips: the signature table as user space writes it, and the state the NF keeps. Mirrored in
 * node-agent/src/nf/structs.ts.
 */
#ifndef __SLUICE_NF_IPS_TYPES_H
#define __SLUICE_NF_IPS_TYPES_H

#include <linux/types.h>

#include "sluice_types.h"

#define IPS_MAX_SIGNATURES 128
/* Longest content of one signature, in bytes (and the shortest: the prefilter reads two). */
#define IPS_MAX_CONTENT 64
#define IPS_MIN_CONTENT 2
/* Payload bytes scanned per packet: the first IPS_SCAN_MAX (a power of two). */
#define IPS_SCAN_MAX 2048
/* Words of the prefilter: one bit per two-byte prefix, 65,536 bits. */
#define IPS_PREFIX_WORDS 1024
/* Buckets of signatures by a 12-bit hash of their case-folded first two bytes. */
#define IPS_BUCKETS 4096
#define IPS_MAX_SOURCES 16384
#define IPS_MAX_HIT_KEYS 1024

/* struct ips_signature.flags */
#define IPS_SIG_NOCASE 0x01 /* content compared case-insensitively (content stored folded) */
#define IPS_SIG_PROTO 0x02  /* transport protocol == proto */
#define IPS_SIG_PORTS 0x04  /* TCP/UDP with sport and dport inside their ranges */

/* struct ips_signature.action */
enum ips_action {
	IPS_ALERT = 1, /* count only */
	IPS_DROP = 2,  /* count and drop (in mode prevent) */
};

/* Keys of ips_hits besides signature ids (which are below 2^31). */
#define IPS_HIT_SYN_FLOOD 0x80000001u
#define IPS_HIT_PORT_SCAN 0x80000002u
#define IPS_HIT_SCAN_BUDGET 0x80000003u

/*
 * One content signature: content must start at or after `offset` bytes into the payload and,
 * with depth != 0, end within `offset + depth`. Port ranges are inclusive, host byte order.
 */
struct ips_signature {
	__u8 content[IPS_MAX_CONTENT]; /* offset 0; lower case when IPS_SIG_NOCASE */
	__u16 content_len;             /* offset 64 */
	__u16 offset;                  /* offset 66 */
	__u16 depth;                   /* offset 68; 0: to the end of the scanned payload */
	__u16 sport_min;               /* offset 70 */
	__u16 sport_max;               /* offset 72 */
	__u16 dport_min;               /* offset 74 */
	__u16 dport_max;               /* offset 76 */
	__u8 proto;                    /* offset 78; with IPS_SIG_PROTO */
	__u8 flags;                    /* offset 79; IPS_SIG_* */
	__u32 id;                      /* offset 80; the key of its counter in ips_hits */
	__u8 action;                   /* offset 84; enum ips_action */
	__u8 pad[3];                   /* offset 85 */
};

/* The signatures of one bucket: sigs[start .. start + count - 1]. */
struct ips_bucket {
	__u8 start; /* offset 0 */
	__u8 count; /* offset 1 */
};

/*
 * The whole signature set, one map value (replaced as a whole, like the firewall's rules).
 * prefix has bit (first byte | second byte << 8) for the first two bytes of every signature's
 * content, in every case variant for a nocase one: a payload position whose two bytes have no
 * bit cannot start a match. A position that can tries only the signatures of its bucket:
 * sigs are sorted by bucket (ips_bucket_of of the case-folded first two bytes).
 */
struct ips_table {
	__u32 count;                                     /* offset 0; <= IPS_MAX_SIGNATURES */
	__u32 pad;                                       /* offset 4 */
	__u64 prefix[IPS_PREFIX_WORDS];                  /* offset 8 */
	struct ips_bucket buckets[IPS_BUCKETS];          /* offset 8200 */
	struct ips_signature sigs[IPS_MAX_SIGNATURES];   /* offset 16392 */
};

/* Per-source state of the stateful rules (SYN flood, port scan). */
struct ips_source {
	__u64 syn_window_ns;  /* offset 0; start of the current one-second SYN window */
	__u64 scan_window_ns; /* offset 8; start of the current port-scan window */
	__u32 syn_count;      /* offset 16; SYNs in the SYN window */
	__u32 scan_ports;     /* offset 20; distinct destination ports in the scan window */
	__u64 scan_bits[8];   /* offset 24; the ports seen, hashed to 512 bits */
};

/* Copy of the payload being scanned (per CPU), with room for a content read past the end. */
struct ips_scratch {
	__u8 buf[IPS_SCAN_MAX + IPS_MAX_CONTENT];
};

#endif /* __SLUICE_NF_IPS_TYPES_H */
