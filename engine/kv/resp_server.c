/* resp_server: clients of a RESP service — accept, the parse loop, limits,
 * backpressure, held replies, drain (see resp_server.h). */
#include "resp_server.h"

#include <stdlib.h>
#include <strings.h>

#include "log.h"
#include "util.h"

/* Before AUTH, a client may send only small commands (like Redis), so an
 * unauthenticated peer cannot make the node buffer much. */
static void client_handoff(struct resp_client *cl);
static const struct net_conn_ops client_ops;

static const struct resp_limits unauth_limits = {16 * 1024, 10, 64 * 1024};

/* While "SET key <large value>" arrives: the room to leave in front of the
 * unread bytes when the read block is grown for the value, so that the
 * value lands where a store entry keeps it and the block can become the
 * entry (kv SET, store_adopt). 0 for anything else. */
static size_t adopt_lead(const struct resp_parser *p, const char *head)
{
    if (!p->want || p->nargs != 3 || p->argc != 2 || p->argl[0] != 3 || !head ||
        strncasecmp(head + (uintptr_t)p->argv[0], "set", 3) != 0)
        return 0;
    size_t vlen = p->want - p->want_at - 2;
    size_t voff = store_value_offset(p->argl[1], vlen);
    return voff > p->want_at ? voff - p->want_at : 0;
}

/* Runs as many complete commands as the read buffer holds (pipelining).
 * The clock is read once per batch; output counters see only what went to
 * the write buffer (held replies are counted by nobody, as before they
 * are sent). */
static void client_process(struct resp_client *cl)
{
    struct net_conn *c = cl->conn;
    struct resp_server *rs = cl->srv;
    struct keyspace *ks = rs->ks;
    /* Read once per batch: the calls below cannot change the hook. */
    void (*exec)(struct resp_client *, struct kv_req *) = rs->ops->exec;
    int64_t now = util_now_ms();
    size_t out_before = buf_size(&c->wbuf);
    c->read_want = 0;
    c->read_lead = 0;
    while (buf_size(&c->rbuf) > 0 && !cl->sess.quit && !cl->blocked && !cl->handoff &&
           !(c->flags & (NET_F_CLOSING | NET_F_DEAD))) {
        /* Output over the high mark, sent or held: wait for on_drain (or a
         * release) before running more. */
        size_t held = buf_size(&cl->hold); /* parsing below does not change it */
        if (buf_size(&c->wbuf) >= c->write_high || held >= c->write_high) {
            cl->stalled = 1;
            break;
        }
        const struct resp_limits *lim =
            (ks->has_password && !cl->sess.authed) ? &unauth_limits : &ks->limits;
        ssize_t n = resp_parse(&cl->parser, (char *)buf_head(&c->rbuf), buf_size(&c->rbuf), lim);
        if (n == -2) {
            if (buf_size(&c->rbuf) > ks->qbuf_max) {
                log_warn("%s client %s: query buffer over %zu bytes, closing", rs->ops->name,
                         c->peer, ks->qbuf_max);
                net_conn_abort(c, "query buffer limit");
                return;
            }
            /* A large argument is on its way: have the read path size the
             * buffer for it once (never past the query buffer limit). */
            c->read_want = cl->parser.want < ks->qbuf_max ? cl->parser.want : ks->qbuf_max;
            c->read_lead = exec ? 0 : adopt_lead(&cl->parser, buf_head(&c->rbuf));
            break;
        }
        if (n < 0) {
            ks->stats.protocol_errors++;
            resp_error(buf_size(&cl->hold) ? &cl->hold : &c->wbuf, cl->parser.err);
            if (!buf_size(&cl->hold))
                net_conn_close(c, "protocol error");
            else
                cl->sess.quit = 1; /* close once the held replies are out */
            resp_parser_reset(&cl->parser);
            break;
        }
        int taken = 0;
        if (cl->parser.argc > 0) {
            struct kv_req r = {
                .ks = ks, .sess = &cl->sess,
                .out = held ? &cl->hold : &c->wbuf, .argc = cl->parser.argc,
                .argv = cl->parser.argv, .argl = cl->parser.argl, .now = now,
            };
            if (exec) {
                exec(cl, &r);
            } else {
                /* The block may become a large value's entry when this
                 * command is all it holds. */
                int offered = (size_t)n == buf_size(&c->rbuf);
                r.adopt = offered ? &c->rbuf : NULL;
                kv_exec(&r);
                taken = offered && r.adopt == NULL;
            }
        }
        ks->stats.net_input_bytes += (uint64_t)n;
        if (!taken)
            buf_consume(&c->rbuf, (size_t)n);
    }
    if (buf_size(&c->wbuf) > out_before)
        ks->stats.net_output_bytes += buf_size(&c->wbuf) - out_before;
    if (cl->handoff && net_conn_alive(c) && !(c->flags & NET_F_CLOSING)) {
        client_handoff(cl);
        return;
    }
    if (cl->sess.quit && !buf_size(&cl->hold) && !(c->flags & NET_F_CLOSING))
        net_conn_close(c, "quit");
    /* Give back an argument array grown by one large command. */
    if (cl->parser.cap > 1024 && !cl->parser.in_multibulk)
        resp_parser_reset(&cl->parser);
}

/* What a client's buffers hold now. */
static size_t client_bytes(const struct resp_client *cl)
{
    return cl->conn->rbuf.cap + cl->conn->wbuf.cap + cl->hold.cap;
}

static void client_account(struct resp_client *cl)
{
    size_t now = client_bytes(cl);
    cl->srv->client_mem = cl->srv->client_mem - cl->acct + now;
    cl->acct = now;
}

/* The client to close when buffers are over their limit: the one with the
 * largest input buffer (a command it has not finished sending), or, when no
 * client has input pending, the one holding the most output. */
static struct resp_client *client_mem_victim(struct resp_server *rs)
{
    struct resp_client *in = NULL, *all = NULL;
    for (struct resp_client *cl = rs->clients; cl; cl = cl->next) {
        if (!in || cl->conn->rbuf.cap > in->conn->rbuf.cap)
            in = cl;
        if (!all || cl->acct > all->acct)
            all = cl;
    }
    if (in && in->conn->rbuf.cap > 0)
        return in;
    return all && all->acct > 0 ? all : NULL;
}

/* The sum of client buffers is over its limit: close clients, the largest
 * input buffers first, until it is under (Redis's maxmemory-clients). Runs
 * from a read callback, never while another function walks the client
 * list. */
static void enforce_client_memory(struct resp_server *rs)
{
    struct keyspace *ks = rs->ks;
    resp_server_buf_bytes(rs); /* exact counts before choosing */
    while (rs->client_mem > ks->client_mem_limit) {
        struct resp_client *victim = client_mem_victim(rs);
        if (!victim)
            return;
        ks->stats.evicted_clients++;
        unsigned long skipped;
        if (log_limit_allow(&rs->evict_log, (double)util_mono_us() / 1e6, 10.0, &skipped))
            log_warn("%s client %s closed: client buffers hold %zu bytes, over the limit of "
                     "%llu (max_client_memory); it held %zu bytes, %zu of them input (%lu more "
                     "closed since the last line)",
                     rs->ops->name, victim->conn->peer, rs->client_mem,
                     (unsigned long long)ks->client_mem_limit, victim->acct,
                     victim->conn->rbuf.cap, skipped);
        net_conn_abort(victim->conn, "client memory limit"); /* on_close subtracts it */
    }
}

static void client_on_read(struct net_conn *c)
{
    struct resp_client *cl = c->data;
    if (!cl)
        return; /* refused at accept: closing */
    client_process(cl);
    /* Handed over (PSYNC: the connection has a new owner), closed or gone:
     * not a client of this server to count any more. */
    if (c->ops != &client_ops || !c->data || !net_conn_alive(c))
        return;
    cl = c->data;
    client_account(cl);
    struct resp_server *rs = cl->srv;
    if (rs->ks->client_mem_limit && rs->client_mem > rs->ks->client_mem_limit)
        enforce_client_memory(rs);
}

void resp_client_block(struct resp_client *cl)
{
    if (!cl->blocked)
        cl->srv->nblocked++;
    cl->blocked = 1;
}

void resp_client_unblock(struct resp_client *cl, const void *reply, size_t n)
{
    if (!cl->blocked)
        return;
    cl->blocked = 0;
    cl->srv->nblocked--;
    struct net_conn *c = cl->conn;
    if (buf_size(&cl->hold)) {
        buf_append(&cl->hold, reply, n);
    } else {
        buf_append(&c->wbuf, reply, n);
        cl->srv->ks->stats.net_output_bytes += n;
    }
    /* The commands that queued behind the wait; then out with it all (this
     * runs outside the connection's own callbacks). */
    client_process(cl); /* also closes a client that quit meanwhile */
    if (net_conn_alive(c))
        net_conn_flush(c);
}

static void client_on_drain(struct net_conn *c)
{
    struct resp_client *cl = c->data;
    /* Only a client that stopped at a high mark: one waiting for the rest
     * of a command has nothing to do until it arrives. */
    if (cl && cl->stalled) {
        cl->stalled = 0;
        client_process(cl);
    }
}

/* The peer stopped sending (it may still read). A command left half-sent
 * can never complete: services that ask for it say so. Replies still held
 * for the log go out before the close: the writes were executed, and a
 * client that half-closes after sending them must still be told. */
static void client_on_eof(struct net_conn *c)
{
    struct resp_client *cl = c->data;
    if (!cl) {
        net_conn_close(c, "peer closed");
        return;
    }
    if (cl->blocked) {
        cl->sess.quit = 1; /* closed once the wait ends and its reply is out */
        return;
    }
    client_process(cl);
    if (!net_conn_alive(c) || (c->flags & NET_F_CLOSING) || c->data != cl)
        return;
    struct buf *out = buf_size(&cl->hold) ? &cl->hold : &c->wbuf;
    if (cl->srv->ops->eof_reply && buf_size(&c->rbuf) > 0 && buf_size(&c->wbuf) < c->write_high &&
        !cl->sess.quit) {
        cl->srv->ks->stats.protocol_errors++;
        resp_error(out, "ERR Protocol error: connection closed inside a command");
    }
    if (buf_size(&cl->hold)) {
        cl->sess.quit = 1; /* resp_server_release closes it once they are out */
        return;
    }
    net_conn_close(c, "peer closed");
}

static void client_unlink(struct resp_client *cl)
{
    struct resp_server *rs = cl->srv;
    if (cl->prev)
        cl->prev->next = cl->next;
    else
        rs->clients = cl->next;
    if (cl->next)
        cl->next->prev = cl->prev;
    if (buf_size(&cl->hold))
        rs->nholding--;
    rs->client_mem -= cl->acct;
    rs->ks->nclients--;
    rs->last_close_iter = ev_iteration(rs->loop);
    if (cl->blocked)
        rs->nblocked--;
    buf_free(&cl->hold);
    resp_parser_free(&cl->parser);
    cl->conn->data = NULL;
    free(cl);
}

static void client_on_close(struct net_conn *c, const char *why)
{
    (void)why;
    if (c->data)
        client_unlink(c->data);
}

/* The connection leaves the server for its new owner (see handoff). */
static void client_handoff(struct resp_client *cl)
{
    struct net_conn *c = cl->conn;
    void (*fn)(struct net_conn *, void *) = cl->handoff;
    void *arg = cl->handoff_arg;
    client_unlink(cl);
    fn(c, arg);
}

static const struct net_conn_ops client_ops = {
    .on_read = client_on_read,
    .on_eof = client_on_eof,
    .on_drain = client_on_drain,
    .on_close = client_on_close,
};

static int client_on_accept(struct net_conn *c, void *data)
{
    struct resp_server *rs = data;
    struct keyspace *ks = rs->ks;
    if (ks->max_clients && ks->nclients >= ks->max_clients) {
        /* Told why, as Redis does, then closed once the line is out; the
         * connection has no client state, so nothing it sends is read. */
        ks->stats.rejected_connections++;
        unsigned long skipped;
        if (log_limit_allow(&rs->maxclients_log, (double)util_mono_us() / 1e6, 60.0, &skipped))
            log_warn("%s: %zu clients (max_clients) reached; refusing new ones (%lu more refused "
                     "since the last line)",
                     rs->ops->name, ks->nclients, skipped);
        c->data = NULL;
        net_conn_write(c, "-" KV_ERR_MAXCLIENTS "\r\n", sizeof KV_ERR_MAXCLIENTS + 2);
        net_conn_close(c, "max clients");
        return 0;
    }
    struct resp_client *cl = calloc(1, sizeof *cl);
    if (!cl) {
        ks->stats.rejected_connections++;
        c->data = NULL;
        return -1;
    }
    cl->conn = c;
    cl->srv = rs;
    cl->sess.id = ks->next_client_id++;
    cl->sess.authed = !ks->has_password;
    cl->sess.created_ms = util_now_ms();
    resp_parser_init(&cl->parser);
    buf_init(&cl->hold);
    cl->next = rs->clients;
    if (rs->clients)
        rs->clients->prev = cl;
    rs->clients = cl;
    ks->nclients++;
    ks->stats.connections++;
    c->data = cl;
    return 0;
}

int resp_server_listen(struct resp_server *rs, struct ev_loop *loop, const char *addr,
                       struct keyspace *ks, const struct resp_server_ops *ops, void *data,
                       char *err, size_t errlen)
{
    *rs = (struct resp_server){.ops = ops, .data = data, .ks = ks, .loop = loop};
    buf_init(&rs->spare);
    rs->listener = net_listen(loop, addr, 0, &client_ops,
                              client_on_accept, rs, err, errlen);
    return rs->listener ? 0 : -1;
}

int resp_server_release(struct resp_server *rs, uint64_t upto)
{
    if (!rs->nholding)
        return 0;
    int released = 0;
    for (struct resp_client *cl = rs->clients, *next; cl; cl = next) {
        next = cl->next;
        if (!buf_size(&cl->hold) || cl->hold_until > upto)
            continue;
        struct net_conn *c = cl->conn;
        /* Swap the held bytes out first: writing may run on_drain, which
         * parses more input and may hold new replies. */
        struct buf out = cl->hold;
        cl->hold = rs->spare;
        rs->spare = out;
        rs->nholding--;
        released++;
        int quit = cl->sess.quit;
        net_conn_write(c, buf_head(&rs->spare), buf_size(&rs->spare));
        buf_reset(&rs->spare);
        buf_shrink(&rs->spare, 64 * 1024);
        if (quit && net_conn_alive(c) && c->data == cl && !buf_size(&cl->hold))
            net_conn_close(c, "quit");
    }
    return released;
}

void resp_server_drain(struct resp_server *rs)
{
    /* Paused, not closed: connections refer to their listener until they
     * are gone, so it is released in free, after them. */
    if (rs->listener)
        net_listener_pause(rs->listener);
    /* A client with no output pending has nothing in flight: close it now.
     * Others close once their replies are out. */
    for (struct resp_client *cl = rs->clients, *next; cl; cl = next) {
        next = cl->next;
        if (buf_size(&cl->conn->wbuf) == 0 && buf_size(&cl->hold) == 0)
            net_conn_abort(cl->conn, "shutting down");
        else
            net_conn_close(cl->conn, "shutting down");
    }
}

int resp_server_idle(const struct resp_server *rs)
{
    /* A connection closed outside its callbacks is freed by the net core on
     * the next loop turn; idle only after that turn, so a stop does not end
     * the loop with its memory still pending. */
    return rs->clients == NULL && (!rs->loop || ev_iteration(rs->loop) > rs->last_close_iter);
}

void resp_server_free(struct resp_server *rs)
{
    while (rs->clients)
        net_conn_abort(rs->clients->conn, "shutdown"); /* on_close unlinks it */
    if (rs->listener)
        net_listener_close(rs->listener);
    rs->listener = NULL;
    buf_free(&rs->spare);
}

size_t resp_server_buf_bytes(struct resp_server *rs)
{
    size_t bytes = 0;
    for (struct resp_client *cl = rs->clients; cl; cl = cl->next) {
        cl->acct = client_bytes(cl);
        bytes += cl->acct;
    }
    rs->client_mem = bytes;
    return bytes;
}
