/* SPDX-License-Identifier: MIT */
/*
 * The cold half of bench/common.h: the one-way table and its command
 * line. Nothing here runs per message.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

int table_arg(struct table_opts *t, int argc, char **argv, int *i,
	      const char *prog, void (*usage)(FILE *f))
{
	const char *a = argv[*i], *v = *i + 1 < argc ? argv[*i + 1] : NULL;
	char *end;

	if (!strcmp(a, "--json")) {
		t->json = true;
		return 1;
	}
	if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
		usage(stdout);
		exit(0);
	}
	if (!strcmp(a, "--size") && v) {
		unsigned long long sz = strtoull(v, &end, 0);

		if (*end || sz < TABLE_MIN_SIZE || sz > TABLE_MAX_SIZE ||
		    t->nsizes == TABLE_MAX_SIZES) {
			fprintf(stderr, "%s: --size wants %d..%u, at most %d "
				"times\n", prog, TABLE_MIN_SIZE,
				TABLE_MAX_SIZE, TABLE_MAX_SIZES);
			return -EINVAL;
		}
		t->sizes[t->nsizes++] = (size_t)sz;
		++*i;
		return 1;
	}
	if (!strcmp(a, "--seconds") && v) {
		t->seconds = strtod(v, &end);
		if (*end || !(t->seconds > 0 && t->seconds <= 3600)) {
			fprintf(stderr, "%s: bad --seconds\n", prog);
			return -EINVAL;
		}
		++*i;
		return 1;
	}
	return 0;
}

void table_defaults(struct table_opts *t)
{
	if (!t->seconds)
		t->seconds = 3;
	if (!t->nsizes) {
		t->sizes[t->nsizes++] = 64;
		t->sizes[t->nsizes++] = 64 << 10;
	}
}

int result_check(const struct result_msg *res, int64_t sent, char *why,
		 size_t len)
{
	if (res->ok && res->msgs == (uint64_t)sent &&
	    res->marker_count == (uint64_t)sent)
		return 0;
	snprintf(why, len, "sent %lld, received %llu, marker %llu, first gap: "
		 "wanted %llu got %llu", (long long)sent,
		 (unsigned long long)res->msgs,
		 (unsigned long long)res->marker_count,
		 (unsigned long long)res->gap_want,
		 (unsigned long long)res->gap_got);
	return -1;
}

void table_head(bool json)
{
	if (!json)
		printf("%-9s %9s %13s %10s %8s\n", "engine", "size", "msgs/s",
		       "MB/s", "seconds");
}

void table_row(bool json, const char *engine, size_t size, uint64_t msgs,
	       uint64_t bytes, double secs)
{
	double mps = (double)msgs / secs;
	double mbps = (double)bytes / 1e6 / secs;

	if (json)
		printf("{\"engine\":\"%s\",\"size\":%zu,\"msgs\":%llu,"
		       "\"bytes\":%llu,\"seconds\":%.3f,\"msgs_per_s\":%.0f,"
		       "\"mb_per_s\":%.1f}\n", engine, size,
		       (unsigned long long)msgs, (unsigned long long)bytes,
		       secs, mps, mbps);
	else
		printf("%-9s %9zu %13.0f %10.1f %8.3f\n", engine, size, mps,
		       mbps, secs);
	fflush(stdout);
}

void table_fail(bool json, const char *engine, size_t size, const char *why)
{
	if (json)
		printf("{\"engine\":\"%s\",\"size\":%zu,\"fail\":\"%s\"}\n",
		       engine, size, why);
	else
		printf("FAIL %s size %zu: %s\n", engine, size, why);
	fflush(stdout);
}
