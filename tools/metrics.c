/* SPDX-License-Identifier: MIT */
/*
 * The --metrics HTTP endpoint. Only what a scraper needs: one request per
 * connection (GET or HEAD /metrics), answered and closed. Everything is
 * non-blocking and bounded: MAX_CLIENTS connections (the oldest is dropped
 * for a new one), REQ_MAX bytes of request, a deadline per connection.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "metrics.h"
#include "slog.h"

#define MAX_CLIENTS	16
#define REQ_MAX		4096	/* request line and headers, bytes */
#define READ_MS		3000	/* the whole request within this */
#define WRITE_MS	10000	/* the whole response within this */
#define LINGER_MS	1000	/* reading what the client still sends */
#define LINGER_MAX	65536	/* bytes read and dropped before closing */
#define TICK_MS		250	/* deadline checks while clients exist */
#define ACCEPT_BATCH	32

#define TAG_LISTEN	0
#define TAG_TIMER	1
#define TAG_CLIENT	2	/* + slot; the generation sits above */

enum cstate {
	C_FREE = 0,
	C_READ,			/* reading the request */
	C_WRITE,		/* sending the response */
	C_LINGER,		/* sent and shut down: draining, then close */
};

struct client {
	int fd;
	enum cstate state;
	uint32_t gen;		/* drops events of the slot's last user */
	uint64_t deadline_ms;
	uint64_t seq;		/* accept order: the oldest is evicted */
	size_t have;		/* request bytes; in C_LINGER bytes drained */
	char *out;		/* the response */
	size_t out_len, out_off;
	char from[64];		/* "HOST:PORT", for the debug log */
	char req[REQ_MAX + 1];	/* NUL-terminated */
};

/* The statuses this server answers, counted per code. */
static const int codes[] = { 200, 400, 404, 405, 414, 431 };
#define NCODES	(sizeof(codes) / sizeof(codes[0]))

struct metrics {
	struct pm_node *n;
	int ep;			/* listener, timer and clients */
	int lfd;
	int tfd;
	bool ticking;
	bool accept_paused;	/* out of descriptors: retried per tick */
	struct sockaddr_storage addr;
	metrics_extra_fn extra;
	void *user;
	uint64_t seq;
	uint32_t nclients;
	uint64_t responses[NCODES];
	uint64_t timeouts, evicted;
	struct client c[MAX_CLIENTS];
};

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static int fmt_addr(const struct sockaddr_storage *ss, char *buf, size_t len)
{
	char host[INET6_ADDRSTRLEN];
	int r;

	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *a = (const void *)ss;

		inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host));
		r = snprintf(buf, len, "%s:%u", host, ntohs(a->sin_port));
	} else {
		const struct sockaddr_in6 *a = (const void *)ss;

		inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof(host));
		r = snprintf(buf, len, "[%s]:%u", host, ntohs(a->sin6_port));
	}
	return r < 0 || (size_t)r >= len ? -ENOSPC : r;
}

int metrics_parse(const char *spec, struct sockaddr_storage *ss,
		  socklen_t *len)
{
	struct addrinfo hints = {
		.ai_socktype = SOCK_STREAM,
		.ai_flags = AI_PASSIVE | AI_NUMERICSERV,
	}, *ai;
	char host[256];
	const char *port;
	size_t hlen;
	char *end;
	long p;

	if (!spec || !*spec)
		return -EINVAL;
	if (spec[strspn(spec, "0123456789")] == '\0') {
		/* PORT alone: loopback, never every interface by accident. */
		strcpy(host, "127.0.0.1");
		port = spec;
	} else {
		const char *h = spec, *colon;

		if (*spec == '[') {
			colon = strchr(spec, ']');
			if (!colon || colon[1] != ':')
				return -EINVAL;
			h = spec + 1;
			hlen = (size_t)(colon - h);
			port = colon + 2;
		} else {
			colon = strchr(spec, ':');
			if (!colon || strchr(colon + 1, ':'))
				return -EINVAL;
			hlen = (size_t)(colon - spec);
			port = colon + 1;
		}
		if (hlen == 0 || hlen >= sizeof(host))
			return -EINVAL;
		memcpy(host, h, hlen);
		host[hlen] = '\0';
	}
	errno = 0;
	p = strtol(port, &end, 10);
	if (!*port || *end || errno || p < 0 || p > 65535 ||
	    port[strspn(port, "0123456789")])
		return -EINVAL;
	if (getaddrinfo(host, port, &hints, &ai))
		return -EINVAL;
	memcpy(ss, ai->ai_addr, ai->ai_addrlen);
	*len = ai->ai_addrlen;
	freeaddrinfo(ai);
	return 0;
}

static int ep_set(struct metrics *m, int op, int fd, uint32_t events,
		  uint64_t tag)
{
	struct epoll_event ev = { .events = events, .data.u64 = tag };

	return epoll_ctl(m->ep, op, fd, &ev) ? -errno : 0;
}

static uint64_t client_tag(const struct metrics *m, const struct client *c)
{
	return (uint64_t)c->gen << 32 | (uint64_t)(TAG_CLIENT + (c - m->c));
}

/* Deadlines are checked on a tick that runs only while clients exist. */
static void tick(struct metrics *m, bool on)
{
	struct itimerspec its = { 0 };

	if (on == m->ticking)
		return;
	if (on) {
		its.it_value.tv_nsec = TICK_MS * 1000000L;
		its.it_interval = its.it_value;
	}
	if (!timerfd_settime(m->tfd, 0, &its, NULL))
		m->ticking = on;
}

static void drop(struct metrics *m, struct client *c)
{
	close(c->fd);		/* also leaves the epoll set */
	free(c->out);
	c->out = NULL;
	c->fd = -1;
	c->state = C_FREE;
	c->gen++;
	m->nclients--;
	if (!m->nclients && !m->accept_paused)
		tick(m, false);
}

static void count(struct metrics *m, int code)
{
	for (size_t i = 0; i < NCODES; i++)
		if (codes[i] == code)
			m->responses[i]++;
}

static const char *status_text(int code)
{
	switch (code) {
	case 200:
		return "OK";
	case 400:
		return "Bad Request";
	case 404:
		return "Not Found";
	case 405:
		return "Method Not Allowed";
	case 414:
		return "URI Too Long";
	default:
		return "Request Header Fields Too Large";
	}
}

/* A label value: backslash, double quote and newline escaped. */
static void label(FILE *f, const char *s)
{
	for (; *s; s++) {
		if (*s == '\\' || *s == '"')
			fprintf(f, "\\%c", *s);
		else if (*s == '\n')
			fputs("\\n", f);
		else
			fputc(*s, f);
	}
}

static void family(FILE *f, const char *name, const char *type,
		   const char *help)
{
	fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

#define STAT(field) offsetof(struct pm_stats, field)

/* The node's counters (pm_node_stats), one family each. */
static const struct {
	const char *name, *type, *help;
	size_t off;
} node_families[] = {
	{ "pairmesh_peers_live", "gauge",
	  "Streams with a live connection.", STAT(peers_live) },
	{ "pairmesh_connections_open", "gauge",
	  "Sockets open to other nodes, handshakes included.",
	  STAT(conns_open) },
	{ "pairmesh_mesh_nodes", "gauge",
	  "Nodes of the mesh this node knows of, itself excluded.",
	  STAT(mesh_nodes) },
	{ "pairmesh_connections_accepted_total", "counter",
	  "Connections accepted.", STAT(accepted) },
	{ "pairmesh_connections_dialled_total", "counter",
	  "Connections dialled.", STAT(dialled) },
	{ "pairmesh_connections_rejected_busy_total", "counter",
	  "Inbound connections refused because every stream slot was taken.",
	  STAT(rejected_busy) },
	{ "pairmesh_connections_duplicate_closed_total", "counter",
	  "Connections closed by the pair rule (one per pair of nodes).",
	  STAT(duplicates_closed) },
	{ "pairmesh_protocol_errors_total", "counter",
	  "Connections closed for a malformed or unexpected frame.",
	  STAT(protocol_errors) },
	{ "pairmesh_timeouts_total", "counter",
	  "Handshakes and silent peers given up.", STAT(timeouts) },
	{ "pairmesh_auth_failures_total", "counter",
	  "Peers refused for a missing or wrong mesh key.",
	  STAT(auth_failures) },
	{ "pairmesh_reconnects_total", "counter",
	  "Dials made to resume a stream.", STAT(reconnects) },
	{ "pairmesh_streams_resumed_total", "counter",
	  "Streams carried over to a new connection, nothing lost.",
	  STAT(resumed) },
	{ "pairmesh_restarts_seen_total", "counter",
	  "Peers found to be new processes.", STAT(restarts_seen) },
	{ "pairmesh_messages_received_total", "counter",
	  "Messages delivered to this node.", STAT(msgs_in) },
	{ "pairmesh_messages_sent_total", "counter",
	  "Messages this node sent.", STAT(msgs_out) },
	{ "pairmesh_received_bytes_total", "counter",
	  "Payload bytes delivered to this node.", STAT(bytes_in) },
	{ "pairmesh_sent_bytes_total", "counter",
	  "Payload bytes this node sent.", STAT(bytes_out) },
	{ "pairmesh_relayed_messages_total", "counter",
	  "Routed and broadcast messages forwarded for other nodes.", STAT(relayed) },
	{ "pairmesh_unreachable_total", "counter",
	  "Messages reported back as unreachable.", STAT(unreachable) },
	{ "pairmesh_route_changes_total", "counter",
	  "Changes of the routing table.", STAT(route_changes) },
	{ "pairmesh_route_retransmits_total", "counter",
	  "Times unacknowledged routed messages were sent again.",
	  STAT(route_retransmits) },
};

#define PEER(field) offsetof(struct pm_peer_info, field)

/* Per peer: the counters of the direct stream, which restart at zero when
 * a new stream (session) to that node begins. */
static const struct {
	const char *name, *help;
	size_t off;
} peer_families[] = {
	{ "pairmesh_peer_messages_received_total",
	  "Messages received on the direct stream from the peer.",
	  PEER(msgs_in) },
	{ "pairmesh_peer_messages_sent_total",
	  "Messages sent on the direct stream to the peer.",
	  PEER(msgs_out) },
	{ "pairmesh_peer_received_bytes_total",
	  "Payload bytes received on the direct stream from the peer.",
	  PEER(bytes_in) },
	{ "pairmesh_peer_sent_bytes_total",
	  "Payload bytes sent on the direct stream to the peer.",
	  PEER(bytes_out) },
	{ "pairmesh_peer_relayed_messages_total",
	  "Messages forwarded to the peer as the next hop.", PEER(relayed) },
};

static uint64_t field(const void *base, size_t off)
{
	uint64_t v;

	memcpy(&v, (const char *)base + off, sizeof(v));
	return v;
}

struct pm_peer_info *metrics_mesh_peers(struct pm_node *n, size_t *count)
{
	size_t cap = (size_t)pm_mesh_peers(n, NULL, 0);

	for (;;) {
		struct pm_peer_info *v = malloc((cap ? cap : 1) * sizeof(*v));
		size_t got;

		if (!v)
			return NULL;
		got = (size_t)pm_mesh_peers(n, v, cap);
		if (got <= cap) {
			*count = got;
			return v;
		}
		/* The mesh grew in between: try again with room for it. */
		free(v);
		cap = got;
	}
}

static void peer_gauge(FILE *f, const struct pm_peer_info *p, size_t np,
		       const char *name, const char *help, int which)
{
	family(f, name, "gauge", help);
	for (size_t i = 0; i < np; i++) {
		uint64_t v = which == 0 ? p[i].direct :
			     which == 1 ? p[i].reachable : p[i].hops;

		if (which == 2 && !p[i].reachable)
			continue;	/* no hop count for no route */
		fprintf(f, "%s{peer=\"%016" PRIx64 "\"} %" PRIu64 "\n", name,
			p[i].id, v);
	}
}

static void render_peers(FILE *f, const struct pm_peer_info *p, size_t np)
{
	family(f, "pairmesh_peer_info", "gauge",
	       "One series per known node: its id and advertised address.");
	for (size_t i = 0; i < np; i++) {
		fprintf(f, "pairmesh_peer_info{peer=\"%016" PRIx64
			"\",addr=\"", p[i].id);
		label(f, p[i].addr);
		fputs("\"} 1\n", f);
	}
	peer_gauge(f, p, np, "pairmesh_peer_direct",
		   "1 while a live stream joins this node to the peer.", 0);
	peer_gauge(f, p, np, "pairmesh_peer_reachable",
		   "1 while the peer can be reached, directly or relayed.", 1);
	peer_gauge(f, p, np, "pairmesh_peer_hops",
		   "Hops on the shortest path to the peer (1: neighbour).", 2);
	for (size_t k = 0; k < sizeof(peer_families) /
	     sizeof(peer_families[0]); k++) {
		family(f, peer_families[k].name, "counter",
		       peer_families[k].help);
		for (size_t i = 0; i < np; i++)
			fprintf(f, "%s{peer=\"%016" PRIx64 "\"} %" PRIu64
				"\n", peer_families[k].name, p[i].id,
				field(&p[i], peer_families[k].off));
	}
}

static void render_self(FILE *f, const struct metrics *m)
{
	family(f, "pairmesh_metrics_requests_total", "counter",
	       "Requests this metrics endpoint answered, by status code.");
	for (size_t i = 0; i < NCODES; i++)
		fprintf(f, "pairmesh_metrics_requests_total{code=\"%d\"} %"
			PRIu64 "\n", codes[i], m->responses[i]);
	family(f, "pairmesh_metrics_clients_dropped_total", "counter",
	       "Metrics connections closed before an answer: too slow "
	       "(timeout) or pushed out by newer ones (evicted).");
	fprintf(f, "pairmesh_metrics_clients_dropped_total{reason=\"timeout\"}"
		" %" PRIu64 "\n", m->timeouts);
	fprintf(f, "pairmesh_metrics_clients_dropped_total{reason=\"evicted\"}"
		" %" PRIu64 "\n", m->evicted);
}

/* The scrape body. Returns 0 or -ENOMEM. */
static int render(struct metrics *m, char **body, size_t *len)
{
	struct pm_peer_info *peers;
	struct pm_stats st;
	size_t np = 0;
	FILE *f;

	peers = metrics_mesh_peers(m->n, &np);
	if (!peers)
		return -ENOMEM;
	f = open_memstream(body, len);
	if (!f) {
		free(peers);
		return -ENOMEM;
	}
	pm_node_stats(m->n, &st);
	family(f, "pairmesh_node_info", "gauge",
	       "Always 1: the node's id, I/O engine and version as labels.");
	fprintf(f, "pairmesh_node_info{id=\"%016" PRIx64 "\",engine=\"%s\","
		"version=\"%d.%d\"} 1\n", pm_node_id(m->n),
		pm_node_engine(m->n), PM_VERSION_MAJOR, PM_VERSION_MINOR);
	for (size_t i = 0; i < sizeof(node_families) /
	     sizeof(node_families[0]); i++) {
		family(f, node_families[i].name, node_families[i].type,
		       node_families[i].help);
		fprintf(f, "%s %" PRIu64 "\n", node_families[i].name,
			field(&st, node_families[i].off));
	}
	family(f, "pairmesh_dropped_frames_total", "counter",
	       "Relayed frames dropped: no route on, hop limit reached, or a "
	       "broadcast copy seen before.");
	fprintf(f, "pairmesh_dropped_frames_total{reason=\"no_route\"} %"
		PRIu64 "\n", st.dropped_no_route);
	fprintf(f, "pairmesh_dropped_frames_total{reason=\"hop_limit\"} %"
		PRIu64 "\n", st.dropped_hop_limit);
	fprintf(f, "pairmesh_dropped_frames_total{reason=\"duplicate\"} %"
		PRIu64 "\n", st.duplicates_dropped);
	render_peers(f, peers, np);
	render_self(f, m);
	if (m->extra)
		m->extra(f, m->user);
	free(peers);
	return fclose(f) ? -ENOMEM : 0;
}

/* Logs one answered request (debug level). */
static void log_request(const struct client *c, int code, size_t bytes)
{
	struct slog_line l;
	const char *req = c->req + strspn(c->req, "\r\n");
	size_t mlen = strcspn(req, " \r\n");
	const char *path = req + mlen + (req[mlen] == ' ');
	size_t plen = strcspn(path, " \r\n");

	if (!slog_enabled(PM_LOG_DEBUG))
		return;
	slog_begin(&l, PM_LOG_DEBUG, "metrics request");
	slog_str(&l, "client", c->from);
	slog_strn(&l, "method", req, mlen > 16 ? 16 : mlen);
	slog_strn(&l, "path", path, plen > 64 ? 64 : plen);
	slog_u64(&l, "status", (uint64_t)code);
	slog_u64(&l, "bytes", bytes);
	slog_end(&l);
}

static void send_some(struct metrics *m, struct client *c);

/* Builds the response for code (body only for 200 GET) and sends it. */
static void respond(struct metrics *m, struct client *c, int code, bool head)
{
	char *body = NULL, hdr[512], date[64];
	size_t blen = 0;
	int hlen;
	time_t t = time(NULL);
	struct tm tm;

	if (code == 200 && render(m, &body, &blen)) {
		drop(m, c);	/* out of memory: nothing better to say */
		return;
	}
	if (code != 200) {
		body = NULL;
		if (asprintf(&body, "%d %s\n", code, status_text(code)) < 0) {
			drop(m, c);
			return;
		}
		blen = strlen(body);
	}
	gmtime_r(&t, &tm);
	strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S GMT", &tm);
	hlen = snprintf(hdr, sizeof(hdr),
			"HTTP/1.1 %d %s\r\n"
			"Content-Type: %s\r\n"
			"Content-Length: %zu\r\n"
			"Date: %s\r\n"
			"%s"
			"Cache-Control: no-store\r\n"
			"Connection: close\r\n\r\n",
			code, status_text(code),
			code == 200 ? "text/plain; version=0.0.4; "
				      "charset=utf-8" :
				      "text/plain; charset=utf-8",
			blen, date,
			code == 405 ? "Allow: GET, HEAD\r\n" : "");
	if (head)
		blen = 0;
	c->out = malloc((size_t)hlen + blen);
	if (!c->out) {
		free(body);
		drop(m, c);
		return;
	}
	memcpy(c->out, hdr, (size_t)hlen);
	memcpy(c->out + hlen, body, blen);
	free(body);
	c->out_len = (size_t)hlen + blen;
	c->out_off = 0;
	count(m, code);
	log_request(c, code, c->out_len);
	c->state = C_WRITE;
	c->deadline_ms = now_ms() + WRITE_MS;
	send_some(m, c);
}

/* RFC 9110 token characters, for the method. */
static bool is_tchar(char ch)
{
	return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
	       (ch >= '0' && ch <= '9') || strchr("!#$%&'*+-.^_`|~", ch);
}

/*
 * The status for a complete request starting at req (the request line
 * ends at the first LF). *head is set for HEAD.
 */
static int route(const char *req, size_t len, bool *head)
{
	const char *eol = memchr(req, '\n', len);
	size_t llen = (size_t)(eol - req), mlen, tlen, plen;
	const char *target, *version;

	if (llen && req[llen - 1] == '\r')
		llen--;
	for (mlen = 0; mlen < llen && is_tchar(req[mlen]); mlen++)
		;
	if (!mlen || mlen == llen || req[mlen] != ' ')
		return 400;
	target = req + mlen + 1;
	for (tlen = 0; target + tlen < req + llen &&
	     (unsigned char)target[tlen] > ' ' && target[tlen] != 0x7f;
	     tlen++)
		;
	version = target + tlen;
	if (!tlen || *target != '/' || version + 9 != req + llen ||
	    *version != ' ' ||
	    (memcmp(version + 1, "HTTP/1.1", 8) &&
	     memcmp(version + 1, "HTTP/1.0", 8)))
		return 400;
	plen = strcspn(target, "? ");
	if (plen != 8 || memcmp(target, "/metrics", 8))
		return 404;
	*head = mlen == 4 && !memcmp(req, "HEAD", 4);
	if (*head || (mlen == 3 && !memcmp(req, "GET", 3)))
		return 200;
	return 405;
}

/* Offset of the request (after leading empty lines) once the headers are
 * complete (an empty line), else -1. */
static long request_start(const struct client *c)
{
	size_t s = 0;

	while (s < c->have && (c->req[s] == '\r' || c->req[s] == '\n'))
		s++;
	for (size_t i = s; i < c->have; i++) {
		if (c->req[i] != '\n')
			continue;
		if (i + 1 < c->have && c->req[i + 1] == '\n')
			return (long)s;
		if (i + 2 < c->have && c->req[i + 1] == '\r' &&
		    c->req[i + 2] == '\n')
			return (long)s;
	}
	return -1;
}

static void read_request(struct metrics *m, struct client *c)
{
	for (;;) {
		ssize_t r = recv(c->fd, c->req + c->have,
				 REQ_MAX - c->have, 0);
		bool head = false;
		long s;

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0 && errno == EAGAIN)
			return;
		if (r <= 0) {
			drop(m, c);	/* gone before asking anything */
			return;
		}
		c->have += (size_t)r;
		c->req[c->have] = '\0';
		s = request_start(c);
		if (s >= 0) {
			int code = route(c->req + s, c->have - (size_t)s,
					 &head);

			respond(m, c, code, head);
			return;
		}
		if (c->have == REQ_MAX) {
			respond(m, c, memchr(c->req, '\n', c->have) ? 431 :
				414, false);
			return;
		}
	}
}

/* Reads and drops what the client still sends, so that closing does not
 * reset the connection under a response it has not read yet. */
static void linger(struct metrics *m, struct client *c)
{
	char scratch[4096];

	for (;;) {
		ssize_t r = recv(c->fd, scratch, sizeof(scratch), 0);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0 && errno == EAGAIN)
			return;
		if (r <= 0) {
			drop(m, c);
			return;
		}
		c->have += (size_t)r;
		if (c->have > LINGER_MAX) {
			drop(m, c);
			return;
		}
	}
}

static void send_some(struct metrics *m, struct client *c)
{
	while (c->out_off < c->out_len) {
		ssize_t r = send(c->fd, c->out + c->out_off,
				 c->out_len - c->out_off, MSG_NOSIGNAL);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0 && errno == EAGAIN) {
			if (ep_set(m, EPOLL_CTL_MOD, c->fd, EPOLLOUT,
				   client_tag(m, c)))
				drop(m, c);
			return;
		}
		if (r < 0) {
			drop(m, c);
			return;
		}
		c->out_off += (size_t)r;
	}
	free(c->out);
	c->out = NULL;
	shutdown(c->fd, SHUT_WR);
	c->state = C_LINGER;
	c->have = 0;
	c->deadline_ms = now_ms() + LINGER_MS;
	if (ep_set(m, EPOLL_CTL_MOD, c->fd, EPOLLIN, client_tag(m, c))) {
		drop(m, c);
		return;
	}
	linger(m, c);
}

static struct client *free_slot(struct metrics *m)
{
	struct client *oldest = NULL;

	for (size_t i = 0; i < MAX_CLIENTS; i++) {
		struct client *c = &m->c[i];

		if (c->state == C_FREE)
			return c;
		if (!oldest || c->seq < oldest->seq)
			oldest = c;
	}
	/* Full: a flood of idle connections must not lock scrapers out
	 * for long, so the oldest goes. */
	if (oldest->state != C_LINGER)
		m->evicted++;
	drop(m, oldest);
	return oldest;
}

static void pause_accept(struct metrics *m)
{
	if (!m->accept_paused &&
	    !epoll_ctl(m->ep, EPOLL_CTL_DEL, m->lfd, NULL)) {
		m->accept_paused = true;
		tick(m, true);
	}
}

static void accept_some(struct metrics *m)
{
	for (int i = 0; i < ACCEPT_BATCH; i++) {
		struct sockaddr_storage ss;
		socklen_t len = sizeof(ss);
		int fd = accept4(m->lfd, (struct sockaddr *)&ss, &len,
				 SOCK_NONBLOCK | SOCK_CLOEXEC);
		struct client *c;

		if (fd < 0) {
			/* Out of descriptors: the listener would stay
			 * readable and spin the loop; retry per tick. */
			if (errno == EMFILE || errno == ENFILE ||
			    errno == ENOBUFS || errno == ENOMEM)
				pause_accept(m);
			return;
		}
		c = free_slot(m);
		c->fd = fd;
		c->state = C_READ;
		c->seq = ++m->seq;
		c->have = 0;
		c->req[0] = '\0';
		c->deadline_ms = now_ms() + READ_MS;
		if (fmt_addr(&ss, c->from, sizeof(c->from)) < 0)
			strcpy(c->from, "?");
		m->nclients++;
		if (ep_set(m, EPOLL_CTL_ADD, fd, EPOLLIN, client_tag(m, c))) {
			drop(m, c);
			continue;
		}
		tick(m, true);
		read_request(m, c);
	}
}

static void on_tick(struct metrics *m)
{
	uint64_t ticks, now = now_ms();

	if (read(m->tfd, &ticks, sizeof(ticks)) < 0 && errno != EAGAIN)
		return;
	if (m->accept_paused &&
	    !ep_set(m, EPOLL_CTL_ADD, m->lfd, EPOLLIN, TAG_LISTEN))
		m->accept_paused = false;
	for (size_t i = 0; i < MAX_CLIENTS; i++) {
		struct client *c = &m->c[i];

		if (c->state == C_FREE || now < c->deadline_ms)
			continue;
		if (c->state != C_LINGER)
			m->timeouts++;
		drop(m, c);
	}
	if (!m->nclients && !m->accept_paused)
		tick(m, false);
}

static void on_client(struct metrics *m, uint64_t tag)
{
	uint32_t slot = (uint32_t)tag - TAG_CLIENT;
	struct client *c;

	if (slot >= MAX_CLIENTS)
		return;
	c = &m->c[slot];
	if (c->state == C_FREE || c->gen != (uint32_t)(tag >> 32))
		return;		/* an event for the slot's last user */
	if (c->state == C_READ)
		read_request(m, c);
	else if (c->state == C_WRITE)
		send_some(m, c);
	else
		linger(m, c);
}

/* The node's loop found the epoll set readable. */
static void on_ready(struct pm_node *n, int fd, void *user)
{
	struct metrics *m = user;
	struct epoll_event evs[MAX_CLIENTS + 2];
	int k = epoll_wait(m->ep, evs, MAX_CLIENTS + 2, 0);

	for (int i = 0; i < k; i++) {
		uint64_t tag = evs[i].data.u64;

		if (tag == TAG_LISTEN)
			accept_some(m);
		else if (tag == TAG_TIMER)
			on_tick(m);
		else
			on_client(m, tag);
	}
}

int metrics_start(struct metrics **out, struct pm_node *n, const char *spec,
		  metrics_extra_fn extra, void *user)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	struct metrics *m;
	int one = 1, r;

	r = metrics_parse(spec, &ss, &len);
	if (r)
		return r;
	m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	m->n = n;
	m->extra = extra;
	m->user = user;
	m->ep = m->tfd = -1;
	for (size_t i = 0; i < MAX_CLIENTS; i++)
		m->c[i].fd = -1;
	m->lfd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK |
			SOCK_CLOEXEC, 0);
	if (m->lfd < 0)
		goto out_errno;
	/* A restarted node rebinds while old connections sit in TIME_WAIT. */
	setsockopt(m->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(m->lfd, (struct sockaddr *)&ss, len) ||
	    listen(m->lfd, MAX_CLIENTS))
		goto out_errno;
	len = sizeof(m->addr);
	if (getsockname(m->lfd, (struct sockaddr *)&m->addr, &len))
		goto out_errno;
	m->ep = epoll_create1(EPOLL_CLOEXEC);
	m->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	if (m->ep < 0 || m->tfd < 0)
		goto out_errno;
	r = ep_set(m, EPOLL_CTL_ADD, m->lfd, EPOLLIN, TAG_LISTEN);
	if (!r)
		r = ep_set(m, EPOLL_CTL_ADD, m->tfd, EPOLLIN, TAG_TIMER);
	if (!r)
		r = pm_watch_fd(n, m->ep, on_ready, m);
	if (r)
		goto out_close;
	*out = m;
	return 0;

out_errno:
	r = -errno;
out_close:
	if (m->ep >= 0)
		close(m->ep);
	if (m->tfd >= 0)
		close(m->tfd);
	if (m->lfd >= 0)
		close(m->lfd);
	free(m);
	return r;
}

int metrics_addr(const struct metrics *m, char *buf, size_t len)
{
	return fmt_addr(&m->addr, buf, len);
}

bool metrics_loopback(const struct metrics *m)
{
	if (m->addr.ss_family == AF_INET) {
		const struct sockaddr_in *a = (const void *)&m->addr;

		return (ntohl(a->sin_addr.s_addr) >> 24) == 127;
	}
	const struct sockaddr_in6 *a = (const void *)&m->addr;

	if (IN6_IS_ADDR_V4MAPPED(&a->sin6_addr))
		return a->sin6_addr.s6_addr[12] == 127;
	return IN6_IS_ADDR_LOOPBACK(&a->sin6_addr);
}

void metrics_stop(struct metrics *m)
{
	if (!m)
		return;
	pm_watch_fd(m->n, m->ep, NULL, NULL);
	for (size_t i = 0; i < MAX_CLIENTS; i++)
		if (m->c[i].state != C_FREE)
			drop(m, &m->c[i]);
	close(m->ep);
	close(m->tfd);
	close(m->lfd);
	free(m);
}
