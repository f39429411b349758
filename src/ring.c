/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "ring.h"

#define RING_MAX	(1u << 30)

bool ring_size_ok(uint32_t size)
{
	long page = sysconf(_SC_PAGESIZE);

	if (page <= 0)
		return false;
	if (size < (uint32_t)page || size > RING_MAX)
		return false;
	if (size & (size - 1))
		return false;
	return (size % (uint32_t)page) == 0;
}

int ring_map(struct ring *r, uint32_t size)
{
	uint8_t *base, *p;
	int fd, err;

	memset(r, 0, sizeof(*r));
	if (!ring_size_ok(size))
		return -EINVAL;

	/*
	 * Reserve both halves first so the two shared views land in one
	 * contiguous hole nobody else can take between the two mmap calls.
	 */
	base = mmap(NULL, 2 * (size_t)size, PROT_NONE,
		    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (base == MAP_FAILED)
		return -errno;

	fd = memfd_create("pairmesh-ring", MFD_CLOEXEC);
	if (fd < 0) {
		err = -errno;
		goto out_unmap;
	}
	if (ftruncate(fd, size) < 0) {
		err = -errno;
		goto out_close_fd;
	}
	p = mmap(base, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED,
		 fd, 0);
	if (p == MAP_FAILED) {
		err = -errno;
		goto out_close_fd;
	}
	p = mmap(base + size, size, PROT_READ | PROT_WRITE,
		 MAP_SHARED | MAP_FIXED, fd, 0);
	if (p == MAP_FAILED) {
		err = -errno;
		goto out_close_fd;
	}
	/* The mappings pin the file; an open fd per ring would run out. */
	close(fd);

	r->base = base;
	r->size = size;
	r->mask = size - 1;
	r->head = 0;
	r->tail = 0;
	return 0;

out_close_fd:
	close(fd);
out_unmap:
	/* One munmap covers the reservation and any view placed over it. */
	munmap(base, 2 * (size_t)size);
	return err;
}

void ring_unmap(struct ring *r)
{
	if (r->base)
		munmap(r->base, 2 * (size_t)r->size);
	memset(r, 0, sizeof(*r));
}
