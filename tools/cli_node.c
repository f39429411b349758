/* SPDX-License-Identifier: MIT */
/*
 * `pairmesh node`: runs one node. Lines on stdin ("TARGET TEXT") are sent,
 * messages received are printed on stdout, one per line. Everything runs in
 * the node's own loop: stdin, a signalfd, the --stats timerfd and the
 * --metrics server are watched with pm_watch_fd(). SIGHUP re-reads the
 * --config file (see reload()).
 */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
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
#include "metrics.h"
#include "node_opts.h"
#include "notify.h"
#include "slog.h"

#define LINE_CAP	(1u << 20)	/* stdin line buffer, newline too */
#define TARGET_SHOW	64		/* bytes of a target shown in errors */

/* A stream this tool dialled (or named by address), for async errors. */
struct dial {
	struct pm_stream s;
	char *target;
};

/* A --connect address and the stream it gave, for removal on reload. */
struct wanted {
	char *addr;
	struct pm_stream s;
	uint64_t id;		/* the peer's id once known, else 0 */
};

struct cli {
	struct pm_node *n;
	struct node_opts o;	/* as given, or as last reloaded */
	struct metrics *m;	/* --metrics server, or NULL */
	struct wanted *want;	/* the --connect addresses, no duplicates */
	size_t nwant;
	uint64_t reloads_ok, reloads_failed;
	int sfd;		/* signalfd: INT, TERM, USR1 (HUP: --config) */
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
"                     [--resume MS] [--config FILE] [--metrics [HOST:]PORT]\n"
"                     [--log-level LEVEL] [--no-stdin]\n"
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
"      --config FILE        read options from FILE first, one 'key = value'\n"
"                           per line, keys named as the long options (see\n"
"                           docs/SERVICE.md); the command line wins. SIGHUP\n"
"                           reads it again: connect, stats, metrics and\n"
"                           log-level take effect, other keys need a restart\n"
"      --metrics [HOST:]PORT\n"
"                           serve the counters over HTTP, Prometheus text\n"
"                           format, at GET /metrics; PORT alone listens on\n"
"                           127.0.0.1 only\n"
"      --log-level LEVEL    error, warn, info or debug: stderr becomes logfmt\n"
"                           lines (ts=... level=... msg=... key=value ...)\n"
"                           instead of the text below\n"
"      --no-stdin           do not read stdin (a service): run until SIGTERM\n"
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
"  ready id=HEX16 listen=HOST:PORT engine=io_uring|epoll [metrics=HOST:PORT]\n"
"                      once, when the node listens (ports are the real ones)\n"
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
"                      route_changes, route_retransmits, msgs_in,\n"
"                      msgs_out\n"
"  error: WHY          startup failure (exit status 1)\n"
"  reload: ...         SIGHUP: what changed, or 'error: reload: FILE:LINE: WHY'\n"
"                      (the node keeps its old configuration)\n"
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

/*
 * Without --log-level stderr keeps its text lines ("error: TARGET: WHAT"),
 * which scripts read; with it every line is logfmt (slog.h).
 */
static bool structured(void)
{
	return slog_level() != SLOG_OFF;
}

/* Something about one target failed: msg is the logfmt message. */
static void report(const char *msg, const char *target, size_t tlen,
		   const char *what)
{
	struct slog_line l;

	if (tlen > TARGET_SHOW)
		tlen = TARGET_SHOW;
	if (!structured()) {
		fprintf(stderr, "error: %.*s: %s\n", (int)tlen, target, what);
		return;
	}
	slog_begin(&l, PM_LOG_WARN, msg);
	slog_strn(&l, "target", target, tlen);
	slog_str(&l, "error", what);
	slog_end(&l);
}

/* A failure with no target: "error: WHAT" or a logfmt line. */
static void fail(const char *what)
{
	if (structured())
		slog(PM_LOG_ERROR, what);
	else
		fprintf(stderr, "error: %s\n", what);
}

static void send_error(const char *target, size_t tlen, int err)
{
	report("send failed", target, tlen, why(err));
}

/*
 * The library's own diagnostics: logfmt lines with --log-level, else the
 * library's usual text. Always installed, as a reload may switch.
 */
static void on_log(struct pm_node *n, enum pm_log_level level,
		   const char *msg, void *user)
{
	struct slog_line l;

	if (!structured()) {
		fprintf(stderr, "pairmesh: %s\n", msg);
		return;
	}
	slog_begin(&l, level, msg);
	slog_str(&l, "source", "library");
	slog_end(&l);
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
			report("send failed", "*", 1, "no peers");
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
		char what[64];

		snprintf(what, sizeof(what), "line longer than %u bytes, "
			 "discarded", LINE_CAP - 1);
		report("line discarded", c->buf, tlen, what);
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
		report("stdin failed", "stdin", 5, why(-errno));
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
		fail("cannot watch stdin");
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

	peers = metrics_mesh_peers(c->n, &npeers);
	f = open_memstream(&text, &len);
	if (!peers || !f) {
		report("stats failed", "stats", 5, "out of memory");
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
		",\"route_retransmits\":%" PRIu64 ",\"msgs_in\":%" PRIu64
		",\"msgs_out\":%" PRIu64 "}\n",
		st.relayed, st.dropped_no_route, st.dropped_hop_limit,
		st.duplicates_dropped, st.unreachable, st.route_changes,
		st.route_retransmits, st.msgs_in, st.msgs_out);
	if (fclose(f)) {
		f = NULL;
		report("stats failed", "stats", 5, "out of memory");
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

/* The tool's own families in the metrics scrape. */
static void metrics_extra(FILE *f, void *user)
{
	struct cli *c = user;

	fputs("# HELP pairmesh_config_reloads_total Configuration reloads "
	      "(SIGHUP), by result.\n"
	      "# TYPE pairmesh_config_reloads_total counter\n", f);
	fprintf(f, "pairmesh_config_reloads_total{result=\"ok\"} %" PRIu64
		"\n", c->reloads_ok);
	fprintf(f, "pairmesh_config_reloads_total{result=\"error\"} %" PRIu64
		"\n", c->reloads_failed);
	fputs("# HELP pairmesh_config_peers Peer addresses to connect to "
	      "(connect), as configured.\n"
	      "# TYPE pairmesh_config_peers gauge\n", f);
	fprintf(f, "pairmesh_config_peers %zu\n", c->nwant);
}

/* The --metrics server for spec; on failure WHY is logged. */
static int start_metrics(struct cli *c, const char *spec)
{
	char addr[80];
	int r = metrics_start(&c->m, c->n, spec, metrics_extra, c);

	if (r) {
		char what[160];

		snprintf(what, sizeof(what), "metrics %s: %s", spec,
			 r == -EADDRINUSE ? "address in use" : strerror(-r));
		fail(what);
		return r;
	}
	if (!metrics_loopback(c->m) && metrics_addr(c->m, addr,
						    sizeof(addr)) > 0) {
		struct slog_line l;

		/* Not an error (a scraper on another host needs it), but
		 * the counters name the mesh's members: say so once. */
		slog_begin(&l, PM_LOG_WARN, "metrics served beyond loopback");
		slog_str(&l, "addr", addr);
		slog_end(&l);
	}
	return 0;
}

static struct wanted *want_find(struct cli *c, const char *addr)
{
	for (size_t i = 0; i < c->nwant; i++)
		if (!strcmp(c->want[i].addr, addr))
			return &c->want[i];
	return NULL;
}

/*
 * Dials addr unless a stream to it exists (pm_connect keeps the one there
 * is), and remembers it. Returns 0, -ENOMEM, or pm_connect's error.
 */
static int want_add(struct cli *c, const char *addr)
{
	struct wanted *w = want_find(c, addr), *v;
	struct pm_stream s;
	int r;

	r = pm_connect(c->n, addr, &s);
	if (r)
		return r;
	dial_add(c, s, addr, strlen(addr));
	if (w) {
		w->s = s;	/* redialled if it had been lost */
		return 0;
	}
	v = realloc(c->want, (c->nwant + 1) * sizeof(*v));
	if (!v)
		return -ENOMEM;
	c->want = v;
	w = &v[c->nwant];
	w->addr = strdup(addr);
	if (!w->addr)
		return -ENOMEM;
	w->s = s;
	w->id = 0;
	pm_stream_peer_id(c->n, s, &w->id);
	c->nwant++;
	return 0;
}

/* Closes the stream a removed address gave (after what is queued). */
static void want_del(struct cli *c, struct wanted *w)
{
	struct pm_stream s = w->s;
	uint64_t id = w->id;

	/* The handle may be stale after a merge: the id names the peer. */
	if (id || !pm_stream_peer_id(c->n, w->s, &id))
		pm_stream_by_id(c->n, id, &s);
	pm_close(c->n, s);
	free(w->addr);
	*w = c->want[--c->nwant];
}

static void want_free(struct cli *c)
{
	for (size_t i = 0; i < c->nwant; i++)
		free(c->want[i].addr);
	free(c->want);
	c->want = NULL;
	c->nwant = 0;
}

static bool listed(char *const *v, size_t k, const char *s)
{
	for (size_t i = 0; i < k; i++)
		if (!strcmp(v[i], s))
			return true;
	return false;
}

/* The --connect addresses of a reloaded config: added, removed, kept. */
static void apply_connect(struct cli *c, const struct node_opts *next,
			  size_t *added, size_t *removed)
{
	for (size_t i = 0; i < c->nwant;) {
		if (listed(next->connect, next->nconnect, c->want[i].addr)) {
			i++;
			continue;
		}
		want_del(c, &c->want[i]);
		(*removed)++;
	}
	for (size_t i = 0; i < next->nconnect; i++) {
		bool had = want_find(c, next->connect[i]) != NULL;
		int r = want_add(c, next->connect[i]);

		if (r)
			send_error(next->connect[i], strlen(next->connect[i]),
				   r);
		else if (!had)
			(*added)++;
	}
}

static int start_stats(struct cli *c);

/* The options that apply at once; the others keep their old values. */
static void apply(struct cli *c, struct node_opts *next, size_t *added,
		  size_t *removed)
{
	bool period_differs = next->stats.tv_sec != c->o.stats.tv_sec ||
			      next->stats.tv_nsec != c->o.stats.tv_nsec;
	bool metrics_differ = (next->metrics == NULL) !=
			      (c->o.metrics == NULL) ||
			      (next->metrics && strcmp(next->metrics,
						       c->o.metrics));

	slog_set_level(next->log_level);
	apply_connect(c, next, added, removed);
	if (period_differs) {
		c->o.stats = next->stats;
		if (start_stats(c))
			fail("stats timer: cannot set");
	}
	if (metrics_differ) {
		/* Stop first: the new address may be the old port. */
		metrics_stop(c->m);
		c->m = NULL;
		if (next->metrics && start_metrics(c, next->metrics)) {
			/* Serve where it was; NULL makes the next reload
			 * try the new address again. */
			free(next->metrics);
			next->metrics = NULL;
			if (c->o.metrics && !start_metrics(c, c->o.metrics))
				next->metrics = strdup(c->o.metrics);
		}
	}
}

/* Swaps the start-only options of old into next, so that next is what
 * runs and the next reload compares with it. */
static void keep_start_only(struct node_opts *old, struct node_opts *next)
{
	char *listen = next->listen, *key_file = next->key_file;

	next->cfg = old->cfg;
	next->listen = old->listen;
	next->key_file = old->key_file;
	old->listen = listen;
	old->key_file = key_file;
	memcpy(next->key, old->key, sizeof(next->key));
	next->no_stdin = old->no_stdin;
	/* The command line, applied again at every reload. */
	next->args = old->args;
	next->nargs = old->nargs;
	old->args = NULL;
	old->nargs = 0;
}

static void log_reload(struct cli *c, const char *const *pending,
		       size_t npending, size_t added, size_t removed)
{
	struct slog_line l;
	char keys[256] = "";

	for (size_t i = 0; i < npending && i < 16; i++)
		snprintf(keys + strlen(keys), sizeof(keys) - strlen(keys),
			 "%s%s", i ? "," : "", pending[i]);
	if (!structured()) {
		fprintf(stderr, "reload: ok peers=%zu added=%zu removed=%zu",
			c->nwant, added, removed);
		if (npending)
			fprintf(stderr, " restart-needed=%s", keys);
		fputc('\n', stderr);
		return;
	}
	slog_begin(&l, PM_LOG_INFO, "config reloaded");
	slog_str(&l, "file", c->o.config);
	slog_u64(&l, "peers", c->nwant);
	slog_u64(&l, "added", added);
	slog_u64(&l, "removed", removed);
	slog_end(&l);
	if (npending) {
		slog_begin(&l, PM_LOG_WARN, "changed keys need a restart");
		slog_str(&l, "keys", keys);
		slog_end(&l);
	}
}

/*
 * SIGHUP: reads the config file again. A bad file changes nothing. Peers
 * added are dialled, peers removed are closed, and the streams to the
 * others are left as they are.
 */
static void reload(struct cli *c)
{
	struct node_opts next;
	const char *pending[16];
	size_t npending, added = 0, removed = 0;
	char err[512];
	int r;

	notify_systemd("RELOADING=1");
	r = opts_reload(&c->o, &next, err, sizeof(err));
	if (r) {
		c->reloads_failed++;
		if (structured()) {
			struct slog_line l;

			slog_begin(&l, PM_LOG_ERROR, "config reload failed");
			slog_str(&l, "error", err);
			slog_end(&l);
		} else {
			fprintf(stderr, "error: reload: %s\n", err);
		}
		opts_free(&next);
		notify_systemd("READY=1");
		return;
	}
	npending = opts_restart_only(&c->o, &next, pending, 16);
	keep_start_only(&c->o, &next);
	apply(c, &next, &added, &removed);
	opts_free(&c->o);
	c->o = next;
	c->reloads_ok++;
	log_reload(c, pending, npending, added, removed);
	notify_systemd("READY=1");
}

static void on_signal(struct pm_node *n, int fd, void *user)
{
	struct cli *c = user;
	struct signalfd_siginfo si;

	while (read(fd, &si, sizeof(si)) == sizeof(si)) {
		if (si.ssi_signo == SIGUSR1)
			print_stats(c);
		else if (si.ssi_signo == SIGHUP)
			reload(c);
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

static void closed_text(const struct pm_event *ev, const char *target,
			const char *what)
{
	if (target)
		fprintf(stderr, "error: %s: %s", target, what);
	else
		fprintf(stderr, "closed: %016" PRIx64 " %s", ev->peer_id,
			what);
	if (ev->unsent)
		fprintf(stderr, ", %" PRIu64 " message%s not sent",
			ev->unsent, ev->unsent == 1 ? "" : "s");
	fputc('\n', stderr);
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
	/* A dial that never reached its node, or lost messages, is an
	 * error about the address it was named by. */
	bool failed = d && (!ev->peer_id || ev->unsent);

	if (what && !structured()) {
		closed_text(ev, failed ? d->target : NULL, what);
	} else if (what) {
		struct slog_line l;

		slog_begin(&l, failed ? PM_LOG_WARN : PM_LOG_INFO,
			   "stream closed");
		if (ev->peer_id)
			slog_id(&l, "peer", ev->peer_id);
		if (d)
			slog_str(&l, "target", d->target);
		slog_str(&l, "reason", what);
		slog_u64(&l, "unsent", ev->unsent);
		slog_end(&l);
	}
	if (d)
		dial_del(c, d);
}

static void on_connected(struct cli *c, const struct pm_event *ev)
{
	struct dial *d = dial_find(c, ev->stream);
	struct slog_line l;

	for (size_t i = 0; i < c->nwant; i++)
		if (c->want[i].s.h == ev->stream.h)
			c->want[i].id = ev->peer_id;
	slog_begin(&l, PM_LOG_INFO, "stream connected");
	slog_id(&l, "peer", ev->peer_id);
	if (d)
		slog_str(&l, "target", d->target);
	slog_end(&l);
}

static void on_event(struct pm_node *n, const struct pm_event *ev, void *user)
{
	struct cli *c = user;
	char hex[20];

	switch (ev->type) {
	case PM_EV_CONNECTED:
		on_connected(c, ev);
		return;
	case PM_EV_CLOSED:
		on_closed(c, ev);
		break;
	case PM_EV_WRITABLE:
		break;
	case PM_EV_UNREACHABLE:
		snprintf(hex, sizeof(hex), "%016" PRIx64, ev->peer_id);
		report("message unreachable", hex, 16, "unreachable");
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

static int start_signals(struct cli *c)
{
	sigset_t mask;

	sigemptyset(&mask);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGUSR1);
	/* Without a file to re-read, a hangup ends the node as it always
	 * did (a closed terminal must not leave it behind). */
	if (c->o.config)
		sigaddset(&mask, SIGHUP);
	/* Block first: a signal now waits in the signalfd, never kills. */
	if (sigprocmask(SIG_BLOCK, &mask, NULL))
		return -errno;
	c->sfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
	if (c->sfd < 0)
		return -errno;
	return pm_watch_fd(c->n, c->sfd, on_signal, c);
}

/* The --stats timer: a periodic timerfd read in the node's loop; a zero
 * period (no --stats, or removed on reload) disarms it. */
static int start_stats(struct cli *c)
{
	struct itimerspec its = { .it_value = c->o.stats,
				  .it_interval = c->o.stats };

	if (c->tfd < 0 && !its.it_value.tv_sec && !its.it_value.tv_nsec)
		return 0;
	if (c->tfd < 0) {
		c->tfd = timerfd_create(CLOCK_MONOTONIC,
					TFD_NONBLOCK | TFD_CLOEXEC);
		if (c->tfd < 0)
			return -errno;
		if (pm_watch_fd(c->n, c->tfd, on_timer, c))
			return -ENOSPC;
	}
	if (timerfd_settime(c->tfd, 0, &its, NULL))
		return -errno;
	return 0;
}

/* The --connect addresses. -EINVAL is a usage error, others are not. */
static int dial_all(struct cli *c)
{
	for (size_t i = 0; i < c->o.nconnect; i++) {
		const char *addr = c->o.connect[i];
		int r = want_add(c, addr);

		if (r == -EINVAL)
			return bad_usage("--connect '%s': want HOST:PORT",
					 addr);
		if (r) {
			send_error(addr, strlen(addr), r);
			return 1;
		}
	}
	return 0;
}

static int run(struct cli *c)
{
	while (!c->quit) {
		/* Unwatchable stdin never blocks: read it between turns. */
		bool poll_stdin = !c->o.no_stdin && !c->pollable &&
				  !c->blocked && !c->eof;
		int r = pm_node_run(c->n, poll_stdin ? 0 : -1);

		if (r < 0 && r != -EINTR) {
			char what[128];

			snprintf(what, sizeof(what), "node loop: %s", why(r));
			fail(what);
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

static void start_error(const struct pm_config *cfg, int r)
{
	char what[160];

	switch (r) {
	case -EADDRINUSE:
		snprintf(what, sizeof(what), "listen %s: address in use",
			 cfg->listen);
		break;
	case -EPROTONOSUPPORT:
		snprintf(what, sizeof(what), "io_uring refused by the kernel "
			 "(try --engine epoll)");
		break;
	default:
		snprintf(what, sizeof(what), "cannot start the node: %s",
			 strerror(-r));
	}
	fail(what);
}

static void say_ready(struct cli *c)
{
	char addr[128], maddr[80] = "";
	struct slog_line l;

	if (pm_node_listen_addr(c->n, addr, sizeof(addr)) < 0)
		snprintf(addr, sizeof(addr), "?");
	if (c->m && metrics_addr(c->m, maddr, sizeof(maddr)) < 0)
		snprintf(maddr, sizeof(maddr), "?");
	if (!structured()) {
		fprintf(stderr, "ready id=%016" PRIx64 " listen=%s engine=%s",
			pm_node_id(c->n), addr, pm_node_engine(c->n));
		if (c->m)
			fprintf(stderr, " metrics=%s", maddr);
		fputc('\n', stderr);
		fflush(stderr);
	} else {
		slog_begin(&l, PM_LOG_INFO, "ready");
		slog_id(&l, "id", pm_node_id(c->n));
		slog_str(&l, "listen", addr);
		slog_str(&l, "engine", pm_node_engine(c->n));
		if (c->m)
			slog_str(&l, "metrics", maddr);
		slog_u64(&l, "peers", c->nwant);
		slog_end(&l);
	}
	notify_systemd("READY=1");
}

/* Starts what runs beside the node. Returns the exit status, 0 to run. */
static int start_extras(struct cli *c)
{
	char what[128];
	int r;

	r = start_signals(c);
	if (r) {
		snprintf(what, sizeof(what), "signals: %s", strerror(-r));
		fail(what);
		return 1;
	}
	r = start_stats(c);
	if (r) {
		snprintf(what, sizeof(what), "stats timer: %s", strerror(-r));
		fail(what);
		return 1;
	}
	if (c->o.metrics && start_metrics(c, c->o.metrics))
		return 1;
	return dial_all(c);
}

/*
 * The library takes a PAIRMESH_ENGINE it does not know for a bad config
 * (-EINVAL), like a bad --listen: name the variable instead. NULL when it
 * is fine or does not apply (an engine given with --engine wins).
 */
static const char *bad_engine_env(const struct pm_config *cfg)
{
	const char *env = getenv("PAIRMESH_ENGINE");

	if (cfg->engine != PM_ENGINE_AUTO || !env || !*env ||
	    !strcmp(env, "auto") || !strcmp(env, "io_uring") ||
	    !strcmp(env, "epoll"))
		return NULL;
	return env;
}

int node_main(int argc, char *argv[])
{
	const char *env;
	struct cli c = { .sfd = -1, .tfd = -1 };
	struct pm_config cfg;
	int r, status;

	r = opts_parse(&c.o, argc, argv);
	if (r) {
		opts_free(&c.o);
		return r == 1 ? 0 : r < 0 ? 1 : r;
	}
	slog_set_level(c.o.log_level);
	c.buf = malloc(LINE_CAP);
	if (!c.buf) {
		fail("out of memory");
		opts_free(&c.o);
		return 1;
	}
	signal(SIGPIPE, SIG_IGN);
	opts_pm_config(&c.o, &cfg);
	env = bad_engine_env(&cfg);
	if (env) {
		status = bad_usage("PAIRMESH_ENGINE '%s': want auto, io_uring "
				   "or epoll", env);
		goto out_free;
	}
	cfg.on_message = on_message;
	cfg.on_event = on_event;
	cfg.on_log = on_log;
	cfg.user = &c;
	r = pm_node_create(&c.n, &cfg);
	if (r == -EINVAL) {
		status = bad_usage("invalid configuration (--listen '%s' "
				   "or --max-peers)", cfg.listen);
		goto out_free;
	}
	if (r) {
		start_error(&cfg, r);
		status = 1;
		goto out_free;
	}
	status = start_extras(&c);
	if (status)
		goto out_destroy;
	if (!c.o.no_stdin) {
		c.pollable = fd_pollable(STDIN_FILENO);
		watch_stdin(&c, true);
	}
	say_ready(&c);

	status = run(&c);
	notify_systemd("STOPPING=1");
	/* No more input during the shutdown: it only flushes and closes. */
	watch_stdin(&c, false);
	pm_watch_fd(c.n, c.sfd, NULL, NULL);
	if (c.tfd >= 0)
		pm_watch_fd(c.n, c.tfd, NULL, NULL);
	c.stopping = true;
	drain_self(&c);
	if (pm_node_shutdown(c.n, 5000) == -ETIMEDOUT) {
		if (structured())
			slog(PM_LOG_WARN, "shutdown timed out, some peers did "
			     "not drain");
		else
			fprintf(stderr, "closed: shutdown timed out, some "
				"peers did not drain\n");
	}
out_destroy:
	metrics_stop(c.m);
	pm_node_destroy(c.n);
	if (c.sfd >= 0)
		close(c.sfd);
	if (c.tfd >= 0)
		close(c.tfd);
out_free:
	while (c.ndials)
		dial_del(&c, &c.dials[0]);
	free(c.dials);
	want_free(&c);
	free(c.buf);
	opts_free(&c.o);
	return status;
}
