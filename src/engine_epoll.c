/* SPDX-License-Identifier: MIT */
/*
 * The epoll backend emulates io_uring's completion model. Each fd is
 * registered once, edge-triggered, and has one entry in a table indexed by
 * fd (sized at init, nothing allocated per operation). An entry remembers
 * whether the fd is readable/writable (set by events, cleared by EAGAIN)
 * and holds one slot per kind of operation: idle, pending, or done with a
 * result waiting to be dispatched. Because results wait in their slot, the
 * completion queue is a list of entries and can never overflow.
 *
 * wait() first runs the operations asked while their fd was already ready
 * (the edge has passed, no event will come), then epoll_wait()s, performs
 * the syscalls the events allow, and dispatches the done slots.
 *
 * fd numbers are reused: the core may close an idle fd without telling the
 * engine. accept and connect produce fresh sockets, so they drop whatever a
 * closed fd of the same number left in its entry; poll_in re-checks the
 * registration (watched fds belong to the user).
 */
#include <errno.h>
#include <poll.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <unistd.h>

#include "engine.h"

#define MAX_FDS		(1 << 20)
#define MAX_EVENTS	256
#define ACCEPT_BATCH	64	/* accepts per listener per turn: fairness */
#define ACCEPT_FLAGS	(SOCK_NONBLOCK | SOCK_CLOEXEC)
#define EP_EVENTS	(EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET)

/* Slots, in dispatch order. */
enum {
	S_ACCEPTED,	/* this fd came from accept: res is the fd */
	S_ACCEPT,	/* the listener's accept failed or was cancelled */
	S_CONNECT,
	S_RECV,
	S_SEND,
	S_POLL,
	NSLOTS,
};

enum { IDLE, PENDING, DONE };

enum {
	F_REG = 1 << 0,		/* in the epoll set */
	F_IN = 1 << 1,		/* readable until a syscall says EAGAIN */
	F_OUT = 1 << 2,		/* writable until a syscall says EAGAIN */
	F_ACCEPTING = 1 << 3,	/* a listener with accept armed */
	F_RUNQ = 1 << 4,	/* on the run list */
	F_DONEQ = 1 << 5,	/* on the done list */
	F_ENDING = 1 << 6,	/* an event said hang-up or error: no more
				 * edges will come for what is pending */
};

struct fdent {
	uint64_t tag[NSLOTS];
	int res[NSLOTS];
	uint8_t st[NSLOTS];
	uint8_t flags;
	void *rbuf;
	const void *sbuf;
	size_t rlen;
	size_t slen;
	int next_run;
	int next_done;
};

/* A FIFO of fds threaded through the entries. */
struct fdlist {
	int head;
	int tail;
};

struct engine {
	struct pm_node *n;
	int epfd;
	int nfds;
	struct fdlist run;
	struct fdlist done;
	struct fdent *fds;
};

static int ep_init(struct engine **ep, struct pm_node *n, unsigned entries)
{
	struct rlimit rl;
	struct engine *e;
	int r;

	e = calloc(1, sizeof(*e));
	if (!e)
		return -ENOMEM;
	e->n = n;
	e->nfds = MAX_FDS;
	if (!getrlimit(RLIMIT_NOFILE, &rl) && rl.rlim_cur < MAX_FDS)
		e->nfds = (int)rl.rlim_cur;
	/* Untouched pages of a large calloc cost nothing. */
	e->fds = calloc((size_t)e->nfds, sizeof(*e->fds));
	if (!e->fds) {
		r = -ENOMEM;
		goto out_free;
	}
	e->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (e->epfd < 0) {
		r = -errno;
		goto out_free_fds;
	}
	e->run.head = e->run.tail = -1;
	e->done.head = e->done.tail = -1;
	*ep = e;
	return 0;

out_free_fds:
	free(e->fds);
out_free:
	free(e);
	return r;
}

static void ep_fini(struct engine *e)
{
	if (!e)
		return;
	close(e->epfd);
	free(e->fds);
	free(e);
}

/* 0, or why fd has no entry. */
static int check_fd(const struct engine *e, int fd)
{
	if (fd < 0)
		return -EBADF;
	return fd < e->nfds ? 0 : -EMFILE;
}

static void run_push(struct engine *e, int fd)
{
	struct fdent *f = &e->fds[fd];

	if (f->flags & F_RUNQ)
		return;
	f->flags |= F_RUNQ;
	f->next_run = -1;
	if (e->run.tail >= 0)
		e->fds[e->run.tail].next_run = fd;
	else
		e->run.head = fd;
	e->run.tail = fd;
}

static void done_push(struct engine *e, int fd)
{
	struct fdent *f = &e->fds[fd];

	if (f->flags & F_DONEQ)
		return;
	f->flags |= F_DONEQ;
	f->next_done = -1;
	if (e->done.tail >= 0)
		e->fds[e->done.tail].next_done = fd;
	else
		e->done.head = fd;
	e->done.tail = fd;
}

static void finish(struct engine *e, int fd, int slot, int res)
{
	struct fdent *f = &e->fds[fd];

	f->st[slot] = DONE;
	f->res[slot] = res;
	done_push(e, fd);
}

/* Every operation still pending on fd completes now with res. */
static void fail_pending(struct engine *e, int fd, int res)
{
	struct fdent *f = &e->fds[fd];

	for (int s = S_CONNECT; s < NSLOTS; s++) {
		if (f->st[s] == PENDING)
			finish(e, fd, s, res);
	}
	if (f->flags & F_ACCEPTING) {
		f->flags &= ~F_ACCEPTING;
		/* A failure not yet dispatched is superseded. */
		finish(e, fd, S_ACCEPT, res);
	}
}

/*
 * fd is a socket just created: whatever its entry holds belongs to a
 * closed fd of the same number, whose epoll registration died with it.
 */
static void forget(struct engine *e, int fd)
{
	fail_pending(e, fd, -EBADF);
	e->fds[fd].flags &= ~(F_REG | F_IN | F_OUT | F_ENDING);
}

/*
 * Adds fd to the epoll set once. Until the first event, the fd is assumed
 * ready: every syscall tried on that guess is safe (EAGAIN clears it), and
 * data already there is read without a round trip.
 */
static int reg(struct engine *e, int fd, bool recheck)
{
	struct epoll_event ev = { .events = EP_EVENTS, .data.u64 = fd };
	struct fdent *f = &e->fds[fd];
	int op = EPOLL_CTL_ADD;

	if ((f->flags & F_REG) && !recheck)
		return 0;
	if (f->flags & F_REG)
		op = EPOLL_CTL_MOD;
	for (;;) {
		if (!epoll_ctl(e->epfd, op, fd, &ev))
			break;
		if (op == EPOLL_CTL_ADD && errno == EEXIST)
			op = EPOLL_CTL_MOD;
		else if (op == EPOLL_CTL_MOD && errno == ENOENT)
			op = EPOLL_CTL_ADD;
		else
			return -errno;
	}
	/* A fresh ADD or MOD polls the file again: an EOF or error still
	 * pending comes back as an event, which sets F_ENDING again. */
	f->flags = (f->flags & ~F_ENDING) | F_REG | F_IN | F_OUT;
	return 0;
}

static void do_accept(struct engine *e, int fd)
{
	struct fdent *f = &e->fds[fd];

	for (int i = 0; i < ACCEPT_BATCH; i++) {
		int c;

		/* A failure waits for its dispatch before the next try. */
		if (f->st[S_ACCEPT] == DONE)
			return;
		c = accept4(fd, NULL, NULL, ACCEPT_FLAGS);
		if (c < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK) {
				f->flags &= ~F_IN;
				return;
			}
			/* The peer left before we took it: nothing to say. */
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			finish(e, fd, S_ACCEPT, -errno);
			return;
		}
		if (c >= e->nfds) {
			close(c);
			finish(e, fd, S_ACCEPT, -EMFILE);
			return;
		}
		forget(e, c);
		e->fds[c].tag[S_ACCEPTED] = f->tag[S_ACCEPT];
		finish(e, c, S_ACCEPTED, c);
	}
	/* Still readable: the rest at the next turn, after the others. */
	run_push(e, fd);
}

static void do_connect(struct engine *e, int fd)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(int);
	int err = 0;

	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
		err = errno;
	if (!err) {
		len = sizeof(ss);
		if (getpeername(fd, (struct sockaddr *)&ss, &len) < 0) {
			/* Woken early (a stale edge): still connecting. */
			if (errno == ENOTCONN) {
				e->fds[fd].flags &= ~F_OUT;
				return;
			}
			err = errno;
		}
	}
	finish(e, fd, S_CONNECT, -err);
}

static void do_recv(struct engine *e, int fd)
{
	struct fdent *f = &e->fds[fd];
	ssize_t r;

	do {
		r = recv(fd, f->rbuf, f->rlen, MSG_DONTWAIT);
	} while (r < 0 && errno == EINTR);
	if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
		f->flags &= ~F_IN;
		return;
	}
	/* A short read emptied the socket: data arriving after it raises a
	 * new edge, so the next recv waits for that instead of spending a
	 * syscall to learn EAGAIN. Not once the peer's FIN or an error has
	 * been signalled: a read stops short before the EOF or the error,
	 * which the next recv returns, and no edge will announce them. */
	if (r > 0 && (size_t)r < f->rlen && !(f->flags & F_ENDING))
		f->flags &= ~F_IN;
	finish(e, fd, S_RECV, r < 0 ? -errno : (int)r);
}

static void do_send(struct engine *e, int fd)
{
	struct fdent *f = &e->fds[fd];
	ssize_t r;

	do {
		r = send(fd, f->sbuf, f->slen, MSG_NOSIGNAL | MSG_DONTWAIT);
	} while (r < 0 && errno == EINTR);
	if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
		f->flags &= ~F_OUT;
		return;
	}
	finish(e, fd, S_SEND, r < 0 ? -errno : (int)r);
}

/* An event may be stale or a guess: poll() gives the real mask. */
static void do_poll(struct engine *e, int fd)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	int r = poll(&p, 1, 0);

	if (r < 0) {
		if (errno != EINTR)
			finish(e, fd, S_POLL, -errno);
	} else if (r == 0) {
		e->fds[fd].flags &= ~F_IN;
	} else if (p.revents & POLLNVAL) {
		finish(e, fd, S_POLL, -EBADF);
	} else {
		finish(e, fd, S_POLL, p.revents);
	}
}

/* Performs what fd's readiness allows. */
static void run_fd(struct engine *e, int fd)
{
	struct fdent *f = &e->fds[fd];

	if ((f->flags & (F_ACCEPTING | F_IN)) == (F_ACCEPTING | F_IN))
		do_accept(e, fd);
	if (f->st[S_CONNECT] == PENDING && (f->flags & F_OUT))
		do_connect(e, fd);
	if (f->st[S_RECV] == PENDING && (f->flags & F_IN))
		do_recv(e, fd);
	if (f->st[S_SEND] == PENDING && (f->flags & F_OUT) &&
	    f->st[S_CONNECT] != PENDING)
		do_send(e, fd);
	if (f->st[S_POLL] == PENDING && (f->flags & F_IN))
		do_poll(e, fd);
}

static bool ready_for(const struct fdent *f, int slot)
{
	if (slot == S_SEND)
		return f->flags & F_OUT;
	return f->flags & F_IN;
}

/* Makes slot pending; runs at the next wait if fd is already ready. */
static int arm(struct engine *e, int fd, int slot, uint64_t tag)
{
	struct fdent *f = &e->fds[fd];
	int r;

	if (f->st[slot] != IDLE)
		return -EBUSY;
	r = reg(e, fd, false);
	if (r)
		return r;
	f->tag[slot] = tag;
	f->st[slot] = PENDING;
	if (ready_for(f, slot))
		run_push(e, fd);
	return 0;
}

static int ep_accept(struct engine *e, int listen_fd, uint64_t tag)
{
	struct fdent *f;
	int r;

	r = check_fd(e, listen_fd);
	if (r)
		return r;
	f = &e->fds[listen_fd];
	if ((f->flags & F_ACCEPTING) || f->st[S_ACCEPT] != IDLE)
		return -EBUSY;
	r = reg(e, listen_fd, false);
	if (r)
		return r;
	f->tag[S_ACCEPT] = tag;
	f->flags |= F_ACCEPTING;
	run_push(e, listen_fd);
	return 0;
}

static int ep_connect(struct engine *e, int fd, const struct sockaddr *sa,
		      socklen_t salen, uint64_t tag)
{
	struct fdent *f;
	int r;

	r = check_fd(e, fd);
	if (r)
		return r;
	f = &e->fds[fd];
	forget(e, fd);
	if (f->st[S_CONNECT] != IDLE)
		return -EBUSY;
	f->tag[S_CONNECT] = tag;
	if (!connect(fd, sa, salen)) {
		finish(e, fd, S_CONNECT, 0);
		return 0;
	}
	/* After EINTR the connect goes on in the background, as here. */
	if (errno != EINPROGRESS && errno != EINTR) {
		finish(e, fd, S_CONNECT, -errno);
		return 0;
	}
	r = reg(e, fd, false);
	if (r)
		return r;
	/* Writable means connected: no guessing here. */
	f->flags &= ~F_OUT;
	f->st[S_CONNECT] = PENDING;
	return 0;
}

static int ep_recv(struct engine *e, int fd, void *buf, size_t len,
		   uint64_t tag)
{
	struct fdent *f;
	int r;

	r = check_fd(e, fd);
	if (r)
		return r;
	f = &e->fds[fd];
	if (f->st[S_RECV] != IDLE)
		return -EBUSY;
	/* The result is an int, as in a CQE. */
	f->rbuf = buf;
	f->rlen = len < INT32_MAX ? len : INT32_MAX;
	return arm(e, fd, S_RECV, tag);
}

static int ep_send(struct engine *e, int fd, const void *buf, size_t len,
		   uint64_t tag)
{
	struct fdent *f;
	int r;

	r = check_fd(e, fd);
	if (r)
		return r;
	f = &e->fds[fd];
	if (f->st[S_SEND] != IDLE)
		return -EBUSY;
	f->sbuf = buf;
	f->slen = len < INT32_MAX ? len : INT32_MAX;
	return arm(e, fd, S_SEND, tag);
}

static bool no_ops(const struct fdent *f)
{
	for (int s = S_CONNECT; s < NSLOTS; s++) {
		if (f->st[s] == PENDING)
			return false;
	}
	return !(f->flags & F_ACCEPTING);
}

static int ep_poll_in(struct engine *e, int fd, uint64_t tag)
{
	struct fdent *f;
	int r;

	r = check_fd(e, fd);
	if (r)
		return r;
	f = &e->fds[fd];
	if (f->st[S_POLL] != IDLE)
		return -EBUSY;
	/* The user's fd may have been closed and reopened since. */
	r = reg(e, fd, no_ops(f));
	if (r == -EPERM) {
		/* A regular file (stdin redirected): always readable. */
		f->tag[S_POLL] = tag;
		finish(e, fd, S_POLL, POLLIN);
		return 0;
	}
	if (r)
		return r;
	return arm(e, fd, S_POLL, tag);
}

static int ep_cancel(struct engine *e, int fd)
{
	struct fdent *f;
	int r;

	r = check_fd(e, fd);
	if (r)
		return r;
	f = &e->fds[fd];
	fail_pending(e, fd, -ECANCELED);
	if (f->flags & F_REG)
		epoll_ctl(e->epfd, EPOLL_CTL_DEL, fd, NULL);
	f->flags &= ~(F_REG | F_IN | F_OUT | F_ENDING);
	return 0;
}

static void run_queued(struct engine *e)
{
	int fd = e->run.head;

	e->run.head = e->run.tail = -1;
	while (fd >= 0) {
		struct fdent *f = &e->fds[fd];
		int next = f->next_run;

		f->flags &= ~F_RUNQ;
		run_fd(e, fd);
		fd = next;
	}
}

/*
 * Dispatches the entries on the done list as it was on entry: what the
 * core's calls finish meanwhile (cancel, a regular file's poll) waits for
 * the next wait(), so a core that re-arms forever cannot keep us here.
 */
static int dispatch(struct engine *e)
{
	int fd = e->done.head;
	int count = 0;

	e->done.head = e->done.tail = -1;
	while (fd >= 0) {
		struct fdent *f = &e->fds[fd];
		int next = f->next_done;

		f->flags &= ~F_DONEQ;
		for (int s = 0; s < NSLOTS; s++) {
			if (f->st[s] != DONE)
				continue;
			/* Idle first: the core may ask again from inside. */
			f->st[s] = IDLE;
			core_complete(e->n, f->tag[s], f->res[s]);
			count++;
		}
		fd = next;
	}
	return count;
}

static int ep_wait(struct engine *e, int timeout_ms)
{
	struct epoll_event ev[MAX_EVENTS];
	int nev;

	run_queued(e);
	if (e->done.head >= 0 || e->run.head >= 0)
		timeout_ms = 0;
	nev = epoll_wait(e->epfd, ev, MAX_EVENTS, timeout_ms);
	if (nev < 0) {
		if (errno != EINTR)
			return -errno;
		nev = 0;
	}
	for (int i = 0; i < nev; i++) {
		uint32_t m = ev[i].events;
		int fd = (int)ev[i].data.u64;
		struct fdent *f;

		if (fd < 0 || fd >= e->nfds)
			continue;
		f = &e->fds[fd];
		/* Cancelled or forgotten: a stale event. */
		if (!(f->flags & F_REG))
			continue;
		if (m & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
			f->flags |= F_IN;
		if (m & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))
			f->flags |= F_ENDING;
		if (m & (EPOLLOUT | EPOLLHUP | EPOLLERR))
			f->flags |= F_OUT;
		run_fd(e, fd);
	}
	return dispatch(e);
}

const struct engine_ops engine_epoll_ops = {
	.name = "epoll",
	.init = ep_init,
	.fini = ep_fini,
	.accept = ep_accept,
	.connect = ep_connect,
	.recv = ep_recv,
	.send = ep_send,
	.poll_in = ep_poll_in,
	.cancel = ep_cancel,
	.wait = ep_wait,
};
