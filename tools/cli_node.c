/* SPDX-License-Identifier: MIT */
/*
 * `pairmesh node`: runs one node. Lines on stdin ("TARGET TEXT") are sent,
 * messages received are printed on stdout, one per line. Everything runs in
 * the node's own loop: stdin, a signalfd and the --stats timerfd are
 * watched with pm_watch_fd().
 */
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "pairmesh.h"
#include "cli.h"

#define LINE_CAP	(1u << 20)	/* stdin line buffer, newline too */
#define TARGET_SHOW	64		/* bytes of a target shown in errors */

/* A stream this tool dialled (or named by address), for async errors. */
struct dial {
	struct pm_stream s;
	char *target;
};

struct cli {
	struct pm_node *n;
	int sfd;		/* signalfd: SIGINT, SIGTERM, SIGUSR1 */
	int tfd;		/* --stats timerfd, or -1 */
	bool pollable;		/* stdin can be watched (not a regular file) */
	bool watching;		/* the stdin watch is installed */
	bool blocked;		/* the first buffered line waits for space */
	bool eof;
	bool discarding;	/* dropping the rest of an over-long line */
	bool quit;
	bool stopping;		/* inside pm_node_shutdown */
	char *buf;
	size_t len;
	struct dial *dials;
	size_t ndials;
	size_t dials_cap;
};

void node_usage(FILE *f)
{
	fprintf(f,
"Usage: %s node [--listen HOST:PORT] [--connect HOST:PORT]... [--id HEX16]\n"
"                     [--engine auto|io_uring|epoll] [--max-peers N]\n"
"                     [--no-auto-connect] [--max-hops N] [--stats SECONDS]\n"
"                     [--key-file FILE] [--keepalive MS] [--dead-after MS]\n"
"                     [--resume MS]\n"
"\n"
"Runs one node of the mesh until stdin ends or SIGINT/SIGTERM arrives.\n"
"Nodes tell each other whom they are connected to: a node learns the whole\n"
"mesh from any one member, dials the members it does not know yet, and\n"
"relays for the others.\n"
"\n"
"Options:\n"
"  -l, --listen HOST:PORT   address to listen on; port 0 picks a free port\n"
"                           (default 127.0.0.1:0)\n"
"  -c, --connect HOST:PORT  dial this node at start (repeatable)\n"
"      --id HEX16           node id, 1 to 16 hex digits, not 0\n"
"                           (default: random)\n"
"  -e, --engine NAME        auto (default; honours PAIRMESH_ENGINE), io_uring\n"
"                           or epoll\n"
"      --max-peers N        streams the node can hold (default 1024)\n"
"      --no-auto-connect    do not dial the members learned from others;\n"
"                           reach them through relays instead\n"
"      --max-hops N         hop limit of the messages this node sends by id\n"
"                           or to '*', 1 to 255 (default 16)\n"
"      --key-file FILE      mesh key (64 hex digits or 32 raw bytes): only\n"
"                           nodes with the same key connect (mutual\n"
"                           challenge-response); others are refused\n"
"      --keepalive MS       PING a connection silent this long (default\n"
"                           1000; 0 = off)\n"
"      --dead-after MS      a connection silent this long is lost (default\n"
"                           5000; 0 = off)\n"
"      --resume MS          a lost connection is redialled and its stream\n"
"                           resumed, nothing lost, for this long (default\n"
"                           5000; 0 = the stream ends at once)\n"
"      --stats SECONDS      print a JSON stats line on stderr every SECONDS\n"
"                           (decimals allowed); SIGUSR1 prints one anytime\n"
"  -h, --help               this text\n"
"\n"
"Input (stdin), one message per line:  TARGET TEXT\n"
"  TARGET is HOST:PORT (connects if no stream to that node exists yet),\n"
"  a 16-hex-digit node id (any member of the mesh: on the direct stream if\n"
"  there is one, else relayed along the shortest path), '*' (every other\n"
"  member, each gets it once) or 'self'. TEXT is the rest of the line\n"
"  after one space, possibly empty. Empty lines are ignored. Lines longer\n"
"  than %u bytes are discarded.\n"
"\n"
"Output (stdout), one line per message received, flushed per line:\n"
"  SENDER_ID TEXT      (sender id: 16 lowercase hex digits, the origin of\n"
"                       relayed and '*' messages too; control bytes in\n"
"                       TEXT are printed as \\xHH)\n"
"\n"
"Stderr:\n"
"  ready id=HEX16 listen=HOST:PORT engine=io_uring|epoll\n"
"                      once, when the node listens (port is the real one)\n"
"  error: TARGET: WHY  a line could not be sent (bad address, 'no route' to\n"
"                      an id, '*' with 'no peers', refused or failed\n"
"                      connect, message too big); the node keeps running\n"
"  error: ID: unreachable\n"
"                      a relay found no way on to ID (or the hop limit)\n"
"  closed: ID WHY      a live stream closed (peer shut down, reset, ...)\n"
"  {\"ts\":...}         --stats and SIGUSR1: one JSON object per line with\n"
"                      ts (unix seconds), id, engine, peers (one object per\n"
"                      known member: id, addr, direct, reachable, hops, via\n"
"                      (null when unreachable), msgs_in, msgs_out,\n"
"                      bytes_in, bytes_out, relayed), relayed, dropped\n"
"                      {no_route, hop_limit, duplicate}, unreachable,\n"
"                      route_changes, msgs_in, msgs_out\n"
"  error: WHY          startup failure (exit status 1)\n"
"\n"
"Exit status: 0 after EOF on stdin, SIGINT or SIGTERM (queued messages are\n"
"sent and each stream closed, within 5 s); 1 when the node cannot start\n"
"(address in use, io_uring refused, ...); 2 for bad arguments.\n",
		prog, LINE_CAP - 1);
}

static int bad_usage(const char *fmt, const char *arg)
{
	fprintf(stderr, "%s node: ", prog);
	fprintf(stderr, fmt, arg);
	fprintf(stderr, "\n\n");
	node_usage(stderr);
	return 2;
}

/* strerror() with a lower-case first letter, to read well after "x: ". */
static const char *why(int err)
{
	static char buf[128];

	switch (err) {
	case -EINVAL:
		return "invalid address";
	case -ENOENT:
		return "no live stream to that node id";
	case -EHOSTUNREACH:
		return "no route";
	case -EMSGSIZE:
		return "message too big";
	case -ENOSPC:
		return "no free stream slot (--max-peers)";
	case -EPIPE:
	case -ESTALE:
		return "stream is closed";
	}
	snprintf(buf, sizeof(buf), "%s", strerror(-err));
	buf[0] = (char)tolower((unsigned char)buf[0]);
	return buf;
}

static void send_error(const char *target, size_t tlen, int err)
{
	if (tlen > TARGET_SHOW)
		tlen = TARGET_SHOW;
	fprintf(stderr, "error: %.*s: %s\n", (int)tlen, target, why(err));
}

static struct dial *dial_find(struct cli *c, struct pm_stream s)
{
	for (size_t i = 0; i < c->ndials; i++)
		if (c->dials[i].s.h == s.h)
			return &c->dials[i];
	return NULL;
}

/* Remembers which target a stream was named by; a failure is reported
 * anyway, so running out of memory here only loses the name. */
static void dial_add(struct cli *c, struct pm_stream s, const char *target,
		     size_t tlen)
{
	if (dial_find(c, s))
		return;
	if (c->ndials == c->dials_cap) {
		size_t cap = c->dials_cap ? 2 * c->dials_cap : 16;
		struct dial *d = realloc(c->dials, cap * sizeof(*d));

		if (!d)
			return;
		c->dials = d;
		c->dials_cap = cap;
	}
	if (tlen > TARGET_SHOW)
		tlen = TARGET_SHOW;
	char *t = strndup(target, tlen);

	if (!t)
		return;
	c->dials[c->ndials++] = (struct dial){ .s = s, .target = t };
}

static void dial_del(struct cli *c, struct dial *d)
{
	free(d->target);
	*d = c->dials[--c->ndials];
}

static bool is_node_id(const char *s, size_t len, uint64_t *id)
{
	uint64_t v = 0;

	if (len != 16)
		return false;
	for (size_t i = 0; i < len; i++) {
		int ch = tolower((unsigned char)s[i]);

		if (!isxdigit(ch))
			return false;
		v = v << 4 | (uint64_t)(isdigit(ch) ? ch - '0' : ch - 'a' + 10);
	}
	*id = v;
	return true;
}

/*
 * Sends one line. Returns -EAGAIN when the TX ring is full (the line is
 * kept and retried), else 0: errors are reported here.
 */
static int send_line(struct cli *c, char *line, size_t len)
{
	char *sp = memchr(line, ' ', len);
	size_t tlen = sp ? (size_t)(sp - line) : len;
	const char *text = sp ? sp + 1 : line + len;
	size_t text_len = sp ? len - tlen - 1 : 0;
	struct pm_stream s;
	uint64_t id;
	int r;

	if (len == 0)
		return 0;
	if (tlen == 4 && !memcmp(line, "self", 4)) {
		r = pm_self(c->n, &s);
	} else if (tlen == 1 && line[0] == '*') {
		r = pm_broadcast(c->n, text, text_len);
		if (r == 0)
			fprintf(stderr, "error: *: no peers\n");
		goto out;
	} else if (is_node_id(line, tlen, &id)) {
		/* Direct when there is a stream, else through relays. */
		r = pm_send_to(c->n, id, text, text_len);
		goto out;
	} else {
		char saved = line[tlen];

		/* The line lives in our buffer: terminate the target there. */
		line[tlen] = '\0';
		r = pm_connect(c->n, line, &s);
		line[tlen] = saved;
		if (!r)
			dial_add(c, s, line, tlen);
	}
	if (!r)
		r = pm_send(c->n, s, text, text_len);
out:
	if (r == -EAGAIN)
		return r;
	if (r < 0)
		send_error(line, tlen, r);
	return 0;
}

static void watch_stdin(struct cli *c, bool on);

/*
 * Sends every complete line in the buffer, stopping at the first one that
 * meets a full TX ring. At EOF the last, unterminated line counts too.
 */
static void process_lines(struct cli *c)
{
	size_t start = 0;

	while (start < c->len) {
		char *line = c->buf + start;
		char *nl = memchr(line, '\n', c->len - start);
		size_t len;

		if (c->discarding) {
			if (!nl) {
				start = c->len;
				break;
			}
			c->discarding = false;
			start += (size_t)(nl - line) + 1;
			continue;
		}
		if (!nl && !c->eof)
			break;
		len = nl ? (size_t)(nl - line) : c->len - start;
		if (send_line(c, line, len) == -EAGAIN) {
			c->blocked = true;
			break;
		}
		start += len + (nl ? 1 : 0);
	}
	memmove(c->buf, c->buf + start, c->len - start);
	c->len -= start;
	/* Full and not waiting for TX room: one line fills it all. */
	if (!c->blocked && c->len == LINE_CAP) {
		char *sp = memchr(c->buf, ' ', c->len);
		size_t tlen = sp ? (size_t)(sp - c->buf) : c->len;

		if (tlen > TARGET_SHOW)
			tlen = TARGET_SHOW;
		fprintf(stderr, "error: %.*s: line longer than %u bytes, "
			"discarded\n", (int)tlen, c->buf, LINE_CAP - 1);
		c->len = 0;
		c->discarding = true;
	}
	if (c->eof && !c->blocked)
		c->quit = true;
	watch_stdin(c, !c->blocked && !c->eof);
}

static bool readable_now(int fd)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };

	return poll(&p, 1, 0) > 0;
}

/*
 * One read per readiness. stdin is not switched to O_NONBLOCK: that flag
 * belongs to the open file, which a terminal shares with the shell and with
 * our stdout. A zero-timeout poll() first makes the read non-blocking.
 */
static void read_stdin(struct cli *c)
{
	ssize_t r;

	if (c->blocked || c->eof)
		return;
	if (c->pollable && !readable_now(STDIN_FILENO))
		return;
	r = read(STDIN_FILENO, c->buf + c->len, LINE_CAP - c->len);
	if (r < 0) {
		if (errno == EINTR || errno == EAGAIN)
			return;
		fprintf(stderr, "error: stdin: %s\n", why(-errno));
		r = 0;
	}
	if (r == 0)
		c->eof = true;
	c->len += (size_t)r;
	process_lines(c);
}

static void on_stdin(struct pm_node *n, int fd, void *user)
{
	read_stdin(user);
}

static void watch_stdin(struct cli *c, bool on)
{
	if (!c->pollable || on == c->watching)
		return;
	if (pm_watch_fd(c->n, STDIN_FILENO, on ? on_stdin : NULL, c) == 0)
		c->watching = on;
	else if (on)
		fprintf(stderr, "error: cannot watch stdin\n");
}

/* epoll refuses regular files and /dev/null: those are read in the loop. */
static bool fd_pollable(int fd)
{
	struct epoll_event ev = { .events = EPOLLIN };
	int ep = epoll_create1(EPOLL_CLOEXEC);
	bool ok;

	if (ep < 0)
		return true;
	ok = epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) == 0;
	close(ep);
	return ok;
}

static void json_str(FILE *f, const char *s)
{
	fputc('"', f);
	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;

		if (ch == '"' || ch == '\\')
			fprintf(f, "\\%c", ch);
		else if (ch < 0x20)
			fprintf(f, "\\u%04x", ch);
		else
			fputc(ch, f);
	}
	fputc('"', f);
}

/* pm_mesh_peers() into a malloc'ed array; NULL when out of memory. */
static struct pm_peer_info *mesh_peers(struct pm_node *n, size_t *count)
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

static void json_peer(FILE *f, const struct pm_peer_info *p)
{
	fprintf(f, "{\"id\":\"%016" PRIx64 "\",\"addr\":", p->id);
	json_str(f, p->addr);
	fprintf(f, ",\"direct\":%s,\"reachable\":%s,\"hops\":%" PRIu32
		",\"via\":", p->direct ? "true" : "false",
		p->reachable ? "true" : "false", p->hops);
	if (p->reachable)
		fprintf(f, "\"%016" PRIx64 "\"", p->via);
	else
		fputs("null", f);
	fprintf(f, ",\"msgs_in\":%" PRIu64 ",\"msgs_out\":%" PRIu64
		",\"bytes_in\":%" PRIu64 ",\"bytes_out\":%" PRIu64
		",\"relayed\":%" PRIu64 "}", p->msgs_in, p->msgs_out,
		p->bytes_in, p->bytes_out, p->relayed);
}

/*
 * One JSON object, one line on stderr, written with one write() so that a
 * reader never sees half of it.
 */
static void print_stats(struct cli *c)
{
	struct pm_peer_info *peers;
	struct pm_stats st;
	struct timespec ts;
	size_t npeers = 0, len = 0;
	char *text = NULL;
	FILE *f;

	peers = mesh_peers(c->n, &npeers);
	f = open_memstream(&text, &len);
	if (!peers || !f) {
		fprintf(stderr, "error: stats: out of memory\n");
		goto out;
	}
	pm_node_stats(c->n, &st);
	clock_gettime(CLOCK_REALTIME, &ts);
	fprintf(f, "{\"ts\":%lld.%06ld,\"id\":\"%016" PRIx64 "\","
		"\"engine\":", (long long)ts.tv_sec, ts.tv_nsec / 1000,
		pm_node_id(c->n));
	json_str(f, pm_node_engine(c->n));
	fputs(",\"peers\":[", f);
	for (size_t i = 0; i < npeers; i++) {
		if (i)
			fputc(',', f);
		json_peer(f, &peers[i]);
	}
	fprintf(f, "],\"relayed\":%" PRIu64 ",\"dropped\":{\"no_route\":%"
		PRIu64 ",\"hop_limit\":%" PRIu64 ",\"duplicate\":%" PRIu64
		"},\"unreachable\":%" PRIu64 ",\"route_changes\":%" PRIu64
		",\"msgs_in\":%" PRIu64 ",\"msgs_out\":%" PRIu64 "}\n",
		st.relayed, st.dropped_no_route, st.dropped_hop_limit,
		st.duplicates_dropped, st.unreachable, st.route_changes,
		st.msgs_in, st.msgs_out);
	if (fclose(f)) {
		f = NULL;
		fprintf(stderr, "error: stats: out of memory\n");
		goto out;
	}
	f = NULL;
	for (size_t off = 0; off < len;) {
		ssize_t r = write(STDERR_FILENO, text + off, len - off);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		off += (size_t)r;
	}
out:
	if (f)
		fclose(f);
	free(text);
	free(peers);
}

static void on_signal(struct pm_node *n, int fd, void *user)
{
	struct cli *c = user;
	struct signalfd_siginfo si;

	while (read(fd, &si, sizeof(si)) == sizeof(si)) {
		if (si.ssi_signo == SIGUSR1)
			print_stats(c);
		else
			c->quit = true;
	}
}

static void on_timer(struct pm_node *n, int fd, void *user)
{
	uint64_t ticks;

	/* Ticks missed while the loop was busy make one line, not many. */
	if (read(fd, &ticks, sizeof(ticks)) == sizeof(ticks))
		print_stats(user);
}

static int on_message(struct pm_node *n, const struct pm_message *m,
		      void *user)
{
	const unsigned char *p = m->data;

	printf("%016" PRIx64 " ", m->peer_id);
	for (size_t i = 0; i < m->len; i++) {
		/* One message, one line: escape what would break that. */
		if (p[i] < 0x20 || p[i] == 0x7f)
			printf("\\x%02x", p[i]);
		else
			putchar(p[i]);
	}
	putchar('\n');
	fflush(stdout);
	return 0;
}

static void on_closed(struct cli *c, const struct pm_event *ev)
{
	struct dial *d = dial_find(c, ev->stream);
	const char *what;

	if (ev->error)
		what = why(ev->error);
	else if (ev->reason != PM_CLOSE_NONE)
		what = pm_close_reason_str(ev->reason);
	else
		what = "connection closed by peer";
	/* Our own shutdown closes everything: only losses are news. */
	if (c->stopping && !ev->unsent)
		what = NULL;
	if (what && d && (!ev->peer_id || ev->unsent)) {
		fprintf(stderr, "error: %s: %s", d->target, what);
		if (ev->unsent)
			fprintf(stderr, ", %" PRIu64 " message%s not sent",
				ev->unsent, ev->unsent == 1 ? "" : "s");
		fputc('\n', stderr);
	} else if (what) {
		fprintf(stderr, "closed: %016" PRIx64 " %s", ev->peer_id, what);
		if (ev->unsent)
			fprintf(stderr, ", %" PRIu64 " message%s not sent",
				ev->unsent, ev->unsent == 1 ? "" : "s");
		fputc('\n', stderr);
	}
	if (d)
		dial_del(c, d);
}

static void on_event(struct pm_node *n, const struct pm_event *ev, void *user)
{
	struct cli *c = user;

	switch (ev->type) {
	case PM_EV_CLOSED:
		on_closed(c, ev);
		break;
	case PM_EV_WRITABLE:
		break;
	case PM_EV_UNREACHABLE:
		fprintf(stderr, "error: %016" PRIx64 ": unreachable\n",
			ev->peer_id);
		return;
	default:
		return;
	}
	/* Room freed, or the stream we waited on is gone: retry. */
	if (c->blocked && !c->stopping) {
		c->blocked = false;
		process_lines(c);
	}
}

static int parse_u64(const char *s, int base, uint64_t max, uint64_t *out)
{
	char *end;
	unsigned long long v;

	if (!*s || *s == '-' || *s == '+' || isspace((unsigned char)*s))
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, base);
	if (errno || *end || v > max)
		return -EINVAL;
	*out = v;
	return 0;
}

struct args {
	struct pm_config cfg;
	char **connect;
	int nconnect;
	struct timespec stats;	/* --stats period; zero: none */
	uint8_t key[32];	/* --key-file */
};

/* SECONDS for --stats: positive, decimals allowed, at most a day. */
static int parse_period(const char *s, struct timespec *out)
{
	char *end;
	double v;

	if (!*s || isspace((unsigned char)*s))
		return -EINVAL;
	errno = 0;
	v = strtod(s, &end);
	if (errno || *end || !isfinite(v) || v < 0.001 || v > 86400)
		return -EINVAL;
	out->tv_sec = (time_t)v;
	out->tv_nsec = (long)((v - (double)out->tv_sec) * 1e9);
	return 0;
}

static int parse_args(int argc, char *argv[], struct args *a)
{
	static const struct option opts[] = {
		{ "listen", required_argument, NULL, 'l' },
		{ "connect", required_argument, NULL, 'c' },
		{ "id", required_argument, NULL, 'i' },
		{ "engine", required_argument, NULL, 'e' },
		{ "max-peers", required_argument, NULL, 'm' },
		{ "no-auto-connect", no_argument, NULL, 'A' },
		{ "max-hops", required_argument, NULL, 'H' },
		{ "stats", required_argument, NULL, 's' },
		{ "key-file", required_argument, NULL, 'K' },
		{ "keepalive", required_argument, NULL, 'k' },
		{ "dead-after", required_argument, NULL, 'd' },
		{ "resume", required_argument, NULL, 'r' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 }
	};
	uint64_t v;
	int o;

	a->connect = calloc((size_t)argc, sizeof(*a->connect));
	if (!a->connect)
		return -ENOMEM;
	opterr = 0;
	optind = 1;
	while ((o = getopt_long(argc, argv, "+l:c:e:h", opts, NULL)) != -1) {
		switch (o) {
		case 'l':
			a->cfg.listen = optarg;
			break;
		case 'c':
			a->connect[a->nconnect++] = optarg;
			break;
		case 'i':
			if (strlen(optarg) > 16 || parse_u64(optarg, 16,
							     UINT64_MAX, &v) ||
			    !v)
				return bad_usage("--id '%s': want 1 to 16 hex "
						 "digits, not all zero",
						 optarg);
			a->cfg.node_id = v;
			break;
		case 'e':
			if (!strcmp(optarg, "auto"))
				a->cfg.engine = PM_ENGINE_AUTO;
			else if (!strcmp(optarg, "io_uring"))
				a->cfg.engine = PM_ENGINE_IO_URING;
			else if (!strcmp(optarg, "epoll"))
				a->cfg.engine = PM_ENGINE_EPOLL;
			else
				return bad_usage("--engine '%s': want auto, "
						 "io_uring or epoll", optarg);
			break;
		case 'm':
			if (parse_u64(optarg, 10, UINT32_MAX, &v) || !v)
				return bad_usage("--max-peers '%s': want a "
						 "positive number", optarg);
			a->cfg.max_peers = (uint32_t)v;
			break;
		case 'A':
			a->cfg.no_auto_connect = true;
			break;
		case 'H':
			if (parse_u64(optarg, 10, UINT8_MAX, &v) || !v)
				return bad_usage("--max-hops '%s': want 1 to "
						 "255", optarg);
			a->cfg.max_hops = (uint8_t)v;
			break;
		case 'K': {
			int k = pm_key_load(optarg, a->key);

			if (k) {
				fprintf(stderr, "error: --key-file '%s': %s\n",
					optarg, k == -EINVAL ? "want 64 hex "
					"digits or 32 bytes" : strerror(-k));
				return 2;
			}
			a->cfg.key = a->key;
			a->cfg.key_len = sizeof(a->key);
			break;
		}
		case 'k':
		case 'd':
		case 'r':
			if (parse_u64(optarg, 10, 3600000, &v))
				return bad_usage("--keepalive, --dead-after, "
						 "--resume '%s': want "
						 "milliseconds, 0 to 3600000",
						 optarg);
			if (o == 'k')
				a->cfg.keepalive_ms = (uint32_t)v;
			else if (o == 'd')
				a->cfg.dead_ms = (uint32_t)v;
			else
				a->cfg.resume_ms = (uint32_t)v;
			break;
		case 's':
			if (parse_period(optarg, &a->stats))
				return bad_usage("--stats '%s': want seconds, "
						 "0.001 to 86400", optarg);
			break;
		case 'h':
			node_usage(stdout);
			return 1;
		case '?':
			return bad_usage("bad option or missing value: '%s'",
					 argv[optind - 1]);
		default:
			return bad_usage("bad option '%s'", argv[optind - 1]);
		}
	}
	if (optind < argc)
		return bad_usage("unexpected argument '%s'", argv[optind]);
	return 0;
}

static int start_signals(struct cli *c)
{
	sigset_t mask;

	sigemptyset(&mask);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGUSR1);
	/* Block first: a signal now waits in the signalfd, never kills. */
	if (sigprocmask(SIG_BLOCK, &mask, NULL))
		return -errno;
	c->sfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
	if (c->sfd < 0)
		return -errno;
	return pm_watch_fd(c->n, c->sfd, on_signal, c);
}

/* The --stats timer: a periodic timerfd read in the node's loop. */
static int start_stats(struct cli *c, const struct args *a)
{
	struct itimerspec its = { .it_value = a->stats,
				  .it_interval = a->stats };

	if (!a->stats.tv_sec && !a->stats.tv_nsec)
		return 0;
	c->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	if (c->tfd < 0)
		return -errno;
	if (timerfd_settime(c->tfd, 0, &its, NULL))
		return -errno;
	return pm_watch_fd(c->n, c->tfd, on_timer, c);
}

/* The --connect addresses. -EINVAL is a usage error, others are not. */
static int dial_all(struct cli *c, const struct args *a)
{
	struct pm_stream s;

	for (int i = 0; i < a->nconnect; i++) {
		int r = pm_connect(c->n, a->connect[i], &s);

		if (r == -EINVAL)
			return bad_usage("--connect '%s': want HOST:PORT",
					 a->connect[i]);
		if (r) {
			send_error(a->connect[i], strlen(a->connect[i]), r);
			return 1;
		}
		dial_add(c, s, a->connect[i], strlen(a->connect[i]));
	}
	return 0;
}

static int run(struct cli *c)
{
	while (!c->quit) {
		/* Unwatchable stdin never blocks: read it between turns. */
		bool poll_stdin = !c->pollable && !c->blocked && !c->eof;
		int r = pm_node_run(c->n, poll_stdin ? 0 : -1);

		if (r < 0 && r != -EINTR) {
			fprintf(stderr, "error: node loop: %s\n", why(r));
			return 1;
		}
		if (poll_stdin && !c->quit)
			read_stdin(c);
	}
	return 0;
}

/*
 * Messages to self are delivered by the loop, and pm_node_shutdown() only
 * runs it while sockets are open: deliver them first.
 */
static void drain_self(struct cli *c)
{
	struct pm_stream s;

	if (pm_self(c->n, &s))
		return;
	for (int i = 0; i < 1000 && pm_stream_queued(c->n, s) > 0; i++)
		if (pm_node_run(c->n, 0) < 0)
			break;
}

static void start_error(const struct args *a, int r)
{
	switch (r) {
	case -EADDRINUSE:
		fprintf(stderr, "error: listen %s: address in use\n",
			a->cfg.listen);
		break;
	case -EPROTONOSUPPORT:
		fprintf(stderr, "error: io_uring refused by the kernel "
			"(try --engine epoll)\n");
		break;
	default:
		fprintf(stderr, "error: cannot start the node: %s\n",
			strerror(-r));
	}
}

int node_main(int argc, char *argv[])
{
	struct cli c = { .sfd = -1, .tfd = -1 };
	struct args a = { 0 };
	char addr[128];
	int r, status;

	pm_config_init(&a.cfg);
	r = parse_args(argc, argv, &a);
	if (r) {
		free(a.connect);
		return r == 1 ? 0 : r < 0 ? 1 : r;
	}
	c.buf = malloc(LINE_CAP);
	if (!c.buf) {
		fprintf(stderr, "error: out of memory\n");
		free(a.connect);
		return 1;
	}
	signal(SIGPIPE, SIG_IGN);
	a.cfg.on_message = on_message;
	a.cfg.on_event = on_event;
	a.cfg.user = &c;
	r = pm_node_create(&c.n, &a.cfg);
	if (r == -EINVAL) {
		status = bad_usage("invalid configuration (--listen '%s' "
				   "or --max-peers)", a.cfg.listen);
		goto out_free;
	}
	if (r) {
		start_error(&a, r);
		status = 1;
		goto out_free;
	}
	r = start_signals(&c);
	if (r) {
		fprintf(stderr, "error: signals: %s\n", strerror(-r));
		status = 1;
		goto out_destroy;
	}
	r = start_stats(&c, &a);
	if (r) {
		fprintf(stderr, "error: stats timer: %s\n", strerror(-r));
		status = 1;
		goto out_destroy;
	}
	status = dial_all(&c, &a);
	if (status)
		goto out_destroy;
	c.pollable = fd_pollable(STDIN_FILENO);
	watch_stdin(&c, true);
	if (pm_node_listen_addr(c.n, addr, sizeof(addr)) < 0)
		snprintf(addr, sizeof(addr), "?");
	fprintf(stderr, "ready id=%016" PRIx64 " listen=%s engine=%s\n",
		pm_node_id(c.n), addr, pm_node_engine(c.n));
	fflush(stderr);

	status = run(&c);
	/* No more input during the shutdown: it only flushes and closes. */
	watch_stdin(&c, false);
	pm_watch_fd(c.n, c.sfd, NULL, NULL);
	if (c.tfd >= 0)
		pm_watch_fd(c.n, c.tfd, NULL, NULL);
	c.stopping = true;
	drain_self(&c);
	if (pm_node_shutdown(c.n, 5000) == -ETIMEDOUT)
		fprintf(stderr, "closed: shutdown timed out, some peers did "
			"not drain\n");
out_destroy:
	pm_node_destroy(c.n);
	if (c.sfd >= 0)
		close(c.sfd);
	if (c.tfd >= 0)
		close(c.tfd);
out_free:
	while (c.ndials)
		dial_del(&c, &c.dials[0]);
	free(c.dials);
	free(c.buf);
	free(a.connect);
	return status;
}
