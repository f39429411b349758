/* SPDX-License-Identifier: MIT */
/*
 * zmq_bench: the same work as tcp_bench through ZeroMQ, as a peer for
 * `pairmesh bench` (bench/run.sh).
 *
 * Two processes: fork, the child binds tcp://127.0.0.1:* and tells the
 * parent the endpoint through a pipe; the parent connects. Each process
 * makes its own context after the fork.
 *
 * --mode pushpull: PUSH (parent) to PULL (child), one zmq_send() per
 *   message, default high-water marks. The payload is the body `pairmesh
 *   bench` sends: a sequence number and two check bytes. An empty message
 *   ends the run. The child zmq_recv()s every message and checks its
 *   length, sequence number and check bytes. Time runs from the first send
 *   to the empty message's arrival. MB = 1e6 bytes of payload.
 * --mode reqrep: REQ (parent) and REP (child) ping-pong; the child echoes
 *   every message. After 1000 unrecorded round trips, each round trip is
 *   timed; p50/p99/p99.9 are nearest ranks over all samples, sorted, as in
 *   `pairmesh bench latency`. msgs_per_s counts timed round trips.
 *
 * A gap, a wrong length or count, or a library error prints FAIL and exits
 * 1; bad arguments exit 2. --json prints one JSON object on one line.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#include "peer_common.h"

#define IMPL		"zmq"
#define EP_LEN		128

/* Child to parent through the pipe, once at the start. */
struct ready_msg {
	int err;
	char ep[EP_LEN];
};

/* zmq_send/zmq_recv, retried on EINTR. Bytes, or -errno. */
static int zsend(void *s, const void *buf, size_t len)
{
	for (;;) {
		int r = zmq_send(s, buf, len, 0);

		if (r >= 0 || zmq_errno() != EINTR)
			return r >= 0 ? r : -zmq_errno();
	}
}

static int zrecv(void *s, void *buf, size_t cap)
{
	for (;;) {
		int r = zmq_recv(s, buf, cap, 0);

		if (r >= 0 || zmq_errno() != EINTR)
			return r >= 0 ? r : -zmq_errno();
	}
}

/* Child: PULL receiver, or REP echo. Both end at an empty message. */
static int child_loop(void *s, const struct opts *o, struct report *rep)
{
	/* One spare byte: zmq_recv() returns the full length of a message
	 * it truncated, so a longer one shows up as len != size. */
	uint8_t *buf = malloc(o->size + 1);
	int r = 0;

	if (!buf)
		return -ENOMEM;
	for (;;) {
		uint64_t got = 0;
		int n = zrecv(s, buf, o->size + 1);

		if (n < 0) {
			r = n;
			break;
		}
		if (n == 0) {
			rep->end_ns = now_ns();
			if (o->mode == MODE_LATENCY)
				r = zsend(s, buf, 0) < 0 ? -zmq_errno() : 0;
			break;
		}
		if (!payload_ok(buf, (size_t)n, o->size, rep->msgs, &got) &&
		    rep->ok) {
			rep->ok = 0;
			rep->gap_want = rep->msgs;
			rep->gap_got = got;
		}
		rep->msgs++;
		rep->bytes += (size_t)n;
		if (o->mode == MODE_LATENCY) {
			r = zsend(s, buf, (size_t)n);
			if (r < 0)
				break;
			r = 0;
		}
	}
	free(buf);
	return r;
}

static void child_main(const struct opts *o, int pfd)
{
	struct report rep = { .ok = 1 };
	struct ready_msg ready = { 0 };
	size_t len = sizeof(ready.ep);
	void *ctx, *s;

	child_setup(o);
	ctx = zmq_ctx_new();
	s = ctx ? zmq_socket(ctx, o->mode == MODE_THROUGHPUT ? ZMQ_PULL :
			     ZMQ_REP) : NULL;
	if (!s || zmq_bind(s, "tcp://127.0.0.1:*") ||
	    zmq_getsockopt(s, ZMQ_LAST_ENDPOINT, ready.ep, &len))
		ready.err = -zmq_errno();
	if (write_all(pfd, &ready, sizeof(ready)) || ready.err)
		_exit(1);
	rep.err = child_loop(s, o, &rep);
	child_report(pfd, &rep);
	/* Let the last reply go out before the context goes away. */
	zmq_close(s);
	zmq_ctx_term(ctx);
	_exit(0);
}

/* Parent: PUSH sender. Messages sent, or -errno. */
static int64_t push_loop(void *s, const struct opts *o, int64_t *t0)
{
	uint8_t *buf = malloc(o->size);
	/* The clock is read once per burst: a read per message would be a
	 * visible share of a 16-byte send. */
	int burst = o->size < 4096 ? 64 : 1;
	uint64_t seq = 0, n = 0;
	int64_t deadline;
	int r = 0;

	if (!buf)
		return -ENOMEM;
	*t0 = now_ns();
	deadline = *t0 + (int64_t)(o->seconds * 1e9);
	while (now_ns() < deadline) {
		for (int i = 0; i < burst; i++, seq++, n++) {
			if (o->inject_gap && seq == 100)
				seq++;
			fill(buf, o->size, seq);
			r = zsend(s, buf, o->size);
			if (r < 0)
				goto out;
		}
	}
	r = zsend(s, buf, 0);
out:
	free(buf);
	return r < 0 ? r : (int64_t)n;
}

/* Parent: REQ client. Round trips, or -errno. */
static int64_t req_loop(void *s, const struct opts *o, struct samples *sm,
			int64_t *t0, int64_t *t_end)
{
	uint8_t *out = malloc(o->size), *in = malloc(o->size + 1);
	uint64_t seq = 0, n = 0, got;
	int64_t deadline, t;
	int r = 0;

	if (!out || !in) {
		r = -ENOMEM;
		goto out;
	}
	/* The clock starts after the warm-up, as pairmesh bench's does. */
	deadline = INT64_MAX;
	for (t = now_ns(); t < deadline; seq++, n++) {
		int64_t t1;

		if (n == WARMUP) {
			*t0 = t;
			deadline = t + (int64_t)(o->seconds * 1e9);
		}

		if (o->inject_gap && seq == 100)
			seq++;
		fill(out, o->size, seq);
		r = zsend(s, out, o->size);
		if (r >= 0)
			r = zrecv(s, in, o->size + 1);
		if (r < 0)
			goto out;
		t1 = now_ns();
		if (!payload_ok(in, (size_t)r, o->size, seq, &got)) {
			r = -EBADMSG;
			goto out;
		}
		if (n >= WARMUP) {
			r = samples_add(sm, t1 - t);
			if (r)
				goto out;
		}
		t = t1;
	}
	*t_end = t;
	r = zsend(s, out, 0);
	if (r >= 0)
		r = zrecv(s, in, o->size + 1);
out:
	free(out);
	free(in);
	return r < 0 ? r : (int64_t)n;
}

/* Parent side. 0, or 1 after printing FAIL. */
static int parent_main(const struct opts *o, int pfd, pid_t child)
{
	struct samples sm = { 0 };
	struct ready_msg ready;
	struct report rep;
	void *ctx = NULL, *s = NULL;
	char why[240] = "";
	int64_t t0 = 0, t_end = 0, n;
	int r, zero = 0, tmo = GRACE_MS;

	r = read_timed(pfd, &ready, sizeof(ready), SETUP_MS);
	if (r || ready.err) {
		snprintf(why, sizeof(why), "child setup: %s",
			 r ? strerror(-r) : zmq_strerror(-ready.err));
		goto out_fail;
	}
	ready.ep[EP_LEN - 1] = 0;
	ctx = zmq_ctx_new();
	s = ctx ? zmq_socket(ctx, o->mode == MODE_THROUGHPUT ? ZMQ_PUSH :
			     ZMQ_REQ) : NULL;
	/* Bounded waits: a child that died must fail the run, not hang it. */
	if (s) {
		zmq_setsockopt(s, ZMQ_RCVTIMEO, &tmo, sizeof(tmo));
		zmq_setsockopt(s, ZMQ_SNDTIMEO, &tmo, sizeof(tmo));
	}
	if (!s || zmq_connect(s, ready.ep)) {
		snprintf(why, sizeof(why), "connect %s: %s", ready.ep,
			 zmq_strerror(zmq_errno()));
		goto out_fail;
	}
	if (o->mode == MODE_THROUGHPUT)
		n = push_loop(s, o, &t0);
	else
		n = req_loop(s, o, &sm, &t0, &t_end);
	if (n < 0) {
		snprintf(why, sizeof(why), "%s: %s", o->mode == MODE_LATENCY ?
			 "ping-pong" : "send", n == -EBADMSG ?
			 "bad reply" : zmq_strerror((int)-n));
		goto out_fail;
	}
	r = read_timed(pfd, &rep, sizeof(rep), GRACE_MS);
	if (r || rep.err) {
		snprintf(why, sizeof(why), "child: %s",
			 r ? strerror(-r) : zmq_strerror(-rep.err));
		goto out_fail;
	}
	if (report_check(&rep, n, false, why, sizeof(why)))
		goto out_fail;
	if (!child_exited_ok(child)) {
		snprintf(why, sizeof(why), "child exited badly");
		child = 0;
		goto out_fail;
	}
	zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof(zero));
	zmq_close(s);
	zmq_ctx_term(ctx);
	if (o->mode == MODE_LATENCY)
		print_row(o, sm.n, (double)(t_end - t0) / 1e9, &sm);
	else
		print_row(o, (uint64_t)n, (double)(rep.end_ns - t0) / 1e9,
			  NULL);
	free(sm.ns);
	return 0;
out_fail:
	/* No zmq_ctx_term(): with the peer gone it could wait forever. */
	return parent_fail(o, why, child, &sm);
}

static const struct peer zmq_peer = {
	.impl = IMPL,
	.name = "zmq_bench",
	.modes = "pushpull|reqrep",
	.alias = { "pushpull", "reqrep" },
};

int main(int argc, char **argv)
{
	struct opts o;
	int pfd;
	pid_t pid = peer_fork(argc, argv, &zmq_peer, &o, &pfd);

	if (pid == 0)
		child_main(&o, pfd);
	return parent_main(&o, pfd, pid);
}
