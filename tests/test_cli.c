/* SPDX-License-Identifier: MIT */
/*
 * Drives build/pairmesh as a user would: separate processes, lines on
 * stdin, stdout and stderr read through pipes. Every wait is bounded by a
 * deadline; leftovers are killed in the teardown. $BUILD names the build
 * directory (default "build").
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
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
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#define MAX_PROCS	8
#define WAIT_MS		10000	/* generous: the machine is shared */
#define FLOOD_LINES	16384	/* 16 MiB: more than rings and sockets hold */
#define FLOOD_LEN	1024

struct buf {
	char *p;
	size_t len;
	size_t cap;
};

struct proc {
	pid_t pid;
	int in, out, err;	/* our ends of its stdin, stdout, stderr */
	struct buf o, e;
	bool exited;
	int status;		/* exit code, or 128 + signal */
	uint64_t id;
	char listen[64];
	unsigned port;
	char engine[16];
};

static struct proc procs[MAX_PROCS];
static char bin[512];

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void buf_append(struct buf *b, const char *data, size_t len)
{
	if (b->len + len + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 4096;

		while (cap < b->len + len + 1)
			cap *= 2;
		b->p = realloc(b->p, cap);
		assert_non_null(b->p);
		b->cap = cap;
	}
	memcpy(b->p + b->len, data, len);
	b->len += len;
	b->p[b->len] = '\0';
}

static void close_stdin(struct proc *p)
{
	close(p->in);
	p->in = -1;
}

/* Starts argv; stdin is a pipe from us, or in_fd when it is >= 0. */
static struct proc *spawn_in(char *const argv[], int in_fd)
{
	int in[2], out[2], err[2];
	struct proc *p = NULL;

	for (int i = 0; i < MAX_PROCS; i++) {
		if (!procs[i].pid) {
			p = &procs[i];
			break;
		}
	}
	assert_non_null(p);
	assert_int_equal(pipe2(in, O_CLOEXEC), 0);
	assert_int_equal(pipe2(out, O_CLOEXEC), 0);
	assert_int_equal(pipe2(err, O_CLOEXEC), 0);
	p->pid = fork();
	assert_true(p->pid >= 0);
	if (p->pid == 0) {
		dup2(in_fd >= 0 ? in_fd : in[0], STDIN_FILENO);
		dup2(out[1], STDOUT_FILENO);
		dup2(err[1], STDERR_FILENO);
		execv(argv[0], argv);
		fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	close(in[0]);
	close(out[1]);
	close(err[1]);
	p->in = in[1];
	p->out = out[0];
	p->err = err[0];
	if (in_fd >= 0)
		close_stdin(p);
	return p;
}

static struct proc *spawn(char *const argv[])
{
	return spawn_in(argv, -1);
}

static void reap(struct proc *p, bool block)
{
	int st;

	if (p->exited || !p->pid)
		return;
	if (waitpid(p->pid, &st, block ? 0 : WNOHANG) != p->pid)
		return;
	p->exited = true;
	p->status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* Reads what the process wrote within timeout_ms. */
static void pump(struct proc *p, int timeout_ms)
{
	struct pollfd fds[2] = {
		{ .fd = p->out, .events = POLLIN },
		{ .fd = p->err, .events = POLLIN },
	};
	struct buf *bufs[2] = { &p->o, &p->e };
	int *ends[2] = { &p->out, &p->err };
	char chunk[65536];

	if (p->out < 0 && p->err < 0) {
		reap(p, false);
		if (!p->exited)
			poll(NULL, 0, timeout_ms < 10 ? timeout_ms : 10);
		return;
	}
	if (poll(fds, 2, timeout_ms) <= 0)
		return;
	for (int i = 0; i < 2; i++) {
		if (fds[i].fd < 0 || !fds[i].revents)
			continue;
		ssize_t r = read(fds[i].fd, chunk, sizeof(chunk));

		if (r > 0) {
			buf_append(bufs[i], chunk, (size_t)r);
		} else if (r == 0 || errno != EINTR) {
			close(*ends[i]);
			*ends[i] = -1;
		}
	}
	reap(p, false);
}

/* The first complete line of b equal to s (exact) or starting with it. */
static const char *find_line(const struct buf *b, const char *s, bool exact)
{
	size_t slen = strlen(s);
	const char *at = b->p, *end = b->p + b->len;

	while (at && at < end) {
		const char *nl = memchr(at, '\n', (size_t)(end - at));

		if (!nl)
			return NULL;
		if ((size_t)(nl - at) >= slen && !memcmp(at, s, slen) &&
		    (!exact || (size_t)(nl - at) == slen))
			return at;
		at = nl + 1;
	}
	return NULL;
}

/* Fails with the line if p printed an error on stderr. */
static void assert_no_error(const struct proc *p)
{
	const char *l = find_line(&p->e, "error:", false);

	if (l)
		fail_msg("pid %d printed: %.*s", (int)p->pid,
			 (int)strcspn(l, "\n"), l);
}

/* Waits for a line on stdout (err false) or stderr. */
static const char *wait_line(struct proc *p, bool err, const char *s,
			     bool exact)
{
	uint64_t deadline = now_ms() + WAIT_MS;
	struct buf *b = err ? &p->e : &p->o;

	for (;;) {
		const char *l = find_line(b, s, exact);

		if (l)
			return l;
		if (p->exited && p->out < 0 && p->err < 0)
			return NULL;	/* the caller checks why */
		if (now_ms() >= deadline)
			break;
		pump(p, 50);
	}
	print_message("no %s line %s'%s' from pid %d; stdout:\n%s\n"
		      "stderr:\n%s\n", err ? "stderr" : "stdout",
		      exact ? "" : "starting ", s, (int)p->pid,
		      p->o.p ? p->o.p : "", p->e.p ? p->e.p : "");
	return NULL;
}

/* The exit code (128 + signal if killed), or -1 if still running. */
static int wait_exit(struct proc *p)
{
	uint64_t deadline = now_ms() + WAIT_MS;

	while (!p->exited && now_ms() < deadline)
		pump(p, 50);
	/* Collect the rest of its output. */
	while (p->exited && (p->out >= 0 || p->err >= 0))
		pump(p, 50);
	return p->exited ? p->status : -1;
}

static void put(struct proc *p, const char *fmt, ...)
{
	char line[1024];
	va_list ap;
	int len;

	va_start(ap, fmt);
	len = vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	assert_true(len > 0 && (size_t)len < sizeof(line));
	assert_int_equal(write(p->in, line, (size_t)len), len);
}

/*
 * Starts `pairmesh node --engine engine extra...`. Returns the process once
 * it printed its ready line, or NULL if it exited first (p->status, the
 * stderr text are kept in *failed).
 */
static struct proc *start_node(const char *engine, struct proc **failed,
			       ...)
{
	char *argv[16] = { bin, "node", "--engine", (char *)engine };
	int argc = 4;
	const char *rl;
	struct proc *p;
	va_list ap;

	va_start(ap, failed);
	while ((argv[argc] = va_arg(ap, char *)) != NULL) {
		argc++;
		assert_true(argc < 15);
	}
	va_end(ap);
	p = spawn(argv);
	if (failed)
		*failed = p;
	rl = wait_line(p, true, "ready ", false);
	if (!rl)
		return NULL;
	assert_int_equal(sscanf(rl, "ready id=%16" SCNx64 " listen=%63s "
				"engine=%15s", &p->id, p->listen, p->engine),
			 3);
	const char *colon = strrchr(p->listen, ':');

	assert_non_null(colon);
	p->port = (unsigned)atoi(colon + 1);
	assert_true(p->port > 0 && p->port < 65536);
	if (strcmp(engine, "auto"))
		assert_string_equal(p->engine, engine);
	return p;
}

/* Starts a node or skips the test when the kernel refuses io_uring. */
static struct proc *start_or_skip(const char *engine, ...)
{
	struct proc *failed = NULL, *p;
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
	int st = wait_exit(failed);

	if (!strcmp(engine, "io_uring") && st == 1 &&
	    find_line(&failed->e, "error: ", false)) {
		print_message("skipped: io_uring refused here: %s",
			      failed->e.p);
		skip();
	}
	fail_msg("node did not start (exit %d): %s", st,
		 failed->e.p ? failed->e.p : "");
	return NULL;
}

static unsigned free_port(void)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	socklen_t len = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	assert_true(fd >= 0);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
	close(fd);
	return ntohs(sa.sin_port);
}

/* ESTABLISHED IPv4 sockets whose remote port is pa or pb. */
static int count_established(unsigned pa, unsigned pb)
{
	FILE *f = fopen("/proc/net/tcp", "r");
	unsigned lport, rport, st;
	char line[512];
	int n = 0;

	assert_non_null(f);
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, " %*u: %*x:%x %*x:%x %x", &lport, &rport,
			   &st) != 3)
			continue;
		if (st == 1 && (rport == pa || rport == pb))
			n++;
	}
	fclose(f);
	return n;
}

static char *idline(uint64_t id, const char *text)
{
	static char line[256];

	snprintf(line, sizeof(line), "%016" PRIx64 " %s", id, text);
	return line;
}

/* How many complete lines of b are equal to s. */
static int count_lines(const struct buf *b, const char *s)
{
	size_t slen = strlen(s);
	const char *at = b->p, *end = b->p + b->len;
	int n = 0;

	while (at && at < end) {
		const char *nl = memchr(at, '\n', (size_t)(end - at));

		if (!nl)
			break;
		n += (size_t)(nl - at) == slen && !memcmp(at, s, slen);
		at = nl + 1;
	}
	return n;
}

/* Counts the complete lines of b that start with s; *last gets the last. */
static int lines_starting(const struct buf *b, const char *s,
			  const char **last)
{
	size_t slen = strlen(s);
	const char *at = b->p, *end = b->p + b->len;
	int n = 0;

	while (at && at < end) {
		const char *nl = memchr(at, '\n', (size_t)(end - at));

		if (!nl)
			break;
		if ((size_t)(nl - at) >= slen && !memcmp(at, s, slen)) {
			n++;
			if (last)
				*last = at;
		}
		at = nl + 1;
	}
	return n;
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
static char *last_stats(struct proc *p)
{
	const char *l = NULL;

	if (!lines_starting(&p->e, "{", &l))
		return NULL;
	return strndup(l, (size_t)(strchr(l, '\n') - l));
}

/* Asks p for a stats line with SIGUSR1 and returns it (free it). */
static char *stats_now(struct proc *p)
{
	int before = lines_starting(&p->e, "{", NULL);
	uint64_t deadline = now_ms() + WAIT_MS;

	assert_int_equal(kill(p->pid, SIGUSR1), 0);
	while (lines_starting(&p->e, "{", NULL) == before &&
	       now_ms() < deadline && !p->exited)
		pump(p, 50);
	if (lines_starting(&p->e, "{", NULL) == before)
		fail_msg("no stats line after SIGUSR1; stderr:\n%s",
			 p->e.p ? p->e.p : "");
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
static void wait_peer(struct proc *p, uint64_t id, const char *field)
{
	uint64_t deadline = now_ms() + WAIT_MS;
	char want[32];

	snprintf(want, sizeof(want), "\"%s\":true", field);
	for (;;) {
		char *line = stats_now(p);
		char *obj = peer_obj(line, id);
		bool ok = strstr(obj, want) != NULL;

		free(obj);
		if (ok || now_ms() >= deadline) {
			if (!ok)
				fail_msg("%016" PRIx64 " never %s for %016"
					 PRIx64 ": %s", id, field, p->id,
					 line);
			free(line);
			return;
		}
		free(line);
		pump(p, 50);
	}
}

static int setup(void **state)
{
	const char *build = getenv("BUILD");

	snprintf(bin, sizeof(bin), "%s/pairmesh",
		 build && *build ? build : "build");
	if (access(bin, X_OK)) {
		print_error("%s: %s\n", bin, strerror(errno));
		return -1;
	}
	signal(SIGPIPE, SIG_IGN);
	return 0;
}

static void proc_free(struct proc *p)
{
	if (!p->exited) {
		kill(p->pid, SIGKILL);
		reap(p, true);
	}
	if (p->in >= 0)
		close(p->in);
	if (p->out >= 0)
		close(p->out);
	if (p->err >= 0)
		close(p->err);
	free(p->o.p);
	free(p->e.p);
	memset(p, 0, sizeof(*p));
}

static int teardown(void **state)
{
	for (int i = 0; i < MAX_PROCS; i++)
		if (procs[i].pid)
			proc_free(&procs[i]);
	return 0;
}

/* Runs the tool once; *out stays valid until the next run_tool(). */
static int run_tool(char *arg1, char *arg2, struct proc **out)
{
	char *argv[] = { bin, arg1, arg2, NULL };
	struct proc *p;

	if (*out)
		proc_free(*out);
	p = spawn(argv);

	close_stdin(p);
	*out = p;
	return wait_exit(p);
}

static void test_cli_usage(void **state)
{
	struct proc *p = NULL;

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
	struct proc *a = start_or_skip(engine, NULL);
	struct proc *b = start_or_skip(engine, NULL);

	assert_int_not_equal(a->id, b->id);
	put(a, "%s hello b\n", b->listen);
	assert_non_null(wait_line(b, false, idline(a->id, "hello b"), true));
	put(b, "%016" PRIx64 " hi a by id\n", a->id);
	assert_non_null(wait_line(a, false, idline(b->id, "hi a by id"),
				  true));
	put(b, "%s hi a by address\n", a->listen);
	assert_non_null(wait_line(a, false, idline(b->id, "hi a by address"),
				  true));
	assert_int_equal(count_established(a->port, b->port), 1);

	put(a, "self to myself\n");
	assert_non_null(wait_line(a, false, idline(a->id, "to myself"), true));
	put(a, "self \n");
	assert_non_null(wait_line(a, false, idline(a->id, ""), true));
	put(a, "self tab\there\n");
	assert_non_null(wait_line(a, false, idline(a->id, "tab\\x09here"),
				  true));

	close_stdin(a);
	assert_int_equal(wait_exit(a), 0);
	char closed[64];

	snprintf(closed, sizeof(closed), "closed: %016" PRIx64, a->id);
	assert_non_null(wait_line(b, true, closed, false));
	assert_no_error(a);

	assert_int_equal(kill(b->pid, SIGTERM), 0);
	assert_int_equal(wait_exit(b), 0);
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
	struct proc *a = start_or_skip(engine, NULL);
	unsigned port = free_port();
	char want[128];

	put(a, "0123456789abcdef nobody\n");
	assert_non_null(wait_line(a, true, "error: 0123456789abcdef: no route",
				  true));
	put(a, "* nobody\n");
	assert_non_null(wait_line(a, true, "error: *: no peers", true));
	put(a, "no-such-address hi\n");
	assert_non_null(wait_line(a, true, "error: no-such-address", false));
	put(a, "127.0.0.1:99999 hi\n");
	assert_non_null(wait_line(a, true, "error: 127.0.0.1:99999", false));
	put(a, "127.0.0.1:%u refused\n", port);
	snprintf(want, sizeof(want), "error: 127.0.0.1:%u: connection "
		 "refused", port);
	assert_non_null(wait_line(a, true, want, false));

	/* Still alive and well. */
	put(a, "self still here\n");
	assert_non_null(wait_line(a, false, idline(a->id, "still here"),
				  true));
	assert_int_equal(kill(a->pid, SIGTERM), 0);
	assert_int_equal(wait_exit(a), 0);
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
	struct proc *a = start_or_skip("auto", NULL);
	size_t big = 300 << 10, huge = (1 << 20) + 4096;
	char *line = malloc(huge + 1);

	assert_non_null(line);
	memcpy(line, "self ", 5);
	memset(line + 5, 'x', huge - 5);
	line[big] = '\n';
	/* The node reads while we write: a blocking write is fine. */
	assert_int_equal(write(a->in, line, big + 1), (ssize_t)big + 1);
	assert_non_null(wait_line(a, true, "error: self: message too big",
				  false));
	line[big] = 'x';
	line[huge] = '\n';
	assert_int_equal(write(a->in, line, huge + 1), (ssize_t)huge + 1);
	assert_non_null(wait_line(a, true, "error: self: line longer",
				  false));
	free(line);
	put(a, "self after\n");
	assert_non_null(wait_line(a, false, idline(a->id, "after"), true));
	assert_null(find_line(&a->o, idline(a->id, "xxx"), false));
	close_stdin(a);
	assert_int_equal(wait_exit(a), 0);
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
	char *argv[] = { bin, "node", "--engine", "epoll", NULL };
	int fd = mkstemp(path);
	struct proc *p;
	char want[128];

	assert_true(fd >= 0);
	unlink(path);
	assert_int_equal(write(fd, text, sizeof(text) - 1),
			 (ssize_t)sizeof(text) - 1);
	assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
	p = spawn_in(argv, fd);
	close(fd);
	assert_int_equal(wait_exit(p), 0);
	assert_non_null(find_line(&p->e, "ready ", false));
	assert_int_equal(sscanf(p->e.p, "ready id=%16" SCNx64, &p->id), 1);
	snprintf(want, sizeof(want), "%016" PRIx64 " one\n%016" PRIx64
		 " two\n%016" PRIx64 " three\n", p->id, p->id, p->id);
	assert_string_equal(p->o.p, want);
}

/* A second node on a busy address fails to start: exit 1, error line. */
static void test_cli_address_in_use(void **state)
{
	struct proc *a = start_or_skip("auto", NULL), *failed = NULL;

	assert_null(start_node("auto", &failed, "--listen", a->listen, NULL));
	assert_int_equal(wait_exit(failed), 1);
	assert_non_null(find_line(&failed->e, "error: ", false));
	close_stdin(a);
	assert_int_equal(wait_exit(a), 0);
}

/* --connect at start, then SIGTERM: exit 0 and the peer sees the close. */
static void test_cli_sigterm(void **state)
{
	struct proc *a = start_or_skip("auto", NULL);
	struct proc *b = start_or_skip("auto", "--connect", a->listen,
				       "--id", "00000000000000b0", NULL);
	char closed[64];

	assert_int_equal(b->id, 0xb0);
	put(b, "%s via connect\n", a->listen);
	assert_non_null(wait_line(a, false, idline(0xb0, "via connect"),
				  true));
	assert_int_equal(count_established(a->port, b->port), 1);
	assert_int_equal(kill(b->pid, SIGTERM), 0);
	assert_int_equal(wait_exit(b), 0);
	snprintf(closed, sizeof(closed), "closed: %016" PRIx64, b->id);
	assert_non_null(wait_line(a, true, closed, false));
	assert_int_equal(kill(a->pid, SIGINT), 0);
	assert_int_equal(wait_exit(a), 0);
}

/*
 * B does not read its stdout for a while, so A's TX ring fills and A must
 * stop reading stdin rather than drop lines. Then everything arrives, in
 * order.
 */
static void test_cli_backpressure(void **state)
{
	struct proc *a = start_or_skip("auto", NULL);
	struct proc *b = start_or_skip("auto", NULL);
	char *line = malloc(FLOOD_LEN + 64);
	size_t llen, off = 0, got = 0, seen = 0;
	uint64_t deadline = now_ms() + 6 * WAIT_MS;
	unsigned sent = 0;
	int stalls = 0;

	assert_non_null(line);
	assert_int_equal(fcntl(a->in, F_SETFL, O_NONBLOCK), 0);
	llen = 0;
	while (sent < FLOOD_LINES && now_ms() < deadline) {
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
		pump(a, 0);
		/* Let B's stdout back up until A stalls for a while. */
		if (stalls < 20) {
			stalls++;
			poll(NULL, 0, 25);
		} else {
			pump(b, 10);
		}
	}
	assert_int_equal(sent, FLOOD_LINES);
	close_stdin(a);
	free(line);

	/* Check B's lines as they come, then drop them. */
	while (got < FLOOD_LINES && now_ms() < deadline) {
		char *nl;

		pump(b, 50);
		pump(a, 0);
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
	assert_int_equal(wait_exit(a), 0);
	assert_no_error(a);
	close_stdin(b);
	assert_int_equal(wait_exit(b), 0);
}

/*
 * Three nodes, each told about one other (B knows A, C knows B), form the
 * full mesh; a line to '*' reaches each other node exactly once, although
 * every node also hears it again from the third one.
 */
static void test_cli_broadcast(void **state)
{
	struct proc *a = start_or_skip("auto", NULL);
	struct proc *b = start_or_skip("auto", "--connect", a->listen, NULL);
	struct proc *c = start_or_skip("auto", "--connect", b->listen, NULL);
	struct proc *all[] = { a, b, c };
	char text[64];

	/* Auto-connect: A and C find each other through B. */
	wait_peer(a, c->id, "direct");
	wait_peer(c, a->id, "direct");
	for (int i = 0; i < 3; i++)
		put(all[i], "* to all from %d\n", i);
	/* A second round: copies of the first are ahead of it on every
	 * path, so when it is in, any duplicate of the first is too. */
	for (int i = 0; i < 3; i++)
		put(all[i], "* end from %d\n", i);
	for (int i = 0; i < 3; i++) {
		for (int j = 0; j < 3; j++) {
			if (i == j)
				continue;
			snprintf(text, sizeof(text), "end from %d", j);
			assert_non_null(wait_line(all[i], false,
						  idline(all[j]->id, text),
						  true));
		}
	}
	for (int i = 0; i < 3; i++) {
		pump(all[i], 100);
		for (int j = 0; j < 3; j++) {
			snprintf(text, sizeof(text), "to all from %d", j);
			assert_int_equal(count_lines(&all[i]->o,
						     idline(all[j]->id, text)),
					 i == j ? 0 : 1);
		}
		/* 2 + 2 lines: nothing else, nothing twice. */
		assert_int_equal(lines_starting(&all[i]->o, "", NULL), 4);
		assert_no_error(all[i]);
	}
	for (int i = 0; i < 3; i++)
		close_stdin(all[i]);
	for (int i = 0; i < 3; i++)
		assert_int_equal(wait_exit(all[i]), 0);
}

/* X - Y - Z, none dialling what it learns: X and Z talk through Y. */
static void chain(struct proc **x, struct proc **y, struct proc **z,
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
	struct proc *x, *y, *z;
	char *line, *obj, via[32];
	uint64_t before;

	chain(&x, &y, &z, "16");
	line = stats_now(y);
	before = top_relayed(line);
	free(line);

	put(x, "%016" PRIx64 " to z through y\n", z->id);
	assert_non_null(wait_line(z, false, idline(x->id, "to z through y"),
				  true));
	put(z, "%016" PRIx64 " back to x\n", x->id);
	assert_non_null(wait_line(x, false, idline(z->id, "back to x"), true));
	put(x, "* down the chain\n");
	assert_non_null(wait_line(y, false, idline(x->id, "down the chain"),
				  true));
	assert_non_null(wait_line(z, false, idline(x->id, "down the chain"),
				  true));

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

	pump(z, 100);
	assert_int_equal(count_lines(&z->o, idline(x->id, "to z through y")),
			 1);
	assert_int_equal(count_lines(&z->o, idline(x->id, "down the chain")),
			 1);
	assert_no_error(x);
	assert_no_error(z);
	close_stdin(x);
	assert_int_equal(wait_exit(x), 0);
}

/*
 * With --max-hops 1 X's message to Z dies at Y, which tells X: X prints
 * "error: Z: unreachable", Z prints nothing. An unknown id: "no route".
 */
static void test_cli_unreachable(void **state)
{
	struct proc *x, *y, *z;
	char want[64], *line;

	chain(&x, &y, &z, "1");
	put(x, "%016" PRIx64 " too far\n", z->id);
	snprintf(want, sizeof(want), "error: %016" PRIx64 ": unreachable",
		 z->id);
	assert_non_null(wait_line(x, true, want, true));
	line = stats_now(y);
	assert_int_equal(json_u64(line, "hop_limit"), 1);
	free(line);
	line = stats_now(x);
	assert_int_equal(json_u64(line, "unreachable"), 1);
	free(line);

	put(x, "00000000000000ff hi\n");
	assert_non_null(wait_line(x, true, "error: 00000000000000ff: no route",
				  true));
	/* Y is one hop away: that still works, and Z got nothing. */
	put(x, "%016" PRIx64 " near\n", y->id);
	assert_non_null(wait_line(y, false, idline(x->id, "near"), true));
	pump(z, 100);
	assert_int_equal(z->o.len, 0);
	close_stdin(x);
	assert_int_equal(wait_exit(x), 0);
}

/* --key-file: nodes holding the same key talk; a node without it is
 * refused (an error line naming the target) and delivers nothing. */
static void test_cli_key_file(void **state)
{
	char k1[] = "/tmp/pm-cli-key-XXXXXX";
	const char *hex = "000102030405060708090a0b0c0d0e0f"
			  "101112131415161718191a1b1c1d1e1f\n";
	struct proc *a, *b, *c;
	char want[128];
	int fd = mkstemp(k1);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, hex, strlen(hex)), (ssize_t)strlen(hex));
	close(fd);
	a = start_or_skip("epoll", "--key-file", k1, NULL);
	b = start_or_skip("epoll", "--key-file", k1, NULL);
	c = start_or_skip("epoll", NULL);
	put(b, "%s keyed hello\n", a->listen);
	assert_non_null(wait_line(a, false, idline(b->id, "keyed hello"),
				  true));
	put(c, "%s intruder\n", a->listen);
	snprintf(want, sizeof(want), "error: %s: ", a->listen);
	assert_non_null(wait_line(c, true, want, false));
	pump(a, 200);
	assert_null(find_line(&a->o, "intruder", false));
	/* A bad key file is a usage error, before anything starts. */
	char *bad[] = { bin, "node", "--key-file", "/nonexistent/key", NULL };
	struct proc *d = spawn(bad);

	assert_int_equal(wait_exit(d), 2);
	unlink(k1);
	close_stdin(a);
	close_stdin(b);
	close_stdin(c);
	assert_int_equal(wait_exit(a), 0);
	assert_int_equal(wait_exit(b), 0);
	assert_int_equal(wait_exit(c), 0);
}

/* --stats 1: a JSON line every second, listing the one neighbour. */
static void test_cli_stats_period(void **state)
{
	struct proc *a = start_or_skip("auto", "--stats", "1", NULL);
	struct proc *b = start_or_skip("auto", "--connect", a->listen, NULL);
	uint64_t deadline = now_ms() + WAIT_MS;
	char want[64], *line = NULL, *obj;
	int seen = 0;

	/* The first lines may predate B's connection: wait for one with
	 * B, and for a second line after it (the timer repeats). */
	while (now_ms() < deadline && seen < 2) {
		free(line);
		pump(a, 100);
		line = last_stats(a);
		if (seen == 0 && line && strstr(line, "\"direct\":true"))
			seen = lines_starting(&a->e, "{", NULL);
		else if (seen && lines_starting(&a->e, "{", NULL) > seen)
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
	pump(b, 0);
	assert_null(find_line(&b->e, "{", false));
	close_stdin(a);
	assert_int_equal(wait_exit(a), 0);
}

/* SIGUSR1: one stats line per signal, and the node keeps running. */
static void test_cli_stats_sigusr1(void **state)
{
	struct proc *a = start_or_skip("auto", NULL);
	struct proc *b = start_or_skip("auto", "--connect", a->listen, NULL);
	char *line;

	put(b, "%s counted\n", a->listen);
	assert_non_null(wait_line(a, false, idline(b->id, "counted"), true));
	assert_null(find_line(&a->e, "{", false));
	line = stats_now(a);
	assert_true(json_valid(line));
	assert_int_equal(count_str(line, "\"direct\":true"), 1);
	assert_int_equal(json_u64(line, "msgs_in"), 1);
	free(line);
	line = stats_now(a);
	assert_true(json_valid(line));
	free(line);
	assert_int_equal(lines_starting(&a->e, "{", NULL), 2);

	put(a, "self still running\n");
	assert_non_null(wait_line(a, false, idline(a->id, "still running"),
				  true));
	close_stdin(a);
	assert_int_equal(wait_exit(a), 0);
	close_stdin(b);
	assert_int_equal(wait_exit(b), 0);
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
