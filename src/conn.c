/* SPDX-License-Identifier: MIT */
/*
 * One transport connection: dial or accept, the handshake (HELLO, then the
 * arbiter's verdict), the live phase that moves bytes between the socket and
 * the peer's rings, and the close. The decisions about peers live in
 * stream.c; this file only moves bytes and states (docs/PROTOCOL.md,
 * "Connection state machine").
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/tcp.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "node.h"

struct conn *conn_get(struct pm_node *n, uint32_t ci)
{
	return ci < n->nconns ? &n->conns[ci] : NULL;
}

static uint32_t conn_index(struct pm_node *n, struct conn *c)
{
	return (uint32_t)(c - n->conns);
}

static uint64_t conn_tag(struct pm_node *n, struct conn *c, enum op op)
{
	return make_tag(conn_index(n, c), c->gen, op);
}

static struct conn *conn_alloc(struct pm_node *n, int fd, bool dialled)
{
	struct conn *c;
	uint32_t ci = n->conn_free;

	if (ci == NONE)
		return NULL;
	c = &n->conns[ci];
	n->conn_free = c->next_free;

	uint32_t gen = c->gen;

	memset(c, 0, sizeof(*c));
	c->gen = gen;
	c->fd = fd;
	c->dialled = dialled;
	c->peer = NONE;
	c->born_ms = c->last_rx_ms = node_now_ms();
	c->next_free = NONE;
	n->conns_used++;
	return c;
}

static void conn_release(struct pm_node *n, struct conn *c)
{
	uint64_t id = c->hello.node_id;

	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	c->state = CONN_FREE;
	c->gen++;
	c->next_free = n->conn_free;
	n->conn_free = conn_index(n, c);
	n->conns_used--;
	if (n->waiting && id)
		peer_wake_waiters(n, id);
}

static void set_nodelay(int fd)
{
	int one = 1;

	/* Latency over packet count: frames are already batched in the ring. */
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

static void queue_hello(struct pm_node *n, struct conn *c)
{
	struct hello h = {
		.version = PM_PROTOCOL_VERSION,
		.node_id = n->id,
		.nonce = n->nonce,
		.max_message = n->cfg.max_message,
	};

	addr_to_hello((struct sockaddr *)&n->listen_addr, &h);
	if (n->has_key)
		h.flags |= HELLO_F_AUTH;
	if (c->peer != NONE && n->peers[c->peer].resuming)
		h.flags |= HELLO_F_RESUME;
	hello_put(c->hs_tx, &h);
	c->hs_tx_len = FRAME_HDR + HELLO_LEN;
	c->hs_tx_off = 0;
	if (!n->has_key)
		return;
	/* A fresh challenge per connection: a recorded proof is useless. */
	randombytes_buf(c->my_chal, AUTH_LEN);
	conn_queue_frame(c, FRAME_AUTH, c->my_chal, AUTH_LEN);
}

/*
 * The proof that `prover` holds the key: a MAC over the verifier's
 * challenge, the prover's, and both ids in prover-first order, so a proof
 * cannot be reflected back or replayed on another connection.
 */
static void auth_proof(const struct pm_node *n, uint8_t out[AUTH_LEN],
		       const uint8_t *verifier_chal, const uint8_t *prover_chal,
		       uint64_t prover, uint64_t verifier)
{
	static const char label[16] = "pairmesh auth v1";
	uint8_t in[16 + 2 * AUTH_LEN + 16];

	memcpy(in, label, 16);
	memcpy(in + 16, verifier_chal, AUTH_LEN);
	memcpy(in + 16 + AUTH_LEN, prover_chal, AUTH_LEN);
	put_be64(in + 16 + 2 * AUTH_LEN, prover);
	put_be64(in + 24 + 2 * AUTH_LEN, verifier);
	crypto_auth(out, in, sizeof(in), n->key);
}

/* Appends a handshake frame (HELLO's followers, ACCEPT, CLOSE) behind
 * what hs_tx still has to send; hs_tx holds them all at once. */
void conn_queue_frame(struct conn *c, uint8_t type, const void *payload,
		      uint32_t len)
{
	if (c->hs_tx_off == c->hs_tx_len)
		c->hs_tx_len = c->hs_tx_off = 0;
	frame_put_hdr(c->hs_tx + c->hs_tx_len, type, len);
	if (len)
		memcpy(c->hs_tx + c->hs_tx_len + FRAME_HDR, payload, len);
	c->hs_tx_len += FRAME_HDR + len;
}

int conn_dial(struct pm_node *n, uint32_t slot, const struct sockaddr *sa,
	      socklen_t len)
{
	struct conn *c;
	int fd, r;

	if (n->conn_free == NONE)
		return -ENOSPC;
	fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
		    0);
	if (fd < 0)
		return -errno;
	set_nodelay(fd);
	c = conn_alloc(n, fd, true);
	memcpy(&c->remote, sa, len);
	c->remote_len = len;
	c->state = CONN_CONNECTING;
	r = n->eng_ops->connect(n->eng, fd, (struct sockaddr *)&c->remote,
				len, conn_tag(n, c, OP_CONNECT));
	if (r < 0) {
		conn_release(n, c);
		return r;
	}
	c->send_armed = true;	/* the connect stands for the send slot */
	peer_attach(n, slot, conn_index(n, c));
	n->st.dialled++;
	return 0;
}

/* Refuses an inbound connection before any handshake: slab full. */
static void reject_busy(struct pm_node *n, int fd)
{
	uint8_t buf[FRAME_HDR + CLOSE_LEN];

	close_put(buf, PM_CLOSE_BUSY);
	/* Best effort and non-blocking: 12 bytes fit any fresh socket. */
	(void)!send(fd, buf, sizeof(buf), MSG_NOSIGNAL | MSG_DONTWAIT);
	shutdown(fd, SHUT_WR);
	close(fd);
	n->st.rejected_busy++;
	emit(n, PM_EV_REJECTED, NONE, -ENOSPC, PM_CLOSE_BUSY, 0);
}

void conn_accepted(struct pm_node *n, int fd)
{
	struct conn *c;
	uint32_t slot;

	if (n->shutting_down) {
		close(fd);
		return;
	}
	if (n->conn_free == NONE || n->peer_free == NONE) {
		reject_busy(n, fd);
		return;
	}
	slot = peer_alloc(n);
	if (slot == NONE) {
		reject_busy(n, fd);
		return;
	}
	set_nodelay(fd);
	c = conn_alloc(n, fd, false);
	c->remote_len = sizeof(c->remote);
	if (getpeername(fd, (struct sockaddr *)&c->remote, &c->remote_len))
		c->remote_len = 0;
	c->state = CONN_HELLO;
	queue_hello(n, c);
	peer_attach(n, slot, conn_index(n, c));
	n->st.accepted++;
	conn_flush(n, c);
	conn_arm_recv(n, c);
}

void conn_arm_recv(struct pm_node *n, struct conn *c)
{
	void *buf;
	size_t len;
	int r;

	/* CONN_WAIT_LIVE reads nothing: the bytes after the verdict belong
	 * to the RX ring, which the old connection may still be writing. */
	if (c->recv_armed || c->fd < 0 || c->state == CONN_CONNECTING ||
	    c->state == CONN_DEAD || c->state == CONN_FREE ||
	    c->state == CONN_WAIT_LIVE)
		return;
	c->recv_to_ring = false;
	if ((c->state == CONN_HELLO || c->state == CONN_AUTH ||
	     c->state == CONN_PROOF || c->state == CONN_VERDICT) &&
	    !c->closing) {
		/* Read exactly one frame, never past it: after the verdict the
		 * bytes belong to the peer's RX ring. The header was checked
		 * (length <= HANDSHAKE_MAX) before its payload is asked for. */
		uint32_t need = FRAME_HDR;

		if (c->hs_have >= FRAME_HDR)
			need += get_be32(c->hs_rx);
		buf = c->hs_rx + c->hs_have;
		len = need - c->hs_have;
	} else if (c->state == CONN_LIVE && c->peer != NONE && !c->closing) {
		struct peer *p = &n->peers[c->peer];

		len = ring_free(&p->rx);
		if (!len)
			return;	/* re-armed when the paused stream drains */
		buf = ring_tail_ptr(&p->rx);
		c->recv_to_ring = true;
	} else {
		/* Closing: what still arrives is read and dropped. */
		buf = n->scratch;
		len = sizeof(n->scratch);
	}
	r = n->eng_ops->recv(n->eng, c->fd, buf, len,
			     conn_tag(n, c, OP_RECV));
	if (r < 0) {
		conn_abort(n, c);
		return;
	}
	c->recv_armed = true;
	if (c->recv_to_ring) {
		c->pin_slot = c->peer;
		n->peers[c->peer].pins++;
	}
}

static void conn_fail(struct pm_node *n, struct conn *c, int err);

/* The user closed slot and its CLOSE went out behind all it queued: the
 * stream ends with nothing unsent. */
static void close_written(struct pm_node *n, uint32_t slot)
{
	struct peer *p = &n->peers[slot];

	p->tx.head = p->tx.tail;
	p->tx_sent = 0;
	peer_closed(n, slot, 0, p->close_reason);
}

static void start_drain(struct pm_node *n, struct conn *c)
{
	uint32_t slot = c->peer;
	bool was_live = slot != NONE && n->peers[slot].live == conn_index(n, c);

	shutdown(c->fd, SHUT_WR);
	c->state = CONN_DRAIN;
	c->deadline_ms = node_now_ms() + DRAIN_MS;
	n->draining++;
	/* The user's close of a live stream ends here: all was written
	 * before CLOSE on this connection, so none of it is unsent. */
	if (was_live && n->peers[slot].state == PEER_CLOSING)
		close_written(n, slot);
	conn_arm_recv(n, c);
}

/* Fills the control buffer: RESUME once per connection, then an ACK of
 * what was consumed, if the stream owes one. */
static void fill_ctl(struct pm_node *n, struct conn *c)
{
	struct peer *p = &n->peers[c->peer];

	if (c->ctl_off < c->ctl_len)
		return;
	c->ctl_len = c->ctl_off = 0;
	if (c->resume_due) {
		c->resume_due = false;
		frame_put_hdr(c->ctl, FRAME_RESUME, RESUME_LEN);
		put_be64(c->ctl + FRAME_HDR, p->tx_epoch);
		put_be64(c->ctl + FRAME_HDR + 8, p->tx_pos);
		c->ctl_len = FRAME_HDR + RESUME_LEN;
	}
	if (p->ack_due) {
		p->ack_due = false;
		p->rx_acked = p->rx_pos;
		frame_put_hdr(c->ctl + c->ctl_len, FRAME_ACK, ACK_LEN);
		put_be64(c->ctl + c->ctl_len + FRAME_HDR, p->rx_pos);
		c->ctl_len += FRAME_HDR + ACK_LEN;
	}
}

void conn_flush(struct pm_node *n, struct conn *c)
{
	bool with_close = false;
	const void *buf;
	size_t len;
	int r;

	if (c->send_armed || c->fd < 0 || c->state == CONN_DEAD ||
	    c->state == CONN_DRAIN || c->state == CONN_CONNECTING)
		return;
	c->send_from_ring = false;
	c->send_from_ctl = false;
	bool live = c->state == CONN_LIVE && c->peer != NONE;
	struct peer *p = live ? &n->peers[c->peer] : NULL;

	/* A closer acknowledges all it consumed before its CLOSE, so the
	 * peer learns none of its messages are lost. */
	if (live && c->closing && p->rx_pos != p->rx_acked)
		p->ack_due = true;
	/* Control frames go between ring frames, never inside one. */
	if (live && !c->mid_frame && !c->close_queued)
		fill_ctl(n, c);
	if (c->hs_tx_off < c->hs_tx_len && !c->mid_frame) {
		buf = c->hs_tx + c->hs_tx_off;
		len = c->hs_tx_len - c->hs_tx_off;
	} else if (live && c->ctl_off < c->ctl_len && !c->mid_frame) {
		buf = c->ctl + c->ctl_off;
		len = c->ctl_len - c->ctl_off;
		c->send_from_ctl = true;
	} else if (live && !c->close_queued &&
		   ring_used(&p->tx) > p->tx_sent) {
		/* One send covers the whole ready span: the mirror makes it
		 * contiguous even when it wraps, and it ends at the ring's
		 * tail, a frame boundary. */
		buf = ring_head_ptr(&p->tx) + p->tx_sent;
		len = ring_used(&p->tx) - p->tx_sent;
		c->send_from_ring = true;
	} else if (c->closing && !c->close_queued && c->mid_frame) {
		/* Cut off inside a ring frame (an error close): a CLOSE now
		 * would land inside that frame. Reset instead. */
		conn_abort(n, c);
		return;
	} else if (c->closing && !c->close_queued) {
		/* Everything committed has been written: CLOSE follows it
		 * on the same connection, so it cannot overtake it. */
		uint8_t f[FRAME_HDR + CLOSE_LEN];

		close_put(f, c->close_reason);
		conn_queue_frame(c, FRAME_CLOSE, f + FRAME_HDR, CLOSE_LEN);
		c->close_queued = true;
		buf = c->hs_tx + c->hs_tx_off;
		len = c->hs_tx_len - c->hs_tx_off;
		with_close = true;
	} else {
		if (c->closing && c->close_queued)
			start_drain(n, c);
		return;
	}
	r = n->eng_ops->send(n->eng, c->fd, buf, len,
			     conn_tag(n, c, OP_SEND));
	if (r < 0) {
		conn_abort(n, c);
		return;
	}
	c->send_armed = true;
	c->send_len = (uint32_t)len;
	c->close_issued |= with_close;
	if (c->send_from_ring) {
		/* Counted as sent when issued: the peer may acknowledge these
		 * bytes before this send's completion is reaped. */
		c->pin_slot = c->peer;
		p->pins++;
		p->tx_sent += (uint32_t)len;
		if (p->tx_pos + p->tx_sent > p->tx_hi)
			p->tx_hi = p->tx_pos + p->tx_sent;
	}
}

void conn_abort(struct pm_node *n, struct conn *c)
{
	if (c->state == CONN_FREE || c->state == CONN_DEAD)
		return;
	uint32_t slot = c->peer;
	/* The peer may close (it read our CLOSE) before this node reaps the
	 * completion of the send that wrote it: that is the user's close
	 * done, as in start_drain, not a connection lost. */
	bool close_done = slot != NONE && c->close_issued &&
			  n->peers[slot].state == PEER_CLOSING &&
			  n->peers[slot].live == conn_index(n, c);

	if (c->state == CONN_DRAIN)
		n->draining--;
	if (slot != NONE)
		peer_detach(n, slot, conn_index(n, c));
	c->state = CONN_DEAD;
	if (c->recv_armed || c->send_armed)
		n->eng_ops->cancel(n->eng, c->fd);
	else
		conn_release(n, c);
	if (close_done) {
		close_written(n, slot);
		return;
	}
	/* A stream the user closed ends when its last connection does,
	 * even if the CLOSE never made it out. */
	if (slot != NONE)
		peer_closing_orphaned(n, slot);
}

/* Sends CLOSE(reason) on a connection that is no longer any peer's. */
void conn_reject(struct pm_node *n, struct conn *c, uint16_t reason)
{
	if (c->peer != NONE)
		peer_detach(n, c->peer, conn_index(n, c));
	conn_graceful(n, c, reason);
}

void conn_graceful(struct pm_node *n, struct conn *c, uint16_t reason)
{
	if (c->closing || c->state == CONN_DEAD || c->state == CONN_FREE)
		return;
	if (c->state == CONN_CONNECTING) {
		conn_abort(n, c);
		return;
	}
	c->closing = true;
	c->close_reason = reason;
	conn_flush(n, c);
}

/* PING through the TX ring, never from hs_tx: a control frame must not
 * land inside a frame the ring has half sent. */
static void send_ping(struct pm_node *n, struct conn *c, uint64_t now)
{
	uint8_t token[PING_LEN];

	c->last_ping_ms = now;
	put_be64(token, now);
	peer_control(n, c->peer, FRAME_PING, token);
}

/* Handshakes that take too long, and live peers gone silent. */
void conn_timers(struct pm_node *n, uint64_t now)
{
	const struct pm_config *cfg = &n->cfg;

	for (uint32_t i = 0; i < n->nconns && n->conns_used; i++) {
		struct conn *c = &n->conns[i];

		switch (c->state) {
		case CONN_CONNECTING:
		case CONN_HELLO:
		case CONN_AUTH:
		case CONN_PROOF:
		case CONN_VERDICT:
			if (c->closing || now - c->born_ms < cfg->handshake_ms)
				break;
			n->st.timeouts++;
			conn_fail(n, c, -ETIMEDOUT);
			break;
		case CONN_LIVE:
			if (c->closing || c->peer == NONE)
				break;
			if (n->peers[c->peer].rx_pos != n->peers[c->peer].rx_acked) {
				/* Acknowledge leftovers at least every tick. */
				n->peers[c->peer].ack_due = true;
				peer_mark_dirty(n, c->peer);
			}
			if (cfg->dead_ms && now - c->last_rx_ms >= cfg->dead_ms) {
				n->st.timeouts++;
				if (!peer_lost(n, c->peer, -ETIMEDOUT))
					peer_closed(n, c->peer, -ETIMEDOUT,
						    PM_CLOSE_NONE);
			} else if (cfg->keepalive_ms &&
				   now - c->last_rx_ms >= cfg->keepalive_ms &&
				   now - c->last_ping_ms >= cfg->keepalive_ms) {
				send_ping(n, c, now);
			}
			break;
		default:
			break;
		}
	}
}

void conn_check_deadlines(struct pm_node *n)
{
	uint64_t now = node_now_ms();

	for (uint32_t i = 0; i < n->nconns && n->draining; i++) {
		struct conn *c = &n->conns[i];

		if (c->state == CONN_DRAIN && now >= c->deadline_ms)
			conn_abort(n, c);
	}
}

/* The connection failed (error, EOF, refused): tell its peer. */
static void conn_fail(struct pm_node *n, struct conn *c, int err)
{
	uint32_t slot = c->peer;

	if (c->state == CONN_DRAIN || slot == NONE) {
		conn_abort(n, c);
		return;
	}
	struct peer *p = &n->peers[slot];

	if (p->live == conn_index(n, c)) {
		/* Both processes may well live: keep the stream, redial. */
		if (!peer_lost(n, slot, err))
			peer_closed(n, slot, err, PM_CLOSE_NONE);
		return;
	}
	conn_abort(n, c);
	if (p->nconns == 0 && p->live == NONE && !p->resuming)
		peer_closed(n, slot, err, PM_CLOSE_NONE);
}

/* A CLOSE frame arrived during the handshake. */
static void remote_close(struct pm_node *n, struct conn *c, int reason)
{
	uint32_t slot = c->peer;

	conn_abort(n, c);
	if (slot == NONE)
		return;
	struct peer *p = &n->peers[slot];

	if (p->nconns || p->live != NONE || p->state == PEER_ZOMBIE)
		return;
	if (p->resuming && reason == PM_CLOSE_DUPLICATE)
		return;	/* the redial timer goes on */
	if (reason == PM_CLOSE_DUPLICATE && p->id && !p->orphan_until) {
		/* The arbiter kept another connection, whose HELLO has not
		 * been read here yet: wait for it with our queued messages. */
		p->orphan_until = node_now_ms() + ORPHAN_MS;
		n->orphans++;
		return;
	}
	peer_closed(n, slot, reason == PM_CLOSE_BUSY ? -ECONNREFUSED :
		    reason == PM_CLOSE_AUTH ? -EACCES : 0,
		    (enum pm_close_reason)reason);
}

static void protocol_error(struct pm_node *n, struct conn *c, uint16_t why)
{
	uint32_t slot = c->peer;

	n->st.protocol_errors++;
	conn_reject(n, c, why);
	if (slot != NONE && n->peers[slot].nconns == 0 &&
	    n->peers[slot].live == NONE)
		peer_closed(n, slot, -EPROTO, (enum pm_close_reason)why);
}

/* Refuses a peer without the mesh key (or with another): counted, and
 * logged once per remote address so a scanner cannot flood the log. */
static void auth_refuse(struct pm_node *n, struct conn *c, const char *why)
{
	struct sockaddr_storage host = c->remote;
	uint32_t slot = c->peer;
	bool seen = false;

	n->st.auth_failures++;
	/* Once per remote host: its ports change with every attempt. */
	((struct sockaddr_in *)&host)->sin_port = 0;
	for (uint32_t i = 0; i < n->auth_logged_n; i++)
		seen |= addr_equal((struct sockaddr *)&n->auth_logged[i],
				   (struct sockaddr *)&host);
	if (!seen && c->remote_len) {
		char a[INET6_ADDRSTRLEN + 8] = "?";

		addr_format((struct sockaddr *)&c->remote, a, sizeof(a));
		node_log(n, PM_LOG_WARN, "refused %s: %s (logged once per "
			 "host)", a, why);
		if (n->auth_logged_n < 8)
			n->auth_logged[n->auth_logged_n++] = host;
	}
	conn_reject(n, c, PM_CLOSE_AUTH);
	if (slot != NONE && n->peers[slot].nconns == 0 &&
	    n->peers[slot].live == NONE)
		peer_closed(n, slot, -EACCES, PM_CLOSE_AUTH);
}

/* The mesh-key steps between HELLO and the pair rule. */
static void auth_frame(struct pm_node *n, struct conn *c,
		       const struct frame *f)
{
	uint8_t proof[AUTH_LEN];

	if (c->state == CONN_AUTH && f->type == FRAME_AUTH &&
	    f->len == AUTH_LEN) {
		memcpy(c->peer_chal, f->payload, AUTH_LEN);
		auth_proof(n, proof, c->peer_chal, c->my_chal, n->id,
			   c->hello.node_id);
		conn_queue_frame(c, FRAME_PROOF, proof, AUTH_LEN);
		c->state = CONN_PROOF;
		conn_flush(n, c);
		return;
	}
	if (c->state == CONN_PROOF && f->type == FRAME_PROOF &&
	    f->len == AUTH_LEN) {
		auth_proof(n, proof, c->my_chal, c->peer_chal,
			   c->hello.node_id, n->id);
		if (crypto_verify_32(proof, f->payload) != 0) {
			auth_refuse(n, c, "wrong mesh key");
			return;
		}
		c->state = CONN_HELLO;	/* peer_hello moves it on */
		peer_hello(n, c);
		return;
	}
	protocol_error(n, c, PM_CLOSE_PROTOCOL);
}

static void handshake_frame(struct pm_node *n, struct conn *c)
{
	struct frame f;
	long r = frame_decode(c->hs_rx, c->hs_have, HANDSHAKE_MAX, &f);
	int x;

	if (r == 0)
		return;	/* partial: conn_arm_recv asks for the rest */
	if (r < 0) {
		protocol_error(n, c, PM_CLOSE_PROTOCOL);
		return;
	}
	c->hs_have = 0;
	if (f.type == FRAME_CLOSE) {
		x = close_parse(f.payload, f.len);
		remote_close(n, c, x < 0 ? PM_CLOSE_PROTOCOL : x);
		return;
	}
	if (c->state == CONN_HELLO && f.type == FRAME_HELLO) {
		x = hello_parse(f.payload, f.len, &c->hello);
		if (x < 0) {
			protocol_error(n, c, x == -EPROTONOSUPPORT ?
				       PM_CLOSE_VERSION : PM_CLOSE_PROTOCOL);
			return;
		}
		bool wants = c->hello.flags & HELLO_F_AUTH;

		if (n->has_key != wants) {
			auth_refuse(n, c, n->has_key ? "no mesh key" :
				    "it requires a mesh key we lack");
			return;
		}
		if (n->has_key) {
			c->state = CONN_AUTH;
			return;
		}
		peer_hello(n, c);
		return;
	}
	if (c->state == CONN_AUTH || c->state == CONN_PROOF) {
		auth_frame(n, c, &f);
		return;
	}
	if (c->state == CONN_VERDICT && f.type == FRAME_ACCEPT && !f.len) {
		peer_went_live(n, c->peer, conn_index(n, c));
		return;
	}
	protocol_error(n, c, PM_CLOSE_PROTOCOL);
}

static void on_recv(struct pm_node *n, struct conn *c, int res)
{
	bool to_ring = c->recv_to_ring;

	c->recv_armed = false;
	if (to_ring)
		peer_unpin(n, c->pin_slot);
	if (c->state == CONN_DEAD)
		return;
	if (res > 0)
		c->last_rx_ms = node_now_ms();
	if (res <= 0) {
		if (c->state == CONN_DRAIN || c->closing)
			conn_abort(n, c);
		else if (!peer_rx_final(n, c))	/* CLOSE read: not lost */
			conn_fail(n, c, res == 0 ? -ECONNRESET : res);
		return;
	}
	if (to_ring) {
		uint32_t slot = c->peer;

		if (c->state == CONN_LIVE && slot == c->pin_slot) {
			ring_produce(&n->peers[slot].rx, (uint32_t)res);
			peer_deliver(n, slot);
		}
	} else if ((c->state == CONN_HELLO || c->state == CONN_AUTH ||
		    c->state == CONN_PROOF || c->state == CONN_VERDICT) &&
		   !c->closing) {
		c->hs_have += (uint32_t)res;
		handshake_frame(n, c);
	}
	/* else: closing, the bytes were read into scratch and dropped. */
	conn_arm_recv(n, c);
}

static void on_send(struct pm_node *n, struct conn *c, int res)
{
	bool from_ring = c->send_from_ring;

	c->send_armed = false;
	if (from_ring)
		peer_unpin(n, c->pin_slot);
	if (c->state == CONN_DEAD)
		return;
	if (res < 0) {
		conn_fail(n, c, res);
		return;
	}
	if (from_ring) {
		/* The span asked ended on a frame boundary (the ring's tail
		 * then); a short send stops inside a frame. */
		c->mid_frame = (uint32_t)res < c->send_len;
		if (c->peer == c->pin_slot) {
			peer_tx_sent(n, c->peer, c->send_len - (uint32_t)res);
			peer_free_acked(n, c->peer);
		}
	} else if (c->send_from_ctl) {
		c->ctl_off += (uint32_t)res;
	} else {
		c->hs_tx_off += (uint32_t)res;
	}
	if (c->state != CONN_DEAD)
		conn_flush(n, c);
}

static void on_connect(struct pm_node *n, struct conn *c, int res)
{
	c->send_armed = false;
	if (c->state == CONN_DEAD)
		return;
	if (res < 0) {
		conn_fail(n, c, res);
		return;
	}
	c->state = CONN_HELLO;
	queue_hello(n, c);
	conn_flush(n, c);
	conn_arm_recv(n, c);
}

void conn_complete(struct pm_node *n, uint32_t ci, uint32_t gen,
		   enum op op, int res)
{
	struct conn *c = conn_get(n, ci);

	if (!c || c->gen != gen || c->state == CONN_FREE)
		return;	/* stale: the slot moved on */
	if (op == OP_RECV)
		on_recv(n, c, res);
	else if (op == OP_SEND)
		on_send(n, c, res);
	else if (op == OP_CONNECT)
		on_connect(n, c, res);
	if (c->state == CONN_DEAD && !c->recv_armed && !c->send_armed)
		conn_release(n, c);
}
