/* SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause */
/* flowmon: per-flow counters. Mirrored in node-agent/src/nf/structs.ts. */
#ifndef __SLUICE_NF_FLOWMON_TYPES_H
#define __SLUICE_NF_FLOWMON_TYPES_H

#include <linux/types.h>

#include "sluice_types.h"

#define FLOWMON_MAX_FLOWS 65536

/* Value of flowmon_flows; the key is struct sluice_flow_key. */
struct flowmon_counters {
	__u64 packets;       /* offset 0 */
	__u64 bytes;         /* offset 8 */
	__u64 first_seen_ns; /* offset 16; bpf_ktime_get_ns() clock */
	__u64 last_seen_ns;  /* offset 24 */
};

#endif /* __SLUICE_NF_FLOWMON_TYPES_H */
