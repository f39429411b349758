/* SPDX-License-Identifier: MIT */
/*
 * nng_bench: the same work as tcp_bench through NNG's pair1 protocol, as a
 * peer for `pairmesh bench` (bench/run.sh).
 *
 * Two processes: fork, the child listens on tcp://127.0.0.1:0 and tells the
 * parent the bound port through a socketpair; the parent dials. NNG is only
 * touched after the fork, so each process has its own threads.
 *
 * --mode throughput: the parent sends for --seconds, one nng_send() per
 *   message. The payload is the body `pairmesh bench` sends: a sequence
 *   number and two check bytes. An empty message ends the run. The child
 *   nng_recv()s every message and checks its length, sequence number and
 *   check bytes. Time runs from the first send to the empty message's
 *   arrival. MB = 1e6 bytes of payload.
 * --mode latency: ping-pong over the same pair; the child echoes every
 *   message. After 1000 unrecorded round trips, each round trip is timed;
 *   p50/p99/p99.9 are nearest ranks over all samples, sorted, as in
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
#include <nng/nng.h>
#include <nng/protocol/pair1/pair.h>

#include "peer_common.h"

#define IMPL		"nng"
#define ERR_LOCAL	1000		/* + errno: not an NNG error */

/* Child to parent through the pipe, once at the start. */
struct ready_msg {
	int err;		/* NNG error, or 0 */
	int port;
};

/* NNG errors and local -errno in one message. */
static const char *err_str(int err)
{
	if (err < 0)
		return strerror(-err);
	if (err == ERR_LOCAL + EBADMSG)
		return "bad reply";
	return nng_strerror(err);
}

/* nng_send/nng_recv with a caller buffer, retried on EINTR. 0 or error. */
static int nsend(nng_socket s, void *buf, size_t len)
{
	int r;

	do
		r = nng_send(s, buf, len, 0);
	while (r == NNG_EINTR);
	return r;
}

static int nrecv(nng_socket s, void *buf, size_t cap, size_t *len)
{
	int r;

	do {
		*len = cap;
		r = nng_recv(s, buf, len, 0);
	} while (r == NNG_EINTR);
	return r;
}

/*
 * pair1 rejects messages over 1 MiB by default; the check is ours. NNG's
 * send and receive buffers default to 0 messages, which makes every send
 * wait for the receiver to take the message: about 20 k msgs/s whatever
 * the size, a rendezvous rather than a stream. A user after throughput
 * sets them, so they hold QUEUE_MSGS messages, as many as ZeroMQ's
 * default high-water mark holds.
 */
#define QUEUE_MSGS	1000

static int open_pair(nng_socket *s)
{
	int r = nng_pair1_open(s);

	if (!r)
		r = nng_socket_set_size(*s, NNG_OPT_RECVMAXSZ, 0);
	if (!r)
		r = nng_socket_set_int(*s, NNG_OPT_SENDBUF, QUEUE_MSGS);
	if (!r)
		r = nng_socket_set_int(*s, NNG_OPT_RECVBUF, QUEUE_MSGS);
	return r;
}

/* Child: receiver, or echo. Both end at an empty message. */
static int child_loop(nng_socket s, const struct opts *o, struct report *rep)
{
	/* One spare byte: a longer message shows up as len != size. */
	uint8_t *buf = malloc(o->size + 1);
	int r = 0;

	if (!buf)
		return NNG_ENOMEM;
	for (;;) {
		uint64_t got = 0;
		size_t n;

		r = nrecv(s, buf, o->size + 1, &n);
		if (r)
			break;
		if (n == 0) {
			rep->end_ns = now_ns();
			if (o->mode == MODE_LATENCY)
				r = nsend(s, buf, 0);
			break;
		}
		if (!payload_ok(buf, n, o->size, rep->msgs, &got) &&
		    rep->ok) {
			rep->ok = 0;
			rep->gap_want = rep->msgs;
			rep->gap_got = got;
		}
		rep->msgs++;
		rep->bytes += n;
		if (o->mode == MODE_LATENCY) {
			r = nsend(s, buf, n);
			if (r)
				break;
		}
	}
	free(buf);
	return r;
}

static void child_main(const struct opts *o, int pfd)
{
	struct report rep = { .ok = 1 };
	struct ready_msg ready = { 0 };
	nng_listener l;
	nng_socket s;

	child_setup(o);
	ready.err = open_pair(&s);
	if (!ready.err)
		ready.err = nng_listen(s, "tcp://127.0.0.1:0", &l, 0);
	if (!ready.err)
		ready.err = nng_listener_get_int(l, NNG_OPT_TCP_BOUND_PORT,
						 &ready.port);
	if (write_all(pfd, &ready, sizeof(ready)) || ready.err)
		_exit(1);
	rep.err = child_loop(s, o, &rep);
	child_report(pfd, &rep);
	/* The last echo must leave before the socket goes: wait for the
	 * parent to hang up its end of the socketpair, bounded by the
	 * alarm. */
	if (o->mode == MODE_LATENCY) {
		char c;

		while (read(pfd, &c, 1) < 0 && errno == EINTR)
			;
	}
	nng_close(s);
	_exit(0);
}

/* Parent: sender. Messages sent, or minus an error. */
static int64_t send_loop(nng_socket s, const struct opts *o, int64_t *t0)
{
	uint8_t *buf = malloc(o->size);
	/* The clock is read once per burst: a read per message would be a
	 * visible share of a 16-byte send. */
	int burst = o->size < 4096 ? 64 : 1;
	uint64_t seq = 0, n = 0;
	int64_t deadline;
	int r = 0;

	if (!buf)
		return -NNG_ENOMEM;
	*t0 = now_ns();
	deadline = *t0 + (int64_t)(o->seconds * 1e9);
	while (now_ns() < deadline) {
		for (int i = 0; i < burst; i++, seq++, n++) {
			if (o->inject_gap && seq == 100)
				seq++;
			fill(buf, o->size, seq);
			r = nsend(s, buf, o->size);
			if (r)
				goto out;
		}
	}
	r = nsend(s, buf, 0);
out:
	free(buf);
	return r ? -r : (int64_t)n;
}

/* Parent: ping-pong client. Round trips, or minus an error. */
static int64_t ping_loop(nng_socket s, const struct opts *o,
			 struct samples *sm, int64_t *t0, int64_t *t_end)
{
	uint8_t *out = malloc(o->size), *in = malloc(o->size + 1);
	uint64_t seq = 0, n = 0, got;
	int64_t deadline, t;
	size_t len;
	int r = 0;

	if (!out || !in) {
		r = NNG_ENOMEM;
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
		r = nsend(s, out, o->size);
		if (!r)
			r = nrecv(s, in, o->size + 1, &len);
		if (r)
			goto out;
		t1 = now_ns();
		if (!payload_ok(in, len, o->size, seq, &got)) {
			r = ERR_LOCAL + EBADMSG;
			goto out;
		}
		if (n >= WARMUP) {
			r = samples_add(sm, t1 - t);
			if (r) {
				r = NNG_ENOMEM;	/* not -ENOMEM */
				goto out;
			}
		}
		t = t1;
	}
	*t_end = t;
	r = nsend(s, out, 0);
	if (!r)
		r = nrecv(s, in, o->size + 1, &len);
out:
	free(out);
	free(in);
	return r ? -r : (int64_t)n;
}

/* Parent side. 0, or 1 after printing FAIL. */
static int parent_main(const struct opts *o, int pfd, pid_t child)
{
	struct samples sm = { 0 };
	struct ready_msg ready;
	struct report rep;
	char url[64], why[240] = "";
	int64_t t0 = 0, t_end = 0, n;
	nng_socket s = NNG_SOCKET_INITIALIZER;
	int r;

	r = read_timed(pfd, &ready, sizeof(ready), SETUP_MS);
	if (r || ready.err) {
		snprintf(why, sizeof(why), "child setup: %s",
			 err_str(r ? r : ready.err));
		goto out_fail;
	}
	snprintf(url, sizeof(url), "tcp://127.0.0.1:%d", ready.port);
	r = open_pair(&s);
	/* Bounded waits: a child that died must fail the run, not hang it. */
	if (!r)
		r = nng_socket_set_ms(s, NNG_OPT_RECVTIMEO, GRACE_MS);
	if (!r)
		r = nng_socket_set_ms(s, NNG_OPT_SENDTIMEO, GRACE_MS);
	if (!r)
		r = nng_dial(s, url, NULL, 0);
	if (r) {
		snprintf(why, sizeof(why), "dial %s: %s", url, err_str(r));
		goto out_fail;
	}
	if (o->mode == MODE_THROUGHPUT)
		n = send_loop(s, o, &t0);
	else
		n = ping_loop(s, o, &sm, &t0, &t_end);
	if (n < 0) {
		snprintf(why, sizeof(why), "%s: %s", o->mode == MODE_LATENCY ?
			 "ping-pong" : "send", err_str((int)-n));
		goto out_fail;
	}
	r = read_timed(pfd, &rep, sizeof(rep), GRACE_MS);
	if (r || rep.err) {
		snprintf(why, sizeof(why), "child: %s",
			 err_str(r ? r : rep.err));
		goto out_fail;
	}
	if (report_check(&rep, n, false, why, sizeof(why)))
		goto out_fail;
	close(pfd);	/* lets the echo child close its socket */
	if (!child_exited_ok(child)) {
		snprintf(why, sizeof(why), "child exited badly");
		child = 0;
		goto out_fail;
	}
	nng_close(s);
	if (o->mode == MODE_LATENCY)
		print_row(o, sm.n, (double)(t_end - t0) / 1e9, &sm);
	else
		print_row(o, (uint64_t)n, (double)(rep.end_ns - t0) / 1e9,
			  NULL);
	free(sm.ns);
	return 0;
out_fail:
	return parent_fail(o, why, child, &sm);
}

static const struct peer nng_peer = {
	.impl = IMPL,
	.name = "nng_bench",
	.modes = "throughput|latency",
	/* A socketpair, not a pipe: the child also waits for its EOF. */
	.socketpair = true,
};

int main(int argc, char **argv)
{
	struct opts o;
	int pfd;
	pid_t pid = peer_fork(argc, argv, &nng_peer, &o, &pfd);

	if (pid == 0)
		child_main(&o, pfd);
	return parent_main(&o, pfd, pid);
}
