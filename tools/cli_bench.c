/* SPDX-License-Identifier: MIT */
/*
 * `pairmesh bench SCENARIO`: measures one scenario with every node in a
 * process of its own, checks the result (sequence numbers, counts), and
 * prints one row, or one JSON object with --json (bench/run.sh reads it).
 * The scenarios live in bench_pair.c, bench_mesh.c and bench_many.c.
 */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

static const struct {
	const char *name;
	int (*fn)(const struct bench_opts *o, struct bench_result *r);
} scenarios[] = {
	{ "throughput", bench_throughput },
	{ "latency", bench_latency },
	{ "relay", bench_relay },
	{ "mesh", bench_mesh },
	{ "fanin", bench_fanin },
	{ "scale", bench_scale },
	{ "slow", bench_slow },
};

#define NSCEN (sizeof(scenarios) / sizeof(scenarios[0]))

void bench_usage(FILE *f)
{
	fprintf(f,
"Usage: pairmesh bench SCENARIO [--size BYTES] [--seconds S] [--json]\n"
"                       [--engine auto|io_uring|epoll] [--nodes N]\n"
"                       [--peers N]\n"
"\n"
"Measures pairmesh on 127.0.0.1, every node in a process of its own, and\n"
"checks the result: a lost, duplicated or reordered message fails the run.\n"
"\n"
"Scenarios:\n"
"  throughput  one sender, one receiver, messages with sequence numbers:\n"
"              up to 256 B batched by pm_sendv (64 KiB a call), larger\n"
"              ones written in place (pm_reserve/pm_commit); 1 MiB rings\n"
"  latency     ping-pong of one message, one in flight; p50/p99/p99.9 of\n"
"              every round trip; msgs/s = round trips/s. Both sides poll\n"
"              (pm_node_run(n, 0) in a loop, never sleeping): two busy cores\n"
"  relay       A -> B -> C (B relays, sent by id, no auto-connect) against\n"
"              A -> C direct in the same run; ratio = relay / direct\n"
"  mesh        --nodes processes mesh themselves by auto-connect from a\n"
"              chain of seeds; each sends to every other, round-robin;\n"
"              msgs/s counts what all receivers got\n"
"  fanin       --peers connections into one receiver, from --peers sender\n"
"              nodes spread over two processes, 64 messages per node per\n"
"              round (pm_sendv); msgs/s at the receiver, and the\n"
"              receiver's CPU time (user + system) per message. The\n"
"              sending nodes do not auto-connect and announce their\n"
"              links with a hop limit of 1 (as in scale)\n"
"  scale       one node accepts --peers idle connections (nodes spread over\n"
"              a few processes); reports the time to connect them all and\n"
"              the receiver's RSS growth per peer (from before its node was\n"
"              created); msgs/s = connections/s. 4 KiB rings\n"
"  slow        the receiver sleeps 1 ms every 64 messages; the sender sends\n"
"              as fast as pm_send allows; reports delivered msgs/s and the\n"
"              peak RSS (VmHWM) of both processes\n"
"\n"
"Options:\n"
"  --size BYTES     message size, %u to %u (default 64)\n"
"  --seconds S      sending time (default 3)\n"
"  --engine NAME    auto (default; honours PAIRMESH_ENGINE), io_uring, epoll\n"
"  --nodes N        mesh: processes, 2 to %u (default 4)\n"
"  --peers N        fanin: 1 to %u; scale: 1 to %u, lowered to what\n"
"                   RLIMIT_NOFILE allows (default 100)\n"
"  --json           one JSON object on stdout instead of a row\n"
"\n"
"MB = 1e6 bytes of payload. Progress goes to stderr for runs over ~5 s.\n"
"Exit status: 0 success, 1 the run or its check failed, 2 bad arguments.\n",
		BENCH_MIN_SIZE, BENCH_MAX_SIZE, BENCH_MAX_NODES,
		BENCH_MAX_FANIN, BENCH_MAX_SCALE);
}

static int bad_usage(const char *fmt, const char *arg)
{
	fprintf(stderr, "pairmesh bench: ");
	fprintf(stderr, fmt, arg);
	fprintf(stderr, "\n\n");
	bench_usage(stderr);
	return 2;
}

static bool parse_u64(const char *s, uint64_t lo, uint64_t hi, uint64_t *out)
{
	char *end;
	unsigned long long v;

	if (!s || *s < '0' || *s > '9')
		return false;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || *end || v < lo || v > hi)
		return false;
	*out = v;
	return true;
}

/* 0, 1 after --help, 2 after a usage message. */
static int parse(int argc, char *argv[], struct bench_opts *o)
{
	uint64_t v;

	o->size = 64;
	o->seconds = 3;
	o->engine = PM_ENGINE_AUTO;
	o->nodes = 4;
	o->peers = 100;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] :
						NULL;
		char *end;

		if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			bench_usage(stdout);
			return 1;
		} else if (!strcmp(a, "--json")) {
			o->json = true;
			continue;
		} else if (a[0] != '-') {
			if (o->scenario)
				return bad_usage("one scenario only: '%s'", a);
			o->scenario = a;
			continue;
		} else if (!val) {
			return bad_usage("'%s' is not an option or lacks "
					 "a value", a);
		} else if (!strcmp(a, "--size")) {
			if (!parse_u64(val, BENCH_MIN_SIZE, BENCH_MAX_SIZE, &v))
				return bad_usage("bad --size '%s'", val);
			o->size = (size_t)v;
		} else if (!strcmp(a, "--seconds")) {
			o->seconds = strtod(val, &end);
			if (*end || !(o->seconds >= 0.01 &&
				      o->seconds <= 3600))
				return bad_usage("bad --seconds '%s' (0.01 to "
						 "3600)", val);
		} else if (!strcmp(a, "--engine")) {
			if (!strcmp(val, "auto"))
				o->engine = PM_ENGINE_AUTO;
			else if (!strcmp(val, "io_uring"))
				o->engine = PM_ENGINE_IO_URING;
			else if (!strcmp(val, "epoll"))
				o->engine = PM_ENGINE_EPOLL;
			else
				return bad_usage("bad --engine '%s'", val);
		} else if (!strcmp(a, "--nodes")) {
			if (!parse_u64(val, 2, BENCH_MAX_NODES, &v))
				return bad_usage("bad --nodes '%s'", val);
			o->nodes = (uint32_t)v;
		} else if (!strcmp(a, "--peers")) {
			if (!parse_u64(val, 1, BENCH_MAX_SCALE, &v))
				return bad_usage("bad --peers '%s'", val);
			o->peers = (uint32_t)v;
		} else {
			return bad_usage("unknown option '%s'", a);
		}
		i++;
	}
	if (!o->scenario)
		return bad_usage("%s", "which scenario?");
	if (!strcmp(o->scenario, "fanin") && o->peers > BENCH_MAX_FANIN)
		return bad_usage("fanin takes at most 1000 --peers%s", "");
	return 0;
}

static void json_num(const char *key, double v)
{
	if (isnan(v))
		printf(",\"%s\":null", key);
	else
		printf(",\"%s\":%.3f", key, v);
}

static void json_str(const char *s)
{
	putchar('"');
	for (; *s; s++) {
		if (*s == '"' || *s == '\\')
			printf("\\%c", *s);
		else if ((unsigned char)*s < 0x20)
			printf("\\u%04x", *s);
		else
			putchar(*s);
	}
	putchar('"');
}

static void print_json(const struct bench_opts *o, const struct bench_result *r,
		       bool ok)
{
	printf("{\"scenario\":\"%s\",\"engine\":\"%s\",\"size\":%zu",
	       o->scenario, r->engine, o->size);
	if (!ok) {
		printf(",\"error\":");
		json_str(r->why);
		printf("}\n");
		return;
	}
	printf(",\"seconds\":%.2f", r->seconds);
	json_num("msgs_per_s", r->msgs_per_s);
	json_num("mb_per_s", r->mb_per_s);
	json_num("p50_us", r->p50_us);
	json_num("p99_us", r->p99_us);
	json_num("p999_us", r->p999_us);
	if (!strcmp(o->scenario, "relay")) {
		json_num("direct_msgs_per_s", r->direct_msgs_per_s);
		json_num("ratio", r->ratio);
	} else if (!strcmp(o->scenario, "mesh")) {
		printf(",\"nodes\":%u", r->nodes);
	} else if (!strcmp(o->scenario, "fanin")) {
		printf(",\"peers\":%u", r->peers);
		json_num("hub_cpu_ns_per_msg", r->hub_cpu_ns_per_msg);
	} else if (!strcmp(o->scenario, "scale")) {
		printf(",\"peers\":%u", r->peers);
		json_num("connect_s", r->connect_s);
		json_num("rss_kib_per_peer", r->rss_kib_per_peer);
	} else if (!strcmp(o->scenario, "slow")) {
		json_num("peak_rss_kib_sender", r->rss_kib_sender);
		json_num("peak_rss_kib_receiver", r->rss_kib_receiver);
	}
	printf("}\n");
}

static void print_row(const struct bench_opts *o, const struct bench_result *r)
{
	printf("%-10s %-8s %8zu B %7.2f s %12.0f %s", o->scenario, r->engine,
	       o->size, r->seconds, r->msgs_per_s,
	       strcmp(o->scenario, "scale") ? "msgs/s" : "conns/s");
	if (!isnan(r->mb_per_s))
		printf(" %9.1f MB/s", r->mb_per_s);
	if (!isnan(r->p50_us))
		printf("  p50 %.1f us  p99 %.1f us  p99.9 %.1f us", r->p50_us,
		       r->p99_us, r->p999_us);
	if (!strcmp(o->scenario, "relay"))
		printf("  direct %.0f msgs/s  ratio %.2f", r->direct_msgs_per_s,
		       r->ratio);
	else if (!strcmp(o->scenario, "mesh"))
		printf("  %u nodes", r->nodes);
	else if (!strcmp(o->scenario, "fanin"))
		printf("  %u peers  receiver CPU %.0f ns/msg", r->peers,
		       r->hub_cpu_ns_per_msg);
	else if (!strcmp(o->scenario, "scale"))
		printf("  %u peers  connect %.2f s  %.1f KiB/peer", r->peers,
		       r->connect_s, r->rss_kib_per_peer);
	else if (!strcmp(o->scenario, "slow"))
		printf("  peak RSS sender %.0f KiB receiver %.0f KiB",
		       r->rss_kib_sender, r->rss_kib_receiver);
	printf("\n");
}

int bench_main(int argc, char *argv[])
{
	static const char *const engines[] = {
		[PM_ENGINE_AUTO] = "auto",
		[PM_ENGINE_IO_URING] = "io_uring",
		[PM_ENGINE_EPOLL] = "epoll",
	};
	struct bench_opts o = { 0 };
	struct bench_result r = {
		.msgs_per_s = NAN, .mb_per_s = NAN, .p50_us = NAN,
		.p99_us = NAN, .p999_us = NAN, .direct_msgs_per_s = NAN,
		.ratio = NAN, .connect_s = NAN, .rss_kib_per_peer = NAN,
		.rss_kib_sender = NAN, .rss_kib_receiver = NAN,
		.hub_cpu_ns_per_msg = NAN,
	};
	double est;
	size_t i;
	int ret;

	ret = parse(argc, argv, &o);
	if (ret)
		return ret == 1 ? 0 : ret;
	for (i = 0; i < NSCEN; i++)
		if (!strcmp(o.scenario, scenarios[i].name))
			break;
	if (i == NSCEN)
		return bad_usage("unknown scenario '%s'", o.scenario);
	snprintf(r.engine, sizeof(r.engine), "%s", engines[o.engine]);
	est = o.seconds * (!strcmp(o.scenario, "relay") ? 2 : 1);
	if (!strcmp(o.scenario, "scale"))
		est = o.peers / 1000.0;
	bench_verbose = est > 5;
	/* A child that vanishes must show as an error, not kill us. */
	signal(SIGPIPE, SIG_IGN);
	ret = scenarios[i].fn(&o, &r);
	if (ret)
		fprintf(stderr, "pairmesh bench: %s: FAIL: %s\n", o.scenario,
			r.why);
	if (o.json)
		print_json(&o, &r, !ret);
	else if (!ret)
		print_row(&o, &r);
	fflush(stdout);
	return ret ? 1 : 0;
}
