/* SPDX-License-Identifier: MIT */
/*
 * file_recv LISTEN [OUT]: receives one file from file_send, writes it to
 * OUT (if given), and checks its size and BLAKE2b-256 hash on arrival.
 * Prints "received SIZE bytes blake2b-256 HEX ok" (or "MISMATCH") on
 * stdout, tells the sender, and exits 0 when the file arrived whole.
 *
 * Each data message is written to OUT and hashed straight from the RX ring
 * (m->data): no copy in between.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <pairmesh.h>

#include "file_xfer.h"

enum rx_state { RX_HEADER, RX_DATA, RX_TRAILER, RX_VERDICT, RX_DONE };

static struct {
	struct pm_node *n;
	struct pm_stream s;	/* the sender's stream, once known */
	const char *out_path;
	int out;
	enum rx_state state;
	uint64_t size, got;
	crypto_generichash_state hash;
	char verdict[160];
	bool ok;
	int status;		/* -1 while running, then the exit status */
} rx = { .out = -1, .status = -1 };

static int write_full(const unsigned char *p, size_t len)
{
	while (len) {
		ssize_t r = write(rx.out, p, len);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		p += r;
		len -= (size_t)r;
	}
	return 0;
}

/* The verdict, from the hash of what arrived (h; NULL: computed here). */
static void finish(bool ok, const char *why, const unsigned char *h)
{
	unsigned char mine[XFER_HASH];
	char hex[2 * XFER_HASH + 1];

	if (!h) {
		crypto_generichash_final(&rx.hash, mine, XFER_HASH);
		h = mine;
	}
	xfer_hex(h, hex);
	rx.ok = ok;
	snprintf(rx.verdict, sizeof(rx.verdict), "%s %llu bytes blake2b-256 %s%s",
		 ok ? "OK" : "BAD", (unsigned long long)rx.got, hex, why);
	printf("received %llu bytes blake2b-256 %s %s%s\n",
	       (unsigned long long)rx.got, hex, ok ? "ok" : "MISMATCH", why);
	fflush(stdout);
	rx.state = RX_VERDICT;
}

/* One message of the transfer; returns what the callback returns. */
static int handle(const unsigned char *p, size_t len)
{
	unsigned char h[XFER_HASH];

	switch (rx.state) {
	case RX_HEADER:
		if (len != XFER_HEADER || memcmp(p, XFER_MAGIC, 8)) {
			finish(false, " (bad header)", NULL);
			break;
		}
		rx.size = xfer_get64(p + 8);
		rx.state = rx.size ? RX_DATA : RX_TRAILER;
		break;
	case RX_DATA:
		if (len > rx.size - rx.got) {
			finish(false, " (more data than announced)", NULL);
			break;
		}
		if (rx.out >= 0 && write_full(p, len)) {
			finish(false, " (cannot write the output)", NULL);
			break;
		}
		crypto_generichash_update(&rx.hash, p, len);
		rx.got += len;
		if (rx.got == rx.size)
			rx.state = RX_TRAILER;
		break;
	case RX_TRAILER:
		crypto_generichash_final(&rx.hash, h, XFER_HASH);
		if (len != XFER_HASH)
			finish(false, " (bad trailer)", h);
		else if (sodium_memcmp(h, p, XFER_HASH))
			finish(false, " (hash differs)", h);
		else
			finish(true, "", h);
		break;
	default:
		break;
	}
	return 0;
}

static int on_message(struct pm_node *n, const struct pm_message *m, void *u)
{
	int r;

	if (!rx.s.h && !(m->flags & (PM_MSG_ROUTED | PM_MSG_BROADCAST)))
		rx.s = m->stream;		/* the first sender is ours */
	if (!pm_stream_same(n, m->stream, rx.s) || rx.state == RX_DONE)
		return 0;
	if (rx.state != RX_VERDICT)
		handle(m->data, m->len);
	if (rx.state != RX_VERDICT)
		return 0;
	/* A full ring: keep this message, answer on PM_EV_WRITABLE. */
	r = pm_send(n, rx.s, rx.verdict, strlen(rx.verdict));
	if (r == -EAGAIN)
		return -EAGAIN;
	rx.state = RX_DONE;
	rx.status = rx.ok && r == 0 ? 0 : 1;
	return 0;
}

static void on_event(struct pm_node *n, const struct pm_event *ev, void *u)
{
	if (!rx.s.h || !pm_stream_same(n, ev->stream, rx.s))
		return;
	if (ev->type == PM_EV_WRITABLE) {
		pm_stream_resume(n, rx.s);
	} else if (ev->type == PM_EV_CLOSED && rx.status < 0) {
		fprintf(stderr, "file_recv: the sender left after %llu of "
			"%llu bytes\n", (unsigned long long)rx.got,
			(unsigned long long)rx.size);
		rx.status = 1;
	}
}

int main(int argc, char *argv[])
{
	struct pm_config c;
	char addr[64];
	int r;

	if (argc < 2 || argc > 3) {
		fprintf(stderr, "usage: file_recv HOST:PORT [OUT]\n");
		return 2;
	}
	if (sodium_init() < 0)
		return 1;
	if (argc == 3) {
		rx.out = open(argv[2], O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
			      0644);
		if (rx.out < 0) {
			perror(argv[2]);
			return 1;
		}
	}
	crypto_generichash_init(&rx.hash, NULL, 0, XFER_HASH);
	pm_config_init(&c);
	c.listen = argv[1];
	c.on_message = on_message;
	c.on_event = on_event;
	r = pm_node_create(&rx.n, &c);
	if (r) {
		fprintf(stderr, "file_recv: listen %s: %s\n", argv[1],
			strerror(-r));
		return 1;
	}
	pm_node_listen_addr(rx.n, addr, sizeof(addr));
	fprintf(stderr, "ready id=%016llx listen=%s engine=%s\n",
		(unsigned long long)pm_node_id(rx.n), addr,
		pm_node_engine(rx.n));
	while (rx.status < 0) {
		r = pm_node_run(rx.n, -1);
		if (r < 0 && r != -EINTR) {
			fprintf(stderr, "file_recv: %s\n", strerror(-r));
			rx.status = 1;
		}
	}
	/* Sends the verdict, then closes. */
	pm_node_shutdown(rx.n, 5000);
	pm_node_destroy(rx.n);
	if (rx.out >= 0 && close(rx.out)) {
		perror("file_recv: close");
		return 1;
	}
	return rx.status;
}
