/* SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause */
/*
 * firewall: the rule table as user space writes it. Mirrored in node-agent/src/nf/structs.ts.
 */
#ifndef __SLUICE_NF_FIREWALL_TYPES_H
#define __SLUICE_NF_FIREWALL_TYPES_H

#include <linux/types.h>

#include "sluice_types.h"

#define FIREWALL_MAX_RULES 64

/* Rule actions and the default actions (firewall_default_action, firewall_non_ip_action). */
enum firewall_action {
	FIREWALL_ALLOW = 1, /* SLUICE_CONTINUE: on to the next NF */
	FIREWALL_DENY = 2,  /* SLUICE_DROP */
};

/* struct firewall_rule.match: which conditions the rule has. Unset conditions match anything. */
#define FIREWALL_MATCH_IPV4 0x01  /* IPv4 packets only */
#define FIREWALL_MATCH_IPV6 0x02  /* IPv6 packets only */
#define FIREWALL_MATCH_PROTO 0x04 /* transport protocol == proto */
#define FIREWALL_MATCH_PORTS 0x08 /* TCP/UDP with sport and dport inside their ranges */
#define FIREWALL_MATCH_SRC 0x10   /* (src address & src_mask) == src */
#define FIREWALL_MATCH_DST 0x20   /* (dst address & dst_mask) == dst */

/*
 * One rule. Addresses are 16 bytes as in union sluice_addr (IPv4 mapped to ::ffff:0:0/96);
 * src and dst are stored already masked. Port ranges are inclusive, host byte order; a rule
 * that only restricts dport has sport 0-65535.
 */
struct firewall_rule {
	union sluice_addr src;      /* offset 0 */
	union sluice_addr src_mask; /* offset 16 */
	union sluice_addr dst;      /* offset 32 */
	union sluice_addr dst_mask; /* offset 48 */
	__u16 sport_min;            /* offset 64 */
	__u16 sport_max;            /* offset 66 */
	__u16 dport_min;            /* offset 68 */
	__u16 dport_max;            /* offset 70 */
	__u8 action;                /* offset 72; enum firewall_action */
	__u8 match;                 /* offset 73; FIREWALL_MATCH_* */
	__u8 proto;                 /* offset 74; IPPROTO_* with FIREWALL_MATCH_PROTO */
	__u8 pad[5];                /* offset 75 */
};

/*
 * The whole ordered rule set, one map value: replacing it is one map update, so a packet is
 * matched against either the old or the new rule set, never a mix.
 */
struct firewall_table {
	__u32 count; /* offset 0; rules in use, <= FIREWALL_MAX_RULES */
	__u32 pad;   /* offset 4 */
	struct firewall_rule rules[FIREWALL_MAX_RULES]; /* offset 8; first match wins */
};

#endif /* __SLUICE_NF_FIREWALL_TYPES_H */
