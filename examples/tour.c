/* SPDX-License-Identifier: MIT */
/* The README's tour: tour LISTEN [PEER] prints what arrives; given PEER,
 * it first says hello there. The README shows this file verbatim, from
 * the first #include on (tests/test_readme.sh checks it). */
#include <stdio.h>
#include <pairmesh.h>

static int on_message(struct pm_node *n, const struct pm_message *m, void *u)
{
	printf("%016llx: %.*s\n", (unsigned long long)m->peer_id,
	       (int)m->len, (const char *)m->data);	/* valid in here only */
	fflush(stdout);
	return 0;					/* -EAGAIN pauses */
}

int main(int argc, char *argv[])
{
	struct pm_config c;
	struct pm_node *n;
	struct pm_stream s;

	pm_config_init(&c);			/* 127.0.0.1:0, 1024 peers, ... */
	c.listen = argc > 1 ? argv[1] : "127.0.0.1:0";
	c.on_message = on_message;
	if (pm_node_create(&n, &c))		/* every action: 0 or -errno */
		return 1;
	if (argc > 2 && pm_connect(n, argv[2], &s) == 0) /* dials if new */
		pm_send(n, s, "hello", 5);	/* queued; -EAGAIN when full */
	for (;;)
		pm_node_run(n, -1);		/* sends, waits, calls back */
}
