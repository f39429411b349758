/* SPDX-License-Identifier: MIT */
/*
 * `pairmesh node` as a service: --metrics scraped with curl, --config and
 * its errors, --log-level lines, SIGHUP reloads checked against the
 * kernel's TCP table, and the systemd unit (systemd-analyze verify, then
 * its ExecStart and ExecReload run by hand with a NOTIFY_SOCKET of ours).
 * Every wait is bounded; leftovers are killed in the teardown.
 */
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <cmocka.h>

#include "lib/proc.h"
#include "lib/testlib.h"

static char dir[] = "/tmp/pm-service-XXXXXX";
static const char *engine = "epoll";

/* Waits for p's ready line; skips when the kernel refuses io_uring. */
static struct tp_proc *ready(struct tp_proc *p)
{
	if (!tp_ready(p)) {
		int st = tp_wait_exit(p);

		if (!strcmp(engine, "io_uring") && st == 1 &&
		    strstr(p->e.p, "io_uring")) {
			print_message("skipped: io_uring refused here: %s",
				      p->e.p);
			skip();
		}
		fail_msg("node did not start (exit %d): %s", st, p->e.p);
	}
	return p;
}

/* `pairmesh node --engine E args...`, NULL-terminated, once ready. */
static struct tp_proc *node(const char *first, ...)
{
	char *argv[24] = { tp_bin, "node", "--engine", (char *)engine };
	int argc = 4;
	va_list ap;

	va_start(ap, first);
	for (const char *a = first; a; a = va_arg(ap, const char *)) {
		argv[argc++] = (char *)a;
		assert_true(argc < 23);
	}
	va_end(ap);
	return ready(tp_spawn(argv, -1));
}

/* Runs argv to the end; its stdout into out (NUL-terminated). */
static int run(char *const argv[], char *out, size_t len)
{
	struct tp_proc *p = tp_spawn(argv, -1);
	size_t n;
	int st;

	tp_close_stdin(p);
	st = tp_wait_exit(p);
	n = p->o.len < len - 1 ? p->o.len : len - 1;
	memcpy(out, p->o.p, n);
	out[n] = '\0';
	if (st != 0 && p->e.len)
		print_message("%s: %s", argv[0], p->e.p);
	tp_free(p);
	return st;
}

static char scrape_buf[1 << 17];

/* GETs path from p's metrics server with curl; returns the status code
 * (0 when curl failed), the body in scrape_buf. */
static int curl(const struct tp_proc *p, const char *path, const char *opt1,
		const char *opt2)
{
	char url[128], *argv[16] = { "/usr/bin/env", "curl", "-sS",
				     "--max-time", "10", "-o", "-", "-w",
				     "\n%{http_code}" };
	int argc = 9;
	char *code;

	snprintf(url, sizeof(url), "http://%s%s", p->metrics, path);
	if (opt1)
		argv[argc++] = (char *)opt1;
	if (opt2)
		argv[argc++] = (char *)opt2;
	argv[argc++] = url;
	argv[argc] = NULL;
	if (run(argv, scrape_buf, sizeof(scrape_buf)))
		return 0;
	code = strrchr(scrape_buf, '\n');
	assert_non_null(code);
	*code = '\0';
	return atoi(code + 1);
}

/* The value of the sample "series" (name and labels, exact) or -1. */
static double sample(const char *body, const char *series)
{
	size_t len = strlen(series);

	for (const char *at = body; at && *at; at = strchr(at, '\n')) {
		if (*at == '\n')
			at++;
		if (!strncmp(at, series, len) && at[len] == ' ')
			return strtod(at + len + 1, NULL);
	}
	return -1;
}

static double scrape(const struct tp_proc *p, const char *series)
{
	assert_int_equal(curl(p, "/metrics", NULL, NULL), 200);
	return sample(scrape_buf, series);
}

/* Scrapes until series has value want (metrics move with the loop). */
static void wait_sample(const struct tp_proc *p, const char *series,
			double want)
{
	uint64_t deadline = tp_now_ms() + tp_wait_ms;
	double v;

	while ((v = scrape(p, series)) != want && tp_now_ms() < deadline)
		poll(NULL, 0, 50);
	if (v != want)
		fail_msg("%s is %g, want %g:\n%s", series, v, want,
			 scrape_buf);
}

static bool is_name(const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		char ch = s[i];

		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		      ch == '_' || ch == ':' || (i && ch >= '0' && ch <= '9')))
			return false;
	}
	return len > 0;
}

/*
 * The text exposition format: every sample's family has HELP and TYPE
 * lines before it, names are legal, counters end in _total, values parse.
 */
static void check_exposition(const char *body)
{
	char typed[128][96];
	int ntyped = 0;

	for (const char *at = body; *at;) {
		const char *nl = strchr(at, '\n');
		size_t n, len;

		assert_non_null(nl);
		len = (size_t)(nl - at);
		if (!strncmp(at, "# TYPE ", 7)) {
			n = strcspn(at + 7, " ");
			assert_true(is_name(at + 7, n) && n < 96);
			assert_true(!strncmp(at + 8 + n, "counter\n", 8) ||
				    !strncmp(at + 8 + n, "gauge\n", 6));
			if (!strncmp(at + 8 + n, "counter", 7))
				assert_int_equal(strncmp(at + 7 + n - 6,
							 "_total", 6), 0);
			assert_true(ntyped < 128);
			snprintf(typed[ntyped++], 96, "%.*s", (int)n, at + 7);
		} else if (at[0] != '#') {
			char *end;
			bool known = false;

			n = strcspn(at, "{ ");
			assert_true(is_name(at, n));
			for (int i = 0; i < ntyped; i++)
				known |= strlen(typed[i]) == n &&
					 !strncmp(typed[i], at, n);
			if (!known)
				fail_msg("no TYPE before '%.*s'", (int)len,
					 at);
			const char *sp = memrchr(at, ' ', len);

			strtod(sp + 1, &end);
			assert_ptr_equal(end, nl);
		}
		at = nl + 1;
	}
}

static char *series(const char *name, uint64_t peer)
{
	static char s[128];

	snprintf(s, sizeof(s), "%s{peer=\"%016" PRIx64 "\"}", name, peer);
	return s;
}

static unsigned port_of(const char *addr)
{
	return (unsigned)atoi(strrchr(addr, ':') + 1);
}

/* ESTABLISHED IPv4 sockets to remote port rport; *lport gets the local
 * port of the last one. */
static int established_to(unsigned rport, unsigned *lport)
{
	FILE *f = fopen("/proc/net/tcp", "r");
	unsigned lp, rp, st;
	char line[512];
	int n = 0;

	assert_non_null(f);
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, " %*u: %*x:%x %*x:%x %x", &lp, &rp, &st) != 3)
			continue;
		if (st == 1 && rp == rport) {
			n++;
			if (lport)
				*lport = lp;
		}
	}
	fclose(f);
	return n;
}

/* Waits until a socket listens on port (a node that prints no ready
 * line at its log level). */
static void wait_listening(unsigned port)
{
	uint64_t deadline = tp_now_ms() + tp_wait_ms;
	unsigned lp, st;
	char line[512];
	bool found = false;

	while (!found && tp_now_ms() < deadline) {
		FILE *f = fopen("/proc/net/tcp", "r");

		assert_non_null(f);
		while (fgets(line, sizeof(line), f))
			if (sscanf(line, " %*u: %*x:%x %*x:%*x %x", &lp,
				   &st) == 2 && lp == port && st == 0x0a)
				found = true;
		fclose(f);
		if (!found)
			poll(NULL, 0, 20);
	}
	assert_true(found);
}

static void wait_established(unsigned rport, int want)
{
	uint64_t deadline = tp_now_ms() + tp_wait_ms;

	while (established_to(rport, NULL) != want && tp_now_ms() < deadline)
		poll(NULL, 0, 20);
	assert_int_equal(established_to(rport, NULL), want);
}

static void write_file(const char *path, const char *fmt, ...)
{
	FILE *f = fopen(path, "w");
	va_list ap;

	assert_non_null(f);
	va_start(ap, fmt);
	vfprintf(f, fmt, ap);
	va_end(ap);
	assert_int_equal(fclose(f), 0);
}

static char *path_in(const char *name)
{
	static char paths[4][600];
	static int k;
	char *p = paths[k++ % 4];

	snprintf(p, 600, "%s/%s", dir, name);
	return p;
}

static void stop(struct tp_proc *p)
{
	assert_int_equal(kill(p->pid, SIGTERM), 0);
	assert_int_equal(tp_wait_exit(p), 0);
}

static int setup(void **state)
{
	int rc = tp_setup();

	if (rc || !mkdtemp(dir)) {
		print_error("%s: %s\n", tp_bin, strerror(rc ? -rc : errno));
		return -1;
	}
	return 0;
}

static int group_teardown(void **state)
{
	char cmd[600];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	return system(cmd) ? -1 : 0;
}

static int teardown(void **state)
{
	tp_free_all();
	return 0;
}

/* A TCP connection to addr that sends a partial request and stays. */
static int slow_client(const char *addr)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	const char *part = "GET /metrics HTTP/1.1\r\nHost: x\r\n";
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	assert_true(fd >= 0);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	sa.sin_port = htons((uint16_t)port_of(addr));
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(write(fd, part, strlen(part)), (ssize_t)strlen(part));
	return fd;
}

/*
 * A scrape before and after traffic: the counters move by what was sent;
 * wrong paths, methods and oversized requests get their status; a client
 * that never finishes its request stalls neither the node nor other
 * scrapers, and is dropped at its deadline.
 */
static void metrics_case(const char *e)
{
	struct tp_proc *a, *b;
	char big[6000];
	int slow;

	engine = e;
	a = node("--no-stdin", "--metrics", "0", NULL);
	/* PORT alone is loopback, never every interface. */
	assert_int_equal(strncmp(a->metrics, "127.0.0.1:", 10), 0);
	b = node("--connect", a->listen, NULL);
	wait_sample(a, series("pairmesh_peer_direct", b->id), 1);
	check_exposition(scrape_buf);
	assert_true(sample(scrape_buf, "pairmesh_messages_received_total") ==
		    0);
	assert_true(sample(scrape_buf, "pairmesh_peers_live") == 1);
	assert_true(sample(scrape_buf,
			   "pairmesh_connections_accepted_total") == 1);

	for (int i = 0; i < 3; i++)
		tp_put(b, "%s hello%d\n", a->listen, i);
	assert_non_null(tp_wait_line(a, false, " hello2", TP_CONTAINS));
	wait_sample(a, "pairmesh_messages_received_total", 3);
	check_exposition(scrape_buf);
	assert_true(sample(scrape_buf, "pairmesh_received_bytes_total") ==
		    18);
	assert_true(sample(scrape_buf, series(
		"pairmesh_peer_messages_received_total", b->id)) == 3);
	assert_true(sample(scrape_buf, series(
		"pairmesh_peer_received_bytes_total", b->id)) == 18);

	/* HEAD: the headers alone. */
	assert_int_equal(curl(a, "/metrics", "-I", NULL), 200);
	assert_non_null(strstr(scrape_buf, "Content-Type: text/plain; "
				"version=0.0.4"));
	assert_null(strstr(scrape_buf, "# TYPE"));
	assert_int_equal(curl(a, "/", NULL, NULL), 404);
	assert_int_equal(curl(a, "/metricsx", NULL, NULL), 404);
	assert_int_equal(curl(a, "/metrics", "-X", "POST"), 405);
	memset(big, 'x', sizeof(big));
	memcpy(big, "X-Big: ", 7);
	big[sizeof(big) - 1] = '\0';
	assert_int_equal(curl(a, "/metrics", "-H", big), 431);
	assert_true(scrape(a, "pairmesh_metrics_requests_total{code=\"404\"}")
		    == 2);
	assert_true(sample(scrape_buf,
			   "pairmesh_metrics_requests_total{code=\"405\"}") ==
		    1);

	slow = slow_client(a->metrics);
	assert_int_equal(curl(a, "/metrics", NULL, NULL), 200);
	tp_put(b, "%s during\n", a->listen);
	assert_non_null(tp_wait_line(a, false, " during", TP_CONTAINS));
	wait_sample(a, "pairmesh_metrics_clients_dropped_total"
		    "{reason=\"timeout\"}", 1);
	close(slow);

	stop(a);
	tp_close_stdin(b);
	assert_int_equal(tp_wait_exit(b), 0);
}

static void test_service_metrics_epoll(void **state)
{
	metrics_case("epoll");
}

static void test_service_metrics_io_uring(void **state)
{
	metrics_case("io_uring");
}

/* Runs `pairmesh node --config FILE` on text: exit 2 and want. */
static void config_refused(const char *text, const char *want)
{
	char *conf = path_in("bad.conf");
	char *argv[] = { tp_bin, "node", "--no-stdin", "--config", conf, NULL };
	char full[600];
	struct tp_proc *p;

	write_file(conf, "%s", text);
	p = tp_spawn(argv, -1);
	assert_int_equal(tp_wait_exit(p), 2);
	snprintf(full, sizeof(full), "%s%s", conf, want);
	if (!strstr(p->e.p, full))
		fail_msg("want '%s' for:\n%s\ngot: %s", full, text, p->e.p);
	tp_free(p);
}

/*
 * A config file starts a node; each bad line is refused with its line
 * number before anything starts; the command line wins over the file.
 */
static void test_service_config(void **state)
{
	char conf[600], key[600], want[64];
	unsigned port = tl_closed_port();
	struct tp_proc *a;

	engine = "epoll";
	/* path_in's buffers are reused: keep copies. */
	snprintf(conf, sizeof(conf), "%s", path_in("a.conf"));
	snprintf(key, sizeof(key), "%s", path_in("mesh.key"));
	config_refused("listen = 127.0.0.1:0\n# c\nbogus = 1\n",
		       ":3: unknown key 'bogus'");
	config_refused("\nlisten = nowhere\n",
		       ":2: listen 'nowhere': want HOST:PORT");
	config_refused("max-hops = 300\n",
		       ":1: max-hops '300': want 1 to 255");
	config_refused("engine = epoll\n  engine = epoll\n",
		       ":2: engine: already set on line 1");
	config_refused("# only a key\nconnect\n",
		       ":2: want 'key = value'");
	config_refused("log-level = loud\n", ":1: log-level 'loud': "
		       "want error, warn, info or debug");
	config_refused("no-auto-connect = maybe\n",
		       ":1: no-auto-connect 'maybe': want yes or no");
	config_refused("keepalive =\n", ":1: keepalive: no value");
	config_refused("key-file = missing.key\n",
		       ":1: key-file 'missing.key': ");
	config_refused("config = other.conf\n",
		       ":1: 'config' is a command-line option only");
	config_refused("connect = 127.0.0.1:1\nmetrics = 127.0.0.1:x\n",
		       ":2: metrics '127.0.0.1:x': want PORT");

	/* A good file: comments, blanks, a key file relative to it. */
	write_file(key, "%s\n", "000102030405060708090a0b0c0d0e0f"
		   "101112131415161718191a1b1c1d1e1f");
	write_file(conf, "# pairmesh\n\nlisten = 127.0.0.1:%u  # here\n"
		   "key-file = mesh.key\nstats = 3600\nno-stdin = yes\n",
		   port);
	a = ready(tp_spawn((char *[]){ tp_bin, "node", "--config", conf,
				       NULL }, -1));
	snprintf(want, sizeof(want), "127.0.0.1:%u", port);
	assert_string_equal(a->listen, want);
	stop(a);
	/* The command line wins. */
	a = ready(tp_spawn((char *[]){ tp_bin, "node", "--config", conf,
				       "--listen", "127.0.0.1:0", NULL }, -1));
	assert_true(a->port != port);
	stop(a);
	/* No such file: a usage error too. */
	a = tp_spawn((char *[]){ tp_bin, "node", "--config",
				 path_in("none.conf"), NULL }, -1);
	assert_int_equal(tp_wait_exit(a), 2);
	assert_non_null(strstr(a->e.p, "none.conf: No such file"));
	/* Nothing to re-read: a hangup ends the node, as it always did. */
	a = node("--no-stdin", NULL);
	assert_int_equal(kill(a->pid, SIGHUP), 0);
	assert_int_equal(tp_wait_exit(a), 128 + SIGHUP);
}

/* Every line of text is logfmt: ts, level, msg, then key=value pairs. */
static void check_logfmt(const char *text, const char *levels)
{
	for (const char *at = text; *at;) {
		const char *nl = strchr(at, '\n'), *s = at;
		int k = 0;

		assert_non_null(nl);
		while (s < nl) {
			size_t klen = strcspn(s, "= \n");
			static const char *const first[] = { "ts", "level",
							     "msg" };

			if (s[klen] != '=' || !klen)
				fail_msg("not logfmt: %.*s", (int)(nl - at),
					 at);
			if (k < 3)
				assert_int_equal(strncmp(s, first[k], klen),
						 0);
			s += klen + 1;
			if (k == 1) {
				size_t vlen = strcspn(s, " \n");
				char lv[16];

				snprintf(lv, sizeof(lv), ",%.*s,", (int)vlen,
					 s);
				if (!strstr(levels, lv))
					fail_msg("level not in %s: %.*s",
						 levels, (int)(nl - at), at);
			}
			if (*s == '"') {
				for (s++; *s != '"'; s++) {
					assert_true(s < nl);
					if (*s == '\\')
						s++;
				}
				s++;
			} else {
				s += strcspn(s, " \n");
			}
			k++;
			if (*s == ' ')
				s++;
		}
		assert_true(k >= 3);
		assert_int_equal(strncmp(at + 3, "20", 2), 0);
		at = nl + 1;
	}
}

/*
 * --log-level: stderr is all logfmt at that level and above, the
 * library's own diagnostics (on_log) included.
 */
static void test_service_log_level(void **state)
{
	char *key = path_in("log.key"), *conf = path_in("quiet.conf");
	unsigned port = tl_closed_port();
	struct tp_proc *a, *b, *c;
	char addr[32];

	engine = "epoll";
	write_file(key, "%s\n", "ff0102030405060708090a0b0c0d0e0f"
		   "101112131415161718191a1b1c1d1e1f");
	a = node("--no-stdin", "--key-file", key, "--log-level", "info",
		 "--metrics", "0", NULL);
	b = node("--log-level", "debug", NULL);
	tp_put(b, "%s let me in\n", a->listen);
	/* A refuses the keyless B: the library says so, through on_log. */
	assert_non_null(tp_wait_line(a, true, "msg=\"refused 127.0.0.1:",
				     TP_CONTAINS));
	assert_non_null(strstr(tp_find_line(&a->e, "msg=\"refused",
					    TP_CONTAINS),
			       "level=warn"));
	assert_non_null(strstr(tp_find_line(&a->e, "msg=\"refused",
					    TP_CONTAINS),
			       "source=library"));
	assert_non_null(tp_wait_line(b, true, "msg=\"stream closed\"",
				     TP_CONTAINS));
	/* info: no debug lines (a scrape logs one at debug). */
	assert_int_equal(curl(a, "/metrics", NULL, NULL), 200);
	tp_put(b, "nowhere:1 x\n");
	assert_non_null(tp_wait_line(b, true, "target=nowhere:1", TP_CONTAINS));
	stop(a);
	tp_close_stdin(b);
	assert_int_equal(tp_wait_exit(b), 0);
	check_logfmt(a->e.p, ",error,warn,info,");
	assert_null(strstr(a->e.p, "level=debug"));
	check_logfmt(b->e.p, ",error,warn,info,debug,");
	assert_non_null(strstr(b->e.p, "level=info msg=ready id="));

	/* error: nothing at all on a good run, messages still printed. */
	write_file(conf, "log-level = error\nlisten = 127.0.0.1:%u\n", port);
	c = tp_spawn((char *[]){ tp_bin, "node", "--config", conf, NULL }, -1);
	snprintf(addr, sizeof(addr), "127.0.0.1:%u", port);
	b = node(NULL);
	wait_listening(port);
	tp_put(b, "%s quiet please\n", addr);
	assert_non_null(tp_wait_line(c, false, " quiet please", TP_CONTAINS));
	tp_close_stdin(c);
	assert_int_equal(tp_wait_exit(c), 0);
	assert_int_equal(c->e.len, 0);
}

/* Writes A's config: metrics on, no auto-connect, the connect lines. */
static void reload_conf(const char *conf, const char *c1, const char *c2,
			const char *extra)
{
	write_file(conf, "no-auto-connect = yes\nmetrics = 0\nno-stdin = yes\n"
		   "%s%s%s%s%s%s", c1 ? "connect = " : "", c1 ? c1 : "",
		   c1 ? "\n" : "", c2 ? "connect = " : "", c2 ? c2 : "",
		   c2 ? "\n" : "");
	if (extra) {
		FILE *f = fopen(conf, "a");

		assert_non_null(f);
		fputs(extra, f);
		fclose(f);
	}
}

static void hup(struct tp_proc *p, const char *want)
{
	assert_int_equal(kill(p->pid, SIGHUP), 0);
	assert_non_null(tp_wait_line(p, true, want, TP_CONTAINS));
}

/*
 * SIGHUP: a peer added to the file is dialled, one removed is closed, and
 * the other's connection stays the same socket (same local port in the
 * kernel's table, no new dial, no reconnect). A bad file changes nothing.
 */
static void reload_case(const char *e)
{
	char *conf = path_in("reload.conf");
	unsigned lb, lc, l2;
	struct tp_proc *a, *b, *c;

	engine = e;
	b = node("--no-stdin", "--no-auto-connect", NULL);
	c = node("--no-stdin", "--no-auto-connect", NULL);
	reload_conf(conf, b->listen, NULL, NULL);
	a = node("--config", conf, NULL);
	wait_sample(a, series("pairmesh_peer_direct", b->id), 1);
	wait_established(b->port, 1);
	assert_int_equal(established_to(b->port, &lb), 1);
	assert_int_equal(established_to(c->port, NULL), 0);

	reload_conf(conf, b->listen, c->listen, NULL);
	hup(a, "reload: ok peers=2 added=1 removed=0");
	wait_established(c->port, 1);
	wait_sample(a, series("pairmesh_peer_direct", c->id), 1);
	assert_true(sample(scrape_buf, series("pairmesh_peer_direct",
					      b->id)) == 1);
	assert_true(sample(scrape_buf, "pairmesh_connections_dialled_total")
		    == 2);
	assert_true(sample(scrape_buf, "pairmesh_reconnects_total") == 0);
	assert_true(sample(scrape_buf, "pairmesh_config_peers") == 2);
	assert_int_equal(established_to(b->port, &l2), 1);
	assert_int_equal(l2, lb);
	assert_int_equal(established_to(c->port, &lc), 1);

	reload_conf(conf, c->listen, NULL, NULL);
	hup(a, "reload: ok peers=1 added=0 removed=1");
	wait_established(b->port, 0);
	wait_sample(a, series("pairmesh_peer_direct", b->id), 0);
	assert_true(sample(scrape_buf, series("pairmesh_peer_direct",
					      c->id)) == 1);
	assert_int_equal(established_to(c->port, &l2), 1);
	assert_int_equal(l2, lc);

	/* A bad line: the old configuration stays, C untouched. */
	reload_conf(conf, NULL, NULL, "bogus = 1\n");
	hup(a, "error: reload: ");
	assert_non_null(strstr(tp_find_line(&a->e, "error: reload: ",
					    TP_CONTAINS),
			       ":4: unknown key 'bogus'"));
	wait_sample(a, "pairmesh_config_reloads_total{result=\"error\"}", 1);
	assert_true(sample(scrape_buf,
			   "pairmesh_config_reloads_total{result=\"ok\"}") ==
		    2);
	assert_int_equal(established_to(c->port, &l2), 1);
	assert_int_equal(l2, lc);
	/* A start-only key changed: applied at the next start only. */
	reload_conf(conf, c->listen, NULL, "max-hops = 3\n");
	hup(a, "restart-needed=max-hops");
	stop(a);
	stop(b);
	stop(c);
}

static void test_service_reload_epoll(void **state)
{
	reload_case("epoll");
}

static void test_service_reload_io_uring(void **state)
{
	reload_case("io_uring");
}

/* The unit's value of key ("ExecStart", ...), with the paths of the
 * install replaced by ours; NULL when the unit has no such line. */
static char *unit_value(const char *unit, const char *key, const char *conf)
{
	char line[1024], *out = NULL;
	FILE *f = fopen(unit, "r");
	size_t klen = strlen(key);

	assert_non_null(f);
	while (!out && fgets(line, sizeof(line), f)) {
		char buf[2048] = "", *at, *v;

		if (strncmp(line, key, klen) || line[klen] != '=')
			continue;
		v = line + klen + 1;
		v[strcspn(v, "\n")] = '\0';
		for (at = v; *at;) {
			if (!strncmp(at, "/usr/local/bin/pairmesh", 23)) {
				strcat(buf, tp_bin);
				at += 23;
			} else if (conf && !strncmp(at, "/etc/pairmesh/", 14)) {
				strcat(buf, conf);
				at += strcspn(at, " ");
			} else {
				strncat(buf, at, 1);
				at++;
			}
		}
		out = strdup(buf);
	}
	fclose(f);
	return out;
}

/* systemd-analyze verify on both units, binary path pointed at ours. */
static void test_service_unit_verify(void **state)
{
	static const char *const units[] = { "pairmesh.service",
					     "pairmesh@.service" };
	char out[4096], cmd[2048];

	if (system("command -v systemd-analyze >/dev/null 2>&1")) {
		print_message("skipped: systemd-analyze not found (package "
			      "systemd); the unit's commands are still run "
			      "by test_service_unit_exec\n");
		skip();
	}
	for (size_t i = 0; i < 2; i++) {
		char src[64], *dst = path_in(units[i]);
		FILE *in, *o;
		char line[1024];

		snprintf(src, sizeof(src), "tools/%s", units[i]);
		in = fopen(src, "r");
		assert_non_null(in);
		o = fopen(dst, "w");
		assert_non_null(o);
		while (fgets(line, sizeof(line), in)) {
			char *at = strstr(line, "/usr/local/bin/pairmesh");

			if (at)
				fprintf(o, "%.*s%s%s", (int)(at - line), line,
					tp_bin, at + 23);
			else
				fputs(line, o);
		}
		fclose(in);
		fclose(o);
		/* Warnings do not change the exit status: any output
		 * fails too. The man page may not be installed yet. */
		snprintf(cmd, sizeof(cmd), "systemd-analyze verify --man=no "
			 "'%s' 2>&1", dst);
		char *argv[] = { "/bin/sh", "-c", cmd, NULL };

		assert_int_equal(run(argv, out, sizeof(out)), 0);
		if (out[0])
			fail_msg("systemd-analyze verify %s: %s", units[i],
				 out);
	}
}

/* Waits for one sd_notify datagram on fd; returns its text (static). */
static const char *notified(int fd)
{
	static char msg[256];
	struct pollfd p = { .fd = fd, .events = POLLIN };
	ssize_t r;

	if (poll(&p, 1, tp_wait_ms) != 1)
		return "(nothing)";
	r = recv(fd, msg, sizeof(msg) - 1, 0);
	assert_true(r > 0);
	msg[r] = '\0';
	return msg;
}

/*
 * The unit without systemd: ExecStart run with a NOTIFY_SOCKET of ours
 * (READY=1), ExecReload run after the config changed (RELOADING=1, then
 * READY=1, the new peer connected), then SIGTERM as systemd stops it
 * (STOPPING=1, exit 0).
 */
static void test_service_unit_exec(void **state)
{
	char *conf = path_in("pairmesh.conf"), *sock = path_in("notify");
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	char *start, *reload, *type, cmd[2048], out[256];
	struct tp_proc *a, *b, *c;
	int fd;

	engine = "epoll";
	start = unit_value("tools/pairmesh.service", "ExecStart", conf);
	reload = unit_value("tools/pairmesh.service", "ExecReload", NULL);
	type = unit_value("tools/pairmesh.service", "Type", NULL);
	assert_non_null(start);
	assert_non_null(reload);
	assert_string_equal(type, "notify");
	free(type);

	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	assert_true(fd >= 0);
	strcpy(sa.sun_path, sock);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);

	b = node("--no-stdin", "--no-auto-connect", NULL);
	c = node("--no-stdin", "--no-auto-connect", NULL);
	write_file(conf, "engine = %s\nno-auto-connect = yes\n"
		   "connect = %s\n", engine, b->listen);
	snprintf(cmd, sizeof(cmd), "NOTIFY_SOCKET='%s' exec %s </dev/null",
		 sock, start);
	a = ready(tp_spawn((char *[]){ "/bin/sh", "-c", cmd, NULL }, -1));
	assert_string_equal(notified(fd), "READY=1");
	wait_established(b->port, 1);

	write_file(conf, "engine = %s\nno-auto-connect = yes\n"
		   "connect = %s\nconnect = %s\n", engine, b->listen,
		   c->listen);
	snprintf(cmd, sizeof(cmd), "MAINPID=%d; %s", (int)a->pid, reload);
	assert_int_equal(run((char *[]){ "/bin/sh", "-c", cmd, NULL }, out,
			     sizeof(out)), 0);
	assert_string_equal(notified(fd), "RELOADING=1");
	assert_string_equal(notified(fd), "READY=1");
	assert_non_null(tp_wait_line(a, true, "reload: ok peers=2 added=1",
				     TP_CONTAINS));
	wait_established(c->port, 1);
	assert_int_equal(established_to(b->port, NULL), 1);

	stop(a);
	assert_string_equal(notified(fd), "STOPPING=1");
	stop(b);
	stop(c);
	close(fd);
	unlink(sock);
	free(start);
	free(reload);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(test_service_config, teardown),
		cmocka_unit_test_teardown(test_service_log_level, teardown),
		cmocka_unit_test_teardown(test_service_metrics_epoll,
					  teardown),
		cmocka_unit_test_teardown(test_service_metrics_io_uring,
					  teardown),
		cmocka_unit_test_teardown(test_service_reload_epoll, teardown),
		cmocka_unit_test_teardown(test_service_reload_io_uring,
					  teardown),
		cmocka_unit_test_teardown(test_service_unit_exec, teardown),
		cmocka_unit_test_teardown(test_service_unit_verify, teardown),
	};

	return cmocka_run_group_tests(tests, setup, group_teardown);
}
