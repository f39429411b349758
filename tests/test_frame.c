/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <cmocka.h>

#include "pairmesh.h"
#include "frame.h"

#define MAX_PAYLOAD	4096u
#define GUARD_PAGES	4	/* room before the guard, in pages */

/*
 * Every decoder input is copied so that it ends right where a PROT_NONE
 * page begins: reading one byte past the input faults, even without ASan.
 */
static uint8_t *guard_map;
static size_t guard_page;
static size_t guard_room;

static int guard_setup(void **state)
{
	void *m;

	guard_page = (size_t)sysconf(_SC_PAGESIZE);
	guard_room = GUARD_PAGES * guard_page;
	m = mmap(NULL, guard_room + guard_page, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (m == MAP_FAILED)
		return -1;
	if (mprotect((uint8_t *)m + guard_room, guard_page, PROT_NONE)) {
		munmap(m, guard_room + guard_page);
		return -1;
	}
	guard_map = m;
	return 0;
}

static int guard_teardown(void **state)
{
	munmap(guard_map, guard_room + guard_page);
	guard_map = NULL;
	return 0;
}

/*
 * Copies n bytes so the last one sits right before the guard page. memmove:
 * src may be a payload pointer that already lives in the guarded area.
 */
static const uint8_t *at_end(const void *src, size_t n)
{
	uint8_t *dst;

	assert_true(n <= guard_room);
	dst = guard_map + guard_room - n;
	if (n)
		memmove(dst, src, n);
	return dst;
}

static long decode(const void *src, size_t n, uint32_t max_payload,
		   struct frame *f)
{
	return frame_decode(at_end(src, n), n, max_payload, f);
}

static int parse_hello(const void *src, size_t n, struct hello *h)
{
	return hello_parse(at_end(src, n), n, h);
}

static int parse_close(const void *src, size_t n)
{
	return close_parse(at_end(src, n), n);
}

static bool type_known(unsigned int t)
{
	return t == FRAME_HELLO || t == FRAME_ACCEPT || t == FRAME_CLOSE ||
	       t == FRAME_PING || t == FRAME_PONG || t == FRAME_AUTH ||
	       t == FRAME_PROOF || t == FRAME_ACK || t == FRAME_RESUME ||
	       t == FRAME_DATA || t == FRAME_ROUTE || t == FRAME_FLOOD ||
	       t == FRAME_LINKS || t == FRAME_UNREACH || t == FRAME_RACK;
}

static void sample_hello(struct hello *h)
{
	memset(h, 0, sizeof(*h));
	h->version = PM_PROTOCOL_VERSION;
	h->flags = 0xa5;
	h->node_id = 0x0102030405060708ull;
	h->nonce = 0x1112131415161718ull;
	h->max_message = 0x21222324;
	h->addr_type = ADDR_TCP6;
	h->port = 0x3132;
	for (int i = 0; i < 16; i++)
		h->addr[i] = (uint8_t)(0x40 + i);
}

/* A well-formed HELLO payload (no frame header). */
static void sample_payload(uint8_t p[HELLO_LEN])
{
	uint8_t buf[FRAME_HDR + HELLO_LEN];
	struct hello h;

	sample_hello(&h);
	hello_put(buf, &h);
	memcpy(p, buf + FRAME_HDR, HELLO_LEN);
}

static void test_frame_close_bad(void **state)
{
	uint8_t buf[FRAME_HDR + CLOSE_LEN + 1] = { 0 };
	uint8_t *p = buf + FRAME_HDR;
	size_t n;

	close_put(buf, 7);
	for (n = 0; n < CLOSE_LEN; n++)
		assert_int_equal(parse_close(p, n), -EBADMSG);
	assert_int_equal(parse_close(p, CLOSE_LEN + 1), -EBADMSG);
	assert_int_equal(parse_close(p, CLOSE_LEN), 7);
	for (n = 2; n < CLOSE_LEN; n++) {
		for (int bit = 0; bit < 8; bit++) {
			p[n] ^= (uint8_t)(1u << bit);
			assert_int_equal(parse_close(p, CLOSE_LEN), -EBADMSG);
			p[n] ^= (uint8_t)(1u << bit);
		}
	}
}

static void test_frame_close_round_trip(void **state)
{
	const uint16_t reasons[] = { 0, 1, PM_CLOSE_VERSION, 0x1234, 0x8000,
				     UINT16_MAX };
	const uint8_t want[] = { 0, 0, 0, 4, FRAME_CLOSE, 0, 0, 0,
				 0x12, 0x34, 0, 0 };
	uint8_t buf[FRAME_HDR + CLOSE_LEN];
	struct frame f;

	close_put(buf, 0x1234);
	assert_memory_equal(buf, want, sizeof(want));
	for (size_t i = 0; i < sizeof(reasons) / sizeof(reasons[0]); i++) {
		memset(buf, 0xee, sizeof(buf));
		close_put(buf, reasons[i]);
		assert_int_equal(decode(buf, sizeof(buf), MAX_PAYLOAD, &f),
				 sizeof(buf));
		assert_int_equal(f.type, FRAME_CLOSE);
		assert_int_equal(f.len, CLOSE_LEN);
		assert_int_equal(parse_close(f.payload, f.len), reasons[i]);
	}
}

/* Every value of the type and flags bytes, on a header with len 0. */
static void test_frame_decode_brute_type_flags(void **state)
{
	unsigned int ok = 0, proto = 0, badmsg = 0;
	uint8_t hdr[FRAME_HDR] = { 0 };
	struct frame f;

	for (unsigned int v = 0; v <= 0xffff; v++) {
		long n;

		hdr[4] = (uint8_t)(v >> 8);
		hdr[5] = (uint8_t)v;
		n = decode(hdr, sizeof(hdr), MAX_PAYLOAD, &f);
		if (hdr[5] != 0) {
			assert_int_equal(n, -EBADMSG);
			badmsg++;
		} else if (type_known(hdr[4])) {
			assert_int_equal(n, FRAME_HDR);
			assert_int_equal(f.type, hdr[4]);
			assert_int_equal(f.len, 0);
			ok++;
		} else {
			assert_int_equal(n, -EPROTO);
			proto++;
		}
	}
	assert_int_equal(ok, 15);
	assert_int_equal(proto, 256 - 15);
	assert_int_equal(badmsg, 0xff00);
}

static void test_frame_decode_nonzero_bits(void **state)
{
	uint8_t hdr[FRAME_HDR];
	struct frame f;

	for (int byte = 5; byte < 8; byte++) {
		for (int bit = 0; bit < 8; bit++) {
			frame_put_hdr(hdr, FRAME_DATA, 0);
			hdr[byte] = (uint8_t)(1u << bit);
			assert_int_equal(decode(hdr, sizeof(hdr), MAX_PAYLOAD,
						&f), -EBADMSG);
			/* Bad bits win over a bad type and a bad size. */
			hdr[4] = 0x7f;
			put_be32(hdr, MAX_PAYLOAD + 1);
			assert_int_equal(decode(hdr, sizeof(hdr), MAX_PAYLOAD,
						&f), -EBADMSG);
		}
	}
}

static void test_frame_decode_oversize(void **state)
{
	uint8_t hdr[FRAME_HDR];
	struct frame f;

	frame_put_hdr(hdr, FRAME_DATA, MAX_PAYLOAD + 1);
	assert_int_equal(decode(hdr, sizeof(hdr), MAX_PAYLOAD, &f), -EMSGSIZE);
	frame_put_hdr(hdr, FRAME_HELLO, UINT32_MAX);
	assert_int_equal(decode(hdr, sizeof(hdr), MAX_PAYLOAD, &f), -EMSGSIZE);
	frame_put_hdr(hdr, FRAME_DATA, 1);
	assert_int_equal(decode(hdr, sizeof(hdr), 0, &f), -EMSGSIZE);
	/* Exactly max is fine; the header alone is a partial frame. */
	frame_put_hdr(hdr, FRAME_DATA, MAX_PAYLOAD);
	assert_int_equal(decode(hdr, sizeof(hdr), MAX_PAYLOAD, &f), 0);
	frame_put_hdr(hdr, FRAME_DATA, UINT32_MAX);
	assert_int_equal(decode(hdr, sizeof(hdr), UINT32_MAX, &f), 0);
	/* Type is checked before size. */
	frame_put_hdr(hdr, 0x7f, MAX_PAYLOAD + 1);
	assert_int_equal(decode(hdr, sizeof(hdr), MAX_PAYLOAD, &f), -EPROTO);
}

static void test_frame_decode_truncated(void **state)
{
	uint8_t buf[FRAME_HDR + MAX_PAYLOAD + 16];
	const uint32_t lens[] = { 0, 1, 7, 8, 100, MAX_PAYLOAD };
	struct frame f;

	for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
		uint32_t len = lens[i];
		size_t whole = FRAME_HDR + len;

		frame_put_hdr(buf, FRAME_DATA, len);
		for (size_t j = 0; j < len + 16; j++)
			buf[FRAME_HDR + j] = (uint8_t)(j * 3 + 1);
		for (size_t n = 0; n < whole; n++)
			assert_int_equal(decode(buf, n, MAX_PAYLOAD, &f), 0);
		/* Whole, and whole followed by the start of the next. */
		for (size_t n = whole; n <= whole + 16; n++) {
			const uint8_t *in = at_end(buf, n);

			assert_int_equal(frame_decode(in, n, MAX_PAYLOAD, &f),
					 whole);
			assert_int_equal(f.type, FRAME_DATA);
			assert_int_equal(f.len, len);
			assert_ptr_equal(f.payload, in + FRAME_HDR);
			assert_memory_equal(f.payload, buf + FRAME_HDR, len);
		}
	}
}

static void test_frame_decode_unknown_types(void **state)
{
	uint8_t hdr[FRAME_HDR];
	struct frame f;

	for (unsigned int t = 0; t < 256; t++) {
		frame_put_hdr(hdr, (uint8_t)t, 0);
		if (type_known(t))
			assert_int_equal(decode(hdr, sizeof(hdr), MAX_PAYLOAD,
						&f), FRAME_HDR);
		else
			assert_int_equal(decode(hdr, sizeof(hdr), MAX_PAYLOAD,
						&f), -EPROTO);
		/* Type before size, even with no payload present. */
		frame_put_hdr(hdr, (uint8_t)t, MAX_PAYLOAD + 1);
		assert_int_equal(decode(hdr, sizeof(hdr), MAX_PAYLOAD, &f),
				 type_known(t) ? -EMSGSIZE : -EPROTO);
	}
}

static void test_frame_hdr_round_trip(void **state)
{
	const uint8_t types[] = { FRAME_HELLO, FRAME_ACCEPT, FRAME_CLOSE,
				  FRAME_DATA };
	const uint32_t lens[] = { 0, 1, 255, 256, 0x010203, UINT32_MAX };
	const uint8_t want[] = { 0x01, 0x02, 0x03, 0x04, FRAME_DATA, 0, 0, 0 };
	uint8_t hdr[FRAME_HDR];
	struct frame f;

	memset(hdr, 0xee, sizeof(hdr));
	frame_put_hdr(hdr, FRAME_DATA, 0x01020304);
	assert_memory_equal(hdr, want, sizeof(want));

	for (size_t i = 0; i < sizeof(types); i++) {
		for (size_t j = 0; j < sizeof(lens) / sizeof(lens[0]); j++) {
			memset(hdr, 0xee, sizeof(hdr));
			frame_put_hdr(hdr, types[i], lens[j]);
			assert_int_equal(get_be32(hdr), lens[j]);
			/* Only the header is there: partial unless len 0. */
			assert_int_equal(decode(hdr, sizeof(hdr), UINT32_MAX,
						&f),
					 lens[j] ? 0 : (long)FRAME_HDR);
			if (lens[j] == 0) {
				assert_int_equal(f.type, types[i]);
				assert_int_equal(f.len, 0);
			}
		}
	}
}

static void test_frame_hello_bad_addr_type(void **state)
{
	uint8_t p[HELLO_LEN];
	struct hello h;

	sample_payload(p);
	for (unsigned int t = 0; t < 256; t++) {
		p[28] = (uint8_t)t;
		assert_int_equal(parse_hello(p, sizeof(p), &h),
				 t <= ADDR_TCP6 ? 0 : -EBADMSG);
		if (t <= ADDR_TCP6)
			assert_int_equal(h.addr_type, t);
	}
}

static void test_frame_hello_bad_magic(void **state)
{
	uint8_t p[HELLO_LEN];
	struct hello h;

	sample_payload(p);
	for (int byte = 0; byte < 4; byte++) {
		for (int bit = 0; bit < 8; bit++) {
			p[byte] ^= (uint8_t)(1u << bit);
			assert_int_equal(parse_hello(p, sizeof(p), &h),
					 -EBADMSG);
			/* Magic is checked before version. */
			p[4] = 2;
			assert_int_equal(parse_hello(p, sizeof(p), &h),
					 -EBADMSG);
			p[4] = PM_PROTOCOL_VERSION;
			p[byte] ^= (uint8_t)(1u << bit);
		}
	}
	assert_int_equal(parse_hello(p, sizeof(p), &h), 0);
}

static void test_frame_hello_bad_reserved(void **state)
{
	const int reserved[] = { 6, 7, 29 };
	uint8_t p[HELLO_LEN];
	struct hello h;

	sample_payload(p);
	for (size_t i = 0; i < sizeof(reserved) / sizeof(reserved[0]); i++) {
		for (int bit = 0; bit < 8; bit++) {
			p[reserved[i]] = (uint8_t)(1u << bit);
			assert_int_equal(parse_hello(p, sizeof(p), &h),
					 -EBADMSG);
			p[reserved[i]] = 0;
		}
	}
	/* flags (byte 5) is not reserved: any value parses. */
	for (unsigned int v = 0; v < 256; v++) {
		p[5] = (uint8_t)v;
		assert_int_equal(parse_hello(p, sizeof(p), &h), 0);
		assert_int_equal(h.flags, v);
	}
}

static void test_frame_hello_bad_version(void **state)
{
	uint8_t p[HELLO_LEN];
	struct hello h;

	sample_payload(p);
	for (unsigned int v = 0; v < 256; v++) {
		p[4] = (uint8_t)v;
		if (v == PM_PROTOCOL_VERSION) {
			assert_int_equal(parse_hello(p, sizeof(p), &h), 0);
			continue;
		}
		assert_int_equal(parse_hello(p, sizeof(p), &h),
				 -EPROTONOSUPPORT);
		/* A v2 layout may differ: version wins over other checks. */
		p[6] = 1;
		p[24] = p[25] = p[26] = p[27] = 0;
		assert_int_equal(parse_hello(p, sizeof(p), &h),
				 -EPROTONOSUPPORT);
		sample_payload(p);
	}
}

static void test_frame_hello_max_message_zero(void **state)
{
	uint8_t p[HELLO_LEN];
	struct hello h;

	sample_payload(p);
	put_be32(p + 24, 0);
	assert_int_equal(parse_hello(p, sizeof(p), &h), -EBADMSG);
	put_be32(p + 24, 1);
	assert_int_equal(parse_hello(p, sizeof(p), &h), 0);
	assert_int_equal(h.max_message, 1);
	put_be32(p + 24, UINT32_MAX);
	assert_int_equal(parse_hello(p, sizeof(p), &h), 0);
	assert_int_equal(h.max_message, UINT32_MAX);
}

static void test_frame_hello_node_id_zero(void **state)
{
	uint8_t p[HELLO_LEN];
	struct hello h;

	sample_payload(p);
	put_be64(p + 8, 0);
	assert_int_equal(parse_hello(p, sizeof(p), &h), -EBADMSG);
	put_be64(p + 8, 1);
	assert_int_equal(parse_hello(p, sizeof(p), &h), 0);
	assert_true(h.node_id == 1);
	put_be64(p + 8, UINT64_MAX);
	assert_int_equal(parse_hello(p, sizeof(p), &h), 0);
	assert_true(h.node_id == UINT64_MAX);
}

static void test_frame_hello_round_trip(void **state)
{
	const uint8_t want[FRAME_HDR + HELLO_LEN] = {
		0, 0, 0, 48, FRAME_HELLO, 0, 0, 0,
		'P', 'M', 'S', 'H', PM_PROTOCOL_VERSION, 0xa5, 0, 0,
		1, 2, 3, 4, 5, 6, 7, 8,
		0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18,
		0x21, 0x22, 0x23, 0x24, ADDR_TCP6, 0, 0x31, 0x32,
		0x40, 0x41, 0x42, 0x43, 0x44, 0x45, 0x46, 0x47,
		0x48, 0x49, 0x4a, 0x4b, 0x4c, 0x4d, 0x4e, 0x4f,
	};
	uint8_t buf[FRAME_HDR + HELLO_LEN];
	struct hello in, out;
	struct frame f;

	sample_hello(&in);
	memset(buf, 0xee, sizeof(buf));
	hello_put(buf, &in);
	assert_memory_equal(buf, want, sizeof(want));

	for (unsigned int t = ADDR_NONE; t <= ADDR_TCP6; t++) {
		in.addr_type = (uint8_t)t;
		in.flags = (uint8_t)(t * 3);
		in.port = (uint16_t)(0xfff0 + t);
		hello_put(buf, &in);
		assert_int_equal(decode(buf, sizeof(buf), MAX_PAYLOAD, &f),
				 sizeof(buf));
		assert_int_equal(f.type, FRAME_HELLO);
		assert_int_equal(f.len, HELLO_LEN);
		memset(&out, 0xee, sizeof(out));
		assert_int_equal(parse_hello(f.payload, f.len, &out), 0);
		assert_int_equal(out.version, in.version);
		assert_int_equal(out.flags, in.flags);
		assert_true(out.node_id == in.node_id);
		assert_true(out.nonce == in.nonce);
		assert_int_equal(out.max_message, in.max_message);
		assert_int_equal(out.addr_type, in.addr_type);
		assert_int_equal(out.port, in.port);
		assert_memory_equal(out.addr, in.addr, sizeof(in.addr));
	}
}

static void test_frame_hello_truncated(void **state)
{
	uint8_t buf[FRAME_HDR + HELLO_LEN + 1];
	struct hello h;
	struct frame f;
	size_t n;

	memset(buf, 0, sizeof(buf));
	sample_hello(&h);
	hello_put(buf, &h);
	/* As a frame: partial at every length short of the whole. */
	for (n = 0; n < FRAME_HDR + HELLO_LEN; n++)
		assert_int_equal(decode(buf, n, MAX_PAYLOAD, &f), 0);
	/* As a payload: any length but HELLO_LEN is malformed. */
	for (n = 0; n < HELLO_LEN; n++)
		assert_int_equal(parse_hello(buf + FRAME_HDR, n, &h),
				 -EBADMSG);
	assert_int_equal(parse_hello(buf + FRAME_HDR, HELLO_LEN + 1, &h),
			 -EBADMSG);
	assert_int_equal(parse_hello(buf + FRAME_HDR, HELLO_LEN, &h), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_frame_close_bad),
		cmocka_unit_test(test_frame_close_round_trip),
		cmocka_unit_test(test_frame_decode_brute_type_flags),
		cmocka_unit_test(test_frame_decode_nonzero_bits),
		cmocka_unit_test(test_frame_decode_oversize),
		cmocka_unit_test(test_frame_decode_truncated),
		cmocka_unit_test(test_frame_decode_unknown_types),
		cmocka_unit_test(test_frame_hdr_round_trip),
		cmocka_unit_test(test_frame_hello_bad_addr_type),
		cmocka_unit_test(test_frame_hello_bad_magic),
		cmocka_unit_test(test_frame_hello_bad_reserved),
		cmocka_unit_test(test_frame_hello_bad_version),
		cmocka_unit_test(test_frame_hello_max_message_zero),
		cmocka_unit_test(test_frame_hello_node_id_zero),
		cmocka_unit_test(test_frame_hello_round_trip),
		cmocka_unit_test(test_frame_hello_truncated),
	};

	return cmocka_run_group_tests(tests, guard_setup, guard_teardown);
}
