/* SPDX-License-Identifier: MIT */
/* logfmt lines on stderr: see slog.h for the format. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "slog.h"

static int cur_level = SLOG_OFF;

static const char *const names[] = {
	[PM_LOG_ERROR] = "error",
	[PM_LOG_WARN] = "warn",
	[PM_LOG_INFO] = "info",
	[PM_LOG_DEBUG] = "debug",
};

void slog_set_level(int level)
{
	cur_level = level;
}

int slog_level(void)
{
	return cur_level;
}

bool slog_enabled(enum pm_log_level level)
{
	return cur_level != SLOG_OFF && (int)level <= cur_level;
}

int slog_level_parse(const char *s)
{
	for (int i = 0; i < (int)(sizeof(names) / sizeof(names[0])); i++)
		if (!strcmp(s, names[i]))
			return i;
	return -EINVAL;
}

const char *slog_level_name(int level)
{
	if (level < 0 || level > PM_LOG_DEBUG)
		return "off";
	return names[level];
}

/* Appends raw bytes; what does not fit is dropped and the line marked. */
static void put(struct slog_line *l, const char *s, size_t len)
{
	/* Room is kept for "...\n" at the end of a cut line. */
	size_t room = sizeof(l->buf) - 4 - l->len;

	if (len > room) {
		len = room;
		l->cut = true;
	}
	memcpy(l->buf + l->len, s, len);
	l->len += len;
}

static void put_str(struct slog_line *l, const char *s)
{
	put(l, s, strlen(s));
}

static bool needs_quotes(const char *s, size_t len)
{
	if (!len)
		return true;
	for (size_t i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)s[i];

		if (ch <= ' ' || ch == '=' || ch == '"' || ch == 0x7f)
			return true;
	}
	return false;
}

static void put_value(struct slog_line *l, const char *s, size_t len)
{
	if (!needs_quotes(s, len)) {
		put(l, s, len);
		return;
	}
	put(l, "\"", 1);
	for (size_t i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)s[i];
		char esc[8];

		if (ch == '"' || ch == '\\') {
			esc[0] = '\\';
			esc[1] = (char)ch;
			put(l, esc, 2);
		} else if (ch == '\n') {
			put(l, "\\n", 2);
		} else if (ch == '\t') {
			put(l, "\\t", 2);
		} else if (ch < ' ' || ch == 0x7f) {
			snprintf(esc, sizeof(esc), "\\x%02x", ch);
			put(l, esc, 4);
		} else {
			put(l, (const char *)&ch, 1);
		}
	}
	put(l, "\"", 1);
}

void slog_begin(struct slog_line *l, enum pm_log_level level,
		const char *msg)
{
	struct timespec ts;
	struct tm tm;
	char when[96];

	l->len = 0;
	l->cut = false;
	l->on = slog_enabled(level);
	if (!l->on)
		return;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	snprintf(when, sizeof(when), "ts=%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ",
		 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
		 tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000);
	put_str(l, when);
	put_str(l, " level=");
	put_str(l, names[level]);
	put_str(l, " msg=");
	put_value(l, msg, strlen(msg));
}

void slog_strn(struct slog_line *l, const char *key, const char *val,
	       size_t len)
{
	if (!l->on)
		return;
	put(l, " ", 1);
	put_str(l, key);
	put(l, "=", 1);
	put_value(l, val, len);
}

void slog_str(struct slog_line *l, const char *key, const char *val)
{
	slog_strn(l, key, val ? val : "", val ? strlen(val) : 0);
}

void slog_u64(struct slog_line *l, const char *key, uint64_t v)
{
	char num[24];

	snprintf(num, sizeof(num), "%" PRIu64, v);
	slog_str(l, key, num);
}

void slog_id(struct slog_line *l, const char *key, uint64_t id)
{
	char hex[20];

	snprintf(hex, sizeof(hex), "%016" PRIx64, id);
	slog_str(l, key, hex);
}

void slog_bool(struct slog_line *l, const char *key, bool v)
{
	slog_str(l, key, v ? "true" : "false");
}

void slog_end(struct slog_line *l)
{
	if (!l->on)
		return;
	if (l->cut) {
		memcpy(l->buf + l->len, "...", 3);
		l->len += 3;
	}
	l->buf[l->len++] = '\n';
	for (size_t off = 0; off < l->len;) {
		ssize_t r = write(STDERR_FILENO, l->buf + off, l->len - off);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		off += (size_t)r;
	}
}

void slog(enum pm_log_level level, const char *msg)
{
	struct slog_line l;

	slog_begin(&l, level, msg);
	slog_end(&l);
}
