/* SPDX-License-Identifier: MIT */
/*
 * Routed sessions: pm_send_to's messages to a node reached through relays
 * are kept by the origin until the destination says it delivered them.
 *
 * Hop-by-hop acknowledgement (a stream's ACK) only says the next relay has
 * the frame; a relay that dies with it in its rings would lose it, and a
 * route that changes would let later messages overtake earlier ones. So the
 * origin numbers its ROUTE frames per destination (epoch, sequence), keeps
 * them in a ring of their own, and copies them into the next hop's TX ring
 * (the one extra copy routed sending pays). The destination delivers each
 * sequence once, in order, and answers with RACK (highest sequence
 * delivered), batched at one per origin per loop turn. When the neighbour
 * the frames went to stops being a live neighbour, or nothing is
 * acknowledged for RT_RETRY_MS (doubling while nothing is), the origin
 * goes back and sends everything unacknowledged again on the current
 * route; the destination drops what it already delivered. With no route for resume_ms the origin gives up: the
 * messages are reported in a PM_EV_UNREACHABLE event, and the next one
 * starts a new epoch.
 */
#include <errno.h>
#include <string.h>

#include "node.h"

#define RT_RETRY_MS	1000	/* no acknowledgement for this long: go back */
#define RT_BACKOFF_MAX	3	/* ... doubling per go-back, up to 8 s */
#define RT_UNREACH_MS	100	/* after a relay's UNREACH: go back this soon */

/* A slow reader downstream also looks like loss once the path before it
 * has taken all our frames: each go-back then adds one window of
 * duplicates, so back off rather than send the window every second. */
static uint64_t retry_ms(const struct mesh_entry *e)
{
	return (uint64_t)RT_RETRY_MS << e->rt_backoff;
}

static uint64_t route_seq(const uint8_t *frame)
{
	return get_be64(frame + FRAME_HDR + MESH_HDR + 8);
}

/* The neighbour a frame to e goes to now: the live direct stream, else the
 * route's first hop. */
static uint32_t next_hop(struct pm_node *n, const struct mesh_entry *e)
{
	if (e->direct_slot != NONE && mesh_is_neighbour(n, e->direct_slot))
		return e->direct_slot;
	if (e->next_slot != NONE && mesh_is_neighbour(n, e->next_slot))
		return e->next_slot;
	return NONE;
}

static uint32_t count_routes(const struct ring *r)
{
	uint32_t k = 0;

	for (uint32_t off = 0; off < ring_used(r);
	     off += FRAME_HDR + get_be32(ring_head_ptr(r) + off))
		k++;
	return k;
}

/* Sends everything unacknowledged again, from the first, to next. */
static void go_back(struct pm_node *n, struct mesh_entry *e, uint32_t next)
{
	e->rt_sent = 0;
	e->rt_via = next;
	e->rt_via_gen = next == NONE ? 0 : n->peers[next].gen;
	e->rt_hop_seen = e->rt_hop_mark = next == NONE ? 0 :
					  n->peers[next].tx_pos;
	e->rt_progress_ms = node_now_ms();
}

/*
 * True when what rt_via was given looks lost beyond it: the neighbour
 * consumed all of it and still no acknowledgement came for RT_RETRY_MS.
 * While the neighbour is still working through our frames (a congested
 * path, a slow reader downstream), that is progress, not loss.
 */
static bool lost_beyond(struct pm_node *n, struct mesh_entry *e,
			uint64_t now)
{
	uint64_t pos = n->peers[e->rt_via].tx_pos;

	if (!e->rt_sent)
		return false;
	if (pos != e->rt_hop_seen) {
		if (e->rt_hop_seen < e->rt_hop_mark)
			e->rt_progress_ms = now;
		e->rt_hop_seen = pos;
	}
	return pos >= e->rt_hop_mark && now - e->rt_progress_ms >= retry_ms(e);
}

static void writable(struct pm_node *n, struct mesh_entry *e)
{
	if (!e->rt_want_writable)
		return;
	e->rt_want_writable = false;
	if (n->cfg.on_event) {
		struct pm_event ev = {
			.type = PM_EV_WRITABLE, .peer_id = e->id,
		};

		n->cfg.on_event(n, &ev, n->cfg.user);
	}
}

/* No route for resume_ms: drop what is held and say so. A new epoch makes
 * the destination take the next message as the start of a session. */
static void give_up(struct pm_node *n, struct mesh_entry *e)
{
	struct pm_event ev = {
		.type = PM_EV_UNREACHABLE, .peer_id = e->id,
		.error = -EHOSTUNREACH, .unsent = count_routes(&e->rt),
	};

	ring_reset(&e->rt);
	n->rt_active--;
	e->rt_epoch = 0;
	e->rt_noroute_ms = 0;
	n->st.unreachable++;
	if (n->cfg.on_event)
		n->cfg.on_event(n, &ev, n->cfg.user);
	writable(n, e);
}

/* Copies what rt_via has not been given yet into its TX ring. */
static void pump(struct pm_node *n, struct mesh_entry *e, uint64_t now)
{
	uint32_t next = next_hop(n, e);

	if (next == NONE) {
		if (!e->rt_noroute_ms)
			e->rt_noroute_ms = now;
		if (now - e->rt_noroute_ms >= n->cfg.resume_ms)
			give_up(n, e);
		return;
	}
	e->rt_noroute_ms = 0;
	/* Stay on the neighbour the frames went to while it lives: a new
	 * path would deliver later frames before the ones still on the old
	 * one, and the destination would have to drop them as a gap. */
	if (e->rt_via == NONE || !mesh_is_neighbour(n, e->rt_via) ||
	    n->peers[e->rt_via].gen != e->rt_via_gen) {
		if (e->rt_sent)
			n->st.route_retransmits++;
		go_back(n, e, next);
	} else if (lost_beyond(n, e, now)) {
		/* Lost beyond the first hop (a relay died, or had no way on):
		 * send it all again, on the route as it is now. */
		n->st.route_retransmits++;
		if (e->rt_backoff < RT_BACKOFF_MAX)
			e->rt_backoff++;
		go_back(n, e, next);
	}
	next = e->rt_via;
	while (e->rt_sent < ring_used(&e->rt)) {
		const uint8_t *f = ring_head_ptr(&e->rt) + e->rt_sent;
		uint32_t len = get_be32(f);
		void *dst;

		if (peer_reserve(n, next, len, &dst))
			break;	/* full: its WRITABLE or the next turn */
		memcpy(dst, f + FRAME_HDR, len);
		peer_commit(n, next, FRAME_ROUTE, len);
		e->rt_sent += FRAME_HDR + len;
		e->rt_hop_mark = n->peers[next].tx_pos +
				 ring_used(&n->peers[next].tx);
	}
}

int route_send(struct pm_node *n, struct mesh_entry *e, const void *buf,
	       size_t len)
{
	uint32_t next = next_hop(n, e);
	uint8_t *f;
	int r;

	if (len + ROUTE_HDR > n->cfg.max_message ||
	    (next != NONE && len + ROUTE_HDR > n->peers[next].peer_max))
		return -EMSGSIZE;
	if (!e->rt.base) {
		r = ring_map(&e->rt, n->cfg.ring_size);
		if (r)
			return r;
	}
	if (ring_free(&e->rt) < FRAME_HDR + ROUTE_HDR + len) {
		e->rt_want_writable = true;
		return -EAGAIN;
	}
	if (!ring_used(&e->rt)) {
		n->rt_active++;
		e->rt_progress_ms = node_now_ms();
		e->rt_sent = 0;
		e->rt_via = NONE;
	}
	if (!e->rt_epoch) {
		/* Newer than any epoch this node used before, even in an
		 * earlier life: the destination restarts on a newer one. */
		e->rt_epoch = ++n->rt_clock;
		e->rt_next = 1;
	}
	f = ring_tail_ptr(&e->rt);
	frame_put_hdr(f, FRAME_ROUTE, (uint32_t)(ROUTE_HDR + len));
	mesh_put_hdr(f + FRAME_HDR, n->id, e->id, 0, n->cfg.max_hops, 0);
	put_be64(f + FRAME_HDR + MESH_HDR, e->rt_epoch);
	put_be64(f + FRAME_HDR + MESH_HDR + 8, e->rt_next++);
	memcpy(f + FRAME_HDR + ROUTE_HDR, buf, len);
	ring_produce(&e->rt, FRAME_HDR + ROUTE_HDR + (uint32_t)len);
	n->st.msgs_out++;	/* as a direct send counts it: queued */
	n->st.bytes_out += len;
	pump(n, e, node_now_ms());
	return 0;
}

static void ack_due(struct pm_node *n, struct mesh_entry *e)
{
	if (!e->in_ack_due) {
		e->in_ack_due = true;
		n->rt_acks_due++;
	}
}

/* A ROUTE for this node: delivered if it is the next in its session. */
int route_receive(struct pm_node *n, uint32_t from, const struct frame *f,
		  uint64_t origin)
{
	uint64_t epoch = get_be64(f->payload + MESH_HDR);
	uint64_t seq = get_be64(f->payload + MESH_HDR + 8);
	struct mesh_entry *e = mesh_entry_get(n, origin);
	int r;

	if (!e || origin == n->id) {
		n->st.dropped_no_route++;	/* member table full */
		return 0;
	}
	if (epoch > e->in_epoch) {
		/* A new session (the origin restarted, gave up, or this node
		 * did): it starts with the first message that arrives, the
		 * oldest the origin still holds. */
		e->in_epoch = epoch;
		e->in_next = seq;
	} else if (epoch < e->in_epoch) {
		n->st.duplicates_dropped++;	/* an older session's */
		return 0;
	}
	if (seq != e->in_next) {
		/* Had it already (a go-back), or one before it is missing
		 * (it comes again): either way the origin must hear where
		 * this session stands. */
		if (seq < e->in_next)
			n->st.duplicates_dropped++;
		ack_due(n, e);
		return 0;
	}
	r = mesh_deliver(n, from, f, origin, ROUTE_HDR, PM_MSG_ROUTED);
	if (r)
		return r;	/* paused: the same frame comes again */
	e->in_next++;
	ack_due(n, e);
	return 0;
}

/* RACK from acker: our ROUTEs to it up to a sequence were delivered. */
void route_ack_received(struct pm_node *n, const struct frame *f,
			uint64_t acker)
{
	struct mesh_entry *e = mesh_entry_find(n, acker);
	uint64_t upto = get_be64(f->payload + MESH_HDR + 8);
	bool progress = false;

	if (!e || !e->rt_epoch ||
	    get_be64(f->payload + MESH_HDR) != e->rt_epoch)
		return;	/* an older session's, or none */
	while (ring_used(&e->rt) && route_seq(ring_head_ptr(&e->rt)) <= upto) {
		uint32_t k = FRAME_HDR + get_be32(ring_head_ptr(&e->rt));

		ring_consume(&e->rt, k);
		e->rt_sent = e->rt_sent > k ? e->rt_sent - k : 0;
		progress = true;
	}
	if (!progress)
		return;
	e->rt_progress_ms = node_now_ms();
	e->rt_backoff = 0;
	if (!ring_used(&e->rt))
		n->rt_active--;
	writable(n, e);
}

/* A relay could not pass our ROUTE to target on: go back soon, on whatever
 * route there is by then (the relay's news travels as LINKS meanwhile). */
void route_unreach(struct pm_node *n, uint64_t target)
{
	struct mesh_entry *e = mesh_entry_find(n, target);
	uint64_t soon = node_now_ms() + RT_UNREACH_MS;

	/* The timer fires at rt_progress_ms + retry_ms(): bring it
	 * forward, never push it back. */
	if (e && ring_used(&e->rt) && soon >= retry_ms(e) &&
	    soon - retry_ms(e) < e->rt_progress_ms)
		e->rt_progress_ms = soon - retry_ms(e);
}

static void send_ack(struct pm_node *n, struct mesh_entry *e)
{
	uint32_t next = next_hop(n, e);
	uint8_t *p;
	void *buf;

	if (next == NONE || peer_reserve(n, next, RACK_LEN, &buf))
		return;	/* stays due: the next turn tries again */
	p = buf;
	mesh_put_hdr(p, n->id, e->id, 0, n->cfg.max_hops, 0);
	put_be64(p + MESH_HDR, e->in_epoch);
	put_be64(p + MESH_HDR + 8, e->in_next - 1);
	peer_commit(n, next, FRAME_RACK, RACK_LEN);
	e->in_ack_due = false;
	n->rt_acks_due--;
}

/* Once per loop turn: acknowledgements owed, copies owed, timers. Returns
 * true when a timer needs the loop to wake up soon. */
int route_turn(struct pm_node *n)
{
	uint64_t now;

	if (!n->rt_active && !n->rt_acks_due)
		return 0;
	now = node_now_ms();
	for (uint32_t i = 1; i < n->mesh_used; i++) {
		struct mesh_entry *e = &n->mesh[i];

		if (e->in_ack_due)
			send_ack(n, e);
		if (ring_used(&e->rt))
			pump(n, e, now);
	}
	return n->rt_active || n->rt_acks_due;
}

void route_fini(struct pm_node *n)
{
	for (uint32_t i = 0; n->mesh && i < n->mesh_used; i++)
		ring_unmap(&n->mesh[i].rt);
}
