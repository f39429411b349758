/* SPDX-License-Identifier: MIT */
/* echo [LISTEN]: sends every message back to its sender, by id, so a
 * message that came through relays goes back through the mesh too. */
#include <errno.h>
#include <stdio.h>
#include <pairmesh.h>

#define MAX_PEERS 64
static struct pm_stream paused[MAX_PEERS];	/* held by -EAGAIN */
static int npaused;

static int on_message(struct pm_node *n, const struct pm_message *m, void *u)
{
	if (pm_send_to(n, m->peer_id, m->data, m->len) != -EAGAIN)
		return 0;		/* sent, or dropped (peer gone) */
	paused[npaused++] = m->stream;	/* a paused stream delivers no more */
	return -EAGAIN;			/* keep it: it comes again on resume */
}

static void on_event(struct pm_node *n, const struct pm_event *ev, void *u)
{
	if (ev->type != PM_EV_WRITABLE && ev->type != PM_EV_CLOSED)
		return;
	while (npaused)			/* room somewhere: everyone retries */
		pm_stream_resume(n, paused[--npaused]);
}

int main(int argc, char *argv[])
{
	struct pm_config c;
	struct pm_node *n;
	char addr[64];

	pm_config_init(&c);
	c.listen = argc > 1 ? argv[1] : "127.0.0.1:0";
	c.max_peers = MAX_PEERS;	/* bounds paused[] */
	c.on_message = on_message;
	c.on_event = on_event;
	if (pm_node_create(&n, &c))
		return 1;
	pm_node_listen_addr(n, addr, sizeof(addr));
	fprintf(stderr, "ready id=%016llx listen=%s engine=%s\n",
		(unsigned long long)pm_node_id(n), addr, pm_node_engine(n));
	while (pm_node_run(n, -1) >= 0)
		;
	return 1;
}
