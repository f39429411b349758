/* SPDX-License-Identifier: MIT */
/*
 * Drives build/pairmesh as a user would: separate processes, lines on
 * stdin, stdout and stderr read through pipes. Every wait is bounded by a
 * deadline; leftovers are killed in the teardown. $BUILD names the build
 * directory (default "build").
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
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
#include <unistd.h>
#include <cmocka.h>

#include "lib/proc.h"
#include "lib/testlib.h"

#define FLOOD_LINES	16384	/* 16 MiB: more than rings and sockets hold */
#define FLOOD_LEN	1024

/* Fails with the line if p printed an error on stderr. */
static void assert_no_error(const struct tp_proc *p)
{
	const char *l = tp_find_line(&p->e, "error:", TP_PREFIX);

	if (l)
		fail_msg("pid %d printed: %.*s", (int)p->pid,
			 (int)strcspn(l, "\n"), l);
}

/*
 * Starts `pairmesh node --engine engine extra...`. Returns the process once
 * it printed its ready line, or NULL if it exited first (p->status, the
 * stderr text are kept in *failed).
 */
static struct tp_proc *start_node(const char *engine,
				  struct tp_proc **failed, ...)
{
	char *argv[16] = { tp_bin, "node", "--engine", (char *)engine };
	char listen[64], eng[16];
	int argc = 4;
	const char *rl;
	struct tp_proc *p;
	uint64_t id;
	va_list ap;

	va_start(ap, failed);
	while ((argv[argc] = va_arg(ap, char *)) != NULL) {
		argc++;
		assert_true(argc < 15);
	}
	va_end(ap);
	p = tp_spawn(argv, -1);
	if (failed)
		*failed = p;
	rl = tp_ready(p);
	if (!rl)
		return NULL;
	/* The documented text form, its fields in this order. */
	assert_int_equal(sscanf(rl, "ready id=%16" SCNx64 " listen=%63s "
				"engine=%15s", &id, listen, eng), 3);
	assert_true(id == p->id);
	assert_string_equal(listen, p->listen);
	assert_string_equal(eng, p->engine);
	if (strcmp(engine, "auto"))
		assert_string_equal(p->engine, engine);
	return p;
}

/* Starts a node or skips the test when the kernel refuses io_uring. */
static struct tp_proc *start_or_skip(const char *engine, ...)
{
	struct tp_proc *failed = NULL, *p;
	char *extra[8] = { 0 };
	va_list ap;
	int i = 0;

	va_start(ap, engine);
	while ((extra[i] = va_arg(ap, char *)) != NULL) {
		i++;
		assert_true(i < 7);
	}
	va_end(ap);
	p = start_node(engine, &failed, extra[0], extra[1], extra[2],
		       extra[3], extra[4], extra[5], extra[6], NULL);
	if (p)
		return p;
	int st = tp_wait_exit(failed);

	if (!strcmp(engine, "io_uring") && st == 1 &&
	    tp_find_line(&failed->e, "error: ", TP_PREFIX)) {
		print_message("skipped: io_uring refused here: %s",
			      failed->e.p);
		skip();
	}
	fail_msg("node did not start (exit %d): %s", st, failed->e.p);
	return NULL;
}

static char *idline(uint64_t id, const char *text)
{
	static char line[256];

	snprintf(line, sizeof(line), "%016" PRIx64 " %s", id, text);
	return line;
}

static int count_str(const char *hay, const char *needle)
{
	int n = 0;

	for (const char *at = hay; (at = strstr(at, needle)); at++)
		n++;
	return n;
}

/* A small JSON syntax checker: enough to say a stats line parses. */
static void json_ws(const char **s)
{
	while (**s == ' ' || **s == '\t' || **s == '\n' || **s == '\r')
		(*s)++;
}

static bool json_string(const char **s)
{
	if (**s != '"')
		return false;
	for ((*s)++; **s != '"'; (*s)++) {
		if (!**s || (unsigned char)**s < 0x20)
			return false;
		if (**s == '\\' && (!*++*s || !strchr("\"\\/bfnrtu", **s)))
			return false;
	}
	(*s)++;
	return true;
}

static bool json_value(const char **s);

/* An object ('{', '}') or an array ('[', ']'), after the opening. */
static bool json_members(const char **s, char close, bool keys)
{
	json_ws(s);
	if (**s == close) {
		(*s)++;
		return true;
	}
	for (;;) {
		json_ws(s);
		if (keys) {
			if (!json_string(s))
				return false;
			json_ws(s);
			if (*(*s)++ != ':')
				return false;
		}
		if (!json_value(s))
			return false;
		json_ws(s);
		if (**s == close) {
			(*s)++;
			return true;
		}
		if (*(*s)++ != ',')
			return false;
	}
}

static bool json_value(const char **s)
{
	static const char *const words[] = { "true", "false", "null" };
	char *end;

	json_ws(s);
	switch (**s) {
	case '{':
		(*s)++;
		return json_members(s, '}', true);
	case '[':
		(*s)++;
		return json_members(s, ']', false);
	case '"':
		return json_string(s);
	}
	for (size_t i = 0; i < 3; i++) {
		size_t l = strlen(words[i]);

		if (!strncmp(*s, words[i], l)) {
			*s += l;
			return true;
		}
	}
	if (**s != '-' && (**s < '0' || **s > '9'))
		return false;
	strtod(*s, &end);
	*s = end;
	return true;
}

static bool json_valid(const char *line)
{
	const char *s = line;

	if (!json_value(&s))
		return false;
	json_ws(&s);
	return !*s;
}

/* The last stats line of p, as a string of its own (free it). */
static char *last_stats(struct tp_proc *p)
{
	const char *l = NULL;

	if (!tp_count_lines(&p->e, "{", TP_PREFIX, &l))
		return NULL;
	return strndup(l, (size_t)(strchr(l, '\n') - l));
}

/* Asks p for a stats line with SIGUSR1 and returns it (free it). */
static char *stats_now(struct tp_proc *p)
{
	int before = tp_count_lines(&p->e, "{", TP_PREFIX, NULL);
	uint64_t deadline = tp_now_ms() + tp_wait_ms;

	assert_int_equal(kill(p->pid, SIGUSR1), 0);
	while (tp_count_lines(&p->e, "{", TP_PREFIX, NULL) == before &&
	       tp_now_ms() < deadline && !p->exited)
		tp_pump(p, 50);
	if (tp_count_lines(&p->e, "{", TP_PREFIX, NULL) == before)
		fail_msg("no stats line after SIGUSR1; stderr:\n%s",
			 p->e.p);
	return last_stats(p);
}

/* The object about node id in a stats line's peers, or "" (free it). */
static char *peer_obj(const char *line, uint64_t id)
{
	char key[64];
	const char *at, *end;

	snprintf(key, sizeof(key), "{\"id\":\"%016" PRIx64 "\"", id);
	at = strstr(line, key);
	if (!at)
		return strdup("");
	end = strchr(at, '}');
	assert_non_null(end);
	return strndup(at, (size_t)(end - at + 1));
}

/* The number after "key": in s (the first one), or UINT64_MAX. */
static uint64_t json_u64(const char *s, const char *key)
{
	char k[64];
	const char *at;

	snprintf(k, sizeof(k), "\"%s\":", key);
	at = strstr(s, k);
	return at ? strtoull(at + strlen(k), NULL, 10) : UINT64_MAX;
}

/* The node's own "relayed" counter (the one after the peers array). */
static uint64_t top_relayed(const char *line)
{
	const char *at = strstr(line, "],\"relayed\":");

	assert_non_null(at);
	return strtoull(at + strlen("],\"relayed\":"), NULL, 10);
}

/* Waits until p's stats show node id with field ("direct" or
 * "reachable") true. */
static void wait_peer(struct tp_proc *p, uint64_t id, const char *field)
{
	uint64_t deadline = tp_now_ms() + tp_wait_ms;
	char want[32];

	snprintf(want, sizeof(want), "\"%s\":true", field);
	for (;;) {
		char *line = stats_now(p);
		char *obj = peer_obj(line, id);
		bool ok = strstr(obj, want) != NULL;

		free(obj);
		if (ok || tp_now_ms() >= deadline) {
			if (!ok)
				fail_msg("%016" PRIx64 " never %s for %016"
					 PRIx64 ": %s", id, field, p->id,
					 line);
			free(line);
			return;
		}
		free(line);
		tp_pump(p, 50);
	}
}

static int setup(void **state)
{
	int rc = tp_setup();

	if (rc) {
		print_error("%s: %s\n", tp_bin, strerror(-rc));
		return -1;
	}
	return 0;
}

static int teardown(void **state)
{
	tp_free_all();
	return 0;
}

/* Runs the tool once; *out stays valid until the next run_tool(). */
static int run_tool(char *arg1, char *arg2, struct tp_proc **out)
{
	char *argv[] = { tp_bin, arg1, arg2, NULL };
	struct tp_proc *p;

	if (*out)
		tp_free(*out);
	p = tp_spawn(argv, -1);

	tp_close_stdin(p);
	*out = p;
	return tp_wait_exit(p);
}

static void test_cli_usage(void **state)
{
	struct tp_proc *p = NULL;

	assert_int_equal(run_tool("node", "--bogus", &p), 2);
	assert_non_null(strstr(p->e.p, "Usage"));
	assert_int_equal(run_tool("node", "--engine=nope", &p), 2);
	assert_int_equal(run_tool("node", "stray", &p), 2);
	assert_int_equal(run_tool("node", "--listen", &p), 2);
	assert_int_equal(run_tool("node", "--id=0", &p), 2);
	assert_int_equal(run_tool("node", "--listen=nowhere", &p), 2);
	assert_int_equal(run_tool("node", "--connect=1.2.3.4", &p), 2);
	assert_int_equal(run_tool("node", "--max-hops=0", &p), 2);
	assert_int_equal(run_tool("node", "--max-hops=256", &p), 2);
	assert_int_equal(run_tool("node", "--stats=0", &p), 2);
	assert_int_equal(run_tool("node", "--stats=soon", &p), 2);
	assert_int_equal(run_tool("node", "--stats", &p), 2);
	assert_int_equal(run_tool("nosuch", NULL, &p), 2);
	assert_int_equal(run_tool(NULL, NULL, &p), 2);
	/* A bad PAIRMESH_ENGINE is named, not blamed on --listen. */
	char *env = getenv("PAIRMESH_ENGINE");

	env = env ? strdup(env) : NULL;
	assert_int_equal(setenv("PAIRMESH_ENGINE", "nope", 1), 0);
	assert_int_equal(run_tool("node", NULL, &p), 2);
	assert_int_equal(env ? setenv("PAIRMESH_ENGINE", env, 1) :
			 unsetenv("PAIRMESH_ENGINE"), 0);
	free(env);
	assert_non_null(strstr(p->e.p, "PAIRMESH_ENGINE 'nope'"));
	assert_null(strstr(p->e.p, "--listen '"));

	assert_int_equal(run_tool("--help", NULL, &p), 0);
	assert_non_null(strstr(p->o.p, "node"));
	assert_int_equal(run_tool("node", "--help", &p), 0);
	assert_non_null(strstr(p->o.p, "ready id="));
	assert_non_null(strstr(p->o.p, "Exit status"));
	assert_non_null(strstr(p->o.p, "--no-auto-connect"));
	assert_non_null(strstr(p->o.p, "--stats SECONDS"));
	assert_int_equal(run_tool("--version", NULL, &p), 0);
	assert_non_null(strstr(p->o.p, "pairmesh "));
}

/*
 * Two nodes: A sends to B by address, B answers by id and by address over
 * the one connection, self sends, EOF ends A and B sees the close.
 */
static void exchange(const char *engine)
{
	struct tp_proc *a = start_or_skip(engine, NULL);
	struct tp_proc *b = start_or_skip(engine, NULL);

	assert_int_not_equal(a->id, b->id);
	tp_put(a, "%s hello b\n", b->listen);
	assert_non_null(tp_wait_line(b, false, idline(a->id, "hello b"),
				     TP_EXACT));
	tp_put(b, "%016" PRIx64 " hi a by id\n", a->id);
	assert_non_null(tp_wait_line(a, false, idline(b->id, "hi a by id"),
				     TP_EXACT));
	tp_put(b, "%s hi a by address\n", a->listen);
	assert_non_null(tp_wait_line(a, false, idline(b->id, "hi a by address"),
				     TP_EXACT));
	assert_int_equal(tl_tcp_established_between(a->port, b->port), 1);

	tp_put(a, "self to myself\n");
	assert_non_null(tp_wait_line(a, false, idline(a->id, "to myself"),
				     TP_EXACT));
	tp_put(a, "self \n");
	assert_non_null(tp_wait_line(a, false, idline(a->id, ""), TP_EXACT));
	tp_put(a, "self tab\there\n");
	assert_non_null(tp_wait_line(a, false, idline(a->id, "tab\\x09here"),
				     TP_EXACT));

	tp_close_stdin(a);
	assert_int_equal(tp_wait_exit(a), 0);
	char closed[64];

	snprintf(closed, sizeof(closed), "closed: %016" PRIx64, a->id);
	assert_non_null(tp_wait_line(b, true, closed, TP_PREFIX));
	assert_no_error(a);

	assert_int_equal(kill(b->pid, SIGTERM), 0);
	assert_int_equal(tp_wait_exit(b), 0);
}

static void test_cli_exchange_epoll(void **state)
{
	exchange("epoll");
}

static void test_cli_exchange_io_uring(void **state)
{
	exchange("io_uring");
}

static void errors(const char *engine)
{
	struct tp_proc *a = start_or_skip(engine, NULL);
	unsigned port = tl_refused_port();
	char want[128];

	tp_put(a, "0123456789abcdef nobody\n");
	assert_non_null(tp_wait_line(a, true,
				     "error: 0123456789abcdef: no route",
				     TP_EXACT));
	tp_put(a, "* nobody\n");
	assert_non_null(tp_wait_line(a, true, "error: *: no peers", TP_EXACT));
	tp_put(a, "no-such-address hi\n");
	assert_non_null(tp_wait_line(a, true, "error: no-such-address",
				     TP_PREFIX));
	tp_put(a, "127.0.0.1:99999 hi\n");
	assert_non_null(tp_wait_line(a, true, "error: 127.0.0.1:99999",
				     TP_PREFIX));
	tp_put(a, "127.0.0.1:%u refused\n", port);
	snprintf(want, sizeof(want), "error: 127.0.0.1:%u: connection "
		 "refused", port);
	assert_non_null(tp_wait_line(a, true, want, TP_PREFIX));

	/* Still alive and well. */
	tp_put(a, "self still here\n");
	assert_non_null(tp_wait_line(a, false, idline(a->id, "still here"),
				     TP_EXACT));
	assert_int_equal(kill(a->pid, SIGTERM), 0);
	assert_int_equal(tp_wait_exit(a), 0);
}

static void test_cli_errors_epoll(void **state)
{
	errors("epoll");
}

static void test_cli_errors_io_uring(void **state)
{
	errors("io_uring");
}

/* Too big for max_message, too long for the line buffer: errors only. */
static void test_cli_long_lines(void **state)
{
	struct tp_proc *a = start_or_skip("auto", NULL);
	size_t big = 300 << 10, huge = (1 << 20) + 4096;
	char *line = malloc(huge + 1);

	assert_non_null(line);
	memcpy(line, "self ", 5);
	memset(line + 5, 'x', huge - 5);
	line[big] = '\n';
	/* The node reads while we write: a blocking write is fine. */
	assert_int_equal(write(a->in, line, big + 1), (ssize_t)big + 1);
	assert_non_null(tp_wait_line(a, true, "error: self: message too big",
				     TP_PREFIX));
	line[big] = 'x';
	line[huge] = '\n';
	assert_int_equal(write(a->in, line, huge + 1), (ssize_t)huge + 1);
	assert_non_null(tp_wait_line(a, true, "error: self: line longer",
				     TP_PREFIX));
	free(line);
	tp_put(a, "self after\n");
	assert_non_null(tp_wait_line(a, false, idline(a->id, "after"),
				     TP_EXACT));
	assert_null(tp_find_line(&a->o, idline(a->id, "xxx"), TP_PREFIX));
	tp_close_stdin(a);
	assert_int_equal(tp_wait_exit(a), 0);
}

/*
 * A regular file on stdin (which epoll cannot watch): every line is sent,
 * the last one without a newline too, and self messages are delivered
 * before the node exits.
 */
static void test_cli_stdin_file(void **state)
{
	char path[] = "/tmp/pairmesh-test-XXXXXX";
	const char text[] = "self one\n\nself two\nself three";
	char *argv[] = { tp_bin, "node", "--engine", "epoll", NULL };
	int fd = mkstemp(path);
	struct tp_proc *p;
	char want[128];

	assert_true(fd >= 0);
	unlink(path);
	assert_int_equal(write(fd, text, sizeof(text) - 1),
			 (ssize_t)sizeof(text) - 1);
	assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
	p = tp_spawn(argv, fd);
	close(fd);
	assert_int_equal(tp_wait_exit(p), 0);
	assert_non_null(tp_find_line(&p->e, "ready ", TP_PREFIX));
	assert_int_equal(sscanf(p->e.p, "ready id=%16" SCNx64, &p->id), 1);
	snprintf(want, sizeof(want), "%016" PRIx64 " one\n%016" PRIx64
		 " two\n%016" PRIx64 " three\n", p->id, p->id, p->id);
	assert_string_equal(p->o.p, want);
}

/* A second node on a busy address fails to start: exit 1, error line. */
static void test_cli_address_in_use(void **state)
{
	struct tp_proc *a = start_or_skip("auto", NULL), *failed = NULL;

	assert_null(start_node("auto", &failed, "--listen", a->listen, NULL));
	assert_int_equal(tp_wait_exit(failed), 1);
	assert_non_null(tp_find_line(&failed->e, "error: ", TP_PREFIX));
	tp_close_stdin(a);
	assert_int_equal(tp_wait_exit(a), 0);
}

/* --connect at start, then SIGTERM: exit 0 and the peer sees the close. */
static void test_cli_sigterm(void **state)
{
	struct tp_proc *a = start_or_skip("auto", NULL);
	struct tp_proc *b = start_or_skip("auto", "--connect", a->listen,
					  "--id", "00000000000000b0", NULL);
	char closed[64];

	assert_int_equal(b->id, 0xb0);
	tp_put(b, "%s via connect\n", a->listen);
	assert_non_null(tp_wait_line(a, false, idline(0xb0, "via connect"),
				     TP_EXACT));
	assert_int_equal(tl_tcp_established_between(a->port, b->port), 1);
	assert_int_equal(kill(b->pid, SIGTERM), 0);
	assert_int_equal(tp_wait_exit(b), 0);
	snprintf(closed, sizeof(closed), "closed: %016" PRIx64, b->id);
	assert_non_null(tp_wait_line(a, true, closed, TP_PREFIX));
	assert_int_equal(kill(a->pid, SIGINT), 0);
	assert_int_equal(tp_wait_exit(a), 0);
}

/*
 * B does not read its stdout for a while, so A's TX ring fills and A must
 * stop reading stdin rather than drop lines. Then everything arrives, in
 * order.
 */
static void test_cli_backpressure(void **state)
{
	struct tp_proc *a = start_or_skip("auto", NULL);
	struct tp_proc *b = start_or_skip("auto", NULL);
	char *line = malloc(FLOOD_LEN + 64);
	size_t llen, off = 0, got = 0, seen = 0;
	uint64_t deadline = tp_now_ms() + 6 * tp_wait_ms;
	unsigned sent = 0;
	int stalls = 0;

	assert_non_null(line);
	assert_int_equal(fcntl(a->in, F_SETFL, O_NONBLOCK), 0);
	llen = 0;
	while (sent < FLOOD_LINES && tp_now_ms() < deadline) {
		if (off == llen) {
			llen = (size_t)snprintf(line, FLOOD_LEN + 64,
						"%s %08u ", b->listen, sent);
			memset(line + llen, 'a' + sent % 26, FLOOD_LEN - llen);
			line[FLOOD_LEN - 1] = '\n';
			llen = FLOOD_LEN;
			off = 0;
		}
		ssize_t r = write(a->in, line + off, llen - off);

		if (r > 0) {
			off += (size_t)r;
			if (off == llen)
				sent++;
			continue;
		}
		assert_int_equal(errno, EAGAIN);
		tp_pump(a, 0);
		/* Let B's stdout back up until A stalls for a while. */
		if (stalls < 20) {
			stalls++;
			poll(NULL, 0, 25);
		} else {
			tp_pump(b, 10);
		}
	}
	assert_int_equal(sent, FLOOD_LINES);
	tp_close_stdin(a);
	free(line);

	/* Check B's lines as they come, then drop them. */
	while (got < FLOOD_LINES && tp_now_ms() < deadline) {
		char *nl;

		tp_pump(b, 50);
		tp_pump(a, 0);
		while ((nl = memchr(b->o.p + seen, '\n', b->o.len - seen))) {
			char want[64];
			int wl = snprintf(want, sizeof(want), "%016" PRIx64
					  " %08zu ", a->id, got);

			/* "ID " + the text after "ADDR " */
			assert_int_equal(nl - (b->o.p + seen),
					 17 + FLOOD_LEN - 1 -
					 strlen(b->listen) - 1);
			assert_memory_equal(b->o.p + seen, want, (size_t)wl);
			seen = (size_t)(nl - b->o.p) + 1;
			got++;
		}
		memmove(b->o.p, b->o.p + seen, b->o.len - seen);
		b->o.len -= seen;
		seen = 0;
	}
	assert_int_equal(got, FLOOD_LINES);
	assert_int_equal(tp_wait_exit(a), 0);
	assert_no_error(a);
	tp_close_stdin(b);
	assert_int_equal(tp_wait_exit(b), 0);
}

/*
 * Three nodes, each told about one other (B knows A, C knows B), form the
 * full mesh; a line to '*' reaches each other node exactly once, although
 * every node also hears it again from the third one.
 */
static void test_cli_broadcast(void **state)
{
	struct tp_proc *a = start_or_skip("auto", NULL);
	struct tp_proc *b = start_or_skip("auto", "--connect", a->listen, NULL);
	struct tp_proc *c = start_or_skip("auto", "--connect", b->listen, NULL);
	struct tp_proc *all[] = { a, b, c };
	char text[64];

	/* Auto-connect: A and C find each other through B. */
	wait_peer(a, c->id, "direct");
	wait_peer(c, a->id, "direct");
	for (int i = 0; i < 3; i++)
		tp_put(all[i], "* to all from %d\n", i);
	/* A second round: copies of the first are ahead of it on every
	 * path, so when it is in, any duplicate of the first is too. */
	for (int i = 0; i < 3; i++)
		tp_put(all[i], "* end from %d\n", i);
	for (int i = 0; i < 3; i++) {
		for (int j = 0; j < 3; j++) {
			if (i == j)
				continue;
			snprintf(text, sizeof(text), "end from %d", j);
			assert_non_null(tp_wait_line(all[i], false,
						     idline(all[j]->id, text),
						     TP_EXACT));
		}
	}
	for (int i = 0; i < 3; i++) {
		tp_pump(all[i], 100);
		for (int j = 0; j < 3; j++) {
			snprintf(text, sizeof(text), "to all from %d", j);
			assert_int_equal(tp_count_lines(&all[i]->o,
							idline(all[j]->id,
							       text),
							TP_EXACT, NULL),
					 i == j ? 0 : 1);
		}
		/* 2 + 2 lines: nothing else, nothing twice. */
		assert_int_equal(tp_count_lines(&all[i]->o, "", TP_PREFIX,
						NULL), 4);
		assert_no_error(all[i]);
	}
	for (int i = 0; i < 3; i++)
		tp_close_stdin(all[i]);
	for (int i = 0; i < 3; i++)
		assert_int_equal(tp_wait_exit(all[i]), 0);
}

/* X - Y - Z, none dialling what it learns: X and Z talk through Y. */
static void chain(struct tp_proc **x, struct tp_proc **y, struct tp_proc **z,
		  const char *x_hops)
{
	*x = start_or_skip("auto", "--no-auto-connect", "--max-hops", x_hops,
			   NULL);
	*y = start_or_skip("auto", "--no-auto-connect", "--connect",
			   (*x)->listen, NULL);
	*z = start_or_skip("auto", "--no-auto-connect", "--connect",
			   (*y)->listen, NULL);
	/* Both ends know the whole chain: no mesh news is left for Y to
	 * relay, so its counter moves only for our messages. */
	wait_peer(*x, (*z)->id, "reachable");
	wait_peer(*z, (*x)->id, "reachable");
}

static void test_cli_relay(void **state)
{
	struct tp_proc *x, *y, *z;
	char *line, *obj, via[32];
	uint64_t before;

	chain(&x, &y, &z, "16");
	line = stats_now(y);
	before = top_relayed(line);
	free(line);

	tp_put(x, "%016" PRIx64 " to z through y\n", z->id);
	assert_non_null(tp_wait_line(z, false, idline(x->id, "to z through y"),
				     TP_EXACT));
	tp_put(z, "%016" PRIx64 " back to x\n", x->id);
	assert_non_null(tp_wait_line(x, false, idline(z->id, "back to x"),
				     TP_EXACT));
	tp_put(x, "* down the chain\n");
	assert_non_null(tp_wait_line(y, false, idline(x->id, "down the chain"),
				     TP_EXACT));
	assert_non_null(tp_wait_line(z, false, idline(x->id, "down the chain"),
				     TP_EXACT));

	/* Y forwarded 3 frames: the two messages and the broadcast. */
	line = stats_now(y);
	assert_int_equal(top_relayed(line), before + 3);
	free(line);

	/* X reaches Z in 2 hops via Y, with no stream of its own. */
	line = stats_now(x);
	assert_true(json_valid(line));
	assert_int_equal(count_str(line, "\"direct\":true"), 1);
	obj = peer_obj(line, z->id);
	snprintf(via, sizeof(via), "\"via\":\"%016" PRIx64 "\"", y->id);
	assert_non_null(strstr(obj, "\"direct\":false"));
	assert_non_null(strstr(obj, "\"reachable\":true"));
	assert_int_equal(json_u64(obj, "hops"), 2);
	assert_non_null(strstr(obj, via));
	free(obj);
	free(line);

	tp_pump(z, 100);
	assert_int_equal(tp_count_lines(&z->o, idline(x->id, "to z through y"),
					TP_EXACT, NULL), 1);
	assert_int_equal(tp_count_lines(&z->o, idline(x->id, "down the chain"),
					TP_EXACT, NULL), 1);
	assert_no_error(x);
	assert_no_error(z);
	tp_close_stdin(x);
	assert_int_equal(tp_wait_exit(x), 0);
}

/*
 * With --max-hops 1 X's message to Z dies at Y, which tells X: X prints
 * "error: Z: unreachable", Z prints nothing. An unknown id: "no route".
 */
static void test_cli_unreachable(void **state)
{
	struct tp_proc *x, *y, *z;
	char want[64], *line;

	chain(&x, &y, &z, "1");
	tp_put(x, "%016" PRIx64 " too far\n", z->id);
	snprintf(want, sizeof(want), "error: %016" PRIx64 ": unreachable",
		 z->id);
	assert_non_null(tp_wait_line(x, true, want, TP_EXACT));
	line = stats_now(y);
	assert_int_equal(json_u64(line, "hop_limit"), 1);
	free(line);
	line = stats_now(x);
	assert_int_equal(json_u64(line, "unreachable"), 1);
	free(line);

	tp_put(x, "00000000000000ff hi\n");
	assert_non_null(tp_wait_line(x, true,
				     "error: 00000000000000ff: no route",
				     TP_EXACT));
	/* Y is one hop away: that still works, and Z got nothing. */
	tp_put(x, "%016" PRIx64 " near\n", y->id);
	assert_non_null(tp_wait_line(y, false, idline(x->id, "near"),
				     TP_EXACT));
	tp_pump(z, 100);
	assert_int_equal(z->o.len, 0);
	tp_close_stdin(x);
	assert_int_equal(tp_wait_exit(x), 0);
}

/* --key-file: nodes holding the same key talk; a node without it is
 * refused (an error line naming the target) and delivers nothing. */
static void test_cli_key_file(void **state)
{
	char k1[] = "/tmp/pm-cli-key-XXXXXX";
	const char *hex = "000102030405060708090a0b0c0d0e0f"
			  "101112131415161718191a1b1c1d1e1f\n";
	struct tp_proc *a, *b, *c;
	char want[128];
	int fd = mkstemp(k1);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, hex, strlen(hex)), (ssize_t)strlen(hex));
	close(fd);
	a = start_or_skip("epoll", "--key-file", k1, NULL);
	b = start_or_skip("epoll", "--key-file", k1, NULL);
	c = start_or_skip("epoll", NULL);
	tp_put(b, "%s keyed hello\n", a->listen);
	assert_non_null(tp_wait_line(a, false, idline(b->id, "keyed hello"),
				     TP_EXACT));
	tp_put(c, "%s intruder\n", a->listen);
	snprintf(want, sizeof(want), "error: %s: ", a->listen);
	assert_non_null(tp_wait_line(c, true, want, TP_PREFIX));
	tp_pump(a, 200);
	assert_null(tp_find_line(&a->o, "intruder", TP_PREFIX));
	/* A bad key file is a usage error, before anything starts. */
	char *bad[] = { tp_bin, "node", "--key-file", "/nonexistent/key",
			NULL };
	struct tp_proc *d = tp_spawn(bad, -1);

	assert_int_equal(tp_wait_exit(d), 2);
	unlink(k1);
	tp_close_stdin(a);
	tp_close_stdin(b);
	tp_close_stdin(c);
	assert_int_equal(tp_wait_exit(a), 0);
	assert_int_equal(tp_wait_exit(b), 0);
	assert_int_equal(tp_wait_exit(c), 0);
}

/* --stats 1: a JSON line every second, listing the one neighbour. */
static void test_cli_stats_period(void **state)
{
	struct tp_proc *a = start_or_skip("auto", "--stats", "1", NULL);
	struct tp_proc *b = start_or_skip("auto", "--connect", a->listen, NULL);
	uint64_t deadline = tp_now_ms() + tp_wait_ms;
	char want[64], *line = NULL, *obj;
	int seen = 0;

	/* The first lines may predate B's connection: wait for one with
	 * B, and for a second line after it (the timer repeats). */
	while (tp_now_ms() < deadline && seen < 2) {
		free(line);
		tp_pump(a, 100);
		line = last_stats(a);
		if (seen == 0 && line && strstr(line, "\"direct\":true"))
			seen = tp_count_lines(&a->e, "{", TP_PREFIX, NULL);
		else if (seen && tp_count_lines(&a->e, "{", TP_PREFIX,
						NULL) > seen)
			seen = 2;
	}
	assert_int_equal(seen, 2);
	assert_non_null(line);
	assert_true(json_valid(line));
	snprintf(want, sizeof(want), "\"id\":\"%016" PRIx64 "\"", a->id);
	assert_non_null(strstr(line, want));
	assert_non_null(strstr(line, "\"ts\":"));
	assert_non_null(strstr(line, "\"engine\":\""));
	assert_non_null(strstr(line, "\"peers\":[{"));
	assert_non_null(strstr(line, "\"dropped\":{\"no_route\":0,"));
	assert_int_equal(count_str(line, "{\"id\":"), 1);
	assert_int_equal(count_str(line, "\"direct\":true"), 1);
	obj = peer_obj(line, b->id);
	assert_non_null(strstr(obj, "\"hops\":1"));
	assert_non_null(strstr(obj, b->listen));
	free(obj);
	free(line);
	/* B has no --stats: no stats line unless asked. */
	tp_pump(b, 0);
	assert_null(tp_find_line(&b->e, "{", TP_PREFIX));
	tp_close_stdin(a);
	assert_int_equal(tp_wait_exit(a), 0);
}

/* SIGUSR1: one stats line per signal, and the node keeps running. */
static void test_cli_stats_sigusr1(void **state)
{
	struct tp_proc *a = start_or_skip("auto", NULL);
	struct tp_proc *b = start_or_skip("auto", "--connect", a->listen, NULL);
	char *line;

	tp_put(b, "%s counted\n", a->listen);
	assert_non_null(tp_wait_line(a, false, idline(b->id, "counted"),
				     TP_EXACT));
	assert_null(tp_find_line(&a->e, "{", TP_PREFIX));
	line = stats_now(a);
	assert_true(json_valid(line));
	assert_int_equal(count_str(line, "\"direct\":true"), 1);
	assert_int_equal(json_u64(line, "msgs_in"), 1);
	free(line);
	line = stats_now(a);
	assert_true(json_valid(line));
	free(line);
	assert_int_equal(tp_count_lines(&a->e, "{", TP_PREFIX, NULL), 2);

	tp_put(a, "self still running\n");
	assert_non_null(tp_wait_line(a, false, idline(a->id, "still running"),
				     TP_EXACT));
	tp_close_stdin(a);
	assert_int_equal(tp_wait_exit(a), 0);
	tp_close_stdin(b);
	assert_int_equal(tp_wait_exit(b), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(test_cli_address_in_use, teardown),
		cmocka_unit_test_teardown(test_cli_backpressure, teardown),
		cmocka_unit_test_teardown(test_cli_broadcast, teardown),
		cmocka_unit_test_teardown(test_cli_errors_epoll, teardown),
		cmocka_unit_test_teardown(test_cli_errors_io_uring, teardown),
		cmocka_unit_test_teardown(test_cli_exchange_epoll, teardown),
		cmocka_unit_test_teardown(test_cli_exchange_io_uring,
					  teardown),
		cmocka_unit_test_teardown(test_cli_key_file, teardown),
		cmocka_unit_test_teardown(test_cli_long_lines, teardown),
		cmocka_unit_test_teardown(test_cli_relay, teardown),
		cmocka_unit_test_teardown(test_cli_sigterm, teardown),
		cmocka_unit_test_teardown(test_cli_stats_period, teardown),
		cmocka_unit_test_teardown(test_cli_stats_sigusr1, teardown),
		cmocka_unit_test_teardown(test_cli_stdin_file, teardown),
		cmocka_unit_test_teardown(test_cli_unreachable, teardown),
		cmocka_unit_test_teardown(test_cli_usage, teardown),
	};

	return cmocka_run_group_tests(tests, setup, NULL);
}
