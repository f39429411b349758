/* SPDX-License-Identifier: MIT */
/*
 * Helpers shared by the node-driving fuzz targets. Everything is static and
 * guarded, because tests/test_fuzz_regress.c includes every target into one
 * program; for the same reason each target prefixes its own statics (ff_,
 * fh_, fs_), which the house style would otherwise leave unprefixed.
 *
 * A failed check prints why and aborts: libFuzzer records the input as a
 * crash, and the cmocka replay dies, which fails `make test`.
 */
#ifndef PM_FUZZ_UTIL_H
#define PM_FUZZ_UTIL_H

#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <sched.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "pairmesh.h"

/* The input being replayed, named in a failure (tests/test_fuzz_regress.c). */
static const char *fz_input;

#define FZ_CHECK(cond, ...)						\
	do {								\
		if (!(cond)) {						\
			fprintf(stderr, "fuzz check failed: %s (%s:%d): ", \
				#cond, __FILE__, __LINE__);		\
			fprintf(stderr, __VA_ARGS__);			\
			if (fz_input)					\
				fprintf(stderr, "; input %s", fz_input); \
			fputc('\n', stderr);				\
			abort();					\
		}							\
	} while (0)

/* Upper bound of every wait: generous, the machine is shared and noisy. */
#define FZ_DEADLINE_MS	10000

static inline uint64_t fz_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/*
 * Moves the process into a network namespace of its own with only loopback
 * up, when allowed (root): the addresses a fuzzed HELLO or LINKS frame
 * advertises can then be redialled (stream resumption) without reaching
 * any other program's listener. Returns whether it did.
 */
static inline bool fz_isolate(void)
{
	static int done = -1;
	struct ifreq ifr = { .ifr_name = "lo" };
	int fd;

	if (done >= 0)
		return done;
	done = 0;
	if (getenv("FZ_NO_NETNS") || unshare(CLONE_NEWNET))
		return false;
	fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	FZ_CHECK(fd >= 0, "socket: %d", errno);
	FZ_CHECK(!ioctl(fd, SIOCGIFFLAGS, &ifr), "SIOCGIFFLAGS: %d", errno);
	ifr.ifr_flags |= IFF_UP;
	FZ_CHECK(!ioctl(fd, SIOCSIFFLAGS, &ifr), "SIOCSIFFLAGS: %d", errno);
	close(fd);
	done = 1;
	return true;
}

/*
 * A node configuration on the epoll engine (the same on every kernel) that
 * never dials on its own: without a namespace of our own, addresses learned
 * from fuzzed frames could name any local listener, including other
 * programs' test nodes.
 */
static inline void fz_config(struct pm_config *c, uint64_t id,
			     uint32_t max_peers, uint32_t ring_size,
			     uint32_t max_message)
{
	pm_config_init(c);
	c->engine = PM_ENGINE_EPOLL;
	c->node_id = id;
	c->max_peers = max_peers;
	c->ring_size = ring_size;
	c->max_message = max_message;
	c->no_auto_connect = true;
}

static inline struct pm_node *fz_node_new(const struct pm_config *c)
{
	struct pm_node *n;
	int r = pm_node_create(&n, c);

	FZ_CHECK(r == 0, "pm_node_create: %d", r);
	return n;
}

/*
 * FZ_RECORD=DIR keeps the last FZ_RECORD_KEEP inputs as DIR/0000000001...:
 * the targets keep state across inputs, so a failure may need the inputs
 * before it. Given those files in name order, the fuzzer binary replays
 * them in one process.
 */
#define FZ_RECORD_KEEP	512

static inline void fz_record(const uint8_t *data, size_t size)
{
	static const char *dir;
	static int on = -1;
	static unsigned long long seq;
	char path[4096];
	int fd;

	if (on < 0) {
		dir = getenv("FZ_RECORD");
		on = dir && *dir;
	}
	if (!on)
		return;
	seq++;
	if (seq > FZ_RECORD_KEEP) {
		snprintf(path, sizeof(path), "%s/%010llu", dir,
			 seq - FZ_RECORD_KEEP);
		unlink(path);
	}
	snprintf(path, sizeof(path), "%s/%010llu", dir, seq);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return;
	if (size)
		(void)!write(fd, data, size);
	close(fd);
}

static inline uint64_t fz_conns(const struct pm_node *n)
{
	struct pm_stats st;

	pm_node_stats(n, &st);
	return st.conns_open;
}

/* One non-blocking turn of each node; returns the completions handled. */
static inline int fz_turn(struct pm_node *const *v, size_t k)
{
	int done = 0;

	for (size_t i = 0; i < k; i++) {
		int r = pm_node_run(v[i], 0);

		FZ_CHECK(r >= 0 || r == -EINTR, "pm_node_run: %d", r);
		done += r > 0 ? r : 0;
	}
	return done;
}

/* Runs up to max turns, stopping after two idle ones in a row. */
static inline void fz_settle(struct pm_node *const *v, size_t k,
			     unsigned max)
{
	unsigned idle = 0;

	for (unsigned i = 0; i < max && idle < 2; i++)
		idle = fz_turn(v, k) ? 0 : idle + 1;
}

/*
 * Turns the nodes until until(arg) holds or deadline_ms pass; an idle round
 * blocks 1 ms on the first node so timers (drains, orphans) can expire.
 */
static inline bool fz_wait(struct pm_node *const *v, size_t k,
			   bool (*until)(void *arg), void *arg,
			   unsigned deadline_ms)
{
	uint64_t end = fz_now_ms() + deadline_ms;

	for (;;) {
		if (until(arg))
			return true;
		if (fz_now_ms() >= end)
			return false;
		if (!fz_turn(v, k))
			(void)pm_node_run(v[0], 1);
	}
}

#endif
