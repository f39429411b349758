/* SPDX-License-Identifier: MIT */
/*
 * `pairmesh node --metrics [HOST:]PORT`: the node's counters over HTTP in
 * the Prometheus text exposition format (version 0.0.4), at GET /metrics.
 *
 * The server lives in the node's loop: its sockets are non-blocking and sit
 * in an epoll set of their own, which the node watches as one descriptor
 * (pm_watch_fd). A client that is slow or silent costs one slot until its
 * deadline, never a blocked loop. Each response closes the connection.
 */
#ifndef PM_METRICS_H
#define PM_METRICS_H

#include <stdbool.h>
#include <stdio.h>
#include <sys/socket.h>

#include "pairmesh.h"

struct metrics;

/* Writes more metric families (the tool's own) into the scrape. */
typedef void (*metrics_extra_fn)(FILE *f, void *user);

/*
 * "PORT" (127.0.0.1), "HOST:PORT", "[V6]:PORT". Returns 0 and fills *ss,
 * or -EINVAL (":PORT" too: say 0.0.0.0 or [::] to serve every interface).
 */
int metrics_parse(const char *spec, struct sockaddr_storage *ss,
		  socklen_t *len);

/*
 * Binds spec and serves n's counters from n's loop. Returns 0 and sets
 * *out, -EINVAL for a bad spec, -EADDRINUSE, -ENOSPC when n has no watch
 * slot left, or -errno.
 */
int metrics_start(struct metrics **out, struct pm_node *n, const char *spec,
		  metrics_extra_fn extra, void *user);

/* Writes the bound "HOST:PORT" into buf. Returns its length or -ENOSPC. */
int metrics_addr(const struct metrics *m, char *buf, size_t len);

/* True when bound to a loopback address. */
bool metrics_loopback(const struct metrics *m);

/* Closes the listener and every client. NULL is fine. */
void metrics_stop(struct metrics *m);

/* pm_mesh_peers() into a malloc'ed array (also --stats' source); NULL when
 * out of memory. */
struct pm_peer_info *metrics_mesh_peers(struct pm_node *n, size_t *count);

#endif
