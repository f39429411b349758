/* SPDX-License-Identifier: MIT */
/*
 * A byte ring mapped twice, back to back, from one memfd: the bytes at
 * base[size..2*size) are the bytes at base[0..size). Any span of up to size
 * bytes starting anywhere in the ring is therefore contiguous, so a frame
 * that wraps is still parsed in place and handed out without a copy.
 *
 * head and tail run free (never masked); used = tail - head, full when
 * used == size. size is a power of two and a page multiple.
 */
#ifndef PM_RING_H
#define PM_RING_H

#include <stdbool.h>
#include <stdint.h>

struct ring {
	uint8_t *base;	/* 2 * size bytes of address space */
	uint32_t size;
	uint32_t mask;
	uint32_t head;	/* consumer position */
	uint32_t tail;	/* producer position */
};

/* True when size is a power of two, a page multiple and <= 1 GiB. */
bool ring_size_ok(uint32_t size);

/* Maps r with the mirror. Returns 0, -EINVAL for a bad size, or -errno. */
int ring_map(struct ring *r, uint32_t size);

/* Unmaps r (a zeroed or unmapped ring is fine). */
void ring_unmap(struct ring *r);

static inline uint32_t ring_used(const struct ring *r)
{
	return r->tail - r->head;
}

static inline uint32_t ring_free(const struct ring *r)
{
	return r->size - (r->tail - r->head);
}

/* The oldest unconsumed byte; ring_used() bytes are contiguous from here. */
static inline uint8_t *ring_head_ptr(const struct ring *r)
{
	return r->base + (r->head & r->mask);
}

/* The first free byte; ring_free() bytes are contiguous from here. */
static inline uint8_t *ring_tail_ptr(const struct ring *r)
{
	return r->base + (r->tail & r->mask);
}

static inline void ring_produce(struct ring *r, uint32_t n)
{
	r->tail += n;
}

static inline void ring_consume(struct ring *r, uint32_t n)
{
	r->head += n;
}

static inline void ring_reset(struct ring *r)
{
	r->head = 0;
	r->tail = 0;
}

#endif
