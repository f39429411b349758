/* SPDX-License-Identifier: MIT */
/*
 * Completions carry slot and generation (make_tag): one that arrives for a
 * connection slot after the slot was freed and taken again is dropped,
 * never applied to the connection that holds the slot now.
 *
 * The core frees a slot only after its last operation completed, so such a
 * completion hardly happens on its own: the test makes it, completing an
 * old tag by hand through core_complete(), the one entry both engines call.
 * White box: it reads the node's connection table (node.h). Runs once per
 * backend.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "lib/testlib.h"
#include "engine.h"
#include "node.h"

/* The one live connection of t, or fails. */
static uint32_t live_conn(struct tl_node *t)
{
	struct pm_node *n = t->n;
	uint32_t found = NONE;

	for (uint32_t i = 0; i < n->nconns; i++) {
		if (n->conns[i].state != CONN_LIVE)
			continue;
		assert_true(found == NONE);
		found = i;
	}
	assert_true(found != NONE);
	return found;
}

struct slot_wait {
	struct pm_node *n;
	uint32_t ci;
	uint32_t gen;
};

static bool slot_freed(void *arg)
{
	struct slot_wait *w = arg;

	return w->n->conns[w->ci].gen != w->gen;
}

static struct pm_stream connect_live(struct tl_node *const *v, size_t k,
				     struct tl_node *a, struct tl_node *b)
{
	struct pm_stream s;

	assert_int_equal(pm_connect(a->n, b->addr, &s), 0);
	assert_non_null(tl_wait_event(v, k, a, PM_EV_CONNECTED, s));
	return s;
}

static void test_tags_stale_dropped(void **state)
{
	/* What the old connection's operations might still report. */
	static const struct {
		enum op op;
		int res;
	} late[] = {
		{ OP_RECV, 100 },		/* bytes "received" */
		{ OP_RECV, 0 },			/* EOF */
		{ OP_RECV, -ECONNRESET },
		{ OP_SEND, 4096 },		/* bytes "sent" */
		{ OP_SEND, -EPIPE },
		{ OP_CONNECT, -ECONNREFUSED },
	};
	struct tl_node *a, *b, *c, *v[3];
	struct slot_wait w;
	struct pm_stream s1, s2, back;
	struct pm_stats st;
	uint32_t ci, old_gen;

	tl_begin();
	a = tl_node_new(NULL);
	b = tl_node_new(NULL);
	c = tl_node_new(NULL);
	v[0] = a;
	v[1] = b;
	v[2] = c;

	/* a's first connection, to b, then closed: its slot is freed. */
	s1 = connect_live(v, 3, a, b);
	ci = live_conn(a);
	old_gen = a->n->conns[ci].gen;
	assert_int_equal(pm_close(a->n, s1), 0);
	w = (struct slot_wait){ a->n, ci, old_gen };
	assert_true(tl_pump(v, 3, slot_freed, &w, TL_DEADLINE_MS));

	/* A new connection, to c, takes a slot: that one if it is reused,
	 * else any older generation of the slot it got is just as stale. */
	s2 = connect_live(v, 3, a, c);
	if (live_conn(a) != ci) {
		ci = live_conn(a);
		old_gen = a->n->conns[ci].gen - 1;
	}
	assert_true(a->n->conns[ci].gen != old_gen);
	assert_int_equal(pm_send(a->n, s2, "before", 6), 0);
	assert_true(tl_wait_msgs(v, 3, c, 1));

	for (size_t i = 0; i < sizeof(late) / sizeof(late[0]); i++)
		core_complete(a->n, make_tag(ci, old_gen, late[i].op),
			      late[i].res);

	/* The connection to c never noticed: both ways still work. */
	assert_int_equal(pm_send(a->n, s2, "after", 5), 0);
	assert_true(tl_wait_msgs(v, 3, c, 2));
	assert_int_equal(pm_stream_by_id(c->n, a->id, &back), 0);
	assert_int_equal(pm_send(c->n, back, "back", 4), 0);
	assert_true(tl_wait_msgs(v, 3, a, 1));
	tl_settle(v, 3, 10);

	assert_int_equal(live_conn(a), ci);
	assert_null(tl_find_event(a, PM_EV_CLOSED, s2));
	assert_null(tl_find_event(c, PM_EV_CLOSED, back));
	assert_int_equal(c->nmsgs, 2);
	assert_memory_equal(tl_msg_data(c, 0), "before", 6);
	assert_memory_equal(tl_msg_data(c, 1), "after", 5);
	assert_int_equal(a->nmsgs, 1);
	assert_memory_equal(tl_msg_data(a, 0), "back", 4);
	pm_node_stats(a->n, &st);
	assert_int_equal(st.protocol_errors, 0);
	assert_int_equal(st.reconnects, 0);
	assert_int_equal(st.conns_open, 1);
	pm_node_stats(c->n, &st);
	assert_int_equal(st.protocol_errors, 0);
	assert_int_equal(st.reconnects, 0);
	tl_node_free(a);
	tl_node_free(b);
	tl_node_free(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_tags_stale_dropped),
	};
	int failed;

	failed = cmocka_run_group_tests_name("tags/io_uring", tests,
					     tl_setup_io_uring, tl_teardown);
	failed += cmocka_run_group_tests_name("tags/epoll", tests,
					      tl_setup_epoll, tl_teardown);
	return failed ? 1 : 0;
}
