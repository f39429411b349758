/* SPDX-License-Identifier: MIT */
/*
 * `pairmesh bench`: bench_main() is the subcommand; the rest is shared by
 * the tools/bench_*.c files. Every scenario runs its nodes in child
 * processes (fork); the parent holds no node and only coordinates, through
 * one SOCK_SEQPACKET socketpair per child carrying struct ctl messages.
 */
#ifndef PM_BENCH_H
#define PM_BENCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>

#include "pairmesh.h"

/* `pairmesh bench ...`: argv[0] is "bench". Returns the exit status. */
int bench_main(int argc, char *argv[]);
void bench_usage(FILE *f);

#define BENCH_MIN_SIZE		16u		/* the message header */
#define BENCH_MAX_SIZE		(64u << 20)
#define BENCH_MAX_NODES		64u		/* mesh --nodes */
#define BENCH_MAX_FANIN		1000u		/* fanin --peers */
#define BENCH_MAX_SCALE		10000u		/* scale --peers */
#define BENCH_SETUP_MS		10000		/* start, connect, handshake */
#define BENCH_GRACE_MS		30000		/* for results after the run */
#define BENCH_MARKER_SEQ	UINT64_MAX
#define BENCH_MARKER_LEN	16u		/* MARKER_SEQ, then the count */

struct bench_opts {
	const char *scenario;
	size_t size;
	double seconds;
	enum pm_engine engine;
	bool json;
	uint32_t nodes;
	uint32_t peers;
};

/* What a scenario measured; NAN prints as null. */
struct bench_result {
	char engine[16];	/* as a node reported it */
	double seconds;		/* the measured phase */
	double msgs_per_s, mb_per_s;
	double p50_us, p99_us, p999_us;
	double direct_msgs_per_s, ratio;		/* relay */
	uint32_t nodes, peers;				/* mesh, fanin, scale */
	double connect_s, rss_kib_per_peer;		/* scale */
	double rss_kib_sender, rss_kib_receiver;	/* slow: VmHWM */
	double hub_cpu_ns_per_msg;	/* fanin: the receiver's CPU time
					 * (user + system) per message */
	char why[256];		/* the failure, when a scenario returns -1 */
};

/* The scenarios: 0 on success, -1 after filling r->why. */
int bench_throughput(const struct bench_opts *o, struct bench_result *r);
int bench_latency(const struct bench_opts *o, struct bench_result *r);
int bench_slow(const struct bench_opts *o, struct bench_result *r);
int bench_relay(const struct bench_opts *o, struct bench_result *r);
int bench_mesh(const struct bench_opts *o, struct bench_result *r);
int bench_fanin(const struct bench_opts *o, struct bench_result *r);
int bench_scale(const struct bench_opts *o, struct bench_result *r);

/* Parent <-> child messages, one per seqpacket. */
enum ctl_type {
	CTL_READY = 1,	/* child: set up (addr, id, engine in text) */
	CTL_PEER,	/* parent: a node to know (addr, id, v[0] = index) */
	CTL_GO,		/* parent: start (t0 = the start time) */
	CTL_DONE,	/* child: finished sending (v[] = counts) */
	CTL_EXPECT,	/* parent: how much to wait for (v[0]) */
	CTL_RESULT,	/* child: what it measured */
	CTL_STOP,	/* parent: tear down and exit */
	CTL_BYE,	/* child: v[0] = VmHWM KiB, v[1] = RSS KiB */
	CTL_FAIL,	/* child: text says why; it exits 1 */
};

struct ctl {
	uint32_t type;
	int32_t err;
	uint64_t id;
	int64_t t0, t1;		/* CLOCK_MONOTONIC ns, shared by processes */
	uint64_t v[BENCH_MAX_NODES];
	char addr[64];
	char text[128];
};

struct child {
	pid_t pid;
	int fd;			/* the parent's end */
	char name[32];		/* for messages */
};

/* Runs in the child with its end of the socketpair; must not return. */
typedef void (*child_fn)(int fd, const struct bench_opts *o, void *arg);

int64_t bench_now_ns(void);
uint32_t bench_pow2(uint64_t v);
/* pm_config_init() + 127.0.0.1:0, the engine, ring and max_message. */
void bench_config(struct pm_config *c, const struct bench_opts *o,
		  uint32_t ring, uint32_t max_message);
/* A ring of at least min bytes holding four messages of size. */
uint32_t bench_ring(size_t size, uint32_t min);
long bench_rss_kib(void);	/* /proc/self/statm resident */
long bench_hwm_kib(void);	/* /proc/self/status VmHWM */
int64_t bench_cpu_ns(void);	/* this process's user + system time */
int bench_fail(struct bench_result *r, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* Progress on stderr, only for runs longer than about five seconds. */
void bench_progress(const char *fmt, ...)
	__attribute__((format(printf, 1, 2)));
extern bool bench_verbose;

/*
 * Message body: seq (u64), origin (u32), check bytes at 12 and len - 1.
 * Inline: they run once per message, like the peers' own (bench/peers/).
 */
static inline void msg_fill(void *buf, size_t len, uint64_t seq,
			    uint32_t origin)
{
	uint8_t *d = buf;

	memcpy(d, &seq, 8);
	memcpy(d + 8, &origin, 4);
	d[12] = (uint8_t)seq;
	d[len - 1] = (uint8_t)(seq >> 8);
}

/* True when the checks hold; sets *seq and *origin. */
static inline bool msg_check(const void *buf, size_t len, uint64_t *seq,
			     uint32_t *origin)
{
	const uint8_t *d = buf;

	if (len < BENCH_MIN_SIZE)
		return false;
	memcpy(seq, d, 8);
	memcpy(origin, d + 8, 4);
	return d[12] == (uint8_t)*seq && d[len - 1] == (uint8_t)(*seq >> 8);
}

static inline bool msg_is_marker(const void *buf, size_t len,
				 uint64_t *count)
{
	uint64_t seq;

	if (len != BENCH_MARKER_LEN)
		return false;
	memcpy(&seq, buf, 8);
	if (seq != BENCH_MARKER_SEQ)
		return false;
	memcpy(count, (const uint8_t *)buf + 8, 8);
	return true;
}

void msg_marker(void *buf, uint64_t count);

/*
 * A receiver of one sequence (throughput, slow, relay): consecutive
 * sequence numbers, the right length, then a marker with the count.
 */
struct seq_sink {
	size_t size;
	uint64_t msgs, bytes;
	uint64_t marker_count;
	uint64_t gap_want, gap_got;
	int64_t end_ns;		/* arrival of the marker */
	unsigned slow_every;	/* sleep 1 ms every this many; 0: never */
	int want_hops;		/* -1: any */
	bool ok, done;
	int err;		/* stream closed early */
};

void sink_init(struct seq_sink *s, size_t size);
int sink_message(struct pm_node *n, const struct pm_message *m, void *user);
void sink_event(struct pm_node *n, const struct pm_event *ev, void *user);
/* Fills a CTL_RESULT from the sink. */
void sink_result(const struct seq_sink *s, struct ctl *m);
/* Checks a sink's CTL_RESULT against sent; -1 with r->why on failure. */
int sink_verify(const struct ctl *m, uint64_t sent, const char *what,
		struct bench_result *r);

/* Parent side. */
int child_spawn(struct child *c, const char *name, child_fn fn,
		const struct bench_opts *o, void *arg);
int ctl_send(int fd, const struct ctl *m);
/* 0, -ETIMEDOUT, -EPIPE (the peer is gone). */
int ctl_recv(int fd, struct ctl *m, int timeout_ms);
/* Non-blocking: 1 with a message, 0 without, -EPIPE. */
int ctl_poll(int fd, struct ctl *m);
/* Waits for a message of type from c; anything else fails into r. */
int expect_msg(struct child *c, enum ctl_type type, struct ctl *m,
	       int timeout_ms, struct bench_result *r);
int send_msg(struct child *c, const struct ctl *m, struct bench_result *r);
/* STOP to each child, its BYE into bye[i] (may be NULL), reaps them. */
int stop_children(struct child *c, size_t k, struct ctl *bye,
		  struct bench_result *r);
/* SIGKILL and reap what is left (after a failure). */
void kill_children(struct child *c, size_t k);

/* Child side. */
void child_send(int fd, const struct ctl *m);
__attribute__((noreturn, format(printf, 2, 3)))
void child_fail(int fd, const char *fmt, ...);
/* Creates a node or fails the child. */
struct pm_node *child_node(int fd, const struct pm_config *c);
/* CTL_READY with the node's address, id and engine. */
void child_ready(int fd, struct pm_node *n);
/*
 * Runs the nodes (NULL entries skipped) until a message arrives from the
 * parent and returns it; a STOP is answered here: BYE, then exit.
 */
void child_wait(int fd, struct pm_node **v, size_t k, struct ctl *m);
/* Answers a STOP: BYE with the memory figures, destroys v, exits 0. */
__attribute__((noreturn))
void child_exit(int fd, struct pm_node **v, size_t k);
/* Runs until the marker or close on one node; -ETIMEDOUT after ms. */
int child_run_until(struct pm_node *n, const bool *done, int ms);

#endif
