/* SPDX-License-Identifier: MIT */
/*
 * Bulk transfer between two processes: every byte checked against a seeded
 * generator, both directions at once; and a slow receiver that must push
 * back on the sender without either process's memory growing. Runs once per
 * backend. Each side is a forked child that reports through a pipe; the
 * children use no cmocka calls.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "lib/testlib.h"

#define MiB		(1ull << 20)
#define MSG		(64u << 10)
#define RING		(4u << 20)
#define BULK_BYTES	(256 * MiB)
#define SLOW_BYTES	(64 * MiB)
#define HWM_LIMIT	(128 * MiB)
#define CHILD_SECONDS	50	/* a hung child is killed by SIGALRM */
#define SEED_LISTENER	0x9e3779b97f4a7c15ull
#define SEED_DIALLER	0xd1b54a32d192ed03ull

struct side {
	bool dial;		/* else: listen and wait to be dialled */
	const char *addr;	/* the listener's, for the dialler */
	uint64_t send_total;
	uint64_t recv_total;
	uint64_t tx_seed;
	uint64_t rx_seed;
	bool slow;		/* runs every few ms, consumes slowly */
	int addr_fd;		/* the listener writes its address here */
};

struct result {
	int rc;			/* 0, or 1 with why */
	char why[200];
	uint64_t sent;
	uint64_t recvd;
	uint64_t eagain;	/* reservations refused: ring full */
	uint64_t writable;	/* PM_EV_WRITABLE seen */
	int64_t bad_off;	/* first wrong byte received, or -1 */
	uint64_t hwm;		/* VmHWM at the end, bytes */
};

/* The state of the side running in this (child) process. */
static struct {
	const struct side *sd;
	struct pm_stream s;
	bool have_stream;
	bool want_writable;
	bool closed;
	struct pm_event close_ev;
	uint64_t rx_x;
	struct result r;
} me;

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static int on_message(struct pm_node *n, const struct pm_message *m,
		      void *user)
{
	long off;

	if (!me.have_stream) {
		me.s = m->stream;
		me.have_stream = true;
	}
	if (me.r.bad_off < 0) {
		if (m->len % 8 || me.r.recvd + m->len > me.sd->recv_total)
			me.r.bad_off = (int64_t)me.r.recvd;
		off = me.r.bad_off < 0 ? tl_verify(&me.rx_x, m->data, m->len)
				       : -1;
		if (off >= 0)
			me.r.bad_off = (int64_t)me.r.recvd + off;
	}
	me.r.recvd += m->len;
	if (me.sd->slow)
		usleep(200);
	return 0;
}

static void on_event(struct pm_node *n, const struct pm_event *ev,
		     void *user)
{
	switch (ev->type) {
	case PM_EV_CONNECTED:
		if (!me.have_stream) {
			me.s = ev->stream;
			me.have_stream = true;
		}
		break;
	case PM_EV_WRITABLE:
		me.r.writable++;
		me.want_writable = false;
		break;
	case PM_EV_CLOSED:
		me.closed = true;
		me.close_ev = *ev;
		break;
	default:
		break;
	}
}

static bool side_done(struct pm_node *n)
{
	if (me.r.sent < me.sd->send_total || me.r.recvd < me.sd->recv_total)
		return false;
	return !me.have_stream || pm_stream_queued(n, me.s) <= 0;
}

/* Queues what fits now. Returns 0 or a failure already described. */
static int send_some(struct pm_node *n, uint64_t *tx_x)
{
	unsigned batch;
	size_t len;
	void *buf;
	int rc;

	for (batch = 0; batch < 64; batch++) {
		if (!me.have_stream || me.want_writable ||
		    me.r.sent >= me.sd->send_total)
			return 0;
		len = MSG;
		if (me.sd->send_total - me.r.sent < len)
			len = me.sd->send_total - me.r.sent;
		rc = pm_reserve(n, me.s, len, &buf);
		if (rc == -EAGAIN) {
			me.r.eagain++;
			me.want_writable = true;
			return 0;
		}
		if (rc) {
			snprintf(me.r.why, sizeof(me.r.why),
				 "pm_reserve at %llu: %d (%s)",
				 (unsigned long long)me.r.sent, rc,
				 strerror(-rc));
			return rc;
		}
		tl_fill(tx_x, buf, len);
		rc = pm_commit(n, me.s, len);
		if (rc) {
			snprintf(me.r.why, sizeof(me.r.why),
				 "pm_commit: %d (%s)", rc, strerror(-rc));
			return rc;
		}
		me.r.sent += len;
	}
	return 0;
}

static int run_side(struct pm_node *n)
{
	const uint64_t end = now_ms() + (CHILD_SECONDS - 5) * 1000ull;
	uint64_t tx_x = me.sd->tx_seed;
	int rc;

	while (!side_done(n)) {
		if (me.closed) {
			snprintf(me.r.why, sizeof(me.r.why),
				 "stream closed early: error %d reason %s, "
				 "unsent %llu", me.close_ev.error,
				 pm_close_reason_str(me.close_ev.reason),
				 (unsigned long long)me.close_ev.unsent);
			return -EPIPE;
		}
		if (now_ms() > end) {
			snprintf(me.r.why, sizeof(me.r.why),
				 "timed out%s", me.want_writable ?
				 ": no PM_EV_WRITABLE after -EAGAIN" : "");
			return -ETIMEDOUT;
		}
		rc = send_some(n, &tx_x);
		if (rc)
			return rc;
		if (me.sd->slow) {
			rc = pm_node_run(n, 0);
			usleep(2000);
		} else {
			rc = pm_node_run(n, me.want_writable ||
					 me.r.sent >= me.sd->send_total);
		}
		if (rc < 0) {
			snprintf(me.r.why, sizeof(me.r.why),
				 "pm_node_run: %d (%s)", rc, strerror(-rc));
			return rc;
		}
	}
	return 0;
}

/* The body of a child: never returns. */
static void child(const struct side *sd, int res_fd)
{
	struct pm_config c;
	struct pm_node *n;
	char addr[TL_ADDR_LEN];
	int rc;

	alarm(CHILD_SECONDS);
	memset(&me, 0, sizeof(me));
	me.sd = sd;
	me.rx_x = sd->rx_seed;
	me.r.bad_off = -1;
	me.r.rc = 1;

	pm_config_init(&c);
	c.engine = tl_engine;
	c.ring_size = RING;
	c.max_message = MSG;
	c.on_message = on_message;
	c.on_event = on_event;
	rc = pm_node_create(&n, &c);
	if (rc) {
		snprintf(me.r.why, sizeof(me.r.why), "pm_node_create: %d",
			 rc);
		goto out;
	}
	if (sd->dial) {
		rc = pm_connect(n, sd->addr, &me.s);
		if (rc) {
			snprintf(me.r.why, sizeof(me.r.why),
				 "pm_connect %s: %d", sd->addr, rc);
			goto out_destroy;
		}
		me.have_stream = true;
	} else {
		memset(addr, 0, sizeof(addr));
		rc = pm_node_listen_addr(n, addr, sizeof(addr));
		if (rc <= 0 || write(sd->addr_fd, addr, sizeof(addr)) !=
			       (ssize_t)sizeof(addr)) {
			snprintf(me.r.why, sizeof(me.r.why),
				 "cannot publish the address");
			goto out_destroy;
		}
	}
	rc = run_side(n);
	if (rc)
		goto out_destroy;
	rc = pm_node_shutdown(n, 10000);
	if (rc) {
		snprintf(me.r.why, sizeof(me.r.why), "pm_node_shutdown: %d",
			 rc);
		goto out_destroy;
	}
	me.r.rc = 0;
out_destroy:
	pm_node_destroy(n);
out:
	me.r.hwm = tl_hwm_bytes();
	if (write(res_fd, &me.r, sizeof(me.r)) != (ssize_t)sizeof(me.r))
		_exit(3);
	_exit(me.r.rc);
}

static pid_t spawn(const struct side *sd, int *res_rd)
{
	int p[2];
	pid_t pid;

	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	fflush(stdout);
	fflush(stderr);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		close(p[0]);
		child(sd, p[1]);
	}
	close(p[1]);
	*res_rd = p[0];
	return pid;
}

/* Reads a child's result and reaps it; fails the test on any problem. */
static void collect(const char *who, pid_t pid, int fd, struct result *r)
{
	ssize_t got;
	int status;

	got = read(fd, r, sizeof(*r));
	close(fd);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	if (got != (ssize_t)sizeof(*r)) {
		if (WIFSIGNALED(status))
			fail_msg("%s: killed by signal %d%s", who,
				 WTERMSIG(status), WTERMSIG(status) == SIGALRM ?
				 " (hung)" : "");
		fail_msg("%s: no result, exit status %d", who,
			 WEXITSTATUS(status));
	}
	print_message("%s: sent %llu MiB, received %llu MiB, -EAGAIN %llu, "
		      "WRITABLE %llu, VmHWM %llu MiB\n", who,
		      (unsigned long long)(r->sent / MiB),
		      (unsigned long long)(r->recvd / MiB),
		      (unsigned long long)r->eagain,
		      (unsigned long long)r->writable,
		      (unsigned long long)(r->hwm / MiB));
	if (r->bad_off >= 0)
		fail_msg("%s: received byte %lld differs from the sender's "
			 "stream", who, (long long)r->bad_off);
	if (r->rc || !WIFEXITED(status) || WEXITSTATUS(status))
		fail_msg("%s: failed (status %d): %s", who, status, r->why);
}

/* Runs a listener child l and a dialler child d; results into rl, rd. */
static void run_pair(struct side *l, struct side *d, struct result *rl,
		     struct result *rd)
{
	char addr[TL_ADDR_LEN];
	struct pollfd pfd;
	int ap[2], lfd, dfd;
	pid_t lpid, dpid;

	assert_int_equal(pipe2(ap, O_CLOEXEC), 0);
	l->addr_fd = ap[1];
	lpid = spawn(l, &lfd);
	close(ap[1]);
	pfd.fd = ap[0];
	pfd.events = POLLIN;
	assert_int_equal(poll(&pfd, 1, TL_DEADLINE_MS), 1);
	if (read(ap[0], addr, sizeof(addr)) != (ssize_t)sizeof(addr)) {
		close(ap[0]);
		collect("listener", lpid, lfd, rl);
		fail_msg("listener published no address");
	}
	close(ap[0]);
	addr[sizeof(addr) - 1] = '\0';
	d->addr = addr;
	dpid = spawn(d, &dfd);
	collect("dialler", dpid, dfd, rd);
	collect("listener", lpid, lfd, rl);
}

static void test_bulk_both_ways(void **state)
{
	struct side l = {
		.send_total = BULK_BYTES, .recv_total = BULK_BYTES,
		.tx_seed = SEED_LISTENER, .rx_seed = SEED_DIALLER,
	};
	struct side d = {
		.dial = true,
		.send_total = BULK_BYTES, .recv_total = BULK_BYTES,
		.tx_seed = SEED_DIALLER, .rx_seed = SEED_LISTENER,
	};
	struct result rl, rd;

	tl_begin();
	run_pair(&l, &d, &rl, &rd);
	assert_true(rl.sent == BULK_BYTES && rl.recvd == BULK_BYTES);
	assert_true(rd.sent == BULK_BYTES && rd.recvd == BULK_BYTES);
	if (rl.hwm >= HWM_LIMIT || rd.hwm >= HWM_LIMIT)
		fail_msg("peak RSS over %llu MiB: listener %llu, dialler %llu",
			 HWM_LIMIT / MiB, (unsigned long long)(rl.hwm / MiB),
			 (unsigned long long)(rd.hwm / MiB));
}

static void test_bulk_slow_receiver(void **state)
{
	struct side l = {
		.recv_total = SLOW_BYTES, .rx_seed = SEED_DIALLER,
		.slow = true,
	};
	struct side d = {
		.dial = true, .send_total = SLOW_BYTES,
		.tx_seed = SEED_DIALLER,
	};
	struct result rl, rd;

	tl_begin();
	run_pair(&l, &d, &rl, &rd);
	assert_true(rl.recvd == SLOW_BYTES);
	assert_true(rd.sent == SLOW_BYTES);
	/* The sender was pushed back, and told when to resume. */
	assert_true(rd.eagain > 0);
	assert_true(rd.writable > 0);
	if (rl.hwm >= HWM_LIMIT || rd.hwm >= HWM_LIMIT)
		fail_msg("peak RSS over %llu MiB: receiver %llu, sender %llu",
			 HWM_LIMIT / MiB, (unsigned long long)(rl.hwm / MiB),
			 (unsigned long long)(rd.hwm / MiB));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_bulk_both_ways),
		cmocka_unit_test(test_bulk_slow_receiver),
	};
	int failed;

	failed = cmocka_run_group_tests_name("bulk/io_uring", tests,
					     tl_setup_io_uring, tl_teardown);
	failed += cmocka_run_group_tests_name("bulk/epoll", tests,
					      tl_setup_epoll, tl_teardown);
	return failed ? 1 : 0;
}
