/* SPDX-License-Identifier: MIT */
/* Subcommands of the pairmesh tool: each is a main(argc, argv) of its own. */
#ifndef PM_CLI_H
#define PM_CLI_H

#include <stdio.h>

extern const char *prog;	/* argv[0] of the tool, for messages */

/* `pairmesh node ...`: argv[0] is "node". Returns the exit status. */
int node_main(int argc, char *argv[]);
void node_usage(FILE *f);

#endif
