/* SPDX-License-Identifier: MIT */
#include <arpa/inet.h>
#include <errno.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "testlib.h"

enum pm_engine tl_engine = PM_ENGINE_EPOLL;

/* Why the group's backend is missing, or NULL when it is usable. */
static const char *skip_reason;
static char skip_buf[128];

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

int tl_setup_io_uring(void **state)
{
	struct pm_config c;
	struct pm_node *n;
	int rc;

	tl_engine = PM_ENGINE_IO_URING;
	skip_reason = NULL;
	pm_config_init(&c);
	c.engine = PM_ENGINE_IO_URING;
	rc = pm_node_create(&n, &c);
	if (rc == 0) {
		pm_node_destroy(n);
		return 0;
	}
	/* Only a refusal by the kernel is a skip; anything else must fail. */
	if (rc == -EPROTONOSUPPORT || rc == -EPERM || rc == -ENOSYS) {
		snprintf(skip_buf, sizeof(skip_buf), "%s (%d)", strerror(-rc),
			 rc);
		skip_reason = skip_buf;
		printf("SKIP io_uring: %s\n", skip_reason);
		fflush(stdout);
	}
	return 0;
}

int tl_setup_epoll(void **state)
{
	tl_engine = PM_ENGINE_EPOLL;
	skip_reason = NULL;
	return 0;
}

int tl_teardown(void **state)
{
	return 0;
}

void tl_begin(void)
{
	if (skip_reason)
		skip();
}

void tl_config(struct pm_config *c)
{
	pm_config_init(c);
	c->engine = tl_engine;
}

static int on_message(struct pm_node *n, const struct pm_message *m,
		      void *user)
{
	struct tl_node *t = user;
	struct tl_msg *lm;
	int rc = 0;

	if (t->hook)
		rc = t->hook(t, m);
	if (rc)
		return rc;
	t->msgs_seen++;
	if (t->nolog)
		return 0;
	if (t->nmsgs == TL_LOG_MSGS || TL_LOG_BYTES - t->nbytes < m->len) {
		t->log_full = true;
		return 0;
	}
	lm = &t->msgs[t->nmsgs++];
	lm->peer_id = m->peer_id;
	lm->stream = m->stream;
	lm->off = t->nbytes;
	lm->len = m->len;
	if (m->len)
		memcpy(t->bytes + t->nbytes, m->data, m->len);
	t->nbytes += m->len;
	return 0;
}

static void on_event(struct pm_node *n, const struct pm_event *ev, void *user)
{
	struct tl_node *t = user;

	if ((unsigned)ev->type <= PM_EV_REJECTED)
		t->ev_count[ev->type]++;
	if (t->nevs == TL_MAX_EVENTS) {
		t->log_full = true;
		return;
	}
	t->evs[t->nevs].ev = *ev;
	t->evs[t->nevs].msgs_before = t->msgs_seen;
	t->nevs++;
}

struct tl_node *tl_node_new(const struct pm_config *cfg)
{
	const char *want;
	struct pm_config c;
	struct tl_node *t;
	char *colon;
	int rc;

	if (cfg)
		c = *cfg;
	else
		tl_config(&c);
	t = calloc(1, sizeof(*t));
	assert_non_null(t);
	t->msgs = calloc(TL_LOG_MSGS, sizeof(*t->msgs));
	t->bytes = malloc(TL_LOG_BYTES);
	assert_non_null(t->msgs);
	assert_non_null(t->bytes);
	c.on_message = on_message;
	c.on_event = on_event;
	c.user = t;
	rc = pm_node_create(&t->n, &c);
	if (rc)
		fail_msg("pm_node_create: %d (%s)", rc, strerror(-rc));
	want = tl_engine == PM_ENGINE_IO_URING ? "io_uring" : "epoll";
	if (c.engine != PM_ENGINE_AUTO)
		assert_string_equal(pm_node_engine(t->n), want);
	t->id = pm_node_id(t->n);
	assert_true(t->id != 0);
	rc = pm_node_listen_addr(t->n, t->addr, sizeof(t->addr));
	assert_true(rc > 0 && (size_t)rc < sizeof(t->addr));
	assert_int_equal((size_t)rc, strlen(t->addr));
	colon = strrchr(t->addr, ':');
	assert_non_null(colon);
	t->port = (uint16_t)atoi(colon + 1);
	assert_true(t->port != 0);
	return t;
}

void tl_node_kill(struct tl_node *t)
{
	if (t && t->n) {
		pm_node_destroy(t->n);
		t->n = NULL;
	}
}

void tl_node_free(struct tl_node *t)
{
	if (!t)
		return;
	tl_node_kill(t);
	free(t->msgs);
	free(t->bytes);
	free(t);
}

static int run_one(struct tl_node *t, int timeout_ms)
{
	int rc;

	if (!t || !t->n)
		return 0;
	rc = pm_node_run(t->n, timeout_ms);
	if (rc < 0)
		fail_msg("pm_node_run: %d (%s)", rc, strerror(-rc));
	return rc;
}

bool tl_pump(struct tl_node *const *v, size_t k, tl_pred until, void *arg,
	     int deadline_ms)
{
	const uint64_t end = now_ms() + (uint64_t)deadline_ms;
	size_t i, turn = 0;
	int work;

	for (;;) {
		if (until(arg))
			return true;
		if (now_ms() > end)
			return until(arg);
		work = 0;
		for (i = 0; i < k; i++)
			work += run_one(v[i], 0);
		/* Nothing moved: wait a little on one node, not spin. */
		if (!work && k)
			run_one(v[turn++ % k], 1);
	}
}

void tl_settle(struct tl_node *const *v, size_t k, unsigned rounds)
{
	size_t i;

	while (rounds--) {
		for (i = 0; i < k; i++)
			run_one(v[i], 0);
	}
}

struct want_msgs {
	struct tl_node *t;
	uint64_t n;
};

static bool have_msgs(void *arg)
{
	struct want_msgs *w = arg;

	return w->t->msgs_seen >= w->n;
}

bool tl_wait_msgs(struct tl_node *const *v, size_t k, struct tl_node *t,
		  uint64_t n)
{
	struct want_msgs w = { t, n };

	return tl_pump(v, k, have_msgs, &w, TL_DEADLINE_MS);
}

const struct tl_event *tl_find_event(const struct tl_node *t,
				     enum pm_event_type type,
				     struct pm_stream s)
{
	size_t i;

	for (i = 0; i < t->nevs; i++) {
		if (t->evs[i].ev.type != type)
			continue;
		if (s.h && t->evs[i].ev.stream.h != s.h)
			continue;
		return &t->evs[i];
	}
	return NULL;
}

struct want_event {
	struct tl_node *t;
	enum pm_event_type type;
	struct pm_stream s;
};

static bool have_event(void *arg)
{
	struct want_event *w = arg;

	return tl_find_event(w->t, w->type, w->s) != NULL;
}

const struct tl_event *tl_wait_event(struct tl_node *const *v, size_t k,
				     struct tl_node *t,
				     enum pm_event_type type,
				     struct pm_stream s)
{
	struct want_event w = { t, type, s };

	tl_pump(v, k, have_event, &w, TL_DEADLINE_MS);
	return tl_find_event(t, type, s);
}

int tl_send_retry(struct tl_node *const *v, size_t k, struct tl_node *t,
		  struct pm_stream s, const void *buf, size_t len)
{
	const uint64_t end = now_ms() + TL_DEADLINE_MS;
	size_t i;
	int rc;

	for (;;) {
		rc = pm_send(t->n, s, buf, len);
		if (rc != -EAGAIN || now_ms() > end)
			return rc;
		for (i = 0; i < k; i++)
			run_one(v[i], 0);
	}
}

const void *tl_msg_data(const struct tl_node *t, size_t i)
{
	assert_true(i < t->nmsgs);
	return t->bytes + t->msgs[i].off;
}

static bool port_in(unsigned port, const uint16_t *ports, size_t k)
{
	size_t i;

	for (i = 0; i < k; i++) {
		if (port == ports[i])
			return true;
	}
	return false;
}

/* One look at the machine's ESTABLISHED TCP sockets. */
struct sock_scan {
	const uint16_t *ports;	/* the remote ports of interest */
	size_t k;
	struct tl_sock *out;	/* NULL: count only */
	int max;
	int n;			/* of interest */
	int machine;		/* all of them */
};

static void scan_add(struct sock_scan *sc, unsigned long ino,
		     unsigned lport, unsigned rport)
{
	sc->machine++;
	if (!port_in(rport, sc->ports, sc->k))
		return;
	if (sc->out) {
		if (sc->n == sc->max)
			return;
		sc->out[sc->n] = (struct tl_sock){ ino, (uint16_t)lport,
						   (uint16_t)rport };
	}
	sc->n++;
}

/*
 * Asks the kernel for its ESTABLISHED TCP sockets only (sock_diag): the
 * text table also lists every TIME_WAIT socket of the machine, is slow to
 * read when thousands pile up, and is not read atomically. Returns 0, or
 * -1 when sock_diag is unavailable.
 */
static int diag_scan(int family, struct sock_scan *sc)
{
	struct {
		struct nlmsghdr nlh;
		struct inet_diag_req_v2 r;
	} req;
	uint32_t buf[8192];
	const struct inet_diag_msg *m;
	const struct nlmsghdr *h;
	ssize_t len;
	int fd;

	fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
	if (fd < 0)
		return -1;
	memset(&req, 0, sizeof(req));
	req.nlh.nlmsg_len = sizeof(req);
	req.nlh.nlmsg_type = SOCK_DIAG_BY_FAMILY;
	req.nlh.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
	req.r.sdiag_family = (uint8_t)family;
	req.r.sdiag_protocol = IPPROTO_TCP;
	req.r.idiag_states = 1u << TCP_ESTABLISHED;
	if (send(fd, &req, sizeof(req), 0) != (ssize_t)sizeof(req))
		goto out_err;
	for (;;) {
		len = recv(fd, buf, sizeof(buf), 0);
		if (len <= 0)
			goto out_err;
		for (h = (const struct nlmsghdr *)buf; NLMSG_OK(h, len);
		     h = NLMSG_NEXT(h, len)) {
			if (h->nlmsg_type == NLMSG_DONE)
				goto out;
			if (h->nlmsg_type == NLMSG_ERROR)
				goto out_err;
			m = NLMSG_DATA(h);
			if (m->idiag_state == TCP_ESTABLISHED)
				scan_add(sc, m->idiag_inode,
					 ntohs(m->id.idiag_sport),
					 ntohs(m->id.idiag_dport));
		}
	}
out:
	close(fd);
	return 0;
out_err:
	close(fd);
	return -1;
}

/* The /proc/net/tcp text table: the fallback without sock_diag. */
static void file_scan(const char *path, struct sock_scan *sc)
{
	unsigned lport, rport, st;
	unsigned long ino;
	char line[512];
	FILE *f;

	f = fopen(path, "r");
	if (!f)
		return;	/* no IPv6 in this namespace */
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, " %*u: %*[0-9A-Fa-f]:%x %*[0-9A-Fa-f]:%x %x "
			   "%*x:%*x %*x:%*x %*x %*u %*u %lu", &lport, &rport,
			   &st, &ino) != 4)
			continue;	/* the header */
		if (st == 0x01)	/* 01: TCP_ESTABLISHED */
			scan_add(sc, ino, lport, rport);
	}
	fclose(f);
}

int tl_tcp_sockets(const uint16_t *ports, size_t k, struct tl_sock *out,
		   int max, int *machine)
{
	struct sock_scan sc = { .ports = ports, .k = k, .out = out,
				.max = max };

	if (diag_scan(AF_INET, &sc) < 0 || diag_scan(AF_INET6, &sc) < 0) {
		sc.n = 0;
		sc.machine = 0;
		file_scan("/proc/net/tcp", &sc);
		file_scan("/proc/net/tcp6", &sc);
	}
	if (machine)
		*machine = sc.machine;
	return sc.n;
}

int tl_tcp_established(const uint16_t *ports, size_t k)
{
	return tl_tcp_sockets(ports, k, NULL, 0, NULL);
}

int tl_tcp_established_between(uint16_t pa, uint16_t pb)
{
	const uint16_t ports[2] = { pa, pb };

	return tl_tcp_established(ports, 2);
}

/* A socket bound to a free loopback port, not listening; sets *port. */
static int bind_free_port(uint16_t *port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	socklen_t len = sizeof(sa);
	int fd;

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
	*port = ntohs(sa.sin_port);
	return fd;
}

uint16_t tl_closed_port(void)
{
	uint16_t port;

	close(bind_free_port(&port));
	return port;
}

uint16_t tl_refused_port(void)
{
	uint16_t port;

	/* Kept bound, never listening, until the process exits: a SYN gets
	 * a reset, and no other process on this shared machine can take
	 * the port between now and the dial (a closed port can be). */
	(void)bind_free_port(&port);
	return port;
}

size_t tl_rss_bytes(void)
{
	unsigned long size = 0, resident = 0;
	FILE *f;

	f = fopen("/proc/self/statm", "r");
	assert_non_null(f);
	assert_int_equal(fscanf(f, "%lu %lu", &size, &resident), 2);
	fclose(f);
	return resident * (size_t)sysconf(_SC_PAGESIZE);
}

size_t tl_hwm_bytes(void)
{
	char line[256];
	size_t kb = 0;
	FILE *f;

	f = fopen("/proc/self/status", "r");
	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "VmHWM: %zu kB", &kb) == 1)
			break;
	}
	fclose(f);
	return kb * 1024;
}

void tl_fill(uint64_t *s, void *buf, size_t len)
{
	unsigned char *p = buf;
	uint64_t x;
	size_t i;

	for (i = 0; i + 8 <= len; i += 8) {
		x = tl_xorshift(s);
		memcpy(p + i, &x, 8);
	}
}

long tl_verify(uint64_t *s, const void *buf, size_t len)
{
	const unsigned char *p = buf;
	uint64_t x, y;
	size_t i, j;

	for (i = 0; i + 8 <= len; i += 8) {
		x = tl_xorshift(s);
		memcpy(&y, p + i, 8);
		if (x == y)
			continue;
		for (j = 0; j < 8; j++) {
			if (((const unsigned char *)&x)[j] != p[i + j])
				return (long)(i + j);
		}
	}
	return -1;
}

void tl_put64(void *p, uint64_t v)
{
	memcpy(p, &v, sizeof(v));
}

uint64_t tl_get64(const void *p)
{
	uint64_t v;

	memcpy(&v, p, sizeof(v));
	return v;
}

void tl_make_msg(void *buf, uint64_t i, size_t len)
{
	unsigned char *p = buf;
	size_t j;

	for (j = 0; j < len; j++)
		p[j] = (unsigned char)(i * 131 + j * 7 + (i >> 8));
	if (len >= 8)
		tl_put64(p, i);
}

bool tl_msg_ok(const void *buf, size_t len, uint64_t i)
{
	const unsigned char *p = buf;
	size_t j = 0;

	if (len >= 8) {
		if (tl_get64(p) != i)
			return false;
		j = 8;
	}
	for (; j < len; j++) {
		if (p[j] != (unsigned char)(i * 131 + j * 7 + (i >> 8)))
			return false;
	}
	return true;
}
