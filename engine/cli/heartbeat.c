#include "heartbeat.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

static void beat(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    struct heartbeat *hb = w->data;
    /* Non-blocking: a supervisor that is slow to read loses beats, never
     * stalls the node. A supervisor gone for good (EPIPE) ends the beats. */
    if (write(hb->fd, ".", 1) < 0 && errno != EAGAIN && errno != EINTR)
        heartbeat_stop(hb, loop);
}

void heartbeat_start(struct heartbeat *hb, struct ev_loop *loop)
{
    hb->fd = -1;
    const char *env = getenv("STRATA_READY_FD");
    if (!env)
        return;
    int fd = atoi(env);
    unsetenv("STRATA_READY_FD");
    if (fd <= 2)
        return;
    fcntl(fd, F_SETFD, FD_CLOEXEC);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    if (write(fd, "ready\n", 6) < 0) {
        close(fd);
        return;
    }
    hb->fd = fd;
    ev_timer_init(&hb->timer, beat, HEARTBEAT_INTERVAL, HEARTBEAT_INTERVAL);
    hb->timer.data = hb;
    ev_timer_start(loop, &hb->timer);
}

void heartbeat_stop(struct heartbeat *hb, struct ev_loop *loop)
{
    if (hb->fd < 0)
        return;
    ev_timer_stop(loop, &hb->timer);
    close(hb->fd);
    hb->fd = -1;
}
