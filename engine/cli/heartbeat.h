/* heartbeat: a node tells its supervisor that its loop is alive.
 *
 * The supervisor hands each node the write end of a pipe (STRATA_READY_FD).
 * The node writes "ready" once it serves, then one byte every
 * HEARTBEAT_INTERVAL seconds from a timer on its loop. A loop stuck in C, a
 * node stopped by SIGSTOP, anything that keeps the loop from turning stops
 * the beats without the node's cooperation; the supervisor notices the
 * silence and replaces the node (see supervisor.c, stall_timeout). */
#ifndef STRATA_HEARTBEAT_H
#define STRATA_HEARTBEAT_H

#include <ev.h>

#define HEARTBEAT_INTERVAL 0.25

struct heartbeat {
    int fd;          /* -1 when not supervised */
    ev_timer timer;
};

/* Reports ready and starts beating, when the supervisor asked for it. */
void heartbeat_start(struct heartbeat *hb, struct ev_loop *loop);
void heartbeat_stop(struct heartbeat *hb, struct ev_loop *loop);

#endif
