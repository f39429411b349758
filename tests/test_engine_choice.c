/* SPDX-License-Identifier: MIT */
/*
 * How a node picks its engine, also where the kernel refuses io_uring:
 * PAIRMESH_ENGINE and pm_config.engine force a backend; "auto" falls back
 * to epoll and says why, once per process; a forced io_uring that the
 * kernel refuses is an error (-EPROTONOSUPPORT, and an "error:" line with
 * exit 1 from `pairmesh node`), never a silent fallback; and the test
 * suite skips its io_uring runs with a line saying so.
 *
 * The refusal is real: halfway through, this process installs a seccomp
 * filter that fails io_uring_setup(2) with EPERM, as a container profile or
 * io_uring_disabled would. The filter cannot be removed and is inherited by
 * the programs run after it, so the cases before it run first. $BUILD names
 * the build directory (default "build").
 */
#include <errno.h>
#include <fcntl.h>
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
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <cmocka.h>

#include "pairmesh.h"

#define OUT_CAP		(64 << 10)
#define WAIT_MS		20000	/* generous: a shared machine */
#define MAX_LOGS	16

static char build[256];
static const char *no_filter;	/* why the refused group is skipped */

/* --- running a program ---------------------------------------------- */

struct run {
	int status;		/* exit status, or 128 + signal */
	char out[OUT_CAP];	/* stdout and stderr, interleaved */
	size_t len;
};

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/*
 * Runs argv with stdin on /dev/null and PAIRMESH_ENGINE set to env (NULL:
 * unset) until it exits; killed after WAIT_MS. Its output lands in r->out.
 */
static void run(struct run *r, const char *env, char *const argv[])
{
	uint64_t deadline = now_ms() + WAIT_MS;
	int pfd[2], st;
	pid_t pid;

	memset(r, 0, sizeof(*r));
	assert_int_equal(pipe2(pfd, O_CLOEXEC), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (!pid) {
		int in = open("/dev/null", O_RDONLY);

		if (in < 0 || dup2(in, 0) < 0 || dup2(pfd[1], 1) < 0 ||
		    dup2(pfd[1], 2) < 0)
			_exit(127);
		if (env ? setenv("PAIRMESH_ENGINE", env, 1) :
			  unsetenv("PAIRMESH_ENGINE"))
			_exit(127);
		execv(argv[0], argv);
		_exit(127);
	}
	close(pfd[1]);
	for (;;) {
		struct pollfd p = { .fd = pfd[0], .events = POLLIN };
		uint64_t now = now_ms();
		ssize_t n;

		if (now >= deadline) {
			kill(pid, SIGKILL);
			break;
		}
		if (poll(&p, 1, (int)(deadline - now)) <= 0)
			continue;
		n = read(pfd[0], r->out + r->len, sizeof(r->out) - 1 - r->len);
		if (n <= 0)
			break;
		r->len += (size_t)n;
	}
	close(pfd[0]);
	r->out[r->len] = 0;
	assert_int_equal(waitpid(pid, &st, 0), pid);
	r->status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static int count_str(const char *s, const char *what)
{
	int n = 0;

	for (; (s = strstr(s, what)); s += strlen(what))
		n++;
	return n;
}

/* Runs `pairmesh node [--engine engine]` with PAIRMESH_ENGINE=env. */
static void run_node(struct run *r, const char *env, char *engine)
{
	char bin[300];
	char *argv[] = { bin, "node", engine ? "--engine" : NULL, engine,
			 NULL };

	snprintf(bin, sizeof(bin), "%s/pairmesh", build);
	run(r, env, argv);
}

/* --- the library's log -------------------------------------------------- */

static int nlogs;
static char logs[MAX_LOGS][256];

static void on_log(struct pm_node *n, enum pm_log_level level,
		   const char *msg, void *user)
{
	if (nlogs < MAX_LOGS)
		snprintf(logs[nlogs], sizeof(logs[0]), "%d %s", level, msg);
	nlogs++;
}

/* pm_node_create with engine and PAIRMESH_ENGINE=env (NULL: unset). */
static int create(struct pm_node **n, enum pm_engine engine, const char *env)
{
	struct pm_config c;
	int r;

	pm_config_init(&c);
	c.engine = engine;
	c.on_log = on_log;
	if (env)
		assert_int_equal(setenv("PAIRMESH_ENGINE", env, 1), 0);
	else
		assert_int_equal(unsetenv("PAIRMESH_ENGINE"), 0);
	r = pm_node_create(n, &c);
	assert_int_equal(unsetenv("PAIRMESH_ENGINE"), 0);
	return r;
}

/* --- io_uring as the kernel gives it ------------------------------------ */

static void test_choice_config_wins(void **state)
{
	struct pm_node *n;

	/* An engine in the config is the program's choice: the variable
	 * only steers "auto". */
	assert_int_equal(create(&n, PM_ENGINE_EPOLL, "io_uring"), 0);
	assert_string_equal(pm_node_engine(n), "epoll");
	pm_node_destroy(n);
	assert_int_equal(create(&n, PM_ENGINE_EPOLL, "bogus"), 0);
	pm_node_destroy(n);
}

static void test_choice_env_bad(void **state)
{
	struct pm_node *n = NULL;

	assert_int_equal(create(&n, PM_ENGINE_AUTO, "bogus"), -EINVAL);
	assert_null(n);
	assert_int_equal(create(&n, PM_ENGINE_AUTO, "EPOLL"), -EINVAL);
}

static void test_choice_env_forces(void **state)
{
	struct pm_node *n;
	struct run r;
	int rc;

	assert_int_equal(create(&n, PM_ENGINE_AUTO, "epoll"), 0);
	assert_string_equal(pm_node_engine(n), "epoll");
	pm_node_destroy(n);
	rc = create(&n, PM_ENGINE_AUTO, "io_uring");
	if (rc == -EPROTONOSUPPORT) {
		print_message("io_uring refused by this kernel: the forced "
			      "io_uring case runs in the refused group only\n");
	} else {
		assert_int_equal(rc, 0);
		assert_string_equal(pm_node_engine(n), "io_uring");
		pm_node_destroy(n);
	}
	/* No AUTO node falls back here: the refused group counts the one
	 * log line of the first that does. */
	run_node(&r, "epoll", NULL);
	assert_int_equal(r.status, 0);
	assert_non_null(strstr(r.out, "engine=epoll\n"));
	/* --engine wins over the variable. */
	run_node(&r, "io_uring", "epoll");
	assert_int_equal(r.status, 0);
	assert_non_null(strstr(r.out, "engine=epoll\n"));
}

/* --- io_uring refused ---------------------------------------------------- */

/* Fails io_uring_setup with EPERM from now on, here and in children. */
static int refuse_io_uring(void)
{
	struct sock_filter f[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
			 offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = {
		.len = sizeof(f) / sizeof(f[0]),
		.filter = f,
	};

	/* Needed to install a filter without CAP_SYS_ADMIN. */
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
		return -errno;
	if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog))
		return -errno;
	return 0;
}

static int refused_setup(void **state)
{
	static char why[128];
	int r = refuse_io_uring();

	if (r) {
		snprintf(why, sizeof(why), "no seccomp filter here (%s)",
			 strerror(-r));
		no_filter = why;
		printf("SKIP io_uring refused: %s\n", no_filter);
		fflush(stdout);
	}
	return 0;
}

static void begin_refused(void)
{
	if (no_filter)
		skip();
}

/* The first AUTO node of this process: the fallback's one log line. */
static void test_refused_auto_falls_back(void **state)
{
	struct pm_node *a, *b;

	begin_refused();
	nlogs = 0;
	assert_int_equal(create(&a, PM_ENGINE_AUTO, NULL), 0);
	assert_string_equal(pm_node_engine(a), "epoll");
	assert_int_equal(nlogs, 1);
	assert_non_null(strstr(logs[0], "io_uring unavailable"));
	/* The reason is the kernel's. */
	assert_non_null(strstr(logs[0], strerror(EPERM)));
	assert_int_equal(logs[0][0], '0' + PM_LOG_WARN);
	/* Once per process: the next node would say the same. */
	assert_int_equal(create(&b, PM_ENGINE_AUTO, "auto"), 0);
	assert_string_equal(pm_node_engine(b), "epoll");
	assert_int_equal(nlogs, 1);
	pm_node_destroy(a);
	pm_node_destroy(b);
}

static void test_refused_forced_fails(void **state)
{
	struct pm_node *n = NULL;

	begin_refused();
	nlogs = 0;
	assert_int_equal(create(&n, PM_ENGINE_IO_URING, NULL),
			 -EPROTONOSUPPORT);
	assert_null(n);
	/* The code says refused; the log carries the kernel's reason. */
	assert_int_equal(nlogs, 1);
	assert_non_null(strstr(logs[0], "io_uring refused"));
	assert_non_null(strstr(logs[0], strerror(EPERM)));
	assert_int_equal(logs[0][0], '0' + PM_LOG_ERROR);
	assert_int_equal(create(&n, PM_ENGINE_AUTO, "io_uring"),
			 -EPROTONOSUPPORT);
	assert_null(n);
	/* epoll still works where io_uring does not. */
	assert_int_equal(create(&n, PM_ENGINE_EPOLL, "io_uring"), 0);
	pm_node_destroy(n);
}

static void test_refused_cli(void **state)
{
	struct run r;

	begin_refused();
	/* Forced: one clear error, no node, exit 1. */
	run_node(&r, NULL, "io_uring");
	assert_int_equal(r.status, 1);
	assert_non_null(strstr(r.out, "error: io_uring refused"));
	assert_null(strstr(r.out, "ready "));
	run_node(&r, "io_uring", NULL);
	assert_int_equal(r.status, 1);
	assert_non_null(strstr(r.out, "error: io_uring refused"));
	assert_null(strstr(r.out, "ready "));
	/* auto: epoll, the reason said once, then ready. */
	run_node(&r, NULL, NULL);
	assert_int_equal(r.status, 0);
	assert_int_equal(count_str(r.out, "io_uring unavailable ("), 1);
	assert_int_equal(count_str(r.out, "ready id="), 1);
	assert_non_null(strstr(r.out, " engine=epoll\n"));
}

/* What `make test` shows on such a machine: each io_uring run skipped
 * with a line, never silently, and the program still passes. */
static void test_refused_suite_skips(void **state)
{
	char bin[300];
	char *argv[] = { bin, NULL };
	struct run r;

	begin_refused();
	snprintf(bin, sizeof(bin), "%s/tests/test_engine", build);
	run(&r, NULL, argv);
	assert_int_equal(r.status, 0);
	assert_int_equal(count_str(r.out, "SKIP io_uring: "), 1);
	assert_non_null(strstr(r.out, strerror(EPERM)));
	/* The epoll run did run. */
	assert_non_null(strstr(r.out, "engine/epoll"));
}

int main(void)
{
	const struct CMUnitTest allowed[] = {
		cmocka_unit_test(test_choice_config_wins),
		cmocka_unit_test(test_choice_env_bad),
		cmocka_unit_test(test_choice_env_forces),
	};
	/* In this order: the first AUTO node logs the fallback. */
	const struct CMUnitTest refused[] = {
		cmocka_unit_test(test_refused_auto_falls_back),
		cmocka_unit_test(test_refused_forced_fails),
		cmocka_unit_test(test_refused_cli),
		cmocka_unit_test(test_refused_suite_skips),
	};
	const char *b = getenv("BUILD");
	int failed;

	snprintf(build, sizeof(build), "%s", b && *b ? b : "build");
	failed = cmocka_run_group_tests_name("engine_choice/kernel", allowed,
					     NULL, NULL);
	failed += cmocka_run_group_tests_name("engine_choice/refused", refused,
					      refused_setup, NULL);
	return failed;
}
