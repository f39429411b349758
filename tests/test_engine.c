/* SPDX-License-Identifier: MIT */
/*
 * The engine contract, run once per backend. This file stands in for the
 * core: its core_complete() records (tag, res) pairs, checks that it runs
 * only inside wait(), and lets a test react from inside the dispatch the
 * way the core does (re-arming, cancelling).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "engine.h"

/* engine_uring.c: the setup flags the kernel accepted, for the log. */
unsigned engine_uring_setup_flags(const struct engine *e);

#define MAX_RECS	4096
#define MAX_FDS		512
#define DEADLINE_MS	10000	/* generous: valgrind, a loaded machine */
#define QUIET_TURNS	5	/* wait(10) turns that must bring nothing */
#define MANY		200
#define BIG		(1 << 20)
#define CHUNK		(64 << 10)

enum {
	T_ACCEPT = 1,
	T_CONNECT,
	T_RECV_A,
	T_RECV_B,
	T_RECV_C,
	T_SEND_A,
	T_SEND_B,
	T_POLL,
	T_MANY = 1000,	/* T_MANY + i: the i-th of many connects */
};

struct rec {
	uint64_t tag;
	int res;
};

struct fx;
typedef void (*hook_fn)(struct fx *f, uint64_t tag, int res);

struct fx {
	struct engine *e;
	bool in_wait;
	bool no_record;		/* count calls only: bulk traffic */
	unsigned ncalls;	/* core_complete calls from inside wait() */
	unsigned nrec;
	unsigned stray;		/* completions outside wait(), tag 0, ... */
	struct rec recs[MAX_RECS];
	hook_fn hook;		/* runs inside core_complete */
	void *ctx;
	int nfds;
	int fds[MAX_FDS];	/* closed at teardown, after fini */
};

static const struct engine_ops *backend;
static int backend_err;		/* init failed: every case skips */
static struct fx *cur;
/* Only its address matters: init's n must come back to core_complete. */
static char node_token;
#define NODE	((struct pm_node *)&node_token)

void core_complete(struct pm_node *n, uint64_t tag, int res)
{
	struct fx *f = cur;

	if (!f || n != NODE || !f->in_wait || !tag) {
		if (f)
			f->stray++;
		return;
	}
	f->ncalls++;
	if (!f->no_record) {
		if (f->nrec == MAX_RECS) {
			f->stray++;
			return;
		}
		f->recs[f->nrec].tag = tag;
		f->recs[f->nrec].res = res;
		f->nrec++;
	}
	if (f->hook)
		f->hook(f, tag, res);
}

/* --- harness ---------------------------------------------------------- */

static int track(struct fx *f, int fd)
{
	assert_true(fd >= 0);
	assert_true(f->nfds < MAX_FDS);
	f->fds[f->nfds++] = fd;
	return fd;
}

/* Closes fd now (the test's own doing) and forgets it. */
static void untrack_close(struct fx *f, int fd)
{
	for (int i = 0; i < f->nfds; i++) {
		if (f->fds[i] == fd) {
			f->fds[i] = f->fds[--f->nfds];
			break;
		}
	}
	close(fd);
}

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

/* One wait(10); checks its return against the callbacks seen. */
static void pump(struct fx *f)
{
	unsigned before = f->ncalls;
	int r;

	f->in_wait = true;
	r = backend->wait(f->e, 10);
	f->in_wait = false;
	assert_true(r >= 0);
	assert_int_equal(r, f->ncalls - before);
	assert_int_equal(f->stray, 0);
}

static unsigned count_tag(const struct fx *f, uint64_t tag)
{
	unsigned n = 0;

	for (unsigned i = 0; i < f->nrec; i++)
		n += f->recs[i].tag == tag;
	return n;
}

/* The result of tag's only completion; fails unless exactly one. */
static int res_of(const struct fx *f, uint64_t tag)
{
	int res = 0;

	assert_int_equal(count_tag(f, tag), 1);
	for (unsigned i = 0; i < f->nrec; i++) {
		if (f->recs[i].tag == tag)
			res = f->recs[i].res;
	}
	return res;
}

static bool pump_until_count(struct fx *f, uint64_t tag, unsigned want)
{
	long long end = now_ms() + DEADLINE_MS;

	while (count_tag(f, tag) < want) {
		if (now_ms() > end)
			return false;
		pump(f);
	}
	return true;
}

static bool pump_until_flag(struct fx *f, const bool *flag)
{
	long long end = now_ms() + DEADLINE_MS;

	while (!*flag) {
		if (now_ms() > end)
			return false;
		pump(f);
	}
	return true;
}

static void pump_quiet(struct fx *f)
{
	for (int i = 0; i < QUIET_TURNS; i++)
		pump(f);
}

static int listener(struct fx *f, struct sockaddr_in *sin)
{
	socklen_t len = sizeof(*sin);
	int fd;

	fd = track(f, socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK |
			     SOCK_CLOEXEC, 0));
	memset(sin, 0, sizeof(*sin));
	sin->sin_family = AF_INET;
	sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(fd, (struct sockaddr *)sin, sizeof(*sin)), 0);
	assert_int_equal(listen(fd, 1024), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)sin, &len), 0);
	return fd;
}

static int client(struct fx *f)
{
	return track(f, socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK |
			       SOCK_CLOEXEC, 0));
}

static void start_connect(struct fx *f, int fd, const struct sockaddr_in *sin,
			  uint64_t tag)
{
	assert_int_equal(backend->connect(f->e, fd,
					  (const struct sockaddr *)sin,
					  sizeof(*sin), tag), 0);
}

/* The res of the n-th (0-based) completion of tag. */
static int nth_res(const struct fx *f, uint64_t tag, unsigned n)
{
	for (unsigned i = 0; i < f->nrec; i++) {
		if (f->recs[i].tag == tag && !n--)
			return f->recs[i].res;
	}
	fail_msg("no completion %u for tag %llu", n, (unsigned long long)tag);
	return -1;
}

/*
 * A connected pair through the engine: *a accepted by the listener's
 * accept (already armed with T_ACCEPT), *b the client.
 */
static void pair_on(struct fx *f, const struct sockaddr_in *sin, int *a,
		    int *b)
{
	unsigned accepted = count_tag(f, T_ACCEPT);
	unsigned connected = count_tag(f, T_CONNECT);

	*b = client(f);
	start_connect(f, *b, sin, T_CONNECT);
	assert_true(pump_until_count(f, T_CONNECT, connected + 1));
	assert_true(pump_until_count(f, T_ACCEPT, accepted + 1));
	assert_int_equal(nth_res(f, T_CONNECT, connected), 0);
	*a = nth_res(f, T_ACCEPT, accepted);
	assert_true(*a >= 0);
	track(f, *a);
}

static void pair(struct fx *f, int *a, int *b)
{
	struct sockaddr_in sin;
	int l = listener(f, &sin);

	assert_int_equal(backend->accept(f->e, l, T_ACCEPT), 0);
	pair_on(f, &sin, a, b);
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	int r;

	assert_non_null(f);
	*state = f;
	cur = f;
	if (backend_err)
		return 0;
	r = backend->init(&f->e, NODE, 256);
	if (r) {
		print_error("%s init: %s\n", backend->name, strerror(-r));
		return -1;
	}
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;

	/* Engine first: io_uring stops touching the buffers and fds. */
	if (f->e)
		backend->fini(f->e);
	for (int i = 0; i < f->nfds; i++)
		close(f->fds[i]);
	cur = NULL;
	free(f->ctx);
	free(f);
	return 0;
}

static struct fx *begin(void **state)
{
	struct fx *f = *state;

	if (!f->e)
		skip();
	return f;
}

/* --- cases ------------------------------------------------------------ */

static void test_engine_accept_connect(void **state)
{
	struct fx *f = begin(state);
	int a, b, fl;

	pair(f, &a, &b);
	/* Accepted sockets are non-blocking and close-on-exec. */
	fl = fcntl(a, F_GETFL);
	assert_true(fl >= 0 && (fl & O_NONBLOCK));
	fl = fcntl(a, F_GETFD);
	assert_true(fl >= 0 && (fl & FD_CLOEXEC));
	assert_int_equal(f->nrec, 2);
	/* The accept stays armed: a second client is accepted too. */
	pair(f, &a, &b);
	assert_int_equal(count_tag(f, T_ACCEPT), 2);
}

static void test_engine_accept_many(void **state)
{
	struct fx *f = begin(state);
	struct sockaddr_in sin;
	int l = listener(f, &sin);
	int seen[MANY];

	assert_int_equal(backend->accept(f->e, l, T_ACCEPT), 0);
	for (int i = 0; i < MANY; i++)
		start_connect(f, client(f), &sin, T_MANY + i);
	assert_true(pump_until_count(f, T_ACCEPT, MANY));
	for (int i = 0; i < MANY; i++) {
		assert_true(pump_until_count(f, T_MANY + i, 1));
		assert_int_equal(res_of(f, T_MANY + i), 0);
	}
	for (int i = 0; i < MANY; i++) {
		seen[i] = nth_res(f, T_ACCEPT, i);
		assert_true(seen[i] >= 0);
		track(f, seen[i]);
		for (int j = 0; j < i; j++)
			assert_int_not_equal(seen[i], seen[j]);
	}
	pump_quiet(f);
	assert_int_equal(count_tag(f, T_ACCEPT), MANY);
}

/* Cancels the peer socket from inside the poll's dispatch. */
static void cancel_hook(struct fx *f, uint64_t tag, int res)
{
	int fd = *(int *)f->ctx;

	if (tag == T_POLL)
		assert_int_equal(backend->cancel(f->e, fd), 0);
}

static void test_engine_cancel_inside_dispatch(void **state)
{
	struct fx *f = begin(state);
	char rbuf[16];
	int a, b, p[2];

	pair(f, &a, &b);
	assert_int_equal(pipe2(p, O_NONBLOCK | O_CLOEXEC), 0);
	track(f, p[0]);
	track(f, p[1]);
	f->ctx = malloc(sizeof(int));
	assert_non_null(f->ctx);
	*(int *)f->ctx = a;
	f->hook = cancel_hook;
	f->nrec = 0;
	assert_int_equal(backend->recv(f->e, a, rbuf, sizeof(rbuf), T_RECV_A),
			 0);
	assert_int_equal(backend->poll_in(f->e, p[0], T_POLL), 0);
	pump_quiet(f);
	assert_int_equal(f->nrec, 0);
	assert_int_equal(write(p[1], "x", 1), 1);
	assert_true(pump_until_count(f, T_RECV_A, 1));
	assert_int_equal(res_of(f, T_RECV_A), -ECANCELED);
	assert_true(res_of(f, T_POLL) & POLLIN);
	pump_quiet(f);
	assert_int_equal(f->nrec, 2);
}

static void test_engine_cancel_pending(void **state)
{
	struct fx *f = begin(state);
	static char big[CHUNK];
	char rbuf[64];
	int a, b;

	pair(f, &a, &b);
	/* Fill a's send path so that one more send has to wait. */
	while (send(a, big, sizeof(big), MSG_DONTWAIT | MSG_NOSIGNAL) > 0)
		;
	f->nrec = 0;
	assert_int_equal(backend->recv(f->e, a, rbuf, sizeof(rbuf), T_RECV_A),
			 0);
	assert_int_equal(backend->send(f->e, a, big, sizeof(big), T_SEND_A),
			 0);
	assert_int_equal(backend->poll_in(f->e, a, T_POLL), 0);
	pump_quiet(f);
	assert_int_equal(f->nrec, 0);
	assert_int_equal(backend->cancel(f->e, a), 0);
	assert_int_equal(f->nrec, 0);
	assert_true(pump_until_count(f, T_RECV_A, 1));
	assert_true(pump_until_count(f, T_SEND_A, 1));
	assert_true(pump_until_count(f, T_POLL, 1));
	pump_quiet(f);
	assert_int_equal(f->nrec, 3);
	assert_int_equal(res_of(f, T_RECV_A), -ECANCELED);
	assert_int_equal(res_of(f, T_POLL), -ECANCELED);
	/* The send may have slipped out before the cancel; once, anyway. */
	assert_true(res_of(f, T_SEND_A) == -ECANCELED ||
		    res_of(f, T_SEND_A) > 0);
	/* The fd stays open. */
	assert_true(fcntl(a, F_GETFD) >= 0);
}

static void test_engine_cancel_recv(void **state)
{
	struct fx *f = begin(state);
	char rbuf[16];
	int a, b;

	pair(f, &a, &b);
	f->nrec = 0;
	memset(rbuf, 0, sizeof(rbuf));
	assert_int_equal(backend->recv(f->e, a, rbuf, sizeof(rbuf), T_RECV_A),
			 0);
	pump_quiet(f);
	assert_int_equal(f->nrec, 0);
	assert_int_equal(backend->cancel(f->e, a), 0);
	assert_true(pump_until_count(f, T_RECV_A, 1));
	pump_quiet(f);
	assert_int_equal(f->nrec, 1);
	assert_int_equal(res_of(f, T_RECV_A), -ECANCELED);
	assert_true(fcntl(a, F_GETFD) >= 0);
	/* The fd is usable again after its cancel. */
	assert_int_equal(backend->recv(f->e, a, rbuf, sizeof(rbuf), T_RECV_B),
			 0);
	assert_int_equal(send(b, "ping", 4, MSG_NOSIGNAL), 4);
	assert_true(pump_until_count(f, T_RECV_B, 1));
	assert_int_equal(res_of(f, T_RECV_B), 4);
	assert_memory_equal(rbuf, "ping", 4);
}

static void test_engine_connect_refused(void **state)
{
	struct fx *f = begin(state);
	struct sockaddr_in sin;
	socklen_t len = sizeof(sin);
	int s, c;

	/* Bound but not listening: the port stays ours and refuses. */
	s = track(f, socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(s, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(getsockname(s, (struct sockaddr *)&sin, &len), 0);
	c = client(f);
	start_connect(f, c, &sin, T_CONNECT);
	assert_int_equal(f->nrec, 0);
	assert_true(pump_until_count(f, T_CONNECT, 1));
	assert_int_equal(res_of(f, T_CONNECT), -ECONNREFUSED);
	pump_quiet(f);
	assert_int_equal(f->nrec, 1);
}

static void test_engine_eof(void **state)
{
	struct fx *f = begin(state);
	char rbuf[16];
	int a, b;

	pair(f, &a, &b);
	f->nrec = 0;
	assert_int_equal(backend->recv(f->e, a, rbuf, sizeof(rbuf), T_RECV_A),
			 0);
	pump_quiet(f);
	assert_int_equal(f->nrec, 0);
	untrack_close(f, b);
	assert_true(pump_until_count(f, T_RECV_A, 1));
	assert_int_equal(res_of(f, T_RECV_A), 0);
	/* EOF stays EOF. */
	assert_int_equal(backend->recv(f->e, a, rbuf, sizeof(rbuf), T_RECV_B),
			 0);
	assert_true(pump_until_count(f, T_RECV_B, 1));
	assert_int_equal(res_of(f, T_RECV_B), 0);
}

/*
 * A read that stops short of what was asked can still leave the EOF behind
 * it: data, then the peer's FIN, both queued before the reads. The EOF must
 * come on the next recv, with no new edge to announce it.
 */
static void test_engine_short_read_then_eof(void **state)
{
	struct fx *f = begin(state);
	char rbuf[16];
	int a, b;

	pair(f, &a, &b);
	f->nrec = 0;
	assert_int_equal(write(b, "abcdef", 6), 6);
	assert_int_equal(shutdown(b, SHUT_WR), 0);
	/* Exactly what was asked: the readiness seen so far stays. */
	assert_int_equal(backend->recv(f->e, a, rbuf, 2, T_RECV_A), 0);
	assert_true(pump_until_count(f, T_RECV_A, 1));
	assert_int_equal(res_of(f, T_RECV_A), 2);
	/* Short: the rest of the data, then the EOF. */
	assert_int_equal(backend->recv(f->e, a, rbuf, sizeof(rbuf),
				       T_RECV_B), 0);
	assert_true(pump_until_count(f, T_RECV_B, 1));
	assert_int_equal(res_of(f, T_RECV_B), 4);
	assert_memory_equal(rbuf, "cdef", 4);
	assert_int_equal(backend->recv(f->e, a, rbuf, sizeof(rbuf),
				       T_RECV_C), 0);
	assert_true(pump_until_count(f, T_RECV_C, 1));
	assert_int_equal(res_of(f, T_RECV_C), 0);
}

/*
 * The core closes idle sockets without telling the engine; the numbers
 * come back from accept and socket(). Nothing of the old sockets may
 * stick to the new ones.
 */
static void test_engine_fd_reuse(void **state)
{
	struct fx *f = begin(state);
	struct sockaddr_in sin;
	char rbuf[16];
	int l, a, b;

	l = listener(f, &sin);
	assert_int_equal(backend->accept(f->e, l, T_ACCEPT), 0);
	for (int round = 0; round < 3; round++) {
		unsigned n;

		pair_on(f, &sin, &a, &b);
		n = count_tag(f, T_RECV_A);
		assert_int_equal(backend->send(f->e, b, "abc", 3, T_SEND_B),
				 0);
		assert_int_equal(backend->recv(f->e, a, rbuf, sizeof(rbuf),
					       T_RECV_A), 0);
		assert_true(pump_until_count(f, T_RECV_A, n + 1));
		assert_int_equal(nth_res(f, T_RECV_A, n), 3);
		assert_true(pump_until_count(f, T_SEND_B, n + 1));
		assert_int_equal(nth_res(f, T_SEND_B, n), 3);
		/* Lowest free numbers: the next pair gets these again. */
		untrack_close(f, a);
		untrack_close(f, b);
	}
}

static void test_engine_no_sync_dispatch(void **state)
{
	struct fx *f = begin(state);
	struct sockaddr_in sin;
	char rbuf[16];
	int l, a, b, c, p[2];

	pair(f, &a, &b);
	f->nrec = 0;
	assert_int_equal(pipe2(p, O_NONBLOCK | O_CLOEXEC), 0);
	track(f, p[0]);
	track(f, p[1]);
	assert_int_equal(write(p[1], "x", 1), 1);
	assert_int_equal(send(b, "data", 4, MSG_NOSIGNAL), 4);
	/* A second listener with a connection already in its backlog. */
	l = listener(f, &sin);
	c = track(f, socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
	assert_int_equal(connect(c, (struct sockaddr *)&sin, sizeof(sin)), 0);

	/* Everything below could finish at once; none may call back. */
	assert_int_equal(backend->poll_in(f->e, p[0], T_POLL), 0);
	assert_int_equal(backend->recv(f->e, a, rbuf, sizeof(rbuf), T_RECV_A),
			 0);
	assert_int_equal(backend->send(f->e, a, "x", 1, T_SEND_A), 0);
	assert_int_equal(backend->accept(f->e, l, T_ACCEPT), 0);
	assert_int_equal(f->nrec, 0);
	assert_int_equal(f->stray, 0);
	assert_int_equal(backend->cancel(f->e, a), 0);
	assert_int_equal(f->nrec, 0);
	assert_int_equal(f->stray, 0);

	assert_true(pump_until_count(f, T_POLL, 1));
	assert_true(pump_until_count(f, T_ACCEPT, 1));
	assert_true(pump_until_count(f, T_RECV_A, 1));
	assert_true(pump_until_count(f, T_SEND_A, 1));
	track(f, nth_res(f, T_ACCEPT, 0));
	pump_quiet(f);
	assert_true(res_of(f, T_POLL) & POLLIN);
	/* Each once, whatever the cancel caught. */
	assert_true(res_of(f, T_RECV_A) == 4 ||
		    res_of(f, T_RECV_A) == -ECANCELED);
	assert_true(res_of(f, T_SEND_A) == 1 ||
		    res_of(f, T_SEND_A) == -ECANCELED);
	assert_int_equal(count_tag(f, T_ACCEPT), 1);
	assert_int_equal(f->nrec, 4);
}

static void test_engine_poll_in_file(void **state)
{
	struct fx *f = begin(state);
	int fd;

	/* What stdin is when redirected from a file: epoll refuses it. */
	fd = open("/tmp", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (fd < 0)
		fd = fileno(tmpfile());
	track(f, fd);
	assert_int_equal(backend->poll_in(f->e, fd, T_POLL), 0);
	assert_int_equal(f->nrec, 0);
	assert_true(pump_until_count(f, T_POLL, 1));
	assert_true(res_of(f, T_POLL) & POLLIN);
	/* Re-armed, it fires again. */
	assert_int_equal(backend->poll_in(f->e, fd, T_POLL), 0);
	assert_true(pump_until_count(f, T_POLL, 2));
	assert_true(nth_res(f, T_POLL, 1) & POLLIN);
}

static void test_engine_poll_in_pipe(void **state)
{
	struct fx *f = begin(state);
	char c;
	int p[2];

	assert_int_equal(pipe2(p, O_NONBLOCK | O_CLOEXEC), 0);
	track(f, p[0]);
	track(f, p[1]);
	assert_int_equal(backend->poll_in(f->e, p[0], T_POLL), 0);
	pump_quiet(f);
	assert_int_equal(f->nrec, 0);
	assert_int_equal(write(p[1], "x", 1), 1);
	assert_true(pump_until_count(f, T_POLL, 1));
	assert_true(res_of(f, T_POLL) & POLLIN);
	pump_quiet(f);
	assert_int_equal(f->nrec, 1);
	/* Drained and re-armed: quiet until the next write. */
	assert_int_equal(read(p[0], &c, 1), 1);
	assert_int_equal(backend->poll_in(f->e, p[0], T_POLL), 0);
	pump_quiet(f);
	assert_int_equal(f->nrec, 1);
	assert_int_equal(write(p[1], "y", 1), 1);
	assert_true(pump_until_count(f, T_POLL, 2));
	assert_true(nth_res(f, T_POLL, 1) & POLLIN);
}

/* One direction of the round trip. */
struct flow {
	int from, to;
	uint64_t stag, rtag;
	uint8_t *src, *dst;
	size_t sent, got;
	unsigned sends, short_sends;
	int err;
	bool done;
};

struct trip {
	struct flow fl[2];
	bool done;
};

static void flow_send(struct fx *f, struct flow *w)
{
	size_t len = BIG - w->sent < CHUNK ? BIG - w->sent : CHUNK;

	w->sends++;
	assert_int_equal(backend->send(f->e, w->from, w->src + w->sent, len,
				       w->stag), 0);
}

static void flow_recv(struct fx *f, struct flow *w)
{
	/* Odd sizes: frames do not line up with the sends. */
	size_t len = BIG - w->got < 50000 ? BIG - w->got : 50000;

	assert_int_equal(backend->recv(f->e, w->to, w->dst + w->got, len,
				       w->rtag), 0);
}

/* Keeps one send and one recv in flight per flow, from the dispatch. */
static void trip_hook(struct fx *f, uint64_t tag, int res)
{
	struct trip *t = f->ctx;

	for (int i = 0; i < 2; i++) {
		struct flow *w = &t->fl[i];

		if (tag == w->stag) {
			size_t len = BIG - w->sent < CHUNK ? BIG - w->sent :
							     CHUNK;

			if (res <= 0) {
				w->err = res ? res : -EIO;
			} else {
				w->short_sends += (size_t)res < len;
				w->sent += (size_t)res;
				if (w->sent < BIG)
					flow_send(f, w);
			}
		} else if (tag == w->rtag) {
			if (res <= 0) {
				w->err = res ? res : -EPIPE;
			} else {
				w->got += (size_t)res;
				if (w->got < BIG)
					flow_recv(f, w);
			}
		}
		w->done = w->err || (w->sent == BIG && w->got == BIG);
	}
	t->done = t->fl[0].done && t->fl[1].done;
}

static void test_engine_round_trip(void **state)
{
	struct fx *f = begin(state);
	struct trip *t;
	int a, b;

	pair(f, &a, &b);
	/* Small socket buffers: 64 KiB sends have to come out short. */
	for (int i = 0; i < 2; i++) {
		int fd = i ? b : a, sz = 16 << 10;

		assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sz,
					    sizeof(sz)), 0);
		assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &sz,
					    sizeof(sz)), 0);
	}
	t = calloc(1, sizeof(*t));
	assert_non_null(t);
	f->ctx = t;
	for (int i = 0; i < 2; i++) {
		struct flow *w = &t->fl[i];

		w->from = i ? b : a;
		w->to = i ? a : b;
		w->stag = i ? T_SEND_B : T_SEND_A;
		w->rtag = i ? T_RECV_A : T_RECV_B;
		w->src = malloc(BIG);
		w->dst = malloc(BIG);
		assert_non_null(w->src);
		assert_non_null(w->dst);
		for (size_t k = 0; k < BIG; k++)
			w->src[k] = (uint8_t)(k * 7 + (k >> 11) + i * 101);
		memset(w->dst, 0, BIG);
	}
	f->hook = trip_hook;
	f->no_record = true;
	for (int i = 0; i < 2; i++) {
		flow_send(f, &t->fl[i]);
		flow_recv(f, &t->fl[i]);
	}
	assert_true(pump_until_flag(f, &t->done));
	for (int i = 0; i < 2; i++) {
		struct flow *w = &t->fl[i];
		size_t k;

		assert_int_equal(w->err, 0);
		assert_int_equal(w->sent, BIG);
		assert_int_equal(w->got, BIG);
		for (k = 0; k < BIG && w->src[k] == w->dst[k]; k++)
			;
		if (k < BIG)
			fail_msg("flow %d differs at byte %zu", i, k);
		free(w->src);
		free(w->dst);
		w->src = w->dst = NULL;
	}
	print_message("[   INFO   ] %s: %u + %u sends, %u + %u short\n",
		      backend->name, t->fl[0].sends, t->fl[1].sends,
		      t->fl[0].short_sends, t->fl[1].short_sends);
}

/* --- groups ----------------------------------------------------------- */

static const char *flag_names(unsigned fl, char *buf, size_t len)
{
	static const struct {
		unsigned bit;
		const char *name;
	} names[] = {
		{ 1U << 3, "CQSIZE" },
		{ 1U << 7, "SUBMIT_ALL" },
		{ 1U << 8, "COOP_TASKRUN" },
		{ 1U << 9, "TASKRUN_FLAG" },
		{ 1U << 12, "SINGLE_ISSUER" },
		{ 1U << 13, "DEFER_TASKRUN" },
	};
	size_t off = 0;

	buf[0] = 0;
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		if (fl & names[i].bit)
			off += snprintf(buf + off, len - off, "%s%s",
					off ? "|" : "", names[i].name);
		if (off >= len)
			break;
	}
	return buf;
}

static int uring_group_setup(void **state)
{
	struct engine *e;
	char names[128];
	int r;

	backend = &engine_uring_ops;
	print_message("[  GROUP   ] engine/io_uring\n");
	r = backend->init(&e, NODE, 256);
	if (r) {
		backend_err = r;
		print_message("SKIP io_uring: %s\n", strerror(-r));
		return 0;
	}
	backend_err = 0;
	print_message("[   INFO   ] io_uring setup flags: %s\n",
		      flag_names(engine_uring_setup_flags(e), names,
				 sizeof(names)));
	backend->fini(e);
	return 0;
}

static int epoll_group_setup(void **state)
{
	backend = &engine_epoll_ops;
	backend_err = 0;
	print_message("[  GROUP   ] engine/epoll\n");
	return 0;
}

#define CASE(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

static const struct CMUnitTest cases[] = {
	CASE(test_engine_accept_connect),
	CASE(test_engine_accept_many),
	CASE(test_engine_cancel_inside_dispatch),
	CASE(test_engine_cancel_pending),
	CASE(test_engine_cancel_recv),
	CASE(test_engine_connect_refused),
	CASE(test_engine_eof),
	CASE(test_engine_fd_reuse),
	CASE(test_engine_no_sync_dispatch),
	CASE(test_engine_poll_in_file),
	CASE(test_engine_poll_in_pipe),
	CASE(test_engine_round_trip),
	CASE(test_engine_short_read_then_eof),
};

int main(void)
{
	int failed = 0;

	failed += cmocka_run_group_tests_name("engine/io_uring", cases,
					      uring_group_setup, NULL);
	failed += cmocka_run_group_tests_name("engine/epoll", cases,
					      epoll_group_setup, NULL);
	return failed;
}
