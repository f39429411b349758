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
	assert_int_equal(run_tool("nosuch", NULL, &p), 2);
	assert_int_equal(run_tool(NULL, NULL, &p), 2);

	assert_int_equal(run_tool("--help", NULL, &p), 0);
	assert_non_null(strstr(p->o.p, "node"));
	assert_int_equal(run_tool("node", "--help", &p), 0);
	assert_non_null(strstr(p->o.p, "ready id="));
	assert_non_null(strstr(p->o.p, "Exit status"));
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
	assert_null(find_line(&a->e, "error:", false));

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
	assert_non_null(wait_line(a, true, "error: 0123456789abcdef", false));
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
	assert_null(find_line(&a->e, "error:", false));
	close_stdin(b);
	assert_int_equal(wait_exit(b), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(test_cli_address_in_use, teardown),
		cmocka_unit_test_teardown(test_cli_backpressure, teardown),
		cmocka_unit_test_teardown(test_cli_errors_epoll, teardown),
		cmocka_unit_test_teardown(test_cli_errors_io_uring, teardown),
		cmocka_unit_test_teardown(test_cli_exchange_epoll, teardown),
		cmocka_unit_test_teardown(test_cli_exchange_io_uring,
					  teardown),
		cmocka_unit_test_teardown(test_cli_long_lines, teardown),
		cmocka_unit_test_teardown(test_cli_sigterm, teardown),
		cmocka_unit_test_teardown(test_cli_stdin_file, teardown),
		cmocka_unit_test_teardown(test_cli_usage, teardown),
	};

	return cmocka_run_group_tests(tests, setup, NULL);
}
