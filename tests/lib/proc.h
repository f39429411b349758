/* SPDX-License-Identifier: MIT */
/*
 * Child processes driven as a user would drive them: argv started with
 * pipes on stdin, stdout and stderr, their output pumped into buffers,
 * lines awaited with a deadline (a bound on the wait, never a timing
 * assertion), lines written to stdin, signals, exits reaped. For the
 * tests that run build/pairmesh (`pairmesh node` above all).
 *
 * The children live in one table; tp_free_all() in a teardown kills and
 * forgets whatever a case left running. Failures fail the test (cmocka).
 *
 * Include after <cmocka.h> and its prerequisites.
 */
#ifndef PM_TEST_PROC_H
#define PM_TEST_PROC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define TP_MAX_PROCS	16

/* Everything a child wrote on one pipe; p is NUL-terminated, never NULL. */
struct tp_buf {
	char *p;
	size_t len;
	size_t cap;
};

struct tp_proc {
	pid_t pid;
	int in, out, err;	/* our ends of its stdin, stdout, stderr */
	struct tp_buf o, e;
	bool exited;
	int status;		/* exit code, or 128 + signal */

	/* A node's, from its ready line (tp_ready). */
	uint64_t id;
	char listen[64];
	unsigned port;
	char engine[16];
	char metrics[64];	/* "HOST:PORT" or "" */
};

/* How a line is matched against a string. */
enum tp_match {
	TP_EXACT,		/* the whole line */
	TP_PREFIX,		/* its beginning */
	TP_CONTAINS,		/* anywhere in it */
};

/* $BUILD/pairmesh (default build/), as an absolute path: tp_setup(). */
extern char tp_bin[512];

/*
 * Upper bound of every wait here, in ms; generous for a shared machine.
 * A test whose children need longer (a mesh of many) raises it.
 */
extern int tp_wait_ms;

/*
 * Finds the binary into tp_bin and ignores SIGPIPE (a child may die with
 * our lines unread). Returns 0, or -errno when the binary is missing.
 */
int tp_setup(void);

uint64_t tp_now_ms(void);

/*
 * Starts argv[0] with argv. Its stdin is a pipe from us, or in_fd when
 * in_fd >= 0 (then p->in is -1). Fails the test when the table is full.
 */
struct tp_proc *tp_spawn(char *const argv[], int in_fd);

/* Closes our end of p's stdin: EOF for the child. */
void tp_close_stdin(struct tp_proc *p);

/* Whether p was started and not yet seen to exit. */
bool tp_alive(const struct tp_proc *p);

/*
 * Reads what p wrote, waiting up to timeout_ms, and notes its exit.
 * Only p's pipes are read: the others' may back up.
 */
void tp_pump(struct tp_proc *p, int timeout_ms);
/* The same for every child together: none stalls on a full pipe. */
void tp_pump_all(int timeout_ms);

/* The first complete line of b that matches s, or NULL. */
const char *tp_find_line(const struct tp_buf *b, const char *s,
			 enum tp_match m);
/* How many complete lines of b match s; *last (if last) gets the last. */
int tp_count_lines(const struct tp_buf *b, const char *s, enum tp_match m,
		   const char **last);

/*
 * Waits for a line of p's stderr (err) or stdout that matches s, pumping
 * every child. Returns the line, or NULL (after printing both buffers)
 * when p exited without it or tp_wait_ms passed.
 */
const char *tp_wait_line(struct tp_proc *p, bool err, const char *s,
			 enum tp_match m);

/*
 * Waits for p to exit and reads the rest of its output. Returns the exit
 * code (128 + signal if killed), or -1 if it still runs after tp_wait_ms.
 */
int tp_wait_exit(struct tp_proc *p);

/* Writes a formatted line to p's stdin, all of it (blocking). */
void tp_put(struct tp_proc *p, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/*
 * Waits for a node's ready line on stderr (text or logfmt) and reads its
 * id, listen address and port, engine and metrics address into p.
 * Returns the line, or NULL when p exited first (quietly: p->status and
 * p->e say why) or did not print it in time.
 */
const char *tp_ready(struct tp_proc *p);

/* Kills p (SIGKILL) if it runs, reaps it, frees its slot. */
void tp_free(struct tp_proc *p);
/* tp_free() on every child: the teardown of a case. */
void tp_free_all(void);

#endif
