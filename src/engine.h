/* SPDX-License-Identifier: MIT */
/*
 * The engine: one small interface, one file per backend (engine_uring.c,
 * engine_epoll.c). The core asks for operations on file descriptors; each
 * operation completes exactly once, later, from inside engine_ops.wait(),
 * through core_complete(n, tag, res) with res >= 0 or -errno, like an
 * io_uring CQE. The epoll backend emulates that completion model.
 *
 * A tag is opaque to the engine; the core packs slot, generation and
 * operation into it so that completions for a freed slot are recognised as
 * stale and dropped.
 *
 * Buffers passed to recv and send must stay valid until the completion: for
 * io_uring the kernel writes into them asynchronously.
 */
#ifndef PM_ENGINE_H
#define PM_ENGINE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct pm_node;
struct engine;

struct engine_ops {
	const char *name;
	/* Creates the backend. 0, or -errno (io_uring refused: -EPERM, ...). */
	int (*init)(struct engine **e, struct pm_node *n, unsigned entries);
	void (*fini)(struct engine *e);
	/* Accepts on listen_fd until fini; each new socket completes with
	 * res = the accepted fd (non-blocking, close-on-exec) or -errno. */
	int (*accept)(struct engine *e, int listen_fd, uint64_t tag);
	/* Connects non-blocking socket fd. res = 0 or -errno. */
	int (*connect)(struct engine *e, int fd, const struct sockaddr *sa,
		       socklen_t salen, uint64_t tag);
	/* Receives up to len bytes into buf. res = bytes, 0 at EOF, -errno. */
	int (*recv)(struct engine *e, int fd, void *buf, size_t len,
		    uint64_t tag);
	/* Sends up to len bytes from buf (short sends happen). res = bytes
	 * sent or -errno. The core keeps at most one send in flight per fd. */
	int (*send)(struct engine *e, int fd, const void *buf, size_t len,
		    uint64_t tag);
	/* One-shot readability of fd. res = poll mask or -errno. */
	int (*poll_in)(struct engine *e, int fd, uint64_t tag);
	/* Cancels every operation in flight on fd. Each still completes once,
	 * with -ECANCELED or its own result. The fd stays open. */
	int (*cancel)(struct engine *e, int fd);
	/* Submits what was asked, waits up to timeout_ms (-1: forever) for at
	 * least one completion, dispatches all that are ready. Returns the
	 * number dispatched or -errno (-EINTR, -ETIME are not errors: 0). */
	int (*wait)(struct engine *e, int timeout_ms);
};

extern const struct engine_ops engine_uring_ops;
extern const struct engine_ops engine_epoll_ops;

/* The io_uring setup flags the kernel granted (for logs and tests). */
unsigned engine_uring_setup_flags(const struct engine *e);

/* Implemented by the core (node.c): one completion. */
void core_complete(struct pm_node *n, uint64_t tag, int res);

#endif
