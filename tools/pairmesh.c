/* SPDX-License-Identifier: MIT */
/*
 * pairmesh: the command-line tool. A table of subcommands, each dispatching
 * to its own *_main(argc, argv), like wireguard-tools' wg.c.
 */
#include <stdio.h>
#include <string.h>

#include "pairmesh.h"
#include "bench.h"
#include "cli.h"

const char *prog = "pairmesh";

static const struct {
	const char *name;
	int (*fn)(int argc, char *argv[]);
	const char *help;
} subcommands[] = {
	{ "node", node_main, "runs a node: lines on stdin are sent, "
	  "messages received are printed" },
	{ "bench", bench_main, "measures throughput, latency, relay, mesh, "
	  "fan-in, scale, slow receivers" },
};

#define NSUB (sizeof(subcommands) / sizeof(subcommands[0]))

static void usage(FILE *f)
{
	fprintf(f, "Usage: %s <command> [<args>]\n"
		"       %s --help | --version\n\n"
		"Every process is an identical peer of a TCP mesh; a pair "
		"stream joins two nodes.\n\nCommands:\n", prog, prog);
	for (size_t i = 0; i < NSUB; i++)
		fprintf(f, "  %-6s  %s\n", subcommands[i].name,
			subcommands[i].help);
	fprintf(f, "\n`%s <command> --help` describes a command.\n"
		"Exit status: 0 success, 1 runtime failure, 2 bad "
		"arguments.\n\n", prog);
	node_usage(f);
}

int main(int argc, char *argv[])
{
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") ||
	    !strcmp(argv[1], "help")) {
		usage(stdout);
		return 0;
	}
	if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "-V")) {
		printf("%s %d.%d (protocol %d)\n", prog, PM_VERSION_MAJOR,
		       PM_VERSION_MINOR, PM_PROTOCOL_VERSION);
		return 0;
	}
	for (size_t i = 0; i < NSUB; i++)
		if (!strcmp(argv[1], subcommands[i].name))
			return subcommands[i].fn(argc - 1, argv + 1);
	fprintf(stderr, "%s: '%s' is not a command\n\n", prog, argv[1]);
	usage(stderr);
	return 2;
}
