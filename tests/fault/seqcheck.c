/* SPDX-License-Identifier: MIT */
/*
 * seqcheck: adds up seqnode reports (one file per process, tests/fault/
 * seq.h) and says what happened to every numbered message.
 *
 * For each sender process S and destination node T, the numbers S sent are
 * [0, sent); every process that ran as T reports which of them it got. A
 * number got by two processes of T, or twice by one, is a duplicate; one
 * got after a larger one a reordering. A number nobody got is lost, and
 * the loss is put down to its cause from its neighbours alone, no clock:
 *
 *   killed  the numbers around it went to two processes of T, the first
 *           killed; or it is S's tail and S or T's last process was killed;
 *           or T had a killed process and nothing before it arrived
 *   relay   between two numbers the same process of T got (a hole in a
 *           live pair), allowed only with --relay-loss-ok: for a mesh
 *           whose relays acknowledge hop by hop only (before routed
 *           sessions, docs/PROTOCOL.md §10.8); counted as live otherwise
 *   live    any other: lost while both ends lived, a bug
 *
 * Exit 0 when nothing was duplicated, reordered, corrupted, lost "live"
 * (or "relay" without the flag) and peak RSS stayed under --rss-limit-kb;
 * 1 otherwise; 2 for bad input.
 */
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_SHOW	8	/* lost ranges printed per pair */

struct range {
	uint64_t from, to;	/* inclusive */
	int holder;		/* index of the report that got them */
};

struct sent {
	uint64_t dest, count, unsent, closed;
};

struct recv {
	uint64_t origin, inc, first, next, count, dup, late, bad;
	struct range *gaps;
	size_t ngaps;
};

struct report {
	char *path;
	uint64_t id, inc, start_us;
	int pid;
	bool killed;		/* no final report, process gone */
	size_t rss_kb, rss_max_kb, hwm_kb;
	uint64_t bad;
	struct sent *sent;
	size_t nsent;
	struct recv *recv;
	size_t nrecv;
};

static struct report *rep;
static size_t nrep;

static struct {
	uint64_t sent, delivered, dup, late, bad;
	uint64_t lost_killed, lost_relay, lost_live;
	uint64_t unsent;
} tot;

static void *grow(void *p, size_t n, size_t size)
{
	p = realloc(p, (n + 1) * size);
	if (!p) {
		fprintf(stderr, "seqcheck: out of memory\n");
		exit(2);
	}
	return p;
}

/*
 * Whether pid is a live process (not a zombie): a "running" report of one
 * is a snapshot of a process still at work, not of one that was killed.
 * The scripts poll with that while they wait for the last messages.
 */
static bool running(int pid)
{
	char path[64], buf[256], *p;
	FILE *f;
	bool live = false;

	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	f = fopen(path, "r");
	if (!f)
		return false;
	if (fgets(buf, sizeof(buf), f)) {
		p = strrchr(buf, ')');
		live = p && p[1] == ' ' && p[2] != 'Z' && p[2] != 'X';
	}
	fclose(f);
	return live;
}

static int load(const char *path, struct report *r)
{
	char line[512];
	bool end = false;
	FILE *f = fopen(path, "r");

	memset(r, 0, sizeof(*r));
	r->path = strdup(path);
	if (!f) {
		perror(path);
		return -1;
	}
	while (fgets(line, sizeof(line), f)) {
		char state[16];
		struct sent s;
		struct recv v = { 0 };
		struct range g;
		uint64_t o, inc;

		if (sscanf(line, "node %" SCNx64 " %" SCNx64 " %d %15s %"
			   SCNu64, &r->id, &r->inc, &r->pid, state,
			   &r->start_us) == 5) {
			r->killed = strcmp(state, "final") != 0 &&
				    !running(r->pid);
		} else if (sscanf(line, "mem %zu %zu %zu", &r->rss_kb,
				  &r->rss_max_kb, &r->hwm_kb) == 3) {
		} else if (!strncmp(line, "stats ", 6) &&
			   strstr(line, " bad=")) {
			sscanf(strstr(line, " bad="), " bad=%" SCNu64, &r->bad);
		} else if (sscanf(line, "sent %" SCNx64 " %" SCNu64 " %" SCNu64
				  " %" SCNu64, &s.dest, &s.count, &s.unsent,
				  &s.closed) == 4) {
			r->sent = grow(r->sent, r->nsent, sizeof(s));
			r->sent[r->nsent++] = s;
		} else if (sscanf(line, "recv %" SCNx64 " %" SCNx64 " %" SCNu64
				  " %" SCNu64 " %" SCNu64 " %" SCNu64 " %"
				  SCNu64 " %" SCNu64, &v.origin, &v.inc,
				  &v.first, &v.next, &v.count, &v.dup, &v.late,
				  &v.bad) == 8) {
			r->recv = grow(r->recv, r->nrecv, sizeof(v));
			r->recv[r->nrecv++] = v;
		} else if (sscanf(line, "gap %" SCNx64 " %" SCNx64 " %" SCNu64
				  " %" SCNu64, &o, &inc, &g.from, &g.to) == 4) {
			struct recv *p = r->nrecv ? &r->recv[r->nrecv - 1] :
					 NULL;

			if (!p || p->origin != o || p->inc != inc)
				goto bad;
			p->gaps = grow(p->gaps, p->ngaps, sizeof(g));
			p->gaps[p->ngaps++] = g;
		} else if (!strcmp(line, "end\n")) {
			end = true;
		}
	}
	fclose(f);
	if (!end || !r->id)
		goto bad_noclose;
	return 0;
bad:
	fclose(f);
bad_noclose:
	fprintf(stderr, "seqcheck: %s: not a complete report\n", path);
	return -1;
}

static int by_from(const void *a, const void *b)
{
	const struct range *x = a, *y = b;

	return x->from < y->from ? -1 : x->from > y->from;
}

/* What process h of T got from (S, inc), as ranges into *v. */
static void held(int h, uint64_t s, uint64_t inc, struct range **v,
		 size_t *n, uint64_t *max, uint64_t *dup, uint64_t *late)
{
	for (size_t i = 0; i < rep[h].nrecv; i++) {
		const struct recv *c = &rep[h].recv[i];
		uint64_t at = c->first;
		struct range *g;

		if (c->origin != s || c->inc != inc || !c->count)
			continue;
		*dup += c->dup;
		*late += c->late;
		tot.bad += c->bad;
		g = malloc((c->ngaps + 1) * sizeof(*g));
		memcpy(g, c->gaps, c->ngaps * sizeof(*g));
		qsort(g, c->ngaps, sizeof(*g), by_from);
		for (size_t k = 0; k <= c->ngaps; k++) {
			uint64_t end = k < c->ngaps ? g[k].from : c->next;

			if (end > at) {
				*v = grow(*v, *n, sizeof(**v));
				(*v)[(*n)++] = (struct range){ at, end - 1, h };
			}
			if (k < c->ngaps)
				at = g[k].to + 1;
		}
		if (c->next > *max)
			*max = c->next;
		free(g);
	}
}

/* Processes of node id, oldest first, into idx; returns how many. */
static size_t lives(uint64_t id, int *idx)
{
	size_t n = 0;

	for (size_t i = 0; i < nrep; i++) {
		size_t j;

		if (rep[i].id != id)
			continue;
		for (j = n; j > 0 && rep[idx[j - 1]].start_us >
				     rep[i].start_us; j--)
			idx[j] = idx[j - 1];
		idx[j] = (int)i;
		n++;
	}
	return n;
}

/* Whether a process of T older than process h (any, h < 0) was killed. */
static bool killed_before(const int *idx, size_t nl, int h)
{
	for (size_t i = 0; i < nl && idx[i] != h; i++)
		if (rep[idx[i]].killed)
			return true;
	return false;
}

enum cause { KILLED, RELAY, LIVE };
static const char *const cause_name[] = { "killed", "relay", "live" };

static enum cause classify(int prev, int next, int sender, const int *idx,
			    size_t nl, bool relay_ok)
{
	int last_t = nl ? idx[nl - 1] : -1;

	if (prev >= 0 && next >= 0 && prev != next)
		return rep[prev].killed ? KILLED : LIVE;
	if (prev >= 0 && next >= 0)
		return relay_ok ? RELAY : LIVE;
	if (prev >= 0)		/* the tail */
		return rep[sender].killed || rep[prev].killed ||
		       (last_t >= 0 && rep[last_t].killed) ? KILLED : LIVE;
	/* the head, or nothing at all got through */
	return killed_before(idx, nl, next) || rep[sender].killed ?
	       KILLED : LIVE;
}

/* One sender process and one destination node. */
static void pair(int sender, uint64_t dest, uint64_t count, bool relay_ok,
		 bool verbose)
{
	const struct report *s = &rep[sender];
	int *idx = malloc((nrep + 1) * sizeof(int));
	size_t nl = lives(dest, idx), n = 0, shown = 0;
	struct range *v = NULL;
	uint64_t max = 0, dup = 0, late = 0, at = 0, got = 0, lost = 0;
	int prev = -1;

	for (size_t i = 0; i < nl; i++)
		held(idx[i], s->id, s->inc, &v, &n, &max, &dup, &late);
	if (max > count) {
		if (!s->killed)
			fprintf(stderr, "seqcheck: %016" PRIx64 " -> %016"
				PRIx64 ": got %" PRIu64 " > sent %" PRIu64 "\n",
				s->id, dest, max, count);
		count = max;	/* a killed sender's last report is old */
	}
	qsort(v, n, sizeof(*v), by_from);
	for (size_t i = 0; i <= n; i++) {
		uint64_t from = i < n ? v[i].from : count;
		int next = i < n ? v[i].holder : -1;

		if (from > at) {
			enum cause why = classify(prev, next, sender, idx,
						   nl, relay_ok);
			uint64_t k = from - at;

			lost += k;
			if (why == KILLED)
				tot.lost_killed += k;
			else if (why == RELAY)
				tot.lost_relay += k;
			else
				tot.lost_live += k;
			if (verbose || why != KILLED) {
				if (shown++ < MAX_SHOW)
					printf("  lost %016" PRIx64 " -> %016"
					       PRIx64 " #%" PRIu64 "..%" PRIu64
					       " (%" PRIu64 "): %s\n", s->id,
					       dest, at, from - 1, k,
					       cause_name[why]);
			}
		} else if (i < n && from < at) {
			uint64_t k = (v[i].to < at ? v[i].to + 1 : at) - from;

			dup += k;	/* got by two processes of T */
			printf("  duplicate %016" PRIx64 " -> %016" PRIx64
			       " #%" PRIu64 "..: %" PRIu64 " across restarts\n",
			       s->id, dest, from, k);
		}
		if (i < n) {
			uint64_t lo = v[i].from > at ? v[i].from : at;

			if (v[i].to + 1 > lo)
				got += v[i].to + 1 - lo;
			if (v[i].to + 1 > at)
				at = v[i].to + 1;
			prev = v[i].holder;
		}
	}
	if (shown > MAX_SHOW)
		printf("  ... %zu more lost ranges\n", shown - MAX_SHOW);
	if (dup || late)
		printf("  %016" PRIx64 " -> %016" PRIx64 ": %" PRIu64
		       " duplicated, %" PRIu64 " reordered\n", s->id, dest,
		       dup, late);
	tot.sent += count;
	tot.delivered += got;
	tot.dup += dup;
	tot.late += late;
	(void)lost;
	free(v);
	free(idx);
}

static bool has_sent(const struct report *r, uint64_t dest)
{
	for (size_t i = 0; i < r->nsent; i++)
		if (r->sent[i].dest == dest)
			return true;
	return false;
}

/*
 * A message whose sender has no report line for its destination (killed
 * before its first report with that line) still counts: find such pairs
 * in what the receivers got.
 */
static void orphans(bool relay_ok, bool verbose)
{
	for (size_t h = 0; h < nrep; h++) {
		for (size_t i = 0; i < rep[h].nrecv; i++) {
			const struct recv *c = &rep[h].recv[i];
			bool found = false;

			for (size_t k = 0; k < nrep; k++) {
				if (rep[k].id != c->origin ||
				    rep[k].inc != c->inc)
					continue;
				found = true;
				if (!has_sent(&rep[k], rep[h].id)) {
					rep[k].sent = grow(rep[k].sent,
							   rep[k].nsent,
							   sizeof(struct sent));
					rep[k].sent[rep[k].nsent++] =
						(struct sent){
							.dest = rep[h].id };
				}
			}
			if (!found) {
				/* A sender with no report at all. */
				rep = grow(rep, nrep, sizeof(*rep));
				memset(&rep[nrep], 0, sizeof(*rep));
				rep[nrep].path = strdup("(no report)");
				rep[nrep].id = c->origin;
				rep[nrep].inc = c->inc;
				rep[nrep].killed = true;
				nrep++;
				/* rep moved: start over */
				h = (size_t)-1;
				break;
			}
		}
	}
	(void)relay_ok;
	(void)verbose;
}

static void usage(void)
{
	fprintf(stderr, "Usage: seqcheck [--relay-loss-ok] [--verbose] "
		"[--rss-limit-kb N] REPORT...\n");
}

int main(int argc, char *argv[])
{
	bool relay_ok = false, verbose = false, fail = false;
	size_t rss_limit = 0;
	int i;

	for (i = 1; i < argc && argv[i][0] == '-'; i++) {
		if (!strcmp(argv[i], "--relay-loss-ok"))
			relay_ok = true;
		else if (!strcmp(argv[i], "--verbose"))
			verbose = true;
		else if (!strcmp(argv[i], "--rss-limit-kb") && i + 1 < argc)
			rss_limit = strtoull(argv[++i], NULL, 10);
		else
			return usage(), 2;
	}
	if (i == argc)
		return usage(), 2;
	for (; i < argc; i++) {
		rep = grow(rep, nrep, sizeof(*rep));
		if (load(argv[i], &rep[nrep]))
			return 2;
		nrep++;
	}
	orphans(relay_ok, verbose);
	for (size_t r = 0; r < nrep; r++) {
		tot.bad += rep[r].bad;
		for (size_t k = 0; k < rep[r].nsent; k++) {
			pair((int)r, rep[r].sent[k].dest,
			     rep[r].sent[k].count, relay_ok, verbose);
			tot.unsent += rep[r].sent[k].unsent;
		}
	}
	/* Peak memory per node id, over all its processes. */
	for (size_t r = 0; r < nrep; r++) {
		size_t hwm = 0, rss = 0, procs = 0, killed = 0;
		bool first = true;

		for (size_t k = 0; k < nrep; k++) {
			if (rep[k].id != rep[r].id)
				continue;
			if (k < r)
				first = false;
			procs++;
			killed += rep[k].killed;
			if (rep[k].hwm_kb > hwm)
				hwm = rep[k].hwm_kb;
			if (rep[k].rss_max_kb > rss)
				rss = rep[k].rss_max_kb;
		}
		if (!first)
			continue;
		printf("node %016" PRIx64 ": %zu process%s (%zu killed), peak "
		       "RSS %zu kB sampled, VmHWM %zu kB\n", rep[r].id, procs,
		       procs == 1 ? "" : "es", killed, rss, hwm);
		if (rss_limit && hwm > rss_limit) {
			printf("  over the limit of %zu kB\n", rss_limit);
			fail = true;
		}
	}
	printf("check: sent=%" PRIu64 " delivered=%" PRIu64 " lost_killed=%"
	       PRIu64 " lost_relay=%" PRIu64 " lost_live=%" PRIu64
	       " duplicated=%" PRIu64 " reordered=%" PRIu64 " corrupt=%"
	       PRIu64 " reported_unsent=%" PRIu64 "\n", tot.sent,
	       tot.delivered, tot.lost_killed, tot.lost_relay, tot.lost_live,
	       tot.dup, tot.late, tot.bad, tot.unsent);
	if (tot.lost_live || tot.dup || tot.late || tot.bad ||
	    (tot.lost_relay && !relay_ok))
		fail = true;
	return fail ? 1 : 0;
}
