/* SPDX-License-Identifier: MIT */
/*
 * Writes the fuzz targets' seed corpora: DIR/fuzz_frame, DIR/fuzz_handshake
 * and DIR/fuzz_session, each a few small files. The frames are built with
 * the library's own encoders (src/frame.h), so a change of the wire format
 * shows up here. Regenerate the committed corpus with
 *
 *   cc -std=c11 -D_GNU_SOURCE -Iinclude -Isrc -o build/make_corpus \
 *	tests/fuzz/make_corpus.c src/frame.c
 *   rm -rf tests/fuzz/corpus && build/make_corpus tests/fuzz/corpus
 *
 * Formats: see the comment at the top of each target.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "pairmesh.h"
#include "frame.h"

/* Must match the targets. */
#define NODE_ID		1000u	/* fuzz_handshake's node A */
#define PEER_ID		3000u	/* fuzz_handshake's neighbour B */
#define LOW_ID		500u	/* below A: A waits for our ACCEPT */
#define HIGH_ID		2000u	/* above A: A arbitrates, sends ACCEPT */
#define OTHER_ID	4000u	/* a node only heard of */
#define FH_MAX_MSG	(16u << 10)

/* Session opcodes, from fuzz_session.c's enum fs_opcode. */
enum {
	SEND, SEND_B, CLOSE, CLOSE_B, CONNECT, CONNECT_B, SEND_TO, SEND_TO_B,
	BROADCAST, BROADCAST_B, PAUSE, PAUSE_B, RESUME, RESUME_B, BURST,
	BURST_B, RESERVE, RESERVE_B, BY_ID, BY_ID_B, ECHO, ECHO_B,
	CLOSE_IN_CB, CLOSE_IN_CB_B, RUN, WAIT, CUT,
};

struct buf {
	uint8_t b[8192];
	size_t len;
};

static const char *root;

static void put(struct buf *b, const void *p, size_t len)
{
	if (b->len + len > sizeof(b->b)) {
		fprintf(stderr, "make_corpus: seed too big\n");
		exit(1);
	}
	if (len)	/* p may be NULL for an empty payload */
		memcpy(b->b + b->len, p, len);
	b->len += len;
}

static void put8(struct buf *b, uint8_t v)
{
	put(b, &v, 1);
}

static void save(const char *target, const char *name, const struct buf *b)
{
	char path[512];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", root, target);
	mkdir(path, 0755);
	snprintf(path, sizeof(path), "%s/%s/%s", root, target, name);
	f = fopen(path, "wb");
	if (!f || fwrite(b->b, 1, b->len, f) != b->len || fclose(f)) {
		perror(path);
		exit(1);
	}
}

static void frame(struct buf *b, uint8_t type, const void *p, uint32_t len)
{
	uint8_t hdr[FRAME_HDR];

	frame_put_hdr(hdr, type, len);
	put(b, hdr, sizeof(hdr));
	put(b, p, len);
}

static void hello(struct buf *b, uint64_t id, uint8_t flags)
{
	uint8_t f[FRAME_HDR + HELLO_LEN];
	struct hello h = {
		.version = PM_PROTOCOL_VERSION,
		.flags = flags,
		.node_id = id,
		.nonce = 0x1234567890abcdefULL ^ id,
		.max_message = FH_MAX_MSG,
		.addr_type = ADDR_TCP4,
		.port = 9,
		.addr = { 127, 0, 0, 1 },
	};

	hello_put(f, &h);
	put(b, f, sizeof(f));
}

static void closef(struct buf *b, uint16_t reason)
{
	uint8_t f[FRAME_HDR + CLOSE_LEN];

	close_put(f, reason);
	put(b, f, sizeof(f));
}

static void data(struct buf *b, const char *s)
{
	frame(b, FRAME_DATA, s, (uint32_t)strlen(s));
}

static void mesh_hdr(uint8_t *p, uint64_t a, uint64_t x, uint8_t hops,
		     uint8_t ttl, uint16_t count)
{
	put_be64(p, a);
	put_be64(p + 8, x);
	p[16] = hops;
	p[17] = ttl;
	put_be16(p + 18, count);
}

static void mesh_addr(uint8_t *p, uint16_t port)
{
	memset(p, 0, MESH_ADDR);
	p[0] = ADDR_TCP4;
	put_be16(p + 2, port);
	p[4] = 127;
	p[7] = 1;
}

/* LINKS from origin listing ids; count_bias makes the count field lie. */
static void links(struct buf *b, uint64_t origin, uint64_t seq,
		  const uint64_t *ids, uint16_t n, int count_bias)
{
	uint8_t p[MESH_HDR + MESH_ADDR + 8 * LINK_ENTRY];
	size_t len = MESH_HDR + MESH_ADDR + (size_t)n * LINK_ENTRY;

	mesh_hdr(p, origin, seq, 0, 16, (uint16_t)(n + count_bias));
	mesh_addr(p + MESH_HDR, 9);
	for (uint16_t i = 0; i < n; i++) {
		uint8_t *e = p + MESH_HDR + MESH_ADDR + i * LINK_ENTRY;

		put_be64(e, ids[i]);
		mesh_addr(e + 8, (uint16_t)(9 + i));
	}
	frame(b, FRAME_LINKS, p, (uint32_t)len);
}

/* FLOOD: the mesh header and the message. ROUTE: the routed session's
 * epoch and sequence come between (seq 0: none, a short frame). */
static void routed(struct buf *b, uint8_t type, uint64_t a, uint64_t x,
		   uint8_t ttl, const char *msg)
{
	static uint64_t rseq;
	uint8_t p[ROUTE_HDR + 64];
	size_t n = strlen(msg), h = MESH_HDR;

	mesh_hdr(p, a, x, 0, ttl, 0);
	if (type == FRAME_ROUTE) {
		put_be64(p + MESH_HDR, 1000);	/* epoch */
		put_be64(p + MESH_HDR + 8, ++rseq);
		h = ROUTE_HDR;
	}
	memcpy(p + h, msg, n);
	frame(b, type, p, (uint32_t)(h + n));
}

/* RACK from acker to origin: the origin's epoch-1000 session up to seq. */
static void rack(struct buf *b, uint64_t acker, uint64_t origin,
		 uint64_t seq)
{
	uint8_t p[RACK_LEN];

	mesh_hdr(p, acker, origin, 0, 16, 0);
	put_be64(p + MESH_HDR, 1000);
	put_be64(p + MESH_HDR + 8, seq);
	frame(b, FRAME_RACK, p, sizeof(p));
}

static void unreach(struct buf *b, uint64_t origin, uint64_t dst,
		    uint64_t target)
{
	uint8_t p[MESH_HDR + 8];

	mesh_hdr(p, origin, dst, 0, 16, 0);
	put_be64(p + MESH_HDR, target);
	frame(b, FRAME_UNREACH, p, sizeof(p));
}

static void mesh_frames(struct buf *b, uint64_t me, uint64_t seq)
{
	const uint64_t mine[] = { NODE_ID, OTHER_ID };
	const uint64_t other[] = { me };

	links(b, me, seq, mine, 2, 0);
	links(b, OTHER_ID, seq, other, 1, 0);
	routed(b, FRAME_ROUTE, me, PEER_ID, 16, "to the neighbour");
	routed(b, FRAME_ROUTE, me, NODE_ID, 16, "to the node");
	routed(b, FRAME_ROUTE, me, OTHER_ID, 16, "to a stranger");
	routed(b, FRAME_ROUTE, me, 99, 16, "to nobody");
	routed(b, FRAME_FLOOD, me, seq, 16, "to everyone");
	routed(b, FRAME_FLOOD, me, seq, 16, "again: a duplicate");
	unreach(b, PEER_ID, me, OTHER_ID);
	unreach(b, me, NODE_ID, OTHER_ID);
	rack(b, me, NODE_ID, 1);
	rack(b, me, OTHER_ID, 2);
}

/* A fuzz_handshake seed: mode, two cut points, then the bytes. */
static struct buf *hs(struct buf *b, uint8_t mode, uint8_t c1, uint8_t c2)
{
	b->len = 0;
	put8(b, mode);
	put8(b, c1);
	put8(b, c2);
	return b;
}

static void handshake_seeds(void)
{
	static const char *t = "fuzz_handshake";
	const uint64_t one[] = { NODE_ID };
	uint8_t ping[PING_LEN] = { 1, 2, 3, 4, 5, 6, 7, 8 };
	uint8_t p[MESH_HDR + AUTH_LEN + RESUME_LEN] = { 0 };
	struct buf b;

	hello(hs(&b, 0, 0, 0), HIGH_ID, 0);
	save(t, "hello_high", &b);
	hello(hs(&b, 0, 0, 0), LOW_ID, 0);
	save(t, "hello_low", &b);

	hello(hs(&b, 0, 0, 0), LOW_ID, 0);
	frame(&b, FRAME_ACCEPT, NULL, 0);
	data(&b, "hello");
	data(&b, "");
	data(&b, "a second message, a little longer than the first");
	save(t, "hello_low_accept_data", &b);

	hello(hs(&b, 0, 0, 0), HIGH_ID, 0);
	data(&b, "hello");
	data(&b, "world");
	closef(&b, PM_CLOSE_NORMAL);
	save(t, "hello_high_data_close", &b);

	/* The same in three writes cut inside frames, then half-closed. */
	hello(hs(&b, 2 | 4, 20, 60), HIGH_ID, 0);
	data(&b, "hello");
	data(&b, "world");
	save(t, "hello_high_data_split", &b);
	hello(hs(&b, 1 | 8 | 16, 3, 0), LOW_ID, 0);
	frame(&b, FRAME_ACCEPT, NULL, 0);
	data(&b, "reset after this");
	save(t, "hello_low_accept_split_rst", &b);

	hello(hs(&b, 0, 0, 0), HIGH_ID, 0);
	mesh_frames(&b, HIGH_ID, 1000);
	save(t, "hello_high_mesh", &b);
	hello(hs(&b, 0, 0, 0), LOW_ID, 0);
	frame(&b, FRAME_ACCEPT, NULL, 0);
	mesh_frames(&b, LOW_ID, 2000);
	save(t, "hello_low_accept_mesh", &b);

	hello(hs(&b, 0, 0, 0), HIGH_ID, 0);
	links(&b, HIGH_ID, 3000, one, 1, 1);	/* count says 2 */
	save(t, "hello_high_links_bad_count", &b);
	hello(hs(&b, 0, 0, 0), HIGH_ID, 0);
	routed(&b, FRAME_ROUTE, HIGH_ID, PEER_ID, 1, "hop limit");
	routed(&b, FRAME_FLOOD, HIGH_ID, 4000, 0, "ttl zero");
	frame(&b, FRAME_ROUTE, "short", 5);	/* under MESH_HDR */
	save(t, "hello_high_mesh_limits", &b);

	hello(hs(&b, 0, 0, 0), HIGH_ID, 0);
	frame(&b, FRAME_PING, ping, PING_LEN);
	frame(&b, FRAME_PONG, ping, PING_LEN);
	frame(&b, FRAME_PING, ping, 4);
	save(t, "hello_high_ping", &b);

	hello(hs(&b, 0, 0, 0), HIGH_ID, 0);
	frame(&b, FRAME_ACCEPT, NULL, 0);
	frame(&b, FRAME_AUTH, p, AUTH_LEN);
	frame(&b, FRAME_PROOF, p, AUTH_LEN);
	frame(&b, FRAME_ACK, p, ACK_LEN);
	frame(&b, FRAME_RESUME, p, RESUME_LEN);
	save(t, "hello_high_unexpected", &b);

	hello(hs(&b, 0, 0, 0), LOW_ID, 0);
	data(&b, "data instead of the verdict");
	save(t, "hello_low_no_accept", &b);
	hello(hs(&b, 0, 0, 0), LOW_ID, 0);
	closef(&b, PM_CLOSE_DUPLICATE);
	save(t, "hello_low_close_duplicate", &b);
	closef(hs(&b, 0, 0, 0), PM_CLOSE_BUSY);
	save(t, "close_first", &b);
	hello(hs(&b, 0, 0, 0), HIGH_ID, 0);
	hello(&b, HIGH_ID, 0);
	save(t, "hello_twice", &b);

	hello(hs(&b, 0, 0, 0), NODE_ID, 0);	/* same id, other nonce */
	save(t, "hello_same_id", &b);
	hello(hs(&b, 0, 0, 0), PEER_ID, 0);	/* the live neighbour's id */
	data(&b, "impostor");
	save(t, "hello_peer_id", &b);
	hello(hs(&b, 0, 0, 0), HIGH_ID, HELLO_F_AUTH);
	frame(&b, FRAME_AUTH, p, AUTH_LEN);
	save(t, "hello_auth", &b);

	/* Resumption: control frames, and a HELLO resuming B's stream. */
	hello(hs(&b, 1, 40, 0), HIGH_ID, 0);
	put_be64(p, 0x0123456789abcdefULL);	/* epoch */
	put_be64(p + 8, 0);			/* position */
	frame(&b, FRAME_RESUME, p, RESUME_LEN);
	put_be64(p, 0);
	frame(&b, FRAME_ACK, p, ACK_LEN);
	data(&b, "after resume");
	save(t, "hello_high_resume_ack", &b);
	hello(hs(&b, 0, 0, 0), PEER_ID, HELLO_F_RESUME);
	save(t, "hello_peer_id_resume", &b);
	hello(hs(&b, 0, 0, 0), HIGH_ID, HELLO_F_RESUME);
	frame(&b, FRAME_ACK, p, 4);		/* bad length */
	save(t, "hello_high_resume_bad_ack", &b);

	hello(hs(&b, 0, 0, 0), HIGH_ID, 0);
	b.b[3 + FRAME_HDR + 4] = 2;		/* version */
	save(t, "hello_version", &b);
	hello(hs(&b, 0, 0, 0), HIGH_ID, 0);
	b.b[3 + FRAME_HDR] ^= 0xff;		/* magic */
	save(t, "hello_magic", &b);
	hello(hs(&b, 0, 0, 0), 0, 0);		/* id 0 is reserved */
	save(t, "hello_id0", &b);
	hello(hs(&b, 0, 0, 0), HIGH_ID, 0);
	b.len = 3 + 30;
	save(t, "hello_truncated", &b);

	hs(&b, 0, 0, 0);
	frame_put_hdr(p, FRAME_DATA, 0xffffffffu);
	put(&b, p, FRAME_HDR);
	save(t, "oversize_first", &b);
	hs(&b, 0, 0, 0);
	frame_put_hdr(p, FRAME_HELLO, HELLO_LEN + 1);
	put(&b, p, FRAME_HDR);
	save(t, "oversize_hello", &b);
	hello(hs(&b, 0, 0, 0), HIGH_ID, 0);
	frame_put_hdr(p, FRAME_DATA, FH_MAX_MSG + 1);
	put(&b, p, FRAME_HDR);
	put(&b, "xyz", 3);
	save(t, "hello_high_oversize_data", &b);

	hs(&b, 0, 0, 0);
	for (uint32_t i = 0, x = 12345; i < 200; i++) {
		x = x * 1103515245 + 12345;
		put8(&b, (uint8_t)(x >> 16));
	}
	save(t, "garbage", &b);
	b.len = 0;
	save(t, "empty", &b);
}

/* A fuzz_frame seed: the u32 max_payload, then frames. */
static struct buf *fr(struct buf *b, uint32_t max)
{
	uint8_t m[4];

	b->len = 0;
	put_be32(m, max);
	put(b, m, 4);
	return b;
}

static void frame_seeds(void)
{
	static const char *t = "fuzz_frame";
	uint8_t p[FRAME_HDR] = { 0 };
	struct buf b;

	hello(fr(&b, 65536), HIGH_ID, 0);
	closef(&b, PM_CLOSE_DUPLICATE);
	data(&b, "hello");
	frame(&b, FRAME_ACCEPT, NULL, 0);
	save(t, "stream", &b);
	hello(fr(&b, HANDSHAKE_MAX), LOW_ID, HELLO_F_AUTH);
	save(t, "hello_handshake_max", &b);
	closef(fr(&b, 4), PM_CLOSE_AUTH);
	save(t, "close", &b);
	data(fr(&b, 4), "too big for max 4");
	save(t, "too_big", &b);
	hello(fr(&b, 65536), HIGH_ID, 0);
	b.len -= 10;
	save(t, "partial", &b);
	data(fr(&b, 65536), "flags");
	b.b[4 + 5] = 1;
	save(t, "bad_flags", &b);
	data(fr(&b, 65536), "type");
	b.b[4 + 4] = 0x7f;
	save(t, "bad_type", &b);
	fr(&b, 0xffffffffu);
	frame_put_hdr(p, FRAME_DATA, 0xfffffff0u);
	put(&b, p, FRAME_HDR);
	save(t, "huge_len", &b);
	mesh_frames(fr(&b, 65536), HIGH_ID, 7);
	save(t, "mesh", &b);
}

/* A fuzz_session script: opcodes with their argument bytes. */
static struct buf *sc(struct buf *b, const uint8_t *ops, size_t n)
{
	b->len = 0;
	put(b, ops, n);
	return b;
}

#define SCRIPT(name, ...) do {						\
	const uint8_t ops_[] = { __VA_ARGS__ };				\
	save("fuzz_session", name, sc(&b, ops_, sizeof(ops_)));	\
} while (0)

static void session_seeds(void)
{
	struct buf b;

	SCRIPT("connect_send", CONNECT, WAIT, SEND, 1, SEND, 2, SEND, 200,
	       WAIT, SEND_B, 3, WAIT, CLOSE, WAIT);
	SCRIPT("send_before_handshake", CONNECT, SEND, 0, SEND, 9, SEND, 255,
	       RUN, 3, SEND_TO, 4, WAIT, WAIT);
	SCRIPT("simultaneous", CONNECT, CONNECT_B, SEND, 5, SEND_B, 6, RUN, 1,
	       SEND, 7, SEND_B, 8, WAIT, WAIT, BY_ID, BY_ID_B, SEND, 9,
	       SEND_B, 10, WAIT);
	SCRIPT("close_reconnect", CONNECT, WAIT, SEND, 10, CLOSE, CONNECT,
	       SEND, 11, RUN, 2, CLOSE, CONNECT, SEND, 12, WAIT, WAIT,
	       SEND, 13, WAIT);
	SCRIPT("burst_pause", CONNECT, WAIT, PAUSE_B, BURST, 63, RUN, 8,
	       BURST, 63, WAIT, RESUME_B, WAIT, BURST, 20, WAIT);
	SCRIPT("routed_broadcast", CONNECT, WAIT, SEND_TO, 1, BROADCAST, 2,
	       SEND, 3, SEND_TO_B, 4, BROADCAST_B, 5, PAUSE, BROADCAST_B, 6,
	       WAIT, RESUME, WAIT);
	SCRIPT("echo_close_in_cb", CONNECT, WAIT, ECHO_B, SEND, 1, SEND, 2,
	       WAIT, CLOSE_IN_CB_B, SEND, 3, SEND, 4, WAIT, CONNECT, WAIT,
	       SEND, 5, WAIT);
	SCRIPT("reserve", CONNECT, RESERVE, 40, SEND, 1, WAIT, RESERVE_B, 3,
	       BY_ID_B, RESERVE_B, 3, WAIT);
	SCRIPT("closed_both", CONNECT, CONNECT_B, WAIT, CLOSE, CLOSE_B,
	       CONNECT_B, SEND_B, 1, CONNECT, SEND, 2, WAIT, WAIT);
	/* Network faults under traffic: streams resume, nothing is lost. */
	SCRIPT("cut_resume", CONNECT, WAIT, SEND, 1, SEND, 100, RUN, 1,
	       CUT, 0, SEND, 2, SEND_B, 3, WAIT, WAIT, SEND, 4, WAIT);
	SCRIPT("cut_burst", CONNECT, WAIT, BURST, 63, BURST_B, 40, CUT, 1,
	       RUN, 3, CUT, 0, BURST, 30, WAIT, WAIT, WAIT);
	SCRIPT("cut_paused", CONNECT, WAIT, PAUSE_B, SEND, 5, SEND, 6, RUN, 4,
	       CUT, 0, WAIT, RESUME_B, WAIT, WAIT);
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: %s DIR\n", argv[0]);
		return 2;
	}
	root = argv[1];
	if (mkdir(root, 0755) && errno != EEXIST) {
		perror(root);
		return 1;
	}
	frame_seeds();
	handshake_seeds();
	session_seeds();
	return 0;
}
