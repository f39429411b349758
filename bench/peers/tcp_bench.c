/* SPDX-License-Identifier: MIT */
/*
 * tcp_bench: plain TCP over 127.0.0.1, written the way a careful programmer
 * writes it by hand, as the yardstick for `pairmesh bench` (bench/run.sh).
 *
 * Two processes: fork, the child listens on 127.0.0.1:0 and tells the
 * parent its port through a pipe; the parent connects.
 *
 * --mode throughput: the parent sends for --seconds. Messages are
 *   length-prefixed (an 8-byte header, the layout of a pairmesh frame, so
 *   both put the same bytes on the wire) and the payload is the body
 *   `pairmesh bench` sends: a sequence number and two check bytes. Whole
 *   messages are packed into batches of at least 1 MiB, one write() each.
 *   An END frame carries the count. The child read()s into a 256 KiB
 *   buffer (or four messages, when larger), parses the prefixes in place
 *   and checks every sequence number, length and check byte. Time runs
 *   from the first write to the END frame's arrival (CLOCK_MONOTONIC is
 *   shared by both processes). MB = 1e6 bytes of payload.
 *   The sizes were picked by measurement on a 2-CPU VM: 1 MiB writes with a
 *   256 KiB read buffer beat 256 KiB writes with a 1 MiB buffer at 64 B,
 *   16 KiB and 1 MiB (a read buffer that stays in the L2 cache helps).
 * --mode latency: blocking ping-pong with TCP_NODELAY; the child echoes
 *   every message. After 1000 unrecorded round trips, each round trip is
 *   timed; p50/p99/p99.9 are nearest ranks over all samples, sorted, as in
 *   `pairmesh bench latency`. msgs_per_s counts timed round trips.
 *
 * A gap, a wrong length or count, or a broken connection prints FAIL and
 * exits 1; bad arguments exit 2. --json prints one JSON object on one line.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "peer_common.h"

#define IMPL		"tcp"
#define HDR		8		/* length (be32), type, 3 zero */
#define TYPE_DATA	0x10
#define TYPE_END	0x11		/* payload: the count (u64) */
#define BATCH		(1u << 20)	/* a write(), at least */
#define MIN_RBUF	(256u << 10)	/* the read buffer, at least */

/* Child to parent through the pipe, once at the start. */
struct ready_msg {
	int err;
	uint16_t port;
};

static void put_hdr(uint8_t *p, uint32_t len, uint8_t type)
{
	put_be32(p, len);
	p[4] = type;
	p[5] = p[6] = p[7] = 0;
}

static void set_nodelay(int fd)
{
	int one = 1;

	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

/* Child: throughput receiver. */

/* Parses whole frames in buf[*off, have). 1 at END, 0 for more, -errno. */
static int parse(const uint8_t *buf, size_t have, size_t *off, size_t size,
		 struct report *rep)
{
	while (have - *off >= HDR) {
		const uint8_t *h = buf + *off;
		uint32_t len = get_be32(h);
		uint64_t got = 0;

		if (len > size || len < 8)
			return -EBADMSG;
		if (have - *off < HDR + (size_t)len)
			return 0;
		*off += HDR + len;
		if (h[4] == TYPE_END) {
			rep->end_ns = now_ns();
			memcpy(&rep->count, h + HDR, 8);
			return 1;
		}
		if (!payload_ok(h + HDR, len, size, rep->msgs, &got) &&
		    rep->ok) {
			rep->ok = 0;
			rep->gap_want = rep->msgs;
			rep->gap_got = got;
		}
		rep->msgs++;
		rep->bytes += len;
	}
	return 0;
}

static int rx_loop(int fd, size_t size, struct report *rep)
{
	size_t frame = HDR + size, cap = 4 * frame, have = 0, off = 0;
	uint8_t *buf;
	int r;

	if (cap < MIN_RBUF)
		cap = MIN_RBUF;
	buf = malloc(cap);
	if (!buf)
		return -ENOMEM;
	for (;;) {
		ssize_t n = read(fd, buf + have, cap - have);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			r = n == 0 ? -ECONNRESET : -errno;
			break;
		}
		have += (size_t)n;
		r = parse(buf, have, &off, size, rep);
		if (r)
			break;
		/* Move the partial frame to the front only when the rest of
		 * it would not fit: with 4 frames of room that is rare. */
		if (off == have) {
			off = have = 0;
		} else if (cap - have < frame) {
			memmove(buf, buf + off, have - off);
			have -= off;
			off = 0;
		}
	}
	free(buf);
	return r < 0 ? r : 0;
}

/* Child: latency echo. Returns at the client's EOF. */
static int echo_loop(int fd, size_t size, struct report *rep)
{
	size_t frame = HDR + size;
	uint8_t *buf = malloc(frame);
	int r;

	if (!buf)
		return -ENOMEM;
	for (;;) {
		uint64_t got = 0;

		r = read_full(fd, buf, frame);
		if (r == -EPIPE && rep->msgs) {
			r = 0;	/* the client is done */
			break;
		}
		if (r)
			break;
		if (get_be32(buf) != size ||
		    !payload_ok(buf + HDR, size, size, rep->msgs, &got)) {
			if (rep->ok) {
				rep->gap_want = rep->msgs;
				rep->gap_got = got;
			}
			rep->ok = 0;
		}
		rep->msgs++;
		rep->bytes += size;
		r = write_all(fd, buf, frame);
		if (r)
			break;
	}
	rep->count = rep->msgs;
	rep->end_ns = now_ns();
	free(buf);
	return r;
}

static void child_main(const struct opts *o, int pfd)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	struct report rep = { .ok = 1 };
	struct ready_msg ready = { 0 };
	socklen_t sl = sizeof(sa);
	int lfd, cfd;

	child_setup(o);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) ||
	    listen(lfd, 1) || getsockname(lfd, (struct sockaddr *)&sa, &sl))
		ready.err = -errno;
	ready.port = ntohs(sa.sin_port);
	if (write_all(pfd, &ready, sizeof(ready)) || ready.err)
		_exit(1);
	cfd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	if (cfd < 0) {
		rep.err = -errno;
	} else {
		set_nodelay(cfd);
		if (o->mode == MODE_THROUGHPUT)
			rep.err = rx_loop(cfd, o->size, &rep);
		else
			rep.err = echo_loop(cfd, o->size, &rep);
	}
	child_report(pfd, &rep);
	_exit(0);
}

/* Parent: throughput sender. Messages sent, or -errno. */
static int64_t send_loop(int fd, const struct opts *o, int64_t *t0)
{
	size_t frame = HDR + o->size;
	size_t per = (BATCH + frame - 1) / frame;
	uint64_t seq = 0, n = 0;
	int64_t deadline;
	uint8_t *buf;
	int r = 0;

	buf = malloc(per * frame);
	if (!buf)
		return -ENOMEM;
	*t0 = now_ns();
	deadline = *t0 + (int64_t)(o->seconds * 1e9);
	while (now_ns() < deadline) {
		uint8_t *p = buf;

		for (size_t i = 0; i < per; i++, seq++, n++, p += frame) {
			if (o->inject_gap && seq == 100)
				seq++;
			put_hdr(p, (uint32_t)o->size, TYPE_DATA);
			fill(p + HDR, o->size, seq);
		}
		r = write_all(fd, buf, per * frame);
		if (r)
			goto out;
	}
	put_hdr(buf, 8, TYPE_END);
	memcpy(buf + HDR, &n, 8);
	r = write_all(fd, buf, HDR + 8);
out:
	free(buf);
	return r ? r : (int64_t)n;
}

/* Parent: latency client. Round trips, or -errno. */
static int64_t ping_loop(int fd, const struct opts *o, struct samples *s,
			 int64_t *t0, int64_t *t_end)
{
	size_t frame = HDR + o->size;
	uint8_t *out = malloc(frame), *in = malloc(frame);
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
		put_hdr(out, (uint32_t)o->size, TYPE_DATA);
		fill(out + HDR, o->size, seq);
		r = write_all(fd, out, frame);
		if (!r)
			r = read_full(fd, in, frame);
		if (r)
			goto out;
		t1 = now_ns();
		if (!payload_ok(in + HDR, o->size, o->size, seq, &got)) {
			r = -EBADMSG;
			goto out;
		}
		if (n >= WARMUP) {
			r = samples_add(s, t1 - t);
			if (r)
				goto out;
		}
		t = t1;
	}
	*t_end = t;
out:
	free(out);
	free(in);
	return r ? r : (int64_t)n;
}

/* Parent side. 0, or 1 after printing FAIL. */
static int parent_main(const struct opts *o, int pfd, pid_t child)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	struct samples s = { 0 };
	struct ready_msg ready;
	struct report rep;
	char why[200] = "";
	int64_t t0 = 0, t_end = 0, n;
	int fd = -1, r;

	r = read_timed(pfd, &ready, sizeof(ready), SETUP_MS);
	if (r || ready.err) {
		snprintf(why, sizeof(why), "child setup: %s",
			 strerror(r ? -r : -ready.err));
		goto out_fail;
	}
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	sa.sin_port = htons(ready.port);
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa))) {
		snprintf(why, sizeof(why), "connect: %s", strerror(errno));
		goto out_fail;
	}
	set_nodelay(fd);
	if (o->mode == MODE_THROUGHPUT)
		n = send_loop(fd, o, &t0);
	else
		n = ping_loop(fd, o, &s, &t0, &t_end);
	if (n < 0) {
		snprintf(why, sizeof(why), "%s: %s", o->mode == MODE_LATENCY ?
			 "ping-pong" : "send", strerror((int)-n));
		goto out_fail;
	}
	/* The echo child ends at our EOF; the receiver at the END frame. */
	shutdown(fd, SHUT_WR);
	r = read_timed(pfd, &rep, sizeof(rep), GRACE_MS);
	if (r || rep.err) {
		snprintf(why, sizeof(why), "child: %s",
			 strerror(r ? -r : -rep.err));
		goto out_fail;
	}
	if (report_check(&rep, n, true, why, sizeof(why)))
		goto out_fail;
	close(fd);
	if (!child_exited_ok(child)) {
		snprintf(why, sizeof(why), "child exited badly");
		child = 0;
		goto out_fail;
	}
	if (o->mode == MODE_LATENCY)
		print_row(o, s.n, (double)(t_end - t0) / 1e9, &s);
	else
		print_row(o, (uint64_t)n, (double)(rep.end_ns - t0) / 1e9,
			  NULL);
	free(s.ns);
	return 0;
out_fail:
	return parent_fail(o, why, child, &s);
}

static const struct peer tcp_peer = {
	.impl = IMPL,
	.name = "tcp_bench",
	.modes = "throughput|latency",
};

int main(int argc, char **argv)
{
	struct opts o;
	int pfd;
	pid_t pid = peer_fork(argc, argv, &tcp_peer, &o, &pfd);

	if (pid == 0)
		child_main(&o, pfd);
	return parent_main(&o, pfd, pid);
}
