/* SPDX-License-Identifier: MIT */
/*
 * Runs tests/netns_relay.sh once per backend: a relay across three network
 * namespaces, and the error A gets when its only link goes down. The
 * script's exit 77 ("SKIP netns: why") becomes a cmocka skip. $BUILD names
 * the build directory (default "build").
 */
#include <errno.h>
#include <libgen.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "lib/testlib.h"

static char script[1024];
static const char *build = "build";

/* The script next to this file's source: from the tree, or from argv[0]. */
static int find_script(const char *argv0)
{
	char copy[900];

	snprintf(script, sizeof(script), "tests/netns_relay.sh");
	if (access(script, R_OK) == 0)
		return 0;
	snprintf(copy, sizeof(copy), "%s", argv0);
	/* build/tests/test_netns -> tests/netns_relay.sh */
	snprintf(script, sizeof(script), "%s/../../tests/netns_relay.sh",
		 dirname(copy));
	return access(script, R_OK) ? -errno : 0;
}

static void test_netns_relay(void **state)
{
	char cmd[2048], line[1024], reason[1024] = "";
	const char *engine;
	int st;
	FILE *f;

	tl_begin();
	engine = tl_engine == PM_ENGINE_IO_URING ? "io_uring" : "epoll";
	snprintf(cmd, sizeof(cmd), "BUILD='%s' ENGINE=%s sh '%s' 2>&1", build,
		 engine, script);
	f = popen(cmd, "r");
	assert_non_null(f);
	while (fgets(line, sizeof(line), f)) {
		fputs(line, stdout);
		if (!strncmp(line, "SKIP netns: ", 12))
			snprintf(reason, sizeof(reason), "%s", line + 12);
	}
	fflush(stdout);
	st = pclose(f);
	assert_true(st != -1 && WIFEXITED(st));
	if (WEXITSTATUS(st) == 77) {
		print_message("skipped: %s",
			      reason[0] ? reason : "no reason\n");
		skip();
	}
	assert_int_equal(WEXITSTATUS(st), 0);
}

int main(int argc, char *argv[])
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_netns_relay),
	};
	const char *b = getenv("BUILD");
	int failed;

	if (b && *b)
		build = b;
	if (find_script(argc ? argv[0] : "")) {
		fprintf(stderr, "netns_relay.sh not found (run from the source "
			"tree)\n");
		return 1;
	}
	failed = cmocka_run_group_tests_name("netns/io_uring", tests,
					     tl_setup_io_uring, tl_teardown);
	failed += cmocka_run_group_tests_name("netns/epoll", tests,
					      tl_setup_epoll, tl_teardown);
	return failed ? 1 : 0;
}
