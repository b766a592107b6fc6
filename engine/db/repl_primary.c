/* repl_primary: links to replicas — resyncs, the stream, heartbeats and
 * acknowledgements (see repl_primary.h). */
#include "repl_primary.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "datadir.h"
#include "epoch.h"
#include "failover.h"
#include "keyspace.h"
#include "log.h"
#include "stream_follower.h" /* the replication id as text */
#include "util.h"

#include <sys/stat.h>
#include <unistd.h>

/* A link's unsent output is kept under this: the stream is read from the
 * backlog (or the store) only as the replica takes it. */
#define LINK_HIGH (1024 * 1024)
/* Buckets scanned per step of a full resync, at most, between checks. */
#define SCAN_STEPS 256
/* A full resync says how far it got in the log every this many bytes. */
#define PROGRESS_BYTES (64ull * 1024 * 1024)

static const struct resp_limits link_limits = {64 * 1024, 8, 64 * 1024};

int repl_primary_init(struct repl_primary *rp, struct ev_loop *loop, const char *node,
                      struct store *store, size_t backlog_bytes, double timeout_s,
                      uint64_t replid, uint64_t offset)
{
    memset(rp, 0, sizeof *rp);
    rp->loop = loop;
    snprintf(rp->node, sizeof rp->node, "%s", node);
    rp->store = store;
    rp->timeout_s = timeout_s > 0 ? timeout_s : 10;
    rp->heartbeat_ms = (int64_t)(rp->timeout_s * 1000 / 4);
    if (rp->heartbeat_ms > 1000)
        rp->heartbeat_ms = 1000;
    if (rp->heartbeat_ms < 10)
        rp->heartbeat_ms = 10;
    rp->replid = replid;
    rp->ready = offset;
    return backlog_init(&rp->backlog, backlog_bytes, offset);
}

static void link_free(struct repl_link *l)
{
    if (l->disk_fd >= 0)
        close(l->disk_fd);
    repl_chunk_free(&l->chunk);
    resp_parser_free(&l->parser);
    free(l);
}

void repl_primary_drop_all(struct repl_primary *rp, const char *why)
{
    while (rp->links)
        net_conn_abort(rp->links->conn, why); /* on_close unlinks it */
}

void repl_primary_free(struct repl_primary *rp)
{
    repl_primary_drop_all(rp, "shutting down");
    backlog_free(&rp->backlog);
}

void repl_primary_reset(struct repl_primary *rp, uint64_t replid, uint64_t offset)
{
    if (rp->links)
        log_info("db %s: new data set: dropping %d replica link(s) of its own", rp->node,
                 rp->nlinks);
    repl_primary_drop_all(rp, "new data set");
    rp->replid = replid;
    rp->ready = offset;
    backlog_reset(&rp->backlog, offset);
    rp->nsamples = 0;
}

/* ---- the stream ------------------------------------------------------- */

static void link_drop(struct repl_link *l, const char *why)
{
    log_warn("db %s: dropping replica %s (%s): %s", l->rp->node, l->name, l->conn->peer, why);
    l->rp->links_dropped++;
    net_conn_abort(l->conn, why);
}

struct scan_ctx {
    struct repl_link *l;
    int err;
};

static void scan_visit(void *arg, struct store_entry *e)
{
    struct scan_ctx *s = arg;
    /* Expired keys too: a replica holds what its upstream holds (a record
     * later in the log may still extend one; db_ops.h). */
    if (s->err)
        return;
    if (repl_chunk_add(&s->l->chunk, store_key(e), store_klen(e), store_val(e), store_vlen(e),
                       store_expire(e)) < 0)
        s->err = 1;
    else
        s->l->snap_keys++;
}

static int disk_covers(const struct repl_primary *rp, uint64_t off);

/* Appends the next part of a full resync to the link's output. 0, or -1
 * when the link was dropped. */
static int snapshot_step(struct repl_link *l)
{
    struct repl_primary *rp = l->rp;
    struct scan_ctx s = {l, 0};
    /* A follower keeps no copy: the end of the keys is all it needs. */
    int done = l->follower;
    for (int i = 0; !done && i < SCAN_STEPS && buf_size(&l->chunk.body) < REPL_CHUNK_BYTES; i++) {
        l->cursor = store_scan(rp->store, l->cursor, scan_visit, &s);
        if (l->cursor == 0) {
            done = 1;
            break;
        }
    }
    struct buf *w = &l->conn->wbuf;
    size_t before = buf_size(w);
    if (s.err || ((done || buf_size(&l->chunk.body) >= REPL_CHUNK_BYTES) &&
                  repl_chunk_flush(&l->chunk, w) < 0)) {
        link_drop(l, "out of memory during a full resync");
        return -1;
    }
    if (!done) {
        uint64_t was = l->snap_bytes;
        l->snap_bytes += buf_size(w) - before;
        if (l->snap_bytes / PROGRESS_BYTES != was / PROGRESS_BYTES)
            log_info("db %s: full resync of replica %s: %llu of about %zu keys sent (%llu MB)",
                     rp->node, l->name, (unsigned long long)l->snap_keys, rp->store->count,
                     (unsigned long long)(l->snap_bytes >> 20));
        return 0;
    }
    if (!backlog_covers(&rp->backlog, l->snap_offset) && !disk_covers(rp, l->snap_offset)) {
        link_drop(l, "neither the backlog nor the log on disk holds the start of the full "
                     "resync (the log was compacted during the copy: raise backlog)");
        return -1;
    }
    if (repl_frame_end(w, l->snap_keys, rp->backlog.end) < 0) {
        link_drop(l, "out of memory during a full resync");
        return -1;
    }
    l->snap_bytes += buf_size(w) - before;
    l->state = REPL_LINK_STREAM;
    l->sent = l->snap_offset;
    log_info("db %s: full resync of replica %s: %llu keys (%llu bytes) sent in %lld ms; "
             "streaming from offset %llu",
             rp->node, l->name, (unsigned long long)l->snap_keys,
             (unsigned long long)l->snap_bytes, (long long)(util_now_ms() - l->snap_start_ms),
             (unsigned long long)l->sent);
    return 0;
}

/* The segment holding log offset off, from the files in the log's
 * directory: 0 with its start and end (UINT64_MAX for the one being
 * written), -1 when no segment holds it. */
static int disk_find(const struct repl_primary *rp, uint64_t off, uint64_t *start, uint64_t *end)
{
    if (!rp->wal || rp->wal->fd < 0 || off >= rp->wal->written)
        return -1;
    struct wal_seg *segs;
    size_t n;
    char err[256];
    if (wal_list(rp->wal->dir, &segs, &n, err, sizeof err) < 0)
        return -1;
    int rc = -1;
    for (size_t i = n; i-- > 0;) {
        if (segs[i].start > off)
            continue;
        /* Segments end where the next begins; the newest, at the write end. */
        *start = segs[i].start;
        *end = i + 1 < n ? segs[i + 1].start : UINT64_MAX;
        rc = (*end == UINT64_MAX && segs[i].start != rp->wal->seg_start) ? -1 : 0;
        break;
    }
    free(segs);
    return rc;
}

/* 1 when a partial resync from off can be served from disk. */
static int disk_covers(const struct repl_primary *rp, uint64_t off)
{
    uint64_t s, e;
    return disk_find(rp, off, &s, &e) == 0;
}

/* Appends the next bytes from the segment files (at most up to `upto`).
 * Returns the bytes appended, 0 when none can be read yet, -1 after
 * dropping the link. */
static ssize_t disk_read(struct repl_link *l, uint64_t upto)
{
    struct repl_primary *rp = l->rp;
    /* The segment opened as the one being written was closed by a
     * rotation since: it ends where the reader finds its end. */
    if (l->disk_fd >= 0 && l->disk_seg_end == UINT64_MAX &&
        rp->wal->seg_start != l->disk_seg_start) {
        struct stat st;
        if (fstat(l->disk_fd, &st) == 0 && st.st_size >= WAL_FILE_HDR)
            l->disk_seg_end = l->disk_seg_start + (uint64_t)(st.st_size - WAL_FILE_HDR);
    }
    if (l->disk_fd >= 0 && l->sent >= l->disk_seg_end) {
        close(l->disk_fd);
        l->disk_fd = -1;
    }
    if (l->disk_fd < 0) {
        char name[32], path[1100];
        if (disk_find(rp, l->sent, &l->disk_seg_start, &l->disk_seg_end) < 0) {
            if (rp->wal && l->sent >= rp->wal->written)
                return 0; /* not written yet: the next flush brings it */
            link_drop(l, "neither the backlog nor the log on disk holds what the replica needs");
            return -1;
        }
        wal_seg_name(l->disk_seg_start, name, sizeof name);
        datadir_join(path, sizeof path, rp->wal->dir, name);
        l->disk_fd = open(path, O_RDONLY | O_CLOEXEC);
        if (l->disk_fd < 0) {
            link_drop(l, "a log segment went away while the replica was reading it");
            return -1;
        }
    }
    uint64_t limit = upto;
    if (l->disk_seg_end < limit)
        limit = l->disk_seg_end;
    if (rp->wal->written < limit)
        limit = rp->wal->written;
    if (limit <= l->sent)
        return 0;
    size_t want = (size_t)(limit - l->sent);
    if (want > 256 * 1024)
        want = 256 * 1024;
    struct buf *w = &l->conn->wbuf;
    if (buf_reserve(w, want) < 0) {
        link_drop(l, "out of memory");
        return -1;
    }
    ssize_t k = pread(l->disk_fd, buf_tail(w), want,
                      (off_t)(WAL_FILE_HDR + (l->sent - l->disk_seg_start)));
    if (k <= 0) {
        link_drop(l, k < 0 ? "a log segment cannot be read" : "a log segment ends early");
        return -1;
    }
    buf_commit(w, (size_t)k);
    l->disk_bytes += (uint64_t)k;
    return k;
}

/* Fills the link's output up to its high mark. Only appends to the write
 * buffer: the caller writes it out (net_conn_flush, or the net layer after
 * a callback) and must not use l after that. 0, or -1 when dropped. */
static int link_produce(struct repl_link *l)
{
    struct repl_primary *rp = l->rp;
    struct net_conn *c = l->conn;
    while (net_conn_alive(c) && buf_size(&c->wbuf) < LINK_HIGH) {
        if (l->state == REPL_LINK_SNAPSHOT) {
            if (snapshot_step(l) < 0)
                return -1;
            continue;
        }
        if (l->sent >= rp->ready)
            break;
        const unsigned char *p;
        size_t n = backlog_peek(&rp->backlog, l->sent, &p);
        if (n == 0) {
            /* Older than the backlog: from the log's files. */
            ssize_t k = disk_read(l, rp->ready);
            if (k < 0)
                return -1;
            if (k == 0)
                break;
            l->sent += (uint64_t)k;
            l->last_send_ms = util_now_ms();
            continue;
        }
        if (l->disk_fd >= 0) {
            close(l->disk_fd);
            l->disk_fd = -1;
        }
        if (n > rp->ready - l->sent)
            n = (size_t)(rp->ready - l->sent);
        if (n > LINK_HIGH)
            n = LINK_HIGH;
        if (buf_append(&c->wbuf, p, n) < 0) {
            link_drop(l, "out of memory");
            return -1;
        }
        l->sent += n;
        l->last_send_ms = util_now_ms();
    }
    return 0;
}

void repl_primary_pump(struct repl_primary *rp, uint64_t ready)
{
    if (ready > rp->ready)
        rp->ready = ready;
    for (struct repl_link *l = rp->links, *next; l; l = next) {
        next = l->next;
        if (l->state != REPL_LINK_STREAM || l->sent >= rp->ready ||
            buf_size(&l->conn->wbuf) >= LINK_HIGH)
            continue;
        struct net_conn *c = l->conn;
        if (link_produce(l) == 0)
            net_conn_flush(c);
    }
}

void repl_primary_cron(struct repl_primary *rp, int64_t now_ms)
{
    rp->samples[rp->sidx].off = rp->ready;
    rp->samples[rp->sidx].ms = now_ms;
    rp->sidx = (rp->sidx + 1) % REPL_LAG_SAMPLES;
    if (rp->nsamples < REPL_LAG_SAMPLES)
        rp->nsamples++;
    for (struct repl_link *l = rp->links, *next; l; l = next) {
        next = l->next;
        /* Idle and caught up: a heartbeat, at a record boundary. */
        if (l->state != REPL_LINK_STREAM || l->sent != rp->ready ||
            now_ms - l->last_send_ms < rp->heartbeat_ms || buf_size(&l->conn->wbuf) > 0)
            continue;
        if (repl_frame_heartbeat(&l->conn->wbuf, rp->ready, now_ms) < 0) {
            link_drop(l, "out of memory");
            continue;
        }
        l->last_send_ms = now_ms;
        net_conn_flush(l->conn);
    }
}

/* ---- the link's connection -------------------------------------------- */

static void link_on_read(struct net_conn *c)
{
    struct repl_link *l = c->data;
    net_conn_set_timeout(c, l->rp->timeout_s);
    while (buf_size(&c->rbuf) > 0) {
        ssize_t n = resp_parse(&l->parser, (char *)buf_head(&c->rbuf), buf_size(&c->rbuf),
                               &link_limits);
        if (n == -2)
            break;
        if (n < 0) {
            link_drop(l, "protocol error from the replica");
            return;
        }
        const char **av = l->parser.argv;
        const size_t *al = l->parser.argl;
        long long off;
        if (l->parser.argc == 3 && al[0] == 8 && strncasecmp(av[0], "replconf", 8) == 0 &&
            al[1] == 3 && strncasecmp(av[1], "ack", 3) == 0 &&
            kv_parse_ll(av[2], al[2], &off) == 0 && off >= 0) {
            if ((uint64_t)off > l->acked)
                l->acked = (uint64_t)off;
            l->last_ack_ms = util_now_ms();
            l->rp->acks_pending = 1;
        }
        buf_consume(&c->rbuf, (size_t)n);
    }
}

static void link_on_drain(struct net_conn *c)
{
    struct repl_link *l = c->data;
    if (l)
        link_produce(l);
}

static void link_on_timeout(struct net_conn *c)
{
    struct repl_link *l = c->data;
    link_drop(l, "no word from the replica within the timeout");
}

static void link_on_close(struct net_conn *c, const char *why)
{
    struct repl_link *l = c->data;
    if (!l)
        return;
    struct repl_primary *rp = l->rp;
    log_info("db %s: replica %s (%s) detached: %s", rp->node, l->name, c->peer, why);
    if (l->prev)
        l->prev->next = l->next;
    else
        rp->links = l->next;
    if (l->next)
        l->next->prev = l->prev;
    if (l->follower)
        rp->nfollowers--;
    else
        rp->nlinks--;
    rp->acks_pending = 1;
    c->data = NULL;
    link_free(l);
}

static const struct net_conn_ops link_ops = {
    .on_read = link_on_read,
    .on_drain = link_on_drain,
    .on_timeout = link_on_timeout,
    .on_close = link_on_close,
};

struct repl_link *repl_primary_psync(struct repl_primary *rp, size_t argc, const char **argv,
                                     const size_t *argl, const char *peer, struct buf *out)
{
    long long ver, off;
    if (argc < 4 || kv_parse_ll(argv[3], argl[3], &ver) < 0) {
        resp_error(out, "ERR PSYNC takes <replid> <offset> <version> [node] [listen]");
        return NULL;
    }
    if (ver != REPL_PROTO_VERSION) {
        resp_errorf(out, "ERR replication protocol version %lld is not spoken here (this node "
                         "speaks %d)", ver, REPL_PROTO_VERSION);
        return NULL;
    }
    if (rp->refuse_psync) {
        resp_error(out, "LOADING this replica's own copy is not complete yet");
        return NULL;
    }
    if (kv_parse_ll(argv[2], argl[2], &off) < 0)
        off = -1;
    struct repl_link *l = calloc(1, sizeof *l);
    if (!l) {
        resp_error(out, "ERR out of memory");
        return NULL;
    }
    l->rp = rp;
    l->disk_fd = -1;
    repl_chunk_init(&l->chunk);
    resp_parser_init(&l->parser);
    snprintf(l->name, sizeof l->name, "%.*s", argc > 4 ? (int)(argl[4] < 63 ? argl[4] : 63) : 1,
             argc > 4 ? argv[4] : "?");
    snprintf(l->listen, sizeof l->listen, "%.*s",
             argc > 5 ? (int)(argl[5] < 63 ? argl[5] : 63) : (int)strlen(peer),
             argc > 5 ? argv[5] : peer);
    l->follower = argc > 6 && argl[6] == 8 && strncasecmp(argv[6], "follower", 8) == 0;
    l->attached_ms = l->last_ack_ms = l->last_send_ms = util_now_ms();
    uint64_t id = 0;
    int ours = stream_id_parse(argv[1], argl[1], &id) == 0 && id == rp->replid;
    char rid[24];
    stream_id_format(rp->replid, rid, sizeof rid);
    /* A replica presents its epoch and the epoch its log ends in (argv 7
     * and 8): a later epoch than ours means this node is stale; a log that
     * went on past where its epoch ends in our history has writes we never
     * had (it followed a primary that was replaced). */
    uint64_t r_epoch = 0, r_log = 0, diverged = UINT64_MAX;
    int has_epoch = argc > 8 && kv_parse_ll(argv[7], argl[7], &ver) == 0 && ver >= 0;
    if (has_epoch) {
        r_epoch = (uint64_t)ver;
        has_epoch = kv_parse_ll(argv[8], argl[8], &ver) == 0 && ver >= 0;
        r_log = (uint64_t)ver;
    }
    uint64_t my_epoch = rp->ep ? rp->ep->epoch : 0;
    if (has_epoch && r_epoch > my_epoch) {
        resp_errorf(out, "STALE this node is at epoch %llu, the replica at %llu: it is not the "
                         "primary any more", (unsigned long long)my_epoch,
                    (unsigned long long)r_epoch);
        if (rp->fo)
            failover_saw_epoch(rp->fo, r_epoch);
        link_free(l);
        return NULL;
    }
    if (has_epoch && rp->ep && r_log > epoch_log(rp->ep)) {
        /* its log holds a later epoch's writes than ours: it must not take
         * our copy (it would discard them) */
        resp_errorf(out, "STALE this node's log ends in epoch %llu, the replica's in %llu",
                    (unsigned long long)epoch_log(rp->ep), (unsigned long long)r_log);
        if (rp->fo)
            failover_saw_epoch(rp->fo, r_epoch);
        link_free(l);
        return NULL;
    }
    if (has_epoch && rp->ep && ours && off >= 0) {
        uint64_t end;
        if (epoch_end_of(rp->ep, r_log, &end) < 0)
            ours = 0; /* an epoch our history does not hold: nothing is known in common */
        else if ((uint64_t)off > end)
            diverged = end;
    }
    char hist[EPOCH_HISTORY * 44]; /* "epoch:start," with 20-digit numbers */
    hist[0] = 0;
    if (rp->ep)
        epoch_hist_format(rp->ep, hist, sizeof hist);
    else
        snprintf(hist, sizeof hist, "0:0");
    int in_memory = ours && off >= 0 && diverged == UINT64_MAX &&
                    backlog_covers(&rp->backlog, (uint64_t)off);
    if (in_memory ||
        (ours && off >= 0 && diverged == UINT64_MAX && disk_covers(rp, (uint64_t)off))) {
        rp->sync_partial_ok++;
        l->state = REPL_LINK_STREAM;
        l->sent = l->acked = (uint64_t)off;
        buf_printf(out, "+CONTINUE %s %llu %llu %s\r\n", rid, (unsigned long long)off,
                   (unsigned long long)my_epoch, hist);
        log_info("db %s: replica %s (%s) resumes at offset %llu (partial resync from the %s, "
                 "%llu bytes behind)",
                 rp->node, l->name, peer, (unsigned long long)off,
                 in_memory ? "backlog" : "log on disk",
                 (unsigned long long)(rp->backlog.end - (uint64_t)off));
        return l;
    }
    if (ours && off >= 0)
        rp->sync_partial_err++;
    rp->sync_full++;
    l->state = REPL_LINK_SNAPSHOT;
    l->snap_offset = rp->backlog.end;
    l->snap_start_ms = util_now_ms();
    char dv[24] = "-";
    if (diverged != UINT64_MAX)
        snprintf(dv, sizeof dv, "%llu", (unsigned long long)diverged);
    /* The last field, the keys to come, lets the replica size its store
     * once; readers of the first six fields ignore it. */
    buf_printf(out, "+FULLRESYNC %s %llu %llu %s %s %zu\r\n", rid,
               (unsigned long long)l->snap_offset, (unsigned long long)my_epoch, hist, dv,
               l->follower ? (size_t)0 : rp->store->count);
    log_info("db %s: %s %s (%s) needs a full resync (%s): sending %zu keys, then the log "
             "from offset %llu",
             rp->node, l->follower ? "follower" : "replica", l->name, peer,
             !ours ? "another data set or history"
             : off < 0 ? "no offset"
             : diverged != UINT64_MAX ? "its log has writes of an old epoch this node never had"
                       : "neither the backlog nor the log on disk holds its offset",
             l->follower ? (size_t)0 : rp->store->count, (unsigned long long)l->snap_offset);
    return l;
}

void repl_primary_attach(struct net_conn *c, void *arg)
{
    struct repl_link *l = arg;
    struct repl_primary *rp = l->rp;
    l->conn = c;
    c->ops = &link_ops;
    c->data = l;
    l->next = rp->links;
    if (rp->links)
        rp->links->prev = l;
    rp->links = l;
    if (l->follower)
        rp->nfollowers++;
    else
        rp->nlinks++;
    net_conn_set_timeout(c, rp->timeout_s);
    if (buf_size(&c->rbuf))
        link_on_read(c);
    if (net_conn_alive(c) && c->data == l)
        link_produce(l);
}

/* ---- lag, counts, INFO ------------------------------------------------- */

int repl_primary_count_acked(const struct repl_primary *rp, uint64_t offset)
{
    int n = 0;
    for (const struct repl_link *l = rp->links; l; l = l->next)
        if (!l->follower && l->state == REPL_LINK_STREAM && l->acked >= offset)
            n++;
    return n;
}

uint64_t repl_link_lag_bytes(const struct repl_link *l)
{
    uint64_t end = l->rp->ready;
    return l->acked < end ? end - l->acked : 0;
}

int64_t repl_link_lag_ms(const struct repl_link *l, int64_t now_ms)
{
    const struct repl_primary *rp = l->rp;
    if (l->acked >= rp->ready)
        return 0;
    /* The newest sample at or before the replica's offset: the primary was
     * there then, and has moved on since the sample after it. */
    int64_t since = now_ms;
    for (int i = 0; i < rp->nsamples; i++) {
        int k = (rp->sidx - 1 - i + 2 * REPL_LAG_SAMPLES) % REPL_LAG_SAMPLES;
        if (rp->samples[k].off <= l->acked)
            break;
        since = rp->samples[k].ms;
    }
    return now_ms - since;
}

int64_t repl_primary_max_lag_ms(const struct repl_primary *rp, int64_t now_ms)
{
    int64_t m = 0;
    for (const struct repl_link *l = rp->links; l; l = l->next) {
        if (l->follower)
            continue;
        int64_t v = l->state == REPL_LINK_STREAM ? repl_link_lag_ms(l, now_ms)
                                                 : now_ms - l->attached_ms;
        if (v > m)
            m = v;
    }
    return m;
}

int repl_primary_good(const struct repl_primary *rp, int64_t now_ms)
{
    int64_t max_lag = rp->max_lag_ms > 0 ? rp->max_lag_ms : (int64_t)(rp->timeout_s * 1000);
    int n = 0;
    for (const struct repl_link *l = rp->links; l; l = l->next)
        if (!l->follower && l->state == REPL_LINK_STREAM && now_ms - l->last_ack_ms <= max_lag &&
            repl_link_lag_ms(l, now_ms) <= max_lag)
            n++;
    return n;
}

int repl_primary_refuses(const struct repl_primary *rp, int64_t now_ms)
{
    return rp->min_replicas > 0 && repl_primary_good(rp, now_ms) < rp->min_replicas;
}

static void split_listen(const char *addr, char *host, size_t hn, int *port)
{
    const char *colon = strrchr(addr, ':');
    *port = colon ? atoi(colon + 1) : 0;
    size_t len = colon ? (size_t)(colon - addr) : strlen(addr);
    if (len >= hn)
        len = hn - 1;
    memcpy(host, addr, len);
    host[len] = 0;
}

void repl_primary_info(const struct repl_primary *rp, struct buf *b, int64_t now_ms)
{
    buf_printf(b, "connected_slaves:%d\r\n", rp->nlinks);
    /* Replicas as Redis lists them, then the change-stream followers
     * (caches), which hold no copy, under names of their own. */
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 1)
            buf_printf(b, "connected_followers:%d\r\n", rp->nfollowers);
        int i = 0;
        for (const struct repl_link *l = rp->links; l; l = l->next) {
            if (l->follower != pass)
                continue;
            char host[64];
            int port;
            split_listen(l->listen, host, sizeof host, &port);
            buf_printf(b,
                       "%s%d:ip=%s,port=%d,state=%s,offset=%llu,lag=%lld,lag_bytes=%llu,"
                       "lag_ms=%lld,name=%s\r\n",
                       pass ? "follower" : "slave", i++, host, port,
                       l->state == REPL_LINK_STREAM ? "online" : "send_bulk",
                       (unsigned long long)l->acked, (long long)((now_ms - l->last_ack_ms) / 1000),
                       (unsigned long long)repl_link_lag_bytes(l),
                       (long long)repl_link_lag_ms(l, now_ms), l->name);
        }
    }
    char rid[24];
    stream_id_format(rp->replid, rid, sizeof rid);
    buf_printf(b,
               "master_replid:%s\r\nmaster_repl_offset:%llu\r\nrepl_backlog_active:1\r\n"
               "repl_backlog_size:%zu\r\nrepl_backlog_first_byte_offset:%llu\r\n"
               "repl_backlog_histlen:%llu\r\nrepl_timeout_ms:%lld\r\nmin_slaves_good_slaves:%d\r\n"
               "min_replicas:%d\r\nmax_lag_ms:%lld\r\nsync_full:%llu\r\nsync_partial_ok:%llu\r\n"
               "sync_partial_err:%llu\r\nrepl_links_dropped:%llu\r\n",
               rid, (unsigned long long)rp->ready, rp->backlog.max,
               (unsigned long long)rp->backlog.start,
               (unsigned long long)(rp->backlog.end - rp->backlog.start),
               (long long)(rp->timeout_s * 1000), repl_primary_good(rp, now_ms), rp->min_replicas,
               (long long)rp->max_lag_ms, (unsigned long long)rp->sync_full,
               (unsigned long long)rp->sync_partial_ok, (unsigned long long)rp->sync_partial_err,
               (unsigned long long)rp->links_dropped);
}

void repl_primary_status(const struct repl_primary *rp, struct buf *b, int64_t now_ms)
{
    char rid[24];
    stream_id_format(rp->replid, rid, sizeof rid);
    buf_printf(b,
               "\"replid\":\"%s\",\"repl_offset\":%llu,\"connected_replicas\":%d,"
               "\"connected_followers\":%d,\"good_replicas\":%d,\"sync_full\":%llu,\"sync_partial_ok\":%llu,"
               "\"sync_partial_err\":%llu,\"replicas\":[",
               rid, (unsigned long long)rp->ready, rp->nlinks, rp->nfollowers,
               repl_primary_good(rp, now_ms),
               (unsigned long long)rp->sync_full, (unsigned long long)rp->sync_partial_ok,
               (unsigned long long)rp->sync_partial_err);
    for (const struct repl_link *l = rp->links; l; l = l->next) {
        buf_printf(b, "%s{\"node\":", l == rp->links ? "" : ",");
        buf_json_string(b, l->name);
        buf_printf(b, ",\"listen\":");
        buf_json_string(b, l->listen);
        buf_printf(b,
                   ",\"follower\":%s,\"state\":\"%s\",\"offset\":%llu,\"lag_bytes\":%llu,"
                   "\"lag_ms\":%lld,\"sync_keys\":%llu,\"sync_bytes\":%llu}",
                   l->follower ? "true" : "false",
                   l->state == REPL_LINK_STREAM ? "online" : "send_bulk",
                   (unsigned long long)l->acked, (unsigned long long)repl_link_lag_bytes(l),
                   (long long)repl_link_lag_ms(l, now_ms), (unsigned long long)l->snap_keys,
                   (unsigned long long)l->snap_bytes);
    }
    buf_printf(b, "]");
}
