/* resp_server: the client side of a RESP service built on a keyspace
 * (keyspace.h, kv_cmd.h) — the cache and the db.
 *
 * Owns the listener and the clients: accept (a session per client; past
 * ks->max_clients a newcomer is told so and closed), the parse loop with its
 * limits (query buffer cap, the small limits before AUTH, the sum of all
 * clients' buffers: ks->client_mem_limit), backpressure (parsing stops while a client's output is over its
 * high mark and goes on when it drains), QUIT, protocol errors, drain and
 * idle. The service embeds a struct resp_server and keeps the rest: its
 * command execution, timers and state.
 *
 * Replies may be held. A service that must not acknowledge a command yet
 * (the db, until its log has the command's effects) writes the reply into
 * the client's hold buffer (resp_client_hold) and later releases it
 * (resp_server_release). Once a client holds a reply, every later reply
 * of that client queues behind it, so a client sees its replies in order;
 * held output counts against the high mark like unsent output. A service
 * that never holds pays one size test per command for this. */
#ifndef STRATA_RESP_SERVER_H
#define STRATA_RESP_SERVER_H

#include <ev.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "kv_cmd.h"
#include "net.h"
#include "resp.h"

struct resp_server;

struct resp_client {
    struct resp_client *prev, *next;
    struct net_conn *conn;
    struct resp_server *srv;
    struct kv_session sess;
    struct resp_parser parser;
    struct buf hold;       /* replies held back (resp_client_hold) */
    uint64_t hold_until;   /* what they wait for, in the service's terms */
    int stalled;           /* stopped parsing at an output high mark */
    size_t acct;           /* its buffers as last counted in srv->client_mem */
    /* A command that waits (the db's WAIT) blocks its client: no further
     * command runs until resp_client_unblock. The waiting command's own
     * state, in the service's terms. */
    int blocked;
    uint64_t wait_offset;
    long wait_count;
    int64_t wait_deadline_ms;
    /* Set by a command that takes the connection over (the db's PSYNC):
     * once the command's reply is written, the client leaves the server
     * and handoff(conn, arg) installs the new owner's ops and data. */
    void (*handoff)(struct net_conn *c, void *arg);
    void *handoff_arg;
};

struct resp_server_ops {
    const char *name; /* "cache", "db": names the clients in log lines */
    /* Runs one parsed command. r is ready for kv_exec: the session, the
     * arguments, the batch's clock and r->out (the client's hold buffer
     * when it holds replies, else its write buffer). NULL: kv_exec
     * itself, with no indirect call. */
    void (*exec)(struct resp_client *cl, struct kv_req *r);
    /* 1: a peer that half-closes inside a command is told so before the
     * close; 0: the half-sent command is dropped silently. Either way the
     * replies already produced or held are sent before the close. */
    int eof_reply;
};

struct resp_server {
    const struct resp_server_ops *ops;
    void *data;                 /* the owning service, for the hooks */
    struct keyspace *ks;        /* limits, password, counters, client count */
    struct ev_loop *loop;
    struct net_listener *listener;
    struct resp_client *clients;
    size_t nholding;            /* clients with held replies */
    size_t nblocked;            /* clients blocked by a waiting command */
    struct buf spare;           /* swapped with a client's hold when releasing it */
    unsigned last_close_iter;   /* loop iteration in which a client last went away */
    /* The clients' buffers (read, write, held), kept as they change, for
     * ks->client_mem_limit: over it, the client with the largest input
     * buffer is closed. Recounted exactly by resp_server_buf_bytes. */
    size_t client_mem;
    struct log_limit evict_log;
    struct log_limit maxclients_log;
};

/* Listens on addr ("host:port", port 0 picks one: see rs->listener->addr).
 * rs may be zeroed or uninitialized; after a failure (-1, message in err)
 * it is safe to pass to resp_server_free. */
int resp_server_listen(struct resp_server *rs, struct ev_loop *loop, const char *addr,
                       struct keyspace *ks, const struct resp_server_ops *ops, void *data,
                       char *err, size_t errlen);
/* Graceful stop: accepts no more; a client with nothing to send or hold is
 * closed at once, the others once their sent output is out. Held replies
 * still held then are dropped with the connection: release what may go
 * before calling this. */
void resp_server_drain(struct resp_server *rs);
/* 1 when every client is gone and freed. */
int resp_server_idle(const struct resp_server *rs);
/* Closes every client and the listener. rs must be zeroed or listened. */
void resp_server_free(struct resp_server *rs);
/* Bytes the clients' buffers hold (INFO used_memory_clients), counted
 * afresh (O(clients): for the cron); also resets client_mem to it. */
size_t resp_server_buf_bytes(struct resp_server *rs);
/* Sends the held replies of every client whose hold_until is <= upto.
 * Returns how many clients got theirs. A client that stopped parsing while
 * its replies were held is resumed by on_drain once they are out. */
int resp_server_release(struct resp_server *rs, uint64_t upto);

/* Blocks a client after its current command (see resp_client.blocked). */
void resp_client_block(struct resp_client *cl);
/* Ends the wait: appends reply (n bytes) where the client's replies go and
 * runs the commands that queued behind the wait. */
void resp_client_unblock(struct resp_client *cl, const void *reply, size_t n);

/* The buffer to hold a reply in: from now on, until released, the client's
 * replies queue there. The caller sets hold_until. */
static inline struct buf *resp_client_hold(struct resp_client *cl)
{
    if (!buf_size(&cl->hold))
        cl->srv->nholding++;
    return &cl->hold;
}

#endif
