/* SPDX-License-Identifier: MIT */
/*
 * The scenarios of `pairmesh bench` that send by node id: relay (A -> B ->
 * C against A -> C) and mesh (every node to every other).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

#define MESH_STABLE_MS	300

static int64_t run_ms(const struct bench_opts *o)
{
	return (int64_t)(o->seconds * 1e3) + BENCH_SETUP_MS + BENCH_GRACE_MS;
}

static void id_config(struct pm_config *c, const struct bench_opts *o,
		      uint32_t min_ring)
{
	uint32_t max = (uint32_t)o->size + 64;

	bench_config(c, o, bench_ring(o->size, min_ring),
		     max > (256u << 10) ? max : 256u << 10);
}

/* True when n knows a route to id. */
static bool reachable(struct pm_node *n, uint64_t id)
{
	struct pm_peer_info info[8];
	int k = pm_mesh_peers(n, info, 8);

	for (int i = 0; i < k && i < 8; i++)
		if (info[i].id == id)
			return info[i].reachable;
	return false;
}

/* Waits for the stream to addr to be live, or fails the child. */
static void dial_wait(int fd, struct pm_node *n, const char *addr)
{
	int64_t end = bench_now_ns() + (int64_t)BENCH_SETUP_MS * 1000000;
	struct pm_stream s;
	uint64_t id;
	int r = pm_connect(n, addr, &s);

	if (r)
		child_fail(fd, "pm_connect %s: %s", addr, strerror(-r));
	while ((r = pm_stream_peer_id(n, s, &id)) == -EAGAIN &&
	       bench_now_ns() < end)
		pm_node_run(n, 100);
	if (r)
		child_fail(fd, "no connection to %s: %s", addr, strerror(-r));
}

/* Relay. C: the sink; arg is the hop count its messages must show. */
static void relay_sink_child(int fd, const struct bench_opts *o, void *arg)
{
	struct seq_sink s;
	struct pm_config c;
	struct pm_node *n;
	struct ctl m;

	sink_init(&s, o->size);
	s.want_hops = (int)(intptr_t)arg;
	id_config(&c, o, 1u << 20);
	c.max_peers = 4;
	c.no_auto_connect = true;	/* keep the chain a chain */
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

/* B: dials the address it is given and relays. */
static void relay_mid_child(int fd, const struct bench_opts *o, void *arg)
{
	struct pm_config c;
	struct pm_node *n;
	struct ctl m;

	(void)arg;
	id_config(&c, o, 1u << 20);
	c.max_peers = 4;
	c.no_auto_connect = true;
	n = child_node(fd, &c);
	child_ready(fd, n);
	child_wait(fd, &n, 1, &m);
	if (m.type != CTL_PEER)
		child_fail(fd, "unexpected message %u", m.type);
	m.addr[sizeof(m.addr) - 1] = 0;
	dial_wait(fd, n, m.addr);
	child_ready(fd, n);
	child_wait(fd, &n, 1, &m);
	child_fail(fd, "unexpected message %u", m.type);
}

/* A: dials the address it is given, then sends to the id it is given. */
static void relay_src_child(int fd, const struct bench_opts *o, void *arg)
{
	struct ctl m, done = { .type = CTL_DONE };
	struct pm_config c;
	struct pm_node *n;
	uint8_t *buf = calloc(1, o->size), marker[BENCH_MARKER_LEN];
	uint64_t seq = 0, dst;
	int64_t end;
	int r = 0;

	(void)arg;
	if (!buf)
		child_fail(fd, "out of memory");
	id_config(&c, o, 1u << 20);
	c.max_peers = 4;
	c.no_auto_connect = true;
	n = child_node(fd, &c);
	if (ctl_recv(fd, &m, BENCH_SETUP_MS) || m.type != CTL_PEER)
		child_fail(fd, "no peer address");
	m.addr[sizeof(m.addr) - 1] = 0;
	dst = m.id;
	dial_wait(fd, n, m.addr);
	/* Through B, the route is known once B's LINKS and C's arrived. */
	end = bench_now_ns() + (int64_t)BENCH_SETUP_MS * 1000000;
	while (!reachable(n, dst) && bench_now_ns() < end)
		pm_node_run(n, 10);
	if (!reachable(n, dst))
		child_fail(fd, "no route to %016llx", (unsigned long long)dst);
	child_ready(fd, n);
	done.t0 = bench_now_ns();
	end = done.t0 + (int64_t)(o->seconds * 1e9);
	/* As the throughput sender: the loop runs when the ring is full. */
	while ((seq & 63) || bench_now_ns() < end) {
		msg_fill(buf, o->size, seq, 0);
		r = pm_send_to(n, dst, buf, o->size);
		if (r == -EAGAIN) {
			pm_node_run(n, 100);
			continue;
		}
		if (r)
			child_fail(fd, "pm_send_to: %s", strerror(-r));
		seq++;
	}
	msg_marker(marker, seq);
	while ((r = pm_send_to(n, dst, marker, sizeof(marker))) == -EAGAIN)
		pm_node_run(n, 10);
	if (r)
		child_fail(fd, "pm_send_to: %s", strerror(-r));
	free(buf);
	done.v[0] = seq;
	child_send(fd, &done);
	child_wait(fd, &n, 1, &m);
	child_fail(fd, "unexpected message %u", m.type);
}

/* One run, relayed or direct. Returns msgs/s, or -1 into r. */
static double relay_run(const struct bench_opts *o, struct bench_result *r,
			bool relay)
{
	/* The hop count a message delivered through one relay reports. */
	static const intptr_t relay_hops = 1;
	struct child c[3] = { 0 };	/* C, A, B */
	struct ctl mc, mb, m, done, res;
	const char *what = relay ? "relay" : "direct";
	size_t k = relay ? 3 : 2;

	if (child_spawn(&c[0], "C (sink)", relay_sink_child, o,
			(void *)(relay ? relay_hops : 0)) ||
	    child_spawn(&c[1], "A (source)", relay_src_child, o, NULL) ||
	    (relay && child_spawn(&c[2], "B (relay)", relay_mid_child, o,
				  NULL))) {
		bench_fail(r, "fork: %s", strerror(errno));
		goto out_kill;
	}
	if (expect_msg(&c[0], CTL_READY, &mc, BENCH_SETUP_MS, r))
		goto out_kill;
	snprintf(r->engine, sizeof(r->engine), "%.15s", mc.text);
	m = mc;
	m.type = CTL_PEER;
	if (relay) {
		if (expect_msg(&c[2], CTL_READY, &mb, BENCH_SETUP_MS, r) ||
		    send_msg(&c[2], &m, r) ||
		    expect_msg(&c[2], CTL_READY, &mb, 2 * BENCH_SETUP_MS, r))
			goto out_kill;
		memcpy(m.addr, mb.addr, sizeof(m.addr));
	}
	if (send_msg(&c[1], &m, r) ||
	    expect_msg(&c[1], CTL_READY, &m, 3 * BENCH_SETUP_MS, r))
		goto out_kill;
	bench_progress("relay: %s, %.1f s", what, o->seconds);
	if (expect_msg(&c[1], CTL_DONE, &done, (int)run_ms(o), r) ||
	    expect_msg(&c[0], CTL_RESULT, &res, BENCH_GRACE_MS, r) ||
	    sink_verify(&res, done.v[0], what, r) ||
	    stop_children(c, k, NULL, r))
		goto out_kill;
	r->seconds += (double)(res.t1 - done.t0) / 1e9;
	return (double)res.v[0] / ((double)(res.t1 - done.t0) / 1e9);
out_kill:
	kill_children(c, k);
	return -1;
}

int bench_relay(const struct bench_opts *o, struct bench_result *r)
{
	double direct, relayed;

	direct = relay_run(o, r, false);
	if (direct < 0)
		return -1;
	relayed = relay_run(o, r, true);
	if (relayed < 0)
		return -1;
	r->msgs_per_s = relayed;
	r->mb_per_s = relayed * (double)o->size / 1e6;
	r->direct_msgs_per_s = direct;
	r->ratio = relayed / direct;
	return 0;
}

/* Mesh: every node sends to every other, round-robin, by id. */

struct mesh_node {
	struct pm_node *n;
	uint32_t me, k;
	size_t size;
	uint64_t ids[BENCH_MAX_NODES];
	uint64_t sent[BENCH_MAX_NODES];
	uint64_t next[BENCH_MAX_NODES];	/* per origin */
	uint64_t recv;
	int64_t last_ns;
	bool running;			/* closes now count as failures */
	bool bad;
	char why[128];
};

__attribute__((format(printf, 2, 3)))
static void mesh_bad(struct mesh_node *mn, const char *fmt, ...)
{
	va_list ap;

	/* The first failure is the one worth reading. */
	if (mn->bad)
		return;
	va_start(ap, fmt);
	vsnprintf(mn->why, sizeof(mn->why), fmt, ap);
	va_end(ap);
	mn->bad = true;
}

static int on_mesh_message(struct pm_node *n, const struct pm_message *m,
			   void *user)
{
	struct mesh_node *mn = user;
	uint32_t origin;
	uint64_t seq;

	(void)n;
	if (!msg_check(m->data, m->len, &seq, &origin) ||
	    m->len != mn->size || origin >= mn->k || origin == mn->me) {
		mesh_bad(mn, "a bad message from %016llx",
			 (unsigned long long)m->peer_id);
		return 0;
	}
	if (m->peer_id != mn->ids[origin])
		mesh_bad(mn, "node %u's messages come from %016llx", origin,
			 (unsigned long long)m->peer_id);
	else if (seq != mn->next[origin])
		mesh_bad(mn, "sequence gap from node %u: wanted %llu, got %llu "
			 "(%s)", origin, (unsigned long long)mn->next[origin],
			 (unsigned long long)seq,
			 m->hops ? "relayed" : "direct");
	mn->next[origin] = seq + 1;
	mn->recv++;
	mn->last_ns = bench_now_ns();
	return 0;
}

static void on_mesh_event(struct pm_node *n, const struct pm_event *ev,
			  void *user)
{
	struct mesh_node *mn = user;

	(void)n;
	if (ev->type == PM_EV_CLOSED && mn->running)
		mesh_bad(mn, "the stream to %016llx closed during the run "
			 "(%s, reason %s)", (unsigned long long)ev->peer_id,
			 strerror(-ev->error), pm_close_reason_str(ev->reason));
}

/* A stream to every other node, and no other socket (no handshake of a
 * duplicate still in flight). */
static bool mesh_complete(struct mesh_node *mn)
{
	struct pm_stream s;
	struct pm_stats st;

	for (uint32_t j = 0; j < mn->k; j++)
		if (j != mn->me && pm_stream_by_id(mn->n, mn->ids[j], &s))
			return false;
	pm_node_stats(mn->n, &st);
	return st.conns_open == mn->k - 1;
}

/* Formed once complete for MESH_STABLE_MS in a row: a duplicate dial
 * decided late by the pair rule shows up as an extra socket meanwhile. */
static bool mesh_formed(struct mesh_node *mn, int64_t end)
{
	int64_t since = 0;

	while (bench_now_ns() < end) {
		pm_node_run(mn->n, 10);
		if (!mesh_complete(mn))
			since = 0;
		else if (!since)
			since = bench_now_ns();
		else if (bench_now_ns() - since > MESH_STABLE_MS * 1000000LL)
			return true;
	}
	return false;
}

static void mesh_send(int fd, struct mesh_node *mn, const struct bench_opts *o,
		      int64_t end)
{
	uint8_t *buf = calloc(1, o->size);

	if (!buf)
		child_fail(fd, "out of memory");
	while (bench_now_ns() < end) {
		unsigned queued = 0;

		for (int round = 0; round < 16; round++) {
			for (uint32_t j = 0; j < mn->k; j++) {
				int r;

				if (j == mn->me)
					continue;
				msg_fill(buf, o->size, mn->sent[j], mn->me);
				r = pm_send_to(mn->n, mn->ids[j], buf, o->size);
				if (r == -EAGAIN)
					continue;	/* its turn comes */
				if (r)
					child_fail(fd, "pm_send_to: %s",
						   strerror(-r));
				mn->sent[j]++;
				queued++;
			}
		}
		pm_node_run(mn->n, queued ? 0 : 1);
		if (mn->bad)
			child_fail(fd, "%s", mn->why);
	}
	free(buf);
}

static void mesh_child(int fd, const struct bench_opts *o, void *arg)
{
	struct mesh_node *mn = calloc(1, sizeof(*mn));
	struct ctl m, out;
	struct pm_config c;
	int64_t end;

	if (!mn)
		child_fail(fd, "out of memory");
	mn->me = (uint32_t)(uintptr_t)arg;
	mn->k = o->nodes;
	mn->size = o->size;
	id_config(&c, o, 256u << 10);
	c.max_peers = o->nodes + 8;
	c.on_message = on_mesh_message;
	c.on_event = on_mesh_event;
	c.user = mn;
	mn->n = child_node(fd, &c);
	child_ready(fd, mn->n);
	/* Every member's id, then whom to dial (GO without t0). */
	for (;;) {
		child_wait(fd, &mn->n, 1, &m);
		if (m.type != CTL_PEER)
			break;
		if (m.v[0] < mn->k)
			mn->ids[m.v[0]] = m.id;
	}
	if (m.type != CTL_GO)
		child_fail(fd, "unexpected message %u", m.type);
	m.addr[sizeof(m.addr) - 1] = 0;
	if (m.addr[0])
		dial_wait(fd, mn->n, m.addr);
	end = bench_now_ns() + (int64_t)BENCH_SETUP_MS * 1000000 +
	      (int64_t)mn->k * 500000000;
	if (!mesh_formed(mn, end)) {
		struct pm_stream s;
		struct pm_stats st;
		uint32_t have = 0;

		for (uint32_t j = 0; j < mn->k; j++)
			have += j != mn->me &&
				!pm_stream_by_id(mn->n, mn->ids[j], &s);
		pm_node_stats(mn->n, &st);
		child_fail(fd, "the mesh did not form by auto-connect: streams "
			   "to %u of %u nodes, %llu sockets open", have,
			   mn->k - 1, (unsigned long long)st.conns_open);
	}
	mn->running = true;
	child_ready(fd, mn->n);
	child_wait(fd, &mn->n, 1, &m);
	if (m.type != CTL_GO)
		child_fail(fd, "unexpected message %u", m.type);
	mesh_send(fd, mn, o, m.t0 + (int64_t)(o->seconds * 1e9));
	out = (struct ctl){ .type = CTL_DONE };
	memcpy(out.v, mn->sent, sizeof(out.v));
	child_send(fd, &out);
	child_wait(fd, &mn->n, 1, &m);
	if (m.type != CTL_EXPECT)
		child_fail(fd, "unexpected message %u", m.type);
	end = bench_now_ns() + (int64_t)BENCH_GRACE_MS * 1000000;
	while (mn->recv < m.v[0] && !mn->bad && bench_now_ns() < end)
		pm_node_run(mn->n, 100);
	if (mn->bad)
		child_fail(fd, "%s", mn->why);
	out = (struct ctl){ .type = CTL_RESULT, .t1 = mn->last_ns };
	out.v[0] = mn->recv;
	child_send(fd, &out);
	child_wait(fd, &mn->n, 1, &m);
	child_fail(fd, "unexpected message %u", m.type);
}

static int mesh_setup(const struct bench_opts *o, struct bench_result *r,
		      struct child *c, struct ctl *ready)
{
	uint32_t k = o->nodes;
	char name[32];

	for (uint32_t i = 0; i < k; i++) {
		snprintf(name, sizeof(name), "node %u", i);
		if (child_spawn(&c[i], name, mesh_child, o,
				(void *)(uintptr_t)i))
			return bench_fail(r, "fork: %s", strerror(errno));
	}
	for (uint32_t i = 0; i < k; i++)
		if (expect_msg(&c[i], CTL_READY, &ready[i], BENCH_SETUP_MS, r))
			return -1;
	snprintf(r->engine, sizeof(r->engine), "%.15s", ready[0].text);
	for (uint32_t i = 0; i < k; i++) {
		for (uint32_t j = 0; j < k; j++) {
			struct ctl m = { .type = CTL_PEER, .id = ready[j].id };

			m.v[0] = j;
			if (send_msg(&c[i], &m, r))
				return -1;
		}
	}
	/* A chain of seeds: each node knows only the one before it. */
	for (uint32_t i = 0; i < k; i++) {
		struct ctl m = { .type = CTL_GO };

		if (i)
			memcpy(m.addr, ready[i - 1].addr, sizeof(m.addr));
		if (send_msg(&c[i], &m, r))
			return -1;
	}
	for (uint32_t i = 0; i < k; i++)
		if (expect_msg(&c[i], CTL_READY, &ready[i],
			       3 * BENCH_SETUP_MS + (int)k * 500, r))
			return -1;
	return 0;
}

int bench_mesh(const struct bench_opts *o, struct bench_result *r)
{
	struct child c[BENCH_MAX_NODES] = { 0 };
	struct ctl ready[BENCH_MAX_NODES], m;
	uint64_t expect[BENCH_MAX_NODES] = { 0 }, total = 0;
	uint32_t k = o->nodes;
	int64_t t0, last = 0;

	if (mesh_setup(o, r, c, ready))
		goto out_kill;
	bench_progress("mesh: %u nodes meshed, running for %.1f s", k,
		       o->seconds);
	t0 = bench_now_ns();
	for (uint32_t i = 0; i < k; i++) {
		m = (struct ctl){ .type = CTL_GO, .t0 = t0 };
		if (send_msg(&c[i], &m, r))
			goto out_kill;
	}
	for (uint32_t i = 0; i < k; i++) {
		if (expect_msg(&c[i], CTL_DONE, &m, (int)run_ms(o), r))
			goto out_kill;
		for (uint32_t j = 0; j < k; j++)
			expect[j] += m.v[j];
	}
	for (uint32_t i = 0; i < k; i++) {
		m = (struct ctl){ .type = CTL_EXPECT };
		m.v[0] = expect[i];
		if (send_msg(&c[i], &m, r))
			goto out_kill;
	}
	for (uint32_t i = 0; i < k; i++) {
		if (expect_msg(&c[i], CTL_RESULT, &m, 2 * BENCH_GRACE_MS, r))
			goto out_kill;
		/* Sequences were checked per origin: equal counts mean
		 * nothing was lost. */
		if (m.v[0] != expect[i]) {
			bench_fail(r, "node %u received %llu of %llu", i,
				   (unsigned long long)m.v[0],
				   (unsigned long long)expect[i]);
			goto out_kill;
		}
		total += m.v[0];
		if (m.t1 > last)
			last = m.t1;
	}
	if (stop_children(c, k, NULL, r))
		goto out_kill;
	r->nodes = k;
	r->seconds = (double)(last - t0) / 1e9;
	r->msgs_per_s = (double)total / r->seconds;
	r->mb_per_s = r->msgs_per_s * (double)o->size / 1e6;
	return 0;
out_kill:
	kill_children(c, k);
	return -1;
}
