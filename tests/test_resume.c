/* SPDX-License-Identifier: MIT */
/*
 * Resumable streams: a connection cut while both nodes live is redialled
 * and the stream carries on with nothing lost, duplicated or reordered; a
 * peer that restarted (a new process behind the same id and address) is a
 * new session, said so; a peer gone for good ends the stream after
 * resume_ms. Messages carry sequence numbers; every wait is bounded.
 */
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "lib/testlib.h"

#define COUNT 20000

/* Shuts down every socket of this process connected to port: a reset as
 * the kernel would report it, without either node asking for it. */
static int cut_connections_to(uint16_t port)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int cut = 0;

	assert_non_null(d);
	while ((e = readdir(d))) {
		struct sockaddr_in sin;
		socklen_t len = sizeof(sin);
		int fd = atoi(e->d_name);
		struct stat st;

		if (fd <= 2 || fstat(fd, &st) || !S_ISSOCK(st.st_mode))
			continue;
		if (getpeername(fd, (struct sockaddr *)&sin, &len) ||
		    sin.sin_family != AF_INET || ntohs(sin.sin_port) != port)
			continue;
		shutdown(fd, SHUT_RDWR);
		cut++;
	}
	closedir(d);
	return cut;
}

static void resume_config(struct pm_config *c)
{
	tl_config(c);
	c->resume_ms = 5000;
	c->reconnect_max_ms = 200;
}

struct seq_check {
	uint64_t next;
	bool bad;
};

static int check_seq(struct tl_node *t, const struct pm_message *m)
{
	struct seq_check *s = t->hook_arg;

	if (m->len != 8 || tl_get64(m->data) != s->next)
		s->bad = true;
	s->next++;
	return 0;
}

static bool all_in(void *arg)
{
	struct tl_node *b = arg;

	return ((struct seq_check *)b->hook_arg)->next >= COUNT;
}

static void test_resume_reset_mid_stream(void **state)
{
	struct pm_config c;
	struct tl_node *a, *b, *v[2];
	struct seq_check seq = { 0 };
	struct pm_stats sa, sb;
	struct pm_stream s;
	uint8_t msg[8];
	uint64_t i = 0;
	int cut = 0;

	tl_begin();
	resume_config(&c);
	a = tl_node_new(&c);
	b = tl_node_new(&c);
	b->hook = check_seq;
	b->hook_arg = &seq;
	b->nolog = true;
	v[0] = a;
	v[1] = b;
	assert_int_equal(pm_connect(a->n, b->addr, &s), 0);
	while (i < COUNT) {
		tl_put64(msg, i);
		int r = pm_send(a->n, s, msg, sizeof(msg));

		if (r == -EAGAIN) {
			pm_node_run(a->n, 0);
			pm_node_run(b->n, 0);
			continue;
		}
		assert_int_equal(r, 0);
		i++;
		if (!cut && seq.next > COUNT / 3) {
			cut = cut_connections_to(b->port);
			assert_true(cut >= 1);
		}
		if (i % 64 == 0) {
			pm_node_run(a->n, 0);
			pm_node_run(b->n, 0);
		}
	}
	assert_true(cut >= 1);
	assert_true(tl_pump(v, 2, all_in, b, TL_DEADLINE_MS));
	tl_settle(v, 2, 20);
	assert_false(seq.bad);
	assert_int_equal(seq.next, COUNT);	/* none lost, none twice */
	assert_null(tl_find_event(a, PM_EV_CLOSED, s));
	assert_int_equal(b->ev_count[PM_EV_CLOSED], 0);
	pm_node_stats(a->n, &sa);
	pm_node_stats(b->n, &sb);
	assert_true(sa.resumed + sb.resumed >= 1);
	assert_int_equal(pm_send(a->n, s, msg, sizeof(msg)), 0);
	tl_node_free(a);
	tl_node_free(b);
}

struct closed_arg {
	struct tl_node *t;
	struct pm_stream s;
};

static bool closed(void *arg)
{
	struct closed_arg *x = arg;

	return tl_find_event(x->t, PM_EV_CLOSED, x->s) != NULL;
}

/* b dies and a new process (same id, same address) takes its place. */
static void test_resume_peer_restarted(void **state)
{
	struct pm_config c;
	struct tl_node *a, *b, *b2, *v[2];
	struct closed_arg x;
	const struct tl_event *ev;
	char addr[TL_ADDR_LEN];

	tl_begin();
	resume_config(&c);
	a = tl_node_new(&c);
	c.node_id = 0x4242;
	b = tl_node_new(&c);
	v[0] = a;
	v[1] = b;
	assert_int_equal(pm_connect(a->n, b->addr, &x.s), 0);
	assert_int_equal(pm_send(a->n, x.s, "one", 3), 0);
	assert_true(tl_wait_msgs(v, 2, b, 1));
	strcpy(addr, b->addr);
	tl_node_kill(b);	/* no CLOSE: a sees the connection drop */
	c.listen = addr;
	b2 = tl_node_new(&c);	/* same id and address, a new process */
	v[1] = b2;
	x.t = a;
	assert_true(tl_pump(v, 2, closed, &x, TL_DEADLINE_MS));
	ev = tl_find_event(a, PM_EV_CLOSED, x.s);
	assert_true(ev->ev.peer_restarted);
	assert_true(ev->ev.peer_id == 0x4242);
	tl_node_free(a);
	tl_node_free(b);
	tl_node_free(b2);
}

/* b is gone for good: after resume_ms the stream ends, with what was
 * queued counted as unsent. */
static void test_resume_gives_up(void **state)
{
	struct pm_config c;
	struct tl_node *a, *b, *v[2];
	struct closed_arg x;
	const struct tl_event *ev;

	tl_begin();
	resume_config(&c);
	c.resume_ms = 600;
	a = tl_node_new(&c);
	b = tl_node_new(&c);
	v[0] = a;
	v[1] = b;
	assert_int_equal(pm_connect(a->n, b->addr, &x.s), 0);
	assert_int_equal(pm_send(a->n, x.s, "one", 3), 0);
	assert_true(tl_wait_msgs(v, 2, b, 1));
	tl_node_kill(b);
	v[1] = NULL;
	assert_int_equal(pm_send(a->n, x.s, "lost", 4), 0);
	x.t = a;
	assert_true(tl_pump(v, 2, closed, &x, TL_DEADLINE_MS));
	ev = tl_find_event(a, PM_EV_CLOSED, x.s);
	assert_true(ev->ev.error < 0);
	assert_false(ev->ev.peer_restarted);
	assert_true(ev->ev.unsent >= 1);
	tl_node_free(a);
	tl_node_free(b);
}

/* An echo peer that pauses its inbound stream whenever its TX ring is
 * full and resumes on PM_EV_WRITABLE: the ACKs that free its ring arrive
 * behind the data it is not reading, and must be seen anyway. */
static long echo_sent, echo_back, echo_pauses;
static bool echo_paused;

static int echo_msg(struct pm_node *n, const struct pm_message *m, void *u)
{
	if (pm_send(n, m->stream, m->data, m->len) == -EAGAIN) {
		echo_paused = true;
		echo_pauses++;
		return -EAGAIN;
	}
	return 0;
}

static void echo_ev(struct pm_node *n, const struct pm_event *e, void *u)
{
	if (e->type == PM_EV_WRITABLE && echo_paused) {
		echo_paused = false;
		pm_stream_resume(n, e->stream);
	}
}

static int back_msg(struct pm_node *n, const struct pm_message *m, void *u)
{
	echo_back++;
	return 0;
}

static void test_resume_paused_echo(void **state)
{
	struct pm_config ca, cb;
	struct pm_node *a, *b;
	char addr[TL_ADDR_LEN], buf[1024] = { 0 };
	struct pm_stream s;
	int turns;

	tl_begin();
	tl_config(&ca);
	tl_config(&cb);
	ca.ring_size = cb.ring_size = 65536;
	ca.max_message = cb.max_message = 4096;
	ca.on_message = back_msg;
	cb.on_message = echo_msg;
	cb.on_event = echo_ev;
	echo_sent = echo_back = echo_pauses = 0;
	echo_paused = false;
	assert_int_equal(pm_node_create(&a, &ca), 0);
	assert_int_equal(pm_node_create(&b, &cb), 0);
	pm_node_listen_addr(b, addr, sizeof(addr));
	assert_int_equal(pm_connect(a, addr, &s), 0);
	/* Bounded by turns, not time: a stall shows as a shortfall. */
	for (turns = 0; echo_back < COUNT && turns < 2000000; turns++) {
		while (echo_sent < COUNT &&
		       pm_send(a, s, buf, sizeof(buf)) == 0)
			echo_sent++;
		pm_node_run(a, 0);
		pm_node_run(b, 0);
	}
	assert_true(echo_pauses > 0);	/* the pause path really ran */
	assert_int_equal(echo_back, COUNT);
	pm_node_destroy(a);
	pm_node_destroy(b);
}

#define CASES                                                        \
	cmocka_unit_test(test_resume_gives_up),                      \
	cmocka_unit_test(test_resume_paused_echo),                   \
	cmocka_unit_test(test_resume_peer_restarted),                \
	cmocka_unit_test(test_resume_reset_mid_stream)

int main(void)
{
	const struct CMUnitTest cases[] = { CASES };
	int r = 0;

	r |= cmocka_run_group_tests_name("resume/io_uring", cases,
					 tl_setup_io_uring, tl_teardown);
	r |= cmocka_run_group_tests_name("resume/epoll", cases,
					 tl_setup_epoll, tl_teardown);
	return r;
}
