/* SPDX-License-Identifier: MIT */
/*
 * Mesh authentication: nodes holding the same key connect; a node with
 * another key, or none, is refused in both directions, gets no stream and
 * delivers nothing; each refusal is counted. Also the key file format.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "lib/testlib.h"

static const uint8_t key1[32] = "0123456789abcdef0123456789abcdef";
static const uint8_t key2[32] = "fedcba9876543210fedcba9876543210";

static struct tl_node *keyed(const uint8_t *key)
{
	struct pm_config c;

	tl_config(&c);
	c.key = key;
	c.key_len = key ? 32 : 0;
	return tl_node_new(&c);
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

static void test_auth_same_key_connects(void **state)
{
	struct tl_node *a, *b, *v[2];
	struct pm_stream s;
	struct pm_stats st;

	tl_begin();
	a = keyed(key1);
	b = keyed(key1);
	v[0] = a;
	v[1] = b;
	assert_int_equal(pm_connect(a->n, b->addr, &s), 0);
	assert_int_equal(pm_send(a->n, s, "secret", 6), 0);
	assert_true(tl_wait_msgs(v, 2, b, 1));
	assert_memory_equal(tl_msg_data(b, 0), "secret", 6);
	assert_true(b->msgs[0].peer_id == a->id);
	pm_node_stats(b->n, &st);
	assert_int_equal(st.auth_failures, 0);
	tl_node_free(a);
	tl_node_free(b);
}

/* a dials b; a's stream must end refused, b must see nothing. */
static void refused(const uint8_t *ka, const uint8_t *kb)
{
	struct tl_node *a, *b, *v[2];
	struct closed_arg arg;
	const struct tl_event *ev;
	struct pm_stats sa, sb;

	a = keyed(ka);
	b = keyed(kb);
	v[0] = a;
	v[1] = b;
	assert_int_equal(pm_connect(a->n, b->addr, &arg.s), 0);
	assert_int_equal(pm_send(a->n, arg.s, "intruder", 8), 0);
	arg.t = a;
	assert_true(tl_pump(v, 2, closed, &arg, TL_DEADLINE_MS));
	ev = tl_find_event(a, PM_EV_CLOSED, arg.s);
	assert_int_equal(ev->ev.reason, PM_CLOSE_AUTH);
	assert_int_equal(ev->ev.error, -EACCES);
	assert_true(ev->ev.unsent >= 1);
	tl_settle(v, 2, 50);
	assert_int_equal(b->msgs_seen, 0);
	assert_int_equal(b->ev_count[PM_EV_CONNECTED], 0);
	assert_int_equal(a->ev_count[PM_EV_CONNECTED], 0);
	pm_node_stats(a->n, &sa);
	pm_node_stats(b->n, &sb);
	assert_true(sa.auth_failures + sb.auth_failures >= 1);
	assert_int_equal(sb.peers_live, 0);
	tl_node_free(a);
	tl_node_free(b);
}

static void test_auth_keyed_refuses_keyless(void **state)
{
	tl_begin();
	refused(NULL, key1);
}

static void test_auth_keyless_refuses_keyed(void **state)
{
	tl_begin();
	refused(key1, NULL);
}

static void test_auth_wrong_key_refused(void **state)
{
	tl_begin();
	refused(key1, key2);
	refused(key2, key1);
}

struct both {
	struct tl_node *a, *b;
};

static bool one_conn_each(void *arg)
{
	struct both *x = arg;
	struct pm_stats sa, sb;

	pm_node_stats(x->a->n, &sa);
	pm_node_stats(x->b->n, &sb);
	return x->a->msgs_seen == 1 && x->b->msgs_seen == 1 &&
	       sa.conns_open == 1 && sb.conns_open == 1 &&
	       tl_tcp_established_between(x->a->port, x->b->port) == 1;
}

/* The pair rule still holds when every handshake carries the key steps. */
static void test_auth_simultaneous_dial(void **state)
{
	tl_begin();
	for (int i = 0; i < 20; i++) {
		struct both x = { keyed(key1), keyed(key1) };
		struct tl_node *v[2] = { x.a, x.b };
		struct pm_stream sa, sb;

		assert_int_equal(pm_connect(x.a->n, x.b->addr, &sa), 0);
		assert_int_equal(pm_connect(x.b->n, x.a->addr, &sb), 0);
		assert_int_equal(pm_send(x.a->n, sa, "a", 1), 0);
		assert_int_equal(pm_send(x.b->n, sb, "b", 1), 0);
		assert_true(tl_pump(v, 2, one_conn_each, &x, TL_DEADLINE_MS));
		tl_node_free(x.a);
		tl_node_free(x.b);
	}
}

static void write_file(const char *path, const void *buf, size_t len)
{
	FILE *f = fopen(path, "wb");

	assert_non_null(f);
	assert_int_equal(fwrite(buf, 1, len, f), len);
	fclose(f);
}

static void test_auth_key_file(void **state)
{
	char path[] = "/tmp/pm-key-XXXXXX";
	uint8_t k[32];
	int fd = mkstemp(path);
	const char *hex = "  3031323334353637383961626364656630313233343536"
			  "373839616263646566\n";

	assert_true(fd >= 0);
	close(fd);
	write_file(path, hex, strlen(hex));
	assert_int_equal(pm_key_load(path, k), 0);
	assert_memory_equal(k, key1, 32);
	write_file(path, key2, 32);
	assert_int_equal(pm_key_load(path, k), 0);
	assert_memory_equal(k, key2, 32);
	write_file(path, hex, strlen(hex) - 2);	/* 63 digits */
	assert_int_equal(pm_key_load(path, k), -EINVAL);
	write_file(path, "zz", 2);
	assert_int_equal(pm_key_load(path, k), -EINVAL);
	unlink(path);
	assert_int_equal(pm_key_load(path, k), -ENOENT);
}

/* What the nodes' on_log received. */
static struct {
	struct pm_node *n;
	enum pm_log_level level;
	char msg[256];
} logged[16];
static int nlogged;

static void record_log(struct pm_node *n, enum pm_log_level level,
		       const char *msg, void *user)
{
	if (nlogged == 16)
		return;
	logged[nlogged].n = n;
	logged[nlogged].level = level;
	snprintf(logged[nlogged].msg, sizeof(logged[0].msg), "%s", msg);
	nlogged++;
}

static int logs_of(struct pm_node *n, const char *part)
{
	int k = 0;

	for (int i = 0; i < nlogged; i++)
		k += logged[i].n == n && logged[i].level == PM_LOG_WARN &&
		     strstr(logged[i].msg, part) != NULL;
	return k;
}

static struct tl_node *logging(const uint8_t *key)
{
	struct pm_config c;

	tl_config(&c);
	c.key = key;
	c.key_len = key ? 32 : 0;
	c.on_log = record_log;
	return tl_node_new(&c);
}

/* Refusals reach on_log (not stderr), once per remote host. */
static void test_auth_refusal_logged(void **state)
{
	struct tl_node *a1, *a2, *b, *v[3];
	struct closed_arg arg;

	tl_begin();
	nlogged = 0;
	b = logging(key1);
	a1 = logging(NULL);
	a2 = logging(NULL);
	v[0] = a1;
	v[1] = a2;
	v[2] = b;
	assert_int_equal(pm_connect(a1->n, b->addr, &arg.s), 0);
	arg.t = a1;
	assert_true(tl_pump(v, 3, closed, &arg, TL_DEADLINE_MS));
	assert_int_equal(pm_connect(a2->n, b->addr, &arg.s), 0);
	arg.t = a2;
	assert_true(tl_pump(v, 3, closed, &arg, TL_DEADLINE_MS));
	tl_settle(v, 3, 20);
	/* b refused two keyless peers of one host: one line. */
	assert_int_equal(logs_of(b->n, "refused 127.0.0.1:"), 1);
	assert_int_equal(logs_of(b->n, "no mesh key"), 1);
	assert_int_equal(logs_of(a1->n, "requires a mesh key"), 1);
	assert_int_equal(logs_of(a2->n, "requires a mesh key"), 1);
	tl_node_free(a1);
	tl_node_free(a2);
	tl_node_free(b);
}

static void test_auth_bad_key_length(void **state)
{
	struct pm_config c;
	struct pm_node *n;

	tl_begin();
	tl_config(&c);
	c.key = key1;
	c.key_len = 16;
	assert_int_equal(pm_node_create(&n, &c), -EINVAL);
}

#define CASES                                                        \
	cmocka_unit_test(test_auth_bad_key_length),                  \
	cmocka_unit_test(test_auth_key_file),                        \
	cmocka_unit_test(test_auth_keyed_refuses_keyless),           \
	cmocka_unit_test(test_auth_keyless_refuses_keyed),           \
	cmocka_unit_test(test_auth_refusal_logged),                  \
	cmocka_unit_test(test_auth_same_key_connects),               \
	cmocka_unit_test(test_auth_simultaneous_dial),               \
	cmocka_unit_test(test_auth_wrong_key_refused)

int main(void)
{
	const struct CMUnitTest cases[] = { CASES };
	int r = 0;

	r |= cmocka_run_group_tests_name("auth/io_uring", cases,
					 tl_setup_io_uring, tl_teardown);
	r |= cmocka_run_group_tests_name("auth/epoll", cases,
					 tl_setup_epoll, tl_teardown);
	return r;
}
