/* SPDX-License-Identifier: MIT */
/*
 * What the benchmark programs in bench/ and bench/peers/ share: the
 * clock, whole reads and writes, the report pipe between the two processes
 * of a run, and the rows of the one-way table (throughput, tcp_baseline).
 *
 * The helpers are static, not inline, and all of them are here (the
 * cold read_timed too), so each program's unit holds the same functions
 * its own copies were and GCC makes the same inlining choices in the
 * per-message loops: the peers are the baselines PERF.md compares with,
 * and sharing the source must not move their code. (Marked inline, or
 * with a caller fewer, now_ns and write_all got inlined where the loops
 * used to call them.) MAYBE_UNUSED: not every program calls each.
 */
#ifndef BENCH_COMMON_H
#define BENCH_COMMON_H

#include <errno.h>
#include <poll.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#define MAYBE_UNUSED	__attribute__((unused))

static MAYBE_UNUSED int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Writes all of buf. 0, -EPIPE, or -errno. */
static MAYBE_UNUSED int write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;

	while (len) {
		ssize_t r = write(fd, p, len);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return r == 0 ? -EPIPE : -errno;
		p += r;
		len -= (size_t)r;
	}
	return 0;
}

/* Blocking read of exactly len bytes. 0, -EPIPE at EOF, or -errno. */
static MAYBE_UNUSED int read_full(int fd, void *buf, size_t len)
{
	char *p = buf;

	while (len) {
		ssize_t r = read(fd, p, len);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return r == 0 ? -EPIPE : -errno;
		p += r;
		len -= (size_t)r;
	}
	return 0;
}

static MAYBE_UNUSED void put_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static MAYBE_UNUSED uint32_t get_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	       (uint32_t)p[2] << 8 | p[3];
}

/*
 * Reads exactly len bytes from the report pipe within timeout_ms: a child
 * that died or hangs must fail the run, not block it. 0, -ETIMEDOUT,
 * -EPIPE at EOF, or -errno.
 */
static MAYBE_UNUSED int read_timed(int fd, void *buf, size_t len,
				   int timeout_ms)
{
	char *p = buf;
	int64_t end = now_ns() + (int64_t)timeout_ms * 1000000;

	while (len) {
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		int64_t left = (end - now_ns()) / 1000000;
		ssize_t r;

		if (left <= 0)
			return -ETIMEDOUT;
		if (poll(&pfd, 1, (int)left) < 0 && errno != EINTR)
			return -errno;
		if (!(pfd.revents & (POLLIN | POLLHUP)))
			continue;
		r = read(fd, p, len);
		if (r < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (r <= 0)
			return r == 0 ? -EPIPE : -errno;
		p += r;
		len -= (size_t)r;
	}
	return 0;
}

/* The one-way table: the receiver's report, once the marker arrived. */
struct result_msg {
	int err;		/* 0, or -errno from the receiver's side */
	int ok;			/* sequence, lengths, fillers, count */
	uint64_t msgs, bytes;
	uint64_t marker_count;	/* the count the sender claimed */
	uint64_t gap_want, gap_got;	/* first bad sequence number */
	int64_t end_ns;		/* CLOCK_MONOTONIC of the marker */
};

/* The command line both one-way programs take, besides their own flags. */
#define TABLE_MAX_SIZES	16
#define TABLE_MIN_SIZE	8		/* room for the sequence number */
#define TABLE_MAX_SIZE	(64u << 20)

struct table_opts {
	size_t sizes[TABLE_MAX_SIZES];	/* --size, repeatable */
	int nsizes;
	double seconds;
	bool json;
};

/*
 * Takes argv[*i] when it is one of the shared flags: --json, --help (usage
 * on stdout, exit 0), --size N, --seconds S; steps *i over a value. 1 when
 * it took it, 0 when it is not one of them (or lacks its value), -EINVAL
 * after saying why on stderr, prog first.
 */
int table_arg(struct table_opts *t, int argc, char **argv, int *i,
	      const char *prog, void (*usage)(FILE *f));

/* After the command line: 3 s and sizes 64 and 65536 unless given. */
void table_defaults(struct table_opts *t);

/*
 * Whether res matches `sent` messages: 0, or -1 with the reason in why.
 * The caller checks res->err first.
 */
int result_check(const struct result_msg *res, int64_t sent, char *why,
		 size_t len);

/* The table's header line (not with --json), one row, one failed row. */
void table_head(bool json);
void table_row(bool json, const char *engine, size_t size, uint64_t msgs,
	       uint64_t bytes, double secs);
void table_fail(bool json, const char *engine, size_t size, const char *why);

#endif
