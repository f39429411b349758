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
#include <nng/nng.h>
#include <nng/protocol/pair1/pair.h>

#define IMPL		"nng"
#define MIN_SIZE	16		/* pairmesh bench's body header */
#define MAX_SIZE	(64u << 20)
#define SETUP_MS	10000
#define WARMUP		1000		/* untimed round trips */
#define GRACE_MS	30000
#define ERR_LOCAL	1000		/* + errno: not an NNG error */

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
	int err;		/* NNG error, or 0 */
	int port;
};

struct report {
	int err;		/* NNG error, or 0 */
	int ok;			/* every check passed */
	uint64_t msgs, bytes;
	uint64_t gap_want, gap_got;
	int64_t end_ns;
};

static int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
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
 * pair1 rejects messages over 1 MiB by default; the check is ours. The
 * send and receive buffers keep their defaults (0 messages), as ZeroMQ
 * keeps its high-water marks: each library as it comes.
 */
static int open_pair(nng_socket *s)
{
	int r = nng_pair1_open(s);

	if (!r)
		r = nng_socket_set_size(*s, NNG_OPT_RECVMAXSZ, 0);
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

	prctl(PR_SET_PDEATHSIG, SIGKILL);
	alarm(2 * (unsigned int)o->seconds + 2 * (SETUP_MS + GRACE_MS) / 1000);
	ready.err = open_pair(&s);
	if (!ready.err)
		ready.err = nng_listen(s, "tcp://127.0.0.1:0", &l, 0);
	if (!ready.err)
		ready.err = nng_listener_get_int(l, NNG_OPT_TCP_BOUND_PORT,
						 &ready.port);
	if (write_all(pfd, &ready, sizeof(ready)) || ready.err)
		_exit(1);
	rep.err = child_loop(s, o, &rep);
	if (rep.err)
		rep.ok = 0;
	write_all(pfd, &rep, sizeof(rep));
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
			return NNG_ENOMEM;
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
			if (r)
				goto out;
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

static const char *scen_name(const struct opts *o)
{
	return o->mode == MODE_THROUGHPUT ? "throughput" : "latency";
}

static void print_fail(const struct opts *o, const char *why)
{
	if (o->json)
		printf("{\"scenario\":\"%s\",\"impl\":\"%s\",\"size\":%zu,"
		       "\"fail\":\"%s\"}\n", scen_name(o), IMPL, o->size, why);
	else
		printf("FAIL %s %s size %zu: %s\n", IMPL, scen_name(o),
		       o->size, why);
	fflush(stdout);
}

static void print_row(const struct opts *o, uint64_t msgs, double secs,
		      const struct samples *s)
{
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
		       "\"p99_us\":%s,\"p999_us\":%s}\n", scen_name(o), IMPL,
		       IMPL, o->size, secs, (unsigned long long)msgs, mps,
		       mbps, p[0], p[1], p[2]);
	else
		printf("%-4s %-10s %8zu B %7.3f s %14.0f msg/s %10.1f MB/s "
		       "p50 %s p99 %s p999 %s us\n", IMPL, scen_name(o),
		       o->size, secs, mps, mbps, p[0], p[1], p[2]);
	fflush(stdout);
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
	int r, st;

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
	if (!rep.ok || rep.msgs != (uint64_t)n) {
		snprintf(why, sizeof(why), "sent %lld, received %llu, first "
			 "gap: wanted %llu got %llu", (long long)n,
			 (unsigned long long)rep.msgs,
			 (unsigned long long)rep.gap_want,
			 (unsigned long long)rep.gap_got);
		goto out_fail;
	}
	close(pfd);	/* lets the echo child close its socket */
	if (waitpid(child, &st, 0) != child || !WIFEXITED(st) ||
	    WEXITSTATUS(st)) {
		snprintf(why, sizeof(why), "child exited badly");
		child = 0;
		goto out_fail;
	}
	nng_close(s);
	if (o->mode == MODE_LATENCY) {
		qsort(sm.ns, sm.n, sizeof(*sm.ns), cmp_u32);
		print_row(o, sm.n, (double)(t_end - t0) / 1e9, &sm);
	} else {
		print_row(o, (uint64_t)n, (double)(rep.end_ns - t0) / 1e9,
			  NULL);
	}
	free(sm.ns);
	return 0;
out_fail:
	print_fail(o, why);
	if (child) {
		kill(child, SIGKILL);
		waitpid(child, &st, 0);
	}
	free(sm.ns);
	return 1;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: nng_bench [--mode throughput|latency] [--size N] "
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
	/* A socketpair, not a pipe: the child also waits for its EOF. */
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, p)) {
		perror("socketpair");
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
