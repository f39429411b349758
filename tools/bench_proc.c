/* SPDX-License-Identifier: MIT */
/*
 * The plumbing of `pairmesh bench`: child processes and their control
 * messages, clocks, memory figures, node configs, and the sequence-checking
 * receiver most scenarios share.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

bool bench_verbose;

int64_t bench_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

uint32_t bench_pow2(uint64_t v)
{
	uint64_t p = 4096;

	while (p < v)
		p <<= 1;
	return (uint32_t)p;
}

uint32_t bench_ring(size_t size, uint32_t min)
{
	/* + 64: the frame and routing headers of a message sent by id. */
	uint32_t ring = bench_pow2(4 * ((uint64_t)size + 64));

	return ring > min ? ring : min;
}

void bench_config(struct pm_config *c, const struct bench_opts *o,
		  uint32_t ring, uint32_t max_message)
{
	pm_config_init(c);
	c->listen = "127.0.0.1:0";
	c->engine = o->engine;
	c->ring_size = ring;
	if (max_message > ring - 8)
		max_message = ring - 8;
	c->max_message = max_message;
}

long bench_rss_kib(void)
{
	long pages = -1, resident = -1;
	FILE *f = fopen("/proc/self/statm", "r");

	if (!f)
		return -1;
	if (fscanf(f, "%ld %ld", &pages, &resident) != 2)
		resident = -1;
	fclose(f);
	return resident < 0 ? -1 : resident * (sysconf(_SC_PAGESIZE) / 1024);
}

int64_t bench_cpu_ns(void)
{
	struct rusage ru;

	if (getrusage(RUSAGE_SELF, &ru))
		return 0;
	return ((int64_t)ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) *
		       1000000000 +
	       ((int64_t)ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1000;
}

long bench_hwm_kib(void)
{
	char line[256];
	long kib = -1;
	FILE *f = fopen("/proc/self/status", "r");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "VmHWM: %ld", &kib) == 1)
			break;
	fclose(f);
	return kib;
}

int bench_fail(struct bench_result *r, const char *fmt, ...)
{
	va_list ap;

	/* The first reason is the one worth reading. */
	if (r->why[0])
		return -1;
	va_start(ap, fmt);
	vsnprintf(r->why, sizeof(r->why), fmt, ap);
	va_end(ap);
	return -1;
}

void bench_progress(const char *fmt, ...)
{
	va_list ap;

	if (!bench_verbose)
		return;
	va_start(ap, fmt);
	fprintf(stderr, "bench: ");
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}

/* Messages. */

void msg_marker(void *buf, uint64_t count)
{
	uint64_t seq = BENCH_MARKER_SEQ;

	memcpy(buf, &seq, 8);
	memcpy((uint8_t *)buf + 8, &count, 8);
}

/* The sequence sink. */

void sink_init(struct seq_sink *s, size_t size)
{
	memset(s, 0, sizeof(*s));
	s->size = size;
	s->ok = true;
	s->want_hops = -1;
}

int sink_message(struct pm_node *n, const struct pm_message *m, void *user)
{
	struct seq_sink *s = user;
	uint32_t origin;
	uint64_t seq = 0;

	(void)n;
	if (s->done)
		return 0;
	if (msg_is_marker(m->data, m->len, &s->marker_count)) {
		s->end_ns = bench_now_ns();
		if (s->marker_count != s->msgs)
			s->ok = false;
		s->done = true;
		return 0;
	}
	if (!msg_check(m->data, m->len, &seq, &origin) || m->len != s->size ||
	    (s->want_hops >= 0 && m->hops != (uint32_t)s->want_hops))
		s->ok = false;
	/* A gap is the failure this benchmark looks for: keep the first. */
	if (seq != s->msgs && s->gap_want == s->gap_got) {
		s->ok = false;
		s->gap_want = s->msgs;
		s->gap_got = seq;
	}
	s->msgs++;
	s->bytes += m->len;
	if (s->slow_every && s->msgs % s->slow_every == 0) {
		struct timespec ms = { 0, 1000000 };

		nanosleep(&ms, NULL);
	}
	return 0;
}

void sink_event(struct pm_node *n, const struct pm_event *ev, void *user)
{
	struct seq_sink *s = user;

	(void)n;
	if (ev->type == PM_EV_CLOSED && !s->done) {
		s->err = ev->error ? ev->error : -ECONNRESET;
		s->ok = false;
		s->done = true;
	}
}

void sink_result(const struct seq_sink *s, struct ctl *m)
{
	memset(m, 0, sizeof(*m));
	m->type = CTL_RESULT;
	m->err = s->err;
	m->t1 = s->end_ns;
	m->v[0] = s->msgs;
	m->v[1] = s->bytes;
	m->v[2] = s->marker_count;
	m->v[3] = s->ok;
	m->v[4] = s->gap_want;
	m->v[5] = s->gap_got;
}

int sink_verify(const struct ctl *m, uint64_t sent, const char *what,
		struct bench_result *r)
{
	if (m->err)
		return bench_fail(r, "%s: the stream closed early: %s", what,
				  strerror(-m->err));
	if (!m->v[3] || m->v[0] != sent || m->v[2] != sent) {
		if (m->v[4] != m->v[5])
			return bench_fail(r, "%s: sent %llu, received %llu, "
					  "first gap: wanted %llu got %llu",
					  what, (unsigned long long)sent,
					  (unsigned long long)m->v[0],
					  (unsigned long long)m->v[4],
					  (unsigned long long)m->v[5]);
		return bench_fail(r, "%s: sent %llu, received %llu, marker "
				  "%llu, or a bad length or check byte", what,
				  (unsigned long long)sent,
				  (unsigned long long)m->v[0],
				  (unsigned long long)m->v[2]);
	}
	return 0;
}

/* Parent side. */

int child_spawn(struct child *c, const char *name, child_fn fn,
		const struct bench_opts *o, void *arg)
{
	pid_t parent = getpid();
	int sv[2];

	snprintf(c->name, sizeof(c->name), "%s", name);
	c->pid = 0;
	c->fd = -1;
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv))
		return -errno;
	fflush(stdout);
	fflush(stderr);
	c->pid = fork();
	if (c->pid < 0) {
		int r = -errno;

		close(sv[0]);
		close(sv[1]);
		c->pid = 0;
		return r;
	}
	if (c->pid == 0) {
		/* Never outlive the coordinator. */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(1);
		close(sv[0]);
		fn(sv[1], o, arg);
		_exit(0);
	}
	close(sv[1]);
	c->fd = sv[0];
	return 0;
}

int ctl_send(int fd, const struct ctl *m)
{
	for (;;) {
		if (send(fd, m, sizeof(*m), MSG_NOSIGNAL) == sizeof(*m))
			return 0;
		if (errno != EINTR)
			return -errno;
	}
}

int ctl_recv(int fd, struct ctl *m, int timeout_ms)
{
	int64_t end = bench_now_ns() + (int64_t)timeout_ms * 1000000;

	for (;;) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		int64_t left = (end - bench_now_ns()) / 1000000;
		int r;

		if (left < 0)
			return -ETIMEDOUT;
		if (poll(&p, 1, (int)left) < 0 && errno != EINTR)
			return -errno;
		if (!p.revents)
			continue;
		r = ctl_poll(fd, m);
		if (r)
			return r < 0 ? r : 0;
	}
}

int ctl_poll(int fd, struct ctl *m)
{
	ssize_t r = recv(fd, m, sizeof(*m), MSG_DONTWAIT);

	if (r == sizeof(*m))
		return 1;
	if (r < 0 && (errno == EAGAIN || errno == EINTR))
		return 0;
	return -EPIPE;	/* EOF, an error or a torn message: it is gone */
}

int expect_msg(struct child *c, enum ctl_type type, struct ctl *m,
	       int timeout_ms, struct bench_result *r)
{
	int e = ctl_recv(c->fd, m, timeout_ms);

	if (e == -ETIMEDOUT)
		return bench_fail(r, "%s: no answer within %d ms", c->name,
				  timeout_ms);
	if (e)
		return bench_fail(r, "%s: exited early", c->name);
	if (m->type == CTL_FAIL) {
		m->text[sizeof(m->text) - 1] = 0;
		return bench_fail(r, "%s: %s", c->name, m->text);
	}
	if (m->type != type)
		return bench_fail(r, "%s: unexpected message %u", c->name,
				  m->type);
	m->addr[sizeof(m->addr) - 1] = 0;
	m->text[sizeof(m->text) - 1] = 0;
	return 0;
}

int send_msg(struct child *c, const struct ctl *m, struct bench_result *r)
{
	if (ctl_send(c->fd, m))
		return bench_fail(r, "%s: exited early", c->name);
	return 0;
}

int stop_children(struct child *c, size_t k, struct ctl *bye,
		  struct bench_result *r)
{
	struct ctl stop = { .type = CTL_STOP }, tmp;
	int ret = 0, status;

	for (size_t i = 0; i < k; i++)
		if (c[i].pid && send_msg(&c[i], &stop, r))
			ret = -1;
	for (size_t i = 0; i < k; i++) {
		if (!c[i].pid)
			continue;
		if (!ret && expect_msg(&c[i], CTL_BYE, bye ? &bye[i] : &tmp,
				       BENCH_GRACE_MS, r))
			ret = -1;
		if (ret)
			kill(c[i].pid, SIGKILL);
		waitpid(c[i].pid, &status, 0);
		if (!ret && !(WIFEXITED(status) && !WEXITSTATUS(status)))
			ret = bench_fail(r, "%s: exited abnormally",
					 c[i].name);
		close(c[i].fd);
		c[i].pid = 0;
		c[i].fd = -1;
	}
	return ret;
}

void kill_children(struct child *c, size_t k)
{
	int64_t end = bench_now_ns() + 200000000;
	struct ctl m;

	/* The first failure read may be the echo of another child's: show
	 * what every child had to say before killing them. */
	for (size_t i = 0; i < k; i++) {
		while (c[i].pid && ctl_recv(c[i].fd, &m, (int)((end -
		       bench_now_ns()) / 1000000)) == 0) {
			m.text[sizeof(m.text) - 1] = 0;
			if (m.type == CTL_FAIL)
				fprintf(stderr, "pairmesh bench: %s: %s\n",
					c[i].name, m.text);
		}
	}
	for (size_t i = 0; i < k; i++)
		if (c[i].pid)
			kill(c[i].pid, SIGKILL);
	for (size_t i = 0; i < k; i++) {
		if (!c[i].pid)
			continue;
		waitpid(c[i].pid, NULL, 0);
		close(c[i].fd);
		c[i].pid = 0;
		c[i].fd = -1;
	}
}

/* Child side. */

void child_send(int fd, const struct ctl *m)
{
	/* The parent is gone: nobody is left to tell. */
	if (ctl_send(fd, m))
		_exit(1);
}

void child_fail(int fd, const char *fmt, ...)
{
	struct ctl m = { .type = CTL_FAIL };
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(m.text, sizeof(m.text), fmt, ap);
	va_end(ap);
	ctl_send(fd, &m);
	_exit(1);
}

struct pm_node *child_node(int fd, const struct pm_config *c)
{
	struct pm_node *n;
	int r = pm_node_create(&n, c);

	if (r == -EPROTONOSUPPORT)
		child_fail(fd, "io_uring is refused by this kernel");
	if (r)
		child_fail(fd, "pm_node_create: %s", strerror(-r));
	return n;
}

void child_ready(int fd, struct pm_node *n)
{
	struct ctl m = { .type = CTL_READY };

	m.id = pm_node_id(n);
	pm_node_listen_addr(n, m.addr, sizeof(m.addr));
	snprintf(m.text, sizeof(m.text), "%s", pm_node_engine(n));
	child_send(fd, &m);
}

void child_wait(int fd, struct pm_node **v, size_t k, struct ctl *m)
{
	for (;;) {
		int r = ctl_poll(fd, m);

		if (r < 0)
			_exit(1);
		if (r)
			break;
		if (k == 1 && v[0]) {
			pm_node_run(v[0], 20);
			continue;
		}
		/* Many idle nodes: a sweep now and then answers their
		 * keepalives without spinning. */
		for (size_t i = 0; i < k; i++)
			if (v[i])
				pm_node_run(v[i], 0);
		poll(&(struct pollfd){ .fd = fd, .events = POLLIN }, 1, 250);
	}
	if (m->type == CTL_STOP)
		child_exit(fd, v, k);
}

void child_exit(int fd, struct pm_node **v, size_t k)
{
	struct ctl bye = { .type = CTL_BYE };

	bye.v[0] = (uint64_t)bench_hwm_kib();
	bye.v[1] = (uint64_t)bench_rss_kib();
	for (size_t i = 0; i < k; i++)
		pm_node_destroy(v[i]);
	child_send(fd, &bye);
	_exit(0);
}

int child_run_until(struct pm_node *n, const bool *done, int ms)
{
	int64_t end = bench_now_ns() + (int64_t)ms * 1000000;

	while (!*done) {
		int r;

		if (bench_now_ns() > end)
			return -ETIMEDOUT;
		r = pm_node_run(n, 100);
		if (r < 0 && r != -EINTR)
			return r;
	}
	return 0;
}
