/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "proc.h"

char tp_bin[512];
int tp_wait_ms = 10000;

static struct tp_proc procs[TP_MAX_PROCS];

int tp_setup(void)
{
	const char *build = getenv("BUILD");
	char cwd[256];

	if (!build || !*build)
		build = "build";
	/* Absolute: the service tests hand it to sh and systemd. */
	if (build[0] == '/')
		snprintf(tp_bin, sizeof(tp_bin), "%s/pairmesh", build);
	else if (getcwd(cwd, sizeof(cwd)))
		snprintf(tp_bin, sizeof(tp_bin), "%s/%s/pairmesh", cwd,
			 build);
	else
		return -errno;
	if (access(tp_bin, X_OK))
		return -errno;
	signal(SIGPIPE, SIG_IGN);
	return 0;
}

uint64_t tp_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void buf_init(struct tp_buf *b)
{
	b->cap = 4096;
	b->len = 0;
	b->p = malloc(b->cap);
	assert_non_null(b->p);
	b->p[0] = '\0';
}

static void buf_append(struct tp_buf *b, const char *data, size_t len)
{
	if (b->len + len + 1 > b->cap) {
		size_t cap = b->cap;

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

struct tp_proc *tp_spawn(char *const argv[], int in_fd)
{
	int in[2], out[2], err[2];
	struct tp_proc *p = NULL;

	for (int i = 0; i < TP_MAX_PROCS; i++) {
		if (!procs[i].pid) {
			p = &procs[i];
			break;
		}
	}
	assert_non_null(p);
	assert_int_equal(pipe2(in, O_CLOEXEC), 0);
	assert_int_equal(pipe2(out, O_CLOEXEC), 0);
	assert_int_equal(pipe2(err, O_CLOEXEC), 0);
	memset(p, 0, sizeof(*p));
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
	buf_init(&p->o);
	buf_init(&p->e);
	if (in_fd >= 0)
		tp_close_stdin(p);
	return p;
}

void tp_close_stdin(struct tp_proc *p)
{
	close(p->in);
	p->in = -1;
}

bool tp_alive(const struct tp_proc *p)
{
	return p->pid && !p->exited;
}

static void reap(struct tp_proc *p, bool block)
{
	int st;

	if (p->exited || !p->pid)
		return;
	if (waitpid(p->pid, &st, block ? 0 : WNOHANG) != p->pid)
		return;
	p->exited = true;
	p->status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/*
 * Reads what the k children of v wrote, waiting up to timeout_ms, then
 * notes who exited. With every pipe closed it only waits a little for
 * the exit, so the callers' loops do not spin.
 */
static void pump(struct tp_proc *const *v, size_t k, int timeout_ms)
{
	struct pollfd fds[2 * TP_MAX_PROCS];
	struct tp_buf *bufs[2 * TP_MAX_PROCS];
	int *ends[2 * TP_MAX_PROCS];
	char chunk[65536];
	bool running = false;
	nfds_t n = 0;

	for (size_t i = 0; i < k; i++) {
		struct tp_proc *p = v[i];

		if (p->out >= 0) {
			fds[n] = (struct pollfd){ p->out, POLLIN, 0 };
			bufs[n] = &p->o;
			ends[n++] = &p->out;
		}
		if (p->err >= 0) {
			fds[n] = (struct pollfd){ p->err, POLLIN, 0 };
			bufs[n] = &p->e;
			ends[n++] = &p->err;
		}
	}
	if (!n) {
		for (size_t i = 0; i < k; i++) {
			reap(v[i], false);
			running |= tp_alive(v[i]);
		}
		if (running)
			poll(NULL, 0, timeout_ms < 10 ? timeout_ms : 10);
		return;
	}
	if (poll(fds, n, timeout_ms) > 0) {
		for (nfds_t i = 0; i < n; i++) {
			ssize_t r;

			if (!fds[i].revents)
				continue;
			r = read(fds[i].fd, chunk, sizeof(chunk));
			if (r > 0) {
				buf_append(bufs[i], chunk, (size_t)r);
			} else if (r == 0 || errno != EINTR) {
				close(*ends[i]);
				*ends[i] = -1;
			}
		}
	}
	for (size_t i = 0; i < k; i++)
		reap(v[i], false);
}

void tp_pump(struct tp_proc *p, int timeout_ms)
{
	pump(&p, 1, timeout_ms);
}

void tp_pump_all(int timeout_ms)
{
	struct tp_proc *v[TP_MAX_PROCS];
	size_t k = 0;

	for (int i = 0; i < TP_MAX_PROCS; i++)
		if (procs[i].pid)
			v[k++] = &procs[i];
	pump(v, k, timeout_ms);
}

static bool line_matches(const char *at, size_t len, const char *s,
			 size_t slen, enum tp_match m)
{
	switch (m) {
	case TP_EXACT:
		return len == slen && !memcmp(at, s, slen);
	case TP_PREFIX:
		return len >= slen && !memcmp(at, s, slen);
	case TP_CONTAINS:
		return memmem(at, len, s, slen) != NULL;
	}
	return false;
}

int tp_count_lines(const struct tp_buf *b, const char *s, enum tp_match m,
		   const char **last)
{
	size_t slen = strlen(s);
	const char *at = b->p, *end = b->p + b->len;
	int n = 0;

	while (at && at < end) {
		const char *nl = memchr(at, '\n', (size_t)(end - at));

		if (!nl)
			break;
		if (line_matches(at, (size_t)(nl - at), s, slen, m)) {
			n++;
			if (last)
				*last = at;
		}
		at = nl + 1;
	}
	return n;
}

const char *tp_find_line(const struct tp_buf *b, const char *s,
			 enum tp_match m)
{
	size_t slen = strlen(s);
	const char *at = b->p, *end = b->p + b->len;

	while (at && at < end) {
		const char *nl = memchr(at, '\n', (size_t)(end - at));

		if (!nl)
			return NULL;
		if (line_matches(at, (size_t)(nl - at), s, slen, m))
			return at;
		at = nl + 1;
	}
	return NULL;
}

/* tp_wait_line(); an exit without the line is only reported if loud. */
static const char *wait_line(struct tp_proc *p, bool err, const char *s,
			     enum tp_match m, bool loud)
{
	static const char *const how[] = { "", "starting ", "holding " };
	uint64_t deadline = tp_now_ms() + (uint64_t)tp_wait_ms;
	struct tp_buf *b = err ? &p->e : &p->o;

	for (;;) {
		const char *l = tp_find_line(b, s, m);

		if (l)
			return l;
		if (p->exited && p->out < 0 && p->err < 0) {
			if (!loud)
				return NULL;
			break;
		}
		if (tp_now_ms() >= deadline)
			break;
		tp_pump_all(50);
	}
	print_message("no %s line %s'%s' from pid %d (exited %d status %d); "
		      "stdout:\n%s\nstderr:\n%s\n", err ? "stderr" : "stdout",
		      how[m], s, (int)p->pid, p->exited, p->status, p->o.p,
		      p->e.p);
	return NULL;
}

const char *tp_wait_line(struct tp_proc *p, bool err, const char *s,
			 enum tp_match m)
{
	return wait_line(p, err, s, m, true);
}

int tp_wait_exit(struct tp_proc *p)
{
	uint64_t deadline = tp_now_ms() + (uint64_t)tp_wait_ms;

	while (!p->exited && tp_now_ms() < deadline)
		tp_pump(p, 50);
	/* Collect the rest of its output. */
	while (p->exited && (p->out >= 0 || p->err >= 0))
		tp_pump(p, 50);
	return p->exited ? p->status : -1;
}

void tp_put(struct tp_proc *p, const char *fmt, ...)
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

/* " key=VALUE" of line (text or logfmt) into out; "" when absent. */
static void field(const char *line, const char *key, char *out, size_t len)
{
	const char *at, *nl = strchr(line, '\n');
	char k[32];
	size_t n;

	snprintf(k, sizeof(k), " %s=", key);
	at = strstr(line, k);
	out[0] = '\0';
	if (!at || at > nl)
		return;
	at += strlen(k);
	n = strcspn(at, " \n");
	assert_true(n < len);
	memcpy(out, at, n);
	out[n] = '\0';
}

const char *tp_ready(struct tp_proc *p)
{
	/* A node that exits instead is the caller's to explain. */
	const char *l = wait_line(p, true, "ready id=", TP_CONTAINS, false);
	const char *colon;
	char id[32];

	if (!l)
		return NULL;
	field(l, "id", id, sizeof(id));
	p->id = strtoull(id, NULL, 16);
	field(l, "listen", p->listen, sizeof(p->listen));
	field(l, "engine", p->engine, sizeof(p->engine));
	field(l, "metrics", p->metrics, sizeof(p->metrics));
	colon = strrchr(p->listen, ':');
	assert_non_null(colon);
	p->port = (unsigned)atoi(colon + 1);
	assert_true(p->port > 0 && p->port < 65536);
	return l;
}

void tp_free(struct tp_proc *p)
{
	if (!p->pid)
		return;	/* free already */
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

void tp_free_all(void)
{
	for (int i = 0; i < TP_MAX_PROCS; i++)
		if (procs[i].pid)
			tp_free(&procs[i]);
}
