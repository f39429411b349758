/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdbool.h>
#include <string.h>

#include "pairmesh.h"
#include "frame.h"

static bool type_known(uint8_t type)
{
	switch (type) {
	case FRAME_HELLO:
	case FRAME_ACCEPT:
	case FRAME_CLOSE:
	case FRAME_PING:
	case FRAME_PONG:
	case FRAME_AUTH:
	case FRAME_PROOF:
	case FRAME_ACK:
	case FRAME_RESUME:
	case FRAME_DATA:
	case FRAME_ROUTE:
	case FRAME_FLOOD:
	case FRAME_LINKS:
	case FRAME_UNREACH:
	case FRAME_RACK:
		return true;
	default:
		return false;
	}
}

long frame_decode(const uint8_t *buf, size_t avail, uint32_t max_payload,
		  struct frame *f)
{
	uint32_t len;
	uint8_t type;

	/* Only the 8 header bytes are read until the whole frame is here. */
	if (avail < FRAME_HDR)
		return 0;
	len = get_be32(buf);
	type = buf[4];
	/* Bad bits, then type, then size: the most specific error wins. */
	if (buf[5] || buf[6] || buf[7])
		return -EBADMSG;
	if (!type_known(type))
		return -EPROTO;
	if (len > max_payload)
		return -EMSGSIZE;
	/* Compare without adding: avail >= 8 here, so nothing can wrap. */
	if (avail - FRAME_HDR < len)
		return 0;
	f->len = len;
	f->type = type;
	f->payload = buf + FRAME_HDR;
	return (long)FRAME_HDR + (long)len;
}

void frame_put_hdr(uint8_t *dst, uint8_t type, uint32_t len)
{
	put_be32(dst, len);
	dst[4] = type;
	dst[5] = 0;
	dst[6] = 0;
	dst[7] = 0;
}

void hello_put(uint8_t *dst, const struct hello *h)
{
	uint8_t *p = dst + FRAME_HDR;

	frame_put_hdr(dst, FRAME_HELLO, HELLO_LEN);
	put_be32(p, HELLO_MAGIC);
	p[4] = h->version;
	p[5] = h->flags;
	p[6] = 0;
	p[7] = 0;
	put_be64(p + 8, h->node_id);
	put_be64(p + 16, h->nonce);
	put_be32(p + 24, h->max_message);
	p[28] = h->addr_type;
	p[29] = 0;
	put_be16(p + 30, h->port);
	memcpy(p + 32, h->addr, sizeof(h->addr));
}

int hello_parse(const uint8_t *p, size_t len, struct hello *h)
{
	uint64_t node_id;
	uint32_t max_message;

	if (len != HELLO_LEN)
		return -EBADMSG;
	if (get_be32(p) != HELLO_MAGIC)
		return -EBADMSG;
	/* Version before the rest: a v2 peer may lay out the rest otherwise. */
	if (p[4] != PM_PROTOCOL_VERSION)
		return -EPROTONOSUPPORT;
	if (p[6] || p[7] || p[29])
		return -EBADMSG;
	if (p[28] > ADDR_TCP6)
		return -EBADMSG;
	node_id = get_be64(p + 8);
	max_message = get_be32(p + 24);
	/* Node id 0 is reserved, and a peer taking no messages is useless. */
	if (node_id == 0 || max_message == 0)
		return -EBADMSG;

	h->version = p[4];
	h->flags = p[5];
	h->node_id = node_id;
	h->nonce = get_be64(p + 16);
	h->max_message = max_message;
	h->addr_type = p[28];
	h->port = get_be16(p + 30);
	memcpy(h->addr, p + 32, sizeof(h->addr));
	return 0;
}

void close_put(uint8_t *dst, uint16_t reason)
{
	uint8_t *p = dst + FRAME_HDR;

	frame_put_hdr(dst, FRAME_CLOSE, CLOSE_LEN);
	put_be16(p, reason);
	put_be16(p + 2, 0);
}

int close_parse(const uint8_t *p, size_t len)
{
	if (len != CLOSE_LEN || get_be16(p + 2) != 0)
		return -EBADMSG;
	return get_be16(p);
}
