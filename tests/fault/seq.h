/* SPDX-License-Identifier: MIT */
/*
 * What seqnode sends and writes, shared with seqcheck. A message is
 *
 *   u64 origin id | u64 incarnation | u64 sequence | u64 destination id |
 *   filler bytes, each a function of (incarnation, sequence, offset)
 *
 * in host order (the nodes all run on this machine). The sequence counts
 * the messages one incarnation (process) committed to one destination,
 * from 0, with no hole: a hole at the receiver is a lost message, a number
 * seen twice a duplicate, a smaller one after a larger one a reordering.
 *
 * Each incarnation rewrites its report file (write, then rename) every
 * --report-ms and when it ends; a killed one leaves its last snapshot,
 * marked "running". The format, one record per line:
 *
 *   seqnode-report 1
 *   node ID INC PID STATE START_US ENGINE     STATE: running | final
 *   mem RSS_KB RSS_MAX_KB HWM_KB                sampled each report
 *   stats NAME=VALUE ...                        pm_node_stats, for people
 *   sent DEST COUNT UNSENT CLOSED EAGAIN NOROUTE UNREACH
 *   recv ORIGIN INC FIRST NEXT COUNT DUP LATE BAD
 *   gap ORIGIN INC FROM TO                      missing inside [FIRST, NEXT)
 *   end
 *
 * ids and incarnations in 16 hex digits, the rest decimal.
 */
#ifndef SEQ_H
#define SEQ_H

#include <stddef.h>
#include <stdint.h>

#define SEQ_HDR		32	/* origin, incarnation, seq, dest */
#define SEQ_MAX_GAPS	64	/* gap lines per origin, at most */

static inline unsigned char seq_filler(uint64_t inc, uint64_t seq, size_t j)
{
	return (unsigned char)(inc ^ (seq * 0x9e3779b1u) ^ (j * 131));
}

/* The length of message seq, between min and max, from its number only. */
static inline size_t seq_len(uint64_t seq, size_t min, size_t max)
{
	uint64_t h = seq * 0x9e3779b97f4a7c15ull;

	if (max <= min)
		return min;
	return min + (size_t)((h >> 33) % (max - min + 1));
}

#endif
