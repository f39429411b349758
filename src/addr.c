/* SPDX-License-Identifier: MIT */
/* TCP binding: "HOST:PORT" text, sockaddrs, and HELLO's advertised address. */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "node.h"

/* Accepts "1.2.3.4:80", "[::1]:80", "localhost:80". Port 0..65535. */
int addr_parse(const char *s, struct sockaddr_storage *ss, socklen_t *len)
{
	char host[256];
	const char *colon, *port, *h = s;
	size_t hlen;
	char *end;
	long p;

	if (!s || !*s)
		return -EINVAL;
	if (*s == '[') {
		const char *close = strchr(s, ']');

		if (!close || close[1] != ':')
			return -EINVAL;
		h = s + 1;
		hlen = (size_t)(close - h);
		port = close + 2;
	} else {
		colon = strrchr(s, ':');
		if (!colon || strchr(s, ':') != colon)
			return -EINVAL;
		hlen = (size_t)(colon - s);
		port = colon + 1;
	}
	if (hlen == 0 || hlen >= sizeof(host) || !*port)
		return -EINVAL;
	errno = 0;
	p = strtol(port, &end, 10);
	if (errno || *end || p < 0 || p > 65535 || *port == '-' ||
	    *port == '+')
		return -EINVAL;
	memcpy(host, h, hlen);
	host[hlen] = 0;

	memset(ss, 0, sizeof(*ss));
	struct sockaddr_in *v4 = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)ss;

	if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
		v4->sin_family = AF_INET;
		v4->sin_port = htons((uint16_t)p);
		*len = sizeof(*v4);
		return 0;
	}
	if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
		v6->sin6_family = AF_INET6;
		v6->sin6_port = htons((uint16_t)p);
		*len = sizeof(*v6);
		return 0;
	}
	/* A name: resolve once, now; sends never name the address again. */
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *ai;

	if (getaddrinfo(host, NULL, &hints, &ai) != 0)
		return -EINVAL;
	memcpy(ss, ai->ai_addr, ai->ai_addrlen);
	*len = ai->ai_addrlen;
	freeaddrinfo(ai);
	if (ss->ss_family == AF_INET)
		v4->sin_port = htons((uint16_t)p);
	else if (ss->ss_family == AF_INET6)
		v6->sin6_port = htons((uint16_t)p);
	else
		return -EINVAL;
	return 0;
}

int addr_format(const struct sockaddr *sa, char *buf, size_t len)
{
	char host[INET6_ADDRSTRLEN];
	int r;

	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *v4 = (const void *)sa;

		inet_ntop(AF_INET, &v4->sin_addr, host, sizeof(host));
		r = snprintf(buf, len, "%s:%u", host, ntohs(v4->sin_port));
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *v6 = (const void *)sa;

		inet_ntop(AF_INET6, &v6->sin6_addr, host, sizeof(host));
		r = snprintf(buf, len, "[%s]:%u", host, ntohs(v6->sin6_port));
	} else {
		return -EAFNOSUPPORT;
	}
	return r < 0 || (size_t)r >= len ? -ENOSPC : r;
}

bool addr_equal(const struct sockaddr *a, const struct sockaddr *b)
{
	if (a->sa_family != b->sa_family)
		return false;
	if (a->sa_family == AF_INET) {
		const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;

		return x->sin_port == y->sin_port &&
		       x->sin_addr.s_addr == y->sin_addr.s_addr;
	}
	if (a->sa_family == AF_INET6) {
		const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;

		return x->sin6_port == y->sin6_port &&
		       !memcmp(&x->sin6_addr, &y->sin6_addr, 16);
	}
	return false;
}

bool addr_is_any(const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET)
		return ((const struct sockaddr_in *)(const void *)sa)
			       ->sin_addr.s_addr == htonl(INADDR_ANY);
	if (sa->sa_family == AF_INET6)
		return IN6_IS_ADDR_UNSPECIFIED(
			&((const struct sockaddr_in6 *)(const void *)sa)
				 ->sin6_addr);
	return false;
}

void addr_to_hello(const struct sockaddr *sa, struct hello *h)
{
	memset(h->addr, 0, sizeof(h->addr));
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *v4 = (const void *)sa;

		h->addr_type = ADDR_TCP4;
		h->port = ntohs(v4->sin_port);
		memcpy(h->addr, &v4->sin_addr, 4);
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *v6 = (const void *)sa;

		h->addr_type = ADDR_TCP6;
		h->port = ntohs(v6->sin6_port);
		memcpy(h->addr, &v6->sin6_addr, 16);
	} else {
		h->addr_type = ADDR_NONE;
		h->port = 0;
	}
}

/*
 * The address a peer can be dialled at: what it advertised, with an
 * unspecified IP (it listens on all addresses) replaced by the IP its
 * connection came from. Returns the length, 0 if it advertised none.
 */
socklen_t addr_from_hello(const struct hello *h, const struct sockaddr *seen,
			  struct sockaddr_storage *out)
{
	memset(out, 0, sizeof(*out));
	if (h->addr_type == ADDR_TCP4) {
		struct sockaddr_in *v4 = (struct sockaddr_in *)out;

		v4->sin_family = AF_INET;
		v4->sin_port = htons(h->port);
		memcpy(&v4->sin_addr, h->addr, 4);
		if (v4->sin_addr.s_addr == htonl(INADDR_ANY) && seen &&
		    seen->sa_family == AF_INET)
			v4->sin_addr =
				((const struct sockaddr_in *)(const void *)seen)
					->sin_addr;
		return sizeof(*v4);
	}
	if (h->addr_type == ADDR_TCP6) {
		struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)out;

		v6->sin6_family = AF_INET6;
		v6->sin6_port = htons(h->port);
		memcpy(&v6->sin6_addr, h->addr, 16);
		if (IN6_IS_ADDR_UNSPECIFIED(&v6->sin6_addr) && seen &&
		    seen->sa_family == AF_INET6)
			v6->sin6_addr =
				((const struct sockaddr_in6 *)(const void *)seen)
					->sin6_addr;
		return sizeof(*v6);
	}
	return 0;
}
