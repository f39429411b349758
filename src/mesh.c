/* SPDX-License-Identifier: MIT */
/*
 * The mesh above pair streams: each node floods a LINKS frame listing its
 * live neighbours whenever that set changes; every node thus knows the
 * whole graph, dials the members it is not connected to (auto-connect),
 * and routes by breadth-first search over links both ends confirm (so a
 * dead node's stale claims route nothing). Broadcasts flood with
 * per-origin sequence numbers and a 64-wide duplicate window. A relay
 * copies a frame once, RX ring to TX ring, and when the next hop is full
 * it pauses the inbound stream instead of buffering or dropping.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "node.h"

static uint32_t hash_id(uint64_t id)
{
	id ^= id >> 33;
	id *= 0xff51afd7ed558ccdULL;
	id ^= id >> 33;
	return (uint32_t)id;
}

struct mesh_entry *mesh_entry_find(struct pm_node *n, uint64_t id)
{
	for (uint32_t h = hash_id(id) & n->mesh_hmask;; h = (h + 1) & n->mesh_hmask) {
		uint32_t i = n->mesh_hash[h];

		if (!i)
			return NULL;
		if (n->mesh[i - 1].id == id)
			return &n->mesh[i - 1];
	}
}

/* Finds or adds id; NULL when the table is full (the mesh outgrew it). */
struct mesh_entry *mesh_entry_get(struct pm_node *n, uint64_t id)
{
	struct mesh_entry *e = mesh_entry_find(n, id);
	uint32_t h;

	if (e || !id)
		return e;
	if (n->mesh_used == n->mesh_cap)
		return NULL;
	e = &n->mesh[n->mesh_used++];
	e->id = id;
	e->next_slot = NONE;
	e->direct_slot = NONE;
	for (h = hash_id(id) & n->mesh_hmask; n->mesh_hash[h];
	     h = (h + 1) & n->mesh_hmask)
		;
	n->mesh_hash[h] = n->mesh_used;
	return e;
}

static uint64_t realtime_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

int mesh_init(struct pm_node *n)
{
	uint32_t cap = n->cfg.max_peers * 4 < 256 ? 256 : n->cfg.max_peers * 4;
	uint32_t hsize = 1;

	while (hsize < 2 * cap)
		hsize <<= 1;
	n->mesh_cap = cap;
	n->mesh_hmask = hsize - 1;
	n->mesh = calloc(cap, sizeof(*n->mesh));
	n->mesh_hash = calloc(hsize, sizeof(*n->mesh_hash));
	n->bfs = calloc(cap, sizeof(*n->bfs));
	n->route_prev = calloc(cap, sizeof(*n->route_prev));
	if (!n->mesh || !n->mesh_hash || !n->bfs || !n->route_prev)
		return -ENOMEM;
	/* Sequences start from the clock so a restarted node's frames are
	 * newer than anything its previous life sent. */
	n->lsa_seq = n->bc_seq = n->rt_clock = realtime_us();
	mesh_entry_get(n, n->id);	/* index 0: self */
	return 0;
}

void mesh_fini(struct pm_node *n)
{
	route_fini(n);
	for (uint32_t i = 0; n->mesh && i < n->mesh_used; i++)
		free(n->mesh[i].links);
	free(n->mesh);
	free(n->mesh_hash);
	free(n->bfs);
	free(n->route_prev);
}

static void put_addr(uint8_t *p, const struct sockaddr_storage *ss,
		     socklen_t len)
{
	struct hello h = { 0 };

	if (len)
		addr_to_hello((const struct sockaddr *)ss, &h);
	p[0] = h.addr_type;
	p[1] = 0;
	put_be16(p + 2, h.port);
	memcpy(p + 4, h.addr, 16);
}

static socklen_t get_addr(const uint8_t *p, struct sockaddr_storage *out)
{
	struct hello h = { .addr_type = p[0], .port = get_be16(p + 2) };

	memcpy(h.addr, p + 4, 16);
	if (h.addr_type > ADDR_TCP6 || !h.port)
		return 0;	/* no address, or none that can be dialled */
	return addr_from_hello(&h, NULL, out);
}

static int links_cmp(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static bool links_has(const struct mesh_entry *e, uint64_t id)
{
	return e->nlinks && bsearch(&id, e->links, e->nlinks, sizeof(id),
				    links_cmp);
}

/* Writes e's LINKS frame into slot's TX ring. */
static int send_links(struct pm_node *n, uint32_t slot,
		      const struct mesh_entry *e)
{
	size_t len = MESH_HDR + MESH_ADDR + (size_t)e->nlinks * LINK_ENTRY;
	uint8_t *p;
	void *buf;
	int r = peer_reserve(n, slot, len, &buf);

	if (r)
		return r;
	p = buf;
	mesh_put_hdr(p, e->id, e->lsa_seq, 0, n->cfg.max_hops, (uint16_t)e->nlinks);
	put_addr(p + MESH_HDR, &e->addr, e->addr_len);
	p += MESH_HDR + MESH_ADDR;
	for (uint32_t i = 0; i < e->nlinks; i++, p += LINK_ENTRY) {
		struct mesh_entry *l = mesh_entry_find(n, e->links[i]);

		put_be64(p, e->links[i]);
		if (l)
			put_addr(p + 8, &l->addr, l->addr_len);
		else
			memset(p + 8, 0, MESH_ADDR);
	}
	peer_commit(n, slot, FRAME_LINKS, len);
	return 0;
}

bool mesh_is_neighbour(struct pm_node *n, uint32_t slot)
{
	/* A stream whose connection ended behind the peer's CLOSE only
	 * delivers what it holds: no neighbour. */
	return n->peers[slot].state == PEER_LIVE && n->peers[slot].id &&
	       !n->peers[slot].rx_final;
}

/* Our own LINKS: the live neighbours, re-announced on every change. */
static void originate(struct pm_node *n)
{
	struct mesh_entry *self = &n->mesh[0];
	uint32_t count = 0;

	for (uint32_t i = 0; i < n->self; i++)
		count += mesh_is_neighbour(n, i);
	if (count > self->cap) {
		uint64_t *l = realloc(self->links, count * sizeof(*l));

		if (!l)
			return;
		self->links = l;
		self->cap = count;
	}
	self->nlinks = 0;
	for (uint32_t i = 0; i < n->self; i++) {
		if (!mesh_is_neighbour(n, i))
			continue;
		struct mesh_entry *e = mesh_entry_get(n, n->peers[i].id);

		self->links[self->nlinks++] = n->peers[i].id;
		if (e && !e->addr_len && n->peers[i].has_addr) {
			e->addr = n->peers[i].addr;
			e->addr_len = n->peers[i].addr_len;
		}
	}
	if (self->nlinks > 1)
		qsort(self->links, self->nlinks, sizeof(uint64_t), links_cmp);
	self->addr = n->listen_addr;
	self->addr_len = n->listen_len;
	self->lsa_seq = ++n->lsa_seq;
	for (uint32_t i = 0; i < n->self; i++)
		if (mesh_is_neighbour(n, i) && send_links(n, i, self))
			n->peers[i].links_owed = n->mesh_owed = true;
}

/* Every LINKS we know, to one neighbour: a newcomer, or one whose ring was
 * full when we last announced. */
static void send_table(struct pm_node *n, uint32_t slot)
{
	n->peers[slot].links_owed = false;
	for (uint32_t i = 0; i < n->mesh_used; i++) {
		struct mesh_entry *e = &n->mesh[i];

		if (!e->lsa_seq || e->id == n->peers[slot].id)
			continue;
		if (send_links(n, slot, e)) {
			n->peers[slot].links_owed = true;
			n->mesh_owed = true;
			return;
		}
	}
}

static void dial_unknown(struct pm_node *n, struct mesh_entry *e)
{
	uint64_t now;

	if (n->cfg.no_auto_connect || n->shutting_down || !e->addr_len ||
	    e == &n->mesh[0] ||
	    peer_by_id(n, e->id) != NONE || n->peer_free == NONE)
		return;
	now = node_now_ms();
	if (now < e->dial_after_ms)
		return;
	/* Backoff, so a member that cannot be dialled is not hammered. */
	e->dial_after_ms = now + 2000;
	peer_dial(n, (struct sockaddr *)&e->addr, e->addr_len, false);
}

/* Breadth-first over links both ends confirm; records first hops. */
static void recompute(struct pm_node *n)
{
	uint32_t head = 0, tail = 0;
	bool changed = false;

	for (uint32_t i = 0; i < n->mesh_used; i++) {
		n->route_prev[i] = n->mesh[i].next_slot;
		n->mesh[i].hops = 0;
		n->mesh[i].next_slot = NONE;
	}
	n->bfs[tail++] = 0;
	while (head < tail) {
		struct mesh_entry *u = &n->mesh[n->bfs[head++]];

		for (uint32_t k = 0; k < u->nlinks; k++) {
			struct mesh_entry *v = mesh_entry_find(n, u->links[k]);

			if (!v || v == &n->mesh[0] || v->hops)
				continue;
			if (!links_has(v, u->id) && u != &n->mesh[0])
				continue;	/* not confirmed by v */
			if (u == &n->mesh[0]) {
				v->next_slot = v->direct_slot;
				if (v->next_slot == NONE)
					continue;
			} else {
				v->next_slot = u->next_slot;
			}
			v->hops = u->hops + 1;
			n->bfs[tail++] = (uint32_t)(v - n->mesh);
		}
	}
	for (uint32_t i = 1; i < n->mesh_used; i++) {
		if (n->route_prev[i] != n->mesh[i].next_slot)
			changed = true;
		if (n->mesh[i].hops >= 2)
			dial_unknown(n, &n->mesh[i]);
	}
	if (changed) {
		n->st.route_changes++;
		emit(n, PM_EV_ROUTES, NONE, 0, PM_CLOSE_NONE, 0);
	}
}

void mesh_peer_up(struct pm_node *n, uint32_t slot)
{
	struct mesh_entry *e = mesh_entry_get(n, n->peers[slot].id);

	if (e)
		e->direct_slot = slot;
	if (e && n->peers[slot].has_addr) {
		e->addr = n->peers[slot].addr;
		e->addr_len = n->peers[slot].addr_len;
	}
	/* Teach the newcomer the mesh we know; our own LINKS follow from
	 * originate() at the end of this turn. */
	send_table(n, slot);
	n->mesh_dirty = true;
}

/* The node said it is shutting down: others may still list it for a
 * while; do not dial it back in the meantime. */
void mesh_peer_left(struct pm_node *n, uint64_t id)
{
	struct mesh_entry *e = mesh_entry_find(n, id);

	if (e)
		e->dial_after_ms = node_now_ms() + 10000;
}

void mesh_peer_down(struct pm_node *n, uint32_t slot)
{
	struct mesh_entry *e = mesh_entry_find(n, n->peers[slot].id);

	if (e && e->direct_slot == slot)
		e->direct_slot = NONE;
	n->mesh_dirty = true;
}

void mesh_turn(struct pm_node *n)
{
	uint64_t now;

	if (n->mesh_dirty) {
		n->mesh_dirty = false;
		originate(n);
		recompute(n);
	}
	route_turn(n);
	if (n->mesh_owed) {
		n->mesh_owed = false;
		for (uint32_t i = 0; i < n->self; i++)
			if (n->peers[i].links_owed && mesh_is_neighbour(n, i))
				send_table(n, i);
	}
	if (n->cfg.no_auto_connect || n->mesh_used < 2)
		return;
	/* Retry dials that failed, even when nothing else changes. */
	now = node_now_ms();
	if (now < n->mesh_retry_ms)
		return;
	n->mesh_retry_ms = now + 2000;
	for (uint32_t i = 1; i < n->mesh_used; i++)
		if (n->mesh[i].hops >= 2)
			dial_unknown(n, &n->mesh[i]);
}

/* Sends UNREACH back to origin, saying target could not be reached. */
static void report_unreachable(struct pm_node *n, uint64_t origin,
			       uint64_t target)
{
	struct mesh_entry *e = mesh_entry_find(n, origin);
	uint8_t *p;
	void *buf;

	if (origin == n->id) {
		n->st.unreachable++;
		struct pm_event ev = {
			.type = PM_EV_UNREACHABLE, .peer_id = target,
			.error = -EHOSTUNREACH,
		};

		if (n->cfg.on_event)
			n->cfg.on_event(n, &ev, n->cfg.user);
		return;
	}
	if (!e || e->next_slot == NONE ||
	    peer_reserve(n, e->next_slot, MESH_HDR + 8, &buf))
		return;
	p = buf;
	mesh_put_hdr(p, n->id, origin, 0, n->cfg.max_hops, 0);
	put_be64(p + MESH_HDR, target);
	peer_commit(n, e->next_slot, FRAME_UNREACH, MESH_HDR + 8);
}

/* relayed counts users' messages only (ROUTE, FLOOD), not the mesh's
 * own control frames (LINKS, RACK, UNREACH), so it measures relay load. */
static void count_relayed(struct pm_node *n, uint32_t next, uint8_t type)
{
	if (type != FRAME_ROUTE && type != FRAME_FLOOD)
		return;
	n->peers[next].relayed++;
	n->st.relayed++;
}

/* Forwards a ROUTE or UNREACH frame one hop on. -EAGAIN: paused. */
static int forward(struct pm_node *n, uint32_t from, const struct frame *f,
		   uint64_t origin, uint64_t dst)
{
	struct mesh_entry *e = mesh_entry_find(n, dst);
	uint32_t next;
	void *buf;
	int r;

	if (f->payload[17] <= 1) {
		n->st.dropped_hop_limit++;
		if (f->type == FRAME_ROUTE)
			report_unreachable(n, origin, dst);
		return 0;
	}
	next = e ? e->direct_slot : NONE;
	if (next == NONE || !mesh_is_neighbour(n, next))
		next = e ? e->next_slot : NONE;
	if (next == NONE || next == from) {
		n->st.dropped_no_route++;
		if (f->type == FRAME_ROUTE)
			report_unreachable(n, origin, dst);
		return 0;
	}
	r = peer_reserve(n, next, f->len, &buf);
	if (r == -EAGAIN || r == -EBUSY) {
		/* Full (or the user holds a reservation): stop reading the
		 * inbound stream until the next hop drains. */
		n->peers[next].want_writable = false;
		peer_block_on(n, from, next);
		return -EAGAIN;
	}
	if (r) {
		/* -EMSGSIZE (a smaller limit on the next hop) or -EPIPE. */
		n->st.dropped_no_route++;
		if (f->type == FRAME_ROUTE)
			report_unreachable(n, origin, dst);
		return 0;
	}
	/* The one copy of the relay path: RX ring to TX ring. */
	memcpy(buf, f->payload, f->len);
	((uint8_t *)buf)[16] = f->payload[16] + 1;
	((uint8_t *)buf)[17] = f->payload[17] - 1;
	peer_commit(n, next, f->type, f->len);
	count_relayed(n, next, f->type);
	return 0;
}

/* Checks every other neighbour can take len more bytes; else pauses. */
static int flood_room(struct pm_node *n, uint32_t from, uint32_t len)
{
	for (uint32_t i = 0; i < n->self; i++) {
		if (i == from || !mesh_is_neighbour(n, i))
			continue;
		if (n->peers[i].reserved ||
		    ring_free(&n->peers[i].tx) < FRAME_HDR + len) {
			peer_block_on(n, from, i);
			return -EAGAIN;
		}
	}
	return 0;
}

static void flood(struct pm_node *n, uint32_t from, const struct frame *f)
{
	for (uint32_t i = 0; i < n->self; i++) {
		void *buf;

		if (i == from || !mesh_is_neighbour(n, i))
			continue;
		if (peer_reserve(n, i, f->len, &buf))
			continue;	/* room was checked: only a reservation */
		memcpy(buf, f->payload, f->len);
		((uint8_t *)buf)[16] = f->payload[16] + 1;
		((uint8_t *)buf)[17] = f->payload[17] - 1;
		peer_commit(n, i, f->type, f->len);
		count_relayed(n, i, f->type);
	}
}

/* Returns true if (origin, seq) is new; marks it seen when mark. */
static bool window_new(struct mesh_entry *e, uint64_t seq, bool mark)
{
	if (seq > e->bc_max) {
		if (mark) {
			uint64_t shift = seq - e->bc_max;

			e->bc_window = shift >= 64 ? 0 : e->bc_window << shift;
			e->bc_window |= 1;
			e->bc_max = seq;
		}
		return true;
	}
	uint64_t back = e->bc_max - seq;

	if (back >= 64 || (e->bc_window >> back & 1))
		return false;
	if (mark)
		e->bc_window |= 1ULL << back;
	return true;
}

int mesh_deliver(struct pm_node *n, uint32_t from, const struct frame *f,
		 uint64_t origin, uint32_t hdr, uint32_t flags)
{
	/* stream is the neighbour it came through: the handle to resume if
	 * the callback pauses; answers go to the origin with pm_send_to. */
	struct pm_message m = {
		.stream = handle_of(n, from),
		.peer_id = origin,
		.data = f->payload + hdr,
		.len = f->len - hdr,
		.flags = flags,
		.hops = f->payload[16],
	};

	if (n->cfg.on_message && n->cfg.on_message(n, &m, n->cfg.user) == -EAGAIN)
		return -EAGAIN;
	n->st.msgs_in++;
	n->st.bytes_in += m.len;
	return 0;
}

static int on_flood(struct pm_node *n, uint32_t from, const struct frame *f,
		    uint64_t origin, uint64_t seq)
{
	struct mesh_entry *e;
	int r;

	if (origin == n->id || !(e = mesh_entry_get(n, origin)) ||
	    !window_new(e, seq, false)) {
		n->st.duplicates_dropped++;
		return 0;
	}
	if (f->payload[17] > 1 && flood_room(n, from, f->len))
		return -EAGAIN;
	r = mesh_deliver(n, from, f, origin, MESH_HDR, PM_MSG_BROADCAST);
	if (r)
		return r;
	window_new(e, seq, true);
	if (f->payload[17] > 1)
		flood(n, from, f);
	return 0;
}

static int on_links(struct pm_node *n, uint32_t from, const struct frame *f,
		    uint64_t origin, uint64_t seq)
{
	uint32_t count = get_be16(f->payload + 18);
	struct mesh_entry *e;

	if (f->len != MESH_HDR + MESH_ADDR + (size_t)count * LINK_ENTRY)
		return -EBADMSG;
	if (origin == n->id || !(e = mesh_entry_get(n, origin)) ||
	    seq <= e->lsa_seq)
		return 0;	/* old news */
	if (f->payload[17] > 1 && flood_room(n, from, f->len))
		return -EAGAIN;
	if (count > e->cap) {
		uint64_t *l = realloc(e->links, count * sizeof(*l));

		if (!l)
			return 0;
		e->links = l;
		e->cap = count;
	}
	e->lsa_seq = seq;
	e->nlinks = 0;
	struct sockaddr_storage ss;
	socklen_t len = get_addr(f->payload + MESH_HDR, &ss);

	if (len && !addr_is_any((struct sockaddr *)&ss) &&
	    peer_by_id(n, origin) == NONE) {
		e->addr = ss;
		e->addr_len = len;
	}
	const uint8_t *p = f->payload + MESH_HDR + MESH_ADDR;

	for (uint32_t i = 0; i < count; i++, p += LINK_ENTRY) {
		uint64_t id = get_be64(p);
		struct mesh_entry *l = mesh_entry_get(n, id);

		e->links[e->nlinks++] = id;
		len = get_addr(p + 8, &ss);
		if (l && len && !l->addr_len &&
		    !addr_is_any((struct sockaddr *)&ss)) {
			l->addr = ss;
			l->addr_len = len;
		}
	}
	if (e->nlinks > 1)
		qsort(e->links, e->nlinks, sizeof(uint64_t), links_cmp);
	if (f->payload[17] > 1)
		flood(n, from, f);
	recompute(n);
	return 0;
}

int mesh_frame(struct pm_node *n, uint32_t slot, const struct frame *f)
{
	uint64_t a, b;

	if (f->len < MESH_HDR ||
	    (f->type == FRAME_UNREACH && f->len != MESH_HDR + 8) ||
	    (f->type == FRAME_ROUTE && f->len < ROUTE_HDR) ||
	    (f->type == FRAME_RACK && f->len != RACK_LEN))
		return -EBADMSG;
	a = get_be64(f->payload);
	b = get_be64(f->payload + 8);
	switch (f->type) {
	case FRAME_ROUTE:
		if (b == n->id)
			return route_receive(n, slot, f, a);
		return forward(n, slot, f, a, b);
	case FRAME_RACK:
		if (b == n->id) {
			route_ack_received(n, f, a);
			return 0;
		}
		return forward(n, slot, f, a, b);
	case FRAME_UNREACH:
		if (b == n->id) {
			uint64_t target = get_be64(f->payload + MESH_HDR);

			route_unreach(n, target);
			report_unreachable(n, n->id, target);
			return 0;
		}
		return forward(n, slot, f, a, b);
	case FRAME_FLOOD:
		return on_flood(n, slot, f, a, b);
	case FRAME_LINKS:
		return on_links(n, slot, f, a, b);
	default:
		return -EBADMSG;
	}
}

/* Public API. */

int pm_send_to(struct pm_node *n, uint64_t id, const void *buf, size_t len)
{
	struct mesh_entry *e;
	uint32_t live, d;

	if (!id)
		return -EINVAL;
	if (id == n->id)
		return pm_send(n, handle_of(n, n->self), buf, len);
	if (n->mesh_dirty)
		mesh_turn(n);
	e = mesh_entry_find(n, id);
	live = e && e->direct_slot != NONE && mesh_is_neighbour(n, e->direct_slot) ?
	       e->direct_slot : NONE;
	/*
	 * One path at a time per destination, so that messages keep their
	 * order: the direct stream (its session delivers in order across
	 * reconnects) or the routed session. Switch only once all that was
	 * sent the other way is acknowledged.
	 */
	if (e && ring_used(&e->rt)) {
		if (live != NONE) {
			e->rt_want_writable = true;
			return -EAGAIN;	/* the routed ones first */
		}
		return route_send(n, e, buf, len);
	}
	if (live != NONE)
		return pm_send(n, handle_of(n, live), buf, len);
	/* No live stream: one resuming, being dialled or still holding
	 * queued messages keeps the order. Finding it is a scan of the
	 * slab, off the paths above that carry the traffic. */
	d = peer_by_id(n, id);
	if (d != NONE && n->peers[d].state == PEER_CLOSING)
		d = NONE;
	if (d != NONE && (n->peers[d].resuming || ring_used(&n->peers[d].tx)))
		return pm_send(n, handle_of(n, d), buf, len);
	if (e && e->next_slot != NONE)
		return route_send(n, e, buf, len);
	if (d != NONE) {
		/* Being dialled, no route meanwhile: queue on it, and let its
		 * close report what it held. */
		n->peers[d].user_visible = true;
		return pm_send(n, handle_of(n, d), buf, len);
	}
	return -EHOSTUNREACH;
}

int pm_broadcast(struct pm_node *n, const void *buf, size_t len)
{
	uint32_t sent = 0;
	uint64_t seq;

	if (len + MESH_HDR > n->cfg.max_message)
		return -EMSGSIZE;
	for (uint32_t i = 0; i < n->self; i++) {
		if (!mesh_is_neighbour(n, i))
			continue;
		if (n->peers[i].reserved ||
		    ring_free(&n->peers[i].tx) < FRAME_HDR + MESH_HDR + len) {
			n->peers[i].want_writable = true;
			return -EAGAIN;
		}
	}
	seq = ++n->bc_seq;
	for (uint32_t i = 0; i < n->self; i++) {
		void *dst;

		if (!mesh_is_neighbour(n, i) ||
		    peer_reserve(n, i, MESH_HDR + len, &dst))
			continue;
		mesh_put_hdr(dst, n->id, seq, 0, n->cfg.max_hops, 0);
		memcpy((uint8_t *)dst + MESH_HDR, buf, len);
		peer_commit(n, i, FRAME_FLOOD, MESH_HDR + len);
		sent++;
	}
	n->st.msgs_out++;
	n->st.bytes_out += len;
	return (int)sent;
}

int pm_mesh_peers(struct pm_node *n, struct pm_peer_info *out, size_t max)
{
	size_t k = 0;

	if (n->mesh_dirty)
		mesh_turn(n);
	for (uint32_t i = 1; i < n->mesh_used; i++) {
		struct mesh_entry *e = &n->mesh[i];
		uint32_t slot = peer_by_id(n, e->id);

		if (slot == NONE && !e->lsa_seq && e->next_slot == NONE)
			continue;	/* only heard of, never seen */
		if (k < max) {
			struct pm_peer_info *o = &out[k];

			memset(o, 0, sizeof(*o));
			o->id = e->id;
			if (e->addr_len)
				addr_format((struct sockaddr *)&e->addr,
					    o->addr, sizeof(o->addr));
			o->direct = slot != NONE && mesh_is_neighbour(n, slot);
			o->reachable = e->next_slot != NONE;
			o->hops = e->hops;
			if (e->next_slot != NONE)
				o->via = n->peers[e->next_slot].id;
			if (slot != NONE) {
				struct peer *p = &n->peers[slot];

				o->msgs_in = p->msgs_in;
				o->msgs_out = p->msgs_out;
				o->bytes_in = p->bytes_in;
				o->bytes_out = p->bytes_out;
				o->relayed = p->relayed;
			}
		}
		k++;
	}
	return (int)k;
}
