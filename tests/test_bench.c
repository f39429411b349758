/* SPDX-License-Identifier: MIT */
/*
 * Runs `pairmesh bench` as the benchmark runner does: short runs with
 * --json, one JSON object expected on stdout. Checks the exit status, the
 * shape of the object and that something was measured (never how fast).
 * Skips when build/pairmesh has no bench subcommand yet, and the io_uring
 * cases when the kernel refuses io_uring. $BUILD names the build directory
 * (default "build").
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#define OUT_CAP		8192

static char bin[512];
static const char *no_bench;	/* why the bench cases are skipped */

/* Runs bin with args, stdout into out. Returns the exit status. */
static int run(const char *args, char *out, size_t cap)
{
	char cmd[1024];
	size_t len = 0;
	FILE *f;
	int st;

	snprintf(cmd, sizeof(cmd), "'%s' %s", bin, args);
	f = popen(cmd, "r");
	assert_non_null(f);
	while (len + 1 < cap) {
		size_t r = fread(out + len, 1, cap - 1 - len, f);

		if (!r)
			break;
		len += r;
	}
	out[len] = 0;
	st = pclose(f);
	assert_true(st != -1);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* The number after "key": in a JSON object; false if absent or null. */
static bool json_num(const char *js, const char *key, double *v)
{
	char pat[64];
	const char *p;
	char *end;

	snprintf(pat, sizeof(pat), "\"%s\":", key);
	p = strstr(js, pat);
	if (!p)
		return false;
	p += strlen(pat);
	*v = strtod(p, &end);
	return end != p;
}

static bool json_has(const char *js, const char *key, const char *val)
{
	char pat[128];

	snprintf(pat, sizeof(pat), "\"%s\":\"%s\"", key, val);
	return strstr(js, pat) != NULL;
}

/* One short run; skips the case when it cannot run here. */
/* Runs `pairmesh bench SCENARIO EXTRA --engine E --seconds 1 --json`. */
static void bench(const char *scenario, const char *extra, const char *engine,
		  char *out)
{
	char args[256];
	double size;
	int st;

	if (no_bench) {
		print_message("skipped: %s\n", no_bench);
		skip();
	}
	snprintf(args, sizeof(args),
		 "bench %s %s --engine %s --seconds 1 --json", scenario, extra,
		 engine);
	st = run(args, out, OUT_CAP);
	if (st == 1 && strstr(out, "io_uring is refused")) {
		print_message("skipped: io_uring refused here\n");
		skip();
	}
	if (st != 0)
		print_error("%s %s: exit %d, output: %s\n", scenario, engine,
			    st, out);
	assert_int_equal(st, 0);
	/* Exactly one object, on one line. */
	assert_int_equal(out[0], '{');
	assert_non_null(strchr(out, '\n'));
	assert_string_equal(strchr(out, '\n'), "\n");
	assert_true(json_has(out, "scenario", scenario));
	assert_true(json_has(out, "engine", engine));
	assert_true(json_num(out, "size", &size));
	assert_true(size == 64);
}

static void check_rate(const char *out)
{
	double v;

	assert_true(json_num(out, "msgs_per_s", &v));
	assert_true(v > 0);
	assert_true(json_num(out, "mb_per_s", &v));
	assert_true(v > 0);
	assert_true(json_num(out, "seconds", &v));
	assert_true(v > 0);
}

static void throughput(const char *engine)
{
	char out[OUT_CAP];
	double v;

	bench("throughput", "", engine, out);
	check_rate(out);
	assert_false(json_num(out, "p50_us", &v));	/* null */
}

static void latency(const char *engine)
{
	char out[OUT_CAP];
	double p50, p99, p999;

	bench("latency", "", engine, out);
	check_rate(out);
	assert_true(json_num(out, "p50_us", &p50));
	assert_true(json_num(out, "p99_us", &p99));
	assert_true(json_num(out, "p999_us", &p999));
	assert_true(p50 > 0);
	assert_true(p50 <= p99 && p99 <= p999);
}

static void relay(const char *engine)
{
	char out[OUT_CAP];
	double v;

	bench("relay", "", engine, out);
	check_rate(out);
	assert_true(json_num(out, "direct_msgs_per_s", &v));
	assert_true(v > 0);
	assert_true(json_num(out, "ratio", &v));
	assert_true(v > 0);
}

/* The scenarios make bench runs at scale, here small: they work and say
 * what they measured. */
static void fanin(const char *engine)
{
	char out[OUT_CAP];
	double v;

	bench("fanin", "--peers 20", engine, out);
	check_rate(out);
	assert_true(json_num(out, "peers", &v));
	assert_true(v == 20);
	assert_true(json_num(out, "hub_cpu_ns_per_msg", &v));
	assert_true(v > 0);
}

static void mesh(const char *engine)
{
	char out[OUT_CAP];
	double v;

	bench("mesh", "--nodes 3", engine, out);
	check_rate(out);
	assert_true(json_num(out, "nodes", &v));
	assert_true(v == 3);
}

static void scale(const char *engine)
{
	char out[OUT_CAP];
	double v;

	bench("scale", "--peers 50", engine, out);
	assert_true(json_num(out, "peers", &v));
	assert_true(v == 50);
	assert_true(json_num(out, "msgs_per_s", &v));	/* connections/s */
	assert_true(v > 0);
	assert_true(json_num(out, "connect_s", &v));
	assert_true(v > 0);
	assert_true(json_num(out, "rss_kib_per_peer", &v));
	assert_true(v > 0);
}

static void slow(const char *engine)
{
	char out[OUT_CAP];
	double v;

	bench("slow", "", engine, out);
	check_rate(out);
	assert_true(json_num(out, "peak_rss_kib_sender", &v));
	assert_true(v > 0);
	assert_true(json_num(out, "peak_rss_kib_receiver", &v));
	assert_true(v > 0);
}

static void test_bench_fanin_epoll(void **state)
{
	fanin("epoll");
}

static void test_bench_fanin_io_uring(void **state)
{
	fanin("io_uring");
}

static void test_bench_mesh_epoll(void **state)
{
	mesh("epoll");
}

static void test_bench_mesh_io_uring(void **state)
{
	mesh("io_uring");
}

static void test_bench_scale_epoll(void **state)
{
	scale("epoll");
}

static void test_bench_scale_io_uring(void **state)
{
	scale("io_uring");
}

static void test_bench_slow_epoll(void **state)
{
	slow("epoll");
}

static void test_bench_slow_io_uring(void **state)
{
	slow("io_uring");
}

static void test_bench_latency_epoll(void **state)
{
	latency("epoll");
}

static void test_bench_latency_io_uring(void **state)
{
	latency("io_uring");
}

static void test_bench_relay_epoll(void **state)
{
	relay("epoll");
}

static void test_bench_relay_io_uring(void **state)
{
	relay("io_uring");
}

static void test_bench_throughput_epoll(void **state)
{
	throughput("epoll");
}

static void test_bench_throughput_io_uring(void **state)
{
	throughput("io_uring");
}

static void test_bench_usage(void **state)
{
	char out[OUT_CAP];

	if (no_bench) {
		print_message("skipped: %s\n", no_bench);
		skip();
	}
	assert_int_equal(run("bench --help", out, sizeof(out)), 0);
	assert_non_null(strstr(out, "throughput"));
	assert_non_null(strstr(out, "scale"));
	assert_int_equal(run("bench 2>/dev/null", out, sizeof(out)), 2);
	assert_int_equal(run("bench nosuch 2>/dev/null", out, sizeof(out)),
			 2);
	assert_int_equal(run("bench throughput --size 1 2>/dev/null", out,
			     sizeof(out)), 2);
	assert_int_equal(run("bench fanin --peers 5000 2>/dev/null", out,
			     sizeof(out)), 2);
	assert_int_equal(run("bench latency --engine foo 2>/dev/null", out,
			     sizeof(out)), 2);
	assert_string_equal(out, "");
}

static int setup(void **state)
{
	const char *build = getenv("BUILD");
	char out[OUT_CAP];

	snprintf(bin, sizeof(bin), "%s/pairmesh",
		 build && *build ? build : "build");
	if (access(bin, X_OK)) {
		print_error("%s: %s\n", bin, strerror(errno));
		return -1;
	}
	/* The subcommand table may not list bench yet. */
	if (run("bench --help 2>&1", out, sizeof(out)) != 0 ||
	    !strstr(out, "pairmesh bench"))
		no_bench = "this pairmesh has no 'bench' subcommand yet";
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_bench_fanin_epoll),
		cmocka_unit_test(test_bench_fanin_io_uring),
		cmocka_unit_test(test_bench_latency_epoll),
		cmocka_unit_test(test_bench_latency_io_uring),
		cmocka_unit_test(test_bench_mesh_epoll),
		cmocka_unit_test(test_bench_mesh_io_uring),
		cmocka_unit_test(test_bench_relay_epoll),
		cmocka_unit_test(test_bench_relay_io_uring),
		cmocka_unit_test(test_bench_scale_epoll),
		cmocka_unit_test(test_bench_scale_io_uring),
		cmocka_unit_test(test_bench_slow_epoll),
		cmocka_unit_test(test_bench_slow_io_uring),
		cmocka_unit_test(test_bench_throughput_epoll),
		cmocka_unit_test(test_bench_throughput_io_uring),
		cmocka_unit_test(test_bench_usage),
	};

	return cmocka_run_group_tests(tests, setup, NULL);
}
