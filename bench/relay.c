/* SPDX-License-Identifier: MIT */
/*
 * relay: throughput of A -> B -> C (B relays) against A -> C direct, in one
 * run, same message size, same API (pm_send_to by node id). Every node is
 * its own process on loopback; C checks that sequence numbers arrive
 * consecutive and the run fails on any gap.
 *
 *   build/bench/relay [--size BYTES] [--seconds S] [--engine auto|io_uring|epoll]
 *
 * Prints one row per mode and the ratio relay/direct.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "pairmesh.h"

struct sink {
	uint64_t next;		/* next sequence expected */
	uint64_t bytes;
	bool done, bad;
};

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int on_sink(struct pm_node *n, const struct pm_message *m, void *user)
{
	struct sink *s = user;
	uint64_t seq;

	if (m->len == 0)
		return 0;	/* the sender's route probe */
	if (m->len < sizeof(seq)) {
		s->done = true;	/* the end marker is shorter than a message */
		return 0;
	}
	memcpy(&seq, m->data, sizeof(seq));
	if (seq != s->next)
		s->bad = true;
	s->next = seq + 1;
	s->bytes += m->len;
	return 0;
}

static struct pm_node *node(enum pm_engine eng, size_t size, pm_message_fn fn,
			    void *user)
{
	struct pm_config c;
	struct pm_node *n;
	uint32_t ring = 1u << 20;

	pm_config_init(&c);
	c.engine = eng;
	c.no_auto_connect = true;	/* keep the chain a chain */
	while (ring < 8 * (size + 64))
		ring <<= 1;
	c.ring_size = ring;
	c.max_message = (uint32_t)(size + 64 > c.max_message ? size + 64 :
				   c.max_message);
	c.on_message = fn;
	c.user = user;
	if (pm_node_create(&n, &c)) {
		fprintf(stderr, "relay: cannot create a node\n");
		exit(1);
	}
	return n;
}

/* Child: a node that connects to `to` (if any), tells its address and id,
 * and runs until its parent goes away (or, as the sink, the marker). */
static pid_t spawn(enum pm_engine eng, size_t size, const char *to,
		   bool is_sink, int *rfd)
{
	int fds[2];
	pid_t pid;

	if (pipe(fds))
		exit(1);
	pid = fork();
	if (pid)
		goto out_parent;
	close(fds[0]);
	struct sink s = { 0 };
	struct pm_node *n = node(eng, size, is_sink ? on_sink : NULL, &s);
	struct pm_stream st;
	char line[128], addr[64];

	if (to && pm_connect(n, to, &st))
		exit(1);
	pm_node_listen_addr(n, addr, sizeof(addr));
	snprintf(line, sizeof(line), "%s %016llx\n", addr,
		 (unsigned long long)pm_node_id(n));
	if (write(fds[1], line, strlen(line)) < 0)
		exit(1);
	while (!s.done && getppid() != 1)
		pm_node_run(n, 100);
	snprintf(line, sizeof(line), "%llu %llu %d\n",
		 (unsigned long long)s.next, (unsigned long long)s.bytes,
		 s.bad);
	if (write(fds[1], line, strlen(line)) < 0)
		exit(1);
	pm_node_shutdown(n, 1000);
	pm_node_destroy(n);
	_exit(0);
out_parent:
	close(fds[1]);
	*rfd = fds[0];
	return pid;
}

static int read_line(int fd, char *buf, size_t len)
{
	size_t k = 0;

	while (k + 1 < len) {
		ssize_t r = read(fd, buf + k, 1);

		if (r <= 0)
			return -1;
		if (buf[k++] == '\n')
			break;
	}
	buf[k] = 0;
	return 0;
}

/* Returns messages per second, or -1 on a failed check. */
static double run(enum pm_engine eng, size_t size, double seconds, bool relay)
{
	char c_addr[64], b_addr[64], line[128];
	unsigned long long c_id, b_id, got, bytes;
	int cfd, bfd = -1, bad;
	pid_t cpid, bpid = 0;

	cpid = spawn(eng, size, NULL, true, &cfd);
	if (read_line(cfd, line, sizeof(line)) ||
	    sscanf(line, "%63s %llx", c_addr, &c_id) != 2)
		return -1;
	if (relay) {
		bpid = spawn(eng, size, c_addr, false, &bfd);
		if (read_line(bfd, line, sizeof(line)) ||
		    sscanf(line, "%63s %llx", b_addr, &b_id) != 2)
			return -1;
	}
	struct pm_node *a = node(eng, size, NULL, NULL);
	struct pm_stream st;
	uint8_t *msg = calloc(1, size < 8 ? 8 : size);
	uint64_t seq = 0, t0, end;
	int r;

	pm_connect(a, relay ? b_addr : c_addr, &st);
	/* Wait for a route to C (through B: learned from B's LINKS). */
	do {
		pm_node_run(a, 10);
		r = pm_send_to(a, c_id, "", 0);
	} while (r == -EHOSTUNREACH || r == -EAGAIN);
	t0 = now_ns();
	end = t0 + (uint64_t)(seconds * 1e9);
	while (now_ns() < end) {
		for (int i = 0; i < 256; i++) {
			memcpy(msg, &seq, sizeof(seq));
			r = pm_send_to(a, c_id, msg, size);
			if (r == -EAGAIN)
				break;
			if (r) {
				fprintf(stderr, "relay: send: %s\n", strerror(-r));
				return -1;
			}
			seq++;
		}
		pm_node_run(a, r == -EAGAIN ? 1 : 0);
	}
	while (pm_send_to(a, c_id, "end", 3) == -EAGAIN)
		pm_node_run(a, 1);
	/* The sink answers once it has read everything up to the marker. */
	struct pollfd p = { .fd = cfd, .events = POLLIN };

	while (poll(&p, 1, 0) == 0)
		pm_node_run(a, 1);
	double secs = (double)(now_ns() - t0) / 1e9;

	if (read_line(cfd, line, sizeof(line)) ||
	    sscanf(line, "%llu %llu %d", &got, &bytes, &bad) != 3)
		return -1;
	pm_node_destroy(a);
	free(msg);
	if (bpid)
		kill(bpid, SIGTERM);
	waitpid(cpid, NULL, 0);
	if (bpid)
		waitpid(bpid, NULL, 0);
	close(cfd);
	if (bfd >= 0)
		close(bfd);
	if (bad || got != seq) {
		fprintf(stderr, "relay: FAIL %s: sent %llu, sink saw %llu%s\n",
			relay ? "relay" : "direct", (unsigned long long)seq,
			got, bad ? " with a gap" : "");
		return -1;
	}
	return (double)seq / secs;
}

int main(int argc, char **argv)
{
	enum pm_engine eng = PM_ENGINE_AUTO;
	double seconds = 3;
	size_t size = 1024;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--size") && i + 1 < argc)
			size = strtoull(argv[++i], NULL, 10);
		else if (!strcmp(argv[i], "--seconds") && i + 1 < argc)
			seconds = atof(argv[++i]);
		else if (!strcmp(argv[i], "--engine") && i + 1 < argc) {
			const char *e = argv[++i];

			eng = !strcmp(e, "io_uring") ? PM_ENGINE_IO_URING :
			      !strcmp(e, "epoll") ? PM_ENGINE_EPOLL :
			      PM_ENGINE_AUTO;
		} else {
			fprintf(stderr, "usage: relay [--size BYTES] "
				"[--seconds S] [--engine auto|io_uring|epoll]\n");
			return 2;
		}
	}
	if (size < 8 || seconds <= 0) {
		fprintf(stderr, "relay: size must be >= 8, seconds > 0\n");
		return 2;
	}
	double direct = run(eng, size, seconds, false);
	double relayed = run(eng, size, seconds, true);

	if (direct < 0 || relayed < 0)
		return 1;
	printf("%-8s %8zu B %12.0f msgs/s %9.1f MB/s\n", "direct", size,
	       direct, direct * (double)size / 1e6);
	printf("%-8s %8zu B %12.0f msgs/s %9.1f MB/s\n", "relay", size,
	       relayed, relayed * (double)size / 1e6);
	printf("ratio relay/direct %.2f\n", relayed / direct);
	return 0;
}
