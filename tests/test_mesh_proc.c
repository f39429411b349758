/* SPDX-License-Identifier: MIT */
/*
 * The mesh with one process per node: `pairmesh node` processes started
 * from a chain of seeds must end up connected pairwise exactly once, and a
 * mesh that loses a node to kill -9 while traffic flows must carry on.
 * Connections are checked in the kernel's table: each ESTABLISHED socket is
 * mapped to its process through /proc/PID/fd, so every pair is counted.
 * $BUILD names the build directory (default "build"); every wait is bounded
 * and leftover processes are killed after each case.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <setjmp.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "lib/proc.h"
#include "lib/testlib.h"

#define MAX_PROCS	16
#define WAIT_MS		20000	/* generous: a shared machine */
#define MAX_SOCKS	4096
#define KILL_NODES	8
#define VICTIM		3

_Static_assert(MAX_PROCS <= TP_MAX_PROCS, "more nodes than lib/proc holds");

/* The nodes in the order they started: node i is procs[i]. */
static struct tp_proc *procs[MAX_PROCS];
static size_t nprocs;

static const char *engine_name(void)
{
	return tl_engine == PM_ENGINE_IO_URING ? "io_uring" : "epoll";
}

static void print_proc(const struct tp_proc *p)
{
	print_message("pid %d (%s) exited %d status %d\nstderr:\n%s\n",
		      (int)p->pid, p->listen, p->exited, p->status,
		      p->e.p);
}

/*
 * Starts `pairmesh node` dialling seed (NULL: none) and waits for its ready
 * line. stdin stays a pipe from us: EOF would stop the node.
 */
static struct tp_proc *start_node(const char *seed)
{
	char *argv[10] = {
		tp_bin, "node", "--engine", (char *)engine_name(),
		"--max-peers", "32",
	};
	char listen[64];
	struct tp_proc *p;
	const char *l;
	uint64_t id;
	int i = 6;

	assert_true(nprocs < MAX_PROCS);
	if (seed) {
		argv[i++] = "--connect";
		argv[i++] = (char *)seed;
	}
	p = tp_spawn(argv, -1);
	procs[nprocs++] = p;
	/* Our writes never block on a busy node: lines are retried. */
	assert_int_equal(fcntl(p->in, F_SETFL, O_NONBLOCK), 0);

	l = tp_ready(p);
	if (!l) {
		print_proc(p);
		fail_msg("pairmesh node gave no ready line");
	}
	if (sscanf(l, "ready id=%16" SCNx64 " listen=%63s", &id, listen) != 2 ||
	    id != p->id || strcmp(listen, p->listen)) {
		print_proc(p);
		fail_msg("bad ready line");
	}
	assert_true(p->id != 0 && p->port != 0);
	return p;
}

/* Writes line to p's stdin; false when the pipe is full (try later). */
static bool put_line(struct tp_proc *p, const char *line)
{
	size_t len = strlen(line);
	ssize_t r;

	if (p->in < 0 || !tp_alive(p))
		return false;
	/* A line shorter than PIPE_BUF goes in whole or not at all. */
	r = write(p->in, line, len);
	if (r < 0 && (errno == EAGAIN || errno == EPIPE || errno == EINTR))
		return false;
	assert_int_equal(r, (ssize_t)len);
	return true;
}

static void kill_all(void)
{
	tp_free_all();
	nprocs = 0;
}

static int teardown_case(void **state)
{
	kill_all();
	return 0;
}

/* The node listening on port, or -1. */
static int node_by_port(uint16_t port)
{
	for (size_t i = 0; i < nprocs; i++)
		if (procs[i]->port == port)
			return (int)i;
	return -1;
}

/* ESTABLISHED sockets of the whole machine at the last look (reports). */
static int machine_established;

/* The ESTABLISHED sockets whose remote port is one of the nodes'. */
static int established(struct tl_sock *out, int max)
{
	uint16_t ports[MAX_PROCS];

	for (size_t i = 0; i < nprocs; i++)
		ports[i] = (uint16_t)procs[i]->port;
	return tl_tcp_sockets(ports, nprocs, out, max, &machine_established);
}

/* Socket inodes of the running nodes, from /proc/PID/fd. */
struct owners {
	unsigned long ino[MAX_SOCKS];
	int node[MAX_SOCKS];
	int n;
};

static void scan_owners(struct owners *o)
{
	char path[300], link[64];
	struct dirent *d;
	unsigned long x;

	o->n = 0;
	for (size_t i = 0; i < nprocs; i++) {
		DIR *dir;

		if (!tp_alive(procs[i]))
			continue;
		snprintf(path, sizeof(path), "/proc/%d/fd", (int)procs[i]->pid);
		dir = opendir(path);
		if (!dir)
			continue;
		while ((d = readdir(dir)) && o->n < MAX_SOCKS) {
			ssize_t r;

			snprintf(path, sizeof(path), "/proc/%d/fd/%s",
				 (int)procs[i]->pid, d->d_name);
			r = readlink(path, link, sizeof(link) - 1);
			if (r <= 0)
				continue;
			link[r] = '\0';
			if (sscanf(link, "socket:[%lu]", &x) != 1)
				continue;
			o->ino[o->n] = x;
			o->node[o->n++] = (int)i;
		}
		closedir(dir);
	}
}

/* The index of the running node holding socket inode ino, or -1. */
static int owner_of(const struct owners *o, unsigned long ino)
{
	for (int i = 0; i < o->n; i++)
		if (o->ino[i] == ino)
			return o->node[i];
	return -1;
}

struct conn_count {
	int total;		/* dialler ends into any of our listeners */
	int stray;		/* ... not owned by a running node */
	int pairs[MAX_PROCS][MAX_PROCS];	/* [dialler][listener] */
};

/*
 * Counts every ESTABLISHED socket whose remote port is one of the nodes'
 * listen ports (the dialler's end: one per connection), by dialler and
 * listener. Dead nodes' ports count too: a survivor still connected to
 * the dead one is a connection too many.
 */
static void count_conns(struct conn_count *c)
{
	static struct tl_sock socks[MAX_SOCKS];
	static struct owners o;
	int n;

	/* Owners first: a socket opened in between looks stray, and the
	 * waits look again. */
	scan_owners(&o);
	n = established(socks, MAX_SOCKS);
	memset(c, 0, sizeof(*c));
	for (int i = 0; i < n; i++) {
		int to = node_by_port(socks[i].rport), from;

		if (to < 0)
			continue;
		c->total++;
		from = owner_of(&o, socks[i].ino);
		if (from < 0 || !tp_alive(procs[to]))
			c->stray++;
		else
			c->pairs[from][to]++;
	}
}

static size_t count_alive(void)
{
	size_t k = 0;

	for (size_t i = 0; i < nprocs; i++)
		k += tp_alive(procs[i]);
	return k;
}

/* Every pair of running nodes connected exactly once, nothing else. */
static bool pairs_once(void)
{
	struct conn_count c;
	size_t k = count_alive();
	uint16_t ports[MAX_PROCS];

	count_conns(&c);
	if (c.stray || c.total != (int)(k * (k - 1) / 2))
		return false;
	for (size_t i = 0; i < nprocs; i++) {
		for (size_t j = i + 1; j < nprocs; j++) {
			if (!tp_alive(procs[i]) || !tp_alive(procs[j]))
				continue;
			if (c.pairs[i][j] + c.pairs[j][i] != 1)
				return false;
		}
		ports[i] = procs[i]->port;
	}
	/* The plain count the shared helper sees agrees. */
	return tl_tcp_established(ports, nprocs) == (int)(k * (k - 1) / 2);
}

static void print_conns(void)
{
	struct conn_count c;
	size_t k = count_alive();

	count_conns(&c);
	print_message("connections: %d (want %zu), stray %d; %d ESTABLISHED "
		      "on the machine\n", c.total, k * (k - 1) / 2, c.stray,
		      machine_established);
	for (size_t i = 0; i < nprocs; i++) {
		for (size_t j = i + 1; j < nprocs; j++) {
			int n = c.pairs[i][j] + c.pairs[j][i];

			if (tp_alive(procs[i]) && tp_alive(procs[j]) && n != 1)
				print_message("  nodes %zu-%zu: %d\n", i, j, n);
		}
	}
}

static bool all_alive(size_t skip)
{
	for (size_t i = 0; i < nprocs; i++) {
		if (i != skip && !tp_alive(procs[i])) {
			print_proc(procs[i]);
			return false;
		}
	}
	return true;
}

/* Pumps output until pairs_once() holds; checks nobody died. */
static bool wait_pairs_once(size_t skip)
{
	uint64_t deadline = tp_now_ms() + WAIT_MS;

	for (;;) {
		if (!all_alive(skip))
			return false;
		if (pairs_once())
			return true;
		if (tp_now_ms() > deadline)
			break;
		tp_pump_all(50);
	}
	print_conns();
	return false;
}

static void chain_of_seeds(size_t k)
{
	start_node(NULL);
	for (size_t i = 1; i < k; i++)
		start_node(procs[i - 1]->listen);
}

static void formation(size_t k)
{
	uint64_t until;

	chain_of_seeds(k);
	if (!wait_pairs_once(SIZE_MAX))
		fail_msg("%zu nodes from a chain of seeds: not every pair "
			 "connected exactly once", k);
	/* It lasts: no late duplicate, nothing torn down. */
	until = tp_now_ms() + 300;
	while (tp_now_ms() < until)
		tp_pump_all(50);
	if (!wait_pairs_once(SIZE_MAX))
		fail_msg("%zu nodes: the full mesh did not last", k);
}

static void test_mesh_proc_formation_4(void **state)
{
	tl_begin();
	formation(4);
}

static void test_mesh_proc_formation_16(void **state)
{
	tl_begin();
	formation(16);
}

/* One round of traffic: each running node sends to '*' and to one id. */
static void traffic(unsigned round)
{
	char line[128];

	for (size_t i = 0; i < nprocs; i++) {
		size_t to = (i + 1 + round % (nprocs - 1)) % nprocs;

		if (!tp_alive(procs[i]))
			continue;
		snprintf(line, sizeof(line), "* bc-%u-%zu\n", round, i);
		put_line(procs[i], line);
		/* Sometimes to the dead node: senders are not told. */
		snprintf(line, sizeof(line), "%016" PRIx64 " to-%u-%zu\n",
			 procs[to]->id, round, i);
		put_line(procs[i], line);
	}
}

/* The broadcast lines of traffic() p printed. */
static int broadcasts(const struct tp_proc *p)
{
	return tp_count_lines(&p->o, " bc-", TP_CONTAINS, NULL);
}

/* Every survivor got the lines every other survivor sent after the kill. */
static bool markers_arrived(void)
{
	char want[128];

	for (size_t d = 0; d < nprocs; d++) {
		if (d == VICTIM)
			continue;
		for (size_t s = 0; s < nprocs; s++) {
			if (s == VICTIM || s == d)
				continue;
			snprintf(want, sizeof(want), "%016" PRIx64
				 " after-%zu-%zu", procs[s]->id, s, d);
			if (!tp_find_line(&procs[d]->o, want, TP_EXACT))
				return false;
			snprintf(want, sizeof(want), "%016" PRIx64
				 " all-after-%zu", procs[s]->id, s);
			if (!tp_find_line(&procs[d]->o, want, TP_EXACT))
				return false;
		}
	}
	return true;
}

static void test_mesh_proc_kill_one(void **state)
{
	char line[128];
	unsigned round = 0;
	uint64_t deadline;
	bool sent[KILL_NODES][KILL_NODES + 1];
	size_t s, d;

	tl_begin();
	chain_of_seeds(KILL_NODES);
	if (!wait_pairs_once(SIZE_MAX))
		fail_msg("no full mesh of %d nodes", KILL_NODES);

	/* Traffic flows, everybody hears everybody... */
	deadline = tp_now_ms() + WAIT_MS;
	while (broadcasts(procs[0]) < 7 * 20 && tp_now_ms() < deadline) {
		traffic(round++);
		tp_pump_all(5);
	}
	assert_true(broadcasts(procs[0]) >= 7 * 20);
	/* ... when one node dies without a word. */
	assert_int_equal(kill(procs[VICTIM]->pid, SIGKILL), 0);
	deadline = tp_now_ms() + WAIT_MS;
	while (tp_alive(procs[VICTIM]) && tp_now_ms() < deadline)
		tp_pump_all(5);
	assert_false(tp_alive(procs[VICTIM]));
	assert_int_equal(procs[VICTIM]->status, 128 + SIGKILL);
	for (unsigned i = 0; i < 50; i++) {
		traffic(round++);
		tp_pump_all(5);
	}

	/*
	 * Sent after the kill: one line from each survivor to each other
	 * and one broadcast each. Lines refused by a full pipe are retried.
	 */
	memset(sent, 0, sizeof(sent));
	deadline = tp_now_ms() + WAIT_MS;
	for (bool all = false; !all && tp_now_ms() < deadline;) {
		all = true;
		for (s = 0; s < KILL_NODES; s++) {
			for (d = 0; d <= KILL_NODES; d++) {
				if (s == VICTIM || d == VICTIM || s == d ||
				    sent[s][d])
					continue;
				if (d == KILL_NODES)
					snprintf(line, sizeof(line),
						 "* all-after-%zu\n", s);
				else
					snprintf(line, sizeof(line), "%016"
						 PRIx64 " after-%zu-%zu\n",
						 procs[d]->id, s, d);
				sent[s][d] = put_line(procs[s], line);
				all = all && sent[s][d];
			}
		}
		tp_pump_all(5);
	}
	deadline = tp_now_ms() + WAIT_MS;
	/* Traffic keeps flowing meanwhile. */
	while (!markers_arrived() && tp_now_ms() < deadline) {
		if (!all_alive(VICTIM))
			break;
		traffic(round++);
		tp_pump_all(10);
	}
	if (!markers_arrived()) {
		for (d = 0; d < KILL_NODES; d++)
			if (d != VICTIM)
				print_proc(procs[d]);
		fail_msg("messages between survivors sent after the kill "
			 "did not all arrive");
	}
	if (!wait_pairs_once(VICTIM))
		fail_msg("the %d survivors did not settle on one connection "
			 "per pair", KILL_NODES - 1);

	/* No survivor crashed: each exits cleanly at the end of its input. */
	for (s = 0; s < KILL_NODES; s++) {
		if (s == VICTIM)
			continue;
		assert_true(tp_alive(procs[s]));
		tp_close_stdin(procs[s]);
	}
	deadline = tp_now_ms() + WAIT_MS;
	while (count_alive() && tp_now_ms() < deadline)
		tp_pump_all(20);
	for (s = 0; s < KILL_NODES; s++) {
		if (s == VICTIM)
			continue;
		if (procs[s]->exited && procs[s]->status == 0)
			continue;
		print_proc(procs[s]);
		fail_msg("survivor %zu did not exit cleanly", s);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(test_mesh_proc_formation_16,
					  teardown_case),
		cmocka_unit_test_teardown(test_mesh_proc_formation_4,
					  teardown_case),
		cmocka_unit_test_teardown(test_mesh_proc_kill_one,
					  teardown_case),
	};
	int failed, rc;

	rc = tp_setup();
	if (rc) {
		fprintf(stderr, "%s: %s (run make first)\n", tp_bin,
			strerror(-rc));
		return 1;
	}
	tp_wait_ms = WAIT_MS;
	failed = cmocka_run_group_tests_name("mesh_proc/io_uring", tests,
					     tl_setup_io_uring, tl_teardown);
	failed += cmocka_run_group_tests_name("mesh_proc/epoll", tests,
					      tl_setup_epoll, tl_teardown);
	kill_all();
	return failed ? 1 : 0;
}
