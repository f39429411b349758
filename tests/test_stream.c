/* SPDX-License-Identifier: MIT */
/*
 * Pair streams through the public API: connecting, reuse, self, order,
 * closing, limits and backpressure. Every case runs once per backend.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "lib/testlib.h"

#define NV(v)		(sizeof(v) / sizeof((v)[0]))
#define MiB		(1u << 20)
#define KiB		(1u << 10)

static void stats(struct tl_node *t, struct pm_stats *st)
{
	memset(st, 0xa5, sizeof(*st));
	pm_node_stats(t->n, st);
}

/* a dials b; waits for the stream to be live. */
static struct pm_stream connect_live(struct tl_node *const *v, size_t k,
				     struct tl_node *a, struct tl_node *b)
{
	const struct tl_event *ev;
	struct pm_stream s = { 0 };

	assert_int_equal(pm_connect(a->n, b->addr, &s), 0);
	assert_true(s.h != 0);
	ev = tl_wait_event(v, k, a, PM_EV_CONNECTED, s);
	assert_non_null(ev);
	assert_true(ev->ev.peer_id == b->id);
	return s;
}

struct stale_wait {
	struct tl_node *t;
	struct pm_stream s;
};

static bool is_stale(void *arg)
{
	struct stale_wait *w = arg;

	return pm_send(w->t->n, w->s, "x", 1) == -ESTALE;
}

/* Sequenced messages checked as they arrive, without logging them. */
struct seq_check {
	uint64_t next;
	uint64_t bad;
	uint64_t first_bad;
	size_t len;
};

static int check_seq(struct tl_node *t, const struct pm_message *m)
{
	struct seq_check *c = t->hook_arg;

	if (m->len != c->len || !tl_msg_ok(m->data, m->len, c->next)) {
		if (!c->bad++)
			c->first_bad = c->next;
	}
	c->next++;
	return 0;
}

/* The third (max) field of a tcp_wmem/tcp_rmem sysctl, or 0. */
static size_t sysctl_max(const char *path)
{
	unsigned long lo, def, max = 0;
	FILE *f;

	f = fopen(path, "r");
	if (!f)
		return 0;
	if (fscanf(f, "%lu %lu %lu", &lo, &def, &max) != 3)
		max = 0;
	fclose(f);
	return max;
}

static void test_stream_backpressure(void **state)
{
	const size_t len = 64 * KiB, ring = 1 * MiB;
	size_t limit = 64 * MiB, fits;
	struct tl_node *a, *b, *v[2];
	struct seq_check chk = { .len = 64 * KiB };
	size_t rss0, rss1, i;
	uint64_t sent = 0, more;
	struct pm_stream s;
	void *buf;
	int rc;

	tl_begin();
	a = tl_node_new(NULL);
	b = tl_node_new(NULL);
	v[0] = a;
	v[1] = b;
	b->hook = check_seq;
	b->hook_arg = &chk;
	b->nolog = true;
	s = connect_live(v, 2, a, b);
	buf = malloc(len);
	assert_non_null(buf);

	/*
	 * b is never run: only the two rings and the kernel's socket buffers
	 * can take it. Anything beyond is buffering without bound.
	 */
	fits = 2 * ring + sysctl_max("/proc/sys/net/ipv4/tcp_wmem") +
	       sysctl_max("/proc/sys/net/ipv4/tcp_rmem") + 2 * len;
	if (fits < limit)
		limit = fits;
	rss0 = tl_rss_bytes();
	for (;;) {
		tl_make_msg(buf, sent, len);
		rc = pm_send(a->n, s, buf, len);
		if (rc == -EAGAIN)
			break;
		assert_int_equal(rc, 0);
		sent++;
		if (sent * len >= limit)
			fail_msg("no -EAGAIN after %zu KiB queued to a peer "
				 "that never reads", limit / KiB);
		tl_settle(v, 1, 1);
	}
	print_message("backpressure after %llu KiB (bound %zu KiB)\n",
		      (unsigned long long)(sent * len / KiB), limit / KiB);
	rss1 = tl_rss_bytes();
	assert_true(pm_stream_queued(a->n, s) > 0);
	if (rss1 > rss0 && rss1 - rss0 >= limit)
		fail_msg("RSS grew by %zu MiB while filling",
			 (rss1 - rss0) / MiB);
	assert_null(tl_find_event(a, PM_EV_WRITABLE, s));

	/* Now b reads: a is told it may write again and nothing is lost. */
	assert_non_null(tl_wait_event(v, 2, a, PM_EV_WRITABLE, s));
	more = sent + 256;
	for (i = sent; i < more; i++) {
		tl_make_msg(buf, i, len);
		assert_int_equal(tl_send_retry(v, 2, a, s, buf, len), 0);
	}
	assert_true(tl_wait_msgs(v, 2, b, more));
	tl_settle(v, 2, 10);
	assert_int_equal(b->msgs_seen, more);
	if (chk.bad)
		fail_msg("%llu messages wrong or out of order, first at #%llu",
			 (unsigned long long)chk.bad,
			 (unsigned long long)chk.first_bad);
	assert_int_equal(chk.next, more);
	free(buf);
	tl_node_free(a);
	tl_node_free(b);
}

static int create_rc(struct pm_config *c)
{
	struct pm_node *n = NULL;
	int rc;

	rc = pm_node_create(&n, c);
	if (rc == 0)
		pm_node_destroy(n);
	return rc;
}

static void test_stream_bad_config(void **state)
{
	static const char *const bad_listen[] = {
		"", "nonsense", "127.0.0.1", "127.0.0.1:", ":0",
		"127.0.0.1:99999", "256.0.0.1:0", "127.0.0.1:0x",
	};
	static const char *const bad_addr[] = {
		"", "nonsense", "127.0.0.1", "127.0.0.1:", ":80",
		"127.0.0.1:70000", "1.2.3.4.5:80", "127.0.0.1:12ab",
	};
	static const uint32_t bad_ring[] = {
		0, 1024, 3 * MiB, 1 * MiB + 4096, 12288,
	};
	struct pm_stream s;
	struct pm_config c;
	struct tl_node *a;
	size_t i;

	tl_begin();
	for (i = 0; i < NV(bad_ring); i++) {
		tl_config(&c);
		c.ring_size = bad_ring[i];
		c.max_message = 1024;
		assert_int_equal(create_rc(&c), -EINVAL);
	}
	tl_config(&c);
	c.ring_size = 64 * KiB;
	c.max_message = 64 * KiB - 7;
	assert_int_equal(create_rc(&c), -EINVAL);
	c.max_message = 64 * KiB - 8;
	assert_int_equal(create_rc(&c), 0);

	for (i = 0; i < NV(bad_listen); i++) {
		tl_config(&c);
		c.listen = bad_listen[i];
		if (create_rc(&c) != -EINVAL)
			fail_msg("listen \"%s\": want -EINVAL", bad_listen[i]);
	}

	a = tl_node_new(NULL);
	tl_config(&c);
	c.listen = a->addr;
	assert_int_equal(create_rc(&c), -EADDRINUSE);
	for (i = 0; i < NV(bad_addr); i++) {
		if (pm_connect(a->n, bad_addr[i], &s) != -EINVAL)
			fail_msg("pm_connect \"%s\": want -EINVAL",
				 bad_addr[i]);
	}
	tl_node_free(a);
}

/* Everything queued before pm_close() arrives, then CLOSED(NORMAL). */
static void close_and_check(struct tl_node *const *v, struct tl_node *a,
			    struct tl_node *b, struct pm_stream s, unsigned n)
{
	struct stale_wait sw = { a, s };
	const struct tl_event *ev;
	struct pm_stats st;
	struct pm_stream t;
	unsigned i;

	assert_int_equal(pm_close(a->n, s), 0);
	assert_int_equal(pm_send(a->n, s, "late", 4), -EPIPE);

	ev = tl_wait_event(v, 2, b, PM_EV_CLOSED, (struct pm_stream){ 0 });
	assert_non_null(ev);
	assert_int_equal(ev->ev.reason, PM_CLOSE_NORMAL);
	assert_int_equal(ev->ev.error, 0);
	assert_true(ev->ev.peer_id == a->id);
	assert_int_equal(ev->ev.unsent, 0);
	assert_int_equal(ev->msgs_before, n);
	tl_settle(v, 2, 10);
	assert_int_equal(b->msgs_seen, n);
	assert_int_equal(b->nmsgs, n);
	for (i = 0; i < n; i++) {
		assert_true(b->msgs[i].peer_id == a->id);
		assert_true(tl_msg_ok(tl_msg_data(b, i), b->msgs[i].len, i));
	}
	if (n) {
		/* b's end of the stream is gone as well. */
		t = b->msgs[0].stream;
		assert_int_equal(pm_send(b->n, t, "x", 1), -ESTALE);
		assert_true(b->msgs[0].stream.h == ev->ev.stream.h);
	}
	assert_int_equal(pm_stream_by_id(b->n, a->id, &t), -ENOENT);

	assert_true(tl_pump(v, 2, is_stale, &sw, TL_DEADLINE_MS));
	assert_int_equal(pm_stream_by_id(a->n, b->id, &t), -ENOENT);
	stats(a, &st);
	assert_int_equal(st.peers_live, 0);
	assert_false(a->log_full);
	assert_false(b->log_full);
}

static void test_stream_close_before_live(void **state)
{
	struct tl_node *a, *b, *v[2];
	unsigned char buf[200];
	struct pm_stream s;
	unsigned i;

	tl_begin();
	a = tl_node_new(NULL);
	b = tl_node_new(NULL);
	v[0] = a;
	v[1] = b;
	/* Queued and closed before the handshake could even start. */
	assert_int_equal(pm_connect(a->n, b->addr, &s), 0);
	for (i = 0; i < 50; i++) {
		tl_make_msg(buf, i, 8 + i);
		assert_int_equal(pm_send(a->n, s, buf, 8 + i), 0);
	}
	close_and_check(v, a, b, s, 50);
	tl_node_free(a);
	tl_node_free(b);
}

/* Both ends close at once: no hang, nothing left open on either side. */
struct both_closed {
	struct tl_node *a, *b;
	struct pm_stream sa, sb;
};

static bool both_closed(void *arg)
{
	struct both_closed *w = arg;
	struct pm_stats sa, sb;

	if (pm_send(w->a->n, w->sa, "x", 1) != -ESTALE ||
	    pm_send(w->b->n, w->sb, "x", 1) != -ESTALE)
		return false;
	pm_node_stats(w->a->n, &sa);
	pm_node_stats(w->b->n, &sb);
	return !sa.conns_open && !sb.conns_open &&
	       !tl_tcp_established_between(w->a->port, w->b->port);
}

static void test_stream_close_both(void **state)
{
	struct tl_node *a, *b, *v[2];
	struct both_closed w;
	unsigned char buf[4000];
	unsigned i;

	tl_begin();
	a = tl_node_new(NULL);
	b = tl_node_new(NULL);
	v[0] = a;
	v[1] = b;
	w.a = a;
	w.b = b;
	w.sa = connect_live(v, 2, a, b);
	assert_int_equal(pm_send(a->n, w.sa, "hi", 2), 0);
	assert_true(tl_wait_msgs(v, 2, b, 1));
	w.sb = b->msgs[0].stream;
	for (i = 0; i < 20; i++) {
		tl_make_msg(buf, i, sizeof(buf));
		assert_int_equal(pm_send(a->n, w.sa, buf, sizeof(buf)), 0);
		assert_int_equal(pm_send(b->n, w.sb, buf, sizeof(buf)), 0);
	}
	assert_int_equal(pm_close(a->n, w.sa), 0);
	assert_int_equal(pm_close(b->n, w.sb), 0);
	assert_true(tl_pump(v, 2, both_closed, &w, TL_DEADLINE_MS));
	tl_node_free(a);
	tl_node_free(b);
}

/* The acceptor closes the inbound stream: the dialler is told the same. */
static void test_stream_close_by_acceptor(void **state)
{
	struct tl_node *a, *b, *v[2];
	unsigned char buf[1000];
	struct pm_stream s, t;
	unsigned i;

	tl_begin();
	a = tl_node_new(NULL);
	b = tl_node_new(NULL);
	v[0] = a;
	v[1] = b;
	s = connect_live(v, 2, a, b);
	assert_int_equal(pm_send(a->n, s, "hi", 2), 0);
	assert_true(tl_wait_msgs(v, 2, b, 1));
	t = b->msgs[0].stream;
	/* a must not count its own message among b's. */
	a->msgs_seen = 0;
	b->nmsgs = 0;
	b->nbytes = 0;
	b->msgs_seen = 0;
	for (i = 0; i < 30; i++) {
		tl_make_msg(buf, i, 30 * i);
		assert_int_equal(pm_send(b->n, t, buf, 30 * i), 0);
	}
	close_and_check(v, b, a, t, 30);
	assert_non_null(tl_find_event(a, PM_EV_CLOSED, s));
	tl_node_free(a);
	tl_node_free(b);
}

static void test_stream_close_graceful(void **state)
{
	struct tl_node *a, *b, *v[2];
	unsigned char buf[10000];
	struct pm_stream s;
	unsigned i;

	tl_begin();
	a = tl_node_new(NULL);
	b = tl_node_new(NULL);
	v[0] = a;
	v[1] = b;
	s = connect_live(v, 2, a, b);
	/* About 500 KB: more than one write, so the CLOSE must wait. */
	for (i = 0; i < 100; i++) {
		tl_make_msg(buf, i, 97 * i % sizeof(buf));
		assert_int_equal(tl_send_retry(v, 2, a, s, buf,
					       97 * i % sizeof(buf)), 0);
	}
	close_and_check(v, a, b, s, 100);
	tl_node_free(a);
	tl_node_free(b);
}

static void test_stream_connect_on_send(void **state)
{
	struct tl_node *a, *b, *v[2];
	struct pm_stats st;
	struct pm_stream s;

	tl_begin();
	a = tl_node_new(NULL);
	b = tl_node_new(NULL);
	v[0] = a;
	v[1] = b;
	assert_int_equal(tl_tcp_established_between(a->port, b->port), 0);
	assert_int_equal(pm_connect(a->n, b->addr, &s), 0);
	assert_int_equal(pm_send(a->n, s, "hello", 5), 0);

	assert_true(tl_wait_msgs(v, 2, b, 1));
	assert_int_equal(b->nmsgs, 1);
	assert_true(b->msgs[0].peer_id == a->id);
	assert_int_equal(b->msgs[0].len, 5);
	assert_memory_equal(tl_msg_data(b, 0), "hello", 5);
	assert_true(b->msgs[0].stream.h != 0);

	assert_int_equal(tl_tcp_established_between(a->port, b->port), 1);
	stats(a, &st);
	assert_int_equal(st.dialled, 1);
	assert_int_equal(st.accepted, 0);
	assert_int_equal(st.conns_open, 1);
	assert_int_equal(st.msgs_out, 1);
	assert_int_equal(st.bytes_out, 5);
	stats(b, &st);
	assert_int_equal(st.dialled, 0);
	assert_int_equal(st.accepted, 1);
	assert_int_equal(st.msgs_in, 1);
	assert_int_equal(st.bytes_in, 5);
	assert_non_null(tl_wait_event(v, 2, a, PM_EV_CONNECTED, s));
	assert_true(tl_find_event(a, PM_EV_CONNECTED, s)->ev.peer_id == b->id);
	tl_node_free(a);
	tl_node_free(b);
}

static void test_stream_emsgsize(void **state)
{
	const size_t big = 256 * KiB;
	struct tl_node *a, *b, *c, *v[3];
	struct pm_stream s, t, me, sc;
	struct pm_config cfg;
	unsigned char *buf;
	void *p;

	tl_begin();
	buf = calloc(1, big + 1);
	assert_non_null(buf);
	a = tl_node_new(NULL);	/* max_message: the 256 KiB default */
	tl_config(&cfg);
	cfg.max_message = 4096;
	b = tl_node_new(&cfg);
	c = tl_node_new(NULL);
	v[0] = a;
	v[1] = b;
	v[2] = c;

	/* Our own limit holds even before the peer's is known. */
	assert_int_equal(pm_connect(a->n, c->addr, &sc), 0);
	assert_int_equal(pm_send(a->n, sc, buf, big + 1), -EMSGSIZE);
	assert_int_equal(pm_reserve(a->n, sc, big + 1, &p), -EMSGSIZE);

	/* The peer's smaller limit, learned at the handshake. */
	s = connect_live(v, 3, a, b);
	assert_int_equal(pm_send(a->n, s, buf, 4097), -EMSGSIZE);
	assert_int_equal(pm_reserve(a->n, s, 4097, &p), -EMSGSIZE);
	tl_make_msg(buf, 1, 4096);
	assert_int_equal(pm_send(a->n, s, buf, 4096), 0);
	assert_true(tl_wait_msgs(v, 3, b, 1));
	assert_int_equal(b->msgs[0].len, 4096);
	assert_true(tl_msg_ok(tl_msg_data(b, 0), 4096, 1));

	/* b's own limit on its end of the same stream. */
	t = b->msgs[0].stream;
	assert_int_equal(pm_send(b->n, t, buf, 4097), -EMSGSIZE);
	tl_make_msg(buf, 2, 4096);
	assert_int_equal(pm_send(b->n, t, buf, 4096), 0);
	assert_true(tl_wait_msgs(v, 3, a, 1));
	assert_true(a->msgs[0].peer_id == b->id);
	assert_true(tl_msg_ok(tl_msg_data(a, 0), a->msgs[0].len, 2));

	/* The self stream: exactly max_message fits. */
	assert_int_equal(pm_self(a->n, &me), 0);
	assert_int_equal(pm_send(a->n, me, buf, big + 1), -EMSGSIZE);
	tl_make_msg(buf, 3, big);
	assert_int_equal(pm_send(a->n, me, buf, big), 0);
	assert_true(tl_wait_msgs(v, 3, a, 2));
	assert_int_equal(a->msgs[1].len, big);
	assert_true(tl_msg_ok(tl_msg_data(a, 1), big, 3));
	free(buf);
	tl_node_free(a);
	tl_node_free(b);
	tl_node_free(c);
}

static void test_stream_order(void **state)
{
	const unsigned n = 10000;
	struct tl_node *a, *b, *v[2];
	unsigned char buf[256];
	struct pm_stream s;
	unsigned i;

	tl_begin();
	a = tl_node_new(NULL);
	b = tl_node_new(NULL);
	v[0] = a;
	v[1] = b;
	assert_int_equal(pm_connect(a->n, b->addr, &s), 0);
	for (i = 0; i < n; i++) {
		tl_make_msg(buf, i, 8 + i % 120);
		assert_int_equal(tl_send_retry(v, 2, a, s, buf, 8 + i % 120),
				 0);
	}
	assert_true(tl_wait_msgs(v, 2, b, n));
	tl_settle(v, 2, 10);
	assert_false(b->log_full);
	assert_int_equal(b->nmsgs, n);
	for (i = 0; i < n; i++) {
		if (b->msgs[i].len != 8 + i % 120 ||
		    !tl_msg_ok(tl_msg_data(b, i), b->msgs[i].len, i))
			fail_msg("message #%u wrong or out of order (seq %llu)",
				 i, (unsigned long long)
				 tl_get64(tl_msg_data(b, i)));
		assert_true(b->msgs[i].peer_id == a->id);
	}
	tl_node_free(a);
	tl_node_free(b);
}

static void test_stream_peer_id(void **state)
{
	struct tl_node *a, *b, *v[2];
	const struct tl_event *ev;
	struct pm_stream s, t, me;
	struct stale_wait sw;
	uint64_t id;

	tl_begin();
	a = tl_node_new(NULL);
	b = tl_node_new(NULL);
	v[0] = a;
	v[1] = b;
	assert_int_equal(pm_connect(a->n, b->addr, &s), 0);
	assert_int_equal(pm_stream_peer_id(a->n, s, &id), -EAGAIN);

	ev = tl_wait_event(v, 2, a, PM_EV_CONNECTED, s);
	assert_non_null(ev);
	assert_int_equal(pm_stream_peer_id(a->n, s, &id), 0);
	assert_true(id == b->id);

	/* The acceptor learns of the inbound stream too. */
	ev = tl_wait_event(v, 2, b, PM_EV_CONNECTED, (struct pm_stream){ 0 });
	assert_non_null(ev);
	assert_true(ev->ev.peer_id == a->id);
	t = ev->ev.stream;
	assert_int_equal(pm_stream_peer_id(b->n, t, &id), 0);
	assert_true(id == a->id);

	assert_int_equal(pm_self(a->n, &me), 0);
	assert_int_equal(pm_stream_peer_id(a->n, me, &id), 0);
	assert_true(id == a->id);

	assert_int_equal(pm_close(a->n, s), 0);
	sw.t = a;
	sw.s = s;
	assert_true(tl_pump(v, 2, is_stale, &sw, TL_DEADLINE_MS));
	assert_int_equal(pm_stream_peer_id(a->n, s, &id), -ESTALE);
	tl_node_free(a);
	tl_node_free(b);
}

static void test_stream_peer_reset(void **state)
{
	struct tl_node *a, *b, *v[2];
	const struct tl_event *ev;
	unsigned char buf[4096];
	struct pm_stream s, t;
	unsigned i;

	tl_begin();
	a = tl_node_new(NULL);
	b = tl_node_new(NULL);
	v[0] = a;
	v[1] = b;
	s = connect_live(v, 2, a, b);
	assert_int_equal(pm_send(a->n, s, "one", 3), 0);
	assert_true(tl_wait_msgs(v, 2, b, 1));

	/* Data b will never read, then b vanishes without a word. */
	for (i = 0; i < 16; i++) {
		tl_make_msg(buf, i, sizeof(buf));
		assert_int_equal(pm_send(a->n, s, buf, sizeof(buf)), 0);
	}
	for (i = 0; i < 100 && pm_stream_queued(a->n, s) > 0; i++)
		tl_settle(v, 1, 1);
	tl_node_kill(b);

	ev = tl_wait_event(v, 1, a, PM_EV_CLOSED, s);
	assert_non_null(ev);
	assert_true(ev->ev.peer_id == b->id);
	/* No CLOSE was sent: a reset or EOF, an error either way. */
	assert_int_equal(ev->ev.reason, PM_CLOSE_NONE);
	assert_true(ev->ev.error < 0);
	assert_int_equal(pm_send(a->n, s, "x", 1), -ESTALE);
	assert_int_equal(pm_stream_by_id(a->n, b->id, &t), -ENOENT);
	tl_node_free(a);
	tl_node_free(b);
}

struct reconnect_wait {
	struct tl_node *a, *b;
	struct pm_stream s2;
};

static bool reconnected(void *arg)
{
	struct reconnect_wait *w = arg;

	return w->b->msgs_seen >= 2 ||
	       tl_find_event(w->a, PM_EV_CLOSED, w->s2);
}

/*
 * Closing a stream and at once dialling the same node again gives a new,
 * working stream: it must not be merged into the closing one. Both id
 * orders: the closer as arbiter and as non-arbiter.
 */
static void test_stream_reconnect_after_close(void **state)
{
	struct tl_node *a, *b, *v[2];
	const struct tl_event *ev;
	struct reconnect_wait w;
	struct pm_stream s1, s2;
	struct pm_config cfg;
	unsigned it;
	uint64_t id;

	tl_begin();
	for (it = 0; it < 8; it++) {
		tl_config(&cfg);
		cfg.node_id = it & 1 ? 100 : 200;
		a = tl_node_new(&cfg);
		cfg.node_id = it & 1 ? 200 : 100;
		b = tl_node_new(&cfg);
		v[0] = a;
		v[1] = b;
		s1 = connect_live(v, 2, a, b);
		assert_int_equal(pm_send(a->n, s1, "m1", 2), 0);
		assert_int_equal(pm_close(a->n, s1), 0);
		assert_int_equal(pm_connect(a->n, b->addr, &s2), 0);
		if (s2.h == s1.h || pm_stream_same(a->n, s1, s2))
			fail_msg("pm_connect after pm_close returned the "
				 "closing stream (pm_send: %d)",
				 pm_send(a->n, s2, "m2", 2));
		assert_int_equal(pm_send(a->n, s2, "m2", 2), 0);

		w.a = a;
		w.b = b;
		w.s2 = s2;
		assert_true(tl_pump(v, 2, reconnected, &w, TL_DEADLINE_MS));
		ev = tl_find_event(a, PM_EV_CLOSED, s2);
		if (ev)
			fail_msg("round %u (a's id %s): the new stream closed: "
				 "error %d reason %s; b got %llu of 2 messages",
				 it, it & 1 ? "lower" : "higher", ev->ev.error,
				 pm_close_reason_str(ev->ev.reason),
				 (unsigned long long)b->msgs_seen);
		tl_settle(v, 2, 10);
		assert_int_equal(b->nmsgs, 2);
		assert_memory_equal(tl_msg_data(b, 0), "m1", 2);
		assert_memory_equal(tl_msg_data(b, 1), "m2", 2);
		/* b saw the old stream end, after its one message. */
		ev = tl_find_event(b, PM_EV_CLOSED, b->msgs[0].stream);
		assert_non_null(ev);
		assert_int_equal(ev->ev.reason, PM_CLOSE_NORMAL);
		assert_int_equal(ev->msgs_before, 1);
		assert_non_null(tl_wait_event(v, 2, a, PM_EV_CONNECTED, s2));
		assert_int_equal(pm_stream_peer_id(a->n, s2, &id), 0);
		assert_true(id == b->id);
		assert_null(tl_find_event(a, PM_EV_CLOSED, s2));
		tl_node_free(a);
		tl_node_free(b);
	}
}

/* A destroyed node frees its address at once, even with an io_uring accept
 * and receives still in flight: a new node may listen there right away. */
static void test_stream_recreate_same_address(void **state)
{
	struct tl_node *a, *b, *v[2];
	struct pm_config c;
	struct pm_stream s;
	char addr[TL_ADDR_LEN];

	tl_begin();
	b = tl_node_new(NULL);
	a = tl_node_new(NULL);
	strcpy(addr, a->addr);
	for (int round = 0; round < 20; round++) {
		v[0] = a;
		v[1] = b;
		assert_int_equal(pm_connect(b->n, a->addr, &s), 0);
		assert_int_equal(pm_send(b->n, s, "hi", 2), 0);
		if (!tl_wait_msgs(v, 2, a, 1))
			fail_msg("round %d: message not delivered", round);
		tl_node_free(a);
		tl_config(&c);
		c.listen = addr;
		a = tl_node_new(&c);	/* fails with EADDRINUSE if still bound */
		pm_close(b->n, s);
	}
	tl_node_free(a);
	tl_node_free(b);
}

static void test_stream_refused(void **state)
{
	const uint16_t port = tl_refused_port();
	const struct tl_event *ev;
	struct tl_node *a, *v[1];
	struct pm_stream s;
	char addr[32];
	uint64_t id;
	void *p;

	tl_begin();
	a = tl_node_new(NULL);
	v[0] = a;
	snprintf(addr, sizeof(addr), "127.0.0.1:%u", port);
	assert_int_equal(pm_connect(a->n, addr, &s), 0);
	assert_int_equal(pm_send(a->n, s, "one", 3), 0);
	assert_int_equal(pm_send(a->n, s, "two", 3), 0);
	assert_int_equal(pm_send(a->n, s, "three", 5), 0);

	ev = tl_wait_event(v, 1, a, PM_EV_CLOSED, s);
	assert_non_null(ev);
	assert_int_equal(ev->ev.error, -ECONNREFUSED);
	assert_int_equal(ev->ev.reason, PM_CLOSE_NONE);
	assert_int_equal(ev->ev.unsent, 3);
	assert_true(ev->ev.peer_id == 0);
	assert_null(tl_find_event(a, PM_EV_CONNECTED, s));

	assert_int_equal(pm_send(a->n, s, "x", 1), -ESTALE);
	assert_int_equal(pm_reserve(a->n, s, 1, &p), -ESTALE);
	assert_int_equal(pm_stream_peer_id(a->n, s, &id), -ESTALE);
	assert_int_equal(pm_close(a->n, s), -ESTALE);
	assert_false(pm_stream_same(a->n, s, s));
	assert_int_equal(a->msgs_seen, 0);
	tl_node_free(a);
}

static int reply_pong(struct tl_node *t, const struct pm_message *m)
{
	int *rc = t->hook_arg;

	if (m->len == 4 && !memcmp(m->data, "ping", 4))
		*rc = pm_send(t->n, m->stream, "pong", 4);
	return 0;
}

static void test_stream_reply_inbound(void **state)
{
	struct tl_node *a, *b, *v[2];
	struct pm_stats st;
	struct pm_stream s;
	int reply_rc = 1;

	tl_begin();
	a = tl_node_new(NULL);
	b = tl_node_new(NULL);
	v[0] = a;
	v[1] = b;
	b->hook = reply_pong;
	b->hook_arg = &reply_rc;
	assert_int_equal(pm_connect(a->n, b->addr, &s), 0);
	assert_int_equal(pm_send(a->n, s, "ping", 4), 0);
	assert_true(tl_wait_msgs(v, 2, a, 1));
	assert_int_equal(reply_rc, 0);
	assert_int_equal(a->nmsgs, 1);
	assert_true(a->msgs[0].peer_id == b->id);
	assert_int_equal(a->msgs[0].len, 4);
	assert_memory_equal(tl_msg_data(a, 0), "pong", 4);
	assert_true(pm_stream_same(a->n, a->msgs[0].stream, s));
	assert_int_equal(tl_tcp_established_between(a->port, b->port), 1);
	stats(b, &st);
	assert_int_equal(st.dialled, 0);
	assert_int_equal(st.conns_open, 1);
	tl_node_free(a);
	tl_node_free(b);
}

static void test_stream_reserve_commit(void **state)
{
	const size_t big = 100000;
	struct tl_node *a, *b, *v[2];
	struct pm_stream s, me;
	unsigned char *p;
	void *vp;

	tl_begin();
	a = tl_node_new(NULL);
	b = tl_node_new(NULL);
	v[0] = a;
	v[1] = b;
	s = connect_live(v, 2, a, b);
	assert_int_equal(pm_commit(a->n, s, 0), -EINVAL);

	assert_int_equal(pm_send(a->n, s, "first", 5), 0);
	assert_int_equal(pm_reserve(a->n, s, 1000, &vp), 0);
	assert_non_null(vp);
	p = vp;
	tl_make_msg(p, 7, 600);
	assert_int_equal(pm_commit(a->n, s, 1001), -EINVAL);
	assert_int_equal(pm_commit(a->n, s, 600), 0);
	assert_int_equal(pm_commit(a->n, s, 600), -EINVAL);
	assert_int_equal(pm_send(a->n, s, "third", 5), 0);
	/* A reservation of the full limit, committed much shorter. */
	assert_int_equal(pm_reserve(a->n, s, 256 * KiB, &vp), 0);
	tl_make_msg(vp, 9, big);
	assert_int_equal(pm_commit(a->n, s, big), 0);

	assert_true(tl_wait_msgs(v, 2, b, 4));
	tl_settle(v, 2, 5);
	assert_int_equal(b->nmsgs, 4);
	assert_int_equal(b->msgs[0].len, 5);
	assert_memory_equal(tl_msg_data(b, 0), "first", 5);
	assert_int_equal(b->msgs[1].len, 600);
	assert_true(tl_msg_ok(tl_msg_data(b, 1), 600, 7));
	assert_int_equal(b->msgs[2].len, 5);
	assert_memory_equal(tl_msg_data(b, 2), "third", 5);
	assert_int_equal(b->msgs[3].len, big);
	assert_true(tl_msg_ok(tl_msg_data(b, 3), big, 9));

	/* The self stream takes reservations too. */
	assert_int_equal(pm_self(a->n, &me), 0);
	assert_int_equal(pm_reserve(a->n, me, 64, &vp), 0);
	tl_make_msg(vp, 11, 40);
	assert_int_equal(pm_commit(a->n, me, 40), 0);
	assert_true(tl_wait_msgs(v, 2, a, 1));
	assert_int_equal(a->msgs[0].len, 40);
	assert_true(a->msgs[0].peer_id == a->id);
	assert_true(tl_msg_ok(tl_msg_data(a, 0), 40, 11));
	tl_node_free(a);
	tl_node_free(b);
}

/* Message i of a batch: 0 to 1199 bytes, some empty. */
static size_t batch_len(unsigned i)
{
	return i % 7 == 3 ? 0 : 8 + (i * 37) % 1192;
}

/* pm_sendv queues whole messages in order and says how many it took. */
static void test_stream_sendv(void **state)
{
	enum { N = 300 };
	static unsigned char bufs[N][1200];
	struct tl_node *a, *b, *v[2];
	struct iovec iov[N];
	struct pm_stream s, me, stale = { 0 };
	struct pm_config c;
	struct pm_stats st0, st1;
	size_t done = 0, total = 0;
	unsigned i, partial = 0;
	void *vp;
	int r;

	tl_begin();
	tl_config(&c);
	c.ring_size = 64 * KiB;		/* the batch is 4x the ring */
	c.max_message = 16 * KiB;
	a = tl_node_new(&c);
	b = tl_node_new(&c);
	v[0] = a;
	v[1] = b;
	s = connect_live(v, 2, a, b);
	for (i = 0; i < N; i++) {
		tl_make_msg(bufs[i], i, batch_len(i));
		iov[i] = (struct iovec){ bufs[i], batch_len(i) };
		total += batch_len(i);
	}

	/* Bad input, and nothing queued by it. */
	assert_int_equal(pm_sendv(a->n, s, iov, 0), 0);
	assert_int_equal(pm_sendv(a->n, s, NULL, 1), -EINVAL);
	assert_int_equal(pm_sendv(a->n, stale, iov, 1), -ESTALE);
	assert_int_equal(pm_reserve(a->n, s, 10, &vp), 0);
	assert_int_equal(pm_sendv(a->n, s, iov, 1), -EBUSY);
	assert_int_equal(pm_commit(a->n, s, 0), 0);	/* message #0: empty */
	stats(a, &st0);

	/* The ring fills: a count below what was asked, then -EAGAIN
	 * until the loop runs, and every message arrives once, in order. */
	while (done < N) {
		r = pm_sendv(a->n, s, iov + done, N - done);
		if (r == -EAGAIN) {
			tl_settle(v, 2, 1);
			continue;
		}
		assert_true(r > 0 && (size_t)r <= N - done);
		if ((size_t)r < N - done && !partial++) {
			/* A short count alone promises PM_EV_WRITABLE. */
			assert_null(tl_find_event(a, PM_EV_WRITABLE, s));
			assert_non_null(tl_wait_event(v, 2, a,
						      PM_EV_WRITABLE, s));
		} else if ((size_t)r < N - done) {
			assert_int_equal(pm_sendv(a->n, s, iov + done + r, 1),
					 -EAGAIN);
		}
		done += (size_t)r;
	}
	assert_true(partial > 1);
	assert_true(tl_wait_msgs(v, 2, b, N + 1));
	tl_settle(v, 2, 5);
	assert_false(b->log_full);
	assert_int_equal(b->nmsgs, N + 1);
	assert_int_equal(b->msgs[0].len, 0);
	for (i = 0; i < N; i++) {
		if (b->msgs[i + 1].len != batch_len(i) ||
		    !tl_msg_ok(tl_msg_data(b, i + 1), batch_len(i), i))
			fail_msg("batched message #%u wrong or out of order", i);
	}
	stats(a, &st1);
	assert_true(st1.msgs_out - st0.msgs_out == N);
	assert_true(st1.bytes_out - st0.bytes_out == total);

	/* A message over max_message ends the batch before it; the next
	 * call reports it. */
	iov[2].iov_len = 16 * KiB + 1;
	assert_int_equal(pm_sendv(a->n, s, iov, 4), 2);
	assert_int_equal(pm_sendv(a->n, s, iov + 2, 2), -EMSGSIZE);

	/* The self stream takes batches too. */
	assert_int_equal(pm_self(a->n, &me), 0);
	assert_int_equal(pm_sendv(a->n, me, iov + 3, 3), 3);
	assert_true(tl_wait_msgs(v, 2, a, 3));
	assert_int_equal(a->nmsgs, 3);
	for (i = 0; i < 3; i++) {
		assert_int_equal(a->msgs[i].len, batch_len(3 + i));
		assert_true(tl_msg_ok(tl_msg_data(a, i), batch_len(3 + i),
				   3 + i));
	}
	tl_node_free(a);
	tl_node_free(b);
}

static void test_stream_reuse_by_address(void **state)
{
	struct tl_node *a, *b, *v[2];
	struct pm_stream s1, s2, s3;
	struct pm_stats st;

	tl_begin();
	a = tl_node_new(NULL);
	b = tl_node_new(NULL);
	v[0] = a;
	v[1] = b;
	assert_int_equal(pm_connect(a->n, b->addr, &s1), 0);
	assert_int_equal(pm_connect(a->n, b->addr, &s2), 0);
	assert_true(s1.h == s2.h);
	assert_int_equal(pm_send(a->n, s2, "x", 1), 0);
	assert_true(tl_wait_msgs(v, 2, b, 1));
	assert_non_null(tl_wait_event(v, 2, a, PM_EV_CONNECTED, s1));

	assert_int_equal(pm_connect(a->n, b->addr, &s3), 0);
	assert_true(s3.h == s1.h);
	assert_int_equal(pm_send(a->n, s3, "y", 1), 0);
	assert_true(tl_wait_msgs(v, 2, b, 2));
	tl_settle(v, 2, 5);
	assert_int_equal(b->nmsgs, 2);
	assert_true(b->msgs[0].stream.h == b->msgs[1].stream.h);
	assert_int_equal(tl_tcp_established_between(a->port, b->port), 1);
	stats(a, &st);
	assert_int_equal(st.dialled, 1);
	assert_int_equal(st.conns_open, 1);
	assert_int_equal(st.peers_live, 1);
	tl_node_free(a);
	tl_node_free(b);
}

static void test_stream_reuse_by_id(void **state)
{
	struct tl_node *a, *b, *v[2];
	struct pm_stream s, sa, sb, u;
	struct pm_stats st;

	tl_begin();
	a = tl_node_new(NULL);
	b = tl_node_new(NULL);
	v[0] = a;
	v[1] = b;
	assert_int_equal(pm_stream_by_id(a->n, b->id, &sa), -ENOENT);
	assert_int_equal(pm_stream_by_id(b->n, a->id, &sb), -ENOENT);
	assert_int_equal(pm_connect(a->n, b->addr, &s), 0);
	assert_int_equal(pm_send(a->n, s, "hi", 2), 0);
	assert_true(tl_wait_msgs(v, 2, b, 1));
	assert_non_null(tl_wait_event(v, 2, a, PM_EV_CONNECTED, s));

	assert_int_equal(pm_stream_by_id(a->n, b->id, &sa), 0);
	assert_true(pm_stream_same(a->n, sa, s));
	/* b finds the inbound stream by id and by a's advertised address. */
	assert_int_equal(pm_stream_by_id(b->n, a->id, &sb), 0);
	assert_true(pm_stream_same(b->n, sb, b->msgs[0].stream));
	assert_int_equal(pm_connect(b->n, a->addr, &u), 0);
	assert_true(pm_stream_same(b->n, u, sb));
	assert_int_equal(pm_send(b->n, u, "back", 4), 0);
	assert_true(tl_wait_msgs(v, 2, a, 1));
	assert_true(a->msgs[0].peer_id == b->id);
	assert_true(pm_stream_same(a->n, a->msgs[0].stream, s));

	tl_settle(v, 2, 10);
	assert_int_equal(tl_tcp_established_between(a->port, b->port), 1);
	stats(b, &st);
	assert_int_equal(st.dialled, 0);
	assert_int_equal(st.conns_open, 1);
	stats(a, &st);
	assert_int_equal(st.conns_open, 1);
	tl_node_free(a);
	tl_node_free(b);
}

/* One line of /proc/self/maps. */
struct vma {
	uintptr_t start, end;
	unsigned long long off;
	unsigned long inode;
	bool ring;		/* a view of a ring's memfd */
};

static bool vma_parse(const char *line, struct vma *v)
{
	unsigned long start, end, inode;
	unsigned long long off;
	char perms[8];
	int path = 0;

	if (sscanf(line, "%lx-%lx %7s %llx %*s %lu %n", &start, &end, perms,
		   &off, &inode, &path) < 5)
		return false;
	v->start = start;
	v->end = end;
	v->off = off;
	v->inode = inode;
	v->ring = path && strstr(line + path, "memfd:pairmesh-ring");
	return true;
}

/*
 * The two views of the ring holding p, from the kernel's own account: p
 * lies in a view of the rings' memfd of ring bytes, and the same file is
 * mapped again right before or after it. Fails the test otherwise.
 */
static uintptr_t ring_views(const void *p, size_t ring)
{
	uintptr_t at = (uintptr_t)p, lo = 0;
	struct vma prev = { 0 }, cur, hit = { 0 };
	bool found = false;
	char line[512];
	FILE *f;

	f = fopen("/proc/self/maps", "r");
	assert_non_null(f);
	while (fgets(line, sizeof(line), f)) {
		if (!vma_parse(line, &cur))
			continue;
		if (found) {
			/* The line after the hit: the upper view? */
			if (cur.ring && cur.start == hit.end &&
			    cur.inode == hit.inode && cur.off == hit.off &&
			    cur.end - cur.start == ring)
				lo = hit.start;
			break;
		}
		if (at >= cur.start && at < cur.end) {
			found = true;
			hit = cur;
			/* The line before: the lower view? */
			if (prev.ring && prev.end == cur.start &&
			    prev.inode == cur.inode && prev.off == cur.off &&
			    prev.end - prev.start == ring)
				lo = prev.start;
		}
		prev = cur;
	}
	fclose(f);
	if (!found || !hit.ring || hit.end - hit.start != ring || !lo)
		fail_msg("message data %p is not in a ring's double map", p);
	return lo;
}

struct rx_where {
	size_t ring;
	uintptr_t lo;		/* the RX ring's lower view */
	uint64_t next;
	uint64_t bad;
	uint64_t straddled;	/* messages across the two views */
};

static int check_in_ring(struct tl_node *t, const struct pm_message *m)
{
	struct rx_where *w = t->hook_arg;
	uintptr_t at = (uintptr_t)m->data;

	if (!w->lo)
		w->lo = ring_views(m->data, w->ring);
	/* Every message, this one's end too, within the two views. */
	if (at < w->lo || at + m->len > w->lo + 2 * w->ring ||
	    !tl_msg_ok(m->data, m->len, w->next))
		w->bad++;
	if (at < w->lo + w->ring && at + m->len > w->lo + w->ring)
		w->straddled++;
	w->next++;
	return 0;
}

/*
 * The receive callback reads the message where it landed, in the RX ring
 * (mapped twice from one memfd), not from a copy; and a message that wraps
 * the ring reads as one contiguous span, thanks to the second view.
 */
static void test_stream_rx_zero_copy(void **state)
{
	const size_t ring = 64 * KiB, count = 120;
	struct rx_where w = { .ring = ring };
	struct tl_node *a, *b, *v[2];
	unsigned char buf[5000];
	struct pm_config cfg;
	struct pm_stream s;
	size_t i, len;

	tl_begin();
	tl_config(&cfg);
	cfg.ring_size = (uint32_t)ring;
	cfg.max_message = 16 * KiB;
	a = tl_node_new(&cfg);
	b = tl_node_new(&cfg);
	v[0] = a;
	v[1] = b;
	b->hook = check_in_ring;
	b->hook_arg = &w;
	b->nolog = true;
	s = connect_live(v, 2, a, b);
	/* About 9 times round the ring: lengths vary so frames land across
	 * its end wherever the control frames put them. */
	for (i = 0; i < count; i++) {
		len = sizeof(buf) - i * 13;
		tl_make_msg(buf, i, len);
		assert_int_equal(tl_send_retry(v, 2, a, s, buf, len), 0);
	}
	assert_true(tl_wait_msgs(v, 2, b, count));
	print_message("rx ring at %#lx: %llu of %zu messages across its "
		      "end\n", (unsigned long)w.lo,
		      (unsigned long long)w.straddled, count);
	assert_int_equal(w.next, count);
	assert_int_equal(w.bad, 0);
	assert_true(w.straddled > 0);
	tl_node_free(a);
	tl_node_free(b);
}

static void test_stream_self_send(void **state)
{
	const unsigned n = 1000;
	struct tl_node *a, *v[1];
	unsigned char buf[3000];
	struct pm_stream me, me2;
	struct pm_stats st;
	unsigned i;
	size_t len;
	int before;

	tl_begin();
	a = tl_node_new(NULL);
	v[0] = a;
	before = tl_tcp_established(&a->port, 1);
	assert_int_equal(pm_self(a->n, &me), 0);
	assert_true(me.h != 0);
	assert_int_equal(pm_self(a->n, &me2), 0);
	assert_true(pm_stream_same(a->n, me, me2));
	for (i = 0; i < n; i++) {
		len = (size_t)i * 7919 % sizeof(buf);
		tl_make_msg(buf, i, len);
		assert_int_equal(tl_send_retry(v, 1, a, me, buf, len), 0);
	}
	assert_true(tl_wait_msgs(v, 1, a, n));
	tl_settle(v, 1, 5);
	assert_false(a->log_full);
	assert_int_equal(a->nmsgs, n);
	for (i = 0; i < n; i++) {
		len = (size_t)i * 7919 % sizeof(buf);
		assert_int_equal(a->msgs[i].len, len);
		if (!tl_msg_ok(tl_msg_data(a, i), len, i))
			fail_msg("self message #%u wrong or out of order", i);
		assert_true(a->msgs[i].peer_id == a->id);
		assert_true(pm_stream_same(a->n, a->msgs[i].stream, me));
	}
	/* No socket was involved. */
	assert_int_equal(tl_tcp_established(&a->port, 1), before);
	stats(a, &st);
	assert_int_equal(st.conns_open, 0);
	assert_int_equal(st.dialled, 0);
	assert_int_equal(st.accepted, 0);
	tl_node_free(a);
}

static void test_stream_slab_full(void **state)
{
	struct tl_node *f, *p1, *p2, *q, *v[4];
	struct pm_stream s1, s2, s3, qs, t;
	const struct tl_event *ev;
	struct pm_config cfg;
	struct pm_stats st;

	tl_begin();
	tl_config(&cfg);
	cfg.max_peers = 2;
	f = tl_node_new(&cfg);
	p1 = tl_node_new(NULL);
	p2 = tl_node_new(NULL);
	q = tl_node_new(NULL);
	v[0] = f;
	v[1] = p1;
	v[2] = p2;
	v[3] = q;
	assert_int_equal(pm_connect(f->n, p1->addr, &s1), 0);
	assert_int_equal(pm_connect(f->n, p2->addr, &s2), 0);
	assert_int_equal(pm_connect(f->n, q->addr, &s3), -ENOSPC);
	assert_non_null(tl_wait_event(v, 4, f, PM_EV_CONNECTED, s1));
	assert_non_null(tl_wait_event(v, 4, f, PM_EV_CONNECTED, s2));

	/* A third node dials in: refused as BUSY, counted. */
	assert_int_equal(pm_connect(q->n, f->addr, &qs), 0);
	assert_int_equal(pm_send(q->n, qs, "let me in", 9), 0);
	ev = tl_wait_event(v, 4, q, PM_EV_CLOSED, qs);
	assert_non_null(ev);
	assert_int_equal(ev->ev.reason, PM_CLOSE_BUSY);
	assert_int_equal(ev->ev.unsent, 1);
	assert_non_null(tl_wait_event(v, 4, f, PM_EV_REJECTED,
				      (struct pm_stream){ 0 }));
	stats(f, &st);
	assert_int_equal(st.rejected_busy, 1);
	assert_int_equal(st.peers_live, 2);
	assert_int_equal(pm_send(q->n, qs, "x", 1), -ESTALE);
	assert_int_equal(pm_stream_by_id(f->n, q->id, &t), -ENOENT);

	/* The existing peers are unaffected, both ways. */
	assert_int_equal(pm_send(f->n, s1, "to p1", 5), 0);
	assert_int_equal(pm_send(f->n, s2, "to p2", 5), 0);
	assert_true(tl_wait_msgs(v, 4, p1, 1));
	assert_true(tl_wait_msgs(v, 4, p2, 1));
	assert_memory_equal(tl_msg_data(p1, 0), "to p1", 5);
	assert_memory_equal(tl_msg_data(p2, 0), "to p2", 5);
	assert_int_equal(pm_send(p1->n, p1->msgs[0].stream, "p1", 2), 0);
	assert_int_equal(pm_send(p2->n, p2->msgs[0].stream, "p2", 2), 0);
	assert_true(tl_wait_msgs(v, 4, f, 2));
	tl_settle(v, 4, 5);
	assert_int_equal(f->nmsgs, 2);
	assert_int_equal(q->msgs_seen, 0);
	tl_node_free(f);
	tl_node_free(p1);
	tl_node_free(p2);
	tl_node_free(q);
}

struct retry_connect {
	struct tl_node *t;
	const char *addr;
	struct pm_stream s;
	int rc;
};

/* Slot reuse needs the old stream fully closed: retry while -ENOSPC. */
static bool connect_when_free(void *arg)
{
	struct retry_connect *r = arg;

	r->rc = pm_connect(r->t->n, r->addr, &r->s);
	return r->rc != -ENOSPC;
}

static void test_stream_stale_handle(void **state)
{
	struct tl_node *a, *b, *c, *v[3];
	struct retry_connect rc;
	struct pm_stream s1, s2;
	struct pm_config cfg;
	uint64_t id;
	void *p;

	tl_begin();
	tl_config(&cfg);
	cfg.max_peers = 1;	/* the next stream must reuse the slot */
	a = tl_node_new(&cfg);
	b = tl_node_new(NULL);
	c = tl_node_new(NULL);
	v[0] = a;
	v[1] = b;
	v[2] = c;
	s1 = connect_live(v, 3, a, b);
	assert_int_equal(pm_send(a->n, s1, "to b", 4), 0);
	assert_true(tl_wait_msgs(v, 3, b, 1));
	assert_int_equal(pm_close(a->n, s1), 0);

	rc.t = a;
	rc.addr = c->addr;
	assert_true(tl_pump(v, 3, connect_when_free, &rc, TL_DEADLINE_MS));
	assert_int_equal(rc.rc, 0);
	s2 = rc.s;
	assert_true(s2.h != s1.h);

	/* The old handle names nothing, and never the new peer. */
	assert_int_equal(pm_send(a->n, s1, "to b?", 5), -ESTALE);
	assert_int_equal(pm_reserve(a->n, s1, 5, &p), -ESTALE);
	assert_int_equal(pm_commit(a->n, s1, 0), -ESTALE);
	assert_int_equal(pm_close(a->n, s1), -ESTALE);
	assert_int_equal(pm_stream_resume(a->n, s1), -ESTALE);
	assert_int_equal(pm_stream_peer_id(a->n, s1, &id), -ESTALE);
	assert_false(pm_stream_same(a->n, s1, s2));
	/* Handles that never named anything. */
	assert_int_equal(pm_send(a->n, (struct pm_stream){ 0 }, "x", 1),
			 -ESTALE);
	assert_int_equal(pm_send(a->n, (struct pm_stream){ 0xffffffffull },
				 "x", 1), -ESTALE);
	assert_int_equal(pm_send(a->n, (struct pm_stream){ s2.h ^ 1ull << 40 },
				 "x", 1), -ESTALE);

	assert_int_equal(pm_send(a->n, s2, "to c", 4), 0);
	assert_true(tl_wait_msgs(v, 3, c, 1));
	tl_settle(v, 3, 10);
	assert_int_equal(c->nmsgs, 1);
	assert_memory_equal(tl_msg_data(c, 0), "to c", 4);
	assert_true(c->msgs[0].peer_id == a->id);
	assert_int_equal(b->msgs_seen, 1);
	assert_int_equal(pm_stream_peer_id(a->n, s2, &id), 0);
	assert_true(id == c->id);
	tl_node_free(a);
	tl_node_free(b);
	tl_node_free(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_stream_backpressure),
		cmocka_unit_test(test_stream_bad_config),
		cmocka_unit_test(test_stream_close_before_live),
		cmocka_unit_test(test_stream_close_both),
		cmocka_unit_test(test_stream_close_by_acceptor),
		cmocka_unit_test(test_stream_close_graceful),
		cmocka_unit_test(test_stream_connect_on_send),
		cmocka_unit_test(test_stream_emsgsize),
		cmocka_unit_test(test_stream_order),
		cmocka_unit_test(test_stream_peer_id),
		cmocka_unit_test(test_stream_peer_reset),
		cmocka_unit_test(test_stream_reconnect_after_close),
		cmocka_unit_test(test_stream_recreate_same_address),
		cmocka_unit_test(test_stream_refused),
		cmocka_unit_test(test_stream_reply_inbound),
		cmocka_unit_test(test_stream_reserve_commit),
		cmocka_unit_test(test_stream_sendv),
		cmocka_unit_test(test_stream_reuse_by_address),
		cmocka_unit_test(test_stream_reuse_by_id),
		cmocka_unit_test(test_stream_rx_zero_copy),
		cmocka_unit_test(test_stream_self_send),
		cmocka_unit_test(test_stream_slab_full),
		cmocka_unit_test(test_stream_stale_handle),
	};
	int failed;

	failed = cmocka_run_group_tests_name("stream/io_uring", tests,
					     tl_setup_io_uring, tl_teardown);
	failed += cmocka_run_group_tests_name("stream/epoll", tests,
					      tl_setup_epoll, tl_teardown);
	return failed ? 1 : 0;
}
