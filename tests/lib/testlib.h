/* SPDX-License-Identifier: MIT */
/*
 * Helpers shared by the behavioural tests: nodes whose callbacks record what
 * they see, a pump that runs nodes until a predicate holds (a bounded wait,
 * never a timing assertion), and views of the kernel's TCP table and of the
 * process's memory. Only the public API (pairmesh.h) is used.
 *
 * Include after <cmocka.h> and its prerequisites.
 */
#ifndef PM_TESTLIB_H
#define PM_TESTLIB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pairmesh.h"

/* Upper bound of every wait in the tests; generous for a noisy machine. */
#define TL_DEADLINE_MS		10000
#define TL_MAX_EVENTS		256
#define TL_LOG_MSGS		(1u << 16)
#define TL_LOG_BYTES		(8u << 20)
#define TL_ADDR_LEN		64

/* The backend of the group being run, set by the group setups. */
extern enum pm_engine tl_engine;

struct tl_node;

/*
 * Optional per-node message hook, called before logging. Returns what the
 * message callback returns (0 consumed, -EAGAIN to pause).
 */
typedef int (*tl_msg_hook)(struct tl_node *t, const struct pm_message *m);
typedef bool (*tl_pred)(void *arg);

struct tl_msg {
	uint64_t peer_id;
	struct pm_stream stream;
	size_t off;		/* into tl_node.bytes */
	size_t len;
};

struct tl_event {
	struct pm_event ev;
	uint64_t msgs_before;	/* messages delivered before this event */
};

struct tl_node {
	struct pm_node *n;
	uint64_t id;
	char addr[TL_ADDR_LEN];
	uint16_t port;

	struct tl_msg *msgs;	/* bounded log of delivered messages */
	size_t nmsgs;
	unsigned char *bytes;
	size_t nbytes;
	bool log_full;		/* something did not fit */
	bool nolog;		/* the hook keeps its own account */
	uint64_t msgs_seen;	/* every consumed message, logged or not */

	struct tl_event evs[TL_MAX_EVENTS];
	size_t nevs;
	uint64_t ev_count[PM_EV_ROUTES + 1];

	tl_msg_hook hook;
	void *hook_arg;
};

/* cmocka group setups: set tl_engine; io_uring probes the kernel. */
int tl_setup_io_uring(void **state);
int tl_setup_epoll(void **state);
int tl_teardown(void **state);

/* First statement of every case: skips it when the backend is missing. */
void tl_begin(void);

/* pm_config_init() plus the group's engine. */
void tl_config(struct pm_config *c);

/*
 * Creates a recording node from c (NULL: defaults); the callbacks and user
 * pointer of c are replaced. Fails the test on error.
 */
struct tl_node *tl_node_new(const struct pm_config *c);
/* Destroys the node (if still alive) and frees the record. NULL is fine. */
void tl_node_free(struct tl_node *t);
/* Destroys the pm node abruptly but keeps the record for inspection. */
void tl_node_kill(struct tl_node *t);

/*
 * Runs pm_node_run(x, 0) on each node in order, round-robin, blocking 1 ms
 * on one node when a round did nothing, until until(arg) holds or
 * deadline_ms pass. Returns whether it held. NULL entries are skipped.
 */
bool tl_pump(struct tl_node *const *v, size_t k, tl_pred until, void *arg,
	     int deadline_ms);
/* Runs rounds of pm_node_run(x, 0) on every node; lets stragglers land. */
void tl_settle(struct tl_node *const *v, size_t k, unsigned rounds);

/* Pumps until t has consumed at least n messages in total. */
bool tl_wait_msgs(struct tl_node *const *v, size_t k, struct tl_node *t,
		  uint64_t n);
/* Pumps until t recorded an event of type for stream s (s.h == 0: any). */
const struct tl_event *tl_wait_event(struct tl_node *const *v, size_t k,
				     struct tl_node *t,
				     enum pm_event_type type,
				     struct pm_stream s);
/* The first recorded event of type for s (s.h == 0: any), or NULL. */
const struct tl_event *tl_find_event(const struct tl_node *t,
				     enum pm_event_type type,
				     struct pm_stream s);

/* Sends, pumping v while the ring is full. Returns the final pm_send(). */
int tl_send_retry(struct tl_node *const *v, size_t k, struct tl_node *t,
		  struct pm_stream s, const void *buf, size_t len);

const void *tl_msg_data(const struct tl_node *t, size_t i);

/*
 * ESTABLISHED TCP connections whose remote port is one of ports: the
 * dialler's end of each connection into one of those listeners, so every
 * connection between nodes listening on them is counted exactly once.
 */
int tl_tcp_established(const uint16_t *ports, size_t k);
int tl_tcp_established_between(uint16_t pa, uint16_t pb);

/* One ESTABLISHED TCP socket: its inode (see /proc/PID/fd) and ports. */
struct tl_sock {
	unsigned long ino;
	uint16_t lport, rport;
};

/*
 * The same sockets as tl_tcp_established() counts, up to max of them into
 * out. *machine (if not NULL) gets the count of every ESTABLISHED socket
 * of the machine, for reports. Returns how many went into out.
 */
int tl_tcp_sockets(const uint16_t *ports, size_t k, struct tl_sock *out,
		   int max, int *machine);

/* A free 127.0.0.1 port (bound, then released): to listen on later. */
uint16_t tl_closed_port(void);
/* A 127.0.0.1 port where connects are refused: held bound, never
 * listening, for the rest of the process. */
uint16_t tl_refused_port(void);

/* Resident set and peak resident set (VmHWM) of this process, in bytes. */
size_t tl_rss_bytes(void);
size_t tl_hwm_bytes(void);

/* xorshift64: the deterministic byte source of the bulk tests. */
static inline uint64_t tl_xorshift(uint64_t *s)
{
	uint64_t x = *s;

	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	*s = x;
	return x;
}

/* Fills buf with the next len bytes (len a multiple of 8) of *s. */
void tl_fill(uint64_t *s, void *buf, size_t len);
/*
 * Checks buf against the next len bytes (a multiple of 8) of *s. Returns -1
 * when all match, else the offset of the first wrong byte.
 */
long tl_verify(uint64_t *s, const void *buf, size_t len);

/* Puts a u32/u64 at p in host order (tests only talk to themselves). */
void tl_put64(void *p, uint64_t v);
uint64_t tl_get64(const void *p);

/*
 * Message i of a test, len bytes: its number first (when len >= 8), then
 * bytes that depend on i and their offset, so a lost, repeated, reordered
 * or torn message shows.
 */
void tl_make_msg(void *buf, uint64_t i, size_t len);
/* Whether buf holds what tl_make_msg(buf, i, len) wrote. */
bool tl_msg_ok(const void *buf, size_t len, uint64_t i);

#endif
