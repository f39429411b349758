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
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define IMPL		"tcp"
#define HDR		8		/* length (be32), type, 3 zero */
#define TYPE_DATA	0x10
#define TYPE_END	0x11		/* payload: the count (u64) */
#define MIN_SIZE	16		/* pairmesh bench's body header */
#define MAX_SIZE	(64u << 20)
#define BATCH		(1u << 20)	/* a write(), at least */
#define MIN_RBUF	(256u << 10)	/* the read buffer, at least */
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
};

/* Child to parent through the pipe, once at the start and once at the end. */
struct ready_msg {
	int err;
	uint16_t port;
};

struct report {
	int err;			/* -errno, or 0 */
	int ok;				/* every check passed */
	uint64_t msgs, bytes, count;	/* count: what the END frame said */
	uint64_t gap_want, gap_got;
	int64_t end_ns;
};

static int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void put_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static uint32_t get_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	       (uint32_t)p[2] << 8 | p[3];
}

static void put_hdr(uint8_t *p, uint32_t len, uint8_t type)
{
	put_be32(p, len);
	p[4] = type;
	p[5] = p[6] = p[7] = 0;
}

/*
 * The message body of `pairmesh bench` (tools/bench_proc.c msg_fill): the
 * sequence number, 4 zero bytes (the origin there), and check bytes at 12
 * and at the end. The rest of the buffer is left as it is, as pairmesh
 * leaves its ring, so both do the same work per message.
 */
static void fill(uint8_t *d, size_t size, uint64_t seq)
{
	memcpy(d, &seq, sizeof(seq));
	memset(d + 8, 0, 4);
	d[12] = (uint8_t)seq;
	d[size - 1] = (uint8_t)(seq >> 8);
}

/* Checks one payload against the expected sequence number. */
static bool payload_ok(const uint8_t *d, size_t len, size_t size,
		       uint64_t want, uint64_t *got)
{
	uint64_t seq;

	if (len != size)
		return false;
	memcpy(&seq, d, sizeof(seq));
	*got = seq;
	return seq == want && d[12] == (uint8_t)seq &&
	       d[len - 1] == (uint8_t)(seq >> 8);
}

static int write_all(int fd, const void *buf, size_t len)
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
static int read_full(int fd, void *buf, size_t len)
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

/* Reads exactly len bytes from the pipe within timeout_ms. */
static int read_timed(int fd, void *buf, size_t len, int timeout_ms)
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
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return r == 0 ? -EPIPE : -errno;
		p += r;
		len -= (size_t)r;
	}
	return 0;
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

	prctl(PR_SET_PDEATHSIG, SIGKILL);
	/* Backstop should the parent hang without dying. */
	alarm(2 * (unsigned int)o->seconds + 2 * (SETUP_MS + GRACE_MS) / 1000);
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
	if (rep.err)
		rep.ok = 0;
	write_all(pfd, &rep, sizeof(rep));
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

struct samples {
	uint32_t *ns;
	size_t n, cap;
};

static int samples_add(struct samples *s, int64_t ns)
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

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return (x > y) - (x < y);
}

/* Nearest rank, as pairmesh bench: the ceil(p * n)-th smallest, in us. */
static double pct_us(const struct samples *s, double p)
{
	double x = p * (double)s->n;
	size_t i = (size_t)x;

	if ((double)i < x)
		i++;
	if (i > s->n)
		i = s->n;
	return s->ns[i ? i - 1 : 0] / 1e3;
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

static void print_fail(const struct opts *o, const char *why)
{
	const char *scen = o->mode == MODE_THROUGHPUT ? "throughput" :
			   "latency";

	if (o->json)
		printf("{\"scenario\":\"%s\",\"impl\":\"%s\",\"size\":%zu,"
		       "\"fail\":\"%s\"}\n", scen, IMPL, o->size, why);
	else
		printf("FAIL %s %s size %zu: %s\n", IMPL, scen, o->size, why);
	fflush(stdout);
}

static void print_row(const struct opts *o, uint64_t msgs, double secs,
		      const struct samples *s)
{
	const char *scen = o->mode == MODE_THROUGHPUT ? "throughput" :
			   "latency";
	double mps = (double)msgs / secs;
	double mbps = (double)msgs * (double)o->size / 1e6 / secs;
	char p[3][32] = { "null", "null", "null" };

	if (s && s->n) {
		snprintf(p[0], sizeof(p[0]), "%.2f", pct_us(s, 0.50));
		snprintf(p[1], sizeof(p[1]), "%.2f", pct_us(s, 0.99));
		snprintf(p[2], sizeof(p[2]), "%.2f", pct_us(s, 0.999));
	}
	if (o->json)
		printf("{\"scenario\":\"%s\",\"impl\":\"%s\",\"engine\":\"%s\","
		       "\"size\":%zu,\"seconds\":%.3f,\"msgs\":%llu,"
		       "\"msgs_per_s\":%.1f,\"mb_per_s\":%.2f,\"p50_us\":%s,"
		       "\"p99_us\":%s,\"p999_us\":%s}\n", scen, IMPL, IMPL,
		       o->size, secs, (unsigned long long)msgs, mps, mbps,
		       p[0], p[1], p[2]);
	else
		printf("%-4s %-10s %8zu B %7.3f s %14.0f msg/s %10.1f MB/s "
		       "p50 %s p99 %s p999 %s us\n", IMPL, scen, o->size, secs,
		       mps, mbps, p[0], p[1], p[2]);
	fflush(stdout);
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
	int fd = -1, r, st;

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
	if (!rep.ok || rep.msgs != (uint64_t)n || rep.count != (uint64_t)n) {
		snprintf(why, sizeof(why), "sent %lld, received %llu, count "
			 "%llu, first gap: wanted %llu got %llu", (long long)n,
			 (unsigned long long)rep.msgs,
			 (unsigned long long)rep.count,
			 (unsigned long long)rep.gap_want,
			 (unsigned long long)rep.gap_got);
		goto out_fail;
	}
	close(fd);
	if (waitpid(child, &st, 0) != child || !WIFEXITED(st) ||
	    WEXITSTATUS(st)) {
		snprintf(why, sizeof(why), "child exited badly");
		print_fail(o, why);
		return 1;
	}
	if (o->mode == MODE_LATENCY) {
		qsort(s.ns, s.n, sizeof(*s.ns), cmp_u32);
		print_row(o, s.n, (double)(t_end - t0) / 1e9, &s);
	} else {
		print_row(o, (uint64_t)n, (double)(rep.end_ns - t0) / 1e9,
			  NULL);
	}
	free(s.ns);
	return 0;
out_fail:
	print_fail(o, why);
	kill(child, SIGKILL);
	waitpid(child, &st, 0);
	free(s.ns);
	return 1;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: tcp_bench [--mode throughput|latency] [--size N] "
		"[--seconds S] [--json]\n");
}

/* 0, or 2 after printing usage. */
static int parse_args(int argc, char **argv, struct opts *o)
{
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		char *end;

		if (!strcmp(a, "--json")) {
			o->json = true;
			continue;
		}
		if (!strcmp(a, "--inject-gap")) {
			o->inject_gap = true;
			continue;
		}
		if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			usage(stdout);
			exit(0);
		}
		if (!v)
			goto bad;
		i++;
		if (!strcmp(a, "--mode")) {
			if (!strcmp(v, "throughput"))
				o->mode = MODE_THROUGHPUT;
			else if (!strcmp(v, "latency"))
				o->mode = MODE_LATENCY;
			else
				goto bad;
		} else if (!strcmp(a, "--size")) {
			unsigned long long n = strtoull(v, &end, 10);

			if (*end || n < MIN_SIZE || n > MAX_SIZE)
				goto bad;
			o->size = (size_t)n;
		} else if (!strcmp(a, "--seconds")) {
			o->seconds = strtod(v, &end);
			if (*end || !(o->seconds > 0 && o->seconds <= 3600))
				goto bad;
		} else {
			goto bad;
		}
	}
	return 0;
bad:
	usage(stderr);
	return 2;
}

int main(int argc, char **argv)
{
	struct opts o = { MODE_THROUGHPUT, 64, 3.0, false, false };
	int p[2], r;
	pid_t pid;

	r = parse_args(argc, argv, &o);
	if (r)
		return r;
	signal(SIGPIPE, SIG_IGN);
	if (pipe2(p, O_CLOEXEC)) {
		perror("pipe");
		return 1;
	}
	fflush(stdout);
	pid = fork();
	if (pid < 0) {
		perror("fork");
		return 1;
	}
	if (pid == 0) {
		close(p[0]);
		child_main(&o, p[1]);
	}
	close(p[1]);
	return parent_main(&o, p[0], pid);
}
