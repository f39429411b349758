/* SPDX-License-Identifier: MIT */
#include <dirent.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>
#include <cmocka.h>

#include "frame.h"
#include "ring.h"

#define MANY_RINGS	2000

static uint32_t page_size(void)
{
	return (uint32_t)sysconf(_SC_PAGESIZE);
}

static int count_fds(void)
{
	struct dirent *de;
	DIR *d;
	int n = 0;

	d = opendir("/proc/self/fd");
	assert_non_null(d);
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] != '.')
			n++;
	}
	closedir(d);
	/* The directory's own fd was counted while it was open. */
	return n - 1;
}

static void assert_ring_zeroed(const struct ring *r)
{
	assert_null(r->base);
	assert_int_equal(r->size, 0);
	assert_int_equal(r->mask, 0);
	assert_int_equal(r->head, 0);
	assert_int_equal(r->tail, 0);
}

static void test_ring_bad_sizes(void **state)
{
	const uint32_t page = page_size();
	const uint32_t bad[] = {
		0, 1, 3000, page / 2, page - 1, page + 1, 3 * page,
		5 * page, (1u << 30) + page, 1u << 31, UINT32_MAX,
	};
	struct ring r;
	size_t i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_false(ring_size_ok(bad[i]));
		memset(&r, 0xa5, sizeof(r));
		assert_int_equal(ring_map(&r, bad[i]), -EINVAL);
		assert_ring_zeroed(&r);
	}
}

static void test_ring_full(void **state)
{
	const uint32_t page = page_size();
	const uint32_t starts[] = { 0, 17, UINT32_MAX - 5, UINT32_MAX };
	struct ring r;
	size_t i;

	assert_int_equal(ring_map(&r, 2 * page), 0);
	for (i = 0; i < sizeof(starts) / sizeof(starts[0]); i++) {
		r.head = starts[i];
		r.tail = starts[i];
		assert_int_equal(ring_used(&r), 0);
		assert_int_equal(ring_free(&r), r.size);

		memset(ring_tail_ptr(&r), 0x5a, ring_free(&r));
		ring_produce(&r, r.size);
		assert_int_equal(ring_used(&r), r.size);
		assert_int_equal(ring_free(&r), 0);
		/* Full and empty are the same byte; the counters differ. */
		assert_ptr_equal(ring_head_ptr(&r), ring_tail_ptr(&r));

		ring_consume(&r, 1);
		assert_int_equal(ring_used(&r), r.size - 1);
		assert_int_equal(ring_free(&r), 1);
		ring_consume(&r, r.size - 1);
		assert_int_equal(ring_used(&r), 0);
	}
	ring_reset(&r);
	assert_int_equal(r.head, 0);
	assert_int_equal(r.tail, 0);
	ring_unmap(&r);
}

static void test_ring_map_fails_without_fds(void **state)
{
	struct rlimit old, none;
	struct ring r;
	int before, ret;

	assert_int_equal(getrlimit(RLIMIT_NOFILE, &old), 0);
	before = count_fds();
	none = old;
	none.rlim_cur = 0;
	/* With no fd to spare memfd_create fails: the error path runs. */
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &none), 0);
	memset(&r, 0xa5, sizeof(r));
	ret = ring_map(&r, page_size());
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &old), 0);

	assert_int_equal(ret, -EMFILE);
	assert_ring_zeroed(&r);
	assert_int_equal(count_fds(), before);
	/* Mapping still works once fds are back. */
	assert_int_equal(ring_map(&r, page_size()), 0);
	ring_unmap(&r);
}

static void test_ring_map_many_no_fd_leak(void **state)
{
	struct ring *rings;
	int before, i;

	rings = calloc(MANY_RINGS, sizeof(*rings));
	assert_non_null(rings);
	before = count_fds();
	for (i = 0; i < MANY_RINGS; i++) {
		assert_int_equal(ring_map(&rings[i], page_size()), 0);
		/* Each ring must be its own memory, not a shared view. */
		rings[i].base[0] = (uint8_t)i;
		rings[i].base[1] = (uint8_t)(i >> 8);
	}
	assert_int_equal(count_fds(), before);
	for (i = 0; i < MANY_RINGS; i++) {
		assert_int_equal(rings[i].base[0], (uint8_t)i);
		assert_int_equal(rings[i].base[rings[i].size + 1],
				 (uint8_t)(i >> 8));
		ring_unmap(&rings[i]);
		assert_ring_zeroed(&rings[i]);
	}
	assert_int_equal(count_fds(), before);
	free(rings);
}

static void test_ring_map_unmap(void **state)
{
	const uint32_t page = page_size();
	const uint32_t sizes[] = { page, 2 * page, 16 * page, 1u << 20 };
	struct ring r;
	size_t i;

	assert_true(ring_size_ok(1u << 30));
	for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		assert_true(ring_size_ok(sizes[i]));
		memset(&r, 0xa5, sizeof(r));
		assert_int_equal(ring_map(&r, sizes[i]), 0);
		assert_non_null(r.base);
		assert_int_equal(r.size, sizes[i]);
		assert_int_equal(r.mask, sizes[i] - 1);
		assert_int_equal(r.head, 0);
		assert_int_equal(r.tail, 0);
		assert_int_equal(ring_used(&r), 0);
		assert_int_equal(ring_free(&r), sizes[i]);
		assert_ptr_equal(ring_head_ptr(&r), r.base);
		/* A fresh memfd reads as zeroes, and all 2 * size is mapped. */
		assert_int_equal(r.base[0], 0);
		assert_int_equal(r.base[2 * (size_t)r.size - 1], 0);
		memset(r.base, 0x77, 2 * (size_t)r.size);
		ring_unmap(&r);
		assert_ring_zeroed(&r);
		/* Unmapping a zeroed ring is a no-op. */
		ring_unmap(&r);
		assert_ring_zeroed(&r);
	}
}

static void test_ring_mirror(void **state)
{
	const uint8_t pat[8] = { 1, 2, 3, 4, 5, 6, 7, 8 };
	const uint8_t pat2[8] = { 0xf1, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7,
				  0xf8 };
	struct ring r;
	uint8_t *b;
	uint32_t size;

	assert_int_equal(ring_map(&r, 4 * page_size()), 0);
	b = r.base;
	size = r.size;

	/* A write straddling the seam lands at both ends of the ring. */
	memcpy(b + size - 3, pat, 8);
	assert_memory_equal(b, pat + 3, 5);
	assert_memory_equal(b + 2 * (size_t)size - 3, pat, 3);
	assert_int_equal(b[5], 0);

	/* And the other way: writes at the ends show up across the seam. */
	memcpy(b, pat2 + 3, 5);
	memcpy(b + 2 * (size_t)size - 3, pat2, 3);
	assert_memory_equal(b + size - 3, pat2, 8);

	/* Every byte of the first view is the same byte of the second. */
	for (uint32_t i = 0; i < size; i += 61) {
		b[i] = (uint8_t)(i * 7);
		assert_int_equal(b[size + i], (uint8_t)(i * 7));
		b[size + i] = (uint8_t)(i * 13);
		assert_int_equal(b[i], (uint8_t)(i * 13));
	}
	ring_unmap(&r);
}

/*
 * Pushes frames of varying length and pops them in place, with head and tail
 * starting just below UINT32_MAX so the counters wrap early, and enough
 * traffic to go round the ring many times. A frame that straddles the seam
 * must still read back contiguous.
 */
static void test_ring_wrap_frames(void **state)
{
	const uint32_t start = UINT32_MAX - 100;
	uint32_t pushed = 0, popped = 0, seam = 0;
	uint64_t bytes = 0;
	struct ring r;
	struct frame f;

	assert_int_equal(ring_map(&r, page_size()), 0);
	r.head = start;
	r.tail = start;
	while (bytes < 64 * (uint64_t)r.size) {
		/* Fill while there is room: lengths cycle through 0..300. */
		for (;;) {
			uint32_t len = (pushed * 37) % 301;
			uint8_t *p = ring_tail_ptr(&r);

			if (ring_free(&r) < FRAME_HDR + len)
				break;
			frame_put_hdr(p, FRAME_DATA, len);
			for (uint32_t i = 0; i < len; i++)
				p[FRAME_HDR + i] = (uint8_t)(pushed + i);
			if ((r.tail & r.mask) + FRAME_HDR + len > r.size)
				seam++;
			ring_produce(&r, FRAME_HDR + len);
			assert_true(ring_used(&r) <= r.size);
			pushed++;
		}
		/* Drain about half, leaving a partial tail sometimes. */
		while (ring_used(&r) > r.size / 2) {
			long n = frame_decode(ring_head_ptr(&r), ring_used(&r),
					      1024, &f);

			assert_true(n > 0);
			assert_int_equal(f.type, FRAME_DATA);
			assert_int_equal(f.len, (popped * 37) % 301);
			for (uint32_t i = 0; i < f.len; i++)
				assert_int_equal(f.payload[i],
						 (uint8_t)(popped + i));
			ring_consume(&r, (uint32_t)n);
			bytes += (uint64_t)n;
			popped++;
		}
	}
	while (ring_used(&r) > 0) {
		long n = frame_decode(ring_head_ptr(&r), ring_used(&r), 1024,
				      &f);

		assert_true(n > 0);
		assert_int_equal(f.len, (popped * 37) % 301);
		ring_consume(&r, (uint32_t)n);
		popped++;
	}
	assert_int_equal(pushed, popped);
	assert_true(r.head < start);	/* the counters did wrap */
	assert_true(seam > 10);		/* and frames did straddle the seam */
	ring_unmap(&r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ring_bad_sizes),
		cmocka_unit_test(test_ring_full),
		cmocka_unit_test(test_ring_map_fails_without_fds),
		cmocka_unit_test(test_ring_map_many_no_fd_leak),
		cmocka_unit_test(test_ring_map_unmap),
		cmocka_unit_test(test_ring_mirror),
		cmocka_unit_test(test_ring_wrap_frames),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
