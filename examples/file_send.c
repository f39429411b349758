/* SPDX-License-Identifier: MIT */
/*
 * file_send FILE PEER: streams FILE to a file_recv listening at PEER
 * ("HOST:PORT") and waits for its verdict. Exit 0 when the receiver found
 * the same size and hash, else 1.
 *
 * Zero copy: each chunk is read() from the file straight into the stream's
 * TX ring (pm_reserve), hashed there, and committed (pm_commit); the node
 * writes it to the socket from the ring. When the ring is full pm_reserve
 * returns -EAGAIN and the sender waits for PM_EV_WRITABLE: the ring bounds
 * the memory whatever the file's size.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <pairmesh.h>

#include "file_xfer.h"

static struct {
	struct pm_node *n;
	struct pm_stream s;
	int fd;
	uint64_t size;		/* the file's */
	uint64_t off;		/* bytes committed so far */
	bool header_sent, trailer_sent;
	crypto_generichash_state hash;
	int status;		/* -1 while running, then the exit status */
} tx = { .fd = -1, .status = -1 };

static void fail(const char *what, int err)
{
	fprintf(stderr, "file_send: %s: %s\n", what, strerror(-err));
	tx.status = 1;
}

/* Reads len bytes at the current offset into buf; 0 or -errno. */
static int read_full(unsigned char *buf, size_t len)
{
	while (len) {
		ssize_t r = read(tx.fd, buf, len);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		if (r == 0)
			return -ENODATA;	/* the file shrank */
		buf += r;
		len -= (size_t)r;
	}
	return 0;
}

/*
 * Queues as much as the TX ring takes: the header, the chunks, the trailer.
 * Returns at -EAGAIN; the next PM_EV_WRITABLE calls it again.
 */
static void pump(void)
{
	unsigned char *buf;
	int r;

	if (!tx.header_sent) {
		r = pm_reserve(tx.n, tx.s, XFER_HEADER, (void **)&buf);
		if (r)
			goto out;
		memcpy(buf, XFER_MAGIC, 8);
		xfer_put64(buf + 8, tx.size);
		pm_commit(tx.n, tx.s, XFER_HEADER);
		tx.header_sent = true;
	}
	while (tx.off < tx.size) {
		size_t len = tx.size - tx.off < XFER_CHUNK ?
			     (size_t)(tx.size - tx.off) : XFER_CHUNK;

		r = pm_reserve(tx.n, tx.s, len, (void **)&buf);
		if (r)
			goto out;
		/* The file's bytes land in the ring: no buffer of our own. */
		r = read_full(buf, len);
		if (r) {
			fail("read", r);
			return;
		}
		crypto_generichash_update(&tx.hash, buf, len);
		pm_commit(tx.n, tx.s, len);
		tx.off += len;
	}
	if (!tx.trailer_sent) {
		r = pm_reserve(tx.n, tx.s, XFER_HASH, (void **)&buf);
		if (r)
			goto out;
		crypto_generichash_final(&tx.hash, buf, XFER_HASH);
		pm_commit(tx.n, tx.s, XFER_HASH);
		tx.trailer_sent = true;
	}
	return;
out:
	if (r != -EAGAIN)
		fail("send", r);
}

/* The receiver's verdict: "OK ..." or "BAD ...". */
static int on_message(struct pm_node *n, const struct pm_message *m, void *u)
{
	if (!pm_stream_same(n, m->stream, tx.s))
		return 0;
	fprintf(stderr, "file_send: receiver says: %.*s\n", (int)m->len,
		(const char *)m->data);
	tx.status = m->len >= 2 && !memcmp(m->data, "OK", 2) ? 0 : 1;
	return 0;
}

static void on_event(struct pm_node *n, const struct pm_event *ev, void *u)
{
	if (!pm_stream_same(n, ev->stream, tx.s) || tx.status >= 0)
		return;
	if (ev->type == PM_EV_WRITABLE)
		pump();
	else if (ev->type == PM_EV_CLOSED)
		fail("stream closed before the verdict",
		     ev->error ? ev->error : -ECONNRESET);
}

int main(int argc, char *argv[])
{
	struct pm_config c;
	struct timespec t0, t1;
	struct stat st;
	double secs;
	int r;

	if (argc != 3) {
		fprintf(stderr, "usage: file_send FILE HOST:PORT\n");
		return 2;
	}
	tx.fd = open(argv[1], O_RDONLY | O_CLOEXEC);
	if (tx.fd < 0 || fstat(tx.fd, &st) || !S_ISREG(st.st_mode)) {
		fprintf(stderr, "file_send: %s: not a readable file\n",
			argv[1]);
		return 1;
	}
	if (sodium_init() < 0)
		return 1;
	tx.size = (uint64_t)st.st_size;
	crypto_generichash_init(&tx.hash, NULL, 0, XFER_HASH);
	pm_config_init(&c);
	c.on_message = on_message;
	c.on_event = on_event;
	r = pm_node_create(&tx.n, &c);
	if (r) {
		fail("node", r);
		return 1;
	}
	r = pm_connect(tx.n, argv[2], &tx.s);
	if (r) {
		fail(argv[2], r);
		return 1;
	}
	clock_gettime(CLOCK_MONOTONIC, &t0);
	pump();		/* queues before the handshake ends: that is fine */
	while (tx.status < 0) {
		r = pm_node_run(tx.n, -1);
		if (r < 0 && r != -EINTR) {
			fail("node loop", r);
			break;
		}
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	secs = (double)(t1.tv_sec - t0.tv_sec) +
	       (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	if (tx.status == 0)
		fprintf(stderr, "file_send: %llu bytes in %.2f s (%.0f MB/s)\n",
			(unsigned long long)tx.size, secs,
			(double)tx.size / 1e6 / (secs > 0 ? secs : 1));
	pm_node_shutdown(tx.n, 5000);
	pm_node_destroy(tx.n);
	close(tx.fd);
	return tx.status;
}
