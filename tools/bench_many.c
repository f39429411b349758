/* SPDX-License-Identifier: MIT */
/*
 * The many-connection scenarios of `pairmesh bench`: fanin (N senders into
 * one receiver) and scale (one node holding N idle connections).
 *
 * One node is one connection (the pair rule allows one per pair of nodes),
 * so N connections need N dialling nodes. They are spread over a few
 * "crowd" processes, each running all of its nodes in one loop. Crowd
 * nodes do not auto-connect and send their link announcements with a hop
 * limit of 1: the hub keeps them instead of flooding each one to the N - 1
 * others, which would measure the flood rather than the connections.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "bench.h"

#define DIAL_WINDOW	256	/* handshakes in flight per crowd process */
#define SWEEP_NS	500000000LL	/* run idle nodes this often */
#define FDS_PER_NODE	4	/* listener, engine, connection, spare */
#define FD_SPARE	64

struct member {
	struct pm_node *n;
	struct pm_stream s;
	uint32_t idx;		/* global index, 0..N-1 */
	bool connected, closed;
	int err;
	enum pm_close_reason reason;
	uint64_t sent;
	char listen[24];
};

/* What a crowd process holds: nodes lo..hi-1 of the N. */
struct crowd_arg {
	uint32_t lo, hi;
	bool scale;
};

struct hub {
	uint32_t k;
	size_t size;
	uint64_t *next;		/* per origin */
	uint64_t *first_id;	/* per origin: the node id that sent seq 0 */
	uint64_t recv;
	int64_t last_ns;
	uint32_t closed;
	int close_err;		/* of the first close */
	enum pm_close_reason close_reason;
	bool bad;
	char why[96];
};

static void many_config(struct pm_config *c, const struct bench_opts *o,
			bool scale)
{
	if (scale) {
		bench_config(c, o, 4096, 1024);
	} else {
		uint32_t max = (uint32_t)o->size + 64;

		bench_config(c, o, bench_ring(o->size, 64u << 10),
			     max > 1024 ? max : 1024);
	}
	c->no_auto_connect = true;
}

static void on_member_event(struct pm_node *n, const struct pm_event *ev,
			    void *user)
{
	struct member *m = user;

	(void)n;
	if (ev->type == PM_EV_CONNECTED) {
		m->connected = true;
	} else if (ev->type == PM_EV_CLOSED) {
		m->closed = true;
		m->err = ev->error;
		m->reason = ev->reason;
	}
}

static void member_check(int fd, const struct member *m)
{
	if (m->closed)
		child_fail(fd, "node %u: the stream closed (%s, reason %s)",
			   m->idx, strerror(-m->err),
			   pm_close_reason_str(m->reason));
}

static void nap_us(long us)
{
	struct timespec ts = { 0, us * 1000 };

	nanosleep(&ts, NULL);
}

/*
 * Dials the hub from every node, at most DIAL_WINDOW handshakes at a time
 * (as a careful client would: a burst of thousands of SYNs only overflows
 * the listen backlog), until every stream is live.
 */
static void crowd_dial(int fd, struct member *v, uint32_t k, const char *addr)
{
	int64_t end = bench_now_ns() + (int64_t)BENCH_SETUP_MS * 1000000 +
		      (int64_t)k * 5000000, sweep = bench_now_ns();
	uint32_t next = 0, live = 0;

	while (live < k) {
		while (next < k && next - live < DIAL_WINDOW) {
			int r = pm_connect(v[next].n, addr, &v[next].s);

			if (r)
				child_fail(fd, "pm_connect %s: %s", addr,
					   strerror(-r));
			next++;
		}
		live = 0;
		for (uint32_t i = 0; i < next; i++) {
			if (!v[i].connected) {
				pm_node_run(v[i].n, 0);
				member_check(fd, &v[i]);
			}
			live += v[i].connected;
		}
		if (bench_now_ns() - sweep > SWEEP_NS) {
			for (uint32_t i = 0; i < next; i++)
				if (v[i].connected)
					pm_node_run(v[i].n, 0);
			sweep = bench_now_ns();
		}
		if (bench_now_ns() > end)
			child_fail(fd, "only %u of %u nodes connected", live,
				   k);
		nap_us(1000);
	}
}

/*
 * Fanin's sending phase, then a flush of every ring. Returns the count.
 * Each node queues up to CROWD_BATCH messages per round in one pm_sendv and
 * runs its loop once: the crowd is the load, the hub what is measured, and
 * on two cores every cycle the crowd spends is one the hub does not get.
 */
#define CROWD_BATCH	64

static uint64_t crowd_send(int fd, struct member *v, uint32_t k,
			   const struct bench_opts *o, int64_t end)
{
	uint8_t *buf = calloc(CROWD_BATCH, o->size);
	struct iovec iov[CROWD_BATCH];
	uint64_t total = 0;
	bool queued_any;

	if (!buf)
		child_fail(fd, "out of memory");
	for (int j = 0; j < CROWD_BATCH; j++)
		iov[j] = (struct iovec){ buf + (size_t)j * o->size, o->size };
	while (bench_now_ns() < end) {
		unsigned queued = 0;

		for (uint32_t i = 0; i < k; i++) {
			struct member *m = &v[i];
			int r;

			for (int j = 0; j < CROWD_BATCH; j++)
				msg_fill(iov[j].iov_base, o->size,
					 m->sent + (uint64_t)j, m->idx);
			r = pm_sendv(m->n, m->s, iov, CROWD_BATCH);
			if (r < 0 && r != -EAGAIN)
				child_fail(fd, "node %u: pm_sendv: %s",
					   m->idx, strerror(-r));
			if (r > 0) {
				m->sent += (uint64_t)r;
				queued += (unsigned)r;
			}
			pm_node_run(m->n, 0);
			member_check(fd, m);
		}
		if (!queued)
			nap_us(50);
	}
	end = bench_now_ns() + (int64_t)BENCH_GRACE_MS * 1000000;
	do {
		queued_any = false;
		for (uint32_t i = 0; i < k; i++) {
			if (pm_stream_queued(v[i].n, v[i].s) <= 0)
				continue;
			queued_any = true;
			pm_node_run(v[i].n, 0);
			member_check(fd, &v[i]);
		}
		if (bench_now_ns() > end)
			child_fail(fd, "the rings did not drain");
	} while (queued_any);
	for (uint32_t i = 0; i < k; i++)
		total += v[i].sent;
	free(buf);
	return total;
}

static void crowd_child(int fd, const struct bench_opts *o, void *arg)
{
	const struct crowd_arg *a = arg;
	uint32_t k = a->hi - a->lo;
	struct member *v = calloc(k, sizeof(*v));
	struct pm_node **nodes = calloc(k, sizeof(*nodes));
	struct ctl m, out;
	struct pm_config c;
	uint8_t ping[BENCH_MIN_SIZE];
	char addr[64];

	if (!v || !nodes)
		child_fail(fd, "out of memory");
	many_config(&c, o, a->scale);
	c.max_peers = 2;
	c.max_hops = 1;
	c.on_event = on_member_event;
	for (uint32_t i = 0; i < k; i++) {
		/* Nobody dials these listeners. Spread over 127/8, binding
		 * port 0 stays cheap: on one address the kernel's search
		 * for a free port grows with the ports taken. */
		v[i].idx = a->lo + i;
		snprintf(v[i].listen, sizeof(v[i].listen), "127.%u.%u.%u:0",
			 1 + v[i].idx / 62500,
			 v[i].idx / 250 % 250 + 1, v[i].idx % 250 + 1);
		c.listen = v[i].listen;
		c.user = &v[i];
		nodes[i] = v[i].n = child_node(fd, &c);
	}
	child_ready(fd, nodes[0]);
	child_wait(fd, nodes, k, &m);
	if (m.type != CTL_GO)
		child_fail(fd, "unexpected message %u", m.type);
	memcpy(addr, m.addr, sizeof(addr));
	addr[sizeof(addr) - 1] = 0;
	crowd_dial(fd, v, k, addr);
	child_send(fd, &(struct ctl){ .type = CTL_DONE,
				      .t1 = bench_now_ns() });
	child_wait(fd, nodes, k, &m);
	if (m.type != CTL_GO)
		child_fail(fd, "unexpected message %u", m.type);
	out = (struct ctl){ .type = CTL_DONE };
	if (a->scale) {
		/* One message per connection proves each one works. */
		for (uint32_t i = 0; i < k; i++) {
			int r;

			msg_fill(ping, sizeof(ping), 0, v[i].idx);
			r = pm_send(v[i].n, v[i].s, ping, sizeof(ping));
			if (r)
				child_fail(fd, "node %u: pm_send: %s",
					   v[i].idx, strerror(-r));
			pm_node_run(v[i].n, 0);
		}
		out.v[0] = k;
	} else {
		out.v[0] = crowd_send(fd, v, k, o,
				      m.t0 + (int64_t)(o->seconds * 1e9));
	}
	child_send(fd, &out);
	child_wait(fd, nodes, k, &m);
	child_fail(fd, "unexpected message %u", m.type);
}

/* The hub: one node, N inbound streams. */

static void hub_bad(struct hub *h, const char *why, uint32_t origin)
{
	if (!h->bad)
		snprintf(h->why, sizeof(h->why), "%s (from node %u)", why,
			 origin);
	h->bad = true;
}

static int on_hub_message(struct pm_node *n, const struct pm_message *m,
			  void *user)
{
	struct hub *h = user;
	uint32_t origin = 0;	/* reported even when the check fails */
	uint64_t seq = 0;

	(void)n;
	if (!msg_check(m->data, m->len, &seq, &origin) || origin >= h->k ||
	    m->len != h->size) {
		hub_bad(h, "bad message", origin);
		return 0;
	}
	if (seq == 0 && !h->first_id[origin])
		h->first_id[origin] = m->peer_id;
	if (m->peer_id != h->first_id[origin])
		hub_bad(h, "two nodes claim one origin", origin);
	else if (seq != h->next[origin])
		hub_bad(h, "sequence gap", origin);
	h->next[origin] = seq + 1;
	/* The clock every 64 messages, not each: it was 14 % of the hub's
	 * time (flame graph), a cost of the benchmark, not of the engine.
	 * The end it marks is then at most 63 messages early. */
	if ((++h->recv & 63) == 0)
		h->last_ns = bench_now_ns();
	return 0;
}

static void on_hub_event(struct pm_node *n, const struct pm_event *ev,
			 void *user)
{
	struct hub *h = user;

	(void)n;
	if (ev->type != PM_EV_CLOSED)
		return;
	if (!h->closed++) {
		h->close_err = ev->error;
		h->close_reason = ev->reason;
	}
}

/* Runs until all k streams are live. */
static void hub_connect(int fd, struct pm_node *n, struct hub *h)
{
	int64_t start = bench_now_ns(), shown = start;
	int64_t end = start + (int64_t)BENCH_SETUP_MS * 1000000 +
		      (int64_t)h->k * 5000000;
	struct pm_stats st;

	for (;;) {
		pm_node_stats(n, &st);
		if (st.peers_live >= h->k)
			break;
		if (h->closed)
			child_fail(fd, "%u streams closed while connecting "
				   "(%llu live), the first: %s, reason %s",
				   h->closed, (unsigned long long)st.peers_live,
				   strerror(-h->close_err),
				   pm_close_reason_str(h->close_reason));
		if (bench_now_ns() > end)
			child_fail(fd, "only %llu of %u streams live",
				   (unsigned long long)st.peers_live, h->k);
		if (bench_now_ns() - shown > 2000000000LL) {
			shown = bench_now_ns();
			bench_progress("%llu of %u connected (%llu sockets "
				       "open, %llu timeouts)",
				       (unsigned long long)st.peers_live, h->k,
				       (unsigned long long)st.conns_open,
				       (unsigned long long)st.timeouts);
		}
		pm_node_run(n, 100);
	}
}

static void hub_child(int fd, const struct bench_opts *o, void *arg)
{
	const struct crowd_arg *a = arg;
	struct hub h = { .k = a->hi, .size = a->scale ? BENCH_MIN_SIZE :
							o->size };
	long rss0 = bench_rss_kib(), rss1;
	struct pm_config c;
	struct pm_node *n;
	struct ctl m, out;
	int64_t end, cpu0;

	h.next = calloc(h.k, sizeof(*h.next));
	h.first_id = calloc(h.k, sizeof(*h.first_id));
	if (!h.next || !h.first_id)
		child_fail(fd, "out of memory");
	many_config(&c, o, a->scale);
	c.max_peers = h.k + 8;
	c.on_message = on_hub_message;
	c.on_event = on_hub_event;
	c.user = &h;
	n = child_node(fd, &c);
	child_ready(fd, n);
	child_wait(fd, &n, 1, &m);
	if (m.type != CTL_GO)
		child_fail(fd, "unexpected message %u", m.type);
	hub_connect(fd, n, &h);
	out = (struct ctl){ .type = CTL_DONE, .t1 = bench_now_ns() };
	cpu0 = bench_cpu_ns();
	rss1 = bench_rss_kib();
	out.v[0] = (uint64_t)rss0;
	out.v[1] = (uint64_t)rss1;
	child_send(fd, &out);
	child_wait(fd, &n, 1, &m);
	if (m.type != CTL_EXPECT)
		child_fail(fd, "unexpected message %u", m.type);
	end = bench_now_ns() + (int64_t)BENCH_GRACE_MS * 1000000;
	while (h.recv < m.v[0] && !h.bad && !h.closed &&
	       bench_now_ns() < end)
		pm_node_run(n, 100);
	if (h.bad)
		child_fail(fd, "%s", h.why);
	if (h.closed)
		child_fail(fd, "%u streams closed during the run", h.closed);
	if (!h.last_ns)		/* fewer than 64 messages */
		h.last_ns = bench_now_ns();
	out = (struct ctl){ .type = CTL_RESULT, .t1 = h.last_ns };
	out.v[0] = h.recv;
	out.v[1] = (uint64_t)(bench_cpu_ns() - cpu0);
	child_send(fd, &out);
	child_wait(fd, &n, 1, &m);
	child_fail(fd, "unexpected message %u", m.type);
}

/* Raises RLIMIT_NOFILE to its hard limit; returns that limit. */
static uint64_t raise_nofile(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl))
		return 1024;
	rl.rlim_cur = rl.rlim_max;
	if (setrlimit(RLIMIT_NOFILE, &rl) == 0)
		return rl.rlim_max;
	getrlimit(RLIMIT_NOFILE, &rl);
	return rl.rlim_cur;
}

struct many {
	struct child c[1 + 64];	/* the hub, then the crowds */
	struct crowd_arg args[1 + 64];
	size_t k;		/* children started */
	uint32_t crowds;
	uint64_t expect;
	int64_t t0;		/* of the connect phase */
};

/*
 * Starts the hub and the crowds, connects all N and sets r->connect_s.
 * hub_done receives the hub's DONE (RSS before and after).
 */
static int many_start(const struct bench_opts *o, struct bench_result *r,
		      struct many *w, uint32_t peers, uint32_t per_proc,
		      bool scale, struct ctl *hub_done)
{
	struct ctl m, hub;
	int64_t last;

	w->crowds = (peers + per_proc - 1) / per_proc;
	if (w->crowds < 2 && peers >= 2)
		w->crowds = 2;	/* two cores: one crowd would leave one */
	w->args[0] = (struct crowd_arg){ 0, peers, scale };
	if (child_spawn(&w->c[0], "receiver", hub_child, o, &w->args[0]))
		return bench_fail(r, "fork: %s", strerror(errno));
	w->k = 1;
	if (expect_msg(&w->c[0], CTL_READY, &hub, BENCH_SETUP_MS, r))
		return -1;
	snprintf(r->engine, sizeof(r->engine), "%.15s", hub.text);
	for (uint32_t i = 0; i < w->crowds; i++) {
		struct crowd_arg *a = &w->args[1 + i];
		char name[32];

		a->lo = (uint32_t)((uint64_t)peers * i / w->crowds);
		a->hi = (uint32_t)((uint64_t)peers * (i + 1) / w->crowds);
		a->scale = scale;
		snprintf(name, sizeof(name), "senders %u", i);
		if (child_spawn(&w->c[w->k], name, crowd_child, o, a))
			return bench_fail(r, "fork: %s", strerror(errno));
		w->k++;
	}
	for (size_t i = 1; i < w->k; i++)
		if (expect_msg(&w->c[i], CTL_READY, &m,
			       BENCH_SETUP_MS + (int)per_proc * 10, r))
			return -1;
	bench_progress("%s: %u nodes in %u processes, connecting", o->scenario,
		       peers, w->crowds);
	w->t0 = bench_now_ns();
	m = (struct ctl){ .type = CTL_GO, .t0 = w->t0 };
	memcpy(m.addr, hub.addr, sizeof(m.addr));
	for (size_t i = 0; i < w->k; i++)
		if (send_msg(&w->c[i], &m, r))
			return -1;
	/* Connected when both ends say so: the hub and every crowd. */
	last = 0;
	for (size_t i = 0; i < w->k; i++) {
		if (expect_msg(&w->c[i], CTL_DONE, i ? &m : hub_done,
			       3 * BENCH_SETUP_MS + (int)peers * 10, r))
			return -1;
		if ((i ? m.t1 : hub_done->t1) > last)
			last = i ? m.t1 : hub_done->t1;
	}
	r->connect_s = (double)(last - w->t0) / 1e9;
	r->peers = peers;
	return 0;
}

/* GO to the crowds, their counts, EXPECT to the hub, its RESULT. */
static int many_run(const struct bench_opts *o, struct bench_result *r,
		    struct many *w, int64_t t0, struct ctl *res)
{
	struct ctl m = { .type = CTL_GO, .t0 = t0 };

	for (size_t i = 1; i < w->k; i++)
		if (send_msg(&w->c[i], &m, r))
			return -1;
	w->expect = 0;
	for (size_t i = 1; i < w->k; i++) {
		if (expect_msg(&w->c[i], CTL_DONE, &m,
			       (int)(o->seconds * 1e3) + BENCH_GRACE_MS, r))
			return -1;
		w->expect += m.v[0];
	}
	m = (struct ctl){ .type = CTL_EXPECT };
	m.v[0] = w->expect;
	if (send_msg(&w->c[0], &m, r) ||
	    expect_msg(&w->c[0], CTL_RESULT, res, 2 * BENCH_GRACE_MS, r))
		return -1;
	/* Sequences were checked per origin: equal totals mean nothing
	 * was lost. */
	if (res->v[0] != w->expect)
		return bench_fail(r, "the receiver got %llu of %llu messages",
				  (unsigned long long)res->v[0],
				  (unsigned long long)w->expect);
	return stop_children(w->c, w->k, NULL, r);
}

int bench_fanin(const struct bench_opts *o, struct bench_result *r)
{
	struct many *w = calloc(1, sizeof(*w));
	struct ctl done, res;
	int64_t t0;

	if (!w)
		return bench_fail(r, "out of memory");
	raise_nofile();
	if (many_start(o, r, w, o->peers, (o->peers + 1) / 2, false, &done))
		goto out_kill;
	bench_progress("fanin: %u peers, running for %.1f s", o->peers,
		       o->seconds);
	t0 = bench_now_ns();
	if (many_run(o, r, w, t0, &res))
		goto out_kill;
	r->seconds = (double)(res.t1 - t0) / 1e9;
	r->msgs_per_s = (double)res.v[0] / r->seconds;
	r->mb_per_s = r->msgs_per_s * (double)o->size / 1e6;
	r->hub_cpu_ns_per_msg = res.v[0] ? (double)res.v[1] / res.v[0] : NAN;
	r->connect_s = NAN;
	free(w);
	return 0;
out_kill:
	kill_children(w->c, w->k);
	free(w);
	return -1;
}

int bench_scale(const struct bench_opts *o, struct bench_result *r)
{
	struct many *w = calloc(1, sizeof(*w));
	uint64_t hard = raise_nofile(), per_proc;
	uint32_t peers = o->peers;
	struct ctl done, res;

	if (!w)
		return bench_fail(r, "out of memory");
	if (hard < 2 * FD_SPARE) {
		free(w);
		return bench_fail(r, "RLIMIT_NOFILE is %llu: too low",
				  (unsigned long long)hard);
	}
	if (peers + FD_SPARE > hard) {
		peers = (uint32_t)(hard - FD_SPARE);
		fprintf(stderr, "pairmesh bench: scale: RLIMIT_NOFILE hard "
			"limit %llu: %u peers instead of %u\n",
			(unsigned long long)hard, peers, o->peers);
	}
	per_proc = (hard - FD_SPARE) / FDS_PER_NODE;
	if (peers / per_proc >= 64)
		per_proc = peers / 63;
	if (many_start(o, r, w, peers, (uint32_t)per_proc, true, &done) ||
	    many_run(o, r, w, bench_now_ns(), &res))
		goto out_kill;
	r->seconds = r->connect_s;
	r->msgs_per_s = peers / r->connect_s;
	r->rss_kib_per_peer = ((double)done.v[1] - (double)done.v[0]) / peers;
	free(w);
	return 0;
out_kill:
	kill_children(w->c, w->k);
	free(w);
	return -1;
}
