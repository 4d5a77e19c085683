/* SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause */
/* noop: hands every packet to the next NF. Used to measure the cost of one chain hop. */
#ifndef __SLUICE_NF_NOOP_H
#define __SLUICE_NF_NOOP_H

#include "sluice.h"

static __always_inline enum sluice_verdict noop_process(void)
{
	return SLUICE_CONTINUE;
}

#endif /* __SLUICE_NF_NOOP_H */
