/* SPDX-License-Identifier: MIT */
/*
 * tcp_baseline: the same one-way measurement as bench/throughput, over a
 * plain blocking TCP socket on 127.0.0.1 with no library in the way. It is
 * the yardstick PERF.md divides by.
 *
 * The child is the receiver: it listens on 127.0.0.1:0 and tells the parent
 * the port through a pipe. The parent is the sender: it connects (with
 * TCP_NODELAY, as pairmesh does) and for --seconds fills a batch buffer of
 * whole messages, then hands it to write() in one call. Each message has
 * the pairmesh frame layout, so both put the same bytes on the wire: an
 * 8-byte header (big-endian length, type, flags, reserved) and a payload of
 * a sequence number and a filler byte derived from it. A marker message
 * carrying the count ends the run.
 *
 * The receiver read()s into a buffer, parses the length prefixes, and
 * checks what throughput checks: consecutive sequence numbers, the length,
 * the filler at both ends, and the final count. It reports back through the
 * pipe with the CLOCK_MONOTONIC time of the marker; time runs from the
 * first write to the marker's arrival. MB = 1e6 bytes of payload.
 *
 * A gap, a wrong count or a broken connection prints FAIL and exits 1.
 *
 * Run:  make && build/bench/tcp_baseline
 *       build/bench/tcp_baseline --size 1024 --seconds 5 --batch 262144
 * Options: --size N (repeatable; default 64 and 65536), --seconds S
 * (default 3), --batch B (bytes handed to one write(), rounded down to
 * whole messages, at least one; default 131072, the sender batch of
 * throughput), --json (one JSON object per row).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common.h"

#define HDR		8		/* same header as a pairmesh frame */
#define TYPE_DATA	0x10
#define MARKER_SEQ	UINT64_MAX
#define MARKER_LEN	16		/* MARKER_SEQ, then the count */
#define DEFAULT_BATCH	(128u << 10)
#define MIN_RBUF	(1u << 20)
#define SETUP_MS	10000
#define GRACE_MS	30000

struct opts {
	struct table_opts t;
	size_t batch;
};

/* Child to parent, once the socket listens. */
struct ready_msg {
	int err;
	uint16_t port;
};

static void put_hdr(uint8_t *p, uint32_t len)
{
	put_be32(p, len);
	p[4] = TYPE_DATA;
	p[5] = 0;
	p[6] = 0;
	p[7] = 0;
}

/* Receiver side. */

/* Checks one message. Returns true when it was the marker. */
static bool rx_message(struct result_msg *res, size_t size,
		       const uint8_t *d, uint32_t len)
{
	uint64_t seq;

	if (len < sizeof(seq)) {
		res->ok = 0;
		return false;
	}
	memcpy(&seq, d, sizeof(seq));
	if (seq == MARKER_SEQ && len == MARKER_LEN) {
		res->end_ns = now_ns();
		memcpy(&res->marker_count, d + 8, 8);
		if (res->marker_count != res->msgs)
			res->ok = 0;
		return true;
	}
	if (seq != res->msgs && res->ok) {
		res->ok = 0;
		res->gap_want = res->msgs;
		res->gap_got = seq;
	}
	if (len != size || (len > 8 && (d[8] != (uint8_t)seq ||
					 d[len - 1] != (uint8_t)seq)))
		res->ok = 0;
	res->msgs++;
	res->bytes += len;
	return false;
}

/* Reads and parses until the marker. 0 or -errno. */
static int rx_loop(int fd, size_t size, struct result_msg *res)
{
	size_t cap = 4 * (size + HDR), have = 0, off;
	uint8_t *buf;
	int r = 0;

	/* Room for several messages, like the receiver's ring in throughput. */
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
		off = 0;
		while (have - off >= HDR) {
			uint32_t len = get_be32(buf + off);

			if (len > size && len != MARKER_LEN) {
				r = -EBADMSG;
				goto out;
			}
			if (have - off < HDR + (size_t)len)
				break;
			if (rx_message(res, size, buf + off + HDR, len))
				goto out;
			off += HDR + len;
		}
		/* Keep the partial message at the front: at most one. */
		memmove(buf, buf + off, have - off);
		have -= off;
	}
out:
	free(buf);
	return r;
}

static void receiver_main(int fd, size_t size, double seconds)
{
	struct result_msg res = { .ok = 1 };
	struct ready_msg ready = { 0 };
	struct sockaddr_in sa = { .sin_family = AF_INET };
	socklen_t sl = sizeof(sa);
	int lfd, cfd = -1, one = 1;

	prctl(PR_SET_PDEATHSIG, SIGKILL);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) ||
	    listen(lfd, 1) || getsockname(lfd, (struct sockaddr *)&sa, &sl))
		ready.err = -errno;
	ready.port = ntohs(sa.sin_port);
	if (write_all(fd, &ready, sizeof(ready)) || ready.err)
		_exit(1);

	/* The parent kills us past its own deadline; the alarm is a backstop
	 * should it hang without dying. */
	alarm((unsigned int)(seconds + (SETUP_MS + GRACE_MS) / 1000) + 1);
	cfd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	if (cfd < 0) {
		res.err = -errno;
	} else {
		setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		res.err = rx_loop(cfd, size, &res);
	}
	if (res.err)
		res.ok = 0;
	write_all(fd, &res, sizeof(res));
	_exit(0);
}

/* Sender side. */

/* Sends for `seconds`, then the marker. Messages sent, or -errno. */
static int64_t send_loop(int sfd, size_t size, size_t batch, double seconds,
			 int64_t *t0)
{
	size_t per = batch / (size + HDR) ? batch / (size + HDR) : 1;
	size_t blen = per * (size + HDR);
	uint64_t seq = 0, marker = MARKER_SEQ;
	uint8_t *buf;
	int64_t deadline;
	int r = 0;

	/* A tiny --batch with --size 8 is shorter than the marker. */
	buf = malloc(blen > HDR + MARKER_LEN ? blen : HDR + MARKER_LEN);
	if (!buf)
		return -ENOMEM;
	*t0 = now_ns();
	deadline = *t0 + (int64_t)(seconds * 1e9);
	while (now_ns() < deadline) {
		uint8_t *p = buf;

		/* Fill every message, as a pairmesh sender writes into its
		 * ring: the cost of producing the bytes is in both. */
		for (size_t i = 0; i < per; i++, seq++) {
			put_hdr(p, (uint32_t)size);
			memcpy(p + HDR, &seq, sizeof(seq));
			memset(p + HDR + 8, (uint8_t)seq, size - 8);
			p += HDR + size;
		}
		r = write_all(sfd, buf, blen);
		if (r)
			goto out;
	}
	put_hdr(buf, MARKER_LEN);
	memcpy(buf + HDR, &marker, 8);
	memcpy(buf + HDR + 8, &seq, 8);
	r = write_all(sfd, buf, HDR + MARKER_LEN);
out:
	free(buf);
	return r ? r : (int64_t)seq;
}

static void print_fail(const struct opts *o, size_t size, const char *why)
{
	table_fail(o->t.json, "tcp", size, why);
}

/* Parent side of one run. 0, or -1 after printing FAIL. */
static int sender_run(const struct opts *o, size_t size, uint16_t port,
		      int pfd)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	struct result_msg res;
	char why[160];
	int64_t t0, sent;
	int sfd, one = 1, r;

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	sa.sin_port = htons(port);
	sfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (sfd < 0 || connect(sfd, (struct sockaddr *)&sa, sizeof(sa))) {
		snprintf(why, sizeof(why), "connect: %s", strerror(errno));
		goto out_fail;
	}
	setsockopt(sfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	sent = send_loop(sfd, size, o->batch, o->t.seconds, &t0);
	if (sent < 0) {
		snprintf(why, sizeof(why), "send: %s", strerror((int)-sent));
		goto out_fail;
	}
	r = read_timed(pfd, &res, sizeof(res), GRACE_MS);
	if (r) {
		snprintf(why, sizeof(why), "no result from the receiver: %s",
			 strerror(-r));
		goto out_fail;
	}
	if (res.err) {
		snprintf(why, sizeof(why), "receiver: %s", strerror(-res.err));
		goto out_fail;
	}
	if (result_check(&res, sent, why, sizeof(why)))
		goto out_fail;
	table_row(o->t.json, "tcp", size, res.msgs, res.bytes,
		  (double)(res.end_ns - t0) / 1e9);
	close(sfd);
	return 0;
out_fail:
	print_fail(o, size, why);
	if (sfd >= 0)
		close(sfd);
	return -1;
}

/* One size, two processes. 0 or -1 (FAIL printed). */
static int run_one(const struct opts *o, size_t size)
{
	struct ready_msg ready;
	int fds[2], status, ret = -1, r;
	pid_t pid;

	if (pipe2(fds, O_CLOEXEC)) {
		print_fail(o, size, strerror(errno));
		return -1;
	}
	fflush(stdout);
	pid = fork();
	if (pid < 0) {
		print_fail(o, size, strerror(errno));
		close(fds[0]);
		close(fds[1]);
		return -1;
	}
	if (pid == 0) {
		close(fds[0]);
		receiver_main(fds[1], size, o->t.seconds);
	}
	close(fds[1]);
	r = read_timed(fds[0], &ready, sizeof(ready), SETUP_MS);
	if (r || ready.err)
		print_fail(o, size, r ? "receiver did not start" :
			   strerror(-ready.err));
	else
		ret = sender_run(o, size, ready.port, fds[0]);
	close(fds[0]);
	if (ret)
		kill(pid, SIGKILL);
	waitpid(pid, &status, 0);
	if (ret == 0 && !(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
		print_fail(o, size, "receiver exited abnormally");
		ret = -1;
	}
	return ret;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: tcp_baseline [--size N]... [--seconds S] "
		"[--batch B] [--json]\n");
}

static int parse(int argc, char **argv, struct opts *o)
{
	o->batch = DEFAULT_BATCH;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		char *end;
		int r = table_arg(&o->t, argc, argv, &i, "tcp_baseline", usage);

		if (r < 0)
			return r;
		if (r)
			continue;
		if (!strcmp(a, "--batch") && v) {
			unsigned long long b = strtoull(v, &end, 0);

			if (*end || b == 0 || b > (256u << 20)) {
				fprintf(stderr, "tcp_baseline: bad --batch\n");
				return -EINVAL;
			}
			o->batch = (size_t)b;
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
	struct opts o = { 0 };
	int fails = 0;

	if (parse(argc, argv, &o))
		return 2;
	signal(SIGPIPE, SIG_IGN);
	table_head(o.t.json);
	for (int i = 0; i < o.t.nsizes; i++)
		if (run_one(&o, o.t.sizes[i]))
			fails++;
	return fails ? 1 : 0;
}
