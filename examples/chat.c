/* SPDX-License-Identifier: MIT */
/*
 * chat NICK [LISTEN [PEER]...]: a chat room over the mesh.
 *
 * Each line typed goes to everyone (pm_broadcast); "/msg WHO TEXT" goes to
 * one member only (pm_send_to), WHO being a nick or a 16-hex-digit id;
 * "/who" lists the members. Members introduce themselves to every node
 * they learn about, so nicks work across relays too. Output, one line per
 * message: "<nick> text", or "*nick* text" when private.
 *
 * On the wire each message is: a kind byte ('J' join, 'M' to all, 'P'
 * private), the nick's length (one byte), the nick, then the text.
 *
 * stdin must be a terminal or a pipe: it is watched in the node's own loop
 * (pm_watch_fd). When a ring is full (-EAGAIN), stdin is not read until
 * PM_EV_WRITABLE says there is room: nothing is dropped.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <pairmesh.h>

#define MAX_MEMBERS	256
#define MAX_NICK	32
#define LINE_MAX_LEN	4096

struct member {
	uint64_t id;
	char nick[MAX_NICK + 1];	/* "" until its join arrives */
	bool greeted;			/* we sent it our join */
};

static struct {
	struct pm_node *n;
	const char *nick;
	struct member members[MAX_MEMBERS];
	int nmembers;
	char line[LINE_MAX_LEN];
	size_t len;
	bool blocked;		/* the first line waits for ring space */
	bool watching;		/* stdin is watched */
	bool eof;
	bool quit;
} chat;

static struct member *member(uint64_t id, bool add)
{
	for (int i = 0; i < chat.nmembers; i++)
		if (chat.members[i].id == id)
			return &chat.members[i];
	if (!add || chat.nmembers == MAX_MEMBERS)
		return NULL;
	chat.members[chat.nmembers] = (struct member){ .id = id };
	return &chat.members[chat.nmembers++];
}

/* Builds kind + nick + text in the caller's buffer; returns its length. */
static size_t encode(char *buf, char kind, const char *text, size_t len)
{
	size_t nl = strlen(chat.nick);

	buf[0] = kind;
	buf[1] = (char)nl;
	memcpy(buf + 2, chat.nick, nl);
	memcpy(buf + 2 + nl, text, len);
	return 2 + nl + len;
}

/* Sends our join to every reachable member not greeted yet. */
static void greet_all(void)
{
	struct pm_peer_info peers[MAX_MEMBERS];
	int k = pm_mesh_peers(chat.n, peers, MAX_MEMBERS);
	char buf[2 + MAX_NICK];
	size_t len = encode(buf, 'J', "", 0);

	for (int i = 0; i < k && i < MAX_MEMBERS; i++) {
		struct member *m = member(peers[i].id, true);

		if (!m || m->greeted || !peers[i].reachable)
			continue;
		/* -EAGAIN: tried again on the next PM_EV_WRITABLE. */
		if (pm_send_to(chat.n, m->id, buf, len) == 0)
			m->greeted = true;
	}
}

static int on_message(struct pm_node *n, const struct pm_message *msg,
		      void *u)
{
	const char *p = msg->data;
	size_t nl = msg->len >= 2 ? (unsigned char)p[1] : 0;
	struct member *m;

	if (msg->len < 2 || nl > MAX_NICK || 2 + nl > msg->len)
		return 0;		/* not ours: ignored */
	m = member(msg->peer_id, true);
	if (p[0] == 'J' && m && !m->nick[0]) {
		memcpy(m->nick, p + 2, nl);
		m->nick[nl] = '\0';
		printf("-- %s joined (%016" PRIx64 ")\n", m->nick, m->id);
	} else if (p[0] == 'M' || p[0] == 'P') {
		printf(p[0] == 'M' ? "<%.*s> %.*s\n" : "*%.*s* %.*s\n",
		       (int)nl, p + 2, (int)(msg->len - 2 - nl), p + 2 + nl);
	}
	fflush(stdout);
	return 0;
}

static void who(void)
{
	struct pm_peer_info peers[MAX_MEMBERS];
	int k = pm_mesh_peers(chat.n, peers, MAX_MEMBERS);

	for (int i = 0; i < k && i < MAX_MEMBERS; i++) {
		struct member *m = member(peers[i].id, false);

		printf("-- %s %016" PRIx64 " %s\n", m && m->nick[0] ?
		       m->nick : "?", peers[i].id, !peers[i].reachable ?
		       "unreachable" : peers[i].direct ? "direct" :
		       "relayed");
	}
	fflush(stdout);
}

/* "/msg WHO TEXT": WHO is a nick we know or a node id. */
static int send_private(char *arg, char *buf)
{
	char *text = strchr(arg, ' ');
	struct member *m = NULL;
	char *end;
	uint64_t id;

	if (!text) {
		fprintf(stderr, "usage: /msg NICK|ID TEXT\n");
		return 0;
	}
	*text++ = '\0';
	for (int i = 0; i < chat.nmembers && !m; i++)
		if (!strcmp(chat.members[i].nick, arg))
			m = &chat.members[i];
	id = m ? m->id : strtoull(arg, &end, 16);
	if (!m && (strlen(arg) != 16 || *end)) {
		fprintf(stderr, "error: %s: no such member\n", arg);
		return 0;
	}
	text[-1] = ' ';		/* the line is sent again on -EAGAIN */
	return pm_send_to(chat.n, id, buf,
			  encode(buf, 'P', text, strlen(text)));
}

/* Sends one line. -EAGAIN: no room, keep the line; else it is done. */
static int send_line(char *line)
{
	static char buf[2 + MAX_NICK + LINE_MAX_LEN];
	int r;

	if (!*line)
		return 0;
	if (!strcmp(line, "/who")) {
		who();
		return 0;
	}
	if (!strncmp(line, "/msg ", 5))
		r = send_private(line + 5, buf);
	else
		r = pm_broadcast(chat.n, buf,
				 encode(buf, 'M', line, strlen(line)));
	if (r == 0 && line[0] != '/')
		fprintf(stderr, "(nobody here yet)\n");
	else if (r < 0 && r != -EAGAIN)
		fprintf(stderr, "error: %s\n", strerror(-r));
	return r == -EAGAIN ? r : 0;
}

static void on_stdin(struct pm_node *n, int fd, void *u);

static int watch_stdin(bool on)
{
	int r = 0;

	if (on != chat.watching)
		r = pm_watch_fd(chat.n, STDIN_FILENO, on ? on_stdin : NULL,
				NULL);
	if (!r)
		chat.watching = on;
	return r;
}

/* Sends the complete lines buffered; stops at one that meets a full ring. */
static void process_lines(void)
{
	char *nl;

	while ((nl = memchr(chat.line, '\n', chat.len)) ||
	       (chat.eof && chat.len)) {
		size_t len = nl ? (size_t)(nl - chat.line) : chat.len;
		char saved = chat.line[len];

		chat.line[len] = '\0';
		if (send_line(chat.line) == -EAGAIN) {
			chat.line[len] = saved;
			chat.blocked = true;
			break;
		}
		chat.blocked = false;
		len += nl ? 1 : 0;
		memmove(chat.line, chat.line + len, chat.len - len);
		chat.len -= len;
	}
	if (chat.len == sizeof(chat.line) - 1) {
		fprintf(stderr, "error: line too long, dropped\n");
		chat.len = 0;
	}
	/* Reading on only while lines go out keeps the memory bounded. */
	watch_stdin(!chat.blocked && !chat.eof);
	if (chat.eof && !chat.blocked)
		chat.quit = true;
}

static void on_stdin(struct pm_node *n, int fd, void *u)
{
	ssize_t r = read(fd, chat.line + chat.len,
			 sizeof(chat.line) - 1 - chat.len);

	if (r < 0 && (errno == EINTR || errno == EAGAIN))
		return;
	if (r <= 0)
		chat.eof = true;
	else
		chat.len += (size_t)r;
	process_lines();
}

static void on_event(struct pm_node *n, const struct pm_event *ev, void *u)
{
	switch (ev->type) {
	case PM_EV_CONNECTED:
	case PM_EV_ROUTES:
		greet_all();
		break;
	case PM_EV_WRITABLE:
		greet_all();
		if (chat.blocked)
			process_lines();
		break;
	case PM_EV_UNREACHABLE:
		fprintf(stderr, "error: %016" PRIx64 " unreachable\n",
			ev->peer_id);
		break;
	default:
		break;
	}
}

int main(int argc, char *argv[])
{
	struct pm_config c;
	struct pm_stream s;
	char addr[64];

	if (argc < 2 || !argv[1][0] || strlen(argv[1]) > MAX_NICK) {
		fprintf(stderr, "usage: chat NICK [LISTEN [PEER]...]\n");
		return 2;
	}
	chat.nick = argv[1];
	pm_config_init(&c);
	c.listen = argc > 2 ? argv[2] : "127.0.0.1:0";
	c.on_message = on_message;
	c.on_event = on_event;
	if (pm_node_create(&chat.n, &c)) {
		fprintf(stderr, "error: cannot listen on %s\n", c.listen);
		return 1;
	}
	for (int i = 3; i < argc; i++)
		if (pm_connect(chat.n, argv[i], &s))
			fprintf(stderr, "error: %s: bad address\n", argv[i]);
	pm_node_listen_addr(chat.n, addr, sizeof(addr));
	fprintf(stderr, "ready id=%016" PRIx64 " listen=%s engine=%s\n",
		pm_node_id(chat.n), addr, pm_node_engine(chat.n));
	if (watch_stdin(true)) {
		fprintf(stderr, "error: stdin must be a terminal or a pipe\n");
		return 1;
	}
	while (!chat.quit) {
		int r = pm_node_run(chat.n, -1);

		if (r < 0 && r != -EINTR) {
			fprintf(stderr, "error: %s\n", strerror(-r));
			break;
		}
	}
	/* Sends what is queued, then closes every stream. */
	pm_node_shutdown(chat.n, 5000);
	pm_node_destroy(chat.n);
	return 0;
}
