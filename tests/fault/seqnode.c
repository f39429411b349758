/* SPDX-License-Identifier: MIT */
/*
 * seqnode: one pairmesh node for the fault tests and the soak. It sends
 * sequence-numbered messages (tests/fault/seq.h) to its targets, checks
 * every message it receives (lost, duplicated, reordered, corrupted), and
 * rewrites a report file a few times a second, so that a node killed with
 * SIGKILL still leaves what it knew. seqcheck adds the reports up.
 *
 *   --peer ID@HOST:PORT  a target in stream mode: a pair stream dialled by
 *                        address (pm_connect), redialled when it ends
 *   --to ID              a target in route mode: pm_send_to(ID), relayed
 *                        when there is no direct stream
 *
 * SIGUSR1 stops sending (drain), SIGUSR2 starts it (with --wait-start),
 * SIGHUP starts reading (with --stop-reading: every stream it paused by
 * keeping a message resumes), SIGTERM / SIGINT: a graceful shutdown, then
 * the final report.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

#include "pairmesh.h"
#include "seq.h"

#define MAX_TARGETS	64
#define MAX_CONNECT	64
#define MAX_PAUSED	64
#define REDIAL_MS	100	/* after a stream ended, till a redial */
#define NOROUTE_MS	10	/* after -EHOSTUNREACH, before retrying */
#define BURST_MS	100	/* a rate limit may catch up this much */

struct target {
	uint64_t id;
	char addr[64];		/* stream mode; "" in route mode */
	struct pm_stream s;
	bool have;		/* s is ours, not known to have ended */
	bool live;		/* s has a peer id: it went live */
	uint64_t retry_at;	/* ms: next pm_connect or pm_send_to */
	uint64_t seq;		/* messages committed */
	double tokens;		/* rate limit */
	uint64_t unsent, closed, eagain, noroute, unreach;
};

struct range {
	uint64_t from, to;	/* inclusive */
};

struct origin {
	uint64_t id, inc;
	uint64_t first, next, count, dup, late, bad;
	struct range *gaps;
	size_t ngaps, cap;
};

static struct {
	struct pm_node *n;
	uint64_t inc;
	uint64_t start_us;
	bool route_mode;
	bool sending;
	bool stop_reading;
	bool quit;
	uint64_t count;		/* per target; 0 = no limit */
	double rate;		/* per target per second; 0 = flat out */
	size_t min_size, max_size;
	const char *report;
	unsigned report_ms;
	struct target t[MAX_TARGETS];
	int nt;
	const char *connect[MAX_CONNECT];
	int nconnect;
	struct pm_stream paused[MAX_PAUSED];
	int npaused;
	struct origin *o;
	size_t no, ocap;
	size_t rss_max_kb;
	uint64_t bad_total;
} g = { .sending = true, .min_size = 64, .max_size = 64, .report_ms = 200 };

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static uint64_t wall_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

static void put64(unsigned char *p, uint64_t v)
{
	memcpy(p, &v, 8);
}

static uint64_t get64(const unsigned char *p)
{
	uint64_t v;

	memcpy(&v, p, 8);
	return v;
}

static void note(const char *fmt, ...)
	__attribute__((format(printf, 1, 2)));

/* One line on stderr, stamped: the scripts show it when a test fails. */
static void note(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%.3f ", (double)wall_us() / 1e6);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

/* ---- receiving --------------------------------------------------------- */

static struct origin *origin_get(uint64_t id, uint64_t inc)
{
	struct origin *o;

	for (size_t i = 0; i < g.no; i++)
		if (g.o[i].id == id && g.o[i].inc == inc)
			return &g.o[i];
	if (g.no == g.ocap) {
		size_t cap = g.ocap ? 2 * g.ocap : 16;
		void *p = realloc(g.o, cap * sizeof(*g.o));

		if (!p)
			return NULL;
		g.o = p;
		g.ocap = cap;
	}
	o = &g.o[g.no++];
	memset(o, 0, sizeof(*o));
	o->id = id;
	o->inc = inc;
	return o;
}

static void gap_add(struct origin *o, uint64_t from, uint64_t to)
{
	if (o->ngaps == o->cap) {
		size_t cap = o->cap ? 2 * o->cap : 8;
		void *p = realloc(o->gaps, cap * sizeof(*o->gaps));

		if (!p) {
			o->bad++;	/* cannot keep count: say so */
			return;
		}
		o->gaps = p;
		o->cap = cap;
	}
	o->gaps[o->ngaps++] = (struct range){ from, to };
	note("gap: from %016" PRIx64 "/%016" PRIx64 " %" PRIu64 "..%" PRIu64,
	     o->id, o->inc, from, to);
}

/* seq below next: a late arrival filling a gap, or a duplicate. */
static void seq_old(struct origin *o, uint64_t seq)
{
	for (size_t i = 0; i < o->ngaps; i++) {
		struct range *r = &o->gaps[i];

		if (seq < r->from || seq > r->to)
			continue;
		o->late++;
		o->count++;
		note("late: from %016" PRIx64 " seq %" PRIu64 " (next %" PRIu64
		     ")", o->id, seq, o->next);
		if (r->from == r->to) {
			*r = o->gaps[--o->ngaps];
		} else if (seq == r->from) {
			r->from++;
		} else if (seq == r->to) {
			r->to--;
		} else {
			uint64_t to = r->to;

			r->to = seq - 1;
			gap_add(o, seq + 1, to);
		}
		return;
	}
	if (seq >= o->first) {
		o->dup++;
		note("duplicate: from %016" PRIx64 " seq %" PRIu64, o->id, seq);
	} else {
		/* Before the first one this process saw: late, not a dup. */
		o->late++;
		o->count++;
		note("late: from %016" PRIx64 " seq %" PRIu64 " before first %"
		     PRIu64, o->id, seq, o->first);
	}
}

static bool body_ok(const unsigned char *p, size_t len, uint64_t inc,
		    uint64_t seq)
{
	for (size_t j = SEQ_HDR; j < len; j++)
		if (p[j] != seq_filler(inc, seq, j))
			return false;
	return true;
}

static int on_message(struct pm_node *n, const struct pm_message *m,
		      void *user)
{
	const unsigned char *p = m->data;
	struct origin *o;
	uint64_t seq;

	if (g.stop_reading) {
		/* Kept, so the stream pauses: the reader stopped reading. */
		for (int i = 0; i < g.npaused; i++)
			if (g.paused[i].h == m->stream.h)
				return -EAGAIN;
		if (g.npaused < MAX_PAUSED) {
			g.paused[g.npaused++] = m->stream;
			return -EAGAIN;
		}
		note("fatal: more than %d streams paused", MAX_PAUSED);
		exit(1);
	}
	if (m->len < SEQ_HDR || get64(p) != m->peer_id ||
	    get64(p + 24) != pm_node_id(n)) {
		g.bad_total++;
		note("bad message from %016" PRIx64 ", %zu bytes", m->peer_id,
		     m->len);
		return 0;
	}
	o = origin_get(get64(p), get64(p + 8));
	if (!o) {
		g.bad_total++;
		return 0;
	}
	seq = get64(p + 16);
	if (!body_ok(p, m->len, o->inc, seq)) {
		o->bad++;
		note("corrupt: from %016" PRIx64 " seq %" PRIu64, o->id, seq);
	}
	if (!o->count && !o->next && !o->dup && !o->late) {
		o->first = seq;
		o->next = seq + 1;
		o->count = 1;
	} else if (seq == o->next) {
		o->next++;
		o->count++;
	} else if (seq > o->next) {
		gap_add(o, o->next, seq - 1);
		o->next = seq + 1;
		o->count++;
	} else {
		seq_old(o, seq);
	}
	return 0;
}

/* ---- sending ----------------------------------------------------------- */

static struct target *target_by_handle(struct pm_stream s)
{
	for (int i = 0; i < g.nt; i++)
		if (g.t[i].have && g.t[i].s.h == s.h)
			return &g.t[i];
	return NULL;
}

static struct target *target_by_id(uint64_t id)
{
	for (int i = 0; i < g.nt; i++)
		if (g.t[i].id == id)
			return &g.t[i];
	return NULL;
}

static void on_event(struct pm_node *n, const struct pm_event *ev, void *u)
{
	struct target *t;

	switch (ev->type) {
	case PM_EV_CLOSED:
		note("closed: peer %016" PRIx64 " error %d reason %s unsent %"
		     PRIu64 "%s", ev->peer_id, ev->error,
		     pm_close_reason_str(ev->reason), ev->unsent,
		     ev->peer_restarted ? " (peer restarted)" : "");
		t = target_by_handle(ev->stream);
		if (!t)
			t = target_by_id(ev->peer_id);
		if (!t)
			return;
		t->unsent += ev->unsent;
		if (t->have && t->s.h == ev->stream.h) {
			t->closed++;
			t->have = false;
			t->live = false;
			t->retry_at = now_ms() + REDIAL_MS;
		}
		break;
	case PM_EV_UNREACHABLE:
		t = target_by_id(ev->peer_id);
		if (t)
			t->unreach++;
		break;
	case PM_EV_CONNECTED:
		note("connected: peer %016" PRIx64, ev->peer_id);
		break;
	default:
		break;
	}
}

/* Builds message seq for t into buf; returns its length. */
static size_t build(unsigned char *buf, const struct target *t)
{
	size_t len = seq_len(t->seq, g.min_size, g.max_size);

	put64(buf, pm_node_id(g.n));
	put64(buf + 8, g.inc);
	put64(buf + 16, t->seq);
	put64(buf + 24, t->id);
	for (size_t j = SEQ_HDR; j < len; j++)
		buf[j] = seq_filler(g.inc, t->seq, j);
	return len;
}

/* The stream to t, live; false when there is none yet. */
static bool stream_ready(struct target *t, uint64_t now)
{
	uint64_t id;

	if (!t->have) {
		if (now < t->retry_at)
			return false;
		if (pm_connect(g.n, t->addr, &t->s)) {
			t->retry_at = now + REDIAL_MS;
			return false;
		}
		t->have = true;
		t->live = false;
	}
	/* Only a stream that went live once carries numbered messages:
	 * a dial to a dead address would only hold them to report unsent. */
	if (!t->live && pm_stream_peer_id(g.n, t->s, &id) == 0) {
		if (id != t->id) {
			note("fatal: %s is %016" PRIx64 ", not %016" PRIx64,
			     t->addr, id, t->id);
			exit(1);
		}
		t->live = true;
	}
	return t->live;
}

/* Sends one message to t. Returns 0, or < 0 to stop for this turn. */
static int send_one(struct target *t, uint64_t now)
{
	static unsigned char buf[1 << 16];
	size_t len;
	int r;

	if (!g.route_mode && !stream_ready(t, now))
		return -EAGAIN;
	if (g.route_mode && now < t->retry_at)
		return -EAGAIN;
	len = build(buf, t);
	if (g.route_mode)
		r = pm_send_to(g.n, t->id, buf, len);
	else
		r = pm_send(g.n, t->s, buf, len);
	switch (r) {
	case 0:
		t->seq++;
		return 0;
	case -EAGAIN:
		t->eagain++;
		return r;
	case -EHOSTUNREACH:
		t->noroute++;
		t->retry_at = now + NOROUTE_MS;
		return r;
	case -ESTALE:
	case -EPIPE:
		/* Ended under us (the event may still come): dial again. */
		t->have = false;
		t->live = false;
		t->retry_at = now + REDIAL_MS;
		return r;
	default:
		note("fatal: send to %016" PRIx64 ": %s", t->id, strerror(-r));
		exit(1);
	}
}

static void send_some(uint64_t now, uint64_t dt)
{
	for (int i = 0; i < g.nt; i++) {
		struct target *t = &g.t[i];
		int budget = 256;

		if (g.rate > 0) {
			double cap = g.rate * BURST_MS / 1000.0 + 1;

			t->tokens += g.rate * (double)dt / 1000.0;
			if (t->tokens > cap)
				t->tokens = cap;
		}
		while (budget-- > 0 && (!g.count || t->seq < g.count)) {
			if (g.rate > 0 && t->tokens < 1)
				break;
			if (send_one(t, now))
				break;
			if (g.rate > 0)
				t->tokens -= 1;
		}
	}
}

/* ---- reports ----------------------------------------------------------- */

static void sample_mem(size_t *rss, size_t *hwm)
{
	char line[256];
	FILE *f = fopen("/proc/self/status", "r");

	*rss = *hwm = 0;
	if (!f)
		return;
	while (fgets(line, sizeof(line), f)) {
		sscanf(line, "VmRSS: %zu kB", rss);
		sscanf(line, "VmHWM: %zu kB", hwm);
	}
	fclose(f);
	if (*rss > g.rss_max_kb)
		g.rss_max_kb = *rss;
}

static void write_report(bool final)
{
	char tmp[4096];
	struct pm_stats st;
	size_t rss, hwm;
	FILE *f;

	sample_mem(&rss, &hwm);
	if (!g.report)
		return;
	snprintf(tmp, sizeof(tmp), "%s.tmp", g.report);
	f = fopen(tmp, "w");
	if (!f)
		return;
	pm_node_stats(g.n, &st);
	fprintf(f, "seqnode-report 1\n");
	fprintf(f, "node %016" PRIx64 " %016" PRIx64 " %d %s %" PRIu64 " %s\n",
		pm_node_id(g.n), g.inc, (int)getpid(),
		final ? "final" : "running", g.start_us, pm_node_engine(g.n));
	fprintf(f, "mem %zu %zu %zu\n", rss, g.rss_max_kb, hwm);
	fprintf(f, "stats resumed=%" PRIu64 " reconnects=%" PRIu64
		" restarts_seen=%" PRIu64 " timeouts=%" PRIu64
		" rejected_busy=%" PRIu64 " relayed=%" PRIu64
		" dropped_no_route=%" PRIu64 " protocol_errors=%" PRIu64
		" bad=%" PRIu64 "\n", st.resumed, st.reconnects,
		st.restarts_seen, st.timeouts, st.rejected_busy, st.relayed,
		st.dropped_no_route, st.protocol_errors, g.bad_total);
	for (int i = 0; i < g.nt; i++) {
		struct target *t = &g.t[i];

		fprintf(f, "sent %016" PRIx64 " %" PRIu64 " %" PRIu64 " %"
			PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64 "\n", t->id,
			t->seq, t->unsent, t->closed, t->eagain, t->noroute,
			t->unreach);
	}
	for (size_t i = 0; i < g.no; i++) {
		struct origin *o = &g.o[i];

		fprintf(f, "recv %016" PRIx64 " %016" PRIx64 " %" PRIu64 " %"
			PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64
			"\n", o->id, o->inc, o->first, o->next, o->count,
			o->dup, o->late, o->bad);
		for (size_t j = 0; j < o->ngaps; j++)
			fprintf(f, "gap %016" PRIx64 " %016" PRIx64 " %" PRIu64
				" %" PRIu64 "\n", o->id, o->inc,
				o->gaps[j].from, o->gaps[j].to);
	}
	fprintf(f, "end\n");
	if (fclose(f) == 0)
		rename(tmp, g.report);
}

/* ---- setup ------------------------------------------------------------- */

static void usage(FILE *f)
{
	fprintf(f,
"Usage: seqnode --listen HOST:PORT [--id HEX] [--peer ID@HOST:PORT]...\n"
"               [--to ID]... [--connect HOST:PORT]... [--rate N]\n"
"               [--count N] [--size MIN[:MAX]] [--report FILE]\n"
"               [--report-ms MS] [--engine auto|io_uring|epoll]\n"
"               [--no-auto-connect] [--max-peers N] [--ring-size BYTES]\n"
"               [--keepalive MS] [--dead-after MS] [--resume MS]\n"
"               [--reconnect-max MS] [--handshake-ms MS] [--wait-start]\n"
"               [--stop-reading]\n"
"--peer: stream mode targets; --to: route mode (pm_send_to). Not both.\n"
"--rate: messages per second per target (0: as fast as the rings take).\n");
}

static int parse_u64(const char *s, int base, uint64_t *out)
{
	char *end;

	errno = 0;
	*out = strtoull(s, &end, base);
	return errno || end == s || *end ? -EINVAL : 0;
}

static int add_target(const char *arg, bool route)
{
	struct target *t;
	const char *at = strchr(arg, '@');
	char id[32];

	if (g.nt == MAX_TARGETS || route == !!at)
		return -EINVAL;
	t = &g.t[g.nt];
	memset(t, 0, sizeof(*t));
	if (at) {
		if (at - arg >= (long)sizeof(id) ||
		    strlen(at + 1) >= sizeof(t->addr))
			return -EINVAL;
		memcpy(id, arg, at - arg);
		id[at - arg] = 0;
		snprintf(t->addr, sizeof(t->addr), "%s", at + 1);
	} else {
		snprintf(id, sizeof(id), "%s", arg);
	}
	if (parse_u64(id, 16, &t->id) || !t->id)
		return -EINVAL;
	if (g.nt && g.route_mode != route)
		return -EINVAL;		/* one mode per node */
	g.route_mode = route;
	g.nt++;
	return 0;
}

static int parse_size(const char *s)
{
	unsigned long lo, hi;
	int k = sscanf(s, "%lu:%lu", &lo, &hi);

	if (k == 1)
		hi = lo;
	if (k < 1 || lo < SEQ_HDR || hi < lo || hi > 65536)
		return -EINVAL;
	g.min_size = lo;
	g.max_size = hi;
	return 0;
}

enum {
	O_ID = 256, O_PEER, O_TO, O_RATE, O_COUNT, O_SIZE, O_REPORT,
	O_REPORT_MS, O_NOAUTO, O_MAXPEERS, O_RING, O_KEEPALIVE, O_DEAD,
	O_RESUME, O_RECONNECT, O_HANDSHAKE, O_WAIT, O_STOPREAD,
};

static int parse_args(int argc, char *argv[], struct pm_config *c)
{
	static const struct option opts[] = {
		{ "listen", required_argument, NULL, 'l' },
		{ "connect", required_argument, NULL, 'c' },
		{ "engine", required_argument, NULL, 'e' },
		{ "id", required_argument, NULL, O_ID },
		{ "peer", required_argument, NULL, O_PEER },
		{ "to", required_argument, NULL, O_TO },
		{ "rate", required_argument, NULL, O_RATE },
		{ "count", required_argument, NULL, O_COUNT },
		{ "size", required_argument, NULL, O_SIZE },
		{ "report", required_argument, NULL, O_REPORT },
		{ "report-ms", required_argument, NULL, O_REPORT_MS },
		{ "no-auto-connect", no_argument, NULL, O_NOAUTO },
		{ "max-peers", required_argument, NULL, O_MAXPEERS },
		{ "ring-size", required_argument, NULL, O_RING },
		{ "keepalive", required_argument, NULL, O_KEEPALIVE },
		{ "dead-after", required_argument, NULL, O_DEAD },
		{ "resume", required_argument, NULL, O_RESUME },
		{ "reconnect-max", required_argument, NULL, O_RECONNECT },
		{ "handshake-ms", required_argument, NULL, O_HANDSHAKE },
		{ "wait-start", no_argument, NULL, O_WAIT },
		{ "stop-reading", no_argument, NULL, O_STOPREAD },
		{ "help", no_argument, NULL, 'h' },
		{ 0 }
	};
	uint64_t v;
	int o;

	while ((o = getopt_long(argc, argv, "l:c:e:h", opts, NULL)) != -1) {
		int bad = 0;

		switch (o) {
		case 'l':
			c->listen = optarg;
			break;
		case 'c':
			if (g.nconnect == MAX_CONNECT)
				return -EINVAL;
			g.connect[g.nconnect++] = optarg;
			break;
		case 'e':
			if (!strcmp(optarg, "io_uring"))
				c->engine = PM_ENGINE_IO_URING;
			else if (!strcmp(optarg, "epoll"))
				c->engine = PM_ENGINE_EPOLL;
			else if (strcmp(optarg, "auto"))
				bad = 1;
			break;
		case O_ID:
			bad = parse_u64(optarg, 16, &c->node_id);
			break;
		case O_PEER:
		case O_TO:
			bad = add_target(optarg, o == O_TO);
			break;
		case O_RATE:
			g.rate = strtod(optarg, NULL);
			bad = g.rate < 0;
			break;
		case O_COUNT:
			bad = parse_u64(optarg, 10, &g.count);
			break;
		case O_SIZE:
			bad = parse_size(optarg);
			break;
		case O_REPORT:
			g.report = optarg;
			break;
		case O_NOAUTO:
			c->no_auto_connect = true;
			break;
		case O_WAIT:
			g.sending = false;
			break;
		case O_STOPREAD:
			g.stop_reading = true;
			break;
		case 'h':
			usage(stdout);
			exit(0);
		default:
			if (o == '?' || o < O_REPORT_MS) {
				usage(stderr);
				return -EINVAL;
			}
			bad = parse_u64(optarg, 10, &v) || v > UINT32_MAX;
			if (o == O_REPORT_MS)
				g.report_ms = v ? v : 1;
			else if (o == O_MAXPEERS)
				c->max_peers = v;
			else if (o == O_RING)
				c->ring_size = v;
			else if (o == O_KEEPALIVE)
				c->keepalive_ms = v;
			else if (o == O_DEAD)
				c->dead_ms = v;
			else if (o == O_RESUME)
				c->resume_ms = v;
			else if (o == O_RECONNECT)
				c->reconnect_max_ms = v;
			else if (o == O_HANDSHAKE)
				c->handshake_ms = v;
		}
		if (bad) {
			fprintf(stderr, "seqnode: bad value '%s'\n", optarg);
			return -EINVAL;
		}
	}
	return optind < argc ? -EINVAL : 0;
}

static void on_signal(struct pm_node *n, int fd, void *user)
{
	struct signalfd_siginfo si;

	while (read(fd, &si, sizeof(si)) == sizeof(si)) {
		if (si.ssi_signo == SIGUSR1) {
			g.sending = false;
			note("sending stopped");
			write_report(false);
		} else if (si.ssi_signo == SIGUSR2) {
			g.sending = true;
			note("sending started");
		} else if (si.ssi_signo == SIGHUP) {
			note("reading started, %d streams paused",
			     g.npaused);
			g.stop_reading = false;
			for (int i = 0; i < g.npaused; i++)
				pm_stream_resume(g.n, g.paused[i]);
			g.npaused = 0;
		} else {
			g.quit = true;
		}
	}
}

static int start_signals(void)
{
	sigset_t mask;
	int fd;

	sigemptyset(&mask);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGUSR1);
	sigaddset(&mask, SIGUSR2);
	sigaddset(&mask, SIGHUP);
	if (sigprocmask(SIG_BLOCK, &mask, NULL))
		return -errno;
	fd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
	if (fd < 0)
		return -errno;
	return pm_watch_fd(g.n, fd, on_signal, NULL);
}

int main(int argc, char *argv[])
{
	struct pm_config c;
	uint64_t last, next_report;
	char addr[128];
	int r;

	pm_config_init(&c);
	if (parse_args(argc, argv, &c))
		return 2;
	c.on_message = on_message;
	c.on_event = on_event;
	signal(SIGPIPE, SIG_IGN);
	if (getrandom(&g.inc, sizeof(g.inc), 0) != sizeof(g.inc))
		g.inc = wall_us() ^ ((uint64_t)getpid() << 32);
	g.start_us = wall_us();
	r = pm_node_create(&g.n, &c);
	if (r) {
		fprintf(stderr, "seqnode: cannot start: %s\n", strerror(-r));
		return 1;
	}
	if (start_signals()) {
		fprintf(stderr, "seqnode: signals: %s\n", strerror(errno));
		return 1;
	}
	for (int i = 0; i < g.nconnect; i++) {
		struct pm_stream s;

		if (pm_connect(g.n, g.connect[i], &s))
			note("connect %s failed", g.connect[i]);
	}
	pm_node_listen_addr(g.n, addr, sizeof(addr));
	fprintf(stderr, "ready id=%016" PRIx64 " listen=%s engine=%s pid=%d "
		"inc=%016" PRIx64 "\n", pm_node_id(g.n), addr,
		pm_node_engine(g.n), (int)getpid(), g.inc);
	write_report(false);
	last = now_ms();
	next_report = last + g.report_ms;
	while (!g.quit) {
		uint64_t now = now_ms();
		bool more = g.sending && g.nt;
		int wait = more ? 1 : (int)(next_report > now ?
					     next_report - now : 0);

		if (more)
			send_some(now, now - last);
		last = now;
		r = pm_node_run(g.n, wait);
		if (r < 0 && r != -EINTR) {
			note("fatal: node loop: %s", strerror(-r));
			return 1;
		}
		if (now_ms() >= next_report) {
			write_report(false);
			next_report = now_ms() + g.report_ms;
		}
	}
	g.sending = false;
	if (pm_node_shutdown(g.n, 2000))
		note("shutdown: some peers did not drain");
	write_report(true);
	pm_node_destroy(g.n);
	return 0;
}
