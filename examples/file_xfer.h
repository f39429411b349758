/* SPDX-License-Identifier: MIT */
/*
 * The little protocol of file_send and file_recv, on one pair stream:
 *
 *   sender -> receiver   header: "PMFILE1\0", the size (u64, big-endian)
 *   sender -> receiver   the file's bytes, in messages of up to CHUNK
 *   sender -> receiver   trailer: BLAKE2b-256 of the file (32 bytes)
 *   receiver -> sender   verdict: "OK" or "BAD", then a line of text
 *
 * The receiver knows where the data ends from the size, so the data
 * messages carry no header of their own.
 */
#ifndef FILE_XFER_H
#define FILE_XFER_H

#include <stdint.h>
#include <string.h>
#include <sodium.h>

#define XFER_MAGIC	"PMFILE1"	/* 8 bytes with its NUL */
#define XFER_HEADER	16
#define XFER_CHUNK	(64u << 10)	/* under the default max_message */
#define XFER_HASH	crypto_generichash_BYTES	/* 32 */

static inline void xfer_put64(unsigned char *p, uint64_t v)
{
	for (int i = 7; i >= 0; i--, v >>= 8)
		p[i] = (unsigned char)v;
}

static inline uint64_t xfer_get64(const unsigned char *p)
{
	uint64_t v = 0;

	for (int i = 0; i < 8; i++)
		v = v << 8 | p[i];
	return v;
}

static inline void xfer_hex(const unsigned char *h, char out[2 * XFER_HASH + 1])
{
	sodium_bin2hex(out, 2 * XFER_HASH + 1, h, XFER_HASH);
}

#endif
