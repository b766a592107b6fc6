#include "net.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "util.h"

#define NET_READ_CHUNK (16 * 1024)
#define NET_ACCEPT_BATCH 64
/* Seconds to stop accepting after running out of descriptors. */
#define NET_ACCEPT_BACKOFF 0.1

static void conn_read_cb(struct ev_loop *loop, ev_io *w, int revents);
static void conn_write_cb(struct ev_loop *loop, ev_io *w, int revents);
static void conn_timer_cb(struct ev_loop *loop, ev_timer *w, int revents);

static void conn_release(struct net_conn *c);

/* Read blocks. A connection holds a read block only while it has unparsed
 * input: once a callback leaves the input fully consumed, the block goes
 * back to a small free list, and the next read takes one from there. So an
 * idle connection costs no read buffer at all, and a busy one costs a list
 * pop and push per read instead of a malloc and free. The list belongs to
 * the thread (a web node runs a loop per worker thread), so no lock is
 * taken and no block is ever handed to two loops; one callback at a time
 * keeps it short: it only holds what one iteration's connections gave
 * back. A thread that ends calls net_thread_done() to free its list. */
#define NET_BLOCK_CACHE 32
static _Thread_local char *block_cache[NET_BLOCK_CACHE];
static _Thread_local int block_cached;

void net_thread_done(void)
{
    while (block_cached > 0)
        free(block_cache[--block_cached]);
}

/* Grows b's block to exactly `lead + cap` bytes (cap > what it holds),
 * moving the unread bytes to offset `lead`. A pooled block goes back to the
 * pool. */
static int rbuf_grow_exact(struct buf *b, size_t cap, size_t lead)
{
    size_t used = buf_size(b);
    char *p = malloc(lead + cap);
    if (!p)
        return -1;
    if (used)
        memcpy(p + lead, b->data + b->off, used);
    if (b->cap == NET_READ_CHUNK && block_cached < NET_BLOCK_CACHE)
        block_cache[block_cached++] = b->data;
    else
        free(b->data);
    b->data = p;
    b->off = lead;
    b->len = lead + used;
    b->cap = lead + cap;
    return 0;
}

/* Room for the next read. When the service said how much its next message
 * needs (`want`, counted from the unread front) and that is more than a
 * read chunk away, the block is sized for it in one step; otherwise at
 * least a chunk of room, as usual. A block grown for a message that has
 * room for the rest of it reads just that: asking for a chunk of room
 * there would regrow the block (doubling it) for its last bytes. */
static int rbuf_make_room(struct buf *b, size_t want, size_t lead)
{
    size_t used = buf_size(b);
    if (want > used && b->cap > NET_READ_CHUNK && b->cap - b->len >= want - used)
        return 0;
    if (want > used && want - used > NET_READ_CHUNK) {
        size_t target = want;
        if (target > NET_READ_PRESIZE && target > 2 * used)
            target = used * 2 > NET_READ_PRESIZE ? used * 2 : NET_READ_PRESIZE;
        if (b->cap - b->off >= target) {
            if (b->cap - b->len < target - used) { /* room only at the front */
                memmove(b->data, b->data + b->off, used);
                b->off = 0;
                b->len = used;
            }
            return 0;
        }
        return rbuf_grow_exact(b, target, lead);
    }
    return buf_reserve(b, NET_READ_CHUNK);
}

static int rbuf_take_block(struct buf *b, size_t want, size_t lead)
{
    if (b->data)
        return rbuf_make_room(b, want, lead);
    char *p = block_cached ? block_cache[--block_cached] : malloc(NET_READ_CHUNK);
    if (!p)
        return -1;
    b->data = p;
    b->off = b->len = 0;
    b->cap = NET_READ_CHUNK;
    return want > NET_READ_CHUNK ? rbuf_make_room(b, want, lead) : 0;
}

/* Gives an emptied read buffer's block back (a grown one to the system). */
static void rbuf_give_back(struct buf *b)
{
    if (!b->data || b->off != b->len)
        return;
    if (b->cap == NET_READ_CHUNK && block_cached < NET_BLOCK_CACHE)
        block_cache[block_cached++] = b->data;
    else
        free(b->data);
    buf_init(b);
}

static void conn_free_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    conn_release(w->data);
}

static void conn_release(struct net_conn *c)
{
    ev_timer_stop(c->loop, &c->timer);
    buf_consume(&c->rbuf, buf_size(&c->rbuf));
    rbuf_give_back(&c->rbuf);
    buf_free(&c->wbuf);
    free(c);
}

static void conn_write_out(struct net_conn *c);

/* Leaves the outermost frame that works on a connection: writes pending
 * output, runs on_drain as long as the output keeps draining (a loop, not
 * recursion, so a producer that refills from on_drain cannot grow the
 * stack), then frees the connection if it died, or re-arms reading.
 * `api` is set when entered from net_conn_flush outside any callback: the
 * caller may still hold the pointer, so a death is freed on the next turn. */
static void conn_leave_ex(struct net_conn *c, int api)
{
    if (c->depth > 1) {
        c->depth--;
        return;
    }
    /* depth stays 1 here, so a teardown below leaves the free to us. */
    while (!(c->flags & NET_F_DEAD)) {
        conn_write_out(c);
        if ((c->flags & (NET_F_DEAD | NET_F_DRAIN_PENDING)) != NET_F_DRAIN_PENDING ||
            buf_size(&c->wbuf) > 0 || !c->ops->on_drain)
            break;
        c->flags &= ~(unsigned)NET_F_DRAIN_PENDING;
        c->ops->on_drain(c);
    }
    c->depth--;
    if (c->flags & NET_F_DEAD) {
        if (api) {
            ev_timer_init(&c->timer, conn_free_cb, 0., 0.);
            c->timer.data = c;
            ev_timer_start(c->loop, &c->timer);
        } else {
            conn_release(c);
        }
        return;
    }
    rbuf_give_back(&c->rbuf);
    net_conn_update(c);
}

static void conn_leave(struct net_conn *c) { conn_leave_ex(c, 0); }

static void conn_teardown(struct net_conn *c, const char *why)
{
    if (c->flags & NET_F_DEAD)
        return;
    c->flags |= NET_F_DEAD;
    ev_io_stop(c->loop, &c->rio);
    ev_io_stop(c->loop, &c->wio);
    ev_timer_stop(c->loop, &c->timer);
    if (c->fd >= 0) {
        close(c->fd);
        c->fd = -1;
    }
    if (c->listener) {
        struct net_listener *l = c->listener;
        c->listener = NULL;
        /* A closed listener lives on until its last connection is gone. */
        if (--l->nconns == 0 && l->fd < 0)
            free(l);
    }
    c->depth++;
    if (c->ops->on_close)
        c->ops->on_close(c, why);
    c->depth--;
    /* Closed from outside its own callbacks (another connection's, or a
     * write that failed): no callback return will free it, so free it on
     * the next loop turn, when no caller can still hold the pointer. */
    if (c->depth == 0) {
        ev_timer_init(&c->timer, conn_free_cb, 0., 0.);
        c->timer.data = c;
        ev_timer_start(c->loop, &c->timer);
    }
}

static struct net_conn *conn_new(struct ev_loop *loop, int fd, const struct net_conn_ops *ops,
                                 void *data)
{
    struct net_conn *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->loop = loop;
    c->fd = fd;
    c->ops = ops;
    c->data = data;
    c->write_high = 4 * 1024 * 1024;
    buf_init(&c->rbuf);
    buf_init(&c->wbuf);
    ev_io_init(&c->rio, conn_read_cb, fd, EV_READ);
    ev_io_init(&c->wio, conn_write_cb, fd, EV_WRITE);
    ev_init(&c->timer, conn_timer_cb);
    c->rio.data = c->wio.data = c->timer.data = c;
    return c;
}

void net_conn_update(struct net_conn *c)
{
    if (c->flags & (NET_F_DEAD | NET_F_CONNECTING))
        return;
    int want = !(c->flags & (NET_F_CLOSING | NET_F_PAUSED | NET_F_EOF)) &&
               buf_size(&c->wbuf) < c->write_high &&
               (c->read_max == 0 || buf_size(&c->rbuf) < c->read_max);
    if (want && !ev_is_active(&c->rio))
        ev_io_start(c->loop, &c->rio);
    else if (!want && ev_is_active(&c->rio))
        ev_io_stop(c->loop, &c->rio);
}

/* Writes what the socket takes now, without running callbacks. Marks
 * NET_F_DRAIN_PENDING when bytes went out, so on_drain runs once the buffer
 * is empty; completes a graceful close. */
static void conn_write_out(struct net_conn *c)
{
    if (c->flags & (NET_F_DEAD | NET_F_CONNECTING))
        return;
    while (buf_size(&c->wbuf) > 0) {
        ssize_t n = write(c->fd, buf_head(&c->wbuf), buf_size(&c->wbuf));
        if (n > 0) {
            buf_consume(&c->wbuf, (size_t)n);
            c->flags |= NET_F_DRAIN_PENDING;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (!ev_is_active(&c->wio))
                ev_io_start(c->loop, &c->wio);
            return;
        }
        conn_teardown(c, n < 0 ? strerror(errno) : "write failed");
        return;
    }
    if (ev_is_active(&c->wio))
        ev_io_stop(c->loop, &c->wio);
    /* Give back a large idle output block (a big reply was sent). */
    buf_shrink(&c->wbuf, 64 * 1024);
    if (c->flags & NET_F_CLOSING)
        conn_teardown(c, "closed");
}

void net_conn_idle(struct net_conn *c)
{
    buf_shrink(&c->wbuf, 0);
}

void net_conn_flush(struct net_conn *c)
{
    if (c->flags & (NET_F_DEAD | NET_F_CONNECTING))
        return;
    if (c->depth > 0) {
        /* Inside a callback: the outermost frame runs on_drain. */
        conn_write_out(c);
        return;
    }
    c->depth++;
    conn_leave_ex(c, 1);
}

int net_conn_write(struct net_conn *c, const void *p, size_t n)
{
    if (c->flags & NET_F_DEAD)
        return -1;
    if (buf_append(&c->wbuf, p, n) < 0) {
        net_conn_abort(c, "out of memory");
        return -1;
    }
    if (c->depth == 0)
        net_conn_flush(c);
    return 0;
}

int net_conn_writev(struct net_conn *c, const struct iovec *iov, int iovcnt)
{
    if (c->flags & NET_F_DEAD)
        return -1;
    size_t sent = 0;
    if (buf_size(&c->wbuf) == 0 && !(c->flags & NET_F_CONNECTING)) {
        /* Nothing queued ahead: straight from the caller's memory. A
         * failure other than EAGAIN is left to the flush below, which
         * meets it again and tears down as every write does. */
        ssize_t k;
        do
            k = writev(c->fd, iov, iovcnt);
        while (k < 0 && errno == EINTR);
        if (k > 0) {
            sent = (size_t)k;
            c->flags |= NET_F_DRAIN_PENDING;
        }
    }
    for (int i = 0; i < iovcnt; i++) {
        size_t len = iov[i].iov_len;
        if (sent >= len) {
            sent -= len;
            continue;
        }
        if (buf_append(&c->wbuf, (const char *)iov[i].iov_base + sent, len - sent) < 0) {
            net_conn_abort(c, "out of memory");
            return -1;
        }
        sent = 0;
    }
    if (c->depth == 0)
        net_conn_flush(c);
    return 0;
}

void net_conn_close(struct net_conn *c, const char *why)
{
    if (c->flags & NET_F_DEAD)
        return;
    (void)why;
    c->flags |= NET_F_CLOSING;
    ev_io_stop(c->loop, &c->rio);
    if (c->depth == 0)
        net_conn_flush(c);
}

void net_conn_abort(struct net_conn *c, const char *why)
{
    if (c->flags & NET_F_DEAD)
        return;
    conn_teardown(c, why);
    /* Outside its callbacks the caller is done with it: free at once, so a
     * service freeing its connections at shutdown leaves nothing behind. */
    if (c->depth == 0)
        conn_release(c);
}

void net_conn_pause(struct net_conn *c)
{
    c->flags |= NET_F_PAUSED;
    net_conn_update(c);
}

void net_conn_resume(struct net_conn *c)
{
    c->flags &= ~(unsigned)NET_F_PAUSED;
    net_conn_update(c);
    /* Data may already be waiting in rbuf from before the pause. */
    if (buf_size(&c->rbuf) > 0 && c->depth == 0 && c->ops->on_read &&
        !(c->flags & (NET_F_DEAD | NET_F_CLOSING))) {
        c->depth++;
        c->ops->on_read(c);
        conn_leave(c);
    }
}

void net_conn_set_timeout(struct net_conn *c, double seconds)
{
    if (c->flags & NET_F_DEAD)
        return;
    ev_timer_stop(c->loop, &c->timer);
    if (seconds > 0) {
        ev_timer_set(&c->timer, seconds, 0.);
        ev_timer_start(c->loop, &c->timer);
    }
}

static void conn_connected(struct net_conn *c, int err)
{
    c->flags &= ~(unsigned)NET_F_CONNECTING;
    ev_io_stop(c->loop, &c->wio);
    /* A deadline the caller set stays armed: it covers connect + exchange. */
    c->depth++;
    if (c->ops->on_connect)
        c->ops->on_connect(c, err);
    if (err)
        conn_teardown(c, strerror(err));
    conn_leave(c);
}

static void conn_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct net_conn *c = w->data;
    if (c->flags & NET_F_CONNECTING) {
        conn_connected(c, c->connect_err ? c->connect_err : ETIMEDOUT);
        return;
    }
    c->depth++;
    if (c->ops->on_timeout)
        c->ops->on_timeout(c);
    else
        conn_teardown(c, "timeout");
    conn_leave(c);
}

static void conn_read_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    struct net_conn *c = w->data;
    if (rbuf_take_block(&c->rbuf, c->read_want, c->read_lead) < 0) {
        conn_teardown(c, "out of memory");
        return;
    }
    ssize_t n = read(c->fd, buf_tail(&c->rbuf), buf_room(&c->rbuf));
    c->depth++;
    if (n > 0) {
        buf_commit(&c->rbuf, (size_t)n);
        if (c->ops->on_read)
            c->ops->on_read(c);
    } else if (n == 0) {
        c->flags |= NET_F_EOF;
        ev_io_stop(c->loop, &c->rio);
        if (c->ops->on_eof)
            c->ops->on_eof(c);
        else
            net_conn_close(c, "peer closed");
    } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        conn_teardown(c, strerror(errno));
    }
    conn_leave(c);
}

static void conn_write_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    struct net_conn *c = w->data;
    if (c->flags & NET_F_CONNECTING) {
        int err = 0;
        socklen_t len = sizeof err;
        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
            err = errno;
        conn_connected(c, err);
        return;
    }
    c->depth++;
    net_conn_flush(c);
    conn_leave(c);
}

static void set_nodelay(int fd)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

struct net_conn *net_connect(struct ev_loop *loop, const struct sockaddr *sa, socklen_t salen,
                             const struct net_conn_ops *ops, void *data)
{
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return NULL;
    set_nodelay(fd);
    struct net_conn *c = conn_new(loop, fd, ops, data);
    if (!c) {
        close(fd);
        return NULL;
    }
    util_format_addr(sa, c->peer, sizeof c->peer);
    c->flags |= NET_F_CONNECTING;
    if (connect(fd, sa, salen) < 0 && errno != EINPROGRESS) {
        /* Report on the next loop turn so callers have one code path. */
        c->connect_err = errno;
        ev_timer_set(&c->timer, 0., 0.);
        ev_timer_start(loop, &c->timer);
    } else {
        ev_io_start(loop, &c->wio);
    }
    return c;
}

/* A local shortage, not the client's fault: stop accepting for a moment
 * (the connection waits in the backlog), log it at most once a minute. */
static void listener_starve(struct net_listener *l, int err)
{
    l->fd_shortages++;
    l->starved = 1;
    ev_io_stop(l->loop, &l->io);
    ev_timer_set(&l->backoff, NET_ACCEPT_BACKOFF, 0.);
    ev_timer_start(l->loop, &l->backoff);
    unsigned long skipped;
    if (log_limit_allow(&l->shortage_log, (double)util_mono_us() / 1e6, 60.0, &skipped))
        log_warn("accept on %s: %s; pausing accepts for %.0f ms (%lu more since the last "
                 "warning; raise the descriptor limit or lower max_clients)",
                 l->addr, strerror(err), NET_ACCEPT_BACKOFF * 1000, skipped);
}

static void listener_backoff_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct net_listener *l = w->data;
    l->starved = 0;
    if (!l->paused && l->fd >= 0)
        ev_io_start(l->loop, &l->io);
}

static void listener_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)revents;
    struct net_listener *l = w->data;
    for (int i = 0; i < NET_ACCEPT_BATCH; i++) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        int fd = accept4(l->fd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EMFILE || errno == ENFILE)
                listener_starve(l, errno);
            return;
        }
        l->accepted++;
        if (l->max_conns > 0 && l->nconns >= l->max_conns) {
            l->rejected++;
            close(fd);
            continue;
        }
        set_nodelay(fd);
        struct net_conn *c = conn_new(loop, fd, l->ops, l->data);
        if (!c) {
            close(fd);
            continue;
        }
        util_format_addr((struct sockaddr *)&ss, c->peer, sizeof c->peer);
        c->listener = l;
        l->nconns++;
        c->depth++;
        if (l->on_accept && l->on_accept(c, l->data) < 0)
            conn_teardown(c, "rejected");
        conn_leave(c);
    }
}

struct net_listener *net_listen(struct ev_loop *loop, const char *addr, int reuseport,
                                const struct net_conn_ops *ops, net_accept_fn on_accept,
                                void *data, char *err, size_t errlen)
{
    struct sockaddr_storage ss;
    socklen_t sl;
    if (util_parse_addr(addr, &ss, &sl, err, errlen) < 0)
        return NULL;
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        return NULL;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (reuseport)
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&ss, sl) < 0) {
        snprintf(err, errlen, "cannot listen on %s: %s", addr, strerror(errno));
        close(fd);
        return NULL;
    }
    if (listen(fd, 1024) < 0) {
        snprintf(err, errlen, "listen %s: %s", addr, strerror(errno));
        close(fd);
        return NULL;
    }
    struct net_listener *l = calloc(1, sizeof *l);
    if (!l) {
        close(fd);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    l->loop = loop;
    l->fd = fd;
    l->ops = ops;
    l->on_accept = on_accept;
    l->data = data;
    sl = sizeof ss;
    getsockname(fd, (struct sockaddr *)&ss, &sl);
    util_format_addr((struct sockaddr *)&ss, l->addr, sizeof l->addr);
    ev_io_init(&l->io, listener_cb, fd, EV_READ);
    l->io.data = l;
    ev_timer_init(&l->backoff, listener_backoff_cb, NET_ACCEPT_BACKOFF, 0.);
    l->backoff.data = l;
    ev_io_start(loop, &l->io);
    return l;
}

void net_listener_pause(struct net_listener *l)
{
    l->paused = 1;
    ev_io_stop(l->loop, &l->io);
}

void net_listener_resume(struct net_listener *l)
{
    l->paused = 0;
    if (l->fd >= 0 && !l->starved)
        ev_io_start(l->loop, &l->io);
}

void net_listener_close(struct net_listener *l)
{
    if (!l)
        return;
    ev_io_stop(l->loop, &l->io);
    ev_timer_stop(l->loop, &l->backoff);
    if (l->fd >= 0)
        close(l->fd);
    l->fd = -1;
    /* Connections it accepted still point at it: the last one frees it. */
    if (l->nconns == 0)
        free(l);
}
