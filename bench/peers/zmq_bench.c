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
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#define IMPL		"zmq"
#define MIN_SIZE	16		/* pairmesh bench's body header */
#define MAX_SIZE	(64u << 20)
#define EP_LEN		128
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
	char ep[EP_LEN];
};

struct report {
	int err;			/* zmq errno, or 0 */
	int ok;				/* every check passed */
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

	prctl(PR_SET_PDEATHSIG, SIGKILL);
	alarm(2 * (unsigned int)o->seconds + 2 * (SETUP_MS + GRACE_MS) / 1000);
	ctx = zmq_ctx_new();
	s = ctx ? zmq_socket(ctx, o->mode == MODE_THROUGHPUT ? ZMQ_PULL :
			     ZMQ_REP) : NULL;
	if (!s || zmq_bind(s, "tcp://127.0.0.1:*") ||
	    zmq_getsockopt(s, ZMQ_LAST_ENDPOINT, ready.ep, &len))
		ready.err = -zmq_errno();
	if (write_all(pfd, &ready, sizeof(ready)) || ready.err)
		_exit(1);
	rep.err = child_loop(s, o, &rep);
	if (rep.err)
		rep.ok = 0;
	write_all(pfd, &rep, sizeof(rep));
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
	void *ctx = NULL, *s = NULL;
	char why[240] = "";
	int64_t t0 = 0, t_end = 0, n;
	int r, st, zero = 0, tmo = GRACE_MS;

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
	if (!rep.ok || rep.msgs != (uint64_t)n) {
		snprintf(why, sizeof(why), "sent %lld, received %llu, first "
			 "gap: wanted %llu got %llu", (long long)n,
			 (unsigned long long)rep.msgs,
			 (unsigned long long)rep.gap_want,
			 (unsigned long long)rep.gap_got);
		goto out_fail;
	}
	if (waitpid(child, &st, 0) != child || !WIFEXITED(st) ||
	    WEXITSTATUS(st)) {
		snprintf(why, sizeof(why), "child exited badly");
		child = 0;
		goto out_fail;
	}
	zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof(zero));
	zmq_close(s);
	zmq_ctx_term(ctx);
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
	/* No zmq_ctx_term(): with the peer gone it could wait forever. */
	free(sm.ns);
	return 1;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: zmq_bench [--mode pushpull|reqrep] [--size N] "
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
			if (!strcmp(v, "pushpull") || !strcmp(v, "throughput"))
				o->mode = MODE_THROUGHPUT;
			else if (!strcmp(v, "reqrep") || !strcmp(v, "latency"))
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
