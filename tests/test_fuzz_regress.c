/* SPDX-License-Identifier: MIT */
/*
 * Replays every fuzz seed (tests/fuzz/corpus/<target>/) and every input a
 * fuzzer once crashed on (tests/fuzz/regressions/<target>/) through the fuzz
 * targets themselves, built here with the normal compiler and no libFuzzer:
 * each target is included with its entry point renamed. A target's checks
 * abort on a violation, which fails this program and names the input.
 *
 * Run from the repository root (the paths are relative to it).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#define LLVMFuzzerTestOneInput fuzz_frame_one
#include "fuzz/fuzz_frame.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_handshake_one
#include "fuzz/fuzz_handshake.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_session_one
#include "fuzz/fuzz_session.c"
#undef LLVMFuzzerTestOneInput

#define REPLAY_MAX	(1u << 20)	/* libFuzzer's inputs are far smaller */
#define INPUT_SECONDS	60	/* a hang fails the test, naming the input */

typedef int (*one_fn)(const uint8_t *data, size_t size);
typedef void (*fresh_fn)(void);

/* An input that hangs the node (an endless loop) must fail, not stall
 * `make test`: name it and abort. */
static void on_alarm(int sig)
{
	static const char msg[] = "fuzz replay: input hangs: ";
	const char *in = fz_input ? fz_input : "?";

	(void)!write(2, msg, sizeof(msg) - 1);
	(void)!write(2, in, strlen(in));
	(void)!write(2, "\n", 1);
	abort();
}

static int only_files(const struct dirent *d)
{
	return d->d_name[0] != '.';
}

/*
 * Whether a file continues the case before it: "<case>-<k>of<m>" with k > 1
 * (a failure that needed several inputs in a row on the same nodes).
 */
static bool continues_case(const char *name)
{
	const char *dash = strrchr(name, '-');
	unsigned k, m;
	char end;

	return dash && sscanf(dash + 1, "%uof%u%c", &k, &m, &end) == 2 &&
	       k > 1 && k <= m;
}

/*
 * Runs fn on every file of dir, in name order. With fresh, each case starts
 * on new nodes, as when the fuzzer found it: a failure can depend on the
 * nodes' past (their slots, rings and sequence numbers), which the inputs
 * replayed before it would change. Returns how many, or -1 when dir does
 * not exist.
 */
static int replay_dir(const char *dir, one_fn fn, fresh_fn fresh)
{
	struct dirent **names;
	static uint8_t buf[REPLAY_MAX];
	int k = scandir(dir, &names, only_files, alphasort);

	if (k < 0) {
		assert_int_equal(errno, ENOENT);
		return -1;
	}
	for (int i = 0; i < k; i++) {
		char path[512];
		ssize_t len;
		int fd;

		snprintf(path, sizeof(path), "%s/%s", dir, names[i]->d_name);
		fd = open(path, O_RDONLY | O_CLOEXEC);
		assert_true(fd >= 0);
		len = read(fd, buf, sizeof(buf));
		close(fd);
		assert_true(len >= 0 && (size_t)len < sizeof(buf));
		if (fresh && !continues_case(names[i]->d_name))
			fresh();
		fz_input = path;
		alarm(INPUT_SECONDS);
		assert_int_equal(fn(buf, (size_t)len), 0);
		alarm(0);
		fz_input = NULL;
		free(names[i]);
	}
	free(names);
	return k;
}

/* The seeds must be there (an empty replay proves nothing); regressions
 * appear as fuzzers find them. */
static void replay(const char *target, one_fn fn, fresh_fn fresh)
{
	char dir[256];
	int seeds, found;

	snprintf(dir, sizeof(dir), "tests/fuzz/corpus/%s", target);
	seeds = replay_dir(dir, fn, NULL);
	assert_true(seeds > 0);
	snprintf(dir, sizeof(dir), "tests/fuzz/regressions/%s", target);
	found = replay_dir(dir, fn, fresh);
	print_message("%s: %d seeds, %d regressions\n", target, seeds,
		      found < 0 ? 0 : found);
}

static void test_fuzz_frame(void **state)
{
	replay("fuzz_frame", fuzz_frame_one, NULL);
}

static void test_fuzz_handshake(void **state)
{
	/* The full health check after every input, not every 64th. */
	fh.check_every = 1;
	replay("fuzz_handshake", fuzz_handshake_one, NULL);
}

static void test_fuzz_session(void **state)
{
	replay("fuzz_session", fuzz_session_one, fs_teardown);
}

int main(void)
{
	struct sigaction sa = { .sa_handler = on_alarm };
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fuzz_frame),
		cmocka_unit_test(test_fuzz_handshake),
		cmocka_unit_test(test_fuzz_session),
	};

	sigaction(SIGALRM, &sa, NULL);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
