/* SPDX-License-Identifier: MIT */
/*
 * `pairmesh node` options: one table read by getopt_long and by the config
 * file parser (format in node_opts.h).
 */
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "metrics.h"
#include "node_opts.h"
#include "slog.h"

#define LINE_MAX_FILE	4096	/* longest config line */
#define SHOW_MAX	64	/* bytes of a bad value shown in messages */

/* One option given on the command line, in order. */
struct opt_arg {
	int opt;		/* index into opts[] */
	const char *val;	/* optarg, NULL for a flag */
};

/*
 * Sets one option from its text (NULL: a flag given on the command line).
 * base is the config file's directory for relative paths, or NULL.
 * Returns 0, or -EINVAL with *why saying what is wanted.
 */
typedef int (*set_fn)(struct node_opts *o, const char *val, const char *base,
		      const char **why);

struct opt {
	const char *name;
	int short_name;		/* 0: long only */
	bool flag;		/* takes no value on the command line */
	bool repeat;		/* may be given more than once */
	set_fn set;
};

static int parse_u64(const char *s, int base, uint64_t max, uint64_t *out)
{
	char *end;
	unsigned long long v;

	if (!*s || *s == '-' || *s == '+' || isspace((unsigned char)*s))
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, base);
	if (errno || *end || v > max)
		return -EINVAL;
	*out = v;
	return 0;
}

static int parse_bool(const char *s, bool *out)
{
	static const char *const yes[] = { "yes", "true", "on", "1" };
	static const char *const no[] = { "no", "false", "off", "0" };

	for (size_t i = 0; i < 4; i++) {
		if (!strcmp(s, yes[i]) || !strcmp(s, no[i])) {
			*out = !strcmp(s, yes[i]);
			return 0;
		}
	}
	return -EINVAL;
}

/*
 * HOST:PORT as the library reads it: "[V6]:PORT" or one colon. Names are
 * resolved later, by the library, so only the shape is checked here.
 */
static bool addr_shape_ok(const char *s, bool port0)
{
	const char *port;
	uint64_t p;

	if (*s == '[') {
		const char *close = strchr(s, ']');

		if (!close || close == s + 1 || close[1] != ':')
			return false;
		port = close + 2;
	} else {
		const char *colon = strchr(s, ':');

		if (!colon || colon == s || strchr(colon + 1, ':'))
			return false;
		port = colon + 1;
	}
	if (parse_u64(port, 10, 65535, &p))
		return false;
	return port0 || p;
}

static int set_str(char **dst, const char *val)
{
	char *s = strdup(val);

	if (!s)
		return -ENOMEM;
	free(*dst);
	*dst = s;
	return 0;
}

static int set_listen(struct node_opts *o, const char *val, const char *base,
		      const char **why)
{
	*why = "want HOST:PORT (port 0 picks a free one)";
	if (!addr_shape_ok(val, true))
		return -EINVAL;
	return set_str(&o->listen, val);
}

static int set_connect(struct node_opts *o, const char *val,
		       const char *base, const char **why)
{
	char **v;

	*why = "want HOST:PORT";
	if (!addr_shape_ok(val, false))
		return -EINVAL;
	v = realloc(o->connect, (o->nconnect + 1) * sizeof(*v));
	if (!v)
		return -ENOMEM;
	o->connect = v;
	v[o->nconnect] = strdup(val);
	if (!v[o->nconnect])
		return -ENOMEM;
	o->nconnect++;
	return 0;
}

static int set_id(struct node_opts *o, const char *val, const char *base,
		  const char **why)
{
	uint64_t v;

	*why = "want 1 to 16 hex digits, not all zero";
	if (strlen(val) > 16 || parse_u64(val, 16, UINT64_MAX, &v) || !v)
		return -EINVAL;
	o->cfg.node_id = v;
	return 0;
}

static int set_engine(struct node_opts *o, const char *val, const char *base,
		      const char **why)
{
	*why = "want auto, io_uring or epoll";
	if (!strcmp(val, "auto"))
		o->cfg.engine = PM_ENGINE_AUTO;
	else if (!strcmp(val, "io_uring"))
		o->cfg.engine = PM_ENGINE_IO_URING;
	else if (!strcmp(val, "epoll"))
		o->cfg.engine = PM_ENGINE_EPOLL;
	else
		return -EINVAL;
	return 0;
}

static int set_max_peers(struct node_opts *o, const char *val,
			 const char *base, const char **why)
{
	uint64_t v;

	*why = "want a positive number";
	if (parse_u64(val, 10, UINT32_MAX, &v) || !v)
		return -EINVAL;
	o->cfg.max_peers = (uint32_t)v;
	return 0;
}

static int set_flag(bool *dst, const char *val, const char **why)
{
	*why = "want yes or no";
	if (!val) {
		*dst = true;
		return 0;
	}
	return parse_bool(val, dst);
}

static int set_no_auto_connect(struct node_opts *o, const char *val,
			       const char *base, const char **why)
{
	return set_flag(&o->cfg.no_auto_connect, val, why);
}

static int set_no_stdin(struct node_opts *o, const char *val,
			const char *base, const char **why)
{
	return set_flag(&o->no_stdin, val, why);
}

static int set_max_hops(struct node_opts *o, const char *val,
			const char *base, const char **why)
{
	uint64_t v;

	*why = "want 1 to 255";
	if (parse_u64(val, 10, UINT8_MAX, &v) || !v)
		return -EINVAL;
	o->cfg.max_hops = (uint8_t)v;
	return 0;
}

static int set_ms(uint32_t *dst, const char *val, const char **why)
{
	uint64_t v;

	*why = "want milliseconds, 0 to 3600000";
	if (parse_u64(val, 10, 3600000, &v))
		return -EINVAL;
	*dst = (uint32_t)v;
	return 0;
}

static int set_keepalive(struct node_opts *o, const char *val,
			 const char *base, const char **why)
{
	return set_ms(&o->cfg.keepalive_ms, val, why);
}

static int set_dead_after(struct node_opts *o, const char *val,
			  const char *base, const char **why)
{
	return set_ms(&o->cfg.dead_ms, val, why);
}

static int set_resume(struct node_opts *o, const char *val, const char *base,
		      const char **why)
{
	return set_ms(&o->cfg.resume_ms, val, why);
}

/* SECONDS for --stats: positive, decimals allowed, at most a day. */
static int set_stats(struct node_opts *o, const char *val, const char *base,
		     const char **why)
{
	char *end;
	double v;

	*why = "want seconds, 0.001 to 86400";
	if (!*val || isspace((unsigned char)*val))
		return -EINVAL;
	errno = 0;
	v = strtod(val, &end);
	if (errno || *end || !isfinite(v) || v < 0.001 || v > 86400)
		return -EINVAL;
	o->stats.tv_sec = (time_t)v;
	o->stats.tv_nsec = (long)((v - (double)o->stats.tv_sec) * 1e9);
	return 0;
}

static int set_key_file(struct node_opts *o, const char *val,
			const char *base, const char **why)
{
	char *path;
	int r;

	if (base && val[0] != '/') {
		if (asprintf(&path, "%s/%s", base, val) < 0)
			return -ENOMEM;
	} else {
		path = strdup(val);
		if (!path)
			return -ENOMEM;
	}
	r = pm_key_load(path, o->key);
	if (r) {
		free(path);
		*why = r == -EINVAL ? "want 64 hex digits or 32 bytes" :
		       strerror(-r);
		return -EINVAL;
	}
	free(o->key_file);
	o->key_file = path;
	return 0;
}

static int set_metrics(struct node_opts *o, const char *val,
		       const char *base, const char **why)
{
	struct sockaddr_storage ss;
	socklen_t len;

	*why = "want PORT (on 127.0.0.1) or HOST:PORT";
	if (metrics_parse(val, &ss, &len))
		return -EINVAL;
	return set_str(&o->metrics, val);
}

static int set_log_level(struct node_opts *o, const char *val,
			 const char *base, const char **why)
{
	int l = slog_level_parse(val);

	*why = "want error, warn, info or debug";
	if (l < 0)
		return -EINVAL;
	o->log_level = l;
	return 0;
}

static const struct opt opts[] = {
	{ "listen", 'l', false, false, set_listen },
	{ "connect", 'c', false, true, set_connect },
	{ "id", 0, false, false, set_id },
	{ "engine", 'e', false, false, set_engine },
	{ "max-peers", 0, false, false, set_max_peers },
	{ "no-auto-connect", 0, true, false, set_no_auto_connect },
	{ "max-hops", 0, false, false, set_max_hops },
	{ "stats", 0, false, false, set_stats },
	{ "key-file", 0, false, false, set_key_file },
	{ "keepalive", 0, false, false, set_keepalive },
	{ "dead-after", 0, false, false, set_dead_after },
	{ "resume", 0, false, false, set_resume },
	{ "metrics", 0, false, false, set_metrics },
	{ "log-level", 0, false, false, set_log_level },
	{ "no-stdin", 0, true, false, set_no_stdin },
};

#define NOPTS		(sizeof(opts) / sizeof(opts[0]))
#define OPT_CONFIG	(int)NOPTS	/* getopt values past the table */
#define OPT_HELP	(int)(NOPTS + 1)

static void defaults(struct node_opts *o)
{
	memset(o, 0, sizeof(*o));
	pm_config_init(&o->cfg);
	o->log_level = SLOG_OFF;
}

/* A value as shown in a message: at most SHOW_MAX bytes. */
static int show_len(const char *val)
{
	size_t len = strlen(val);

	return (int)(len > SHOW_MAX ? SHOW_MAX : len);
}

static int find_key(const char *key)
{
	for (size_t i = 0; i < NOPTS; i++)
		if (!strcmp(key, opts[i].name))
			return (int)i;
	return -1;
}

static char *trim(char *s)
{
	char *end;

	while (isspace((unsigned char)*s))
		s++;
	end = s + strlen(s);
	while (end > s && isspace((unsigned char)end[-1]))
		*--end = '\0';
	return s;
}

/* A '#' at the start or after a blank starts a comment. */
static void cut_comment(char *s)
{
	for (char *p = s; *p; p++) {
		if (*p == '#' && (p == s || isspace((unsigned char)p[-1]))) {
			*p = '\0';
			return;
		}
	}
}

/* One "key = value" line into o. Returns 0 or -EINVAL / -ENOMEM. */
static int file_line(struct node_opts *o, char *line, const char *base,
		     int *seen, int lineno, char *err, size_t errlen)
{
	char *eq, *key, *val;
	const char *why = NULL;
	int i, r;

	cut_comment(line);
	line = trim(line);
	if (!*line)
		return 0;
	eq = strchr(line, '=');
	if (!eq) {
		snprintf(err, errlen, "want 'key = value', got '%.*s'",
			 show_len(line), line);
		return -EINVAL;
	}
	*eq = '\0';
	key = trim(line);
	val = trim(eq + 1);
	i = find_key(key);
	if (i < 0) {
		if (!strcmp(key, "config") || !strcmp(key, "help"))
			snprintf(err, errlen, "'%s' is a command-line option "
				 "only", key);
		else
			snprintf(err, errlen, "unknown key '%.*s'",
				 show_len(key), key);
		return -EINVAL;
	}
	if (seen[i] && !opts[i].repeat) {
		snprintf(err, errlen, "%s: already set on line %d", key,
			 seen[i]);
		return -EINVAL;
	}
	seen[i] = lineno;
	if (!*val) {
		snprintf(err, errlen, "%s: no value", key);
		return -EINVAL;
	}
	r = opts[i].set(o, val, base, &why);
	if (r == -EINVAL)
		snprintf(err, errlen, "%s '%.*s': %s", key, show_len(val),
			 val, why);
	return r;
}

/* The directory of path, for relative paths in the file. */
static char *dir_of(const char *path)
{
	const char *slash = strrchr(path, '/');

	if (!slash)
		return strdup(".");
	if (slash == path)
		return strdup("/");
	return strndup(path, (size_t)(slash - path));
}

/*
 * Reads the config file into o. Returns 0, or -EINVAL / -errno with the
 * reason in err, prefixed "FILE:LINE: " for a bad line.
 */
static int load_file(struct node_opts *o, const char *path, char *err,
		     size_t errlen)
{
	int seen[NOPTS] = { 0 };
	char *line = NULL, *base, msg[256];
	size_t cap = 0;
	ssize_t len;
	int lineno = 0, r = 0;
	FILE *f = fopen(path, "re");

	if (!f) {
		r = -errno;
		snprintf(err, errlen, "%s: %s", path, strerror(-r));
		return r;
	}
	base = dir_of(path);
	if (!base) {
		fclose(f);
		return -ENOMEM;
	}
	while ((len = getline(&line, &cap, f)) >= 0) {
		lineno++;
		if (len > LINE_MAX_FILE) {
			snprintf(msg, sizeof(msg), "line longer than %d bytes",
				 LINE_MAX_FILE);
			r = -EINVAL;
		} else if (strlen(line) != (size_t)len) {
			snprintf(msg, sizeof(msg), "NUL byte in the line");
			r = -EINVAL;
		} else {
			r = file_line(o, line, base, seen, lineno, msg,
				      sizeof(msg));
		}
		if (r)
			break;
	}
	if (!r && ferror(f)) {
		r = -EIO;
		snprintf(err, errlen, "%s: read error", path);
	} else if (r == -ENOMEM) {
		snprintf(err, errlen, "%s: out of memory", path);
	} else if (r) {
		snprintf(err, errlen, "%s:%d: %s", path, lineno, msg);
	}
	free(line);
	free(base);
	fclose(f);
	return r;
}

static int bad_usage(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int bad_usage(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s node: ", prog);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n\n");
	node_usage(stderr);
	return 2;
}

/* The command line, saved in o->args; --config and --help handled. */
static int scan_argv(struct node_opts *o, int argc, char *argv[])
{
	struct option lopts[NOPTS + 3];
	int o_short[128] = { 0 };
	char shorts[32] = "+";
	int c;

	for (size_t i = 0; i < NOPTS; i++) {
		lopts[i] = (struct option){
			opts[i].name,
			opts[i].flag ? no_argument : required_argument,
			NULL, (int)i + 256,
		};
		if (opts[i].short_name) {
			size_t l = strlen(shorts);

			shorts[l] = (char)opts[i].short_name;
			shorts[l + 1] = ':';
			shorts[l + 2] = '\0';
			o_short[opts[i].short_name] = (int)i + 256;
		}
	}
	lopts[NOPTS] = (struct option){ "config", required_argument, NULL,
					 OPT_CONFIG + 256 };
	lopts[NOPTS + 1] = (struct option){ "help", no_argument, NULL, 'h' };
	lopts[NOPTS + 2] = (struct option){ 0 };
	strcat(shorts, "h");

	o->args = calloc((size_t)argc, sizeof(*o->args));
	if (!o->args)
		return -ENOMEM;
	opterr = 0;
	optind = 1;
	while ((c = getopt_long(argc, argv, shorts, lopts, NULL)) != -1) {
		if (c > 0 && c < 128 && o_short[c])
			c = o_short[c];
		if (c == 'h') {
			node_usage(stdout);
			return 1;
		}
		if (c == OPT_CONFIG + 256) {
			o->config = optarg;
			continue;
		}
		if (c < 256 || c >= 256 + (int)NOPTS)
			return bad_usage("bad option or missing value: '%s'",
					 argv[optind - 1]);
		o->args[o->nargs++] = (struct opt_arg){ c - 256,
			opts[c - 256].flag ? NULL : optarg };
	}
	if (optind < argc)
		return bad_usage("unexpected argument '%s'", argv[optind]);
	return 0;
}

/* Applies the saved command line over what the file set. */
static int apply_args(struct node_opts *o, const struct opt_arg *args,
		      size_t nargs, char *err, size_t errlen)
{
	for (size_t i = 0; i < nargs; i++) {
		const struct opt *op = &opts[args[i].opt];
		const char *why = NULL;
		int r = op->set(o, args[i].val, NULL, &why);

		if (r == -EINVAL)
			snprintf(err, errlen, "--%s '%.*s': %s", op->name,
				 show_len(args[i].val), args[i].val, why);
		else if (r)
			snprintf(err, errlen, "out of memory");
		if (r)
			return r;
	}
	return 0;
}

int opts_parse(struct node_opts *o, int argc, char *argv[])
{
	char err[512];
	int r;

	defaults(o);
	r = scan_argv(o, argc, argv);
	if (r)
		return r;
	if (o->config) {
		r = load_file(o, o->config, err, sizeof(err));
		if (r) {
			fprintf(stderr, "%s node: %s\n", prog, err);
			return r == -ENOMEM ? r : 2;
		}
	}
	r = apply_args(o, o->args, o->nargs, err, sizeof(err));
	if (r == -EINVAL)
		return bad_usage("%s", err);
	return r;
}

int opts_reload(const struct node_opts *o, struct node_opts *next,
		char *err, size_t errlen)
{
	int r;

	defaults(next);
	if (!o->config) {
		snprintf(err, errlen, "no --config file");
		return -EINVAL;
	}
	next->config = o->config;
	r = load_file(next, o->config, err, errlen);
	if (r)
		return r;
	/* The command line still wins; it was fine at start, but a key file
	 * it names may have changed since. */
	return apply_args(next, o->args, o->nargs, err, errlen);
}

static bool str_differ(const char *a, const char *b)
{
	if (!a || !b)
		return a != b;
	return strcmp(a, b) != 0;
}

size_t opts_restart_only(const struct node_opts *a, const struct node_opts *b,
			 const char **names, size_t max)
{
	const struct pm_config *x = &a->cfg, *y = &b->cfg;
	bool key_differs = str_differ(a->key_file, b->key_file) ||
			   (a->key_file && memcmp(a->key, b->key, 32));
	const struct {
		const char *name;
		bool differs;
	} v[] = {
		{ "listen", str_differ(a->listen, b->listen) },
		{ "id", x->node_id != y->node_id },
		{ "engine", x->engine != y->engine },
		{ "max-peers", x->max_peers != y->max_peers },
		{ "no-auto-connect", x->no_auto_connect != y->no_auto_connect },
		{ "max-hops", x->max_hops != y->max_hops },
		{ "key-file", key_differs },
		{ "keepalive", x->keepalive_ms != y->keepalive_ms },
		{ "dead-after", x->dead_ms != y->dead_ms },
		{ "resume", x->resume_ms != y->resume_ms },
		{ "no-stdin", a->no_stdin != b->no_stdin },
	};
	size_t k = 0;

	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		if (!v[i].differs)
			continue;
		if (k < max)
			names[k] = v[i].name;
		k++;
	}
	return k;
}

void opts_pm_config(const struct node_opts *o, struct pm_config *c)
{
	*c = o->cfg;
	if (o->listen)
		c->listen = o->listen;
	if (o->key_file) {
		c->key = o->key;
		c->key_len = sizeof(o->key);
	}
}

void opts_free(struct node_opts *o)
{
	for (size_t i = 0; i < o->nconnect; i++)
		free(o->connect[i]);
	free(o->connect);
	free(o->listen);
	free(o->key_file);
	free(o->metrics);
	free(o->args);
	memset(o->key, 0, sizeof(o->key));
	o->connect = NULL;
	o->nconnect = 0;
	o->listen = o->key_file = o->metrics = NULL;
	o->args = NULL;
	o->nargs = 0;
}
