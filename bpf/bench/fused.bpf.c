// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/*
 * firewall + ratelimit + flowmon hand-fused into one XDP program, with the same maps and the
 * same settings as the three separate NFs. It parses once and reads the clock once; the
 * difference to the three-NF chain is what tail-call linking costs.
 */
#include "sluice.h"
#include "../nf/firewall/firewall.h"
#include "../nf/ratelimit/ratelimit.h"
#include "../nf/flowmon/flowmon.h"

SEC("xdp")
int fused_xdp(struct xdp_md *ctx)
{
	enum sluice_verdict verdict;
	struct sluice_pkt pkt;
	int parsed = SLUICE_PARSE(ctx, &pkt);
	__u64 now;

	verdict = firewall_process(&pkt, parsed);
	if (verdict == SLUICE_CONTINUE && parsed == SLUICE_PARSE_IP) {
		now = bpf_ktime_get_ns();
		verdict = ratelimit_process_at(&pkt, parsed, now);
		if (verdict == SLUICE_CONTINUE)
			verdict = flowmon_process_at(&pkt, parsed, now);
	}
	return SLUICE_EXIT(ctx, verdict);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
