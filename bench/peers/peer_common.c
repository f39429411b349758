/* SPDX-License-Identifier: MIT */
/*
 * The cold half of peer_common.h: the command line, the two processes,
 * the report and the rows. Nothing here runs per message.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "peer_common.h"

static const char *scen_name(const struct opts *o)
{
	return o->mode == MODE_THROUGHPUT ? "throughput" : "latency";
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return (x > y) - (x < y);
}

/* Nearest rank, as pairmesh bench: the ceil(p * n)-th smallest, in us. */
static double pct_us(const struct samples *s, double p)
{
	double x = p * (double)s->n;
	size_t i = (size_t)x;

	if ((double)i < x)
		i++;
	if (i > s->n)
		i = s->n;
	return s->ns[i ? i - 1 : 0] / 1e3;
}

void print_row(const struct opts *o, uint64_t msgs, double secs,
	       struct samples *s)
{
	double mps = (double)msgs / secs;
	double mbps = (double)msgs * (double)o->size / 1e6 / secs;
	char p[3][32] = { "null", "null", "null" };

	if (s && s->n) {
		qsort(s->ns, s->n, sizeof(*s->ns), cmp_u32);
		snprintf(p[0], sizeof(p[0]), "%.2f", pct_us(s, 0.50));
		snprintf(p[1], sizeof(p[1]), "%.2f", pct_us(s, 0.99));
		snprintf(p[2], sizeof(p[2]), "%.2f", pct_us(s, 0.999));
	}
	if (o->json)
		printf("{\"scenario\":\"%s\",\"impl\":\"%s\",\"engine\":\"%s\","
		       "\"size\":%zu,\"seconds\":%.3f,\"msgs\":%llu,"
		       "\"msgs_per_s\":%.1f,\"mb_per_s\":%.2f,\"p50_us\":%s,"
		       "\"p99_us\":%s,\"p999_us\":%s}\n", scen_name(o),
		       o->impl, o->impl, o->size, secs,
		       (unsigned long long)msgs, mps, mbps, p[0], p[1], p[2]);
	else
		printf("%-4s %-10s %8zu B %7.3f s %14.0f msg/s %10.1f MB/s "
		       "p50 %s p99 %s p999 %s us\n", o->impl, scen_name(o),
		       o->size, secs, mps, mbps, p[0], p[1], p[2]);
	fflush(stdout);
}

static void print_fail(const struct opts *o, const char *why)
{
	if (o->json)
		printf("{\"scenario\":\"%s\",\"impl\":\"%s\",\"size\":%zu,"
		       "\"fail\":\"%s\"}\n", scen_name(o), o->impl, o->size,
		       why);
	else
		printf("FAIL %s %s size %zu: %s\n", o->impl, scen_name(o),
		       o->size, why);
	fflush(stdout);
}

int parent_fail(const struct opts *o, const char *why, pid_t child,
		struct samples *s)
{
	int st;

	print_fail(o, why);
	if (child) {
		kill(child, SIGKILL);
		waitpid(child, &st, 0);
	}
	free(s->ns);
	return 1;
}

void child_setup(const struct opts *o)
{
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	alarm(2 * (unsigned int)o->seconds + 2 * (SETUP_MS + GRACE_MS) / 1000);
}

void child_report(int pfd, struct report *rep)
{
	if (rep->err)
		rep->ok = 0;
	write_all(pfd, rep, sizeof(*rep));
}

int report_check(const struct report *rep, int64_t n, bool with_count,
		 char *why, size_t len)
{
	if (rep->ok && rep->msgs == (uint64_t)n &&
	    (!with_count || rep->count == (uint64_t)n))
		return 0;
	if (with_count)
		snprintf(why, len, "sent %lld, received %llu, count %llu, "
			 "first gap: wanted %llu got %llu", (long long)n,
			 (unsigned long long)rep->msgs,
			 (unsigned long long)rep->count,
			 (unsigned long long)rep->gap_want,
			 (unsigned long long)rep->gap_got);
	else
		snprintf(why, len, "sent %lld, received %llu, first gap: "
			 "wanted %llu got %llu", (long long)n,
			 (unsigned long long)rep->msgs,
			 (unsigned long long)rep->gap_want,
			 (unsigned long long)rep->gap_got);
	return -1;
}

bool child_exited_ok(pid_t child)
{
	int st;

	return waitpid(child, &st, 0) == child && WIFEXITED(st) &&
	       !WEXITSTATUS(st);
}

static void usage(FILE *f, const struct peer *p)
{
	fprintf(f, "usage: %s [--mode %s] [--size N] [--seconds S] "
		"[--json]\n", p->name, p->modes);
}

static bool mode_is(const struct peer *p, enum mode m, const char *v)
{
	static const char *const names[] = { "throughput", "latency" };

	return !strcmp(v, names[m]) || (p->alias[m] &&
					!strcmp(v, p->alias[m]));
}

/* 0, or 2 after printing usage. */
static int parse_args(int argc, char **argv, struct opts *o,
		      const struct peer *p)
{
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		char *end;

		if (!strcmp(a, "--json")) {
			o->json = true;
			continue;
		}
		if (!strcmp(a, "--inject-gap")) {
			o->inject_gap = true;
			continue;
		}
		if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			usage(stdout, p);
			exit(0);
		}
		if (!v)
			goto bad;
		i++;
		if (!strcmp(a, "--mode")) {
			if (mode_is(p, MODE_THROUGHPUT, v))
				o->mode = MODE_THROUGHPUT;
			else if (mode_is(p, MODE_LATENCY, v))
				o->mode = MODE_LATENCY;
			else
				goto bad;
		} else if (!strcmp(a, "--size")) {
			unsigned long long n = strtoull(v, &end, 10);

			if (*end || n < MIN_SIZE || n > MAX_SIZE)
				goto bad;
			o->size = (size_t)n;
		} else if (!strcmp(a, "--seconds")) {
			o->seconds = strtod(v, &end);
			if (*end || !(o->seconds > 0 && o->seconds <= 3600))
				goto bad;
		} else {
			goto bad;
		}
	}
	return 0;
bad:
	usage(stderr, p);
	return 2;
}

pid_t peer_fork(int argc, char **argv, const struct peer *p, struct opts *o,
		int *pfd)
{
	int fds[2], r;
	pid_t pid;

	*o = (struct opts){ MODE_THROUGHPUT, 64, 3.0, false, false, p->impl };
	r = parse_args(argc, argv, o, p);
	if (r)
		exit(r);
	signal(SIGPIPE, SIG_IGN);
	r = p->socketpair ?
	    socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) :
	    pipe2(fds, O_CLOEXEC);
	if (r) {
		perror(p->socketpair ? "socketpair" : "pipe");
		exit(1);
	}
	fflush(stdout);
	pid = fork();
	if (pid < 0) {
		perror("fork");
		exit(1);
	}
	close(fds[pid ? 1 : 0]);
	*pfd = fds[pid ? 0 : 1];
	return pid;
}
