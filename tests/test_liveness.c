/* SPDX-License-Identifier: MIT */
/*
 * Liveness: keepalives keep an idle pair alive, a peer that stops (not
 * pumped, or SIGSTOPped) is closed with -ETIMEDOUT, and a handshake that
 * never finishes frees its slot. Every wait is bounded; the limits are
 * configured short so the bounds stay small, never asserted as timings.
 */
#include <errno.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "lib/testlib.h"

static void short_limits(struct pm_config *c)
{
	tl_config(c);
	c->keepalive_ms = 50;
	c->dead_ms = 400;
	c->handshake_ms = 300;
}

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

struct closed_arg {
	struct tl_node *t;
	struct pm_stream s;
};

static bool closed(void *arg)
{
	struct closed_arg *a = arg;

	return tl_find_event(a->t, PM_EV_CLOSED, a->s) != NULL;
}

static struct pm_stream connect_pair(struct tl_node *a, struct tl_node *b)
{
	struct tl_node *v[2] = { a, b };
	struct pm_stream s;

	assert_int_equal(pm_connect(a->n, b->addr, &s), 0);
	assert_int_equal(pm_send(a->n, s, "hi", 2), 0);
	assert_true(tl_wait_msgs(v, 2, b, 1));
	return s;
}

/* Both pumped, nothing sent for several dead_ms: keepalives hold it. */
static void test_liveness_idle_pair_survives(void **state)
{
	struct pm_config c;
	struct tl_node *a, *b, *v[2];
	struct pm_stream s;
	uint64_t until;

	tl_begin();
	short_limits(&c);
	a = tl_node_new(&c);
	b = tl_node_new(&c);
	v[0] = a;
	v[1] = b;
	s = connect_pair(a, b);
	until = now_ms() + 4 * c.dead_ms;
	while (now_ms() < until) {
		pm_node_run(a->n, 5);
		pm_node_run(b->n, 5);
	}
	assert_null(tl_find_event(a, PM_EV_CLOSED, s));
	assert_int_equal(b->ev_count[PM_EV_CLOSED], 0);
	assert_int_equal(pm_send(a->n, s, "still", 5), 0);
	assert_true(tl_wait_msgs(v, 2, b, 2));
	tl_node_free(a);
	tl_node_free(b);
}

/* b stops running its loop (a stopped process, seen from a): a closes the
 * stream with -ETIMEDOUT and counts it. */
static void test_liveness_silent_peer_closed(void **state)
{
	struct pm_config c;
	struct tl_node *a, *b, *only_a[1];
	struct closed_arg arg;
	const struct tl_event *ev;
	struct pm_stats st;

	tl_begin();
	short_limits(&c);
	a = tl_node_new(&c);
	b = tl_node_new(&c);
	arg.t = a;
	arg.s = connect_pair(a, b);
	only_a[0] = a;
	assert_true(tl_pump(only_a, 1, closed, &arg, TL_DEADLINE_MS));
	ev = tl_find_event(a, PM_EV_CLOSED, arg.s);
	assert_int_equal(ev->ev.error, -ETIMEDOUT);
	pm_node_stats(a->n, &st);
	assert_true(st.timeouts >= 1);
	assert_int_equal(pm_send(a->n, arg.s, "x", 1), -ESTALE);
	tl_node_free(a);
	tl_node_free(b);
}

static bool no_conns(void *arg)
{
	struct pm_stats st;

	pm_node_stats(((struct tl_node *)arg)->n, &st);
	return st.conns_open == 0;
}

/* Like the above, but a only ever waits with timeout -1: the node must
 * still wake up for its own timers. */
static void test_liveness_timers_run_when_idle(void **state)
{
	struct pm_config c;
	struct tl_node *a, *b;
	struct closed_arg arg;
	int turns;

	tl_begin();
	short_limits(&c);
	c.resume_ms = 0;
	a = tl_node_new(&c);
	b = tl_node_new(&c);
	arg.t = a;
	arg.s = connect_pair(a, b);
	/* Each turn returns by itself (timers): bounded by turns. */
	for (turns = 0; turns < 400 && !closed(&arg); turns++)
		pm_node_run(a->n, -1);
	assert_true(closed(&arg));
	tl_node_free(a);
	tl_node_free(b);
}

/* A TCP client that connects and never says HELLO: its slot is freed. */
static void test_liveness_stalled_handshake_freed(void **state)
{
	struct pm_config c;
	struct tl_node *a, *v[1];
	struct sockaddr_in sin = { .sin_family = AF_INET };
	struct pm_stats st;
	int fd;

	tl_begin();
	short_limits(&c);
	a = tl_node_new(&c);
	v[0] = a;
	sin.sin_port = htons(a->port);
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	fd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(fd >= 0);
	assert_int_equal(connect(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	/* First the node takes it in, then gives up on it. */
	tl_settle(v, 1, 20);
	assert_true(tl_pump(v, 1, no_conns, a, TL_DEADLINE_MS));
	pm_node_stats(a->n, &st);
	assert_true(st.accepted >= 1);
	assert_true(st.timeouts >= 1);
	close(fd);
	tl_node_free(a);
}

/* A real process stopped with SIGSTOP: the other side notices. */
static void test_liveness_sigstop_detected(void **state)
{
	struct pm_config c;
	struct tl_node *a, *v[1];
	int pfd[2], status;
	char addr[TL_ADDR_LEN] = { 0 };
	struct closed_arg arg;
	const struct tl_event *ev;
	pid_t pid;

	tl_begin();
	short_limits(&c);
	assert_int_equal(pipe(pfd), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct pm_node *b;

		close(pfd[0]);
		if (pm_node_create(&b, &c))
			_exit(1);
		pm_node_listen_addr(b, addr, sizeof(addr));
		if (write(pfd[1], addr, sizeof(addr)) != sizeof(addr))
			_exit(1);
		for (;;)
			pm_node_run(b, 50);
	}
	close(pfd[1]);
	assert_int_equal(read(pfd[0], addr, sizeof(addr)), sizeof(addr));
	close(pfd[0]);
	a = tl_node_new(&c);
	v[0] = a;
	assert_int_equal(pm_connect(a->n, addr, &arg.s), 0);
	assert_int_equal(pm_send(a->n, arg.s, "hi", 2), 0);
	assert_non_null(tl_wait_event(v, 1, a, PM_EV_CONNECTED, arg.s));
	kill(pid, SIGSTOP);
	arg.t = a;
	bool seen = tl_pump(v, 1, closed, &arg, TL_DEADLINE_MS);

	kill(pid, SIGKILL);
	waitpid(pid, &status, 0);
	assert_true(seen);
	ev = tl_find_event(a, PM_EV_CLOSED, arg.s);
	assert_int_equal(ev->ev.error, -ETIMEDOUT);
	tl_node_free(a);
}

#define CASES                                                        \
	cmocka_unit_test(test_liveness_idle_pair_survives),          \
	cmocka_unit_test(test_liveness_sigstop_detected),            \
	cmocka_unit_test(test_liveness_silent_peer_closed),          \
	cmocka_unit_test(test_liveness_stalled_handshake_freed),     \
	cmocka_unit_test(test_liveness_timers_run_when_idle)

int main(void)
{
	const struct CMUnitTest cases[] = { CASES };
	int r = 0;

	r |= cmocka_run_group_tests_name("liveness/io_uring", cases,
					 tl_setup_io_uring, tl_teardown);
	r |= cmocka_run_group_tests_name("liveness/epoll", cases,
					 tl_setup_epoll, tl_teardown);
	return r;
}
