/* SPDX-License-Identifier: MIT */
/*
 * Pair streams: the fixed peer slab, handles with generations, the pair
 * rule that keeps one connection per pair of nodes, merging of two streams
 * that turn out to name the same node, zero-copy delivery from the RX ring,
 * and the public send/reserve/commit/close calls.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "node.h"

static void release_blocked(struct pm_node *n, uint32_t on);
static void release_held(struct pm_node *n, uint32_t gone);
static uint32_t newest_closing(struct pm_node *n, uint32_t old,
			       const struct sockaddr *sa);
static int peer_acked(struct pm_node *n, uint32_t slot, uint64_t pos);
static void wake_slot_waiters(struct pm_node *n, uint32_t gone, uint64_t id);
static void drain_alias(struct pm_node *n, uint32_t i);

struct pm_stream handle_of(struct pm_node *n, uint32_t slot)
{
	struct pm_stream s = { 0 };

	if (slot < n->npeers)
		s.h = (uint64_t)n->peers[slot].gen << 32 | slot;
	return s;
}

/* The slot a handle names, or NULL when the handle is stale. */
static struct peer *lookup(struct pm_node *n, struct pm_stream s,
			   uint32_t *slot)
{
	uint32_t i = (uint32_t)s.h;
	struct peer *p;

	if (i >= n->npeers)
		return NULL;
	p = &n->peers[i];
	if (p->gen != (uint32_t)(s.h >> 32) || p->state == PEER_FREE ||
	    p->state == PEER_ZOMBIE)
		return NULL;
	*slot = i;
	return p;
}

/*
 * Where a handle's messages go. An alias still holding TX of its own (or a
 * reservation) keeps taking messages itself so that order is kept; once
 * drained, it forwards to its target.
 */
static uint32_t resolve(struct pm_node *n, uint32_t slot)
{
	struct peer *p = &n->peers[slot];

	if (p->state == PEER_ALIAS && !p->reserved && !ring_used(&p->tx))
		return p->alias_to;
	return slot;
}

void emit(struct pm_node *n, enum pm_event_type type, uint32_t slot,
	  int error, enum pm_close_reason reason, uint64_t unsent)
{
	struct pm_event ev = {
		.type = type,
		.error = error,
		.reason = reason,
		.unsent = unsent,
	};

	if (slot != NONE) {
		ev.stream = handle_of(n, slot);
		ev.peer_id = n->peers[slot].id;
	}
	if (n->cfg.on_event)
		n->cfg.on_event(n, &ev, n->cfg.user);
}

uint32_t peer_alloc(struct pm_node *n)
{
	uint32_t slot = n->peer_free;
	struct peer *p;

	if (slot == NONE)
		return NONE;
	p = &n->peers[slot];
	/* Rings are mapped on first use and kept for the slot's next peer:
	 * no mapping on the connection path once the slab is warm. */
	if (!p->tx.base && ring_map(&p->tx, n->cfg.ring_size))
		return NONE;
	if (!p->rx.base && ring_map(&p->rx, n->cfg.ring_size))
		return NONE;
	n->peer_free = p->next_free;

	struct ring tx = p->tx, rx = p->rx;
	uint32_t gen = p->gen;

	memset(p, 0, sizeof(*p));
	p->gen = gen;
	p->tx = tx;
	p->rx = rx;
	ring_reset(&p->tx);
	ring_reset(&p->rx);
	p->state = PEER_PENDING;
	p->live = NONE;
	p->alias_to = NONE;
	p->blocked_on = NONE;
	p->held_on = NONE;
	p->live_pending = NONE;
	p->wait_slot = NONE;
	p->next_free = NONE;
	p->peer_max = n->cfg.max_message;
	/* Unique per stream: the node's random nonce, mixed with a count. */
	p->tx_epoch = n->nonce ^ (++n->epochs * 0x9e3779b97f4a7c15ULL);
	n->peers_used++;
	return slot;
}

static void peer_release(struct pm_node *n, uint32_t slot)
{
	struct peer *p = &n->peers[slot];

	p->state = PEER_FREE;
	p->next_free = n->peer_free;
	n->peer_free = slot;
	n->peers_used--;
}

/* Ends a slot's life: handles go stale now, the slot is reused only once
 * the kernel no longer reads or writes its rings. */
static void peer_kill(struct pm_node *n, uint32_t slot)
{
	struct peer *p = &n->peers[slot];

	if (p->state == PEER_ALIAS && ring_used(&p->tx))
		n->aliases--;
	if (p->wait_id || p->wait_slot != NONE) {
		p->wait_id = 0;
		p->wait_slot = NONE;
		n->waiting--;
	}
	uint64_t gone_id = p->id;

	if (p->has_held)
		release_held(n, slot);
	p->gen = p->gen + 1 ? p->gen + 1 : 1;
	p->state = PEER_ZOMBIE;
	p->id = 0;
	if (!p->pins)
		peer_release(n, slot);
	if (n->waiting)
		wake_slot_waiters(n, slot, gone_id);
}

void peer_unpin(struct pm_node *n, uint32_t slot)
{
	struct peer *p = &n->peers[slot];

	if (--p->pins)
		return;
	if (p->state == PEER_ZOMBIE)
		peer_release(n, slot);
	else if (p->live_pending != NONE &&
		 n->conns[p->live_pending].state == CONN_WAIT_LIVE)
		peer_went_live(n, slot, p->live_pending);
}

void peer_attach(struct pm_node *n, uint32_t slot, uint32_t ci)
{
	struct peer *p = &n->peers[slot];

	n->conns[ci].peer = slot;
	if (p->nconns < PEER_CONNS) {
		p->conns[p->nconns++] = ci;
		return;
	}
	/* More simultaneous dials than any race produces: refuse this one. */
	n->conns[ci].peer = NONE;
	conn_reject(n, &n->conns[ci], PM_CLOSE_DUPLICATE);
}

void peer_detach(struct pm_node *n, uint32_t slot, uint32_t ci)
{
	struct peer *p = &n->peers[slot];

	for (uint32_t i = 0; i < p->nconns; i++) {
		if (p->conns[i] == ci) {
			p->conns[i] = p->conns[--p->nconns];
			break;
		}
	}
	if (p->live == ci)
		p->live = NONE;
	n->conns[ci].peer = NONE;
}

/* A closing stream left without any connection (its CLOSE was cut off by
 * a reset, an error, or the peer dying) ends now, with what the peer did
 * not acknowledge counted as unsent; else it would hold its slot forever. */
void peer_closing_orphaned(struct pm_node *n, uint32_t slot)
{
	struct peer *p = &n->peers[slot];

	if (p->state == PEER_CLOSING && !p->nconns && p->live == NONE &&
	    !p->resuming && !p->wait_id && p->wait_slot == NONE)
		peer_closed(n, slot, -ECONNRESET, PM_CLOSE_NONE);
}

void peer_mark_dirty(struct pm_node *n, uint32_t slot)
{
	struct peer *p = &n->peers[slot];

	if (!p->dirty) {
		p->dirty = true;
		n->dirty[n->ndirty++] = slot;
	}
}

/* User messages still in a TX ring (not acknowledged by the peer);
 * the node's own control and topology frames do not count. */
static uint64_t count_frames(struct ring *r)
{
	uint64_t count = 0;

	/* Bounded by what is in the ring: a peer's bad ACK can leave head
	 * inside a frame, and a garbage length must not run the walk past
	 * the tail (a hang found by fuzz_handshake). */
	for (uint32_t at = r->head; r->tail - at >= FRAME_HDR;) {
		uint32_t len = get_be32(r->base + (at & r->mask));
		uint8_t type = r->base[(at & r->mask) + 4];

		if (len > r->tail - at - FRAME_HDR)
			break;
		count += type == FRAME_DATA || type == FRAME_ROUTE ||
			 type == FRAME_FLOOD;
		at += FRAME_HDR + len;
	}
	return count;
}

static uint32_t largest_frame(struct ring *r)
{
	uint32_t most = 0;

	for (uint32_t at = r->head; r->tail - at >= FRAME_HDR;) {
		uint32_t len = get_be32(r->base + (at & r->mask));

		if (len > r->tail - at - FRAME_HDR)
			break;
		most = len > most ? len : most;
		at += FRAME_HDR + len;
	}
	return most;
}

void peer_closed(struct pm_node *n, uint32_t slot, int error,
		 enum pm_close_reason reason)
{
	struct peer *p = &n->peers[slot];
	uint64_t unsent;

	if (p->state == PEER_FREE || p->state == PEER_ZOMBIE ||
	    p->state == PEER_SELF)
		return;
	unsent = count_frames(&p->tx);
	while (p->nconns) {
		struct conn *c = &n->conns[p->conns[--p->nconns]];

		c->peer = NONE;
		if (c->state != CONN_DRAIN)	/* else: finishing its close */
			conn_abort(n, c);
	}
	p->live = NONE;
	p->live_pending = NONE;
	if (p->orphan_until) {
		p->orphan_until = 0;
		n->orphans--;
	}
	if (p->resuming) {
		p->resuming = false;
		n->resuming--;
	}
	bool restarted = p->restarted;

	if (p->state == PEER_LIVE || p->state == PEER_CLOSING)
		mesh_peer_down(n, slot);
	if (p->has_blocked)
		release_blocked(n, slot);
	bool tell = p->user_visible || p->announced;
	struct pm_stream h = handle_of(n, slot);
	uint64_t id = p->id;

	peer_kill(n, slot);
	/* Handles merged into this one die with it. */
	for (uint32_t i = 0; i < n->npeers; i++) {
		struct peer *a = &n->peers[i];

		if (a->state == PEER_ALIAS && a->alias_to == slot) {
			struct pm_event ev = {
				.type = PM_EV_CLOSED, .stream = handle_of(n, i),
				.peer_id = id, .error = error, .reason = reason,
				.unsent = count_frames(&a->tx),
			};

			peer_kill(n, i);
			if (n->cfg.on_event)
				n->cfg.on_event(n, &ev, n->cfg.user);
		}
	}
	if (tell && n->cfg.on_event) {
		struct pm_event ev = {
			.type = PM_EV_CLOSED, .stream = h, .peer_id = id,
			.error = error, .reason = reason, .unsent = unsent,
			.peer_restarted = restarted,
		};

		n->cfg.on_event(n, &ev, n->cfg.user);
	}
}

void peer_went_live(struct pm_node *n, uint32_t slot, uint32_t ci)
{
	struct peer *p = &n->peers[slot];
	struct conn *c = &n->conns[ci];
	uint32_t gen = p->gen;

	if (p->live != NONE && p->live != ci) {
		/* The arbiter accepted a new connection while ours still
		 * looks alive. If the peer dialled it to resume (it lost the
		 * old one), follow it. If the peer dialled it as a fresh
		 * stream, our old connection still holds frames we have not
		 * read (a paused stream, its CLOSE behind them): refuse the
		 * new one rather than throw those away. */
		struct conn *old = &n->conns[p->live];

		if (!c->dialled && !(c->hello.flags & HELLO_F_RESUME)) {
			n->st.duplicates_closed++;
			conn_reject(n, c, PM_CLOSE_DUPLICATE);
			return;
		}
		p->live = NONE;
		conn_abort(n, old);
	}
	if (p->pins) {
		/* The old connection's ring I/O has not completed yet: the
		 * kernel may still write the rings. Go live when it has. */
		c->state = CONN_WAIT_LIVE;
		p->live_pending = ci;
		return;
	}
	c->state = CONN_LIVE;
	p->live = ci;
	p->live_pending = NONE;
	/* Replay from the first byte the peer has not acknowledged; RESUME
	 * tells it where that is, before any ring byte. Whatever the old
	 * connection left unconsumed in RX comes again the same way. */
	p->tx_sent = 0;
	p->tx_replay_end = p->tx_hi;
	ring_reset(&p->rx);
	c->resume_due = true;
	c->mid_frame = false;
	if (p->orphan_until) {
		p->orphan_until = 0;
		n->orphans--;
	}
	if (p->resuming) {
		p->resuming = false;
		n->resuming--;
		n->st.resumed++;
	}
	if (p->state == PEER_PENDING)
		p->state = PEER_LIVE;
	if (!p->announced) {
		p->announced = true;
		p->user_visible = true;
		emit(n, PM_EV_CONNECTED, slot, 0, PM_CLOSE_NONE, 0);
		if (p->gen != gen || c->state != CONN_LIVE || p->live != ci)
			return;	/* the callback closed it */
	}
	if (p->state == PEER_CLOSING) {
		conn_graceful(n, c, p->close_reason);
	} else {
		mesh_peer_up(n, slot);
		peer_mark_dirty(n, slot);
	}
	conn_flush(n, c);
	conn_arm_recv(n, c);
}

/*
 * The live connection failed while the stream is fine: keep the stream and
 * its queue, and redial (both ends do; the pair rule keeps one). Returns
 * false when the stream should end instead.
 */
bool peer_lost(struct pm_node *n, uint32_t slot, int error)
{
	struct peer *p = &n->peers[slot];
	uint64_t now = node_now_ms();

	if (!n->cfg.resume_ms || p->state != PEER_LIVE || !p->id ||
	    n->shutting_down)
		return false;
	if (!p->resuming) {
		p->resuming = true;
		n->resuming++;
		p->resume_until_ms = now + n->cfg.resume_ms;
		p->backoff_ms = 25;
		p->lost_error = error;
	}
	while (p->nconns) {
		struct conn *c = &n->conns[p->conns[--p->nconns]];

		c->peer = NONE;
		conn_abort(n, c);
	}
	p->live = NONE;
	p->state = PEER_PENDING;
	p->retry_at_ms = now + p->backoff_ms / 2 +
			 (uint64_t)rand() % (p->backoff_ms / 2 + 1);
	mesh_peer_down(n, slot);
	return true;
}

/*
 * The live connection ended (EOF, a reset) with the peer's CLOSE already in
 * the RX ring, behind frames a paused stream has not delivered: the peer
 * ended the stream and all it sent is here. Resuming would throw the ring
 * away, CLOSE included, and a new stream would take the slot: those
 * messages, written before CLOSE and so not unsent at the peer, would be
 * lost. Instead the connection goes and the stream stays, delivering, until
 * it reaches the CLOSE. Returns false when the CLOSE is not there.
 */
bool peer_rx_final(struct pm_node *n, struct conn *c)
{
	uint32_t slot = c->peer;
	struct peer *p = slot != NONE ? &n->peers[slot] : NULL;
	uint32_t at;
	struct frame f;

	if (!p || c->state != CONN_LIVE || p->state != PEER_LIVE ||
	    p->live != (uint32_t)(c - n->conns))
		return false;
	for (at = p->rx.head; at != p->rx.tail;) {
		long r = frame_decode(p->rx.base + (at & p->rx.mask),
				      p->rx.tail - at, n->cfg.max_message, &f);

		if (r <= 0)
			return false;
		if (f.type == FRAME_CLOSE)
			break;
		at += (uint32_t)r;
	}
	if (at == p->rx.tail)
		return false;
	conn_abort(n, c);
	p->rx_final = true;
	mesh_peer_down(n, slot);
	return true;
}

/* Slot gone, an older stream from the same node, has ended: the streams
 * held behind it deliver now. */
static void release_held(struct pm_node *n, uint32_t gone)
{
	n->peers[gone].has_held = false;
	for (uint32_t i = 0; i < n->self; i++) {
		struct peer *h = &n->peers[i];

		if (h->held_on != gone)
			continue;
		h->held_on = NONE;
		if (h->state == PEER_LIVE) {
			h->redeliver = true;
			peer_mark_dirty(n, i);
		}
	}
}

/* Redials resuming streams on their jittered backoff; gives up after
 * resume_ms with the error that lost the connection. */
void node_resume_tick(struct pm_node *n, uint64_t now)
{
	for (uint32_t i = 0; i < n->self && n->resuming; i++) {
		struct peer *p = &n->peers[i];

		if (!p->resuming)
			continue;
		if (now >= p->resume_until_ms) {
			peer_closed(n, i, p->lost_error ? p->lost_error :
				    -ETIMEDOUT, PM_CLOSE_NONE);
			continue;
		}
		if (p->nconns || p->live != NONE || now < p->retry_at_ms ||
		    !p->has_addr)
			continue;	/* a dial is on, or the peer dials us */
		n->st.reconnects++;
		conn_dial(n, i, (struct sockaddr *)&p->addr, p->addr_len);
		p->backoff_ms = p->backoff_ms * 2 > n->cfg.reconnect_max_ms ?
				n->cfg.reconnect_max_ms : p->backoff_ms * 2;
		p->retry_at_ms = now + p->backoff_ms / 2 +
				 (uint64_t)rand() % (p->backoff_ms / 2 + 1);
	}
}

void node_check_orphans(struct pm_node *n)
{
	uint64_t now = node_now_ms();

	for (uint32_t i = 0; i < n->self && n->orphans; i++) {
		struct peer *p = &n->peers[i];

		if (p->orphan_until && now >= p->orphan_until)
			peer_closed(n, i, -ETIMEDOUT, PM_CLOSE_DUPLICATE);
	}
}

static uint32_t find_by_id(struct pm_node *n, uint64_t id, uint32_t not)
{
	for (uint32_t i = 0; i < n->self; i++) {
		struct peer *p = &n->peers[i];

		if (i != not && p->id == id && !p->rx_final &&
		    (p->state == PEER_PENDING || p->state == PEER_LIVE ||
		     p->state == PEER_CLOSING))
			return i;
	}
	return NONE;
}

/*
 * The stream from node id a new one must deliver after: one that has ended
 * at the peer (its CLOSE read) but still holds messages to deliver
 * (paused). Of several (each held behind the one before), the newest, the
 * one no other such is held behind: a new stream held behind an older one
 * would be released with the newer ones, maybe before them.
 */
static uint32_t find_final(struct pm_node *n, uint64_t id, uint32_t not)
{
	for (uint32_t i = 0; i < n->self; i++) {
		struct peer *p = &n->peers[i];
		bool newest = true;

		if (i == not || p->id != id || p->state != PEER_LIVE ||
		    !p->rx_final)
			continue;
		for (uint32_t j = 0; j < n->self && newest; j++)
			newest = j == not || n->peers[j].held_on != i ||
				 !n->peers[j].rx_final;
		if (newest)
			return i;
	}
	return NONE;
}

/* A stream dialled to or advertising sa. Closing ones count only for
 * merges (a close asked before the handshake must reach the merged stream);
 * pm_connect wants a stream it can still send on. */
static uint32_t find_by_addr(struct pm_node *n, const struct sockaddr *sa,
			     uint32_t not, bool closing_too, bool for_merge)
{
	for (uint32_t i = 0; i < n->self; i++) {
		struct peer *p = &n->peers[i];

		/* A stream holding its dial until an older one to the same
		 * node is gone is not that node's stream yet: a connection
		 * must not merge into it (its messages come after). */
		if (for_merge && (p->wait_id || p->wait_slot != NONE))
			continue;
		/* A stream the peer ended, with messages left to deliver, is
		 * closing too; nothing merges into it. */
		bool closing = p->state == PEER_CLOSING || p->rx_final;

		if (for_merge && p->rx_final)
			continue;
		if (i != not && p->has_addr &&
		    (p->state == PEER_PENDING || p->state == PEER_LIVE ||
		     p->state == PEER_CLOSING) && (closing_too || !closing) &&
		    addr_equal((struct sockaddr *)&p->addr, sa))
			return i;
	}
	return NONE;
}

/* absorbed's handle now leads to survivor; its queued messages follow. */
static void absorb(struct pm_node *n, uint32_t absorbed, uint32_t survivor)
{
	struct peer *a = &n->peers[absorbed];

	while (a->nconns) {
		uint32_t ci = a->conns[--a->nconns];

		peer_attach(n, survivor, ci);
	}
	if (a->orphan_until) {
		a->orphan_until = 0;
		n->orphans--;
	}
	a->live = NONE;
	if (!a->user_visible && !ring_used(&a->tx)) {
		peer_kill(n, absorbed);
		return;
	}
	bool closing = a->state == PEER_CLOSING;
	struct peer *t = &n->peers[survivor];

	a->state = PEER_ALIAS;
	a->alias_to = survivor;
	a->id = t->id;
	if (ring_used(&a->tx)) {
		n->aliases++;
		drain_alias(n, absorbed);
	}
	/* A close asked on either handle closes the one stream, after the
	 * absorbed handle's messages. */
	if (closing && t->state != PEER_CLOSING && t->state != PEER_SELF) {
		t->state = PEER_CLOSING;
		t->close_reason = PM_CLOSE_NORMAL;
		if (t->live != NONE)
			conn_graceful(n, &n->conns[t->live], PM_CLOSE_NORMAL);
	}
}

/* A stream waiting to dial node id once no connection to it is left,
 * without one yet: it stops waiting and is returned, or NONE. */
static uint32_t take_waiter(struct pm_node *n, uint64_t id)
{
	for (uint32_t i = 0; i < n->self; i++) {
		struct peer *p = &n->peers[i];

		if (p->wait_id != id || p->nconns || p->live != NONE ||
		    (p->state != PEER_PENDING && p->state != PEER_CLOSING))
			continue;
		p->wait_id = 0;
		n->waiting--;
		return i;
	}
	return NONE;
}

/* Which of two slots naming one node carries on. */
static uint32_t pick_survivor(struct pm_node *n, uint32_t x, uint32_t y)
{
	struct peer *a = &n->peers[x], *b = &n->peers[y];

	if (a->live != NONE)
		return x;
	if (b->live != NONE)
		return y;
	if (a->user_visible != b->user_visible)
		return a->user_visible ? x : y;
	return y;	/* the older one: it was found, not created */
}

int peer_hello(struct pm_node *n, struct conn *c)
{
	const struct hello *h = &c->hello;
	uint32_t ci = (uint32_t)(c - n->conns);
	uint32_t slot = c->peer, q;
	struct sockaddr_storage adv;
	socklen_t adv_len;

	if (h->node_id == n->id) {
		if (h->nonce != n->nonce) {
			n->st.protocol_errors++;
			conn_reject(n, c, PM_CLOSE_ID_CONFLICT);
			if (n->peers[slot].nconns == 0)
				peer_closed(n, slot, -EADDRINUSE,
					    PM_CLOSE_ID_CONFLICT);
			return 0;
		}
		/* We dialled ourselves: the stream is the self stream. */
		conn_reject(n, c, PM_CLOSE_SELF);
		if (n->peers[slot].nconns == 0)
			absorb(n, slot, n->self);
		return 0;
	}
	if (n->peers[slot].id && n->peers[slot].id != h->node_id) {
		/* We redialled an address that another node now answers on:
		 * not our peer. The stream keeps waiting for its own. */
		conn_reject(n, c, PM_CLOSE_NORMAL);
		if (!n->peers[slot].resuming && !n->peers[slot].nconns &&
		    n->peers[slot].live == NONE)
			peer_closed(n, slot, -ECONNREFUSED, PM_CLOSE_NONE);
		return 0;
	}
	adv_len = addr_from_hello(h, (struct sockaddr *)&c->remote, &adv);
	q = find_by_id(n, h->node_id, slot);
	if (q == NONE && adv_len)
		q = find_by_addr(n, (struct sockaddr *)&adv, slot, true, true);
	if (q != NONE && n->peers[q].id && n->peers[q].id != h->node_id)
		q = NONE;	/* that address now belongs to another node */
	if (q != NONE && n->peers[q].peer_nonce &&
	    n->peers[q].peer_nonce != h->nonce) {
		/* Same id, new process: the old stream's session is over;
		 * this connection starts a new one. */
		n->st.restarts_seen++;
		n->peers[q].restarted = true;
		peer_closed(n, q, -ECONNRESET, PM_CLOSE_NONE);
		q = NONE;
	}
	if (n->peers[slot].peer_nonce &&
	    n->peers[slot].peer_nonce != h->nonce) {
		/* We redialled a stream whose peer restarted meanwhile. */
		n->st.restarts_seen++;
		n->peers[slot].restarted = true;
		peer_closed(n, slot, -ECONNRESET, PM_CLOSE_NONE);
		return 0;
	}
	if (!c->dialled && q != NONE && n->peers[q].resuming &&
	    !(h->flags & HELLO_F_RESUME)) {
		/* The same process dialled a new stream (no RESUME) while we
		 * resume one to it: it holds no stream to us any more (its
		 * user closed it and the CLOSE was lost with the connection,
		 * or it gave up). Resumed into its new stream, ours would
		 * replay what it consumed but never acknowledged, and it
		 * would deliver that again. End ours (its unacknowledged
		 * messages are unsent); this connection starts a new one. */
		peer_closed(n, q, -ECONNRESET, PM_CLOSE_NONE);
		/* A stream the user opened to that node meanwhile, waiting
		 * for that one to end, is the new one: this connection
		 * carries it, its queued messages first. A stream of its own
		 * would deliver after them what the user sent later. */
		q = take_waiter(n, h->node_id);
	}
	if (!c->dialled && (h->flags & HELLO_F_RESUME) &&
	    (q == NONE || !n->peers[q].announced)) {
		/* It resumes a stream that has ended here: nothing here says
		 * what of it was consumed, so it cannot go on without
		 * duplicates. Refuse; CLOSE(NORMAL) ends it there too. */
		conn_reject(n, c, PM_CLOSE_NORMAL);
		peer_closed(n, slot, 0, PM_CLOSE_NONE);
		return 0;
	}
	if (q != NONE) {
		uint32_t keep = pick_survivor(n, slot, q);

		absorb(n, keep == slot ? q : slot, keep);
		slot = keep;
	}
	struct peer *p = &n->peers[slot];

	p->id = h->node_id;
	p->peer_nonce = h->nonce;
	p->peer_max = h->max_message;
	if (h->max_message < n->cfg.max_message &&
	    largest_frame(&p->tx) > h->max_message) {
		/* Queued before we knew the peer's limit: it would refuse the
		 * frame and close. Say so here, before sending anything. */
		conn_reject(n, c, PM_CLOSE_TOO_BIG);
		peer_closed(n, slot, -EMSGSIZE, PM_CLOSE_TOO_BIG);
		return 0;
	}
	if (!p->has_addr && adv_len) {
		p->addr = adv;
		p->addr_len = adv_len;
		p->has_addr = true;
	}
	q = find_final(n, h->node_id, slot);
	if (q != NONE && p->held_on == NONE) {
		/* An older stream from that node still has messages to
		 * deliver: this one's come after them. */
		p->held_on = q;
		n->peers[q].has_held = true;
	}
	if (n->id < h->node_id) {
		/* We arbitrate this pair: first connection through wins. */
		if (((p->live != NONE && p->live != ci) ||
		     (p->live_pending != NONE && p->live_pending != ci)) &&
		    !(h->flags & HELLO_F_RESUME)) {
			n->st.duplicates_closed++;
			conn_reject(n, c, PM_CLOSE_DUPLICATE);
			return 0;
		}
		/* With RESUME the peer says it lost our live connection:
		 * peer_went_live drops that one for this. */
		conn_queue_frame(c, FRAME_ACCEPT, NULL, 0);
		peer_went_live(n, slot, ci);
		return 0;
	}
	c->state = CONN_VERDICT;
	return 0;
}

/* A ring send completed short by `unsent` bytes: they go again. Nothing
 * is freed on send: bytes stay until the peer says it consumed them, so a
 * connection that dies loses nothing. */
void peer_tx_sent(struct pm_node *n, uint32_t slot, uint32_t unsent)
{
	n->peers[slot].tx_sent -= unsent;
}

/* The peer consumed our stream up to position pos: free that much. */
static int peer_acked(struct pm_node *n, uint32_t slot, uint64_t pos)
{
	struct peer *p = &n->peers[slot];

	if (pos <= p->tx_pos)
		return 0;	/* old news (a replayed ACK) */
	if (pos > p->tx_hi)
		return -EBADMSG;	/* acknowledges bytes never sent */
	if (pos > p->tx_acked)
		p->tx_acked = pos;
	peer_free_acked(n, slot);
	return 0;
}

/*
 * Frees what the peer acknowledged and this connection has sent. After a
 * resume the peer's first ACK can run ahead of our replay: it read those
 * bytes on the connection before. The rest is freed as the replay catches
 * up (the peer skips it). Replayed bytes in a send still in flight are
 * freed only once it completes: the kernel may not have read them yet,
 * and the peer did not get them from this send, so nothing says it has.
 */
void peer_free_acked(struct pm_node *n, uint32_t slot)
{
	struct peer *p = &n->peers[slot];
	uint64_t to = p->tx_pos + p->tx_sent;
	uint64_t done;

	if (p->tx_acked < to)
		to = p->tx_acked;
	if (to <= p->tx_pos)
		return;
	if (p->tx_pos < p->tx_replay_end && p->live != NONE &&
	    n->conns[p->live].send_armed && n->conns[p->live].send_from_ring)
		return;
	done = to - p->tx_pos;
	/* Acks land on frame boundaries: the peer consumes whole frames. */
	ring_consume(&p->tx, (uint32_t)done);
	p->tx_sent -= (uint32_t)done;
	p->tx_pos = to;
	if (p->has_blocked)
		release_blocked(n, slot);
	if (p->want_writable && p->state == PEER_LIVE &&
	    ring_free(&p->tx) >= p->tx.size / 2) {
		p->want_writable = false;
		emit(n, PM_EV_WRITABLE, slot, 0, PM_CLOSE_NONE, 0);
	}
}

/* A new connection carries the peer's stream from position pos. */
static void peer_resumed(struct pm_node *n, uint32_t slot, uint64_t epoch,
			 uint64_t pos)
{
	struct peer *p = &n->peers[slot];

	if (epoch != p->rx_epoch) {
		/* Another stream than the one we were reading (a new peer
		 * stream): its bytes before pos were acked to nobody here
		 * and cannot be asked for; start reading at pos. */
		p->rx_epoch = epoch;
		p->rx_pos = p->rx_acked = pos;
		p->rx_skip = 0;
		return;
	}
	/* Same stream: drop what we consumed already, take what is new.
	 * An ACK lost with the old connection is owed again. */
	p->rx_skip = p->rx_pos > pos ? p->rx_pos - pos : 0;
	if (p->rx_acked > pos)
		p->rx_acked = pos;
	if (p->rx_pos != p->rx_acked) {
		p->ack_due = true;
		peer_mark_dirty(n, slot);
	}
	if (pos > p->rx_pos)
		p->rx_pos = p->rx_acked = pos;
}

/*
 * Queues an 8-byte control frame (PING, PONG) in the TX ring, best effort:
 * with the ring full or a user reservation open it is skipped, and the
 * user is not told (the data queued answers for liveness).
 */
int peer_control(struct pm_node *n, uint32_t slot, uint8_t type,
		 const uint8_t *payload)
{
	struct peer *p = &n->peers[slot];

	if (p->state != PEER_LIVE || p->reserved ||
	    ring_free(&p->tx) < FRAME_HDR + PING_LEN)
		return -EAGAIN;
	memcpy(ring_tail_ptr(&p->tx) + FRAME_HDR, payload, PING_LEN);
	peer_commit(n, slot, type, PING_LEN);
	return 0;
}

/*
 * A frame of the peer's ring stream is done: count it, and owe an ACK once
 * a quarter of the ring is unacknowledged (the tick acks the rest). The
 * sender frees its TX ring only on ACKs, so once its ring is full each ACK
 * sets how much its next send carries: a sixteenth of a 1 MiB ring made
 * 64 KiB sends, and a quarter cut the CPU per 64 B message by 9 %.
 */
static void rx_stream_consume(struct pm_node *n, struct peer *p, uint32_t r)
{
	ring_consume(&p->rx, r);
	p->rx_pos += r;
	if (p->rx_pos - p->rx_acked >= p->rx.size / 4 && !p->ack_due) {
		p->ack_due = true;
		peer_mark_dirty(n, (uint32_t)(p - n->peers));
	}
}

/*
 * The stream is paused with frames waiting: apply the ACKs among them now.
 * They do not belong to the peer's ring stream and are cumulative, so
 * applying them early is safe (seen again in order, they are old news),
 * and a paused stream cannot starve its own TX of acknowledgements.
 */
static void acks_ahead(struct pm_node *n, uint32_t slot)
{
	struct peer *p = &n->peers[slot];
	uint32_t at = p->rx.head;
	struct frame f;

	while (at != p->rx.tail) {
		long r = frame_decode(p->rx.base + (at & p->rx.mask),
				      p->rx.tail - at, n->cfg.max_message, &f);

		if (r <= 0)
			return;
		if (f.type == FRAME_ACK && f.len == ACK_LEN &&
		    peer_acked(n, slot, get_be64(f.payload)))
			return;	/* bad: the in-order pass will say so */
		at += (uint32_t)r;
	}
}

/* Hands each whole frame in the RX ring to the user, in place. */
void peer_deliver(struct pm_node *n, uint32_t slot)
{
	struct peer *p = &n->peers[slot];
	uint32_t gen = p->gen;
	/* What a DATA message tells the callback beyond its bytes: fixed
	 * while gen is, and the loop ends when gen moves. */
	struct pm_message m = { .stream = handle_of(n, slot),
				.peer_id = p->id };
	struct frame f;

	if ((p->paused || p->held_on != NONE) && p->state == PEER_LIVE) {
		acks_ahead(n, slot);	/* more arrived behind the pause */
		return;
	}
	while (p->gen == gen && p->state == PEER_LIVE && !p->paused) {
		long r = frame_peek_data(ring_head_ptr(&p->rx),
					 ring_used(&p->rx),
					 n->cfg.max_message, &f);

		/* The common case first: one test instead of the six below. */
		if (r > 0 && !p->rx_skip)
			goto deliver;
		if (r == 0)
			r = frame_decode(ring_head_ptr(&p->rx),
					 ring_used(&p->rx), n->cfg.max_message,
					 &f);
		if (r == 0)
			break;
		if (r > 0 && (f.type == FRAME_ACK || f.type == FRAME_RESUME)) {
			/* Control, outside the peer's ring stream: not
			 * counted in rx_pos. */
			int x = -EBADMSG;

			if (f.type == FRAME_ACK && f.len == ACK_LEN)
				x = peer_acked(n, slot, get_be64(f.payload));
			if (f.type == FRAME_RESUME && f.len == RESUME_LEN) {
				peer_resumed(n, slot, get_be64(f.payload),
					     get_be64(f.payload + 8));
				x = 0;
			}
			if (p->gen != gen)
				return;
			if (!x) {
				ring_consume(&p->rx, (uint32_t)r);
				continue;
			}
			r = -EBADMSG;
		}
		if (r > 0 && p->rx_skip && f.type != FRAME_CLOSE) {
			/* Replayed after a reconnect: consumed before. */
			p->rx_skip -= (uint64_t)r < p->rx_skip ? (uint64_t)r :
				      p->rx_skip;
			ring_consume(&p->rx, (uint32_t)r);
			continue;
		}
		if (r > 0 && f.type >= FRAME_ROUTE && f.type <= FRAME_RACK) {
			int x = mesh_frame(n, slot, &f);

			if (x == -EAGAIN) {
				if (p->gen == gen) {
					p->paused = true;
					acks_ahead(n, slot);
				}
				return;
			}
			if (p->gen != gen)
				return;
			if (x == 0) {
				rx_stream_consume(n, p, (uint32_t)r);
				continue;
			}
			r = -EBADMSG;
		}
		if (r > 0 && (f.type == FRAME_PING || f.type == FRAME_PONG)) {
			if (f.len == PING_LEN) {
				if (f.type == FRAME_PING)
					peer_control(n, slot, FRAME_PONG,
						     f.payload);
				rx_stream_consume(n, p, (uint32_t)r);
				continue;
			}
			r = -EBADMSG;
		}
		if (r < 0 || (f.type != FRAME_DATA && f.type != FRAME_CLOSE)) {
			enum pm_close_reason why = r == -EMSGSIZE ?
				PM_CLOSE_TOO_BIG : PM_CLOSE_PROTOCOL;
			n->st.protocol_errors++;
			if (p->live != NONE)	/* else rx_final: it is gone */
				conn_reject(n, &n->conns[p->live], why);
			peer_closed(n, slot, -EPROTO, why);
			return;
		}
		if (f.type == FRAME_CLOSE) {
			int reason = close_parse(f.payload, f.len);

			if (reason == PM_CLOSE_SHUTDOWN)
				mesh_peer_left(n, p->id);
			ring_consume(&p->rx, (uint32_t)r);
			peer_closed(n, slot, 0, reason < 0 ? PM_CLOSE_PROTOCOL :
				    (enum pm_close_reason)reason);
			return;
		}
deliver:
		m.data = f.payload;
		m.len = f.len;
		if (n->cfg.on_message &&
		    n->cfg.on_message(n, &m, n->cfg.user) == -EAGAIN) {
			if (p->gen == gen) {
				p->paused = true;
				acks_ahead(n, slot);
			}
			return;
		}
		if (p->gen != gen)
			return;
		rx_stream_consume(n, p, (uint32_t)r);
		n->st.msgs_in++;
		n->st.bytes_in += f.len;
		p->msgs_in++;
		p->bytes_in += f.len;
	}
}

/* Self stream: its TX ring is its RX ring. Returns true if more is left. */
bool node_deliver_self(struct pm_node *n)
{
	struct peer *p = &n->peers[n->self];
	uint32_t end = p->tx.tail;

	while (!p->paused && p->tx.head != end) {
		uint8_t *at = ring_head_ptr(&p->tx);
		uint32_t len = get_be32(at);
		struct pm_message m = {
			.stream = handle_of(n, n->self),
			.peer_id = n->id,
			.data = at + FRAME_HDR,
			.len = len,
		};

		if (n->cfg.on_message &&
		    n->cfg.on_message(n, &m, n->cfg.user) == -EAGAIN) {
			p->paused = true;
			break;
		}
		ring_consume(&p->tx, FRAME_HDR + len);
		n->st.msgs_in++;
		n->st.bytes_in += len;
		if (p->want_writable) {
			p->want_writable = false;
			emit(n, PM_EV_WRITABLE, n->self, 0, PM_CLOSE_NONE, 0);
		}
	}
	return !p->paused && ring_used(&p->tx);
}

void node_flush_dirty(struct pm_node *n)
{
	/* Slots dirtied by callbacks run from here wait for the next turn,
	 * so the list never holds a slot twice and never overflows. */
	uint32_t end = n->ndirty;

	for (uint32_t i = 0; i < end; i++) {
		uint32_t slot = n->dirty[i];
		struct peer *p = &n->peers[slot];

		p->dirty = false;
		if (p->redeliver) {
			p->redeliver = false;
			peer_deliver(n, slot);
		}
		if (p->live != NONE) {
			conn_flush(n, &n->conns[p->live]);
			if (p->live != NONE)
				conn_arm_recv(n, &n->conns[p->live]);
		}
	}
	memmove(n->dirty, n->dirty + end, (n->ndirty - end) * sizeof(*n->dirty));
	n->ndirty -= end;
}

/* Moves whole frames from alias slot i into its target while they fit. */
static void drain_alias(struct pm_node *n, uint32_t i)
{
	struct peer *a = &n->peers[i];
	struct peer *t = &n->peers[a->alias_to];

	if (a->reserved || t->reserved || !ring_used(&a->tx))
		return;
	while (ring_used(&a->tx)) {
		uint32_t size = FRAME_HDR + get_be32(ring_head_ptr(&a->tx));

		if (ring_free(&t->tx) < size)
			break;
		memcpy(ring_tail_ptr(&t->tx), ring_head_ptr(&a->tx), size);
		ring_produce(&t->tx, size);
		ring_consume(&a->tx, size);
	}
	if (a->alias_to != n->self)
		peer_mark_dirty(n, a->alias_to);
	if (!ring_used(&a->tx))
		n->aliases--;
}

void node_drain_aliases(struct pm_node *n)
{
	for (uint32_t i = 0; i < n->self && n->aliases; i++)
		if (n->peers[i].state == PEER_ALIAS)
			drain_alias(n, i);
}

/* Public API. */

int pm_connect(struct pm_node *n, const char *addr, struct pm_stream *out)
{
	struct sockaddr_storage ss;
	socklen_t len;
	uint32_t slot;
	int r;

	r = addr_parse(addr, &ss, &len);
	if (r)
		return r;
	const struct sockaddr *sa = (struct sockaddr *)&ss;

	const struct sockaddr *la = (struct sockaddr *)&n->listen_addr;
	uint16_t port = ((struct sockaddr_in *)&ss)->sin_port;
	uint16_t lport = ((struct sockaddr_in *)&n->listen_addr)->sin_port;

	if (port == 0)
		return -EINVAL;
	if (addr_equal(sa, la) ||
	    (port == lport && sa->sa_family == la->sa_family &&
	     (addr_is_any(sa) || addr_is_any(la)))) {
		*out = handle_of(n, n->self);
		return 0;
	}
	slot = find_by_addr(n, sa, NONE, false, false);
	if (slot != NONE) {
		n->peers[slot].user_visible = true;
		*out = handle_of(n, slot);
		return 0;
	}
	slot = find_by_addr(n, sa, NONE, true, false);
	if (slot != NONE)
		slot = newest_closing(n, slot, sa);
	if (slot != NONE) {
		/* The old stream to that node is still closing. Dialling now
		 * would race its CLOSE (the peer could still hold the old
		 * connection live and refuse the new one as a duplicate) and
		 * let new messages overtake the old stream's last ones. */
		uint64_t id = n->peers[slot].id;
		uint32_t old = slot;

		slot = peer_alloc(n);
		if (slot == NONE)
			return -ENOSPC;
		struct peer *p = &n->peers[slot];

		memcpy(&p->addr, sa, len);
		p->addr_len = len;
		p->has_addr = true;
		p->user_visible = true;
		/* First the old stream must be gone, then its connections
		 * (wake_slot_waiters turns the one wait into the other). */
		(void)id;
		p->wait_id = 0;
		p->wait_slot = old;
		n->waiting++;
		*out = handle_of(n, slot);
		return 0;
	}
	r = peer_dial(n, sa, len, true);
	if (r < 0)
		return r;
	*out = handle_of(n, (uint32_t)r);
	return 0;
}

/*
 * Of the closing streams to sa, the one a new stream must wait for: the
 * newest, which no other closing stream waits for. A new stream that waited
 * for an older one would dial beside the newer closing one, as soon as the
 * older is gone, and its messages could overtake that one's last ones.
 */
static uint32_t newest_closing(struct pm_node *n, uint32_t old,
			       const struct sockaddr *sa)
{
	/* Each waits for an older one: the chain ends within n->self. */
	for (uint32_t hops = 0; hops < n->self; hops++) {
		uint32_t next = NONE;

		for (uint32_t i = 0; i < n->self && next == NONE; i++) {
			struct peer *p = &n->peers[i];

			if (i != old && p->wait_slot == old && p->has_addr &&
			    (p->state == PEER_CLOSING || p->rx_final) &&
			    addr_equal((struct sockaddr *)&p->addr, sa))
				next = i;
		}
		if (next == NONE)
			break;
		old = next;
	}
	return old;
}

/* A new stream dialling sa. Returns its slot, or -ENOSPC / -errno. */
int peer_dial(struct pm_node *n, const struct sockaddr *sa, socklen_t len,
	      bool user)
{
	uint32_t slot = peer_alloc(n);
	int r;

	if (slot == NONE)
		return -ENOSPC;
	struct peer *p = &n->peers[slot];

	memcpy(&p->addr, sa, len);
	p->addr_len = len;
	p->has_addr = true;
	p->user_visible = user;
	r = conn_dial(n, slot, sa, len);
	if (r) {
		peer_kill(n, slot);
		return r;
	}
	return (int)slot;
}

/* Closing slot `gone` has ended: its waiters now wait for its
 * connections to id to end, or dial at once if it never had a peer. */
static void wake_slot_waiters(struct pm_node *n, uint32_t gone, uint64_t id)
{
	bool any = false;

	for (uint32_t i = 0; i < n->self; i++) {
		struct peer *p = &n->peers[i];

		if (p->wait_slot != gone || p->state == PEER_FREE ||
		    p->state == PEER_ZOMBIE)
			continue;
		p->wait_slot = NONE;
		p->wait_id = id ? id : UINT64_MAX;
		any = true;
	}
	if (any)
		peer_wake_waiters(n, id ? id : UINT64_MAX);
}

/* A connection to id ended: dial the streams that waited for it, unless
 * another connection to that node is still open. */
void peer_wake_waiters(struct pm_node *n, uint64_t id)
{
	for (uint32_t i = 0; i < n->nconns; i++) {
		struct conn *c = &n->conns[i];

		if (c->state != CONN_FREE && c->hello.node_id == id)
			return;
	}
	for (uint32_t i = 0; i < n->self && n->waiting; i++) {
		struct peer *p = &n->peers[i];
		int r;

		if (p->wait_id != id)
			continue;
		p->wait_id = 0;
		n->waiting--;
		if (p->state != PEER_PENDING && p->state != PEER_CLOSING)
			continue;
		if (p->nconns || p->live != NONE)
			continue;	/* the peer dialled us meanwhile */
		r = conn_dial(n, i, (struct sockaddr *)&p->addr, p->addr_len);
		if (r)
			peer_closed(n, i, r, PM_CLOSE_NONE);
	}
}

uint32_t peer_by_id(struct pm_node *n, uint64_t id)
{
	return find_by_id(n, id, NONE);
}

/* slot stops reading until on's TX ring has room (relay backpressure). */
void peer_block_on(struct pm_node *n, uint32_t slot, uint32_t on)
{
	n->peers[slot].blocked_on = on;
	n->peers[on].has_blocked = true;
}

static void release_blocked(struct pm_node *n, uint32_t on)
{
	n->peers[on].has_blocked = false;
	for (uint32_t i = 0; i < n->self; i++) {
		struct peer *b = &n->peers[i];

		if (b->blocked_on != on)
			continue;
		b->blocked_on = NONE;
		if (b->paused && b->state == PEER_LIVE) {
			b->paused = false;
			b->redeliver = true;
			peer_mark_dirty(n, i);
		}
	}
}

int pm_stream_by_id(struct pm_node *n, uint64_t id, struct pm_stream *out)
{
	uint32_t slot;

	if (id == 0)
		return -EINVAL;
	if (id == n->id)
		return pm_self(n, out);
	slot = find_by_id(n, id, NONE);
	if (slot == NONE || n->peers[slot].state == PEER_CLOSING)
		return -ENOENT;
	n->peers[slot].user_visible = true;
	*out = handle_of(n, slot);
	return 0;
}

int pm_self(struct pm_node *n, struct pm_stream *out)
{
	*out = handle_of(n, n->self);
	return 0;
}

/* Whether p's TX ring takes a message of len now: 0 or -errno. */
static int tx_admits(struct pm_node *n, struct peer *p, size_t len)
{
	if (p->state == PEER_CLOSING || p->state == PEER_ZOMBIE)
		return -EPIPE;
	if (len > n->cfg.max_message || len > p->peer_max)
		return -EMSGSIZE;
	if (p->reserved)
		return -EBUSY;
	if (ring_free(&p->tx) < FRAME_HDR + len) {
		p->want_writable = true;
		return -EAGAIN;
	}
	return 0;
}

int peer_reserve(struct pm_node *n, uint32_t slot, size_t len, void **buf)
{
	struct peer *p = &n->peers[slot];
	int r = tx_admits(n, p, len);

	if (r)
		return r;
	p->reserved = true;
	p->reserve_len = (uint32_t)len;
	*buf = ring_tail_ptr(&p->tx) + FRAME_HDR;
	return 0;
}

/* Frames were added to slot's TX ring, which held was_used bytes before. */
static void tx_queued(struct pm_node *n, uint32_t slot, uint32_t was_used)
{
	struct peer *p = &n->peers[slot];

	if (p->state == PEER_ALIAS)
		n->aliases += was_used == 0;
	else if (!p->dirty && slot != n->self)
		peer_mark_dirty(n, slot);	/* once per turn, not per message */
}

void peer_commit(struct pm_node *n, uint32_t slot, uint8_t type, size_t len)
{
	struct peer *p = &n->peers[slot];
	uint32_t was_used = ring_used(&p->tx);

	frame_put_hdr(ring_tail_ptr(&p->tx), type, (uint32_t)len);
	ring_produce(&p->tx, FRAME_HDR + (uint32_t)len);
	p->reserved = false;
	tx_queued(n, slot, was_used);
}

/* The user's messages queued on p, for the node's and the stream's stats. */
static void count_sent(struct pm_node *n, struct peer *p, uint64_t msgs,
		       uint64_t bytes)
{
	n->st.msgs_out += msgs;
	n->st.bytes_out += bytes;
	p->msgs_out += msgs;
	p->bytes_out += bytes;
}

int pm_reserve(struct pm_node *n, struct pm_stream s, size_t len, void **buf)
{
	uint32_t slot;
	struct peer *p = lookup(n, s, &slot);

	if (!p)
		return -ESTALE;
	return peer_reserve(n, resolve(n, slot), len, buf);
}

int pm_commit(struct pm_node *n, struct pm_stream s, size_t len)
{
	uint32_t slot;
	struct peer *p = lookup(n, s, &slot);

	if (!p)
		return -ESTALE;
	slot = resolve(n, slot);
	p = &n->peers[slot];
	if (!p->reserved || len > p->reserve_len)
		return -EINVAL;
	peer_commit(n, slot, FRAME_DATA, len);
	count_sent(n, p, 1, len);
	return 0;
}

int pm_send(struct pm_node *n, struct pm_stream s, const void *buf,
	    size_t len)
{
	void *dst;
	int r = pm_reserve(n, s, len, &dst);

	if (r)
		return r;
	memcpy(dst, buf, len);
	return pm_commit(n, s, len);
}

int pm_sendv(struct pm_node *n, struct pm_stream s, const struct iovec *msgs,
	     size_t count)
{
	uint32_t slot, was_used, room, max;
	struct peer *p = lookup(n, s, &slot);
	uint64_t bytes = 0;
	uint8_t *at;
	size_t i;
	int r;

	if (!p)
		return -ESTALE;
	if (!count)
		return 0;
	if (!msgs)
		return -EINVAL;
	slot = resolve(n, slot);
	p = &n->peers[slot];
	/* msgs[0] gets pm_send's checks and errors; the stream's state
	 * cannot change inside this loop, so the others need only size and
	 * room, counted here and produced once. The mirror keeps the frames
	 * contiguous across the wrap. */
	r = tx_admits(n, p, msgs[0].iov_len);
	if (r)
		return r;
	max = n->cfg.max_message < p->peer_max ? n->cfg.max_message :
						 p->peer_max;
	room = ring_free(&p->tx);
	was_used = ring_used(&p->tx);
	at = ring_tail_ptr(&p->tx);
	for (i = 0; i < count; i++) {
		size_t len = msgs[i].iov_len;

		if (len > max)
			break;
		if (room < FRAME_HDR + len) {
			p->want_writable = true;
			break;
		}
		room -= FRAME_HDR + (uint32_t)len;
		frame_put_hdr(at, FRAME_DATA, (uint32_t)len);
		if (len)	/* memcpy's source must be valid even for 0 */
			memcpy(at + FRAME_HDR, msgs[i].iov_base, len);
		at += FRAME_HDR + len;
		bytes += len;
	}
	ring_produce(&p->tx, (uint32_t)(bytes + FRAME_HDR * i));
	tx_queued(n, slot, was_used);
	count_sent(n, p, i, bytes);
	return (int)i;
}

int pm_close(struct pm_node *n, struct pm_stream s)
{
	uint32_t slot;
	struct peer *p = lookup(n, s, &slot);

	if (!p)
		return -ESTALE;
	slot = resolve(n, slot);
	p = &n->peers[slot];
	if (p->state == PEER_SELF)
		return -EINVAL;
	if (p->state == PEER_ALIAS) {
		/* Its messages still drain into the target, then it goes. */
		return 0;
	}
	if (p->state == PEER_CLOSING)
		return 0;
	if (p->rx_final) {
		/* The peer ended it already, no connection is left: what
		 * it holds undelivered goes with it. */
		peer_closed(n, slot, 0, PM_CLOSE_NORMAL);
		return 0;
	}
	if (p->state == PEER_LIVE)
		n->mesh_dirty = true;	/* stop routing through it now */
	p->state = PEER_CLOSING;
	p->close_reason = PM_CLOSE_NORMAL;
	if (p->live != NONE)
		conn_graceful(n, &n->conns[p->live], PM_CLOSE_NORMAL);
	return 0;
}

int pm_stream_resume(struct pm_node *n, struct pm_stream s)
{
	uint32_t slot;
	struct peer *p = lookup(n, s, &slot);

	if (!p)
		return -ESTALE;
	if (!p->paused)
		return 0;
	p->paused = false;
	if (slot != n->self) {
		p->redeliver = true;
		peer_mark_dirty(n, slot);
	}
	return 0;
}

int pm_stream_peer_id(struct pm_node *n, struct pm_stream s, uint64_t *id)
{
	uint32_t slot;
	struct peer *p = lookup(n, s, &slot);

	if (!p)
		return -ESTALE;
	if (p->state == PEER_SELF) {
		*id = n->id;
		return 0;
	}
	if (!p->id)
		return -EAGAIN;
	*id = p->id;
	return 0;
}

bool pm_stream_same(struct pm_node *n, struct pm_stream a,
		    struct pm_stream b)
{
	uint32_t x, y;

	if (!lookup(n, a, &x) || !lookup(n, b, &y))
		return false;
	if (n->peers[x].state == PEER_ALIAS)
		x = n->peers[x].alias_to;
	if (n->peers[y].state == PEER_ALIAS)
		y = n->peers[y].alias_to;
	return x == y;
}

int64_t pm_stream_queued(struct pm_node *n, struct pm_stream s)
{
	uint32_t slot;
	struct peer *p = lookup(n, s, &slot);
	int64_t q;

	if (!p)
		return -ESTALE;
	q = ring_used(&p->tx);
	if (p->state == PEER_ALIAS)
		q += ring_used(&n->peers[p->alias_to].tx);
	return q;
}
