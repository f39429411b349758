/* SPDX-License-Identifier: MIT */
/*
 * The two-process scenarios of `pairmesh bench`: throughput, latency and
 * slow. The receiver starts first and tells its address; the sender dials
 * it, reports when the stream is live, sends, and reports what it sent.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"

#define LAT_CAP		(10u << 20)	/* round trips recorded at most */
#define LAT_WARMUP	1000		/* round trips not recorded */
#define REPLY_MS	5000		/* one round trip, at most */

/* What a sending child sees of its one stream. */
struct link {
	struct pm_stream s;
	bool connected, closed;
	int err;
	enum pm_close_reason reason;
};

static void link_event(struct link *l, const struct pm_event *ev)
{
	if (ev->type == PM_EV_CONNECTED) {
		l->connected = true;
	} else if (ev->type == PM_EV_CLOSED) {
		l->closed = true;
		l->err = ev->error;
		l->reason = ev->reason;
	}
}

static void on_link_event(struct pm_node *n, const struct pm_event *ev,
			  void *user)
{
	(void)n;
	link_event(user, ev);
}

/* Takes the receiver's address from the parent, dials it, waits for the
 * stream, says READY. */
static void dial_peer(int fd, struct pm_node *n, struct link *l)
{
	int64_t end = bench_now_ns() + (int64_t)BENCH_SETUP_MS * 1000000;
	struct ctl m;
	int r;

	if (ctl_recv(fd, &m, BENCH_SETUP_MS) || m.type != CTL_PEER)
		child_fail(fd, "no peer address");
	m.addr[sizeof(m.addr) - 1] = 0;
	r = pm_connect(n, m.addr, &l->s);
	if (r)
		child_fail(fd, "pm_connect %s: %s", m.addr, strerror(-r));
	while (!l->connected && !l->closed && bench_now_ns() < end)
		pm_node_run(n, 100);
	if (!l->connected)
		child_fail(fd, "no connection to %s (%s, reason %s)", m.addr,
			   strerror(-l->err), pm_close_reason_str(l->reason));
	child_ready(fd, n);
}

/*
 * Rings of at least 1 MiB holding four messages; max_message >= size. 4 MiB
 * was tried: slower at 256 B (14.5 M vs 16.8 M msgs/s), 1 KiB (4.3 M vs
 * 4.9 M) and 16 KiB (287 k vs 414 k), and at 64 B on a quiet machine
 * (43 M vs 55 M): the kernel copies into and out of rings that no longer
 * stay in the caches (medians of 3-4 alternating runs).
 */
static void pair_config(struct pm_config *c, const struct bench_opts *o)
{
	uint32_t max = (uint32_t)o->size + 64;

	bench_config(c, o, bench_ring(o->size, 1u << 20),
		     max > (256u << 10) ? max : 256u << 10);
	c->max_peers = 4;
}

static int64_t run_ms(const struct bench_opts *o)
{
	return (int64_t)(o->seconds * 1e3) + BENCH_SETUP_MS + BENCH_GRACE_MS;
}

/* Receiver of throughput and slow: a sequence sink. */
static void sink_child(int fd, const struct bench_opts *o, void *arg)
{
	struct seq_sink s;
	struct pm_config c;
	struct pm_node *n;
	struct ctl m;

	sink_init(&s, o->size);
	s.slow_every = arg ? 64 : 0;
	pair_config(&c, o);
	c.on_message = sink_message;
	c.on_event = sink_event;
	c.user = &s;
	n = child_node(fd, &c);
	child_ready(fd, n);
	if (child_run_until(n, &s.done, (int)run_ms(o)))
		child_fail(fd, "no end marker from the sender");
	sink_result(&s, &m);
	child_send(fd, &m);
	child_wait(fd, &n, 1, &m);
	child_fail(fd, "unexpected message %u", m.type);
}

static struct pm_node *sender_node(int fd, const struct bench_opts *o,
				   struct link *l)
{
	struct pm_config c;

	pair_config(&c, o);
	c.on_event = on_link_event;
	c.user = l;
	return child_node(fd, &c);
}

/* One pm_node_run; fails the child when the stream died. */
static void turn(int fd, struct pm_node *n, struct link *l, int ms)
{
	int r = pm_node_run(n, ms);

	if (r < 0 && r != -EINTR)
		child_fail(fd, "pm_node_run: %s", strerror(-r));
	if (l->closed)
		child_fail(fd, "the stream closed (%s, reason %s)",
			   strerror(-l->err), pm_close_reason_str(l->reason));
}

/* Queues the end marker and says DONE with the count and start time. */
static void send_marker(int fd, struct pm_node *n, struct link *l,
			uint64_t sent, int64_t t0)
{
	struct ctl m = { .type = CTL_DONE, .t0 = t0 };
	uint8_t marker[BENCH_MARKER_LEN];
	int r;

	msg_marker(marker, sent);
	while ((r = pm_send(n, l->s, marker, sizeof(marker))) == -EAGAIN)
		turn(fd, n, l, 100);
	if (r)
		child_fail(fd, "pm_send: %s", strerror(-r));
	m.v[0] = sent;
	child_send(fd, &m);
}

/*
 * Throughput sender. Messages up to SENDV_MAX bytes go in batches through
 * pm_sendv (filled here, one copy into the ring, the API's checks paid once
 * per batch); larger ones are written in place, reserve then commit, where
 * a copy costs more than the call: at 1 KiB in place gave 4.9 M msgs/s,
 * pm_sendv 4.0 M; at 256 B they were even. The loop runs only when the ring is
 * full: one send then covers the whole ring, which measured faster on
 * loopback than a turn every few messages.
 */
#define SENDV_MAX	256u
#define SENDV_BYTES	(64u << 10)	/* one batch, at most */
#define SENDV_COUNT	256u

/* Queues one message or a batch; returns how many, 0 when the ring is
 * full. */
static uint64_t send_some(int fd, struct pm_node *n, struct link *l,
			  const struct bench_opts *o, uint64_t seq,
			  struct iovec *iov, size_t per)
{
	void *buf;
	int r;

	if (per) {
		for (size_t i = 0; i < per; i++)
			msg_fill(iov[i].iov_base, o->size, seq + i, 0);
		r = pm_sendv(n, l->s, iov, per);
		if (r == -EAGAIN)
			return 0;
		if (r < 0)
			child_fail(fd, "pm_sendv: %s", strerror(-r));
		return (uint64_t)r;
	}
	r = pm_reserve(n, l->s, o->size, &buf);
	if (r == -EAGAIN)
		return 0;
	if (r)
		child_fail(fd, "pm_reserve: %s", strerror(-r));
	msg_fill(buf, o->size, seq, 0);
	r = pm_commit(n, l->s, o->size);
	if (r)
		child_fail(fd, "pm_commit: %s", strerror(-r));
	return 1;
}

static void zc_sender_child(int fd, const struct bench_opts *o, void *arg)
{
	struct link l = { 0 };
	struct pm_node *n = sender_node(fd, o, &l);
	struct iovec iov[SENDV_COUNT];
	uint8_t *batch = NULL;
	uint64_t seq = 0, next_check = 0;
	int64_t t0, deadline;
	size_t per = 0;
	struct ctl m;

	(void)arg;
	if (o->size <= SENDV_MAX) {
		per = SENDV_BYTES / o->size;
		per = per > SENDV_COUNT ? SENDV_COUNT : per;
		batch = calloc(per, o->size);
		if (!batch)
			child_fail(fd, "out of memory");
		for (size_t i = 0; i < per; i++)
			iov[i] = (struct iovec){ batch + i * o->size, o->size };
	}
	dial_peer(fd, n, &l);
	t0 = bench_now_ns();
	deadline = t0 + (int64_t)(o->seconds * 1e9);
	for (;;) {
		uint64_t k;

		if (seq >= next_check) {
			if (bench_now_ns() >= deadline)
				break;
			next_check = seq + 64;
		}
		k = send_some(fd, n, &l, o, seq, iov, per);
		if (!k)	/* wakes on the send completion that makes room */
			turn(fd, n, &l, 100);
		seq += k;
	}
	free(batch);
	send_marker(fd, n, &l, seq, t0);
	child_wait(fd, &n, 1, &m);
	child_fail(fd, "unexpected message %u", m.type);
}

/* Slow's sender: plain pm_send, as fast as it accepts. */
static void copy_sender_child(int fd, const struct bench_opts *o, void *arg)
{
	struct link l = { 0 };
	struct pm_node *n = sender_node(fd, o, &l);
	uint8_t *buf = calloc(1, o->size);
	uint64_t seq = 0;
	int64_t t0, deadline;
	struct ctl m;
	int r;

	(void)arg;
	if (!buf)
		child_fail(fd, "out of memory");
	dial_peer(fd, n, &l);
	t0 = bench_now_ns();
	deadline = t0 + (int64_t)(o->seconds * 1e9);
	while (bench_now_ns() < deadline) {
		for (int i = 0; i < 256; i++) {
			msg_fill(buf, o->size, seq, 0);
			r = pm_send(n, l.s, buf, o->size);
			if (r == -EAGAIN)
				break;
			if (r)
				child_fail(fd, "pm_send: %s", strerror(-r));
			seq++;
		}
		turn(fd, n, &l, r == -EAGAIN ? 100 : 0);
	}
	send_marker(fd, n, &l, seq, t0);
	free(buf);
	child_wait(fd, &n, 1, &m);
	child_fail(fd, "unexpected message %u", m.type);
}

/*
 * Starts the receiver, then the sender dialling it; waits for the sender's
 * DONE and, when rx_result, the receiver's RESULT. Both stay up for
 * stop_children(). c[0] is the receiver, c[1] the sender.
 */
static int pair_start(const struct bench_opts *o, struct bench_result *r,
		      struct child c[2], child_fn rx, void *rx_arg,
		      child_fn tx, struct ctl *done, struct ctl *res)
{
	struct ctl m;

	if (child_spawn(&c[0], "receiver", rx, o, rx_arg))
		return bench_fail(r, "fork: %s", strerror(errno));
	if (expect_msg(&c[0], CTL_READY, &m, BENCH_SETUP_MS, r))
		return -1;
	snprintf(r->engine, sizeof(r->engine), "%.15s", m.text);
	m.type = CTL_PEER;
	if (child_spawn(&c[1], "sender", tx, o, NULL))
		return bench_fail(r, "fork: %s", strerror(errno));
	if (send_msg(&c[1], &m, r) ||
	    expect_msg(&c[1], CTL_READY, &m, 2 * BENCH_SETUP_MS, r))
		return -1;
	bench_progress("%s: running for %.1f s", o->scenario, o->seconds);
	if (expect_msg(&c[1], CTL_DONE, done, (int)run_ms(o), r))
		return -1;
	if (res && expect_msg(&c[0], CTL_RESULT, res, BENCH_GRACE_MS, r))
		return -1;
	return 0;
}

static void set_rate(const struct bench_opts *o, struct bench_result *r,
		     uint64_t msgs, int64_t ns)
{
	r->seconds = (double)ns / 1e9;
	r->msgs_per_s = (double)msgs / r->seconds;
	r->mb_per_s = r->msgs_per_s * (double)o->size / 1e6;
}

int bench_throughput(const struct bench_opts *o, struct bench_result *r)
{
	struct child c[2] = { 0 };
	struct ctl done, res;

	if (pair_start(o, r, c, sink_child, NULL, zc_sender_child, &done,
		       &res) ||
	    sink_verify(&res, done.v[0], "receiver", r) ||
	    stop_children(c, 2, NULL, r)) {
		kill_children(c, 2);
		return -1;
	}
	set_rate(o, r, res.v[0], res.t1 - done.t0);
	return 0;
}

int bench_slow(const struct bench_opts *o, struct bench_result *r)
{
	struct child c[2] = { 0 };
	struct ctl done, res, bye[2];

	if (pair_start(o, r, c, sink_child, (void *)1, copy_sender_child,
		       &done, &res) ||
	    sink_verify(&res, done.v[0], "receiver", r) ||
	    stop_children(c, 2, bye, r)) {
		kill_children(c, 2);
		return -1;
	}
	set_rate(o, r, res.v[0], res.t1 - done.t0);
	r->rss_kib_receiver = (double)bye[0].v[0];
	r->rss_kib_sender = (double)bye[1].v[0];
	return 0;
}

/* Latency: the receiver echoes, the sender times each round trip. */

/* The stream an echo paused on, to resume after the next turn. */
struct echo {
	struct pm_stream paused;
};

static int on_echo(struct pm_node *n, const struct pm_message *m, void *user)
{
	struct echo *e = user;
	int r = pm_send(n, m->stream, m->data, m->len);

	/* One message in flight never fills a ring; if it did, keep the
	 * message: it comes again once the stream is resumed. */
	if (r != -EAGAIN)
		return 0;
	e->paused = m->stream;
	return -EAGAIN;
}

static void echo_child(int fd, const struct bench_opts *o, void *arg)
{
	struct echo e = { 0 };
	struct pm_config c;
	struct pm_node *n;
	struct ctl m;
	int r;

	(void)arg;
	pair_config(&c, o);
	c.on_message = on_echo;
	c.user = &e;
	n = child_node(fd, &c);
	child_ready(fd, n);
	/* Never sleep in the kernel: a wake-up costs more than the work. */
	for (unsigned i = 0;; i++) {
		r = pm_node_run(n, 0);
		if (r < 0 && r != -EINTR)
			child_fail(fd, "pm_node_run: %s", strerror(-r));
		if (e.paused.h) {
			pm_stream_resume(n, e.paused);
			e.paused.h = 0;
		}
		if ((i & 1023) || !(r = ctl_poll(fd, &m)))
			continue;
		if (r < 0)
			_exit(1);
		if (m.type == CTL_STOP)
			child_exit(fd, &n, 1);
		child_fail(fd, "unexpected message %u", m.type);
	}
}

struct pinger {
	struct link l;
	size_t size;
	uint64_t seq;
	bool got, bad;
};

static int on_reply(struct pm_node *n, const struct pm_message *m,
		    void *user)
{
	struct pinger *p = user;
	uint32_t origin;
	uint64_t seq;

	(void)n;
	if (!msg_check(m->data, m->len, &seq, &origin) ||
	    m->len != p->size || seq != p->seq || p->got)
		p->bad = true;
	p->got = true;
	return 0;
}

static void on_ping_event(struct pm_node *n, const struct pm_event *ev,
			  void *user)
{
	struct pinger *p = user;

	(void)n;
	link_event(&p->l, ev);
}

/* One round trip; returns its time in ns. */
static int64_t round_trip(int fd, struct pm_node *n, struct pinger *p)
{
	int64_t t = bench_now_ns();
	void *buf;
	int r;

	p->got = false;
	r = pm_reserve(n, p->l.s, p->size, &buf);
	if (r)
		child_fail(fd, "pm_reserve: %s", strerror(-r));
	msg_fill(buf, p->size, p->seq, 0);
	pm_commit(n, p->l.s, p->size);
	for (unsigned i = 1; !p->got; i++) {
		turn(fd, n, &p->l, 0);
		if (!(i & 4095) && bench_now_ns() - t > REPLY_MS * 1000000LL)
			child_fail(fd, "no reply to message %llu within %d ms",
				   (unsigned long long)p->seq, REPLY_MS);
	}
	t = bench_now_ns() - t;
	if (p->bad)
		child_fail(fd, "reply %llu: wrong sequence, length or check "
			   "byte", (unsigned long long)p->seq);
	p->seq++;
	return t;
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

/* Nearest rank. */
static uint64_t rank(const uint32_t *v, size_t k, double q)
{
	size_t i = (size_t)ceil(q * (double)k);

	return v[i ? i - 1 : 0];
}

static void ping_child(int fd, const struct bench_opts *o, void *arg)
{
	struct pinger p = { .size = o->size };
	struct ctl m = { .type = CTL_DONE };
	struct pm_config c;
	struct pm_node *n;
	uint32_t *rtt = malloc(LAT_CAP * sizeof(*rtt));
	size_t k = 0;
	int64_t deadline;

	(void)arg;
	if (!rtt)
		child_fail(fd, "out of memory");
	pair_config(&c, o);
	c.on_message = on_reply;
	c.on_event = on_ping_event;
	c.user = &p;
	n = child_node(fd, &c);
	dial_peer(fd, n, &p.l);
	for (int i = 0; i < LAT_WARMUP; i++)
		round_trip(fd, n, &p);
	m.t0 = bench_now_ns();
	deadline = m.t0 + (int64_t)(o->seconds * 1e9);
	/* Stops early when the array is full, never reallocates. */
	while (k < LAT_CAP && ((k & 15) || bench_now_ns() < deadline)) {
		int64_t t = round_trip(fd, n, &p);

		rtt[k++] = t > UINT32_MAX ? UINT32_MAX : (uint32_t)t;
	}
	m.t1 = bench_now_ns();
	qsort(rtt, k, sizeof(*rtt), cmp_u32);
	m.v[0] = k;
	m.v[1] = rank(rtt, k, 0.50);
	m.v[2] = rank(rtt, k, 0.99);
	m.v[3] = rank(rtt, k, 0.999);
	free(rtt);
	child_send(fd, &m);
	child_wait(fd, &n, 1, &m);
	child_fail(fd, "unexpected message %u", m.type);
}

int bench_latency(const struct bench_opts *o, struct bench_result *r)
{
	struct child c[2] = { 0 };
	struct ctl done;

	if (pair_start(o, r, c, echo_child, NULL, ping_child, &done, NULL) ||
	    stop_children(c, 2, NULL, r)) {
		kill_children(c, 2);
		return -1;
	}
	if (!done.v[0])
		return bench_fail(r, "no round trip completed");
	set_rate(o, r, done.v[0], done.t1 - done.t0);
	r->p50_us = (double)done.v[1] / 1e3;
	r->p99_us = (double)done.v[2] / 1e3;
	r->p999_us = (double)done.v[3] / 1e3;
	return 0;
}
