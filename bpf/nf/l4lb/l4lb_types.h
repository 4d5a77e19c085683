/* SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause */
/*
 * l4lb: the service table as user space writes it, and the per-flow state the NF keeps.
 * Mirrored in node-agent/src/nf/structs.ts.
 *
 * Keep l4lb_flow and l4lb_nat stable: l4lb_flows and l4lb_reverse carry over across revisions
 * (connections keep their backend) only while their key and value sizes stay the same.
 */
#ifndef __SLUICE_NF_L4LB_TYPES_H
#define __SLUICE_NF_L4LB_TYPES_H

#include <linux/types.h>

#include "sluice_types.h"

/* Services (virtual IP, port, protocol) in one table. */
#define L4LB_MAX_SERVICES 64
/* Backends of one service; a ring entry is a backend's index in one byte. */
#define L4LB_MAX_BACKENDS 256
/* Largest Maglev lookup table (a prime); a service may use a smaller prime. */
#define L4LB_RING_MAX 65537
/* Connections remembered (each one entry in l4lb_flows and one in l4lb_reverse). */
#define L4LB_MAX_FLOWS 65536

/* struct l4lb_backend.flags */
#define L4LB_BACKEND_HEALTHY 0x01

/* Key of l4lb_services: a virtual IP, port and transport protocol. Padding must be zero. */
struct l4lb_vip {
	union sluice_addr addr; /* offset 0; IPv4-mapped for IPv4 */
	__be16 port;            /* offset 16; network order */
	__u8 proto;             /* offset 18; IPPROTO_TCP or IPPROTO_UDP */
	__u8 pad[5];            /* offset 19 (the address makes the struct 8-aligned) */
};

/* One backend: the address and port a packet to the virtual IP is rewritten to. */
struct l4lb_backend {
	union sluice_addr addr; /* offset 0 */
	__be16 port;            /* offset 16; network order */
	__u8 flags;             /* offset 18; L4LB_BACKEND_* */
	__u8 pad[5];            /* offset 19 */
};

/*
 * One service, one map value (replaced as a whole: a packet sees the old or the new service).
 * ring[hash(flow) % ring_size] is the index in backends of the flow's backend; the ring holds
 * healthy backends only (Maglev's table, computed in user space). An unhealthy backend stays
 * in backends with its flag clear, so that flows remembered on it are moved.
 */
struct l4lb_service {
	__u32 ring_size;                                  /* offset 0; a prime <= L4LB_RING_MAX */
	__u16 backend_count;                              /* offset 4 */
	__u16 healthy_count;                              /* offset 6; 0: packets are dropped */
	struct l4lb_backend backends[L4LB_MAX_BACKENDS];  /* offset 8 */
	__u8 ring[L4LB_RING_MAX];                         /* offset 6152 */
	__u8 pad[7];                                      /* offset 71689 */
};

/* Value of l4lb_flows (key: the client's 5-tuple towards the virtual IP): its backend. */
struct l4lb_flow {
	union sluice_addr addr; /* offset 0 */
	__be16 port;            /* offset 16 */
	__u16 slot;             /* offset 18; index in the service's backends when chosen */
	__u32 pad;              /* offset 20 */
};

/* Value of l4lb_reverse (key: the backend's reply 5-tuple): the address replies come from. */
struct l4lb_nat {
	union sluice_addr addr; /* offset 0; the virtual IP */
	__be16 port;            /* offset 16; the virtual port */
	__u8 pad[6];            /* offset 18 */
};

#endif /* __SLUICE_NF_L4LB_TYPES_H */
