/* SPDX-License-Identifier: MIT */
/*
 * throughput: one-way message throughput of one pair stream between two
 * processes on 127.0.0.1, per engine and message size.
 *
 * The child process is the receiver: it creates a node on 127.0.0.1:0 and
 * tells the parent its address through a pipe. The parent is the sender: it
 * connects, waits for the stream to be live, then for --seconds writes
 * messages in place with pm_reserve/pm_commit (a sequence number, then a
 * filler byte derived from it), and ends with a marker message carrying the
 * count. The receiver checks that sequence numbers are consecutive, that
 * every message has the right length and filler ends, and that the count
 * matches; it reports its count, byte total and the CLOCK_MONOTONIC time of
 * the marker back through the pipe. Time runs from the first send to the
 * marker's arrival, so messages still queued when the sender stops count
 * with the time they took. MB = 1e6 bytes of payload (frame headers and
 * TCP overhead excluded).
 *
 * A gap, a wrong count or a closed stream prints FAIL and exits 1.
 *
 * Run:  make && build/bench/throughput
 *       build/bench/throughput --engine epoll --size 1024 --seconds 5
 *       build/bench/throughput --json
 * Options: --size N (repeatable; default 64 and 65536), --seconds S
 * (default 3), --engine all|auto|io_uring|epoll (default all: io_uring, then
 * epoll; io_uring is skipped with a line when the kernel refuses it), --json
 * (one JSON object per row).
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common.h"
#include "pairmesh.h"

#define MARKER_SEQ	UINT64_MAX
#define MARKER_LEN	16		/* MARKER_SEQ, then the count */
#define DEFAULT_RING	(1u << 20)
#define BIG_RING	(4u << 20)	/* for messages of 64 KiB and up */
#define DEFAULT_MAX	(256u << 10)
#define SETUP_MS	10000		/* child start, connect, handshake */
#define GRACE_MS	30000		/* for the marker after the deadline */

struct opts {
	struct table_opts t;
	const char *engine;
};

/* Child to parent, once the node listens. */
struct ready_msg {
	int err;
	char addr[64];
};

struct receiver {
	size_t size;
	struct result_msg res;
	bool done;
};

struct sender {
	bool connected;
	bool closed;
	bool writable;
	int close_err;
	int close_reason;
	bool have_result;
	struct result_msg res;
};

static uint32_t pow2_at_least(uint64_t v)
{
	uint64_t p = 4096;

	while (p < v)
		p <<= 1;
	return (uint32_t)p;
}

/* Ring holds at least four messages, so the sender never waits on one. */
static void bench_config(struct pm_config *c, enum pm_engine eng, size_t size)
{
	uint32_t ring = pow2_at_least(4 * ((uint64_t)size + 8));
	uint32_t min_ring = size >= (64u << 10) ? BIG_RING : DEFAULT_RING;

	pm_config_init(c);
	c->listen = "127.0.0.1:0";
	c->engine = eng;
	c->max_peers = 4;
	c->ring_size = ring > min_ring ? ring : min_ring;
	c->max_message = size > DEFAULT_MAX ? (uint32_t)size : DEFAULT_MAX;
}

/* Receiver side. */

static int on_rx_message(struct pm_node *n, const struct pm_message *m,
			 void *user)
{
	struct receiver *rx = user;
	const uint8_t *d = m->data;
	uint64_t seq;

	(void)n;
	if (rx->done)
		return 0;
	if (m->len < sizeof(seq)) {
		rx->res.ok = 0;
		return 0;
	}
	memcpy(&seq, d, sizeof(seq));
	if (seq == MARKER_SEQ && m->len == MARKER_LEN) {
		rx->res.end_ns = now_ns();
		memcpy(&rx->res.marker_count, d + 8, 8);
		if (rx->res.marker_count != rx->res.msgs)
			rx->res.ok = 0;
		rx->done = true;
		return 0;
	}
	/* Sequence first: a gap is the failure this benchmark looks for. */
	if (seq != rx->res.msgs && rx->res.ok) {
		rx->res.ok = 0;
		rx->res.gap_want = rx->res.msgs;
		rx->res.gap_got = seq;
	}
	if (m->len != rx->size ||
	    (m->len > 8 && (d[8] != (uint8_t)seq ||
			    d[m->len - 1] != (uint8_t)seq)))
		rx->res.ok = 0;
	rx->res.msgs++;
	rx->res.bytes += m->len;
	return 0;
}

static void on_rx_event(struct pm_node *n, const struct pm_event *ev,
			void *user)
{
	struct receiver *rx = user;

	(void)n;
	if (ev->type == PM_EV_CLOSED && !rx->done) {
		rx->res.err = ev->error ? ev->error : -ECONNRESET;
		rx->done = true;
	}
}

static void receiver_main(int fd, enum pm_engine eng, size_t size,
			  double seconds)
{
	struct receiver rx = { .size = size, .res.ok = 1 };
	struct ready_msg ready = { 0 };
	struct pm_config c;
	struct pm_node *n;
	int64_t deadline;
	int r;

	/* Never outlive the sender. */
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	bench_config(&c, eng, size);
	c.on_message = on_rx_message;
	c.on_event = on_rx_event;
	c.user = &rx;
	r = pm_node_create(&n, &c);
	if (r == 0)
		r = pm_node_listen_addr(n, ready.addr, sizeof(ready.addr));
	ready.err = r < 0 ? r : 0;
	if (write_all(fd, &ready, sizeof(ready)) || ready.err)
		_exit(1);

	deadline = now_ns() + (int64_t)((seconds * 1e3 + SETUP_MS +
					 GRACE_MS) * 1e6);
	while (!rx.done) {
		if (now_ns() > deadline) {
			rx.res.err = -ETIMEDOUT;
			break;
		}
		r = pm_node_run(n, 100);
		if (r < 0 && r != -EINTR) {
			rx.res.err = r;
			break;
		}
	}
	if (rx.res.err)
		rx.res.ok = 0;
	write_all(fd, &rx.res, sizeof(rx.res));
	pm_node_destroy(n);
	_exit(0);
}

/* Sender side. */

static void on_tx_event(struct pm_node *n, const struct pm_event *ev,
			void *user)
{
	struct sender *tx = user;

	(void)n;
	switch (ev->type) {
	case PM_EV_CONNECTED:
		tx->connected = true;
		break;
	case PM_EV_WRITABLE:
		tx->writable = true;
		break;
	case PM_EV_CLOSED:
		tx->closed = true;
		tx->close_err = ev->error;
		tx->close_reason = ev->reason;
		break;
	default:
		break;
	}
}

static void on_result(struct pm_node *n, int fd, void *user)
{
	struct sender *tx = user;

	/* The child writes the result in one write below PIPE_BUF, so a
	 * readable pipe holds all of it, or is at EOF: the child died. */
	if (read_timed(fd, &tx->res, sizeof(tx->res), 1000) == 0)
		tx->have_result = true;
	else
		tx->closed = true;
	pm_watch_fd(n, fd, NULL, NULL);
}

/* Waits for room, running the loop. 0, or -errno when the stream died. */
static int wait_room(struct pm_node *n, struct sender *tx)
{
	int r;

	tx->writable = false;
	r = pm_node_run(n, 100);
	if (r < 0 && r != -EINTR)
		return r;
	if (tx->closed || tx->have_result)
		return -EPIPE;
	return 0;
}

/*
 * Sends for `seconds`, then the marker. Returns the number of messages sent
 * or -errno. *t0 is the time of the first send.
 */
static int64_t send_loop(struct pm_node *n, struct pm_stream s,
			 struct sender *tx, size_t size, double seconds,
			 int64_t *t0)
{
	/* Run the loop every eighth of a ring: the kernel sends while we
	 * fill, instead of waiting for a full ring. */
	size_t batch = 0, batch_max = (size_t)1 << 17;
	int64_t deadline;
	uint64_t seq = 0;
	void *buf;
	int r;

	*t0 = now_ns();
	deadline = *t0 + (int64_t)(seconds * 1e9);
	for (;;) {
		if ((seq & 63) == 0 && now_ns() >= deadline)
			break;
		r = pm_reserve(n, s, size, &buf);
		if (r == -EAGAIN) {
			r = wait_room(n, tx);
			if (r)
				return r;
			if (now_ns() >= deadline)
				break;
			continue;
		}
		if (r)
			return r;
		memcpy(buf, &seq, sizeof(seq));
		memset((uint8_t *)buf + 8, (uint8_t)seq, size - 8);
		r = pm_commit(n, s, size);
		if (r)
			return r;
		seq++;
		batch += size + 8;
		if (batch >= batch_max) {
			batch = 0;
			r = pm_node_run(n, 0);
			if (r < 0 && r != -EINTR)
				return r;
			if (tx->closed)
				return -EPIPE;
		}
	}
	for (;;) {
		uint64_t marker = MARKER_SEQ;

		r = pm_reserve(n, s, MARKER_LEN, &buf);
		if (r == -EAGAIN) {
			r = wait_room(n, tx);
			if (r)
				return r;
			continue;
		}
		if (r)
			return r;
		memcpy(buf, &marker, 8);
		memcpy((uint8_t *)buf + 8, &seq, 8);
		r = pm_commit(n, s, MARKER_LEN);
		return r ? r : (int64_t)seq;
	}
}

struct row {
	const char *engine;
	size_t size;
	uint64_t msgs, bytes;
	double seconds;
};

static void print_row(const struct opts *o, const struct row *w)
{
	table_row(o->t.json, w->engine, w->size, w->msgs, w->bytes, w->seconds);
}

static void print_fail(const struct opts *o, const char *engine, size_t size,
		       const char *why)
{
	table_fail(o->t.json, engine, size, why);
}

/* Runs the loop until cond or timeout. false on timeout or loop error. */
static bool run_until(struct pm_node *n, const bool *cond, const bool *bad,
		      int timeout_ms)
{
	int64_t end = now_ns() + (int64_t)timeout_ms * 1000000;

	while (!*cond && !*bad) {
		int r;

		if (now_ns() > end)
			return false;
		r = pm_node_run(n, 100);
		if (r < 0 && r != -EINTR)
			return false;
	}
	return *cond;
}

/* Parent side of one run. Returns 0, or -1 after printing FAIL. */
static int sender_run(const struct opts *o, enum pm_engine eng, size_t size,
		      const char *addr, int fd, struct row *w)
{
	struct sender tx = { 0 };
	struct pm_config c;
	struct pm_node *n;
	struct pm_stream s;
	char why[160];
	int64_t t0, sent;
	int r;

	bench_config(&c, eng, size);
	c.on_event = on_tx_event;
	c.user = &tx;
	r = pm_node_create(&n, &c);
	if (r) {
		snprintf(why, sizeof(why), "pm_node_create: %s", strerror(-r));
		print_fail(o, w->engine, size, why);
		return -1;
	}
	w->engine = pm_node_engine(n);
	r = pm_watch_fd(n, fd, on_result, &tx);
	if (!r)
		r = pm_connect(n, addr, &s);
	if (r) {
		snprintf(why, sizeof(why), "setup: %s", strerror(-r));
		goto out_fail;
	}
	if (!run_until(n, &tx.connected, &tx.closed, SETUP_MS)) {
		snprintf(why, sizeof(why), "no connection (%s, reason %s)",
			 strerror(-tx.close_err),
			 pm_close_reason_str(tx.close_reason));
		goto out_fail;
	}
	sent = send_loop(n, s, &tx, size, o->t.seconds, &t0);
	if (sent < 0) {
		snprintf(why, sizeof(why), "send: %s", strerror((int)-sent));
		goto out_fail;
	}
	if (!run_until(n, &tx.have_result, &tx.closed, GRACE_MS) &&
	    !tx.have_result) {
		snprintf(why, sizeof(why), "no result from the receiver");
		goto out_fail;
	}
	if (tx.res.err) {
		snprintf(why, sizeof(why), "receiver: %s",
			 strerror(-tx.res.err));
		goto out_fail;
	}
	if (result_check(&tx.res, sent, why, sizeof(why)))
		goto out_fail;
	w->msgs = tx.res.msgs;
	w->bytes = tx.res.bytes;
	w->seconds = (double)(tx.res.end_ns - t0) / 1e9;
	pm_node_destroy(n);
	return 0;
out_fail:
	print_fail(o, w->engine, size, why);
	pm_node_destroy(n);
	return -1;
}

/* One engine, one size, two processes. 0, 1 = skipped, -1 = FAIL. */
static int run_one(const struct opts *o, enum pm_engine eng,
		   const char *name, size_t size)
{
	struct ready_msg ready;
	struct row w = { .engine = name, .size = size };
	struct pm_config c;
	struct pm_node *probe;
	int fds[2], status, ret = -1, r;
	pid_t pid;

	/* Probe before forking: no node state is inherited by the child. */
	bench_config(&c, eng, size);
	r = pm_node_create(&probe, &c);
	if (r == -EPROTONOSUPPORT || r == -EPERM || r == -ENOSYS) {
		if (o->t.json)
			printf("{\"engine\":\"%s\",\"skipped\":\"%s\"}\n",
			       name, strerror(-r));
		else
			printf("%-9s skipped: %s\n", name, strerror(-r));
		fflush(stdout);
		return 1;
	}
	if (r) {
		print_fail(o, name, size, strerror(-r));
		return -1;
	}
	pm_node_destroy(probe);

	if (pipe2(fds, O_CLOEXEC)) {
		print_fail(o, name, size, strerror(errno));
		return -1;
	}
	fflush(stdout);
	pid = fork();
	if (pid < 0) {
		print_fail(o, name, size, strerror(errno));
		close(fds[0]);
		close(fds[1]);
		return -1;
	}
	if (pid == 0) {
		close(fds[0]);
		receiver_main(fds[1], eng, size, o->t.seconds);
	}
	close(fds[1]);
	r = read_timed(fds[0], &ready, sizeof(ready), SETUP_MS);
	if (r || ready.err) {
		print_fail(o, name, size, r ? "receiver did not start" :
			   strerror(-ready.err));
		goto out;
	}
	ready.addr[sizeof(ready.addr) - 1] = 0;
	if (sender_run(o, eng, size, ready.addr, fds[0], &w) == 0) {
		print_row(o, &w);
		ret = 0;
	}
out:
	close(fds[0]);
	if (ret)
		kill(pid, SIGKILL);
	waitpid(pid, &status, 0);
	if (ret == 0 && !(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
		print_fail(o, name, size, "receiver exited abnormally");
		ret = -1;
	}
	return ret;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: throughput [--size N]... [--seconds S] "
		"[--engine all|auto|io_uring|epoll] [--json]\n");
}

static int parse(int argc, char **argv, struct opts *o)
{
	o->engine = "all";
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		int r = table_arg(&o->t, argc, argv, &i, "throughput", usage);

		if (r < 0)
			return r;
		if (r)
			continue;
		if (!strcmp(a, "--engine") && v) {
			o->engine = v;
			if (strcmp(v, "all") && strcmp(v, "auto") &&
			    strcmp(v, "io_uring") && strcmp(v, "epoll")) {
				fprintf(stderr, "throughput: bad --engine\n");
				return -EINVAL;
			}
			i++;
		} else {
			usage(stderr);
			return -EINVAL;
		}
	}
	table_defaults(&o->t);
	return 0;
}

int main(int argc, char **argv)
{
	static const struct {
		const char *name;
		enum pm_engine eng;
	} engines[] = {
		{ "io_uring", PM_ENGINE_IO_URING },
		{ "epoll", PM_ENGINE_EPOLL },
		{ "auto", PM_ENGINE_AUTO },
	};
	struct opts o = { 0 };
	int fails = 0;

	if (parse(argc, argv, &o))
		return 2;
	/* A peer that vanishes must show as an error, not kill us. */
	signal(SIGPIPE, SIG_IGN);
	table_head(o.t.json);
	for (size_t e = 0; e < sizeof(engines) / sizeof(engines[0]); e++) {
		bool all = !strcmp(o.engine, "all");

		if (all ? engines[e].eng == PM_ENGINE_AUTO :
			  strcmp(o.engine, engines[e].name))
			continue;
		for (int i = 0; i < o.t.nsizes; i++) {
			int r = run_one(&o, engines[e].eng, engines[e].name,
					o.t.sizes[i]);

			if (r == 1)
				break;	/* engine skipped: skip its sizes */
			if (r < 0)
				fails++;
		}
	}
	return fails ? 1 : 0;
}
