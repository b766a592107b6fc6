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

/* "+CONTINUE <id> <off> <epoch> <history>" and "+FULLRESYNC <id> <P>
 * <epoch> <history> <diverged>": the upstream's epoch and which epoch
 * wrote which offsets, so that the next PSYNC (to this node or, after a
 * failover, another) can say where the follower's offset stands. An answer
 * without them (an older db) leaves the follower without a history. */
static void take_history(struct stream_follower *sf, const char *line)
{
    unsigned long long ep;
    char hist[STREAM_HANDSHAKE_LINE_MAX];
    sf->has_hist = 0;
    if (sscanf(line, "+%*s %*s %*s %llu %1023s", &ep, hist) != 2)
        return;
    int n = 0;
    for (char *save = NULL, *t = strtok_r(hist, ",", &save); t && n < STREAM_MAX_HIST;
         t = strtok_r(NULL, ",", &save)) {
        unsigned long long e, st;
        if (sscanf(t, "%llu:%llu", &e, &st) != 2)
            return;
        sf->hist_epoch[n] = e;
        sf->hist_start[n] = st;
        n++;
    }
    if (!n)
        return;
    sf->nhist = n;
    sf->up_epoch = ep;
    sf->has_hist = 1;
}

/* The epoch that wrote the record ending at the follower's offset: the
 * last history entry starting before it. When the history has moved on
 * since the handshake, this is an older epoch than the truth, which can
 * only make the next primary answer a full resync, never skip a write. */
static uint64_t offset_epoch(const struct stream_follower *sf)
{
    uint64_t e = sf->hist_epoch[0];
    for (int i = 0; i < sf->nhist; i++)
        if (sf->hist_start[i] < sf->offset)
            e = sf->hist_epoch[i];
    return e;
}

/* One line of the handshake: 1 done with it, 0 need more, -1 failed. */
static int handshake_line(struct stream_follower *sf, struct net_conn *c)
{
    char line[STREAM_HANDSHAKE_LINE_MAX + 8];
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
        /* -STALE, -LOADING...: this node is not one to follow now; with
         * other nodes known, wait until one answers as the primary */
        if (sf->nnodes > 1)
            sf->nodes[sf->cur].is_primary = 0;
        link_fail(sf, "PSYNC refused by %s: %s", sf->upstream, line);
        return -1;
    }
    take_history(sf, line);
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
    /* Following a data set that fails over, the follower also says which
     * epoch's primary it followed and which epoch its offset ends in, so a
     * primary whose log parted from that one answers a full resync. */
    char ep[24], lep[24];
    size_t nargs = 7;
    if (sf->nnodes > 1 && sf->has_replid && sf->has_hist) {
        snprintf(ep, sizeof ep, "%llu", (unsigned long long)sf->up_epoch);
        snprintf(lep, sizeof lep, "%llu", (unsigned long long)offset_epoch(sf));
        nargs = 9;
    }
    const char *args[] = {"PSYNC", id, off, "1", sf->node, sf->listen, "follower", ep, lep};
    buf_printf(&b, "*%zu\r\n", nargs);
    for (size_t i = 0; i < nargs; i++)
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
    /* Is it still the primary? Ask every node at once before dialing
     * it again (stream_follower.h). */
    if (sf->nnodes > 1) {
        sf->nodes[sf->cur].is_primary = 0;
        sf->next_probe_ms = 0;
    }
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
    if (sf->state == STREAM_F_IDLE && util_now_ms() >= sf->next_connect_ms &&
        (sf->nnodes <= 1 || sf->nodes[sf->cur].is_primary))
        do_connect(sf);
    else if (sf->conn && sf->state >= STREAM_F_FULL)
        send_ack(sf);
}

/* ---- following a failover: which node is the primary ---------------- */

#define PROBE_TICK 0.05
#define PROBE_DOWN_MS 250        /* while the link is down */
#define PROBE_UP_MS 1000         /* while it is up */
#define PROBE_TIMEOUT_S 2.0

static void probe_all(struct stream_follower *sf);

/* Moves to the node answering as the primary of the highest epoch, when
 * that is not the node followed and the followed one does not answer as a
 * primary of that epoch too; dials the followed node when the link is
 * down and it answers as the primary. */
static void decide(struct stream_follower *sf)
{
    int best = -1;
    for (int i = 0; i < sf->nnodes; i++) {
        const struct stream_node *nd = &sf->nodes[i];
        if (!nd->is_primary || !nd->seen_ms)
            continue;
        if (best < 0 || nd->epoch > sf->nodes[best].epoch ||
            (nd->epoch == sf->nodes[best].epoch && nd->offset > sf->nodes[best].offset))
            best = i;
    }
    if (best < 0) {
        int asking = 0;
        for (int i = 0; i < sf->nnodes; i++)
            asking += sf->nodes[i].probe != NULL;
        /* said once a whole round has answered, and once per outage */
        if (sf->state == STREAM_F_IDLE && !asking && !sf->said_no_primary) {
            sf->said_no_primary = 1;
            log_warn("%s %s: stream link: no db node answers as the primary yet; asking again "
                     "every %d ms",
                     sf->what, sf->node, PROBE_DOWN_MS);
        }
        return;
    }
    struct stream_node *cur = &sf->nodes[sf->cur];
    if (best != sf->cur && !(cur->is_primary && cur->epoch >= sf->nodes[best].epoch)) {
        struct stream_node *nd = &sf->nodes[best];
        log_warn("%s %s: the db's primary is now %s (%s, epoch %llu): following it instead of "
                 "%s from offset %llu",
                 sf->what, sf->node, nd->name, nd->addr, (unsigned long long)nd->epoch,
                 cur->name, (unsigned long long)sf->offset);
        sf->switches++;
        if (sf->conn)
            net_conn_abort(sf->conn, "following another primary");
        sf->cur = best;
        snprintf(sf->upstream, sizeof sf->upstream, "%s", nd->addr);
        snprintf(sf->upstream_node, sizeof sf->upstream_node, "%s", nd->name);
        memcpy(&sf->addr, &nd->sa, sizeof sf->addr);
        sf->addrlen = nd->salen;
        sf->last_error[0] = 0;
        sf->next_connect_ms = 0;
    }
    sf->said_no_primary = 0;
    if (sf->state == STREAM_F_IDLE && !sf->conn && util_now_ms() >= sf->next_connect_ms &&
        sf->nodes[sf->cur].is_primary)
        do_connect(sf);
}

static void probe_end(struct stream_node *nd, int answered)
{
    if (!answered) {
        nd->is_primary = 0;
        nd->seen_ms = 0;
    }
    if (nd->probe) {
        struct net_conn *c = nd->probe;
        nd->probe = NULL;
        c->data = NULL;
        net_conn_abort(c, "probe done");
    }
    decide(nd->sf);
}

static void probe_on_connect(struct net_conn *c, int err)
{
    struct stream_node *nd = c->data;
    if (!nd)
        return;
    if (err) {
        probe_end(nd, 0);
        return;
    }
    struct stream_follower *sf = nd->sf;
    struct buf b;
    buf_init(&b);
    nd->auth_pending = sf->has_password;
    if (sf->has_password)
        buf_printf(&b, "*2\r\n$4\r\nAUTH\r\n$%zu\r\n%s\r\n", strlen(sf->password), sf->password);
    buf_printf(&b, "*2\r\n$8\r\nFAILOVER\r\n$8\r\nPOSITION\r\n");
    net_conn_write(c, buf_head(&b), buf_size(&b));
    explicit_bzero((void *)buf_head(&b), buf_size(&b));
    buf_free(&b);
}

/* "+<node> primary|replica <epoch> <log_epoch> <offset>" */
static void probe_on_read(struct net_conn *c)
{
    struct stream_node *nd = c->data;
    char line[256];
    int got;
    while (nd && (got = stream_handshake_line(&c->rbuf, line, sizeof line)) != 0) {
        if (got < 0) {
            probe_end(nd, 0);
            return;
        }
        if (nd->auth_pending) {
            nd->auth_pending = 0;
            if (strcmp(line, "+OK") != 0) {
                probe_end(nd, 0);
                return;
            }
            continue;
        }
        char name[64], role[16];
        unsigned long long ep, lep, off;
        if (sscanf(line, "+%63s %15s %llu %llu %llu", name, role, &ep, &lep, &off) != 5) {
            probe_end(nd, 0);
            return;
        }
        nd->is_primary = strcmp(role, "primary") == 0;
        nd->epoch = ep;
        nd->offset = off;
        nd->seen_ms = util_now_ms();
        probe_end(nd, 1);
        return;
    }
}

static void probe_on_eof(struct net_conn *c)
{
    if (c->data)
        probe_end(c->data, 0);
}

static void probe_on_close(struct net_conn *c, const char *why)
{
    (void)why;
    struct stream_node *nd = c->data;
    if (nd && nd->probe == c)
        nd->probe = NULL;
    c->data = NULL;
}

static const struct net_conn_ops probe_ops = {
    .on_read = probe_on_read,
    .on_eof = probe_on_eof,
    .on_connect = probe_on_connect,
    .on_timeout = probe_on_eof,
    .on_close = probe_on_close,
};

/* Asks every node without a question in flight FAILOVER POSITION. */
static void probe_all(struct stream_follower *sf)
{
    int64_t now = util_now_ms();
    sf->next_probe_ms = now + (stream_follower_link_up(sf) ? PROBE_UP_MS : PROBE_DOWN_MS);
    for (int i = 0; i < sf->nnodes; i++) {
        struct stream_node *nd = &sf->nodes[i];
        if (nd->probe)
            continue;
        struct net_conn *c =
            net_connect(sf->loop, (const struct sockaddr *)&nd->sa, nd->salen, &probe_ops, nd);
        if (!c) {
            nd->is_primary = 0;
            nd->seen_ms = 0;
            continue;
        }
        nd->probe = c;
        net_conn_set_timeout(c, sf->timeout_s < PROBE_TIMEOUT_S ? sf->timeout_s : PROBE_TIMEOUT_S);
    }
}

static void probe_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct stream_follower *sf = w->data;
    if (util_now_ms() >= sf->next_probe_ms)
        probe_all(sf);
    else if (sf->state == STREAM_F_IDLE)
        decide(sf);
}

int stream_follower_set_nodes(struct stream_follower *sf, const char *list, char *err,
                              size_t errlen)
{
    char copy[STREAM_MAX_NODES * 140];
    if (strlen(list) >= sizeof copy) {
        snprintf(err, errlen, "too many db nodes to follow");
        return -1;
    }
    snprintf(copy, sizeof copy, "%s", list);
    int n = 0, cur = -1;
    for (char *save = NULL, *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        char *at = strchr(t, '@');
        if (!at || at == t || !at[1]) {
            snprintf(err, errlen, "db node '%s' is not name@host:port", t);
            return -1;
        }
        if (n == STREAM_MAX_NODES) {
            snprintf(err, errlen, "more than %d db nodes to follow", STREAM_MAX_NODES);
            return -1;
        }
        *at = 0;
        struct stream_node *nd = &sf->nodes[n];
        memset(nd, 0, sizeof *nd);
        nd->sf = sf;
        snprintf(nd->name, sizeof nd->name, "%s", t);
        snprintf(nd->addr, sizeof nd->addr, "%s", at + 1);
        if (util_parse_addr(nd->addr, &nd->sa, &nd->salen, err, errlen) < 0)
            return -1;
        if (strcmp(nd->addr, sf->upstream) == 0)
            cur = n;
        n++;
    }
    if (cur < 0) {
        snprintf(err, errlen, "the upstream %s is not among the db nodes", sf->upstream);
        return -1;
    }
    sf->nnodes = n;
    sf->cur = cur;
    return 0;
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
    ev_timer_init(&sf->probe_timer, probe_timer_cb, PROBE_TICK, PROBE_TICK);
    sf->probe_timer.data = sf;
    return 0;
}

void stream_follower_start(struct stream_follower *sf)
{
    ev_timer_start(sf->loop, &sf->timer);
    if (sf->nnodes > 1) {
        /* the first link waits for the first answers (milliseconds) */
        ev_timer_start(sf->loop, &sf->probe_timer);
        probe_all(sf);
        return;
    }
    do_connect(sf);
}

void stream_follower_free(struct stream_follower *sf)
{
    if (!sf->loop)
        return;
    ev_timer_stop(sf->loop, &sf->timer);
    ev_timer_stop(sf->loop, &sf->probe_timer);
    for (int i = 0; i < sf->nnodes; i++)
        if (sf->nodes[i].probe)
            net_conn_abort(sf->nodes[i].probe, "shutting down");
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
