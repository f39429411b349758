/* SPDX-License-Identifier: MIT */
/*
 * The io_uring backend: each engine operation is one SQE whose user_data is
 * the core's tag, and each CQE is one completion. Two operations need
 * backend state: the persistent accept (a multishot accept, re-armed when
 * the kernel ends it) and connect (the sockaddr lives in a small pool until
 * the CQE). Tag 0 is ours: the CQEs of cancel requests are never dispatched.
 *
 * One thread owns the ring (SINGLE_ISSUER), so nothing here locks.
 */
#include <errno.h>
#include <poll.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"
#include "uring_compat.h"

#define MAX_LISTENERS	8
#define CONNECT_SLOTS	256	/* connects in flight at once */
#define REAP_BATCH	64	/* CQEs copied out before dispatching */
#define ARRAY_LEN(a)	(sizeof(a) / sizeof((a)[0]))
#define ACCEPT_FLAGS	(SOCK_NONBLOCK | SOCK_CLOEXEC)
#define MAX_IO		INT32_MAX	/* sqe->len: 32 bits; cqe->res: int */

struct listener {
	int fd;
	bool active;
	bool rearm;		/* no SQE was free: re-arm at the next wait */
	uint64_t tag;
};

struct connect_slot {
	struct sockaddr_storage ss;
	uint64_t tag;
	int next_free;
};

struct engine {
	struct io_uring ring;
	struct pm_node *n;
	unsigned setup_flags;
	bool single_accept;	/* kernel without multishot accept (< 5.19) */
	unsigned nlisteners;	/* active ones */
	struct listener lis[MAX_LISTENERS];
	/* Busy connect slots are listed in busy[] so a CQE scans only them. */
	int conn_free;
	unsigned nbusy;
	int busy[CONNECT_SLOTS];
	struct connect_slot conn[CONNECT_SLOTS];
};

/* Tried in order: the fast modes need 6.1 and 5.19. */
static const unsigned setup_tries[] = {
	IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN |
		IORING_SETUP_SUBMIT_ALL,
	IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG |
		IORING_SETUP_SUBMIT_ALL,
	0,
};

static const int needed_ops[] = {
	IORING_OP_ACCEPT, IORING_OP_CONNECT, IORING_OP_RECV, IORING_OP_SEND,
	IORING_OP_POLL_ADD, IORING_OP_ASYNC_CANCEL,
};

/* Returns a free SQE, submitting what is queued when the SQ is full. */
static struct io_uring_sqe *get_sqe(struct engine *e)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&e->ring);

	if (sqe)
		return sqe;
	if (io_uring_submit(&e->ring) < 0)
		return NULL;
	return io_uring_get_sqe(&e->ring);
}

static int probe_ops(struct io_uring *ring)
{
	struct io_uring_probe *p = io_uring_get_probe_ring(ring);
	int r = 0;

	if (!p)
		return -EOPNOTSUPP;
	for (size_t i = 0; i < ARRAY_LEN(needed_ops); i++) {
		if (!io_uring_opcode_supported(p, needed_ops[i]))
			r = -EOPNOTSUPP;
	}
	io_uring_free_probe(p);
	return r;
}

static int setup_ring(struct engine *e, unsigned entries)
{
	struct io_uring_params p;
	int r = -EINVAL;

	for (size_t i = 0; i < ARRAY_LEN(setup_tries); i++) {
		memset(&p, 0, sizeof(p));
		p.flags = setup_tries[i] | IORING_SETUP_CQSIZE;
		/* Overflowing the CQ is slow: room for 4 CQEs per SQE. */
		p.cq_entries = 4 * entries;
		r = io_uring_queue_init_params(entries, &e->ring, &p);
		if (r != -EINVAL) {
			if (!r)
				e->setup_flags = p.flags;
			return r;
		}
	}
	return r;
}

static int uring_init(struct engine **ep, struct pm_node *n, unsigned entries)
{
	struct engine *e;
	int r;

	if (!entries)
		entries = 256;
	e = calloc(1, sizeof(*e));
	if (!e)
		return -ENOMEM;
	e->n = n;
	r = setup_ring(e, entries);
	if (r)
		goto out_free;
	r = probe_ops(&e->ring);
	if (r)
		goto out_exit;
	/* Saves an fd lookup per io_uring_enter; optional (5.18). */
	(void)io_uring_register_ring_fd(&e->ring);
	for (int i = 0; i < CONNECT_SLOTS; i++)
		e->conn[i].next_free = i + 1 < CONNECT_SLOTS ? i + 1 : -1;
	e->conn_free = 0;
	*ep = e;
	return 0;

out_exit:
	io_uring_queue_exit(&e->ring);
out_free:
	free(e);
	return r;
}

static void uring_fini(struct engine *e)
{
	if (!e)
		return;
	/*
	 * Closing the ring cancels what is in flight; the kernel stops
	 * touching our buffers, and nothing more is dispatched.
	 */
	io_uring_queue_exit(&e->ring);
	free(e);
}

static bool arm_accept(struct engine *e, struct listener *l)
{
	struct io_uring_sqe *sqe = get_sqe(e);

	if (!sqe) {
		l->rearm = true;
		return false;
	}
	if (e->single_accept)
		io_uring_prep_accept(sqe, l->fd, NULL, NULL, ACCEPT_FLAGS);
	else
		io_uring_prep_multishot_accept(sqe, l->fd, NULL, NULL,
					       ACCEPT_FLAGS);
	io_uring_sqe_set_data64(sqe, l->tag);
	l->rearm = false;
	return true;
}

static int uring_accept(struct engine *e, int listen_fd, uint64_t tag)
{
	struct listener *l = NULL;

	for (int i = 0; i < MAX_LISTENERS; i++) {
		if (!e->lis[i].active) {
			l = &e->lis[i];
			break;
		}
	}
	if (!l)
		return -ENOSPC;
	l->fd = listen_fd;
	l->tag = tag;
	if (!arm_accept(e, l))
		return -EBUSY;
	l->active = true;
	e->nlisteners++;
	return 0;
}

static int uring_connect(struct engine *e, int fd, const struct sockaddr *sa,
			 socklen_t salen, uint64_t tag)
{
	struct io_uring_sqe *sqe;
	struct connect_slot *c;
	int i = e->conn_free;

	if (salen > sizeof(c->ss))
		return -EINVAL;
	if (i < 0)
		return -EAGAIN;
	sqe = get_sqe(e);
	if (!sqe)
		return -EBUSY;
	c = &e->conn[i];
	e->conn_free = c->next_free;
	e->busy[e->nbusy++] = i;
	/* The kernel may read the address after this call returns. */
	memcpy(&c->ss, sa, salen);
	c->tag = tag;
	io_uring_prep_connect(sqe, fd, (struct sockaddr *)&c->ss, salen);
	io_uring_sqe_set_data64(sqe, tag);
	return 0;
}

static int uring_recv(struct engine *e, int fd, void *buf, size_t len,
		      uint64_t tag)
{
	struct io_uring_sqe *sqe = get_sqe(e);

	if (!sqe)
		return -EBUSY;
	io_uring_prep_recv(sqe, fd, buf, len < MAX_IO ? len : MAX_IO, 0);
	io_uring_sqe_set_data64(sqe, tag);
	return 0;
}

static int uring_send(struct engine *e, int fd, const void *buf, size_t len,
		      uint64_t tag)
{
	struct io_uring_sqe *sqe = get_sqe(e);

	if (!sqe)
		return -EBUSY;
	io_uring_prep_send(sqe, fd, buf, len < MAX_IO ? len : MAX_IO,
			   MSG_NOSIGNAL);
	io_uring_sqe_set_data64(sqe, tag);
	return 0;
}

static int uring_poll_in(struct engine *e, int fd, uint64_t tag)
{
	struct io_uring_sqe *sqe = get_sqe(e);

	if (!sqe)
		return -EBUSY;
	io_uring_prep_poll_add(sqe, fd, POLLIN);
	io_uring_sqe_set_data64(sqe, tag);
	return 0;
}

static int uring_cancel(struct engine *e, int fd)
{
	struct io_uring_sqe *sqe = get_sqe(e);

	if (!sqe)
		return -EBUSY;
	/* Each cancelled request posts its own -ECANCELED CQE. */
	io_uring_prep_cancel_fd(sqe, fd, IORING_ASYNC_CANCEL_ALL);
	io_uring_sqe_set_data64(sqe, 0);
	return 0;
}

/* A multishot accept ended; says whether to arm it again. */
static bool accept_goes_on(struct engine *e, int res)
{
	switch (res) {
	case -ECANCELED:
	case -EBADF:
	case -ENOTSOCK:
	case -EOPNOTSUPP:
		return false;
	case -EINVAL:
		/*
		 * Before 5.19 multishot accept is EINVAL: go one-shot. The
		 * taskrun setup flags came with 5.19, so they rule it out.
		 */
		if (e->single_accept || (e->setup_flags &
		    (IORING_SETUP_COOP_TASKRUN | IORING_SETUP_DEFER_TASKRUN)))
			return false;
		e->single_accept = true;
		return true;
	default:
		/* An fd, or a transient error (EMFILE, ENOBUFS, ...). */
		return true;
	}
}

static void accept_cqe(struct engine *e, struct listener *l, int res,
		       unsigned flags)
{
	if (flags & IORING_CQE_F_MORE)
		return;
	if (accept_goes_on(e, res)) {
		arm_accept(e, l);
	} else {
		l->active = false;
		e->nlisteners--;
	}
}

static void connect_cqe(struct engine *e, uint64_t tag)
{
	for (unsigned i = 0; i < e->nbusy; i++) {
		int s = e->busy[i];

		if (e->conn[s].tag != tag)
			continue;
		e->busy[i] = e->busy[--e->nbusy];
		e->conn[s].next_free = e->conn_free;
		e->conn_free = s;
		return;
	}
}

/* Backend bookkeeping for one CQE, before the core sees it. */
static void cqe_seen(struct engine *e, uint64_t tag, int res, unsigned flags)
{
	if (e->nlisteners) {
		for (int i = 0; i < MAX_LISTENERS; i++) {
			struct listener *l = &e->lis[i];

			if (l->active && l->tag == tag) {
				accept_cqe(e, l, res, flags);
				return;
			}
		}
	}
	if (e->nbusy)
		connect_cqe(e, tag);
}

struct done {
	uint64_t tag;
	int res;
	unsigned flags;
};

/* Our own CQEs: cancels, and liburing's timeouts on pre-5.11 kernels. */
static bool internal(const struct engine *e, uint64_t tag)
{
	return !tag || (tag == LIBURING_UDATA_TIMEOUT &&
			!(e->ring.features & IORING_FEAT_EXT_ARG));
}

/*
 * Dispatches the CQEs that are ready. They are copied out and the CQ
 * advanced before the core runs: the core queues new SQEs from inside
 * core_complete, and no CQE may be seen twice.
 */
static int reap(struct engine *e)
{
	struct done d[REAP_BATCH];
	unsigned budget = e->ring.cq.ring_entries;
	int dispatched = 0;

	while (budget) {
		struct io_uring_cqe *cqe;
		unsigned head, nr = 0;

		io_uring_for_each_cqe(&e->ring, head, cqe) {
			d[nr].tag = cqe->user_data;
			d[nr].res = cqe->res;
			d[nr].flags = cqe->flags;
			if (++nr == REAP_BATCH)
				break;
		}
		if (!nr)
			break;
		io_uring_cq_advance(&e->ring, nr);
		for (unsigned i = 0; i < nr; i++) {
			if (internal(e, d[i].tag))
				continue;
			cqe_seen(e, d[i].tag, d[i].res, d[i].flags);
			core_complete(e->n, d[i].tag, d[i].res);
			dispatched++;
		}
		/* Bounded: without DEFER_TASKRUN CQEs keep arriving. */
		budget = nr < budget ? budget - nr : 0;
	}
	return dispatched;
}

static int uring_wait(struct engine *e, int timeout_ms)
{
	struct io_uring_cqe *cqe;
	int r;

	for (int i = 0; i < MAX_LISTENERS; i++) {
		if (e->lis[i].active && e->lis[i].rearm)
			arm_accept(e, &e->lis[i]);
	}
	if (timeout_ms == 0) {
		/*
		 * With DEFER_TASKRUN a submit that waits for nothing never
		 * runs the completions; GETEVENTS in the same enter does.
		 */
		r = io_uring_submit_and_get_events(&e->ring);
	} else if (timeout_ms < 0) {
		r = io_uring_submit_and_wait_timeout(&e->ring, &cqe, 1, NULL,
						     NULL);
	} else {
		struct __kernel_timespec ts = {
			.tv_sec = timeout_ms / 1000,
			.tv_nsec = (long long)(timeout_ms % 1000) * 1000000,
		};

		r = io_uring_submit_and_wait_timeout(&e->ring, &cqe, 1, &ts,
						     NULL);
	}
	/* EBUSY: the CQ overflowed; reaping is exactly what helps. */
	if (r < 0 && r != -ETIME && r != -EINTR && r != -EAGAIN &&
	    r != -EBUSY)
		return r;
	return reap(e);
}

const struct engine_ops engine_uring_ops = {
	.name = "io_uring",
	.init = uring_init,
	.fini = uring_fini,
	.accept = uring_accept,
	.connect = uring_connect,
	.recv = uring_recv,
	.send = uring_send,
	.poll_in = uring_poll_in,
	.cancel = uring_cancel,
	.wait = uring_wait,
};

/* For tests and logs: the setup flags the kernel accepted. */
unsigned engine_uring_setup_flags(const struct engine *e)
{
	return e->setup_flags;
}
