/* net: non-blocking TCP listeners and connections on a libev loop.
 *
 * A connection owns a read buffer and a write buffer. Services see bytes
 * arrive in `rbuf` (on_read), consume what they parsed, and append replies
 * with net_conn_write; the core writes them out, watching for EAGAIN.
 *
 * Backpressure both ways: reading stops while the write buffer is above
 * `write_high` (a client that pipelines but never reads replies cannot make
 * us buffer without bound) and while the read buffer holds `read_max` bytes
 * the service has not consumed (a service waiting on a backend stops pulling
 * from its client). net_conn_pause/resume add an explicit stop on top.
 *
 * Connections may be closed from inside their own callbacks: the memory is
 * released only when the outermost callback returns. */
#ifndef STRATA_NET_H
#define STRATA_NET_H

#include <ev.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "buf.h"
#include "log.h"

struct net_conn;
struct net_listener;

struct net_conn_ops {
    /* New bytes are in c->rbuf; consume what was handled with buf_consume. */
    void (*on_read)(struct net_conn *c);
    /* Peer half-closed (read returned 0). Optional: default is a graceful
     * close that first flushes what is already in wbuf. */
    void (*on_eof)(struct net_conn *c);
    /* The write buffer drained completely. Optional (streaming producers). */
    void (*on_drain)(struct net_conn *c);
    /* Outgoing connect finished: err is 0 or an errno value. Optional. */
    void (*on_connect)(struct net_conn *c, int err);
    /* The deadline set with net_conn_set_timeout passed. Optional: default
     * aborts the connection. */
    void (*on_timeout)(struct net_conn *c);
    /* Called exactly once when the connection goes away, for any reason;
     * release c->data here. `why` is a short human-readable cause. */
    void (*on_close)(struct net_conn *c, const char *why);
};

enum {
    NET_F_CLOSING = 1 << 0,   /* graceful close: flush then close */
    NET_F_DEAD = 1 << 1,      /* closed; free when the callback depth is 0 */
    NET_F_PAUSED = 1 << 2,    /* reading paused by the service */
    NET_F_CONNECTING = 1 << 3,
    NET_F_EOF = 1 << 4,       /* peer sent FIN */
    NET_F_DRAIN_PENDING = 1 << 5, /* output went out; on_drain not yet called */
};

struct net_conn {
    struct ev_loop *loop;
    int fd;
    unsigned flags;
    int depth;                 /* nested callback depth, for deferred free */
    int connect_err;           /* connect() failed at once: reported async */
    ev_io rio, wio;
    ev_timer timer;
    struct buf rbuf, wbuf;
    size_t read_max;           /* 0: unbounded (the service must bound it) */
    size_t write_high;         /* stop reading above this many unsent bytes */
    /* Set by the service when it knows how many bytes rbuf must hold for
     * its next message to complete (a large argument whose length header
     * arrived); 0 when it does not. The read path then grows rbuf once to
     * that size (at most doubling what arrived past NET_READ_PRESIZE)
     * instead of growing by doubling with a copy at every step. */
    size_t read_want;
    /* With read_want: bytes to leave free in front of the unread data when
     * the block is grown for it, so that a service can build its own
     * record around a large argument and keep the block (0: none). */
    size_t read_lead;
    const struct net_conn_ops *ops;
    void *data;                /* the service's per-connection state */
    struct net_listener *listener;
    char peer[64];             /* "ip:port" of the other end */
};

/* Up to this many bytes are reserved for a declared message at once; past
 * it, the reservation grows with what actually arrives (so a peer cannot
 * make the node allocate a large size by only announcing it). */
#define NET_READ_PRESIZE (1024u * 1024)

/* Accepted connections are created with `ops` and `data`; on_accept may
 * replace c->data and adjust limits. Returning -1 closes the new connection. */
typedef int (*net_accept_fn)(struct net_conn *c, void *listener_data);

struct net_listener {
    struct ev_loop *loop;
    int fd;
    ev_io io;
    const struct net_conn_ops *ops;
    net_accept_fn on_accept;
    void *data;
    int max_conns;             /* 0: unlimited */
    int nconns;
    unsigned long long accepted, rejected;
    /* Out of descriptors (EMFILE/ENFILE): the pending connection stays in
     * the kernel's queue and the listener stays readable, so accepting is
     * paused for NET_ACCEPT_BACKOFF seconds instead of spinning on it. */
    unsigned long long fd_shortages;
    ev_timer backoff;
    int paused;                /* by its owner (net_listener_pause) */
    int starved;               /* by a descriptor shortage, until backoff ends */
    struct log_limit shortage_log;
    char addr[64];
};

/* Binds and listens on "host:port". Port 0 picks a free port; the real one is
 * in l->addr afterwards. Returns NULL with a message in err. */
struct net_listener *net_listen(struct ev_loop *loop, const char *addr, int reuseport,
                                const struct net_conn_ops *ops, net_accept_fn on_accept,
                                void *data, char *err, size_t errlen);
/* Stops listening. Connections it accepted stay open (close them too, or let
 * them finish); the struct is freed with the last of them. */
void net_listener_close(struct net_listener *l);
/* A thread that ran a loop of its own ends: frees the read blocks it kept
 * for reuse (each thread keeps its own). */
void net_thread_done(void);
/* Stop/start accepting (draining, or past max_conns). */
void net_listener_pause(struct net_listener *l);
void net_listener_resume(struct net_listener *l);

/* Starts a non-blocking connect; ops->on_connect reports the outcome. A
 * deadline set with net_conn_set_timeout before it completes reports
 * ETIMEDOUT. */
struct net_conn *net_connect(struct ev_loop *loop, const struct sockaddr *sa, socklen_t salen,
                             const struct net_conn_ops *ops, void *data);

int net_conn_write(struct net_conn *c, const void *p, size_t n);
/* Like net_conn_write for several pieces, without copying what the socket
 * takes at once: when nothing is queued before them the pieces go out in
 * one writev straight from the caller's memory, and only what the socket
 * did not take is copied into wbuf. For relaying large bodies. */
int net_conn_writev(struct net_conn *c, const struct iovec *iov, int iovcnt);
/* Writes what is buffered now (normally done after each callback). */
void net_conn_flush(struct net_conn *c);
/* Graceful close: stop reading, send what is buffered, then close. */
void net_conn_close(struct net_conn *c, const char *why);
/* Immediate close; unsent output is dropped. Called from outside the
 * connection's own callbacks it also frees it: the pointer is invalid after
 * (on_close has run). */
void net_conn_abort(struct net_conn *c, const char *why);
void net_conn_pause(struct net_conn *c);
void net_conn_resume(struct net_conn *c);
/* Re-evaluates whether to read (call after consuming rbuf outside on_read). */
void net_conn_update(struct net_conn *c);
/* The connection goes idle (a keep-alive client between requests): its
 * output block, if everything in it was sent, goes back now instead of
 * being kept for the next answer. */
void net_conn_idle(struct net_conn *c);
/* One-shot deadline in seconds from now; 0 cancels. */
void net_conn_set_timeout(struct net_conn *c, double seconds);

static inline int net_conn_alive(const struct net_conn *c)
{
    return !(c->flags & NET_F_DEAD);
}

#endif
