/* SPDX-License-Identifier: MIT */
/*
 * The options of `pairmesh node`, from the command line and from a config
 * file (--config FILE): one table, so that every option is also a key and
 * both are checked by the same code.
 *
 * The file is read first, then the command line over it. File format:
 *
 *   # a comment; blank lines are ignored
 *   listen = 0.0.0.0:7000
 *   connect = 10.0.0.2:7000     # a comment after a blank, too
 *   connect = 10.0.0.3:7000     (connect may repeat; the rest may not)
 *   no-auto-connect = yes       (flags take yes/no, true/false, on/off, 1/0)
 *
 * Keys are the long option names. A value runs to the end of the line or to
 * a '#' preceded by a blank, spaces around it trimmed, with no quoting.
 * Relative paths in a file are relative to the file's directory.
 */
#ifndef PM_NODE_OPTS_H
#define PM_NODE_OPTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "pairmesh.h"

struct opt_arg;

struct node_opts {
	struct pm_config cfg;	/* listen and key: see opts_pm_config */
	char *listen;
	char *key_file;		/* as resolved; NULL: no key */
	uint8_t key[32];
	char **connect;		/* in order, duplicates kept */
	size_t nconnect;
	struct timespec stats;	/* --stats period; zero: none */
	char *metrics;		/* --metrics [HOST:]PORT; NULL: none */
	int log_level;		/* SLOG_OFF or a pm_log_level */
	bool no_stdin;		/* a service: stdin is not read */
	const char *config;	/* --config FILE (points into argv) */

	/* The command line, applied again over the file on reload. */
	struct opt_arg *args;
	size_t nargs;
};

/*
 * Parses argv (argv[0] is "node"), reading --config FILE first. Returns 0
 * to run, 1 after printing --help, 2 after printing a usage or config
 * error, -ENOMEM. *o is to be freed with opts_free in every case.
 */
int opts_parse(struct node_opts *o, int argc, char *argv[]);

/*
 * Reads o's config file again and applies o's command line over it, into
 * *next (free it with opts_free). Returns 0, or -EINVAL / -errno with the
 * reason, "FILE:LINE: ..." for a bad line, in err.
 */
int opts_reload(const struct node_opts *o, struct node_opts *next,
		char *err, size_t errlen);

/*
 * Names the options set differently in a and b that only take effect at
 * start: up to max names in names[]. Returns how many differ.
 */
size_t opts_restart_only(const struct node_opts *a, const struct node_opts *b,
			 const char **names, size_t max);

/* The pm_config to create the node with (points into o). */
void opts_pm_config(const struct node_opts *o, struct pm_config *c);

void opts_free(struct node_opts *o);

#endif
