/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target: the wire decoders over arbitrary bytes.
 *
 * Input: a big-endian u32 max_payload, then a byte stream decoded frame
 * after frame the way the RX path walks its ring (peer_deliver): consume
 * each whole frame, stop at a partial one or at the first error. Every
 * payload found also goes through hello_parse and close_parse, whatever
 * its type, and whatever parses must re-encode to the very same bytes.
 *
 * The mesh frames' fixed layouts (MESH_HDR, UNREACH and LINKS lengths) are
 * checked inside mesh_frame(), which needs a node: fuzz_handshake reaches
 * them; there is no pure function to call here.
 *
 * Inputs handed to a decoder are copied to a heap block of exactly the
 * length given, so ASan catches a read one byte past what it was allowed.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_util.h"
#include "frame.h"

/* An exact-size heap copy of p[0..len): ASan guards its end. */
static uint8_t *ff_dup(const uint8_t *p, size_t len)
{
	uint8_t *d = calloc(1, len ? len : 1);

	FZ_CHECK(d != NULL, "malloc %zu", len);
	if (len)
		memcpy(d, p, len);
	return d;
}

static void ff_hello(const uint8_t *payload, size_t len)
{
	uint8_t out[FRAME_HDR + HELLO_LEN];
	struct hello h;
	uint8_t *p = ff_dup(payload, len);
	int r = hello_parse(p, len, &h);

	FZ_CHECK(r == 0 || r == -EBADMSG || r == -EPROTONOSUPPORT,
		 "hello_parse returned %d", r);
	if (r == 0) {
		/* Everything hello_parse accepts, hello_put writes back. */
		FZ_CHECK(len == HELLO_LEN, "HELLO of %zu bytes accepted", len);
		FZ_CHECK(h.node_id && h.max_message && h.addr_type <= ADDR_TCP6,
			 "accepted HELLO id %llu max %u addr type %u",
			 (unsigned long long)h.node_id, h.max_message,
			 h.addr_type);
		hello_put(out, &h);
		FZ_CHECK(!memcmp(out + FRAME_HDR, p, HELLO_LEN),
			 "HELLO does not re-encode to its bytes");
		FZ_CHECK(get_be32(out) == HELLO_LEN && out[4] == FRAME_HELLO,
			 "hello_put header");
	}
	free(p);
}

static void ff_close(const uint8_t *payload, size_t len)
{
	uint8_t out[FRAME_HDR + CLOSE_LEN];
	uint8_t *p = ff_dup(payload, len);
	int r = close_parse(p, len);

	FZ_CHECK(r == -EBADMSG || (r >= 0 && r <= 0xffff),
		 "close_parse returned %d", r);
	if (r >= 0) {
		FZ_CHECK(len == CLOSE_LEN, "CLOSE of %zu bytes accepted", len);
		close_put(out, (uint16_t)r);
		FZ_CHECK(!memcmp(out + FRAME_HDR, p, CLOSE_LEN),
			 "CLOSE does not re-encode to its bytes");
	}
	free(p);
}

/* Decodes one frame at p (avail bytes) and checks the answer's contract. */
static long ff_decode(const uint8_t *p, size_t avail, uint32_t max,
		      struct frame *f)
{
	uint8_t *d = ff_dup(p, avail);
	long r = frame_decode(d, avail, max, f);

	FZ_CHECK(r >= 0 || r == -EBADMSG || r == -EMSGSIZE || r == -EPROTO,
		 "frame_decode returned %ld", r);
	if (avail < FRAME_HDR)
		FZ_CHECK(r == 0, "%ld from %zu bytes, less than a header", r,
			 avail);
	if (r > 0) {
		uint8_t hdr[FRAME_HDR];

		FZ_CHECK((size_t)r <= avail && r == (long)FRAME_HDR + f->len,
			 "size %ld, len %u, avail %zu", r, f->len, avail);
		FZ_CHECK(f->len <= max, "len %u > max %u", f->len, max);
		FZ_CHECK(f->payload == d + FRAME_HDR, "payload not in place");
		/* A decoded header is exactly what frame_put_hdr writes. */
		frame_put_hdr(hdr, f->type, f->len);
		FZ_CHECK(!memcmp(hdr, d, FRAME_HDR), "header re-encodes else");
		f->payload = p + FRAME_HDR;
	} else if (r == 0 && avail >= FRAME_HDR) {
		FZ_CHECK(get_be32(p) > avail - FRAME_HDR && get_be32(p) <= max,
			 "partial with len %u, avail %zu, max %u",
			 get_be32(p), avail, max);
	}
	free(d);
	return r;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *p = data + 4;
	size_t left = size - 4;
	uint32_t max;

	if (size < 4)
		return 0;
	max = get_be32(data);
	for (;;) {
		struct frame f;
		long r = ff_decode(p, left, max, &f);

		if (r < 0 && left >= FRAME_HDR) {
			/* Errors come from the header alone: the same with
			 * no payload byte here yet. */
			struct frame g;

			FZ_CHECK(ff_decode(p, FRAME_HDR, max, &g) == r,
				 "error %ld depends on the payload", r);
		}
		if (r <= 0)
			break;
		if (f.len) {
			struct frame g;

			/* One byte short of a whole frame: wait for it. */
			FZ_CHECK(ff_decode(p, (size_t)r - 1, max, &g) == 0,
				 "frame of %ld decoded from %ld bytes", r,
				 r - 1);
		}
		ff_hello(f.payload, f.len);
		ff_close(f.payload, f.len);
		p += r;
		left -= (size_t)r;
	}
	return 0;
}
