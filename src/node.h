/* SPDX-License-Identifier: MIT */
/*
 * Internal state of a node. A peer (slot of the fixed slab) is the logical
 * pair stream the user holds a handle to; a conn is one transport
 * connection. A peer has at most one LIVE conn, plus handshaking conns while
 * the pair rule (docs/PROTOCOL.md) is deciding.
 */
#ifndef PM_NODE_H
#define PM_NODE_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "pairmesh.h"
#include "engine.h"
#include "frame.h"
#include "ring.h"

#define NONE		UINT32_MAX
#define PEER_CONNS	4	/* conns attached to one peer at most */
#define MAX_WATCHES	16
#define DRAIN_MS	2000	/* a closing conn waits this long for EOF */
#define ORPHAN_MS	5000	/* a slot waits this long for the pair winner */

/* Operation in a completion tag: gen << 32 | index << 4 | op. */
enum op {
	OP_ACCEPT = 1,
	OP_CONNECT,
	OP_RECV,
	OP_SEND,
	OP_WATCH,
};

enum conn_state {
	CONN_FREE = 0,
	CONN_CONNECTING,	/* dialler: connect in flight */
	CONN_HELLO,		/* reading the peer's HELLO */
	CONN_AUTH,		/* mesh key: reading the peer's challenge */
	CONN_PROOF,		/* mesh key: reading the peer's proof */
	CONN_VERDICT,		/* non-arbiter: reading ACCEPT or CLOSE */
	CONN_WAIT_LIVE,		/* accepted; waits for the old conn's ring I/O */
	CONN_LIVE,		/* carrying the peer's stream */
	CONN_DRAIN,		/* CLOSE sent, write side shut, reading to EOF */
	CONN_DEAD,		/* waiting for in-flight completions */
};

struct conn {
	int fd;
	uint32_t gen;
	uint8_t state;
	bool dialled;
	bool recv_armed;
	bool send_armed;
	bool recv_to_ring;	/* the armed recv targets the peer's RX ring */
	bool send_from_ring;	/* the armed send comes from the peer's TX ring */
	bool send_from_ctl;	/* ... from ctl */
	bool closing;		/* send CLOSE(close_reason) once TX is empty */
	bool close_queued;
	bool close_issued;	/* the send holding CLOSE went to the kernel */
	uint16_t close_reason;
	uint32_t peer;		/* owning slot, or NONE once detached */
	uint32_t pin_slot;	/* slot whose ring the armed I/O uses */
	uint32_t next_free;
	uint64_t deadline_ms;	/* CONN_DRAIN: give up waiting for EOF */
	uint64_t born_ms;	/* the handshake must end by born + limit */
	uint64_t last_rx_ms;	/* any byte received: the peer is alive */
	uint64_t last_ping_ms;
	struct sockaddr_storage remote;
	socklen_t remote_len;
	struct hello hello;	/* the peer's, once read */
	uint32_t hs_have;
	uint8_t hs_rx[FRAME_HDR + HANDSHAKE_MAX];
	uint32_t hs_tx_len;	/* handshake frames queued from hs_tx */
	uint32_t hs_tx_off;	/* ... of which sent */
	/* HELLO, AUTH, PROOF, ACCEPT and CLOSE may all be queued at once. */
	uint8_t hs_tx[FRAME_HDR + HELLO_LEN + 2 * (FRAME_HDR + AUTH_LEN) +
		      FRAME_HDR + FRAME_HDR + CLOSE_LEN];
	/* Control frames outside the TX ring (RESUME, ACK), written only at
	 * a frame boundary of the ring's byte stream. */
	uint8_t ctl[FRAME_HDR + RESUME_LEN + FRAME_HDR + ACK_LEN];
	uint32_t ctl_len, ctl_off;
	bool resume_due;	/* live: RESUME goes before any ring byte */
	bool mid_frame;		/* the last ring send stopped inside a frame */
	uint32_t send_len;	/* bytes asked by the send in flight */
	uint8_t my_chal[AUTH_LEN];	/* mesh key: our challenge */
	uint8_t peer_chal[AUTH_LEN];
};

enum peer_state {
	PEER_FREE = 0,
	PEER_PENDING,		/* no live conn yet */
	PEER_LIVE,
	PEER_CLOSING,		/* user closed: flush, then CLOSE */
	PEER_ALIAS,		/* merged into alias_to; drains its TX there */
	PEER_ZOMBIE,		/* dead, waiting for ring I/O to finish */
	PEER_SELF,
};

struct peer {
	uint32_t gen;
	uint8_t state;
	bool user_visible;	/* the user holds a handle to it */
	bool announced;		/* PM_EV_CONNECTED was emitted */
	bool paused;		/* a message callback said -EAGAIN */
	bool want_writable;	/* a send said -EAGAIN */
	bool dirty;		/* on the flush list */
	bool has_addr;
	bool reserved;		/* pm_reserve without pm_commit yet */
	bool redeliver;		/* resumed: deliver from RX on the next turn */
	uint16_t close_reason;	/* PEER_CLOSING: the reason to send */
	uint32_t reserve_len;
	uint32_t live;		/* conn index or NONE */
	uint32_t nconns;
	uint32_t conns[PEER_CONNS];
	uint32_t pins;		/* ring I/O in flight */
	uint32_t alias_to;	/* PEER_ALIAS: target slot */
	uint32_t next_free;
	uint32_t peer_max;	/* the peer's max_message */
	uint32_t tx_sent;	/* bytes past tx.head handed to the socket
				 * (issued, not yet acknowledged) */
	/* Session: the TX ring is one byte stream; tx.head sits at stream
	 * position tx_pos (bytes the peer acknowledged). rx_pos counts the
	 * peer's stream bytes consumed here. */
	uint64_t tx_epoch;	/* random per stream: tells replays from news */
	uint64_t tx_pos;
	uint64_t tx_hi;		/* highest position handed to any socket */
	uint64_t tx_acked;	/* highest position the peer acknowledged */
	uint64_t tx_replay_end;	/* tx_hi when the live connection began */
	uint64_t rx_epoch;	/* the peer's tx_epoch, from its RESUME */
	uint64_t rx_pos;
	uint64_t rx_acked;	/* rx_pos last acknowledged */
	uint64_t rx_skip;	/* replayed bytes already consumed: dropped */
	bool ack_due;
	bool resuming;		/* lost its connection: redialling */
	uint32_t backoff_ms;
	uint32_t live_pending;	/* conn to go live once pins reach 0 */
	uint64_t retry_at_ms;
	uint64_t resume_until_ms;
	uint64_t peer_nonce;	/* the peer process we talk to (HELLO) */
	int lost_error;		/* why the connection was lost */
	bool restarted;		/* closing because the peer restarted */
	uint64_t orphan_until;	/* lost its dial to DUPLICATE: waits this
				 * long for the winning connection */
	uint64_t wait_id;	/* dial once no connection to this node id is
				 * left (the old stream is still closing) */
	uint32_t wait_slot;	/* ... or once this closing slot is gone (its
				 * peer's id was not known yet) */
	uint32_t held_on;	/* delivers nothing until this slot, an older
				 * stream from the same node, has ended */
	bool has_held;		/* some slot is held_on this one */
	bool rx_final;		/* its connection ended behind the peer's
				 * CLOSE, which waits in RX (paused) */
	uint32_t blocked_on;	/* paused until this slot's TX has room */
	bool has_blocked;	/* some slot is blocked_on this one */
	bool links_owed;	/* a LINKS to it did not fit: send the table */
	uint64_t msgs_in, msgs_out, bytes_in, bytes_out, relayed;
	uint64_t id;		/* 0 until the handshake */
	struct sockaddr_storage addr;	/* dialled or advertised */
	socklen_t addr_len;
	struct ring tx;
	struct ring rx;
};

/* What this node knows of one mesh member (index 0 is the node itself). */
struct mesh_entry {
	uint64_t id;		/* 0: free */
	uint64_t lsa_seq;	/* newest LINKS seen from it */
	uint64_t bc_max;	/* newest broadcast sequence seen from it */
	uint64_t bc_window;	/* bit i: bc_max - i seen */
	uint64_t *links;	/* its neighbours' ids, sorted */
	uint32_t nlinks, cap;
	uint32_t hops;		/* 0: unreachable */
	uint32_t next_slot;	/* peer slot of the first hop, or NONE */
	uint32_t direct_slot;	/* live stream to it, or NONE */
	uint64_t dial_after_ms;	/* auto-connect backoff */
	struct sockaddr_storage addr;
	socklen_t addr_len;
	/* Our routed session to it (route.c): ROUTE frames kept until it
	 * says it delivered them, so a relay that dies loses nothing. */
	struct ring rt;		/* mapped on the first routed message */
	uint64_t rt_epoch;	/* this session's; a newer one restarts it */
	uint64_t rt_next;	/* sequence of the next ROUTE */
	uint32_t rt_sent;	/* bytes from rt's head copied to rt_via */
	uint32_t rt_via;	/* the neighbour they went to, or NONE */
	uint32_t rt_via_gen;
	uint64_t rt_hop_mark;	/* rt_via's stream position after our last */
	uint64_t rt_hop_seen;	/* its acknowledged position, last looked */
	uint64_t rt_progress_ms;	/* last acknowledgement (or go-back) */
	uint64_t rt_noroute_ms;	/* since when no route; 0: there is one */
	uint8_t rt_backoff;	/* go-backs since the last acknowledgement */
	bool rt_want_writable;	/* pm_send_to got -EAGAIN: say when */
	/* Its routed session to us. */
	bool in_ack_due;
	uint64_t in_epoch;
	uint64_t in_next;	/* the sequence delivered next */
};

struct watch {
	int fd;			/* -1: free */
	uint32_t gen;
	bool armed;
	pm_fd_fn fn;
	void *user;
};

struct pm_node {
	struct pm_config cfg;
	uint64_t id;
	uint64_t nonce;
	const struct engine_ops *eng_ops;
	struct engine *eng;
	int listen_fd;
	struct sockaddr_storage listen_addr;
	socklen_t listen_len;

	uint32_t npeers;	/* max_peers + 1: the last slot is self */
	uint32_t self;
	struct peer *peers;
	uint32_t peer_free;
	uint32_t peers_used;

	uint32_t nconns;
	struct conn *conns;
	uint32_t conn_free;
	uint32_t conns_used;

	uint32_t *dirty;	/* slots with TX to flush */
	uint32_t ndirty;
	uint32_t draining;	/* conns in CONN_DRAIN */
	uint32_t aliases;	/* slots in PEER_ALIAS with TX left */
	uint32_t orphans;	/* pending slots waiting for the winner */
	uint32_t waiting;	/* pending slots with wait_id set */
	uint32_t resuming;	/* slots with resuming set */
	bool shutting_down;	/* pm_node_shutdown: no new connections */
	uint64_t next_tick_ms;	/* next pass over connection timers */

	bool has_key;
	uint8_t key[32];		/* mesh key (cfg.key copied) */
	struct sockaddr_storage auth_logged[8];	/* refusals logged once */
	uint32_t auth_logged_n;

	struct mesh_entry *mesh;	/* control plane: allocated at create */
	uint32_t mesh_cap, mesh_used;
	uint32_t *mesh_hash;		/* id -> entry index + 1, open addressing */
	uint32_t mesh_hmask;
	uint32_t *bfs;			/* scratch queue for route computation */
	uint32_t *route_prev;		/* next hops before it, to see changes */
	bool mesh_dirty;		/* our neighbour set changed: re-announce */
	bool mesh_owed;			/* some neighbour has links_owed */
	uint64_t mesh_retry_ms;		/* next pass over failed auto-dials */
	uint64_t lsa_seq, bc_seq;
	uint64_t rt_clock;		/* routed session epochs: clock-seeded */
	uint32_t rt_active;		/* entries with routed messages unacked */
	uint32_t rt_acks_due;		/* entries owed a RACK */
	uint64_t epochs;		/* streams created: their epochs differ */

	struct watch watches[MAX_WATCHES];
	uint8_t scratch[4096];	/* recv target for CONN_DRAIN */
	struct pm_stats st;
};

/* node.c */
uint64_t node_now_ms(void);
void node_log(struct pm_node *n, enum pm_log_level level, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
uint64_t make_tag(uint32_t idx, uint32_t gen, enum op op);

/* conn.c */
int conn_dial(struct pm_node *n, uint32_t slot, const struct sockaddr *sa,
	      socklen_t len);
void conn_accepted(struct pm_node *n, int fd);
void conn_complete(struct pm_node *n, uint32_t ci, uint32_t gen,
		   enum op op, int res);
void conn_flush(struct pm_node *n, struct conn *c);
void conn_abort(struct pm_node *n, struct conn *c);
void conn_graceful(struct pm_node *n, struct conn *c, uint16_t reason);
void conn_check_deadlines(struct pm_node *n);
void conn_arm_recv(struct pm_node *n, struct conn *c);
void conn_reject(struct pm_node *n, struct conn *c, uint16_t reason);
void conn_queue_frame(struct conn *c, uint8_t type, const void *payload,
		      uint32_t len);
void conn_timers(struct pm_node *n, uint64_t now);
struct conn *conn_get(struct pm_node *n, uint32_t ci);

/* stream.c */
uint32_t peer_alloc(struct pm_node *n);
void peer_attach(struct pm_node *n, uint32_t slot, uint32_t ci);
void peer_detach(struct pm_node *n, uint32_t slot, uint32_t ci);
void peer_closing_orphaned(struct pm_node *n, uint32_t slot);
void peer_unpin(struct pm_node *n, uint32_t slot);
void peer_mark_dirty(struct pm_node *n, uint32_t slot);
void peer_went_live(struct pm_node *n, uint32_t slot, uint32_t ci);
void peer_closed(struct pm_node *n, uint32_t slot, int error,
		 enum pm_close_reason reason);
bool peer_rx_final(struct pm_node *n, struct conn *c);
void peer_deliver(struct pm_node *n, uint32_t slot);
void peer_tx_sent(struct pm_node *n, uint32_t slot, uint32_t bytes);
void peer_free_acked(struct pm_node *n, uint32_t slot);
int peer_hello(struct pm_node *n, struct conn *c);
void node_flush_dirty(struct pm_node *n);
void node_drain_aliases(struct pm_node *n);
void node_check_orphans(struct pm_node *n);
void peer_wake_waiters(struct pm_node *n, uint64_t id);
bool peer_lost(struct pm_node *n, uint32_t slot, int error);
void node_resume_tick(struct pm_node *n, uint64_t now);
bool node_deliver_self(struct pm_node *n);
void emit(struct pm_node *n, enum pm_event_type type, uint32_t slot,
	  int error, enum pm_close_reason reason, uint64_t unsent);
struct pm_stream handle_of(struct pm_node *n, uint32_t slot);

/* stream.c, typed frames for mesh.c */
int peer_reserve(struct pm_node *n, uint32_t slot, size_t len, void **buf);
void peer_commit(struct pm_node *n, uint32_t slot, uint8_t type, size_t len);
uint32_t peer_by_id(struct pm_node *n, uint64_t id);
void peer_block_on(struct pm_node *n, uint32_t slot, uint32_t on);
int peer_control(struct pm_node *n, uint32_t slot, uint8_t type,
		 const uint8_t *payload);
int peer_dial(struct pm_node *n, const struct sockaddr *sa, socklen_t len,
	      bool user);

/* mesh.c */
int mesh_init(struct pm_node *n);
void mesh_fini(struct pm_node *n);
int mesh_frame(struct pm_node *n, uint32_t slot, const struct frame *f);
void mesh_peer_up(struct pm_node *n, uint32_t slot);
void mesh_peer_down(struct pm_node *n, uint32_t slot);
void mesh_peer_left(struct pm_node *n, uint64_t id);
void mesh_turn(struct pm_node *n);
struct mesh_entry *mesh_entry_find(struct pm_node *n, uint64_t id);
struct mesh_entry *mesh_entry_get(struct pm_node *n, uint64_t id);
bool mesh_is_neighbour(struct pm_node *n, uint32_t slot);
int mesh_deliver(struct pm_node *n, uint32_t from, const struct frame *f,
		 uint64_t origin, uint32_t hdr, uint32_t flags);

/* route.c: routed sessions, end to end (docs/PROTOCOL.md §10.8) */
int route_send(struct pm_node *n, struct mesh_entry *e, const void *buf,
	       size_t len);
int route_receive(struct pm_node *n, uint32_t from, const struct frame *f,
		  uint64_t origin);
void route_ack_received(struct pm_node *n, const struct frame *f,
			uint64_t acker);
void route_unreach(struct pm_node *n, uint64_t target);
int route_turn(struct pm_node *n);
void route_fini(struct pm_node *n);

/* addr.c */
int addr_parse(const char *s, struct sockaddr_storage *ss, socklen_t *len);
int addr_format(const struct sockaddr *sa, char *buf, size_t len);
bool addr_equal(const struct sockaddr *a, const struct sockaddr *b);
bool addr_is_any(const struct sockaddr *sa);
void addr_to_hello(const struct sockaddr *sa, struct hello *h);
socklen_t addr_from_hello(const struct hello *h, const struct sockaddr *seen,
			  struct sockaddr_storage *out);

#endif
