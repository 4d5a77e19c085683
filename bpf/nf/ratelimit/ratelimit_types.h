/* SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause */
/*
 * ratelimit: per-source bucket state. Mirrored in node-agent/src/nf/structs.ts.
 *
 * Keep this layout stable: the buckets map carries over across revisions only while its key and
 * value sizes stay the same.
 */
#ifndef __SLUICE_NF_RATELIMIT_TYPES_H
#define __SLUICE_NF_RATELIMIT_TYPES_H

#include <linux/types.h>

#include "sluice_types.h"

#define RATELIMIT_MAX_SOURCES 65536

/*
 * Token bucket in its "virtual scheduling" form (GCRA): one timestamp instead of a token count
 * and a refill time. tat_ns is the theoretical arrival time of the next conforming packet; the
 * bucket is full when tat_ns <= now and holds (now + burst * interval - tat_ns) / interval
 * tokens otherwise. Independent of rate and burst, so it stays meaningful when they change.
 */
struct ratelimit_bucket {
	__u64 tat_ns; /* offset 0; bpf_ktime_get_ns() clock */
};

#endif /* __SLUICE_NF_RATELIMIT_TYPES_H */
