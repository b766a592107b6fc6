/* stream_follower: following a db's change stream without keeping its data
 * — the handshake, the frames, heartbeats, acks and reconnects (see
 * stream_follower.h). */
#include "stream_follower.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "log.h"
#include "stream_frame.h"
#include "util.h"

#define RECONNECT_MS 500

static void link_fail(struct stream_follower *sf, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

void stream_id_format(uint64_t id, char *out, size_t n)
{
    snprintf(out, n, "%016" PRIx64, id);
}

int stream_id_parse(const char *s, size_t n, uint64_t *out)
{
    if (n != 16)
        return -1;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (d < 0)
            return -1;
        v = v << 4 | (uint64_t)d;
    }
    *out = v;
    return 0;
}

static void send_ack(struct stream_follower *sf)
{
    if (!sf->conn || sf->state < STREAM_F_FULL)
        return;
    char num[32], msg[96];
    int nl = snprintf(num, sizeof num, "%llu", (unsigned long long)sf->offset);
    int n = snprintf(msg, sizeof msg, "*3\r\n$8\r\nREPLCONF\r\n$3\r\nACK\r\n$%d\r\n%s\r\n", nl,
                     num);
    net_conn_write(sf->conn, msg, (size_t)n);
    sf->acked = sf->offset;
}

int stream_handshake_line(struct buf *rbuf, char *line, size_t linelen)
{
    const char *s = buf_head(rbuf);
    size_t n = buf_size(rbuf);
    const char *nl = n ? memchr(s, '\n', n) : NULL;
    if (!nl)
        return n > STREAM_HANDSHAKE_LINE_MAX ? -1 : 0;
    size_t len = (size_t)(nl - s);
    if (len && s[len - 1] == '\r')
        len--;
    snprintf(line, linelen, "%.*s", (int)(len < linelen - 1 ? len : linelen - 1), s);
    buf_consume(rbuf, (size_t)(nl - s) + 1);
    return 1;
}

/* One line of the handshake: 1 done with it, 0 need more, -1 failed. */
static int handshake_line(struct stream_follower *sf, struct net_conn *c)
{
    char line[256];
    int got = stream_handshake_line(&c->rbuf, line, sizeof line);
    if (got < 0)
        link_fail(sf, "the upstream's answer is not a replication handshake");
    if (got <= 0)
        return got;
    if (sf->auth_pending) {
        sf->auth_pending = 0;
        if (strcmp(line, "+OK") != 0) {
            link_fail(sf, "AUTH refused by %s: %s", sf->upstream, line);
            return -1;
        }
        return 1;
    }
    char kind[16], idtxt[32];
    unsigned long long off;
    uint64_t id;
    if (sscanf(line, "+%15s %31s %llu", kind, idtxt, &off) != 3 ||
        stream_id_parse(idtxt, strlen(idtxt), &id) < 0) {
        link_fail(sf, "PSYNC refused by %s: %s", sf->upstream, line);
        return -1;
    }
    if (strcmp(kind, "CONTINUE") == 0) {
        if (!sf->has_replid || id != sf->replid || off != sf->offset) {
            link_fail(sf, "the upstream continues at %s/%llu, not where this follower is", idtxt,
                      off);
            return -1;
        }
        sf->state = STREAM_F_STREAM;
        sf->partial_syncs++;
        log_info("%s %s: following %s from offset %llu (partial resync)", sf->what, sf->node,
                 sf->upstream, off);
    } else if (strcmp(kind, "FULLRESYNC") == 0) {
        sf->has_replid = 1;
        sf->replid = id;
        sf->full_offset = off;
        sf->offset = off;
        sf->state = STREAM_F_FULL;
        sf->full_syncs++;
        log_info("%s %s: full resync from %s (replication id %s, offset %llu): what came before "
                 "cannot be followed",
                 sf->what, sf->node, sf->upstream, idtxt, off);
        sf->ops->on_resync(sf->arg);
    } else {
        link_fail(sf, "PSYNC refused by %s: %s", sf->upstream, line);
        return -1;
    }
    sf->link_up_since_ms = util_now_ms();
    sf->last_error[0] = 0;
    return 1;
}

static void link_on_read(struct net_conn *c)
{
    struct stream_follower *sf = c->data;
    sf->last_io_ms = util_now_ms();
    net_conn_set_timeout(c, sf->timeout_s);
    char err[300];
    while (buf_size(&c->rbuf) > 0 && net_conn_alive(c) && sf->conn == c) {
        if (sf->state == STREAM_F_HANDSHAKE) {
            if (handshake_line(sf, c) <= 0)
                break;
            continue;
        }
        struct stream_frame f;
        ssize_t n = stream_frame_next(buf_head(&c->rbuf), buf_size(&c->rbuf), &f, err, sizeof err);
        if (n == -2)
            break;
        if (n < 0) {
            sf->bad_frames++;
            link_fail(sf, "bad frame from %s at offset %llu: %s", sf->upstream,
                      (unsigned long long)sf->offset, err);
            return;
        }
        switch (f.kind) {
        case STREAM_FRAME_LOG:
            if (sf->state != STREAM_F_STREAM) {
                link_fail(sf, "a log record in the middle of a full resync");
                return;
            }
            sf->offset += (uint64_t)n;
            sf->records++;
            if (sf->offset > sf->upstream_offset)
                sf->upstream_offset = sf->offset;
            sf->ops->on_record(sf->arg, f.payload, f.plen);
            break;
        case STREAM_FRAME_HEARTBEAT:
            sf->upstream_offset = (uint64_t)f.a;
            break;
        case STREAM_FRAME_ENTRIES:
            if (sf->state != STREAM_F_FULL) {
                link_fail(sf, "keys outside a full resync");
                return;
            }
            sf->skipped_keys_bytes += (uint64_t)n;
            break;
        case STREAM_FRAME_END:
            if (sf->state != STREAM_F_FULL || (uint64_t)f.b < sf->full_offset) {
                link_fail(sf, "an unexpected end of a full resync");
                return;
            }
            /* The log from P follows: the keys were skipped, and the
             * records after P are what the follower needs. */
            sf->state = STREAM_F_STREAM;
            break;
        }
        if (sf->conn != c)
            return;
        buf_consume(&c->rbuf, (size_t)n);
    }
    if (net_conn_alive(c) && sf->conn == c && sf->acked != sf->offset)
        send_ack(sf);
}

static void link_on_connect(struct net_conn *c, int err)
{
    struct stream_follower *sf = c->data;
    if (err) {
        link_fail(sf, "cannot connect to %s: %s", sf->upstream, strerror(err));
        return;
    }
    struct buf b;
    buf_init(&b);
    if (sf->has_password) {
        buf_printf(&b, "*2\r\n$4\r\nAUTH\r\n$%zu\r\n%s\r\n", strlen(sf->password), sf->password);
        sf->auth_pending = 1;
    }
    char id[24] = "?", off[32] = "-1";
    if (sf->has_replid) {
        stream_id_format(sf->replid, id, sizeof id);
        snprintf(off, sizeof off, "%llu", (unsigned long long)sf->offset);
    }
    const char *args[] = {"PSYNC", id, off, "1", sf->node, sf->listen, "follower"};
    buf_printf(&b, "*7\r\n");
    for (size_t i = 0; i < 7; i++)
        buf_printf(&b, "$%zu\r\n%s\r\n", strlen(args[i]), args[i]);
    sf->state = STREAM_F_HANDSHAKE;
    net_conn_write(c, buf_head(&b), buf_size(&b));
    explicit_bzero((void *)buf_head(&b), buf_size(&b));
    buf_free(&b);
    net_conn_set_timeout(c, sf->timeout_s);
}

static void link_on_timeout(struct net_conn *c)
{
    struct stream_follower *sf = c->data;
    link_fail(sf, "no word from %s within %.1f s", sf->upstream, sf->timeout_s);
}

static void link_on_eof(struct net_conn *c)
{
    struct stream_follower *sf = c->data;
    link_fail(sf, "%s closed the link", sf->upstream);
}

static void link_on_close(struct net_conn *c, const char *why)
{
    struct stream_follower *sf = c->data;
    (void)why;
    if (!sf || sf->conn != c)
        return;
    /* A full resync cut short: its P was never reached, so the next
     * attempt cannot continue from it. */
    if (sf->state == STREAM_F_FULL)
        sf->has_replid = 0;
    sf->conn = NULL;
    sf->state = STREAM_F_IDLE;
    sf->link_up_since_ms = 0;
    sf->next_connect_ms = util_now_ms() + RECONNECT_MS;
    c->data = NULL;
}

static const struct net_conn_ops link_ops = {
    .on_read = link_on_read,
    .on_eof = link_on_eof,
    .on_connect = link_on_connect,
    .on_timeout = link_on_timeout,
    .on_close = link_on_close,
};

static void link_fail(struct stream_follower *sf, const char *fmt, ...)
{
    char msg[sizeof sf->last_error];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    /* An upstream that stays down is said once, not every attempt. */
    if (strcmp(msg, sf->last_error) != 0)
        log_warn("%s %s: stream link: %s; retrying", sf->what, sf->node, msg);
    snprintf(sf->last_error, sizeof sf->last_error, "%s", msg);
    sf->link_drops++;
    if (sf->conn)
        net_conn_abort(sf->conn, msg);
}

static void do_connect(struct stream_follower *sf)
{
    struct net_conn *c =
        net_connect(sf->loop, (const struct sockaddr *)&sf->addr, sf->addrlen, &link_ops, sf);
    if (!c) {
        sf->next_connect_ms = util_now_ms() + RECONNECT_MS;
        return;
    }
    sf->conn = c;
    sf->state = STREAM_F_CONNECTING;
    net_conn_set_timeout(c, sf->timeout_s);
}

static void timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct stream_follower *sf = w->data;
    if (sf->state == STREAM_F_IDLE && util_now_ms() >= sf->next_connect_ms)
        do_connect(sf);
    else if (sf->conn && sf->state >= STREAM_F_FULL)
        send_ack(sf);
}

int stream_follower_init(struct stream_follower *sf, struct ev_loop *loop, const char *what,
                         const char *node, const char *listen, const char *upstream,
                         const char *upstream_node, const char *password, double timeout_s,
                         const struct stream_follower_ops *ops, void *arg, char *err,
                         size_t errlen)
{
    memset(sf, 0, sizeof *sf);
    sf->loop = loop;
    sf->ops = ops;
    sf->arg = arg;
    snprintf(sf->what, sizeof sf->what, "%s", what);
    snprintf(sf->node, sizeof sf->node, "%s", node);
    snprintf(sf->listen, sizeof sf->listen, "%s", listen);
    snprintf(sf->upstream, sizeof sf->upstream, "%s", upstream);
    snprintf(sf->upstream_node, sizeof sf->upstream_node, "%s", upstream_node);
    if (password && password[0]) {
        sf->has_password = 1;
        snprintf(sf->password, sizeof sf->password, "%s", password);
    }
    if (util_parse_addr(upstream, &sf->addr, &sf->addrlen, err, errlen) < 0)
        return -1;
    sf->timeout_s = timeout_s > 0 ? timeout_s : 10;
    sf->ack_ms = (int64_t)(sf->timeout_s * 1000 / 4);
    if (sf->ack_ms > 1000)
        sf->ack_ms = 1000;
    if (sf->ack_ms < 10)
        sf->ack_ms = 10;
    sf->state = STREAM_F_IDLE;
    ev_timer_init(&sf->timer, timer_cb, (double)sf->ack_ms / 1000, (double)sf->ack_ms / 1000);
    sf->timer.data = sf;
    return 0;
}

void stream_follower_start(struct stream_follower *sf)
{
    ev_timer_start(sf->loop, &sf->timer);
    do_connect(sf);
}

void stream_follower_free(struct stream_follower *sf)
{
    if (!sf->loop)
        return;
    ev_timer_stop(sf->loop, &sf->timer);
    if (sf->conn)
        net_conn_abort(sf->conn, "shutting down");
    explicit_bzero(sf->password, sizeof sf->password);
    sf->loop = NULL;
}

int stream_follower_link_up(const struct stream_follower *sf)
{
    return sf->conn && sf->state >= STREAM_F_FULL;
}

uint64_t stream_follower_lag_bytes(const struct stream_follower *sf)
{
    return sf->upstream_offset > sf->offset ? sf->upstream_offset - sf->offset : 0;
}

const char *stream_follower_state_name(const struct stream_follower *sf)
{
    switch (sf->state) {
    case STREAM_F_IDLE: return "down";
    case STREAM_F_CONNECTING: return "connecting";
    case STREAM_F_HANDSHAKE: return "handshake";
    case STREAM_F_FULL: return "full_resync";
    default: return "up";
    }
}
