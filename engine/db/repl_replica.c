/* repl_replica: following an upstream db node — the handshake, the
 * stream, full resyncs into a second store and a new data directory, acks
 * and reconnects (see repl_replica.h). */
#include "repl_replica.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "datadir.h"
#include "db_ops.h"
#include "failover.h"
#include "log.h"
#include "stream_follower.h" /* the replication id as text */
#include "repl_proto.h"
#include "util.h"
#include "wal.h"

#define RECONNECT_MS 500

static void link_fail(struct repl_replica *rr, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* ---- the data directory ------------------------------------------------ */

static int remove_data_files(const char *dir, char *err, size_t errlen)
{
    struct wal_seg *segs;
    size_t n;
    if (wal_list(dir, &segs, &n, err, errlen) < 0)
        return -1;
    char path[1100];
    for (size_t i = 0; i < n; i++) {
        datadir_join(path, sizeof path, dir, segs[i].name);
        if (unlink(path) < 0 && errno != ENOENT) {
            snprintf(err, errlen, "cannot remove '%s': %s", path, strerror(errno));
            free(segs);
            return -1;
        }
    }
    free(segs);
    datadir_join(path, sizeof path, dir, SNAPSHOT_NAME);
    if (unlink(path) < 0 && errno != ENOENT) {
        snprintf(err, errlen, "cannot remove '%s': %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

int repl_replica_clean_dir(const char *dir, char *err, size_t errlen)
{
    char path[1100];
    struct stat st;
    datadir_join(path, sizeof path, dir, REPL_SYNC_MARKER);
    if (stat(path, &st) < 0)
        return 0;
    log_warn("db: %s holds a full resync that did not finish: starting empty (the replica "
             "will resync in full)",
             dir);
    if (remove_data_files(dir, err, errlen) < 0)
        return -1;
    unlink(path);
    datadir_fsync_dir(dir);
    return 0;
}

/* Log records in [from, to) of the segments in dir (what a node that
 * rejoins discards), for the log line; 0 when they cannot be read. */
uint64_t repl_count_records(const char *dir, uint64_t from, uint64_t to)
{
    struct wal_seg *segs;
    size_t n;
    char err[256];
    if (from >= to || wal_list(dir, &segs, &n, err, sizeof err) < 0)
        return 0;
    uint64_t count = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t s0 = segs[i].start, s1 = i + 1 < n ? segs[i + 1].start : UINT64_MAX;
        if (s1 <= from || s0 >= to)
            continue;
        char path[1100];
        datadir_join(path, sizeof path, dir, segs[i].name);
        FILE *fp = fopen(path, "rb");
        if (!fp)
            continue;
        struct buf b;
        buf_init(&b);
        char chunk[65536];
        size_t k;
        while ((k = fread(chunk, 1, sizeof chunk, fp)) > 0)
            if (buf_append(&b, chunk, k) < 0)
                break;
        fclose(fp);
        const unsigned char *d = (const unsigned char *)buf_head(&b);
        size_t len = buf_size(&b), at = WAL_FILE_HDR;
        while (at < len) {
            const unsigned char *pl;
            size_t plen;
            ssize_t r = wal_frame_parse(d + at, len - at, &pl, &plen);
            if (r <= 0)
                break;
            uint64_t off = s0 + (at - WAL_FILE_HDR);
            if (off >= from && off < to)
                count++;
            at += (size_t)r;
        }
        buf_free(&b);
    }
    free(segs);
    return count;
}

/* ---- a full resync ---------------------------------------------------- */

static void full_discard(struct repl_replica *rr)
{
    if (rr->has_writer)
        snapshot_writer_abort(&rr->sw);
    rr->has_writer = 0;
    if (rr->loading || rr->state == REPL_R_FULL)
        store_free(&rr->next);
    rr->loading = 0;
    rr->rp->refuse_psync = 0;
    rr->p->auto_compact = 1;
}

static int full_begin(struct repl_replica *rr, uint64_t id, uint64_t offset, uint64_t nkeys,
                      char *err, size_t errlen)
{
    struct persist *p = rr->p;
    if (p->child > 0) {
        snprintf(err, errlen, "a snapshot is being written; the full resync waits for it");
        return -1;
    }
    if (rr->loading) {
        store_free(&rr->next);
        rr->loading = 0;
    }
    struct snapshot_hdr h = {.id = id, .offset = offset, .created_ms = util_now_ms()};
    if (snapshot_writer_open(&rr->sw, p->dd.path, &h, err, errlen) < 0)
        return -1;
    rr->has_writer = 1;
    store_init(&rr->next, 0, util_now_ms());
    rr->next.keep_expired = 1;
    /* Sized once for the keys to come rather than doubled ~20 times on the
     * way (each doubling rehashes every key in). A hint: short of memory,
     * the table just grows as keys arrive. */
    rr->full_announced = nkeys;
    if (nkeys)
        (void)store_reserve(&rr->next, (size_t)nkeys);
    rr->full_id = id;
    rr->full_offset = offset;
    rr->full_keys = rr->full_bytes = 0;
    rr->full_start_ms = util_now_ms();
    /* Nothing of ours is whole until this ends: no replica of ours may
     * start from it, no snapshot of the old data may land on the new. */
    repl_primary_reset(rr->rp, p->id, p->wal.end);
    rr->rp->refuse_psync = 1;
    p->auto_compact = 0;
    return 0;
}

static int full_entry(void *arg, const char *k, size_t kl, const char *v, size_t vl, int64_t x)
{
    struct repl_replica *rr = arg;
    int64_t now = util_now_ms();
    /* A key met twice by the upstream's scan: the log that follows has the
     * rest. An expired key is kept like any other (db_ops.h). */
    if (store_find(&rr->next, k, kl))
        return 0;
    if (!store_insert(&rr->next, k, kl, v, vl, x, now))
        return -1;
    if (snapshot_writer_add(&rr->sw, k, kl, v, vl, x) < 0)
        return -1;
    rr->full_keys++;
    return 0;
}

static void swap_in(struct repl_replica *rr)
{
    struct store old = rr->ks->store;
    rr->full_resizes = rr->next.resizes;
    (void)store_reserve(&rr->next, 0); /* served now: sized by its load from here */
    rr->ks->store = rr->next;
    store_free(&old);
    rr->loading = 0;
    rr->rp->refuse_psync = 0;
    rr->p->auto_compact = 1;
    log_info("db %s: full resync from %s complete: %zu keys, serving them (offset %llu)",
             rr->node, rr->upstream, rr->ks->store.count,
             (unsigned long long)rr->p->wal.end);
}

/* The keys are all here: the data directory becomes snapshot(P) + a new
 * log from P, under the SYNCING marker so a crash in between is seen. */
static int full_end(struct repl_replica *rr, uint64_t upto, char *err, size_t errlen)
{
    struct persist *p = rr->p;
    const char *dir = p->dd.path;
    char why[600];
    if (datadir_write_atomic(dir, REPL_SYNC_MARKER, "full resync\n", 12, why, sizeof why) < 0) {
        snprintf(err, errlen, "%s", why);
        return -1;
    }
    wal_close(&p->wal);
    int rc = remove_data_files(dir, why, sizeof why);
    rr->has_writer = 0;
    if (rc == 0)
        rc = snapshot_writer_finish(&rr->sw, why, sizeof why);
    else
        snapshot_writer_abort(&rr->sw);
    if (rc == 0)
        rc = wal_create(&p->wal, dir, rr->full_id, rr->full_offset, rr->policy, why, sizeof why);
    if (rc < 0) {
        /* The node cannot go on with a directory in this state: the
         * marker makes the next start begin empty. */
        log_error("db %s: could not install the full resync in %s: %s; stopping", rr->node, dir,
                  why);
        abort();
    }
    if (rr->ep) {
        /* the copy's history is the upstream's: written before the marker
         * goes, so a crash in between starts empty rather than with a
         * history that does not match the files */
        struct epoch_state e = *rr->ep;
        memcpy(e.hist, rr->full_hist.hist, sizeof e.hist);
        e.nhist = rr->full_hist.nhist;
        if (epoch_log(&e) > e.epoch)
            e.epoch = epoch_log(&e);
        if (epoch_save(&e, dir, why, sizeof why) < 0) {
            log_error("db %s: could not write the epoch file in %s: %s; stopping", rr->node, dir,
                      why);
            abort();
        }
        *rr->ep = e;
    }
    char path[1100];
    datadir_join(path, sizeof path, dir, REPL_SYNC_MARKER);
    unlink(path);
    datadir_fsync_dir(dir);
    struct stat st;
    datadir_join(path, sizeof path, dir, SNAPSHOT_NAME);
    p->id = rr->full_id;
    p->has_snapshot = 1;
    p->snap_offset = rr->full_offset;
    p->snap_size = stat(path, &st) == 0 ? (uint64_t)st.st_size : 0;
    p->last_save_ms = util_now_ms();
    repl_primary_reset(rr->rp, rr->full_id, rr->full_offset);
    rr->rp->refuse_psync = 1;
    rr->loading = 1;
    rr->load_until = upto;
    rr->full_syncs++;
    log_info("db %s: full resync from %s: %llu keys received in %lld ms; applying the log from "
             "offset %llu to %llu before serving them",
             rr->node, rr->upstream, (unsigned long long)rr->full_keys,
             (long long)(util_now_ms() - rr->full_start_ms), (unsigned long long)rr->full_offset,
             (unsigned long long)upto);
    if (p->wal.end >= upto)
        swap_in(rr);
    (void)err;
    (void)errlen;
    return 0;
}

/* ---- the stream ------------------------------------------------------- */

static int apply_record(struct repl_replica *rr, const unsigned char *frame, size_t framed,
                        const struct repl_frame *f, char *err, size_t errlen)
{
    struct store *target = rr->loading ? &rr->next : &rr->ks->store;
    if (db_ops_apply(target, f->payload, f->plen, util_now_ms(), err, errlen) < 0)
        return -1;
    if (persist_append(rr->p, f->payload, f->plen) == 0) {
        log_error("db %s: out of memory appending to the log; stopping", rr->node);
        abort();
    }
    repl_primary_feed(rr->rp, frame, framed);
    if (rr->loading && rr->p->wal.end >= rr->load_until)
        swap_in(rr);
    if (rr->p->wal.end >= rr->upstream_offset) {
        rr->upstream_offset = rr->p->wal.end;
        rr->caught_up_ms = util_now_ms();
    }
    return 0;
}

static void send_ack(struct repl_replica *rr)
{
    if (!rr->conn || rr->state < REPL_R_FULL)
        return;
    uint64_t off = rr->p->wal.end;
    char num[32];
    int nl = snprintf(num, sizeof num, "%llu", (unsigned long long)off);
    char msg[96];
    int n = snprintf(msg, sizeof msg, "*3\r\n$8\r\nREPLCONF\r\n$3\r\nACK\r\n$%d\r\n%s\r\n",
                     nl, num);
    net_conn_write(rr->conn, msg, (size_t)n);
    rr->acked = off;
}

/* One line of the handshake: 1 done with it, 0 need more, -1 failed. */
static int handshake_line(struct repl_replica *rr, struct net_conn *c)
{
    char line[STREAM_HANDSHAKE_LINE_MAX + 1]; /* the epoch history is in it */
    int got = stream_handshake_line(&c->rbuf, line, sizeof line);
    if (got < 0)
        link_fail(rr, "the upstream's answer is not a replication handshake");
    if (got <= 0)
        return got;
    if (rr->auth_pending) {
        rr->auth_pending = 0;
        if (strcmp(line, "+OK") != 0) {
            link_fail(rr, "AUTH refused by %s: %s", rr->upstream, line);
            return -1;
        }
        return 1;
    }
    char kind[16], idtxt[32], histtxt[1024], dv[32];
    unsigned long long off, uep = 0, nkeys = 0;
    uint64_t id;
    /* +FULLRESYNC's 7th field, the key count, is newer than the rest: an
     * upstream without it sends 3 or 6 fields (and a reader of 6 ignores
     * it). */
    int nf = sscanf(line, "+%15s %31s %llu %llu %1023s %31s %llu", kind, idtxt, &off, &uep,
                    histtxt, dv, &nkeys);
    if (nf < 3 || stream_id_parse(idtxt, strlen(idtxt), &id) < 0) {
        link_fail(rr, "PSYNC refused by %s: %s", rr->upstream, line);
        return -1;
    }
    char err[600];
    struct epoch_state up;
    epoch_init(&up);
    if (rr->ep) {
        /* An upstream that says no epoch (a version before failover) is
         * at epoch 0: followed only by a node whose log is of epoch 0. */
        if (nf >= 5 && epoch_hist_parse(&up, histtxt) < 0) {
            link_fail(rr, "the upstream %s sends a bad epoch history", rr->upstream);
            return -1;
        }
        if (nf < 5)
            uep = 0;
        up.epoch = uep;
        if (epoch_log(&up) < epoch_log(rr->ep)) {
            link_fail(rr, "the upstream %s has a log from epoch %llu, before this node's %llu: "
                          "not taking its copy", rr->upstream,
                      (unsigned long long)epoch_log(&up),
                      (unsigned long long)epoch_log(rr->ep));
            return -1;
        }
        if (uep < rr->ep->epoch) {
            link_fail(rr, "the upstream %s is at epoch %llu, before this node's %llu: not "
                          "following it", rr->upstream, uep,
                      (unsigned long long)rr->ep->epoch);
            return -1;
        }
    }
    if (strcmp(kind, "CONTINUE") == 0) {
        if (id != rr->p->id || off != rr->p->wal.end) {
            link_fail(rr, "the upstream continues at %s/%llu, not where this log ends", idtxt, off);
            return -1;
        }
        if (rr->ep && (uep > rr->ep->epoch || up.nhist != rr->ep->nhist ||
                       memcmp(up.hist, rr->ep->hist, (size_t)up.nhist * sizeof up.hist[0]))) {
            /* our log is a prefix of the upstream's: its history is ours */
            struct epoch_state e = *rr->ep;
            if (uep > e.epoch) {
                e.epoch = uep;
                e.voted_for[0] = 0;
            }
            memcpy(e.hist, up.hist, sizeof e.hist);
            e.nhist = up.nhist;
            if (epoch_save(&e, rr->p->dd.path, err, sizeof err) < 0) {
                link_fail(rr, "cannot write the epoch file: %s", err);
                return -1;
            }
            *rr->ep = e;
            /* replicas of ours learn it from us: they handshake again */
            repl_primary_drop_all(rr->rp, "the upstream's history changed");
        }
        rr->state = REPL_R_STREAM;
        rr->partial_syncs++;
        log_info("db %s: following %s from offset %llu (partial resync)", rr->node, rr->upstream,
                 off);
    } else if (strcmp(kind, "FULLRESYNC") == 0) {
        if (rr->ep && nf >= 6 && strcmp(dv, "-") != 0) {
            unsigned long long at = strtoull(dv, NULL, 10);
            uint64_t end = rr->p->wal.end;
            rr->discarded_bytes = end > at ? end - at : 0;
            rr->discarded_writes = repl_count_records(rr->p->dd.path, at, end);
            log_warn("db %s: discarding %llu write(s) (%llu bytes of log from offset %llu) that "
                     "the primary of epoch %llu (%s) never had; taking its copy",
                     rr->node, (unsigned long long)rr->discarded_writes,
                     (unsigned long long)rr->discarded_bytes, at, uep, rr->upstream_node);
        }
        if (rr->ep && uep > rr->ep->epoch) {
            struct epoch_state e = *rr->ep;
            e.epoch = uep;
            e.voted_for[0] = 0;
            if (epoch_save(&e, rr->p->dd.path, err, sizeof err) < 0) {
                link_fail(rr, "cannot write the epoch file: %s", err);
                return -1;
            }
            *rr->ep = e;
        }
        rr->full_hist = up;
        if (full_begin(rr, id, off, nf >= 7 ? (uint64_t)nkeys : 0, err, sizeof err) < 0) {
            link_fail(rr, "%s", err);
            return -1;
        }
        rr->state = REPL_R_FULL;
        log_info("db %s: full resync from %s (replication id %s, offset %llu)", rr->node,
                 rr->upstream, idtxt, off);
    } else {
        link_fail(rr, "PSYNC refused by %s: %s", rr->upstream, line);
        return -1;
    }
    rr->link_up_since_ms = util_now_ms();
    rr->last_error[0] = 0;
    return 1;
}

static void link_on_read(struct net_conn *c)
{
    struct repl_replica *rr = c->data;
    int64_t now = util_now_ms();
    rr->last_io_ms = now;
    net_conn_set_timeout(c, rr->timeout_s);
    char err[600];
    while (buf_size(&c->rbuf) > 0 && net_conn_alive(c) && rr->conn == c) {
        if (rr->state == REPL_R_HANDSHAKE) {
            if (handshake_line(rr, c) <= 0)
                break;
            continue;
        }
        struct repl_frame f;
        const unsigned char *frame = (const unsigned char *)buf_head(&c->rbuf);
        ssize_t n = repl_frame_next(frame, buf_size(&c->rbuf), &f, err, sizeof err);
        if (n == -2)
            break;
        if (n < 0) {
            rr->bad_frames++;
            link_fail(rr, "bad frame from %s at offset %llu: %s", rr->upstream,
                      (unsigned long long)rr->p->wal.end, err);
            return;
        }
        switch (f.kind) {
        case REPL_FRAME_LOG:
            if (rr->state != REPL_R_STREAM) {
                link_fail(rr, "a log record in the middle of a full resync");
                return;
            }
            if (apply_record(rr, frame, (size_t)n, &f, err, sizeof err) < 0) {
                rr->bad_frames++;
                link_fail(rr, "a record from %s does not apply: %s", rr->upstream, err);
                return;
            }
            break;
        case REPL_FRAME_HEARTBEAT:
            rr->upstream_offset = (uint64_t)f.a;
            if (rr->p->wal.end >= rr->upstream_offset)
                rr->caught_up_ms = now;
            break;
        case REPL_FRAME_ENTRIES:
            if (rr->state != REPL_R_FULL ||
                repl_entries_each(&f, full_entry, rr, err, sizeof err) < 0) {
                link_fail(rr, "%s", rr->state != REPL_R_FULL ? "keys outside a full resync" : err);
                return;
            }
            rr->full_bytes += (uint64_t)n;
            break;
        case REPL_FRAME_END:
            if (rr->state != REPL_R_FULL || (uint64_t)f.b < rr->full_offset) {
                link_fail(rr, "an unexpected end of a full resync");
                return;
            }
            if (full_end(rr, (uint64_t)f.b, err, sizeof err) < 0) {
                link_fail(rr, "%s", err);
                return;
            }
            rr->state = REPL_R_STREAM;
            break;
        }
        buf_consume(&c->rbuf, (size_t)n);
    }
    if (net_conn_alive(c) && rr->conn == c && rr->acked != rr->p->wal.end)
        send_ack(rr);
}

static void link_on_connect(struct net_conn *c, int err)
{
    struct repl_replica *rr = c->data;
    if (err) {
        link_fail(rr, "cannot connect to %s: %s", rr->upstream, strerror(err));
        return;
    }
    struct buf b;
    buf_init(&b);
    if (rr->has_password) {
        buf_printf(&b, "*2\r\n$4\r\nAUTH\r\n$%zu\r\n%s\r\n", strlen(rr->password), rr->password);
        rr->auth_pending = 1;
    }
    char id[24], off[32], ver[8], ep[24], lep[24];
    stream_id_format(rr->p->id, id, sizeof id);
    snprintf(off, sizeof off, "%llu", (unsigned long long)rr->p->wal.end);
    snprintf(ver, sizeof ver, "%d", REPL_PROTO_VERSION);
    snprintf(ep, sizeof ep, "%llu", (unsigned long long)(rr->ep ? rr->ep->epoch : 0));
    snprintf(lep, sizeof lep, "%llu", (unsigned long long)(rr->ep ? epoch_log(rr->ep) : 0));
    const char *args[] = {"PSYNC", id, off, ver, rr->node, rr->listen, "replica", ep, lep};
    size_t nargs = rr->ep ? 9 : 6;
    buf_printf(&b, "*%zu\r\n", nargs);
    for (size_t i = 0; i < nargs; i++)
        buf_printf(&b, "$%zu\r\n%s\r\n", strlen(args[i]), args[i]);
    rr->state = REPL_R_HANDSHAKE;
    net_conn_write(c, buf_head(&b), buf_size(&b));
    buf_free(&b);
    net_conn_set_timeout(c, rr->timeout_s);
}

static void link_on_timeout(struct net_conn *c)
{
    struct repl_replica *rr = c->data;
    link_fail(rr, "no word from %s within %.1f s", rr->upstream, rr->timeout_s);
}

static void link_on_eof(struct net_conn *c)
{
    struct repl_replica *rr = c->data;
    link_fail(rr, "%s closed the link", rr->upstream);
}

static void link_on_close(struct net_conn *c, const char *why)
{
    struct repl_replica *rr = c->data;
    (void)why;
    if (!rr || rr->conn != c)
        return;
    if (rr->state == REPL_R_FULL)
        full_discard(rr);
    rr->conn = NULL;
    rr->state = REPL_R_IDLE;
    rr->link_up_since_ms = 0;
    rr->next_connect_ms = util_now_ms() + RECONNECT_MS;
    c->data = NULL;
}

static const struct net_conn_ops link_ops = {
    .on_read = link_on_read,
    .on_eof = link_on_eof,
    .on_connect = link_on_connect,
    .on_timeout = link_on_timeout,
    .on_close = link_on_close,
};

static void link_fail(struct repl_replica *rr, const char *fmt, ...)
{
    char msg[sizeof rr->last_error];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    /* A primary that stays down is said once, not every attempt. */
    if (strcmp(msg, rr->last_error) != 0)
        log_warn("db %s: replication link: %s; retrying", rr->node, msg);
    snprintf(rr->last_error, sizeof rr->last_error, "%s", msg);
    rr->link_drops++;
    if (rr->conn)
        net_conn_abort(rr->conn, msg);
}

static void do_connect(struct repl_replica *rr)
{
    struct net_conn *c =
        net_connect(rr->loop, (const struct sockaddr *)&rr->addr, rr->addrlen, &link_ops, rr);
    if (!c) {
        rr->next_connect_ms = util_now_ms() + RECONNECT_MS;
        return;
    }
    rr->conn = c;
    rr->state = REPL_R_CONNECTING;
    c->write_high = 1024 * 1024;
    net_conn_set_timeout(c, rr->timeout_s);
}

static void timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct repl_replica *rr = w->data;
    int64_t now = util_now_ms();
    if (rr->state == REPL_R_IDLE && now >= rr->next_connect_ms)
        do_connect(rr);
    else if (rr->conn && rr->state >= REPL_R_FULL)
        send_ack(rr);
}

/* ---- setup and reporting ---------------------------------------------- */

int repl_replica_init(struct repl_replica *rr, struct ev_loop *loop, const char *node,
                      const char *listen, const char *upstream, const char *upstream_node,
                      const char *password, double timeout_s, struct keyspace *ks,
                      struct persist *p, struct repl_primary *rp, int policy, char *err,
                      size_t errlen)
{
    memset(rr, 0, sizeof *rr);
    rr->loop = loop;
    snprintf(rr->node, sizeof rr->node, "%s", node);
    snprintf(rr->listen, sizeof rr->listen, "%s", listen);
    snprintf(rr->upstream, sizeof rr->upstream, "%s", upstream);
    snprintf(rr->upstream_node, sizeof rr->upstream_node, "%s", upstream_node);
    if (password && password[0]) {
        rr->has_password = 1;
        snprintf(rr->password, sizeof rr->password, "%s", password);
    }
    if (util_parse_addr(upstream, &rr->addr, &rr->addrlen, err, errlen) < 0)
        return -1;
    rr->timeout_s = timeout_s > 0 ? timeout_s : 10;
    rr->ack_ms = (int64_t)(rr->timeout_s * 1000 / 4);
    if (rr->ack_ms > 1000)
        rr->ack_ms = 1000;
    if (rr->ack_ms < 10)
        rr->ack_ms = 10;
    rr->ks = ks;
    rr->p = p;
    rr->rp = rp;
    rr->policy = policy;
    rr->state = REPL_R_IDLE;
    rr->upstream_offset = p->wal.end;
    rr->caught_up_ms = util_now_ms();
    ks->read_only = 1;
    ks->store.keep_expired = 1;
    ev_timer_init(&rr->timer, timer_cb, (double)rr->ack_ms / 1000, (double)rr->ack_ms / 1000);
    rr->timer.data = rr;
    return 0;
}

void repl_replica_start(struct repl_replica *rr)
{
    ev_timer_start(rr->loop, &rr->timer);
    do_connect(rr);
}

void repl_replica_free(struct repl_replica *rr)
{
    if (!rr->loop)
        return;
    ev_timer_stop(rr->loop, &rr->timer);
    if (rr->conn)
        net_conn_abort(rr->conn, "shutting down");
    if (rr->has_writer)
        snapshot_writer_abort(&rr->sw);
    rr->has_writer = 0;
    if (rr->loading)
        store_free(&rr->next);
    rr->loading = 0;
}

int repl_replica_busy(const struct repl_replica *rr)
{
    return rr->state == REPL_R_FULL || rr->loading;
}

int repl_replica_link_up(const struct repl_replica *rr)
{
    return rr->conn && rr->state >= REPL_R_FULL;
}

uint64_t repl_replica_lag_bytes(const struct repl_replica *rr)
{
    uint64_t off = rr->p->wal.end;
    return rr->upstream_offset > off ? rr->upstream_offset - off : 0;
}

int64_t repl_replica_lag_ms(const struct repl_replica *rr, int64_t now_ms)
{
    if (repl_replica_link_up(rr) && rr->state == REPL_R_STREAM && !rr->loading &&
        rr->p->wal.end >= rr->upstream_offset)
        return 0;
    return now_ms - rr->caught_up_ms;
}

void repl_replica_info(const struct repl_replica *rr, struct buf *b, int64_t now_ms)
{
    const char *colon = strrchr(rr->upstream, ':');
    int hl = colon ? (int)(colon - rr->upstream) : (int)strlen(rr->upstream);
    buf_printf(b,
               "master_host:%.*s\r\nmaster_port:%s\r\nmaster_node:%s\r\nmaster_link_status:%s\r\n"
               "master_last_io_seconds_ago:%lld\r\nmaster_sync_in_progress:%d\r\n"
               "slave_read_repl_offset:%llu\r\nslave_repl_offset:%llu\r\n",
               hl, rr->upstream, colon ? colon + 1 : "", rr->upstream_node,
               repl_replica_link_up(rr) ? "up" : "down",
               rr->last_io_ms ? (long long)((now_ms - rr->last_io_ms) / 1000) : -1LL,
               rr->state == REPL_R_FULL || rr->loading, (unsigned long long)rr->p->wal.end,
               (unsigned long long)rr->p->wal.end);
    if (rr->state == REPL_R_FULL)
        buf_printf(b, "master_sync_keys:%llu\r\nmaster_sync_read_bytes:%llu\r\n",
                   (unsigned long long)rr->full_keys, (unsigned long long)rr->full_bytes);
    if (!repl_replica_link_up(rr))
        buf_printf(b, "master_link_down_since_seconds:%lld\r\n",
                   rr->last_io_ms ? (long long)((now_ms - rr->last_io_ms) / 1000) : -1LL);
    buf_printf(b,
               "slave_priority:100\r\nslave_read_only:1\r\nreplica_announced:1\r\n"
               "master_upstream_offset:%llu\r\nlag_bytes:%llu\r\nlag_ms:%lld\r\n"
               "master_sync_full:%llu\r\nmaster_sync_partial:%llu\r\nmaster_bad_frames:%llu\r\n"
               "master_link_drops:%llu\r\nmaster_sync_announced_keys:%llu\r\n"
               "master_sync_resizes:%llu\r\n",
               (unsigned long long)rr->upstream_offset,
               (unsigned long long)repl_replica_lag_bytes(rr),
               (long long)repl_replica_lag_ms(rr, now_ms), (unsigned long long)rr->full_syncs,
               (unsigned long long)rr->partial_syncs, (unsigned long long)rr->bad_frames,
               (unsigned long long)rr->link_drops, (unsigned long long)rr->full_announced,
               (unsigned long long)rr->full_resizes);
}

void repl_replica_status(const struct repl_replica *rr, struct buf *b, int64_t now_ms)
{
    buf_printf(b, "\"upstream\":");
    buf_json_string(b, rr->upstream);
    buf_printf(b, ",\"upstream_node\":");
    buf_json_string(b, rr->upstream_node);
    buf_printf(b,
               ",\"link\":\"%s\",\"sync_in_progress\":%s,\"replica_offset\":%llu,"
               "\"lag_bytes\":%llu,\"lag_ms\":%lld,\"master_sync_full\":%llu,"
               "\"master_sync_partial\":%llu,\"bad_frames\":%llu",
               repl_replica_link_up(rr) ? "up" : "down",
               rr->state == REPL_R_FULL || rr->loading ? "true" : "false",
               (unsigned long long)rr->p->wal.end,
               (unsigned long long)repl_replica_lag_bytes(rr),
               (long long)repl_replica_lag_ms(rr, now_ms), (unsigned long long)rr->full_syncs,
               (unsigned long long)rr->partial_syncs, (unsigned long long)rr->bad_frames);
}
