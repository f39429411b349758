/* SPDX-License-Identifier: MIT */
/*
 * What tcp_bench, zmq_bench and nng_bench share: the command line, the
 * message body and its check, the latency samples, the output rows, and
 * the two processes with the report pipe between them. Each program keeps
 * its own connection set-up and per-message loops; only those differ.
 *
 * The helpers a per-message loop calls (fill, payload_ok, samples_add, and
 * those of ../common.h) are static, not inline, so each program compiles
 * them into its loops as it did with its own copy (see ../common.h): these
 * programs are the baselines PERF.md compares pairmesh with.
 */
#ifndef PEER_COMMON_H
#define PEER_COMMON_H

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include "../common.h"

#define MIN_SIZE	16		/* pairmesh bench's body header */
#define MAX_SIZE	(64u << 20)
#define SETUP_MS	10000
#define WARMUP		1000		/* untimed round trips */
#define GRACE_MS	30000

enum mode { MODE_THROUGHPUT, MODE_LATENCY };

struct opts {
	enum mode mode;
	size_t size;
	double seconds;
	bool json;
	bool inject_gap;	/* skip one sequence number: tests the check */
	const char *impl;	/* "tcp": the impl and engine of each row */
};

/* Child to parent through the pipe, once at the end. */
struct report {
	int err;			/* the library's error, or 0 */
	int ok;				/* every check passed */
	uint64_t msgs, bytes, count;	/* count: what an END frame said */
	uint64_t gap_want, gap_got;
	int64_t end_ns;
};

/* One program: what its command line and main differ in. */
struct peer {
	const char *impl;
	const char *name;		/* for usage: "tcp_bench" */
	const char *modes;		/* for usage: "throughput|latency" */
	/* Other names --mode takes for each mode, or NULL. */
	const char *alias[2];
	bool socketpair;		/* not a pipe: see nng_bench */
};

/*
 * The start of each main: parses the command line into o, makes the pipe
 * (or socketpair) and forks. Returns 0 in the child and the child's pid in
 * the parent, with *pfd its end of the pipe. Exits 2 on bad arguments
 * (after the usage line), 0 after --help, 1 when the pipe or fork fails.
 * The caller runs its child and parent sides itself: called once from
 * main, they compile with their loops as they did before they shared this.
 */
pid_t peer_fork(int argc, char **argv, const struct peer *p, struct opts *o,
		int *pfd);

/*
 * The message body of `pairmesh bench` (tools/bench_proc.c msg_fill): the
 * sequence number, 4 zero bytes (the origin there), and check bytes at 12
 * and at the end. The rest of the buffer is left as it is, as pairmesh
 * leaves its ring, so both do the same work per message.
 */
static MAYBE_UNUSED void fill(uint8_t *d, size_t size, uint64_t seq)
{
	memcpy(d, &seq, sizeof(seq));
	memset(d + 8, 0, 4);
	d[12] = (uint8_t)seq;
	d[size - 1] = (uint8_t)(seq >> 8);
}

/* Checks one payload against the expected sequence number. */
static MAYBE_UNUSED bool payload_ok(const uint8_t *d, size_t len,
				   size_t size, uint64_t want, uint64_t *got)
{
	uint64_t seq;

	if (len != size)
		return false;
	memcpy(&seq, d, sizeof(seq));
	*got = seq;
	return seq == want && d[12] == (uint8_t)seq &&
	       d[len - 1] == (uint8_t)(seq >> 8);
}

/* Round-trip times, in ns. */
struct samples {
	uint32_t *ns;
	size_t n, cap;
};

/* 0, or -ENOMEM. */
static MAYBE_UNUSED int samples_add(struct samples *s, int64_t ns)
{
	if (s->n == s->cap) {
		size_t cap = s->cap ? 2 * s->cap : 1u << 16;
		uint32_t *p = realloc(s->ns, cap * sizeof(*p));

		if (!p)
			return -ENOMEM;
		s->ns = p;
		s->cap = cap;
	}
	s->ns[s->n++] = ns > UINT32_MAX ? UINT32_MAX : (uint32_t)ns;
	return 0;
}

/* The child's first steps: die with the parent, and an alarm as the
 * backstop should the parent hang without dying. */
void child_setup(const struct opts *o);

/* The child's last: sends rep to the parent (not ok on an error). */
void child_report(int pfd, struct report *rep);

/*
 * Whether the child saw the n messages the parent sent: 0, or -1 with the
 * reason in why. with_count: the wire carried the sender's count (tcp).
 * The caller checks rep->err first.
 */
int report_check(const struct report *rep, int64_t n, bool with_count,
		 char *why, size_t len);

/* Waits for the child. true when it exited with status 0. */
bool child_exited_ok(pid_t child);

/*
 * One row: msgs over secs, with the percentiles of s (sorted here) when
 * given, null without.
 */
void print_row(const struct opts *o, uint64_t msgs, double secs,
	       struct samples *s);

/*
 * Prints FAIL with why, kills and reaps the child (when not 0), frees the
 * samples. Returns 1, the parent's exit status.
 */
int parent_fail(const struct opts *o, const char *why, pid_t child,
		struct samples *s);

#endif
