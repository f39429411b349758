/* SPDX-License-Identifier: MIT */
/*
 * pairmesh: every process an identical peer of a TCP mesh.
 *
 * A node listens and connects. Naming a node (by address or id) gives a
 * pair stream: one duplex object through which this node sends to and
 * receives from that node. There is never more than one live connection per
 * pair of nodes. A node can name itself.
 *
 * Threading: a node belongs to the thread that created it. Nothing here is
 * thread safe; run one node per thread.
 *
 * Errors: actions return 0 (or a count) on success and -errno on failure.
 */
#ifndef PAIRMESH_H
#define PAIRMESH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#ifdef __cplusplus
extern "C" {
#endif

#define PM_VERSION_MAJOR 0
#define PM_VERSION_MINOR 1
#define PM_PROTOCOL_VERSION 1

struct pm_node;

/* A pair stream handle: slot and generation. 0 is never a valid handle. */
struct pm_stream {
	uint64_t h;
};

enum pm_engine {
	PM_ENGINE_AUTO = 0,	/* io_uring if the kernel allows it, else epoll */
	PM_ENGINE_IO_URING,
	PM_ENGINE_EPOLL,
};

/* Close reasons carried on the wire (docs/PROTOCOL.md, "Close reasons"). */
enum pm_close_reason {
	PM_CLOSE_NONE = 0,	/* no CLOSE frame: transport error or EOF */
	PM_CLOSE_NORMAL = 1,	/* the peer closed the stream on purpose */
	PM_CLOSE_DUPLICATE = 2,	/* another connection to the same node won */
	PM_CLOSE_BUSY = 3,	/* the peer's slab is full */
	PM_CLOSE_PROTOCOL = 4,	/* malformed or unexpected frame */
	PM_CLOSE_TOO_BIG = 5,	/* a frame exceeded the receiver's max */
	PM_CLOSE_VERSION = 6,	/* unsupported protocol version */
	PM_CLOSE_SELF = 7,	/* a node dialled itself */
	PM_CLOSE_ID_CONFLICT = 8, /* two live nodes share one id */
	PM_CLOSE_SHUTDOWN = 9,	/* the peer node is shutting down */
	PM_CLOSE_REPLACED = 10,	/* reserved: session resumption */
	PM_CLOSE_AUTH = 11,	/* mesh authentication failed or missing */
};

enum pm_event_type {
	PM_EV_CONNECTED = 1,	/* stream is live; peer_id is known */
	PM_EV_CLOSED,		/* stream is gone; error and reason say why */
	PM_EV_WRITABLE,		/* TX space freed after a send returned -EAGAIN */
	PM_EV_REJECTED,		/* an inbound connection was refused (slab full) */
	PM_EV_UNREACHABLE,	/* a routed message could not reach peer_id */
	PM_EV_ROUTES,		/* the mesh's routes changed */
};

struct pm_event {
	enum pm_event_type type;
	struct pm_stream stream;	/* zero for PM_EV_REJECTED */
	uint64_t peer_id;		/* 0 if never learned */
	int error;			/* 0 or -errno (-ECONNREFUSED, ...) */
	enum pm_close_reason reason;	/* remote or local close reason */
	uint64_t unsent;		/* PM_EV_CLOSED, PM_EV_UNREACHABLE:
					 * messages given up on */
	bool peer_restarted;		/* PM_EV_CLOSED: the peer is a new process
					 * now (a new session follows) */
};

#define PM_MSG_ROUTED		(1u << 0)	/* came through relays */
#define PM_MSG_BROADCAST	(1u << 1)	/* sent to "*" */

struct pm_message {
	struct pm_stream stream;	/* the stream it arrived on; for routed
					 * and broadcast messages that is the
					 * last relay: answer the origin with
					 * pm_send_to(peer_id) */
	uint64_t peer_id;	/* the sender's (origin's) node id */
	const void *data;	/* points into the RX ring: valid in the callback */
	size_t len;
	uint32_t flags;		/* PM_MSG_* */
	uint32_t hops;		/* relays crossed (0: direct) */
};

/*
 * Called once per received message, in order per stream. Return 0 when the
 * message is consumed, or -EAGAIN to keep it: the stream pauses (nothing more
 * is delivered from it) until pm_stream_resume(), then the same message comes
 * again. Pausing lets a relay push back instead of buffering or dropping.
 */
typedef int (*pm_message_fn)(struct pm_node *n, const struct pm_message *m,
			     void *user);
typedef void (*pm_event_fn)(struct pm_node *n, const struct pm_event *ev,
			    void *user);
/* Called when a watched descriptor is readable (see pm_watch_fd). */
typedef void (*pm_fd_fn)(struct pm_node *n, int fd, void *user);

enum pm_log_level {
	PM_LOG_ERROR = 0,
	PM_LOG_WARN,
	PM_LOG_INFO,
	PM_LOG_DEBUG,
};

/*
 * The library's own diagnostics (io_uring refused so epoll is used, a peer
 * refused for a bad mesh key): one message, no newline, valid during the
 * call only. Called from pm_node_create and pm_node_run; n is the node
 * being created or run.
 */
typedef void (*pm_log_fn)(struct pm_node *n, enum pm_log_level level,
			  const char *msg, void *user);

struct pm_config {
	const char *listen;	/* "HOST:PORT", port 0 = any; default 127.0.0.1:0 */
	uint64_t node_id;	/* 0 = random */
	enum pm_engine engine;	/* AUTO honours PAIRMESH_ENGINE */
	uint32_t max_peers;	/* slab size; default 1024 */
	uint32_t ring_size;	/* bytes per direction per peer, power of two
				 * and page multiple; default 1 MiB */
	uint32_t max_message;	/* largest payload accepted; default 256 KiB,
				 * at most ring_size - 8 */
	bool no_auto_connect;	/* do not dial the nodes learned from others */
	uint32_t keepalive_ms;	/* PING a connection idle this long; 0 = off;
				 * default 1000 */
	uint32_t dead_ms;	/* close one silent this long (-ETIMEDOUT);
				 * 0 = off; default 5000 */
	uint32_t handshake_ms;	/* free a slot whose handshake takes longer;
				 * default 5000 */
	uint32_t resume_ms;	/* a stream whose connection drops keeps its
				 * queue and reconnects for this long, then
				 * ends; 0 = end at once; default 5000 */
	uint32_t reconnect_max_ms; /* backoff ceiling between redials;
				 * default 1000 */
	const uint8_t *key;	/* mesh key: only nodes holding the same key
				 * connect (mutual challenge-response); NULL =
				 * open mesh. Copied at create. */
	size_t key_len;		/* must be 32 when key is set */
	uint8_t max_hops;	/* hop limit of routed and broadcast frames;
				 * default 16 */
	pm_message_fn on_message;
	pm_event_fn on_event;
	pm_log_fn on_log;	/* NULL: "pairmesh: MSG" lines on stderr */
	void *user;
};

/* Fills c with the defaults above. */
void pm_config_init(struct pm_config *c);

/*
 * Creates a node, binds and listens. Returns 0 and sets *out, -EINVAL for a
 * bad config, -EADDRINUSE, -EPROTONOSUPPORT when io_uring is forced but
 * refused by the kernel, or another -errno.
 */
int pm_node_create(struct pm_node **out, const struct pm_config *c);

/* Closes every connection at once (no flush) and frees the node. */
void pm_node_destroy(struct pm_node *n);

/*
 * Runs one loop turn: sends what is queued, waits up to timeout_ms (-1 =
 * forever, 0 = poll) and dispatches callbacks. Returns the number of
 * completions handled (>= 0) or -errno.
 */
int pm_node_run(struct pm_node *n, int timeout_ms);

/*
 * Graceful close of every stream: sends what is queued, then a CLOSE frame
 * with reason SHUTDOWN, within timeout_ms. Returns 0 when all was sent,
 * -ETIMEDOUT if some peers did not drain in time (they are closed anyway).
 */
int pm_node_shutdown(struct pm_node *n, int timeout_ms);

/* The node's 64-bit id. */
uint64_t pm_node_id(const struct pm_node *n);

/* "io_uring" or "epoll". */
const char *pm_node_engine(const struct pm_node *n);

/* Writes the bound "HOST:PORT" into buf. Returns its length or -ENOSPC. */
int pm_node_listen_addr(const struct pm_node *n, char *buf, size_t len);

/*
 * Returns the stream to the node listening at addr ("HOST:PORT"), dialling
 * it only if no stream to that node exists (an inbound one counts). While
 * streams to it are closing, the new one dials once the newest has ended,
 * so its messages come after theirs. Returns
 * 0, -EINVAL for a malformed address, -ENOSPC when the slab is full, or
 * -errno. A failed dial arrives later as PM_EV_CLOSED with the error.
 */
int pm_connect(struct pm_node *n, const char *addr, struct pm_stream *out);

/* Returns 0 and the live stream to node id, or -ENOENT. */
int pm_stream_by_id(struct pm_node *n, uint64_t id, struct pm_stream *out);

/* The stream from this node to itself (always live). Returns 0. */
int pm_self(struct pm_node *n, struct pm_stream *out);

/*
 * Copies one message into the stream's TX ring. Returns 0, -EAGAIN when the
 * ring is full (PM_EV_WRITABLE follows), -EMSGSIZE when len exceeds the
 * peer's or our max_message, -ESTALE for a dead handle, -EPIPE when the
 * stream is closing, -EBUSY while a pm_reserve() is open.
 */
int pm_send(struct pm_node *n, struct pm_stream s, const void *buf,
	    size_t len);

/*
 * Copies count messages, msgs[i] being one message, into the stream's TX
 * ring in order: the batched pm_send, whose checks and bookkeeping are paid
 * once per call. Returns how many were queued, from the first on: count, or
 * fewer when the ring filled (PM_EV_WRITABLE follows) or msgs[returned] is
 * refused, which the next call then reports. When none is queued, returns
 * the errors of pm_send for msgs[0], or -EINVAL for msgs NULL with count > 0
 * (count 0 returns 0).
 */
int pm_sendv(struct pm_node *n, struct pm_stream s, const struct iovec *msgs,
	     size_t count);

/*
 * Reserves room for one message of up to len bytes in the TX ring and sets
 * *buf to it: write the message there, then pm_commit(). Returns 0 or the
 * errors of pm_send. Only one reservation per stream at a time.
 */
int pm_reserve(struct pm_node *n, struct pm_stream s, size_t len, void **buf);

/* Queues the reserved message, len <= the reserved length. Returns 0,
 * -EINVAL without a reservation or for a larger len, -ESTALE. */
int pm_commit(struct pm_node *n, struct pm_stream s, size_t len);

/* Closes the stream after sending what is queued. Returns 0 or -ESTALE. */
int pm_close(struct pm_node *n, struct pm_stream s);

/* Resumes delivery on a stream paused by a message callback. 0 or -ESTALE. */
int pm_stream_resume(struct pm_node *n, struct pm_stream s);

/*
 * Sends one message to node id anywhere in the mesh: on the direct stream
 * when there is one, else through relays on the shortest path, held until
 * id acknowledges it and sent again on another path if one fails (so
 * messages to one node arrive once, in order, either way). Returns 0,
 * -EHOSTUNREACH when no route is known, -EAGAIN when the ring is full
 * (PM_EV_WRITABLE with peer_id follows), -EMSGSIZE. PM_EV_UNREACHABLE
 * reports a relay that found no way on (unsent 0: still held) or, after
 * resume_ms without a route, the messages given up on (unsent).
 */
int pm_send_to(struct pm_node *n, uint64_t id, const void *buf, size_t len);

/*
 * Sends one message to every other node of the mesh, each getting it exactly
 * once, also through relays (flooding with per-origin sequence numbers).
 * Returns the number of neighbours it was queued to (0: alone), -EAGAIN
 * when a neighbour's ring is full (nothing was queued), -EMSGSIZE.
 */
int pm_broadcast(struct pm_node *n, const void *buf, size_t len);

/* What a node knows of one mesh member. */
struct pm_peer_info {
	uint64_t id;
	char addr[64];		/* "HOST:PORT" or "" */
	bool direct;		/* a live stream to it */
	bool reachable;
	uint32_t hops;		/* 1: neighbour */
	uint64_t via;		/* next hop's id */
	uint64_t msgs_in, msgs_out, bytes_in, bytes_out; /* direct stream */
	uint64_t relayed;	/* messages forwarded to this neighbour */
};

/* Fills up to max entries, one per known node but self. Returns the count
 * of known nodes (which may exceed max). */
int pm_mesh_peers(struct pm_node *n, struct pm_peer_info *out, size_t max);

/* Sets *id to the peer's node id; -EAGAIN before the handshake, -ESTALE. */
int pm_stream_peer_id(struct pm_node *n, struct pm_stream s, uint64_t *id);

/* True when both handles name the same live stream (after a merge). */
bool pm_stream_same(struct pm_node *n, struct pm_stream a,
		    struct pm_stream b);

/* Bytes queued in the stream's TX ring (not yet written to the socket). */
int64_t pm_stream_queued(struct pm_node *n, struct pm_stream s);

/*
 * Calls fn whenever fd is readable, from inside pm_node_run. Lets a program
 * wait on its own descriptors (stdin, signalfd) in the node's loop. One watch
 * per fd; fn = NULL removes it. Returns 0, -EEXIST, -ENOSPC.
 */
int pm_watch_fd(struct pm_node *n, int fd, pm_fd_fn fn, void *user);

struct pm_stats {
	uint64_t peers_live;		/* streams with a live connection */
	uint64_t conns_open;		/* sockets open, handshakes included */
	uint64_t accepted;
	uint64_t dialled;
	uint64_t rejected_busy;		/* inbound refused: slab full */
	uint64_t duplicates_closed;	/* connections closed by the pair rule */
	uint64_t protocol_errors;
	uint64_t timeouts;		/* handshakes and silent peers given up */
	uint64_t auth_failures;		/* peers refused: no key, wrong key */
	uint64_t reconnects;		/* dials made to resume a stream */
	uint64_t resumed;		/* streams carried over to a new
					 * connection, nothing lost */
	uint64_t restarts_seen;		/* peers found to be new processes */
	uint64_t msgs_in, msgs_out;
	uint64_t bytes_in, bytes_out;	/* payload bytes */
	uint64_t relayed;		/* routed and broadcast messages
					 * forwarded for others */
	uint64_t dropped_no_route;	/* relayed frames with no way on */
	uint64_t dropped_hop_limit;
	uint64_t duplicates_dropped;	/* broadcast or routed copies seen
					 * before */
	uint64_t unreachable;		/* PM_EV_UNREACHABLE raised */
	uint64_t route_changes;
	uint64_t route_retransmits;	/* times the unacknowledged routed
					 * messages to a node were sent again
					 * (a path lost or gone silent) */
	uint64_t mesh_nodes;		/* nodes known, self excluded */
};

/* Fills *st with the node's counters. */
void pm_node_stats(const struct pm_node *n, struct pm_stats *st);

/*
 * Reads a mesh key file: 64 hex digits (whitespace around them ignored) or
 * exactly 32 raw bytes. Returns 0 and fills key[32], -EINVAL for another
 * content, or -errno from opening/reading.
 */
int pm_key_load(const char *path, uint8_t key[32]);

/* A static string for a close reason. */
const char *pm_close_reason_str(enum pm_close_reason r);

#ifdef __cplusplus
}
#endif
#endif
