/* SPDX-License-Identifier: MIT */
/*
 * A node: configuration, the engine chosen at run time, the listener, the
 * slabs, and the loop that turns completions into callbacks.
 */
#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "node.h"

#define DEFAULT_MAX_PEERS	1024
#define DEFAULT_RING		(1u << 20)
#define DEFAULT_MAX_MESSAGE	(256u << 10)
#define MAX_PEERS_LIMIT		(1u << 20)

uint64_t node_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* To the caller's on_log, else on stderr as the library always did. */
void node_log(struct pm_node *n, enum pm_log_level level, const char *fmt, ...)
{
	char msg[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (n->cfg.on_log)
		n->cfg.on_log(n, level, msg, n->cfg.user);
	else
		fprintf(stderr, "pairmesh: %s\n", msg);
}

uint64_t make_tag(uint32_t idx, uint32_t gen, enum op op)
{
	return (uint64_t)gen << 32 | (uint64_t)(idx & 0x0fffffff) << 4 | op;
}

void pm_config_init(struct pm_config *c)
{
	memset(c, 0, sizeof(*c));
	c->listen = "127.0.0.1:0";
	c->max_peers = DEFAULT_MAX_PEERS;
	c->ring_size = DEFAULT_RING;
	c->max_message = DEFAULT_MAX_MESSAGE;
	c->max_hops = 16;
	c->keepalive_ms = 1000;
	c->dead_ms = 5000;
	c->handshake_ms = 5000;
	c->resume_ms = 5000;
	c->reconnect_max_ms = 1000;
}

const char *pm_close_reason_str(enum pm_close_reason r)
{
	static const char *const names[] = {
		[PM_CLOSE_NONE] = "none",
		[PM_CLOSE_NORMAL] = "normal",
		[PM_CLOSE_DUPLICATE] = "duplicate",
		[PM_CLOSE_BUSY] = "busy",
		[PM_CLOSE_PROTOCOL] = "protocol error",
		[PM_CLOSE_TOO_BIG] = "message too big",
		[PM_CLOSE_VERSION] = "unsupported version",
		[PM_CLOSE_SELF] = "self",
		[PM_CLOSE_ID_CONFLICT] = "id conflict",
		[PM_CLOSE_SHUTDOWN] = "shutdown",
		[PM_CLOSE_REPLACED] = "replaced",
		[PM_CLOSE_AUTH] = "authentication failed",
	};

	if ((unsigned)r < sizeof(names) / sizeof(names[0]) && names[r])
		return names[r];
	return "unknown";
}

static int check_config(const struct pm_config *c)
{
	if (!c->max_peers || c->max_peers > MAX_PEERS_LIMIT)
		return -EINVAL;
	if (!ring_size_ok(c->ring_size))
		return -EINVAL;
	if (!c->max_message || c->max_message > c->ring_size - FRAME_HDR)
		return -EINVAL;
	if (c->key && c->key_len != 32)
		return -EINVAL;
	if (c->engine != PM_ENGINE_AUTO && c->engine != PM_ENGINE_IO_URING &&
	    c->engine != PM_ENGINE_EPOLL)
		return -EINVAL;
	return 0;
}

/* PAIRMESH_ENGINE=io_uring|epoll|auto forces a backend for AUTO configs. */
static int engine_wanted(enum pm_engine cfg, enum pm_engine *out)
{
	const char *env = getenv("PAIRMESH_ENGINE");

	*out = cfg;
	if (cfg != PM_ENGINE_AUTO || !env || !*env || !strcmp(env, "auto"))
		return 0;
	if (!strcmp(env, "io_uring"))
		*out = PM_ENGINE_IO_URING;
	else if (!strcmp(env, "epoll"))
		*out = PM_ENGINE_EPOLL;
	else
		return -EINVAL;
	return 0;
}

static int start_engine(struct pm_node *n)
{
	enum pm_engine want;
	unsigned entries = 256;
	int r = engine_wanted(n->cfg.engine, &want);

	if (r)
		return r;
	if (want != PM_ENGINE_EPOLL) {
		r = engine_uring_ops.init(&n->eng, n, entries);
		if (!r) {
			n->eng_ops = &engine_uring_ops;
			return 0;
		}
		if (want == PM_ENGINE_IO_URING) {
			/* The code says "refused"; the log says why. */
			node_log(n, PM_LOG_ERROR, "io_uring refused by the "
				 "kernel (%s)", strerror(-r));
			return -EPROTONOSUPPORT;
		}
		static bool logged;

		/* Once per process: every node would say the same. */
		if (!logged) {
			logged = true;
			node_log(n, PM_LOG_WARN, "io_uring unavailable (%s), "
				 "using epoll", strerror(-r));
		}
	}
	r = engine_epoll_ops.init(&n->eng, n, entries);
	if (r)
		return r;
	n->eng_ops = &engine_epoll_ops;
	return 0;
}

static int start_listener(struct pm_node *n)
{
	struct sockaddr_storage ss;
	socklen_t len;
	int one = 1, fd, r;

	r = addr_parse(n->cfg.listen, &ss, &len);
	if (r)
		return r;
	fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
		    0);
	if (fd < 0)
		return -errno;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&ss, len) || listen(fd, 4096)) {
		r = -errno;
		goto out_close_fd;
	}
	n->listen_len = sizeof(n->listen_addr);
	if (getsockname(fd, (struct sockaddr *)&n->listen_addr,
			&n->listen_len)) {
		r = -errno;
		goto out_close_fd;
	}
	n->listen_fd = fd;
	return 0;
out_close_fd:
	close(fd);
	return r;
}

static int alloc_slabs(struct pm_node *n)
{
	n->npeers = n->cfg.max_peers + 1;
	n->self = n->cfg.max_peers;
	n->nconns = 2 * n->cfg.max_peers + 2;
	n->peers = calloc(n->npeers, sizeof(*n->peers));
	n->conns = calloc(n->nconns, sizeof(*n->conns));
	n->dirty = calloc(n->npeers, sizeof(*n->dirty));
	if (!n->peers || !n->conns || !n->dirty)
		return -ENOMEM;
	for (uint32_t i = 0; i < n->npeers; i++) {
		n->peers[i].gen = 1;
		n->peers[i].wait_slot = NONE;
		n->peers[i].next_free = i + 1 < n->self ? i + 1 : NONE;
	}
	n->peer_free = 0;
	for (uint32_t i = 0; i < n->nconns; i++) {
		n->conns[i].fd = -1;
		n->conns[i].gen = 1;
		n->conns[i].next_free = i + 1 < n->nconns ? i + 1 : NONE;
	}
	n->conn_free = 0;

	struct peer *self = &n->peers[n->self];

	self->state = PEER_SELF;
	self->live = NONE;
	self->alias_to = NONE;
	self->peer_max = n->cfg.max_message;
	return ring_map(&self->tx, n->cfg.ring_size);
}

int pm_node_create(struct pm_node **out, const struct pm_config *c)
{
	struct pm_node *n;
	int r;

	if (!out || !c)
		return -EINVAL;
	r = check_config(c);
	if (r)
		return r;
	n = calloc(1, sizeof(*n));
	if (!n)
		return -ENOMEM;
	n->cfg = *c;
	n->listen_fd = -1;
	if (c->key) {
		if (sodium_init() < 0) {
			free(n);
			return -EIO;
		}
		memcpy(n->key, c->key, sizeof(n->key));
		n->has_key = true;
		n->cfg.key = NULL;	/* the caller's buffer may go away */
	}
	for (int i = 0; i < MAX_WATCHES; i++)
		n->watches[i].fd = -1;
	if (getrandom(&n->nonce, sizeof(n->nonce), 0) != sizeof(n->nonce)) {
		r = -EIO;
		goto out_free;
	}
	n->id = c->node_id;
	while (!n->id) {
		if (getrandom(&n->id, sizeof(n->id), 0) != sizeof(n->id)) {
			r = -EIO;
			goto out_free;
		}
	}
	if (!n->cfg.max_hops)
		n->cfg.max_hops = 16;
	if (!n->cfg.handshake_ms)
		n->cfg.handshake_ms = 5000;
	if (!n->cfg.reconnect_max_ms)
		n->cfg.reconnect_max_ms = 1000;
	r = alloc_slabs(n);
	if (r)
		goto out_free;
	r = mesh_init(n);
	if (r)
		goto out_free;
	r = start_listener(n);
	if (r)
		goto out_free;
	r = start_engine(n);
	if (r)
		goto out_free;
	n->peers[n->self].id = n->id;
	r = n->eng_ops->accept(n->eng, n->listen_fd, make_tag(0, 0, OP_ACCEPT));
	if (r)
		goto out_free;
	*out = n;
	return 0;
out_free:
	pm_node_destroy(n);
	return r;
}

void pm_node_destroy(struct pm_node *n)
{
	if (!n)
		return;
	/*
	 * Stop listening now: an io_uring accept still in flight holds a
	 * reference to the socket, so close() alone would keep the port
	 * bound until the kernel tears the ring down, and a node created
	 * right after on the same address would get EADDRINUSE.
	 */
	if (n->listen_fd >= 0)
		shutdown(n->listen_fd, SHUT_RDWR);
	/* Tear the engine down first: io_uring stops touching our rings. */
	if (n->eng)
		n->eng_ops->fini(n->eng);
	for (uint32_t i = 0; n->conns && i < n->nconns; i++)
		if (n->conns[i].fd >= 0)
			close(n->conns[i].fd);
	for (uint32_t i = 0; n->peers && i < n->npeers; i++) {
		ring_unmap(&n->peers[i].tx);
		ring_unmap(&n->peers[i].rx);
	}
	if (n->listen_fd >= 0)
		close(n->listen_fd);
	mesh_fini(n);
	free(n->peers);
	free(n->conns);
	free(n->dirty);
	sodium_memzero(n->key, sizeof(n->key));
	free(n);
}

int pm_key_load(const char *path, uint8_t key[32])
{
	uint8_t buf[130];
	size_t len = 0, hex_len;
	const char *end;
	ssize_t r;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return -errno;
	while (len < sizeof(buf) &&
	       (r = read(fd, buf + len, sizeof(buf) - len)) > 0)
		len += (size_t)r;
	r = r < 0 ? -errno : 0;
	close(fd);
	if (r)
		return (int)r;
	if (len == 32) {
		memcpy(key, buf, 32);
		sodium_memzero(buf, sizeof(buf));
		return 0;
	}
	/* Hex, with whitespace around it (a trailing newline, say). */
	size_t a = 0;

	while (a < len && (buf[a] == ' ' || buf[a] == '\n' || buf[a] == '\t' ||
			   buf[a] == '\r'))
		a++;
	while (len > a && (buf[len - 1] == ' ' || buf[len - 1] == '\n' ||
			   buf[len - 1] == '\t' || buf[len - 1] == '\r'))
		len--;
	if (len - a != 64 ||
	    sodium_hex2bin(key, 32, (const char *)buf + a, len - a, NULL,
			   &hex_len, &end) || hex_len != 32) {
		sodium_memzero(buf, sizeof(buf));
		return -EINVAL;
	}
	sodium_memzero(buf, sizeof(buf));
	return 0;
}

static void watch_arm(struct pm_node *n, uint32_t i)
{
	struct watch *w = &n->watches[i];

	if (w->fd < 0 || w->armed)
		return;
	if (!n->eng_ops->poll_in(n->eng, w->fd, make_tag(i, w->gen, OP_WATCH)))
		w->armed = true;
}

static void watch_complete(struct pm_node *n, uint32_t i, uint32_t gen,
			   int res)
{
	struct watch *w = &n->watches[i];

	if (i >= MAX_WATCHES || w->gen != gen || w->fd < 0)
		return;
	w->armed = false;
	if (res >= 0 || res == -ECANCELED)
		w->fn(n, w->fd, w->user);
	if (w->gen == gen)
		watch_arm(n, i);
}

int pm_watch_fd(struct pm_node *n, int fd, pm_fd_fn fn, void *user)
{
	int free_i = -1;

	for (int i = 0; i < MAX_WATCHES; i++) {
		struct watch *w = &n->watches[i];

		if (w->fd == fd) {
			if (fn)
				return -EEXIST;
			/* A poll in flight completes later with a stale gen. */
			if (w->armed)
				n->eng_ops->cancel(n->eng, fd);
			w->fd = -1;
			w->gen++;
			w->armed = false;
			return 0;
		}
		if (w->fd < 0 && free_i < 0)
			free_i = i;
	}
	if (!fn)
		return -ENOENT;
	if (free_i < 0 || fd < 0)
		return fd < 0 ? -EBADF : -ENOSPC;
	n->watches[free_i] = (struct watch){
		.fd = fd, .gen = n->watches[free_i].gen + 1, .fn = fn,
		.user = user,
	};
	watch_arm(n, (uint32_t)free_i);
	return 0;
}

void core_complete(struct pm_node *n, uint64_t tag, int res)
{
	enum op op = (enum op)(tag & 15);
	uint32_t idx = (uint32_t)(tag >> 4) & 0x0fffffff;
	uint32_t gen = (uint32_t)(tag >> 32);

	switch (op) {
	case OP_ACCEPT:
		if (res >= 0)
			conn_accepted(n, res);
		break;
	case OP_WATCH:
		watch_complete(n, idx, gen, res);
		break;
	default:
		conn_complete(n, idx, gen, op, res);
		break;
	}
}

int pm_node_run(struct pm_node *n, int timeout_ms)
{
	int r;

	if (node_deliver_self(n))
		timeout_ms = 0;
	if (n->aliases)
		node_drain_aliases(n);
	mesh_turn(n);
	node_flush_dirty(n);
	if (n->ndirty || ring_used(&n->peers[n->self].tx))
		timeout_ms = 0;
	if (n->orphans)
		node_check_orphans(n);
	if (n->conns_used) {
		uint64_t now = node_now_ms();

		if (now >= n->next_tick_ms) {
			n->next_tick_ms = now + 100;
			conn_timers(n, now);
		}
		/* Wake up for the timers (keepalive, dead peers, handshake
		 * limits, the ACK tick) even when nothing else happens. */
		if (timeout_ms < 0 || timeout_ms > 250)
			timeout_ms = 250;
	}
	if (n->resuming) {
		node_resume_tick(n, node_now_ms());
		if (timeout_ms < 0 || timeout_ms > 25)
			timeout_ms = 25;	/* redials are due soon */
	}
	if (n->rt_active || n->rt_acks_due) {
		/* Routed sessions: acknowledgements owed, retransmit and
		 * give-up timers (route.c). */
		if (timeout_ms < 0 || timeout_ms > 50)
			timeout_ms = 50;
	}
	if (n->draining || n->orphans) {
		conn_check_deadlines(n);
		if (timeout_ms < 0 || timeout_ms > 100)
			timeout_ms = 100;	/* wake up to end drains */
	}
	r = n->eng_ops->wait(n->eng, timeout_ms);
	return r;
}

int pm_node_shutdown(struct pm_node *n, int timeout_ms)
{
	uint64_t deadline = node_now_ms() + (uint64_t)(timeout_ms < 0 ? 0 :
							    timeout_ms);

	/* No new connections from here on: no auto-dial, no redial, and
	 * inbound ones are refused (conn_accepted). */
	n->shutting_down = true;
	/* Messages to self are queued too: deliver them first (bounded, as a
	 * callback may keep sending to itself). */
	for (int i = 0; i < 1024 && node_deliver_self(n); i++)
		;

	for (uint32_t i = 0; i < n->self; i++) {
		struct peer *p = &n->peers[i];

		if (p->state != PEER_PENDING && p->state != PEER_LIVE &&
		    p->state != PEER_CLOSING)
			continue;
		if (p->state == PEER_PENDING && !ring_used(&p->tx)) {
			peer_closed(n, i, -ECANCELED, PM_CLOSE_SHUTDOWN);
			continue;
		}
		if (p->rx_final) {	/* ended at the peer, no connection */
			peer_closed(n, i, 0, PM_CLOSE_SHUTDOWN);
			continue;
		}
		if (p->state != PEER_CLOSING) {
			p->state = PEER_CLOSING;
			p->close_reason = PM_CLOSE_SHUTDOWN;
		}
		if (p->live != NONE)
			conn_graceful(n, &n->conns[p->live], p->close_reason);
	}
	while (n->conns_used && node_now_ms() < deadline) {
		int r = pm_node_run(n, 10);

		if (r < 0 && r != -EINTR)
			break;
	}
	if (!n->conns_used)
		return 0;
	for (uint32_t i = 0; i < n->self; i++)
		if (n->peers[i].state != PEER_FREE &&
		    n->peers[i].state != PEER_ZOMBIE)
			peer_closed(n, i, -ETIMEDOUT, PM_CLOSE_SHUTDOWN);
	for (uint32_t i = 0; i < n->nconns; i++)
		conn_abort(n, &n->conns[i]);
	return -ETIMEDOUT;
}

uint64_t pm_node_id(const struct pm_node *n)
{
	return n->id;
}

const char *pm_node_engine(const struct pm_node *n)
{
	return n->eng_ops->name;
}

int pm_node_listen_addr(const struct pm_node *n, char *buf, size_t len)
{
	return addr_format((const struct sockaddr *)&n->listen_addr, buf, len);
}

void pm_node_stats(const struct pm_node *n, struct pm_stats *st)
{
	*st = n->st;
	st->conns_open = n->conns_used;
	st->peers_live = 0;
	for (uint32_t i = 0; i < n->self; i++)
		if (n->peers[i].state == PEER_LIVE)
			st->peers_live++;
	st->mesh_nodes = 0;
	for (uint32_t i = 1; i < n->mesh_used; i++)
		st->mesh_nodes += n->mesh[i].next_slot != NONE;
}
