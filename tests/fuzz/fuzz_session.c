/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target: a script of API calls on two in-process nodes.
 *
 * Nodes A (FS_ID_A) and B (FS_ID_B), epoll, small rings, are created once.
 * Each input starts with no connection between them and is a list of
 * operations: one opcode byte (taken modulo FS_NOPS), and one argument byte
 * for the operations that take one (see enum fs_opcode). Besides the API
 * calls, FS_CUT shuts down a socket between the nodes under them, a network
 * fault their streams must resume from. Afterwards every stream is closed
 * and both nodes must come back to no open connection.
 *
 * Every message carries its sender and a per-sender sequence number, and
 * its bytes follow from that number. The receiver checks that each message
 * it consumes comes from the other node, is intact, is not one it consumed
 * before, and is newer than the last one consumed from that node: nothing
 * is duplicated, reordered or corrupted, across closes, reconnects, merges
 * of simultaneous dials, faults, pauses, routed and broadcast sends. A
 * message paused by the callback must be the next one its stream delivers.
 *
 * FS_TRACE=1 logs every operation, event and message to stderr (triage);
 * FS_ORDER=loose keeps every check but the order one and FS_NO_PAUSE=1
 * makes pauses no-ops (to explore past a known bug); FZ_RECORD (fuzz_util.h) keeps the inputs that led to
 * a failure, which may need them all: the nodes outlive each input.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>

#include "fuzz_util.h"
#include "frame.h"

#define FS_ID_A		1000u
#define FS_ID_B		2000u
#define FS_PEERS	4u
#define FS_RING		(16u << 10)
#define FS_MAX_MSG	(8u << 10)
#define FS_MSG_HDR	16u
#define FS_MAGIC	0x46534551u	/* "FSEQ" */
#define FS_MAX_OPS	512u
#define FS_MAX_TURNS	4096u	/* per input, all RUN operations */
#define FS_MAX_WAITS	64u	/* per input, WAIT operations */
#define FS_HANDLES	8u
#define FS_WINDOW	65536u	/* sequence numbers tracked for duplicates */

/* A's operations are even, B's the odd one after: the same for B. */
enum fs_opcode {
	FS_SEND,		/* arg: size; pm_send on the current handle */
	FS_SEND_B,
	FS_CLOSE,		/* pm_close on the current handle */
	FS_CLOSE_B,
	FS_CONNECT,		/* current handle := pm_connect to the other */
	FS_CONNECT_B,
	FS_SEND_TO,		/* arg: size; pm_send_to the other's id */
	FS_SEND_TO_B,
	FS_BROADCAST,		/* arg: size */
	FS_BROADCAST_B,
	FS_PAUSE,		/* the next message to this node pauses */
	FS_PAUSE_B,
	FS_RESUME,		/* pm_stream_resume on the paused stream */
	FS_RESUME_B,
	FS_BURST,		/* arg: count; sends until -EAGAIN */
	FS_BURST_B,
	FS_RESERVE,		/* arg: size; pm_reserve, pm_commit half */
	FS_RESERVE_B,
	FS_BY_ID,		/* current handle := pm_stream_by_id */
	FS_BY_ID_B,
	FS_ECHO,		/* toggles: answer inside the callback */
	FS_ECHO_B,
	FS_CLOSE_IN_CB,		/* the next callback closes its stream */
	FS_CLOSE_IN_CB_B,
	FS_RUN,			/* arg: 1 + arg % 32 turns of both nodes */
	FS_WAIT,		/* turns until idle, blocking up to 1 ms */
	FS_CUT,			/* arg: shuts down one A-B socket (a fault) */
	FS_NOPS,
};

struct fs_side {
	struct pm_node *n;
	uint64_t id;
	char addr[64];
	uint16_t port;
	struct pm_stream cur;		/* the handle sends go to */
	struct pm_stream seen[FS_HANDLES]; /* handles to close at the end */
	uint32_t nseen;
	uint64_t seq;			/* last sequence number sent */
	uint64_t last;			/* last consumed from the other */
	uint64_t seen_max;		/* largest consumed from the other */
	uint64_t seen_bits[FS_WINDOW / 64]; /* consumed: seq % FS_WINDOW */
	bool pause_next;
	struct pm_stream paused;	/* a stream this side paused */
	uint64_t paused_seq;
	bool echo, close_in_cb;
	struct fs_side *other;
};

struct fs_state {
	struct fs_side a, b;
	struct pm_node *v[2];
	uint8_t buf[FS_MAX_MSG];
	uint64_t inputs;
	int trace;			/* FS_TRACE=1: log to stderr */
	int loose;			/* FS_ORDER=loose: no order check */
	int no_pause;			/* FS_NO_PAUSE=1: pauses are no-ops */
};

static struct fs_state fs = { .trace = -1 };

/* Triage aid: FS_TRACE=1 ./fuzz_session crash-... tells the story. */
#define FS_LOG(...)							\
	do {								\
		if (fs.trace > 0)					\
			fprintf(stderr, __VA_ARGS__);			\
	} while (0)

static char fs_name(const struct fs_side *s)
{
	return s == &fs.a ? 'A' : 'B';
}

static void fs_remember(struct fs_side *s, struct pm_stream h)
{
	for (uint32_t i = 0; i < s->nseen; i++)
		if (s->seen[i].h == h.h)
			return;
	if (s->nseen < FS_HANDLES)
		s->seen[s->nseen++] = h;
	else
		s->seen[h.h % FS_HANDLES] = h;
}

/* Builds message seq of len bytes from s into fs.buf. */
static size_t fs_build(struct fs_side *s, uint64_t seq, size_t len)
{
	if (len < FS_MSG_HDR)
		len = FS_MSG_HDR;
	put_be32(fs.buf, FS_MAGIC);
	fs.buf[4] = s == &fs.a ? 'A' : 'B';
	memset(fs.buf + 5, 0, 3);
	put_be64(fs.buf + 8, seq);
	for (size_t i = FS_MSG_HDR; i < len; i++)
		fs.buf[i] = (uint8_t)(seq + i);
	return len;
}

static size_t fs_len(uint8_t arg)
{
	return FS_MSG_HDR + (size_t)arg * 31;
}

static void fs_check(struct fs_side *s, const struct pm_message *m)
{
	const uint8_t *d = m->data;
	struct fs_side *o = s->other;
	uint64_t seq;

	FZ_CHECK(m->peer_id == o->id, "node %llu got a message from %llu",
		 (unsigned long long)s->id, (unsigned long long)m->peer_id);
	FZ_CHECK(m->len >= FS_MSG_HDR && get_be32(d) == FS_MAGIC &&
		 d[4] == (o == &fs.a ? 'A' : 'B'),
		 "node %llu got a foreign message of %zu bytes",
		 (unsigned long long)s->id, m->len);
	seq = get_be64(d + 8);
	for (size_t i = FS_MSG_HDR; i < m->len; i++)
		FZ_CHECK(d[i] == (uint8_t)(seq + i),
			 "message %llu to %llu corrupt at byte %zu of %zu",
			 (unsigned long long)seq, (unsigned long long)s->id,
			 i, m->len);
	if (s->paused.h && m->stream.h == s->paused.h) {
		FZ_CHECK(seq == s->paused_seq, "node %llu paused message "
			 "%llu but its stream delivered %llu next",
			 (unsigned long long)s->id,
			 (unsigned long long)s->paused_seq,
			 (unsigned long long)seq);
	}
	if (!fs.loose)
		FZ_CHECK(seq > s->last, "node %llu got message %llu after "
			 "%llu (flags %u)", (unsigned long long)s->id,
			 (unsigned long long)seq,
			 (unsigned long long)s->last, m->flags);
	FZ_CHECK(seq > s->seen_max || (s->seen_max - seq < FS_WINDOW &&
		 !(s->seen_bits[seq % FS_WINDOW / 64] >> (seq % 64) & 1)),
		 "node %llu got message %llu twice (or very late: %llu seen)",
		 (unsigned long long)s->id, (unsigned long long)seq,
		 (unsigned long long)s->seen_max);
}

/* Marks seq consumed in the window of sequence numbers below the largest. */
static void fs_seen(struct fs_side *s, uint64_t seq)
{
	if (seq > s->seen_max) {
		uint64_t from = s->seen_max + 1;

		if (seq - s->seen_max >= FS_WINDOW)
			from = seq - FS_WINDOW + 1;
		for (uint64_t i = from; i < seq; i++)
			s->seen_bits[i % FS_WINDOW / 64] &= ~(1ULL << (i % 64));
		s->seen_max = seq;
	}
	s->seen_bits[seq % FS_WINDOW / 64] |= 1ULL << (seq % 64);
}

static int fs_message(struct pm_node *n, const struct pm_message *m,
		      void *user)
{
	struct fs_side *s = user;

	fs_check(s, m);		/* first: m->len may be short */
	FS_LOG("%c: message %llu, %zu bytes, stream %llx, flags %u%s\n",
	       fs_name(s), (unsigned long long)get_be64((const uint8_t *)
						       m->data + 8),
	       m->len, (unsigned long long)m->stream.h, m->flags,
	       s->pause_next ? ", paused" : "");
	fs_remember(s, m->stream);
	if (s->pause_next) {
		s->pause_next = false;
		s->paused = m->stream;
		s->paused_seq = get_be64((const uint8_t *)m->data + 8);
		return -EAGAIN;
	}
	if (s->paused.h == m->stream.h)
		s->paused.h = 0;
	s->last = get_be64((const uint8_t *)m->data + 8);
	fs_seen(s, s->last);
	if (s->echo) {
		/* Re-entrant: a send from inside the delivery loop. The
		 * message buffer is separate from m->data (the RX ring). */
		uint8_t echo[FS_MSG_HDR + 8];

		put_be32(echo, FS_MAGIC);
		echo[4] = s == &fs.a ? 'A' : 'B';
		memset(echo + 5, 0, 3);
		put_be64(echo + 8, ++s->seq);
		for (size_t i = FS_MSG_HDR; i < sizeof(echo); i++)
			echo[i] = (uint8_t)(s->seq + i);
		(void)pm_send(n, m->stream, echo, sizeof(echo));
	}
	if (s->close_in_cb) {
		s->close_in_cb = false;
		(void)pm_close(n, m->stream);
	}
	return 0;
}

static void fs_event(struct pm_node *n, const struct pm_event *ev,
		     void *user)
{
	struct fs_side *s = user;

	FS_LOG("%c: event %d stream %llx peer %llu error %d reason %d "
	       "unsent %llu\n", fs_name(s), ev->type,
	       (unsigned long long)ev->stream.h,
	       (unsigned long long)ev->peer_id, ev->error, ev->reason,
	       (unsigned long long)ev->unsent);
	if (ev->type == PM_EV_CONNECTED) {
		FZ_CHECK(ev->peer_id == s->other->id,
			 "node %llu connected to %llu",
			 (unsigned long long)s->id,
			 (unsigned long long)ev->peer_id);
		fs_remember(s, ev->stream);
		if (!s->cur.h)
			s->cur = ev->stream;
	}
}

static void fs_side_init(struct fs_side *s, uint64_t id, struct fs_side *o)
{
	struct pm_config c;
	int r;

	s->id = id;
	s->other = o;
	fz_config(&c, id, FS_PEERS, FS_RING, FS_MAX_MSG);
	c.on_message = fs_message;
	c.on_event = fs_event;
	c.user = s;
	s->n = fz_node_new(&c);
	r = pm_node_listen_addr(s->n, s->addr, sizeof(s->addr));
	FZ_CHECK(r > 0, "pm_node_listen_addr: %d", r);
	s->port = (uint16_t)atoi(strrchr(s->addr, ':') + 1);
}

static void fs_teardown(void)
{
	pm_node_destroy(fs.a.n);
	pm_node_destroy(fs.b.n);
	fs.a.n = fs.b.n = NULL;
}

static void fs_init(void)
{
	if (fs.a.n)
		return;
	if (fs.trace < 0) {
		const char *o = getenv("FS_ORDER");

		fs.trace = getenv("FS_TRACE") && *getenv("FS_TRACE") == '1';
		fs.loose = o && !strcmp(o, "loose");
		fs.no_pause = getenv("FS_NO_PAUSE") != NULL;
	}
	fz_isolate();
	fs_side_init(&fs.a, FS_ID_A, &fs.b);
	fs_side_init(&fs.b, FS_ID_B, &fs.a);
	fs.v[0] = fs.a.n;
	fs.v[1] = fs.b.n;
	atexit(fs_teardown);
}

static bool fs_quiet(void *arg)
{
	return !fz_conns(fs.a.n) && !fz_conns(fs.b.n);
}

/* Closes every stream either side has seen; both must end up with no
 * connection open. Sequence numbers carry over: they only grow. */
static void fs_reset(void)
{
	struct fs_side *sides[2] = { &fs.a, &fs.b };

	for (int k = 0; k < 2; k++) {
		struct fs_side *s = sides[k];

		s->pause_next = s->echo = s->close_in_cb = false;
		if (s->paused.h)
			(void)pm_stream_resume(s->n, s->paused);
		s->paused.h = 0;
		for (uint32_t i = 0; i < s->nseen; i++)
			(void)pm_close(s->n, s->seen[i]);
		if (s->cur.h)
			(void)pm_close(s->n, s->cur);
		s->nseen = 0;
		s->cur.h = 0;
	}
	FZ_CHECK(fz_wait(fs.v, 2, fs_quiet, NULL, FZ_DEADLINE_MS),
		 "connections stay open after closing every stream "
		 "(A %llu, B %llu)", (unsigned long long)fz_conns(fs.a.n),
		 (unsigned long long)fz_conns(fs.b.n));
}

static void fs_send(struct fs_side *s, size_t len, int how)
{
	size_t n = fs_build(s, s->seq + 1, len);
	int r;

	if (how == 0)
		r = pm_send(s->n, s->cur, fs.buf, n);
	else if (how == 1)
		r = pm_send_to(s->n, s->other->id, fs.buf, n);
	else
		r = pm_broadcast(s->n, fs.buf, n);
	/* A number is used once whether or not the send took it. */
	s->seq++;
	FS_LOG("%c: send %d of %llu: %d\n", fs_name(s), how,
	       (unsigned long long)s->seq, r);
	FZ_CHECK(r >= 0 || r == -EAGAIN || r == -ESTALE || r == -EPIPE ||
		 r == -EHOSTUNREACH || r == -EMSGSIZE || r == -EBUSY,
		 "send (%d) returned %d", how, r);
}

static void fs_reserve(struct fs_side *s, size_t len)
{
	void *dst;
	size_t n = fs_build(s, s->seq + 1, len);
	size_t half = n / 2 < FS_MSG_HDR ? FS_MSG_HDR : n / 2;
	int r = pm_reserve(s->n, s->cur, n, &dst);

	s->seq++;
	if (r)
		return;
	/* The committed prefix must be a whole message on its own. */
	fs_build(s, s->seq, half);
	memcpy(dst, fs.buf, half);
	r = pm_commit(s->n, s->cur, half);
	FZ_CHECK(r == 0, "pm_commit: %d", r);
}

static uint16_t fs_port(const struct sockaddr_storage *ss)
{
	if (ss->ss_family != AF_INET)
		return 0;
	return ntohs(((const struct sockaddr_in *)ss)->sin_port);
}

/*
 * A network fault: shuts down the arg-th socket between A and B (found in
 * /proc/self/fd by its ports), so both nodes see the connection die under
 * them and resume the stream. The node still owns and closes the fd.
 */
static void fs_cut(uint8_t arg)
{
	uint16_t pa = fs.a.port, pb = fs.b.port;
	int fds[64], k = 0;
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;

	if (!d)
		return;
	while ((e = readdir(d)) && k < 64) {
		struct sockaddr_storage me, peer;
		socklen_t ml = sizeof(me), pl = sizeof(peer);
		int fd = atoi(e->d_name);
		uint16_t lp, rp;

		if (e->d_name[0] == '.' || fd == dirfd(d) ||
		    getsockname(fd, (struct sockaddr *)&me, &ml) ||
		    getpeername(fd, (struct sockaddr *)&peer, &pl))
			continue;
		lp = fs_port(&me);
		rp = fs_port(&peer);
		if (lp == pa || lp == pb || rp == pa || rp == pb)
			fds[k++] = fd;
	}
	closedir(d);
	if (k) {
		FS_LOG("cut fd %d of %d\n", fds[arg % k], k);
		shutdown(fds[arg % k], SHUT_RDWR);
	}
}

static void fs_burst(struct fs_side *s, unsigned count)
{
	for (unsigned i = 0; i < count; i++) {
		size_t n = fs_build(s, ++s->seq, FS_MSG_HDR + i * 8);

		if (pm_send(s->n, s->cur, fs.buf, n))
			break;
	}
}

static bool fs_takes_arg(unsigned op)
{
	if (op >= FS_RUN)
		return op == FS_RUN || op == FS_CUT;
	switch (op & ~1u) {
	case FS_SEND:
	case FS_SEND_TO:
	case FS_BROADCAST:
	case FS_BURST:
	case FS_RESERVE:
		return true;
	default:
		return false;
	}
}

/* Runs one operation at p; returns the bytes it used. */
static size_t fs_op(const uint8_t *p, size_t left, unsigned *turns,
		    unsigned *waits)
{
	unsigned op = p[0] % FS_NOPS;
	struct fs_side *s = op & 1 ? &fs.b : &fs.a;
	bool has_arg = fs_takes_arg(op) && left > 1;
	uint8_t arg = has_arg ? p[1] : 0;
	int r;

	if (op >= FS_RUN)
		s = NULL;
	FS_LOG("op %u by %c, arg %u\n", op, s ? fs_name(s) : '-', arg);
	switch (op) {
	case FS_SEND:
	case FS_SEND_B:
		fs_send(s, fs_len(arg), 0);
		break;
	case FS_SEND_TO:
	case FS_SEND_TO_B:
		fs_send(s, fs_len(arg), 1);
		break;
	case FS_BROADCAST:
	case FS_BROADCAST_B:
		fs_send(s, fs_len(arg), 2);
		break;
	case FS_BURST:
	case FS_BURST_B:
		fs_burst(s, 1 + arg % 64);
		break;
	case FS_RESERVE:
	case FS_RESERVE_B:
		fs_reserve(s, fs_len(arg));
		break;
	case FS_CLOSE:
	case FS_CLOSE_B:
		r = pm_close(s->n, s->cur);
		FZ_CHECK(r == 0 || r == -ESTALE, "pm_close: %d", r);
		break;
	case FS_CONNECT:
	case FS_CONNECT_B:
		r = pm_connect(s->n, s->other->addr, &s->cur);
		FZ_CHECK(r == 0 || r == -ENOSPC, "pm_connect: %d", r);
		FS_LOG("%c: connect %d stream %llx\n", fs_name(s), r,
		       (unsigned long long)s->cur.h);
		if (!r)
			fs_remember(s, s->cur);
		break;
	case FS_PAUSE:
	case FS_PAUSE_B:
		s->pause_next = !fs.no_pause;
		break;
	case FS_RESUME:
	case FS_RESUME_B:
		if (s->paused.h)
			(void)pm_stream_resume(s->n, s->paused);
		break;
	case FS_BY_ID:
	case FS_BY_ID_B:
		if (!pm_stream_by_id(s->n, s->other->id, &s->cur))
			fs_remember(s, s->cur);
		break;
	case FS_ECHO:
	case FS_ECHO_B:
		s->echo = !s->echo;
		break;
	case FS_CLOSE_IN_CB:
	case FS_CLOSE_IN_CB_B:
		s->close_in_cb = true;
		break;
	case FS_RUN:
		for (unsigned i = 1 + arg % 32; i && *turns; i--, (*turns)--)
			fz_turn(fs.v, 2);
		break;
	case FS_CUT:
		fs_cut(arg);
		break;
	case FS_WAIT:
		if (!*waits)
			break;
		(*waits)--;
		fz_settle(fs.v, 2, 64);
		(void)pm_node_run(fs.a.n, 1);
		fz_settle(fs.v, 2, 64);
		break;
	}
	return has_arg ? 2 : 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	unsigned turns = FS_MAX_TURNS, waits = FS_MAX_WAITS, ops = 0;
	size_t at = 0;

	fs_init();
	fz_record(data, size);
	while (at < size && ops++ < FS_MAX_OPS)
		at += fs_op(data + at, size - at, &turns, &waits);
	fz_settle(fs.v, 2, 64);
	fs_reset();
	fs.inputs++;
	return 0;
}
