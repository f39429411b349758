/* SPDX-License-Identifier: MIT */
/*
 * flood: opens many TCP connections to a node and holds them, each a
 * handshake that never finishes: it writes the start of a valid HELLO
 * (docs/PROTOCOL.md §4.2) one byte every --trickle-ms (0: writes nothing),
 * so that the node cannot tell it from a slow peer until its handshake
 * time runs out. Beyond the node's slab the connections are refused.
 *
 *   flood --addr HOST:PORT --conns N --hold-ms MS [--trickle-ms MS]
 *
 * Prints one line: how many connections were opened, failed to open, and
 * were ended by the node (EOF or reset) while held. Exit 0, 2 bad usage.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONNS	4096

static const unsigned char hello[56] = {
	0x00, 0x00, 0x00, 0x30, 0x01, 0x00, 0x00, 0x00,
	0x50, 0x4d, 0x53, 0x48, 0x01, 0x00, 0x00, 0x00,
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x77, 0x00,	/* id */
	0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88,
	0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
};

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static int parse_addr(const char *s, struct sockaddr_in *sa)
{
	char host[64];
	const char *colon = strrchr(s, ':');

	if (!colon || (size_t)(colon - s) >= sizeof(host))
		return -1;
	memcpy(host, s, colon - s);
	host[colon - s] = 0;
	memset(sa, 0, sizeof(*sa));
	sa->sin_family = AF_INET;
	sa->sin_port = htons((uint16_t)atoi(colon + 1));
	return inet_pton(AF_INET, host, &sa->sin_addr) == 1 ? 0 : -1;
}

int main(int argc, char *argv[])
{
	static const struct option opts[] = {
		{ "addr", required_argument, NULL, 'a' },
		{ "conns", required_argument, NULL, 'n' },
		{ "hold-ms", required_argument, NULL, 'h' },
		{ "trickle-ms", required_argument, NULL, 't' },
		{ 0 }
	};
	static struct pollfd pfd[MAX_CONNS];
	static size_t sent[MAX_CONNS];
	struct sockaddr_in sa;
	const char *addr = NULL;
	int conns = 0, hold = 0, trickle = 0, o;
	int opened = 0, failed = 0, ended = 0;
	uint64_t end, next_byte;

	while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (o) {
		case 'a': addr = optarg; break;
		case 'n': conns = atoi(optarg); break;
		case 'h': hold = atoi(optarg); break;
		case 't': trickle = atoi(optarg); break;
		default: return 2;
		}
	}
	if (!addr || parse_addr(addr, &sa) || conns <= 0 ||
	    conns > MAX_CONNS || hold < 0 || trickle < 0) {
		fprintf(stderr, "Usage: flood --addr HOST:PORT --conns N "
			"--hold-ms MS [--trickle-ms MS]\n");
		return 2;
	}
	/* Blocking connects: the listener's backlog takes them even when the
	 * node's slab is full; the node refuses them once it accepts. */
	for (int i = 0; i < conns; i++) {
		int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		struct timeval tv = { .tv_sec = 1 };	/* a hang guard */

		pfd[i].fd = -1;
		if (fd >= 0)
			setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv,
				   sizeof(tv));
		if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa))) {
			failed++;
			if (fd >= 0)
				close(fd);
			continue;
		}
		fcntl(fd, F_SETFL, O_NONBLOCK);
		pfd[i].fd = fd;
		pfd[i].events = POLLIN;
		opened++;
	}
	end = now_ms() + (uint64_t)hold;
	next_byte = now_ms();
	for (;;) {
		uint64_t now = now_ms();
		int wait;

		if (now >= end)
			break;
		if (trickle && now >= next_byte) {
			for (int i = 0; i < conns; i++) {
				unsigned char b;

				if (pfd[i].fd < 0 || sent[i] >= sizeof(hello))
					continue;
				b = hello[sent[i]];
				if (sent[i] == 22)
					b = (unsigned char)(i + 1);
				if (write(pfd[i].fd, &b, 1) == 1)
					sent[i]++;
			}
			next_byte = now + (uint64_t)trickle;
		}
		wait = (int)(end - now);
		if (trickle && next_byte - now < (uint64_t)wait)
			wait = (int)(next_byte - now);
		if (poll(pfd, (nfds_t)conns, wait) < 0 && errno != EINTR)
			break;
		for (int i = 0; i < conns; i++) {
			char buf[256];
			ssize_t r;

			if (pfd[i].fd < 0 || !pfd[i].revents)
				continue;
			r = read(pfd[i].fd, buf, sizeof(buf));
			if (r > 0 || (r < 0 && errno == EAGAIN))
				continue;	/* a CLOSE frame, then EOF */
			close(pfd[i].fd);
			pfd[i].fd = -1;
			ended++;
		}
	}
	for (int i = 0; i < conns; i++)
		if (pfd[i].fd >= 0)
			close(pfd[i].fd);
	printf("flood: opened=%d failed=%d ended_by_node=%d held=%d\n", opened,
	       failed, ended, opened - ended);
	return 0;
}
