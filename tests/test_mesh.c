/* SPDX-License-Identifier: MIT */
/*
 * The mesh above pair streams, with in-process nodes pumped round-robin:
 * formation from a chain of seeds, broadcast exactly once, relaying,
 * unreachable destinations and relay backpressure. Every case runs once per
 * backend; every wait is bounded, nothing is timed.
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
#define MAX_NODES	16
#define RING		(64 * KiB)
#define MAX_MSG		(16 * KiB)
#define BC_PER_ORIGIN	100	/* more than the 64-wide window */
#define RELAY_MSGS	1000
#define BP_LEN		KiB
#define BP_STALL_ROUNDS	300	/* idle rounds meaning "stopped" */
#define BP_DEADLINE_MS	30000

struct mesh {
	struct tl_node *v[MAX_NODES];
	size_t k;
};

enum {
	NO_AUTO_CONNECT = 1 << 0,
	NO_LIVENESS = 1 << 1,	/* an unrun node is not closed as dead */
};

/* Small slabs and rings: sixteen nodes in one process stay cheap. */
static void mesh_config(struct pm_config *c, unsigned flags)
{
	tl_config(c);
	c->max_peers = 32;
	c->ring_size = RING;
	c->max_message = MAX_MSG;
	c->no_auto_connect = flags & NO_AUTO_CONNECT;
	if (flags & NO_LIVENESS) {
		c->keepalive_ms = 0;
		c->dead_ms = 0;
	}
}

static void mesh_new(struct mesh *m, size_t k, unsigned flags)
{
	struct pm_config c;

	assert_true(k <= MAX_NODES);
	memset(m, 0, sizeof(*m));
	mesh_config(&c, flags);
	for (m->k = 0; m->k < k; m->k++)
		m->v[m->k] = tl_node_new(&c);
}

static void mesh_free(struct mesh *m)
{
	for (size_t i = 0; i < m->k; i++)
		tl_node_free(m->v[i]);
	m->k = 0;
}

static void stats(const struct tl_node *t, struct pm_stats *st)
{
	memset(st, 0xa5, sizeof(*st));
	pm_node_stats(t->n, st);
}

static void dial(struct tl_node *a, struct tl_node *b)
{
	struct pm_stream s;

	assert_int_equal(pm_connect(a->n, b->addr, &s), 0);
	assert_true(s.h != 0);
}

/* What t knows of id: 0 and *info filled, or -ENOENT. */
static int peer_info(struct tl_node *t, uint64_t id, struct pm_peer_info *out)
{
	struct pm_peer_info info[MAX_NODES * 2];
	int k = pm_mesh_peers(t->n, info, NV(info));

	assert_true(k >= 0);
	for (int i = 0; i < k && i < (int)NV(info); i++) {
		if (info[i].id == id) {
			*out = info[i];
			return 0;
		}
	}
	return -ENOENT;
}

static bool reachable_in(struct tl_node *t, uint64_t id, uint32_t hops,
			 uint64_t via)
{
	struct pm_peer_info p;

	return peer_info(t, id, &p) == 0 && p.reachable && p.hops == hops &&
	       p.via == via;
}

/*
 * Every node has a live stream to each other node and knows k - 1
 * members, and the kernel holds exactly k(k-1)/2 connections among the
 * listeners. Together that is "every pair connected exactly once": each
 * pair needs one connection for its two live ends, so k(k-1)/2 in all
 * leaves none for a second one. (In one process the kernel's table cannot
 * tell which node dialled, so a per-pair count would need this argument.)
 */
static bool full_mesh(void *arg)
{
	const struct mesh *m = arg;
	uint16_t ports[MAX_NODES];
	struct pm_peer_info p;
	struct pm_stats st;
	size_t i, j;

	for (i = 0; i < m->k; i++) {
		stats(m->v[i], &st);
		if (st.peers_live != m->k - 1 || st.mesh_nodes != m->k - 1)
			return false;
	}
	for (i = 0; i < m->k; i++) {
		for (j = 0; j < m->k; j++) {
			if (i == j)
				continue;
			if (peer_info(m->v[i], m->v[j]->id, &p) || !p.direct ||
			    !p.reachable || p.hops != 1)
				return false;
		}
		ports[i] = m->v[i]->port;
	}
	return tl_tcp_established(ports, m->k) == (int)(m->k * (m->k - 1) / 2);
}

static void print_mesh(const struct mesh *m)
{
	uint16_t ports[MAX_NODES];
	struct pm_stats st;

	for (size_t i = 0; i < m->k; i++) {
		stats(m->v[i], &st);
		print_message("node %zu: peers_live %llu mesh_nodes %llu "
			      "conns_open %llu dup_closed %llu\n", i,
			      (unsigned long long)st.peers_live,
			      (unsigned long long)st.mesh_nodes,
			      (unsigned long long)st.conns_open,
			      (unsigned long long)st.duplicates_closed);
		ports[i] = m->v[i]->port;
	}
	print_message("established among listeners: %d (want %zu)\n",
		      tl_tcp_established(ports, m->k), m->k * (m->k - 1) / 2);
}

/* Node i dials node i - 1 only; auto-connect must do the rest. */
static void formation(size_t k)
{
	struct mesh m;
	size_t i;

	mesh_new(&m, k, 0);
	for (i = 1; i < k; i++)
		dial(m.v[i], m.v[i - 1]);
	if (!tl_pump(m.v, k, full_mesh, &m, 3 * TL_DEADLINE_MS)) {
		print_mesh(&m);
		fail_msg("%zu nodes from a chain of seeds: no full mesh", k);
	}
	/* Stable, not a passing state: no late duplicate shows up. */
	tl_settle(m.v, k, 200);
	if (!full_mesh(&m)) {
		print_mesh(&m);
		fail_msg("%zu nodes: the full mesh did not last", k);
	}
	mesh_free(&m);
}

static void test_mesh_formation_4(void **state)
{
	tl_begin();
	formation(4);
}

static void test_mesh_formation_16(void **state)
{
	tl_begin();
	formation(16);
}

/* Broadcasts seen by one node: copies per (origin, number). */
struct bc_rec {
	const struct mesh *m;
	size_t self;		/* index in the ring */
	unsigned count[2][BC_PER_ORIGIN];
	unsigned bad;		/* wrong flags, origin, stream, payload */
};

struct bc_msg {
	uint32_t origin;	/* index 0 or 1 into the test's origins */
	uint32_t num;
	uint64_t origin_id;
};

static int bc_hook(struct tl_node *t, const struct pm_message *m)
{
	struct bc_rec *r = t->hook_arg;
	struct bc_msg b;
	uint64_t last;

	if (m->len != sizeof(b)) {
		r->bad++;
		return 0;
	}
	memcpy(&b, m->data, sizeof(b));
	/* It came from a ring neighbour, over at most k - 2 relays. */
	if (!(m->flags & PM_MSG_BROADCAST) || (m->flags & PM_MSG_ROUTED) ||
	    b.origin > 1 || b.num >= BC_PER_ORIGIN ||
	    b.origin_id != m->peer_id || m->hops > r->m->k - 2 ||
	    pm_stream_peer_id(t->n, m->stream, &last) ||
	    (last != r->m->v[(r->self + 1) % r->m->k]->id &&
	     last != r->m->v[(r->self + r->m->k - 1) % r->m->k]->id)) {
		r->bad++;
		return 0;
	}
	r->count[b.origin][b.num]++;
	return 0;
}

static bool ring_ready(void *arg)
{
	const struct mesh *m = arg;
	struct pm_stats st;

	for (size_t i = 0; i < m->k; i++) {
		stats(m->v[i], &st);
		if (st.peers_live != 2 || st.mesh_nodes != m->k - 1)
			return false;
	}
	return true;
}

struct bc_done {
	const struct mesh *m;
	uint64_t want[MAX_NODES];
};

static bool bc_all_seen(void *arg)
{
	const struct bc_done *d = arg;

	for (size_t i = 0; i < d->m->k; i++)
		if (d->m->v[i]->msgs_seen < d->want[i])
			return false;
	return true;
}

static void test_mesh_broadcast_ring(void **state)
{
	const size_t k = 6, origin[2] = { 0, 3 };
	struct bc_rec rec[6];
	struct bc_done done;
	uint64_t dups = 0;
	struct pm_stats st;
	struct mesh m;
	size_t i, o;
	uint32_t num;

	tl_begin();
	mesh_new(&m, k, NO_AUTO_CONNECT);
	memset(rec, 0, sizeof(rec));
	for (i = 0; i < k; i++) {
		rec[i].m = &m;
		rec[i].self = i;
		m.v[i]->hook = bc_hook;
		m.v[i]->hook_arg = &rec[i];
		m.v[i]->nolog = true;
	}
	for (i = 0; i < k; i++)
		dial(m.v[i], m.v[(i + 1) % k]);
	assert_true(tl_pump(m.v, k, ring_ready, &m, TL_DEADLINE_MS));

	for (num = 0; num < BC_PER_ORIGIN; num++) {
		for (o = 0; o < 2; o++) {
			struct tl_node *t = m.v[origin[o]];
			struct bc_msg b = { (uint32_t)o, num, t->id };
			int rc;

			/* -EAGAIN queues nothing: retry until it fits. */
			while ((rc = pm_broadcast(t->n, &b, sizeof(b))) ==
			       -EAGAIN)
				tl_settle(m.v, k, 1);
			assert_int_equal(rc, 2);
		}
		tl_settle(m.v, k, 1);
	}
	for (i = 0; i < k; i++)
		done.want[i] = i == origin[0] || i == origin[1] ?
			       BC_PER_ORIGIN : 2 * BC_PER_ORIGIN;
	done.m = &m;
	assert_true(tl_pump(m.v, k, bc_all_seen, &done, TL_DEADLINE_MS));
	/* Let every second copy arrive (and be dropped). */
	tl_settle(m.v, k, 200);

	for (i = 0; i < k; i++) {
		assert_int_equal(rec[i].bad, 0);
		assert_int_equal(m.v[i]->msgs_seen, done.want[i]);
		for (o = 0; o < 2; o++) {
			for (num = 0; num < BC_PER_ORIGIN; num++) {
				unsigned want = i == origin[o] ? 0 : 1;

				if (rec[i].count[o][num] != want)
					fail_msg("node %zu got broadcast "
						 "%u of origin %zu %u times",
						 i, num, origin[o],
						 rec[i].count[o][num]);
			}
		}
		stats(m.v[i], &st);
		dups += st.duplicates_dropped;
	}
	/* In a ring every broadcast meets itself: the window dropped it. */
	assert_true(dups > 0);
	mesh_free(&m);
}

/* Routed messages checked in order as they arrive. */
struct route_check {
	uint64_t from;
	uint64_t via;		/* the last relay */
	uint32_t hops;
	size_t len;		/* 0: length i % 200 + 8 */
	bool broadcast;		/* PM_MSG_BROADCAST, not PM_MSG_ROUTED */
	uint64_t next;
	uint64_t bad;
	uint64_t first_bad;
};

static size_t route_len(const struct route_check *c, uint64_t i)
{
	return c->len ? c->len : (size_t)(i % 200) + 8;
}

static int route_hook(struct tl_node *t, const struct pm_message *m)
{
	struct route_check *c = t->hook_arg;
	uint64_t last = 0;

	uint32_t want = c->broadcast ? PM_MSG_BROADCAST : PM_MSG_ROUTED;

	pm_stream_peer_id(t->n, m->stream, &last);
	if (m->peer_id != c->from ||
	    (m->flags & (PM_MSG_ROUTED | PM_MSG_BROADCAST)) != want ||
	    last != c->via ||
	    m->hops != c->hops || m->len != route_len(c, c->next) ||
	    !tl_msg_ok(m->data, m->len, c->next)) {
		if (!c->bad++)
			c->first_bad = c->next;
	}
	c->next++;
	return 0;
}

/* a - b - c, no auto-connect: a reaches c only through b. */
static void chain(struct mesh *m, unsigned flags)
{
	mesh_new(m, 3, NO_AUTO_CONNECT | flags);
	dial(m->v[1], m->v[0]);
	dial(m->v[2], m->v[1]);
}

struct chain_ready {
	struct tl_node *a, *b, *c;
};

static bool chain_routes(void *arg)
{
	const struct chain_ready *w = arg;

	return reachable_in(w->a, w->c->id, 2, w->b->id) &&
	       reachable_in(w->c, w->a->id, 2, w->b->id);
}

static void wait_chain(struct mesh *m)
{
	struct chain_ready w = { m->v[0], m->v[1], m->v[2] };

	assert_true(tl_pump(m->v, m->k, chain_routes, &w, TL_DEADLINE_MS));
}

/* pm_send_to, pumping v while the next hop is full. */
static int send_to_retry(struct tl_node *const *v, size_t k,
			 struct tl_node *t, uint64_t id, const void *buf,
			 size_t len)
{
	int rc;

	for (int tries = 0; tries < 100000; tries++) {
		rc = pm_send_to(t->n, id, buf, len);
		if (rc != -EAGAIN)
			return rc;
		tl_settle(v, k, 1);
	}
	return rc;
}

/* Flags and hops of the messages a node got, for direct sends. */
struct direct_check {
	uint32_t flags, hops;	/* ORed over all */
};

static int direct_hook(struct tl_node *t, const struct pm_message *m)
{
	struct direct_check *d = t->hook_arg;

	d->flags |= m->flags;
	d->hops |= m->hops;
	return 0;
}

static void test_mesh_relay_chain(void **state)
{
	struct direct_check direct = { 0 };
	struct route_check chk = { 0 };
	unsigned char buf[256];
	struct pm_peer_info p;
	struct tl_node *a, *b, *c;
	struct pm_stats st;
	uint64_t i, relayed0, sent0, got0;
	uint16_t ports[3];
	struct mesh m;

	tl_begin();
	chain(&m, 0);
	a = m.v[0];
	b = m.v[1];
	c = m.v[2];
	wait_chain(&m);
	/* No auto-connect: a and c never met. */
	assert_int_equal(peer_info(a, c->id, &p), 0);
	assert_false(p.direct);
	stats(a, &st);
	assert_int_equal(st.peers_live, 1);
	assert_int_equal(st.mesh_nodes, 2);
	assert_true(st.route_changes >= 1);
	for (i = 0; i < 3; i++)
		ports[i] = m.v[i]->port;
	assert_int_equal(tl_tcp_established(ports, 3), 2);

	stats(a, &st);
	sent0 = st.msgs_out;
	stats(c, &st);
	got0 = st.msgs_in;
	stats(b, &st);
	relayed0 = st.relayed;
	chk.from = a->id;
	chk.via = b->id;
	chk.hops = 1;	/* relays crossed */
	c->hook = route_hook;
	c->hook_arg = &chk;
	c->nolog = true;
	for (i = 0; i < RELAY_MSGS; i++) {
		tl_make_msg(buf, i, route_len(&chk, i));
		assert_int_equal(send_to_retry(m.v, 3, a, c->id, buf,
					       route_len(&chk, i)), 0);
	}
	assert_true(tl_wait_msgs(m.v, 3, c, RELAY_MSGS));
	tl_settle(m.v, 3, 50);
	if (chk.bad)
		fail_msg("%llu routed messages wrong (flags, hops, origin, "
			 "order or bytes), first #%llu",
			 (unsigned long long)chk.bad,
			 (unsigned long long)chk.first_bad);
	assert_int_equal(chk.next, RELAY_MSGS);
	assert_int_equal(b->msgs_seen, 0);
	/* Routed messages count as the user's, at both ends. */
	stats(a, &st);
	assert_true(st.msgs_out - sent0 == RELAY_MSGS);
	stats(c, &st);
	assert_true(st.msgs_in - got0 == RELAY_MSGS);
	stats(b, &st);
	assert_true(st.relayed - relayed0 >= RELAY_MSGS);
	assert_int_equal(st.dropped_no_route, 0);
	assert_int_equal(peer_info(b, c->id, &p), 0);
	assert_true(p.direct && p.relayed >= RELAY_MSGS);

	/* To a neighbour the send is direct: no relay, no flag. */
	b->hook = direct_hook;
	b->hook_arg = &direct;
	assert_int_equal(send_to_retry(m.v, 3, a, b->id, "hi b", 4), 0);
	assert_true(tl_wait_msgs(m.v, 3, b, 1));
	assert_int_equal(b->nmsgs, 1);
	assert_memory_equal(tl_msg_data(b, 0), "hi b", 4);
	assert_true(b->msgs[0].peer_id == a->id);
	assert_int_equal(pm_stream_peer_id(b->n, b->msgs[0].stream, &i), 0);
	assert_true(i == a->id);
	assert_int_equal(direct.flags, 0);
	assert_int_equal(direct.hops, 0);

	/* Nobody has heard of this id. */
	assert_int_equal(pm_send_to(a->n, 0x0123456789abcdefull, "?", 1),
			 -EHOSTUNREACH);
	assert_int_equal(pm_send_to(c->n, 0x0123456789abcdefull, "?", 1),
			 -EHOSTUNREACH);
	mesh_free(&m);
}

/* Keeps a sending to id until it hears the destination is unreachable. */
struct unreach_wait {
	struct tl_node *a;
	uint64_t id;
	bool enoroute;		/* pm_send_to said -EHOSTUNREACH */
	uint64_t sent;
	int other;		/* an unexpected return, or 0 */
};

static bool a_knows_unreachable(void *arg)
{
	struct unreach_wait *w = arg;
	struct pm_stats st;
	int rc;

	rc = pm_send_to(w->a->n, w->id, "still there?", 12);
	if (rc == 0)
		w->sent++;
	else if (rc == -EHOSTUNREACH)
		w->enoroute = true;
	else if (rc != -EAGAIN)
		w->other = rc;
	stats(w->a, &st);
	return w->other || w->enoroute || st.unreachable > 0;
}

static bool no_route(void *arg)
{
	struct unreach_wait *w = arg;

	return pm_send_to(w->a->n, w->id, "x", 1) == -EHOSTUNREACH;
}

static void check_unreachable_events(struct tl_node *a, uint64_t id)
{
	const struct tl_event *ev;
	struct pm_stats st;
	size_t i, n = 0;

	for (i = 0; i < a->nevs; i++) {
		ev = &a->evs[i];
		if (ev->ev.type != PM_EV_UNREACHABLE)
			continue;
		assert_true(ev->ev.peer_id == id);
		assert_int_equal(ev->ev.error, -EHOSTUNREACH);
		n++;
	}
	stats(a, &st);
	if (!a->log_full)
		assert_int_equal(st.unreachable, n);
}

static void test_mesh_unreachable_after_loss(void **state)
{
	struct unreach_wait w = { 0 };
	struct tl_node *a, *c;
	struct mesh m;

	tl_begin();
	chain(&m, 0);
	a = m.v[0];
	c = m.v[2];
	wait_chain(&m);
	w.a = a;
	w.id = c->id;
	/* Traffic is on its way when the destination goes. */
	for (int i = 0; i < 20; i++)
		assert_true(a_knows_unreachable(&w) == false);
	tl_node_kill(c);
	assert_true(tl_pump(m.v, 3, a_knows_unreachable, &w, TL_DEADLINE_MS));
	assert_int_equal(w.other, 0);
	/* And in the end the route itself is gone. */
	assert_true(tl_pump(m.v, 3, no_route, &w, TL_DEADLINE_MS));
	check_unreachable_events(a, c->id);
	mesh_free(&m);
}

struct b_lost_c {
	struct tl_node *b;
};

static bool b_alone_with_a(void *arg)
{
	struct b_lost_c *w = arg;
	struct pm_stats st;

	stats(w->b, &st);
	return st.peers_live == 1;
}

static bool a_got_unreachable(void *arg)
{
	struct tl_node *a = arg;
	struct pm_stats st;

	stats(a, &st);
	return st.unreachable > 0;
}

/*
 * The relay, not the origin, finds there is no way on: a sends to c before
 * it heard that b lost c, so b must send UNREACH back and a must raise
 * PM_EV_UNREACHABLE. Deterministic: a is not run until it has sent.
 */
static void test_mesh_unreachable_from_relay(void **state)
{
	struct b_lost_c w;
	struct tl_node *a, *b, *c, *ab[2];
	const struct tl_event *ev;
	struct pm_stats st;
	uint64_t relayed0;
	struct mesh m;

	tl_begin();
	chain(&m, 0);
	a = m.v[0];
	b = m.v[1];
	c = m.v[2];
	wait_chain(&m);
	stats(b, &st);
	relayed0 = st.relayed;	/* LINKS floods count as relayed too */
	tl_node_kill(c);
	w.b = b;
	assert_true(tl_pump(&b, 1, b_alone_with_a, &w, TL_DEADLINE_MS));
	/* a still believes in its route through b. */
	assert_int_equal(pm_send_to(a->n, c->id, "too late", 8), 0);
	ab[0] = a;
	ab[1] = b;
	assert_true(tl_pump(ab, 2, a_got_unreachable, a, TL_DEADLINE_MS));
	ev = tl_find_event(a, PM_EV_UNREACHABLE, (struct pm_stream){ 0 });
	assert_non_null(ev);
	assert_true(ev->ev.peer_id == c->id);
	assert_int_equal(ev->ev.error, -EHOSTUNREACH);
	stats(b, &st);
	assert_true(st.dropped_no_route >= 1);
	assert_true(st.relayed == relayed0);
	/* b's news reaches a as well: no route any more. */
	struct unreach_wait u = { .a = a, .id = c->id };

	assert_true(tl_pump(ab, 2, no_route, &u, TL_DEADLINE_MS));
	check_unreachable_events(a, c->id);
	mesh_free(&m);
}

/*
 * a sends routed messages while c is never run: b's ring toward c fills,
 * b must pause a's stream (not buffer), and a must see -EAGAIN.
 */
struct bp_state {
	struct tl_node *a, *b, *c;
	unsigned char buf[BP_LEN];
	uint64_t sent;
	uint64_t relayed0;	/* b's before: LINKS floods count too */
	uint64_t relayed;	/* b's, at the last change */
	unsigned idle;		/* rounds since a sent or b relayed */
	bool broadcast;		/* pm_broadcast, else pm_send_to */
	int other;
};

static bool bp_stalled(void *arg)
{
	struct bp_state *s = arg;
	struct pm_stats st;
	bool moved = false;
	int rc;

	for (;;) {
		tl_make_msg(s->buf, s->sent, BP_LEN);
		if (s->broadcast)
			rc = pm_broadcast(s->a->n, s->buf, BP_LEN);
		else
			rc = pm_send_to(s->a->n, s->c->id, s->buf, BP_LEN);
		if (rc < 0)
			break;
		s->sent++;
		moved = true;
	}
	if (rc != -EAGAIN) {
		s->other = rc;
		return true;
	}
	stats(s->b, &st);
	if (st.relayed != s->relayed) {
		s->relayed = st.relayed;
		moved = true;
	}
	s->idle = moved ? 0 : s->idle + 1;
	return s->idle >= BP_STALL_ROUNDS;
}

/*
 * c stops reading. A broadcast is relayed hop by hop: b's ring toward c
 * fills, b pauses a's stream, a is refused. A routed message is also held
 * by a until c acknowledges it: a's window (its ring) fills first. Either
 * way nothing is buffered beyond the rings, and once c reads everything
 * arrives, once, in order.
 */
static void relay_backpressure(bool broadcast)
{
	struct route_check chk = { 0 };
	struct tl_node *ab[2];
	struct pm_stream bc;
	struct pm_stats st;
	struct bp_state *s;
	size_t rss0, rss1;
	struct mesh m;

	tl_begin();
	s = calloc(1, sizeof(*s));
	assert_non_null(s);
	s->broadcast = chk.broadcast = broadcast;
	chain(&m, NO_LIVENESS);
	s->a = m.v[0];
	s->b = m.v[1];
	s->c = m.v[2];
	wait_chain(&m);
	stats(s->b, &st);
	s->relayed0 = s->relayed = st.relayed;
	chk.from = s->a->id;
	chk.via = s->b->id;
	chk.hops = 1;
	chk.len = BP_LEN;
	s->c->hook = route_hook;
	s->c->hook_arg = &chk;
	s->c->nolog = true;
	ab[0] = s->a;
	ab[1] = s->b;

	rss0 = tl_rss_bytes();
	if (!tl_pump(ab, 2, bp_stalled, s, BP_DEADLINE_MS))
		fail_msg("a never stalled: %llu KiB sent, b relayed %llu",
			 (unsigned long long)(s->sent * BP_LEN / KiB),
			 (unsigned long long)(s->relayed - s->relayed0));
	assert_int_equal(s->other, 0);
	rss1 = tl_rss_bytes();
	print_message("stalled after %llu KiB sent, %llu relayed by b\n",
		      (unsigned long long)(s->sent * BP_LEN / KiB),
		      (unsigned long long)(s->relayed - s->relayed0));
	assert_true(s->sent > 0);
	if (broadcast)
		assert_true(s->relayed - s->relayed0 < s->sent);
	if (rss1 > rss0 && rss1 - rss0 > 64 * MiB)
		fail_msg("RSS grew by %zu MiB while c did not read",
			 (rss1 - rss0) / MiB);
	/* b holds at most one ring toward c: it paused, it did not store. */
	assert_int_equal(pm_stream_by_id(s->b->n, s->c->id, &bc), 0);
	assert_true(pm_stream_queued(s->b->n, bc) <= RING);
	/* Still paused: more turns move nothing and a is still refused. */
	tl_settle(ab, 2, 200);
	stats(s->b, &st);
	assert_int_equal(st.dropped_no_route, 0);
	assert_int_equal(st.dropped_hop_limit, 0);
	assert_true(st.relayed == s->relayed);
	if (broadcast)
		assert_int_equal(pm_broadcast(s->a->n, s->buf, BP_LEN),
				 -EAGAIN);
	else
		assert_int_equal(pm_send_to(s->a->n, s->c->id, s->buf,
					    BP_LEN), -EAGAIN);

	/* c reads at last: everything arrives, once, in order. */
	assert_true(tl_wait_msgs(m.v, 3, s->c, s->sent));
	tl_settle(m.v, 3, 50);
	if (chk.bad)
		fail_msg("%llu routed messages wrong or out of order, first "
			 "#%llu", (unsigned long long)chk.bad,
			 (unsigned long long)chk.first_bad);
	assert_int_equal(chk.next, s->sent);
	if (broadcast) {
		stats(s->b, &st);
		assert_true(st.relayed - s->relayed0 == s->sent);
	} else {
		/* a may have gone back while c did not read (it cannot tell
		 * a slow reader from a loss beyond b): b relayed each message
		 * at least once, and c dropped exactly the extra copies it
		 * got (read c first: b may have relayed more since). */
		struct pm_stats cs;

		stats(s->c, &cs);
		stats(s->b, &st);
		assert_true(st.relayed - s->relayed0 >= s->sent);
		assert_true(cs.duplicates_dropped <=
			    st.relayed - s->relayed0 - s->sent);
	}
	mesh_free(&m);
	free(s);
}

static void test_mesh_relay_backpressure_broadcast(void **state)
{
	relay_backpressure(true);
}

static void test_mesh_relay_backpressure_routed(void **state)
{
	relay_backpressure(false);
}

/*
 * a - b - c and a - d - c, no auto-connect: a reaches c through b or d.
 * a sends routed messages; the relay they go through dies abruptly with a
 * burst of them in flight. a must send them again through the other relay:
 * c gets every message once, in order, and a reports nothing unsent.
 */
struct diamond_check {
	uint64_t from, relay1, relay2;
	uint64_t next, bad, first_bad;
};

static int diamond_hook(struct tl_node *t, const struct pm_message *m)
{
	struct diamond_check *c = t->hook_arg;
	uint64_t last = 0;

	pm_stream_peer_id(t->n, m->stream, &last);
	if (m->peer_id != c->from || !(m->flags & PM_MSG_ROUTED) ||
	    (last != c->relay1 && last != c->relay2) || m->hops != 1 ||
	    m->len != (size_t)(c->next % 200) + 8 ||
	    !tl_msg_ok(m->data, m->len, c->next)) {
		if (!c->bad++)
			c->first_bad = c->next;
	}
	c->next++;
	return 0;
}

struct diamond_ready {
	struct tl_node *a, *c;
};

static bool diamond_routes(void *arg)
{
	const struct diamond_ready *w = arg;
	struct pm_peer_info p;

	return peer_info(w->a, w->c->id, &p) == 0 && p.reachable &&
	       p.hops == 2 && peer_info(w->c, w->a->id, &p) == 0 &&
	       p.reachable && p.hops == 2;
}

#define DIAMOND_MSGS	1500
#define DIAMOND_BURST	300	/* sent, then the relay dies unrun */

static void test_mesh_relay_killed_alternative_path(void **state)
{
	struct diamond_check chk = { 0 };
	unsigned char buf[256];
	struct tl_node *a, *c, *via, *alive[4];
	const struct tl_event *ev;
	struct pm_peer_info p;
	struct pm_stats st;
	struct mesh m;
	uint64_t i;
	size_t k = 0;
	int rc;

	tl_begin();
	mesh_new(&m, 4, NO_AUTO_CONNECT);
	a = m.v[0];
	c = m.v[2];
	dial(m.v[1], a);
	dial(m.v[3], a);
	dial(c, m.v[1]);
	dial(c, m.v[3]);
	struct diamond_ready w = { a, c };

	assert_true(tl_pump(m.v, m.k, diamond_routes, &w, TL_DEADLINE_MS));
	chk.from = a->id;
	chk.relay1 = m.v[1]->id;
	chk.relay2 = m.v[3]->id;
	c->hook = diamond_hook;
	c->hook_arg = &chk;
	c->nolog = true;
	for (i = 0; i < DIAMOND_MSGS / 3; i++) {
		tl_make_msg(buf, i, (size_t)(i % 200) + 8);
		assert_int_equal(send_to_retry(m.v, m.k, a, c->id, buf,
					       (size_t)(i % 200) + 8), 0);
	}
	assert_true(tl_wait_msgs(m.v, m.k, c, i));

	/* A burst a's window holds, and the relay it went to dies unrun. */
	assert_int_equal(peer_info(a, c->id, &p), 0);
	via = p.via == m.v[1]->id ? m.v[1] : m.v[3];
	assert_true(p.via == via->id);
	for (uint64_t end = i + DIAMOND_BURST; i < end; i++) {
		tl_make_msg(buf, i, (size_t)(i % 200) + 8);
		assert_int_equal(pm_send_to(a->n, c->id, buf,
					    (size_t)(i % 200) + 8), 0);
	}
	tl_node_kill(via);
	for (size_t j = 0; j < m.k; j++)
		if (m.v[j] != via)
			alive[k++] = m.v[j];

	for (; i < DIAMOND_MSGS; i++) {
		tl_make_msg(buf, i, (size_t)(i % 200) + 8);
		rc = send_to_retry(alive, k, a, c->id, buf,
				   (size_t)(i % 200) + 8);
		if (rc)
			fail_msg("pm_send_to #%llu after the relay died: %s",
				 (unsigned long long)i, strerror(-rc));
	}
	if (!tl_wait_msgs(alive, k, c, DIAMOND_MSGS))
		fail_msg("c got %llu of %d messages",
			 (unsigned long long)chk.next, DIAMOND_MSGS);
	tl_settle(alive, k, 50);
	if (chk.bad)
		fail_msg("%llu routed messages wrong or out of order, first "
			 "#%llu", (unsigned long long)chk.bad,
			 (unsigned long long)chk.first_bad);
	assert_int_equal(chk.next, DIAMOND_MSGS);
	/* The burst was lost with the relay: a sent it again. */
	stats(a, &st);
	assert_true(st.route_retransmits >= 1);
	ev = tl_find_event(a, PM_EV_UNREACHABLE, (struct pm_stream){ 0 });
	assert_true(!ev || ev->ev.unsent == 0);
	assert_int_equal(peer_info(a, c->id, &p), 0);
	assert_true(p.reachable && p.via != via->id);
	mesh_free(&m);
}

/*
 * a - b - c: a sends routed messages to c, and c dies before reading any.
 * a holds them (c never acknowledged them); once c has been unreachable
 * for resume_ms, a gives up: one PM_EV_UNREACHABLE counts them all as
 * unsent, and with no route left pm_send_to says -EHOSTUNREACH.
 */
#define GIVE_UP_MSGS	25
#define GIVE_UP_RESUME_MS	300

struct give_up_wait {
	struct tl_node *a;
	const struct tl_event *ev;	/* the give-up: unsent > 0 */
};

static bool a_gave_up(void *arg)
{
	struct give_up_wait *w = arg;

	for (size_t i = 0; i < w->a->nevs; i++) {
		const struct tl_event *ev = &w->a->evs[i];

		if (ev->ev.type == PM_EV_UNREACHABLE && ev->ev.unsent) {
			w->ev = ev;
			return true;
		}
	}
	return false;
}

static void test_mesh_routed_give_up(void **state)
{
	struct give_up_wait w = { 0 };
	struct tl_node *a, *c, *ab[2];
	struct pm_config cfg;
	struct mesh m;
	char msg[32];

	tl_begin();
	memset(&m, 0, sizeof(m));
	mesh_config(&cfg, NO_AUTO_CONNECT);
	cfg.resume_ms = GIVE_UP_RESUME_MS;
	for (m.k = 0; m.k < 3; m.k++)
		m.v[m.k] = tl_node_new(&cfg);
	dial(m.v[1], m.v[0]);
	dial(m.v[2], m.v[1]);
	a = m.v[0];
	c = m.v[2];
	wait_chain(&m);
	for (int i = 0; i < GIVE_UP_MSGS; i++) {
		snprintf(msg, sizeof(msg), "held %d", i);
		assert_int_equal(pm_send_to(a->n, c->id, msg, strlen(msg)), 0);
	}
	tl_node_kill(c);	/* before it read any of them */
	ab[0] = a;
	ab[1] = m.v[1];
	w.a = a;
	assert_true(tl_pump(ab, 2, a_gave_up, &w, TL_DEADLINE_MS));
	assert_true(w.ev->ev.peer_id == c->id);
	assert_int_equal(w.ev->ev.error, -EHOSTUNREACH);
	assert_int_equal(w.ev->ev.unsent, GIVE_UP_MSGS);
	assert_int_equal(c->nmsgs, 0);
	assert_int_equal(pm_send_to(a->n, c->id, "x", 1), -EHOSTUNREACH);
	check_unreachable_events(a, c->id);
	mesh_free(&m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_mesh_broadcast_ring),
		cmocka_unit_test(test_mesh_formation_16),
		cmocka_unit_test(test_mesh_formation_4),
		cmocka_unit_test(test_mesh_relay_backpressure_broadcast),
		cmocka_unit_test(test_mesh_relay_killed_alternative_path),
		cmocka_unit_test(test_mesh_routed_give_up),
		cmocka_unit_test(test_mesh_relay_backpressure_routed),
		cmocka_unit_test(test_mesh_relay_chain),
		cmocka_unit_test(test_mesh_unreachable_after_loss),
		cmocka_unit_test(test_mesh_unreachable_from_relay),
	};
	int failed;

	failed = cmocka_run_group_tests_name("mesh/io_uring", tests,
					     tl_setup_io_uring, tl_teardown);
	failed += cmocka_run_group_tests_name("mesh/epoll", tests,
					      tl_setup_epoll, tl_teardown);
	return failed ? 1 : 0;
}
