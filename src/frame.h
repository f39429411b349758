/* SPDX-License-Identifier: MIT */
/*
 * Wire format v1 (docs/PROTOCOL.md is the contract; this file follows it).
 * Every integer is big-endian. A frame is an 8-byte header and a payload:
 *
 *   0       4      5       6        8
 *   +-------+------+-------+--------+----------------+
 *   | len   | type | flags | rsvd   | payload (len)  |
 *   +-------+------+-------+--------+----------------+
 *
 * flags and rsvd must be zero in v1.
 */
#ifndef PM_FRAME_H
#define PM_FRAME_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define FRAME_HDR		8u
#define FRAME_HELLO		0x01	/* handshake, both sides, first frame */
#define FRAME_ACCEPT		0x02	/* arbiter keeps this connection */
#define FRAME_CLOSE		0x03	/* reason, then the sender closes */
#define FRAME_PING		0x04	/* keepalive: answer with PONG */
#define FRAME_PONG		0x05	/* the PING's 8 bytes, echoed */
#define PING_LEN		8u
#define FRAME_AUTH		0x06	/* mesh key: a fresh 32-byte challenge */
#define FRAME_PROOF		0x07	/* mesh key: MAC over both challenges */
#define AUTH_LEN		32u
#define HELLO_F_AUTH		0x01	/* HELLO flag: this node needs the key */
#define HELLO_F_RESUME		0x02	/* HELLO flag: dialled to resume a stream
					 * whose connection the sender lost */
#define FRAME_ACK		0x08	/* stream position consumed (u64) */
#define FRAME_RESUME		0x09	/* epoch (u64), replay position (u64) */
#define ACK_LEN			8u
#define RESUME_LEN		16u
#define FRAME_DATA		0x10	/* one user message */
#define FRAME_ROUTE		0x11	/* a message relayed toward one node */
#define FRAME_FLOOD		0x12	/* a broadcast message, flooded */
#define FRAME_LINKS		0x13	/* a node's neighbours, flooded */
#define FRAME_UNREACH		0x14	/* a relay could not route a message */
#define FRAME_RACK		0x15	/* routed messages delivered, end to end */

/*
 * Mesh frames start with one 20-byte header (docs/PROTOCOL.md, "Mesh"):
 *   0 a (u64)   ROUTE/UNREACH: origin     FLOOD/LINKS: origin
 *   8 b (u64)   ROUTE/UNREACH: destination FLOOD/LINKS: sequence
 *  16 hops (u8) relays crossed so far
 *  17 ttl (u8)  hops left; a relay drops a frame that arrives with ttl <= 1
 *  18 x (u16)  LINKS: entry count; else 0
 */
#define MESH_HDR		20u
/* ROUTE and RACK carry the routed session after the mesh header: the
 * origin's epoch (u64) and a sequence (u64); ROUTE's message follows. */
#define ROUTE_HDR		(MESH_HDR + 16u)
#define RACK_LEN		ROUTE_HDR
#define MESH_ADDR		20u	/* type u8, 0, port u16, addr[16] */
#define LINK_ENTRY		28u	/* id u64 + MESH_ADDR */

#define HELLO_LEN		48u	/* HELLO payload, fixed */
#define CLOSE_LEN		4u	/* CLOSE payload, fixed */
#define HANDSHAKE_MAX		HELLO_LEN /* largest handshake payload */
#define HELLO_MAGIC		0x504d5348u /* "PMSH" */

/* Advertised address types in HELLO (transport bindings). */
#define ADDR_NONE		0
#define ADDR_TCP4		1
#define ADDR_TCP6		2

struct frame {
	uint32_t len;		/* payload length */
	uint8_t type;
	const uint8_t *payload;	/* points into the caller's buffer */
};

struct hello {
	uint8_t version;
	uint8_t flags;
	uint64_t node_id;
	uint64_t nonce;		/* random per process: tells self-dials apart */
	uint32_t max_message;
	uint8_t addr_type;
	uint16_t port;
	uint8_t addr[16];	/* IPv4 in the first 4 bytes */
};

/*
 * Decodes one frame header at buf. Returns the whole frame's size (header +
 * payload) when it is all in buf, 0 when more bytes are needed, -EBADMSG for
 * non-zero flags or reserved bits, -EMSGSIZE when len > max_payload, -EPROTO
 * for an unknown type. f->payload points into buf.
 */
long frame_decode(const uint8_t *buf, size_t avail, uint32_t max_payload,
		  struct frame *f);

/* Writes a whole HELLO frame (header + HELLO_LEN) at dst. */
void hello_put(uint8_t *dst, const struct hello *h);

/*
 * Parses a HELLO payload of len bytes. Returns 0, -EBADMSG for a bad length,
 * magic or reserved bits, -EPROTONOSUPPORT for another version.
 */
int hello_parse(const uint8_t *p, size_t len, struct hello *h);

/* Writes a whole CLOSE frame (header + CLOSE_LEN) at dst. */
void close_put(uint8_t *dst, uint16_t reason);

/* Parses a CLOSE payload. Returns the reason or -EBADMSG. */
int close_parse(const uint8_t *p, size_t len);

static inline void put_be16(uint8_t *p, uint16_t v)
{
	p[0] = v >> 8;
	p[1] = v;
}

static inline void put_be32(uint8_t *p, uint32_t v)
{
	p[0] = v >> 24;
	p[1] = v >> 16;
	p[2] = v >> 8;
	p[3] = v;
}

static inline void put_be64(uint8_t *p, uint64_t v)
{
	put_be32(p, v >> 32);
	put_be32(p + 4, (uint32_t)v);
}

static inline uint16_t get_be16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

static inline uint32_t get_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	       (uint32_t)p[2] << 8 | p[3];
}

static inline uint64_t get_be64(const uint8_t *p)
{
	return (uint64_t)get_be32(p) << 32 | get_be32(p + 4);
}

/*
 * The receive hot path: the length of the whole frame at buf when it is a
 * complete, well-formed DATA frame (what frame_decode() would accept), else
 * 0, and the caller decodes it the general way. Fills f like frame_decode().
 */
static inline uint32_t frame_peek_data(const uint8_t *buf, uint32_t avail,
				       uint32_t max_payload, struct frame *f)
{
	static const uint8_t data_tag[4] = { FRAME_DATA, 0, 0, 0 };
	uint32_t len;

	if (avail < FRAME_HDR || memcmp(buf + 4, data_tag, 4) != 0)
		return 0;
	len = get_be32(buf);
	if (len > max_payload || avail - FRAME_HDR < len)
		return 0;
	f->len = len;
	f->type = FRAME_DATA;
	f->payload = buf + FRAME_HDR;
	return FRAME_HDR + len;
}

/* Writes an 8-byte frame header at dst. Inline: it is on every send's
 * path (a call was 2 % of a 64-byte sender's instructions). */
static inline void frame_put_hdr(uint8_t *dst, uint8_t type, uint32_t len)
{
	put_be32(dst, len);
	dst[4] = type;
	dst[5] = 0;
	dst[6] = 0;
	dst[7] = 0;
}

/* Writes the 20-byte mesh header (layout above) at p. */
static inline void mesh_put_hdr(uint8_t *p, uint64_t a, uint64_t b,
				uint8_t hops, uint8_t ttl, uint16_t x)
{
	put_be64(p, a);
	put_be64(p + 8, b);
	p[16] = hops;
	p[17] = ttl;
	put_be16(p + 18, x);
}

#endif
