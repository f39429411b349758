/* SPDX-License-Identifier: MIT */
/*
 * Structured log lines for `pairmesh node --log-level`: one event per line
 * on stderr in logfmt, keys in a fixed order,
 *
 *   ts=2024-04-05T12:34:56.789Z level=info msg="peer connected" peer=...
 *
 * ts is UTC with milliseconds; a value is quoted when it is empty or holds a
 * space, '=', '"' or a control byte ("\"", "\\", "\n", "\t", "\xHH" inside
 * quotes). Each line is written with one write(2), so lines from one
 * process never interleave. The level is process-wide: one tool, one log.
 */
#ifndef PM_SLOG_H
#define PM_SLOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pairmesh.h"

#define SLOG_OFF	(-1)	/* no structured lines (the default) */
#define SLOG_LINE_MAX	1024	/* longer lines are cut, ending "..." */

struct slog_line {
	char buf[SLOG_LINE_MAX];
	size_t len;
	bool cut;
	bool on;		/* the level is enabled: fields are kept */
};

/* SLOG_OFF or a pm_log_level: lines at that level and above are written. */
void slog_set_level(int level);
int slog_level(void);
bool slog_enabled(enum pm_log_level level);

/* "error", "warn", "info", "debug" to a pm_log_level; -EINVAL otherwise. */
int slog_level_parse(const char *s);
const char *slog_level_name(int level);

/* Starts a line: ts, level, msg. Fields follow, slog_end writes it. */
void slog_begin(struct slog_line *l, enum pm_log_level level,
		const char *msg);
void slog_str(struct slog_line *l, const char *key, const char *val);
void slog_strn(struct slog_line *l, const char *key, const char *val,
	       size_t len);
void slog_u64(struct slog_line *l, const char *key, uint64_t v);
/* A node id: 16 lowercase hex digits, as everywhere else in the tool. */
void slog_id(struct slog_line *l, const char *key, uint64_t id);
void slog_bool(struct slog_line *l, const char *key, bool v);
void slog_end(struct slog_line *l);

/* A line with no fields. */
void slog(enum pm_log_level level, const char *msg);

#endif
