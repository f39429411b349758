/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target: a real node fed arbitrary bytes by a plain TCP client.
 *
 * Node A (id FH_ID, epoll, a few small slots) is created once and reused.
 * A well-behaved node B (FH_PEER_ID) stays connected to it, so the mesh
 * frames a fuzzed peer sends are relayed and flooded on a real neighbour.
 *
 * Input: byte 0 is the mode, bytes 1 and 2 place the cuts between up to
 * three writes (so A sees frames in pieces), the rest is written to a fresh
 * connection to A. Mode bits:
 *   0-1  writes: 0 one, 1 two, 2 and 3 three
 *   2    half-close (SHUT_WR) after the last write, then turn the nodes
 *   3    read what A sent before closing
 *   4    close with SO_LINGER 0 (RST) instead of FIN
 * Inputs shorter than 3 bytes are written whole.
 *
 * After each input A must come back to one open connection (B's) within a
 * bounded wait. Every FH_CHECK_EVERY inputs, and after any input that cost
 * A its stream to B (a peer claiming B's id with another nonce is taken for
 * B restarted: an open mesh trusts ids), B closes, dials A again and both
 * exchange one message. A runs without resumption (see fh_init) and inside
 * a network namespace of its own when possible (fz_isolate).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fuzz_util.h"
#include "frame.h"

#define FH_ID		1000u	/* node under test */
#define FH_PEER_ID	3000u	/* its neighbour; the corpus uses 500, 2000 */
#define FH_PEERS	4u
#define FH_RING		(64u << 10)
#define FH_MAX_MSG	(16u << 10)
#define FH_CHECK_EVERY	64u
#define FH_HEALTH_LEN	16u
#define FH_MAGIC	0x46484c54u	/* "FHLT" */

struct fh_state {
	struct pm_node *a, *b;
	struct pm_node *v[2];
	struct sockaddr_in a_sin;
	char a_addr[64];
	struct pm_stream a_link, b_link;	/* A's and B's end of A-B */
	uint64_t inputs;
	unsigned check_every;
	uint64_t token;
	bool a_got, b_got;		/* the health messages arrived */
	bool b_refused;			/* B's dial ended before live */
	uint64_t relinks;		/* inputs that cost A its stream to B */
};

static struct fh_state fh = { .check_every = FH_CHECK_EVERY };

static bool fh_is_token(const struct pm_message *m)
{
	const uint8_t *d = m->data;

	return m->len == FH_HEALTH_LEN && get_be32(d) == FH_MAGIC &&
	       get_be64(d + 8) == fh.token;
}

static int fh_a_message(struct pm_node *n, const struct pm_message *m,
			void *user)
{
	if (m->peer_id == FH_PEER_ID && fh_is_token(m))
		fh.a_got = true;
	return 0;
}

static int fh_b_message(struct pm_node *n, const struct pm_message *m,
			void *user)
{
	if (m->peer_id == FH_ID && fh_is_token(m))
		fh.b_got = true;
	return 0;
}

static void fh_a_event(struct pm_node *n, const struct pm_event *ev,
		       void *user)
{
	if (ev->type == PM_EV_CONNECTED && ev->peer_id == FH_PEER_ID)
		fh.a_link = ev->stream;
	else if (ev->type == PM_EV_CLOSED && ev->stream.h == fh.a_link.h)
		fh.a_link.h = 0;
}

static void fh_b_event(struct pm_node *n, const struct pm_event *ev,
		       void *user)
{
	if (ev->type == PM_EV_CONNECTED && ev->peer_id == FH_ID) {
		fh.b_link = ev->stream;
	} else if (ev->type == PM_EV_CLOSED) {
		if (ev->stream.h == fh.b_link.h)
			fh.b_link.h = 0;
		fh.b_refused = true;
	}
}

static bool fh_linked(void *arg)
{
	return fh.a_link.h && fh.b_link.h;
}

static bool fh_unlinked(void *arg)
{
	return !fh.a_link.h && !fh.b_link.h && !fz_conns(fh.a) &&
	       !fz_conns(fh.b);
}

/* Back to A-B alone: B's connection is the only one either node has. */
static bool fh_baseline(void *arg)
{
	return fz_conns(fh.a) == (fh.a_link.h ? 1 : 0) &&
	       fz_conns(fh.b) == (fh.b_link.h ? 1 : 0);
}

static bool fh_tokens(void *arg)
{
	return fh.a_got && fh.b_got;
}

/* B dials A until the stream is live; a slab full of orphans (a fuzzed
 * peer said DUPLICATE) frees up within ORPHAN_MS. */
static void fh_link(void)
{
	uint64_t end = fz_now_ms() + FZ_DEADLINE_MS;
	struct pm_stream s;
	int r;

	while (!fh_linked(NULL)) {
		FZ_CHECK(fz_now_ms() < end, "B cannot connect to A "
			 "(a_link %d, b_link %d, A conns %llu)",
			 !!fh.a_link.h, !!fh.b_link.h,
			 (unsigned long long)fz_conns(fh.a));
		fh.b_refused = false;
		r = pm_connect(fh.b, fh.a_addr, &s);
		FZ_CHECK(r == 0, "pm_connect: %d", r);
		while (!fh_linked(NULL) && !fh.b_refused &&
		       fz_now_ms() < end)
			if (!fz_turn(fh.v, 2))
				(void)pm_node_run(fh.a, 1);
	}
}

/* At exit: the nodes' fds and maps go, and LeakSanitizer sees no node. */
static void fh_teardown(void)
{
	if (fh.relinks)
		fprintf(stderr, "fuzz_handshake: %llu inputs ended A's stream "
			"to B\n", (unsigned long long)fh.relinks);
	pm_node_destroy(fh.a);
	pm_node_destroy(fh.b);
	fh.a = fh.b = NULL;
}

static void fh_init(void)
{
	socklen_t len = sizeof(fh.a_sin);
	struct pm_config c;
	int r;

	if (fh.a)
		return;
	/* No resumption on A: it would keep each fuzzed peer's stream and
	 * redial it for resume_ms after every input (fuzz_session cuts
	 * connections between two real nodes instead). */
	fz_isolate();
	fz_config(&c, FH_ID, FH_PEERS, FH_RING, FH_MAX_MSG);
	c.resume_ms = 0;
	c.on_message = fh_a_message;
	c.on_event = fh_a_event;
	fh.a = fz_node_new(&c);
	fz_config(&c, FH_PEER_ID, FH_PEERS, FH_RING, FH_MAX_MSG);
	c.on_message = fh_b_message;
	c.on_event = fh_b_event;
	fh.b = fz_node_new(&c);
	fh.v[0] = fh.a;
	fh.v[1] = fh.b;
	atexit(fh_teardown);
	r = pm_node_listen_addr(fh.a, fh.a_addr, sizeof(fh.a_addr));
	FZ_CHECK(r > 0, "pm_node_listen_addr: %d", r);
	/* The plain client dials the same address, parsed once. */
	memset(&fh.a_sin, 0, len);
	fh.a_sin.sin_family = AF_INET;
	fh.a_sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	fh.a_sin.sin_port = htons((uint16_t)atoi(strrchr(fh.a_addr, ':') + 1));
	fh_link();
}

/*
 * B closes, dials again, and each side gets one message through: the node
 * still accepts, handshakes and delivers after whatever came before.
 */
static void fh_health(void)
{
	uint8_t msg[FH_HEALTH_LEN] = { 0 };
	int r;

	r = pm_close(fh.b, fh.b_link);
	FZ_CHECK(r == 0 || (!fh.b_link.h && r == -ESTALE), "pm_close: %d", r);
	FZ_CHECK(fz_wait(fh.v, 2, fh_unlinked, NULL, FZ_DEADLINE_MS),
		 "A-B does not close (A conns %llu, B conns %llu)",
		 (unsigned long long)fz_conns(fh.a),
		 (unsigned long long)fz_conns(fh.b));
	fh_link();
	fh.token++;
	fh.a_got = fh.b_got = false;
	put_be32(msg, FH_MAGIC);
	put_be64(msg + 8, fh.token);
	r = pm_send(fh.b, fh.b_link, msg, sizeof(msg));
	FZ_CHECK(r == 0, "B pm_send: %d", r);
	r = pm_send_to(fh.a, FH_PEER_ID, msg, sizeof(msg));
	FZ_CHECK(r == 0, "A pm_send_to B: %d", r);
	FZ_CHECK(fz_wait(fh.v, 2, fh_tokens, NULL, FZ_DEADLINE_MS),
		 "health message lost (A got %d, B got %d)", fh.a_got,
		 fh.b_got);
}

/*
 * A plain TCP connection to A. Non-blocking: libFuzzer's timer signal would
 * interrupt a blocking connect(). A's backlog takes it at once; A accepts it
 * when it next runs.
 */
static int fh_dial(void)
{
	struct pollfd pfd;
	socklen_t len = sizeof(int);
	int fd, r, err = 0;

	fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	FZ_CHECK(fd >= 0, "socket: %d", errno);
	r = connect(fd, (struct sockaddr *)&fh.a_sin, sizeof(fh.a_sin));
	FZ_CHECK(!r || errno == EINPROGRESS, "connect %s: %d", fh.a_addr,
		 errno);
	pfd = (struct pollfd){ .fd = fd, .events = POLLOUT };
	while ((r = poll(&pfd, 1, FZ_DEADLINE_MS)) < 0 && errno == EINTR)
		;
	FZ_CHECK(r == 1, "connect %s: poll %d, errno %d", fh.a_addr, r, errno);
	getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
	FZ_CHECK(!err, "connect %s: %d", fh.a_addr, err);
	return fd;
}

/* Reads and drops what A sent us; false once the connection is over. */
static bool fh_drain(int fd)
{
	uint8_t buf[4096];

	for (;;) {
		ssize_t r = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);

		if (r > 0)
			continue;
		return r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
	}
}

/* Writes all of p unless A stops reading or closes; then gives up. */
static void fh_write(int fd, const uint8_t *p, size_t len)
{
	unsigned stuck = 0;

	while (len && stuck < 64) {
		ssize_t r = send(fd, p, len, MSG_DONTWAIT | MSG_NOSIGNAL);

		if (r > 0) {
			p += r;
			len -= (size_t)r;
			continue;
		}
		if (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
			return;	/* A closed on us */
		/* A reads the handshake one frame at a time and a closing
		 * connection not at all: let it run, then try again. */
		stuck++;
		fz_settle(fh.v, 2, 8);
		if (!fh_drain(fd))
			return;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct linger lg = { .l_onoff = 1, .l_linger = 0 };
	const uint8_t *body = data;
	size_t len = size, cut[3];
	unsigned mode = 0, nwrites;
	int fd;

	fh_init();
	fz_record(data, size);
	if (size >= 3) {
		mode = data[0];
		body = data + 3;
		len = size - 3;
	}
	nwrites = (mode & 3) == 0 ? 1 : (mode & 3) == 1 ? 2 : 3;
	cut[0] = size >= 3 ? data[1] * len / 256 : len;
	cut[1] = size >= 3 ? cut[0] + data[2] * (len - cut[0]) / 256 : len;
	cut[2] = len;
	if (nwrites == 1)
		cut[0] = len;
	else if (nwrites == 2)
		cut[1] = len;

	fd = fh_dial();
	for (size_t i = 0, at = 0; i < 3 && at < len; i++) {
		fh_write(fd, body + at, cut[i] - at);
		at = cut[i];
		fz_settle(fh.v, 2, 16);
	}
	if (mode & 4) {
		shutdown(fd, SHUT_WR);
		fz_settle(fh.v, 2, 16);
	}
	if (mode & 8)
		fh_drain(fd);
	if (mode & 16)
		setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	close(fd);

	FZ_CHECK(fz_wait(fh.v, 2, fh_baseline, NULL, FZ_DEADLINE_MS),
		 "connections stay open (A %llu, B %llu, link %d/%d)",
		 (unsigned long long)fz_conns(fh.a),
		 (unsigned long long)fz_conns(fh.b), !!fh.a_link.h,
		 !!fh.b_link.h);
	if (!fh_linked(NULL)) {
		/* A peer claiming B's id can end A's stream to B (an open
		 * mesh trusts ids); A must then take B back. */
		fh.relinks++;
		fh_health();
	} else if (++fh.inputs % fh.check_every == 0 || fh.inputs == 1) {
		fh_health();
	}
	return 0;
}
