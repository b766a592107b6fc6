/* db_server: the write path with held replies and group commit,
 * persistence commands, disk-error handling (see db_server.h). Clients,
 * parsing and the hold buffers themselves are resp_server's; the commands
 * and the command table are the keyspace's (kv_cmd.h). */
#include "db_server.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/wait.h>

#include "crc32c.h"
#include "db_ops.h"
#include "db_role.h"
#include "epoch.h"
#include "failover.h"
#include "kv_cmd.h"
#include "log.h"
#include "persist.h"
#include "repl_primary.h"
#include "repl_replica.h"
#include "resp.h"
#include "resp_server.h"
#include "util.h"

#define DB_CRON_SECONDS 0.1
/* After a failed log write, how long before the next attempt (the cron
 * also retries): a failing disk is not hammered once per iteration. */
#define DB_RETRY_MS 100

struct db_cfg;

struct db_server {
    struct service base;
    struct keyspace ks;    /* the data; the db's hooks add persistence to it */
    struct persist persist;
    int persist_open;
    int policy;
    char dir[1024];
    struct resp_server rs; /* the clients; their hold_until is a log offset */
    struct ev_loop *loop;
    ev_timer cron;
    ev_prepare flush;
    ev_idle kick;          /* keeps the loop from sleeping while work is pending */
    ev_child child;
    int draining;
    struct buf effects;    /* scratch for one command's effects */
    int64_t next_retry_ms;
    int64_t last_tick_ms;
    int reported_error;    /* the current disk error was logged */
    uint64_t changes_since_save;
    uint64_t refused_writes;
    int64_t recover_now;   /* wall clock used while recovering */
    /* Replication: every node can feed replicas of its own; a replica
     * also follows its upstream. */
    struct repl_primary repl;
    int repl_open;
    int is_replica;
    struct repl_replica replica;
    int has_upstream;      /* a replica with a link to follow (0: waiting for a primary) */
    struct buf expired;    /* scratch for an expired key's deletion record */
    /* Failover (failover.h): the epoch file, the peers, elections. */
    struct epoch_state epoch;
    struct failover fo;
    int fo_open;
    struct db_cfg *start_cfg;    /* the running config (no secret), for a reload */
    uint32_t start_access;       /* a digest of its password and client limits */
    double repl_timeout;
    int64_t paused_until_ms; /* FAILOVER PAUSE: writes refused until then */
};

/* ---- the log: flushing and releasing held replies ------------------------ */

static int wal_pending(const struct db_server *srv)
{
    const struct wal *w = &srv->persist.wal;
    return w->written < w->end || (srv->policy == WAL_FSYNC_ALWAYS && w->synced < w->written) ||
           w->sync_err;
}

static void note_disk_state(struct db_server *srv)
{
    struct wal *w = &srv->persist.wal;
    if (!wal_ok(w) && !srv->reported_error) {
        log_error("db %s: %s; refusing writes until it works again", srv->base.node, w->errmsg);
        srv->reported_error = 1;
    } else if (wal_ok(w) && srv->reported_error) {
        log_info("db %s: log writes work again; accepting writes", srv->base.node);
        srv->reported_error = 0;
    }
}

/* Writes (and under always, syncs) the pending log batch, unless a recent
 * failure says to wait. */
static void flush_log(struct db_server *srv, int64_t now_ms)
{
    struct wal *w = &srv->persist.wal;
    if (!srv->persist_open || !wal_pending(srv))
        return;
    if (!wal_ok(w) && now_ms < srv->next_retry_ms)
        return;
    if (w->sync_err && srv->policy == WAL_FSYNC_EVERYSEC) {
        /* A failed background fsync is retried by the everysec tick. */
        if (w->written < w->end)
            wal_flush(w);
    } else if (wal_flush(w) < 0) {
        srv->next_retry_ms = now_ms + DB_RETRY_MS;
    }
    note_disk_state(srv);
}

/* Ends the WAITs whose replicas acknowledged, or whose time is up. */
static void wake_waiters(struct db_server *srv, int64_t now)
{
    if (!srv->rs.nblocked)
        return;
    for (struct resp_client *cl = srv->rs.clients, *next; cl; cl = next) {
        next = cl->next;
        if (!cl->blocked)
            continue;
        int n = repl_primary_count_acked(&srv->repl, cl->wait_offset);
        if (n < cl->wait_count && now < cl->wait_deadline_ms)
            continue;
        char reply[32];
        int len = snprintf(reply, sizeof reply, ":%d\r\n", n);
        resp_client_unblock(cl, reply, (size_t)len);
    }
}

/* Replicas get what the log has: up to its end once the end is written
 * (synced under always), which is always a record boundary. */
static void repl_round(struct db_server *srv, int64_t now)
{
    if (!srv->repl_open)
        return;
    struct wal *w = &srv->persist.wal;
    repl_primary_pump(&srv->repl, wal_acked(w) == w->end ? w->end : srv->repl.ready);
    if (srv->repl.acks_pending) {
        srv->repl.acks_pending = 0;
        wake_waiters(srv, now);
    }
}

/* Appends one record to the log and the replication backlog. Returns the
 * offset a reply for it waits for. */
static uint64_t log_record(struct db_server *srv, const void *payload, size_t n)
{
    uint64_t at = persist_append(&srv->persist, payload, n);
    if (at == 0) {
        log_error("db %s: out of memory appending to the log; stopping", srv->base.node);
        abort();
    }
    /* wal_append framed it at the tail of the log's batch. */
    const struct buf *batch = &srv->persist.wal.batch;
    repl_primary_feed(&srv->repl, buf_head(batch) + buf_size(batch) - (WAL_REC_HDR + n),
                      WAL_REC_HDR + n);
    srv->changes_since_save++;
    return at;
}

/* A key expired on this primary: its replicas learn it from the log. */
static void on_key_expired(void *arg, const void *key, size_t klen)
{
    struct db_server *srv = arg;
    buf_reset(&srv->expired);
    if (db_ops_deleted(&srv->expired, key, klen) < 0) {
        log_error("db %s: out of memory encoding a log record; stopping", srv->base.node);
        abort();
    }
    log_record(srv, buf_head(&srv->expired), buf_size(&srv->expired));
}

static void log_round(struct db_server *srv)
{
    int64_t now = util_now_ms();
    for (int pass = 0; pass < 4; pass++) {
        flush_log(srv, now);
        /* Held replies whose records the log now has go out. */
        if (!resp_server_release(&srv->rs, wal_acked(&srv->persist.wal)))
            break;
    }
    repl_round(srv, now);
    /* More log to write now (clients resumed above), or replies that could
     * go: do not let the loop sleep on them. */
    int more = (wal_pending(srv) && wal_ok(&srv->persist.wal));
    if (more && !ev_is_active(&srv->kick))
        ev_idle_start(srv->loop, &srv->kick);
    else if (!more && ev_is_active(&srv->kick))
        ev_idle_stop(srv->loop, &srv->kick);
}

static void flush_cb(struct ev_loop *loop, ev_prepare *w, int revents)
{
    (void)loop;
    (void)revents;
    log_round(w->data);
}

static void kick_cb(struct ev_loop *loop, ev_idle *w, int revents)
{
    (void)loop;
    (void)w;
    (void)revents; /* the prepare watcher does the work */
}

/* ---- commands the db handles itself ------------------------------------- */

static void child_cb(struct ev_loop *loop, ev_child *w, int revents)
{
    (void)revents;
    struct db_server *srv = w->data;
    ev_child_stop(loop, w);
    persist_bgsave_done(&srv->persist, w->rstatus);
    if (srv->persist.last_bgsave_ok)
        srv->changes_since_save = 0;
}

static int start_bgsave(struct db_server *srv, char *err, size_t errlen)
{
    if (srv->is_replica && srv->has_upstream && repl_replica_busy(&srv->replica)) {
        snprintf(err, errlen, "a full resync from the primary is in progress; try again after it");
        return -1;
    }
    pid_t pid = persist_bgsave(&srv->persist, err, errlen);
    if (pid < 0)
        return -1;
    if (ev_is_default_loop(srv->loop)) {
        ev_child_set(&srv->child, pid, 0);
        ev_child_start(srv->loop, &srv->child);
    }
    note_disk_state(srv);
    return 0;
}

static void cmd_save(struct kv_req *r)
{
    struct db_server *srv = r->ks->shell;
    char err[512];
    if (srv->is_replica && srv->has_upstream && repl_replica_busy(&srv->replica))
        return resp_error(r->out, "ERR a full resync from the primary is in progress; try again "
                                  "after it");
    if (persist_save(&srv->persist, err, sizeof err) < 0) {
        note_disk_state(srv);
        resp_errorf(r->out, "ERR %s", err);
    } else {
        srv->changes_since_save = 0;
        resp_ok(r->out);
    }
}

static void bgsave_common(struct kv_req *r, const char *started)
{
    struct db_server *srv = r->ks->shell;
    char err[512];
    if (start_bgsave(srv, err, sizeof err) < 0)
        resp_errorf(r->out, "ERR %s", err);
    else
        resp_simple(r->out, started);
}

static void cmd_bgsave(struct kv_req *r) { bgsave_common(r, "Background saving started"); }

static void cmd_bgrewriteaof(struct kv_req *r)
{
    bgsave_common(r, "Background append only file rewriting started");
}

static void cmd_lastsave(struct kv_req *r)
{
    struct db_server *srv = r->ks->shell;
    resp_int(r->out, (long long)(srv->persist.last_save_ms / 1000));
}

/* DEBUG DISK-ERROR <n|on|off> [write|fsync|both]: the log's next n (or all)
 * writes and/or fsyncs fail with EIO. For fault tests only: the keyspace
 * runs it only when the topology sets debug = true. */
static void db_debug(struct kv_req *r)
{
    struct db_server *srv = r->ks->shell;
    if (r->argc >= 3 && kv_arg_is(r, 1, "disk-error")) {
        int n;
        long long v;
        if (kv_arg_is(r, 2, "on"))
            n = -1;
        else if (kv_arg_is(r, 2, "off"))
            n = 0;
        else if (kv_parse_ll(r->argv[2], r->argl[2], &v) == 0 && v >= 0 && v < 1000000)
            n = (int)v;
        else
            return resp_error(r->out, "ERR DEBUG DISK-ERROR takes a count, ON or OFF");
        int what = WAL_INJECT_WRITE | WAL_INJECT_FSYNC;
        if (r->argc >= 4 && kv_arg_is(r, 3, "write"))
            what = WAL_INJECT_WRITE;
        else if (r->argc >= 4 && kv_arg_is(r, 3, "fsync"))
            what = WAL_INJECT_FSYNC;
        wal_inject_errors(&srv->persist.wal, n, what, EIO);
        log_warn("db %s: DEBUG DISK-ERROR %s: injected log failures %s", srv->base.node,
                 n < 0 ? "on" : n == 0 ? "off" : "count", n ? "armed" : "cleared");
        srv->next_retry_ms = 0;
        return resp_ok(r->out);
    }
    resp_error(r->out, "ERR DEBUG subcommands: DISK-ERROR <count|ON|OFF> [WRITE|FSYNC]");
}

/* ---- roles at run time (failover.h) ------------------------------------ */

/* WAITs end when the node stops being a primary: each answers the count
 * it has (replicas that acknowledged the old primary's writes). */
static void end_waits(struct db_server *srv)
{
    for (struct resp_client *cl = srv->rs.clients, *next; cl; cl = next) {
        next = cl->next;
        if (!cl->blocked)
            continue;
        char reply[32];
        int len = snprintf(reply, sizeof reply, ":%d\r\n",
                           repl_primary_count_acked(&srv->repl, cl->wait_offset));
        resp_client_unblock(cl, reply, (size_t)len);
    }
}

/* Stops following (if it did) and is read-only, following nobody. */
static void become_waiting(struct db_server *srv)
{
    if (srv->is_replica && srv->has_upstream)
        repl_replica_free(&srv->replica);
    if (!srv->is_replica)
        end_waits(srv);
    srv->is_replica = 1;
    srv->has_upstream = 0;
    srv->ks.read_only = 1;
    srv->ks.store.keep_expired = 1;
    srv->ks.store.on_expire = NULL;
    srv->ks.store.on_expire_arg = NULL;
}

static int db_promote(struct db_server *srv, uint64_t epoch, const char *why)
{
    if (!srv->is_replica)
        return 0;
    if (srv->has_upstream && repl_replica_busy(&srv->replica)) {
        log_error("db %s: cannot be promoted during a full resync", srv->base.node);
        return -1;
    }
    struct epoch_state next = srv->epoch;
    epoch_begin(&next, epoch, srv->persist.wal.end);
    char err[600];
    if (epoch_save(&next, srv->dir, err, sizeof err) < 0) {
        log_error("db %s: promotion refused: cannot write the epoch file: %s", srv->base.node,
                  err);
        return -1;
    }
    srv->epoch = next;
    become_waiting(srv);
    srv->is_replica = 0;
    srv->ks.read_only = 0;
    srv->ks.store.keep_expired = 0;
    srv->ks.store.on_expire = on_key_expired;
    srv->ks.store.on_expire_arg = srv;
    /* replicas of its own re-handshake and learn the new history */
    repl_primary_drop_all(&srv->repl, "promoted");
    log_warn("db %s: promoted to primary in epoch %llu at offset %llu (%s)", srv->base.node,
             (unsigned long long)epoch, (unsigned long long)srv->persist.wal.end, why);
    return 0;
}

static int db_follow(struct db_server *srv, const char *node, const char *addr, const char *why,
                     char *err, size_t errlen)
{
    if (srv->is_replica && srv->has_upstream && strcmp(srv->replica.upstream_node, node) == 0 &&
        strcmp(srv->replica.upstream, addr) == 0)
        return 0;
    int was_primary = !srv->is_replica;
    become_waiting(srv);
    if (was_primary)
        repl_primary_drop_all(&srv->repl, "no longer the primary");
    const struct keyspace *c = &srv->ks;
    if (repl_replica_init(&srv->replica, srv->loop, srv->base.node, srv->base.listen, addr, node,
                          c->has_password ? c->password : "", srv->repl_timeout, &srv->ks,
                          &srv->persist, &srv->repl, srv->policy, err, errlen) < 0) {
        log_error("db %s: cannot follow %s at %s: %s", srv->base.node, node, addr, err);
        return -1;
    }
    srv->replica.ep = &srv->epoch;
    srv->replica.fo = srv->fo_open ? &srv->fo : NULL;
    srv->has_upstream = 1;
    repl_replica_start(&srv->replica);
    log_warn("db %s: %s; now follows %s at %s", srv->base.node, was_primary ?
             "steps down from primary" : "changes upstream", node, addr);
    log_info("db %s: (%s)", srv->base.node, why);
    return 0;
}

static void fo_self(void *arg, struct failover_self *out)
{
    struct db_server *srv = arg;
    memset(out, 0, sizeof *out);
    out->role = srv->is_replica ? FO_ROLE_REPLICA : FO_ROLE_PRIMARY;
    out->healthy = !(srv->is_replica && srv->has_upstream && repl_replica_busy(&srv->replica));
    out->offset = srv->persist.wal.end;
    if (srv->is_replica && srv->has_upstream)
        snprintf(out->following, sizeof out->following, "%s", srv->replica.upstream_node);
}

static int fo_promote(void *arg, uint64_t epoch, const char *why)
{
    return db_promote(arg, epoch, why);
}

static void fo_follow(void *arg, const char *node, const char *addr, const char *why)
{
    char err[256];
    db_follow(arg, node, addr, why, err, sizeof err);
}

static void fo_step_down(void *arg, const char *why)
{
    struct db_server *srv = arg;
    if (!srv->is_replica) {
        log_warn("db %s: steps down from primary (%s); read-only until a primary is elected",
                 srv->base.node, why);
        repl_primary_drop_all(&srv->repl, "stepped down");
        become_waiting(srv);
    } else if (srv->has_upstream) {
        log_info("db %s: stops following %s (%s)", srv->base.node, srv->replica.upstream_node,
                 why);
        become_waiting(srv);
    }
}

static const struct failover_ops db_fo_ops = {fo_self, fo_promote, fo_follow, fo_step_down};

/* FAILOVER PROBE | VOTE e node log_epoch offset | PROMOTE | FOLLOW node [addr]
 *        | PAUSE ms | POSITION: the failover protocol between db nodes and
 * the operator's manual controls (strata failover). */
static void simplef(struct buf *out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void simplef(struct buf *out, const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    buf_printf(out, "+%s\r\n", line);
}

static void cmd_failover(struct kv_req *r)
{
    struct db_server *srv = r->ks->shell;
    char a[5][128];
    for (size_t i = 2; i < r->argc && i < 7; i++)
        snprintf(a[i - 2], sizeof a[0], "%.*s", (int)(r->argl[i] < 127 ? r->argl[i] : 127),
                 r->argv[i]);
    if (kv_arg_is(r, 1, "probe")) {
        failover_probe_line(&srv->fo, r->out);
        return;
    }
    if (kv_arg_is(r, 1, "position")) {
        /* the end of its log and the epoch it ends in, for a planned switch */
        return simplef(r->out, "%s %s %llu %llu %llu", srv->base.node,
                            srv->is_replica ? "replica" : "primary",
                            (unsigned long long)srv->epoch.epoch,
                            (unsigned long long)epoch_log(&srv->epoch),
                            (unsigned long long)srv->persist.wal.end);
    }
    if (kv_arg_is(r, 1, "vote") && r->argc == 6) {
        char why[300];
        unsigned long long e = strtoull(a[0], NULL, 10), le = strtoull(a[2], NULL, 10),
                           off = strtoull(a[3], NULL, 10);
        if (failover_vote(&srv->fo, e, a[1], le, off, why, sizeof why))
            return resp_simple(r->out, "YES");
        return resp_errorf(r->out, "NOVOTE %s", why);
    }
    if (kv_arg_is(r, 1, "promote") && r->argc <= 3) {
        uint64_t e = srv->epoch.epoch + 1;
        if (r->argc == 3)
            e = strtoull(a[0], NULL, 10);
        if (!srv->is_replica)
            return resp_errorf(r->out, "ERR %s is already the primary (epoch %llu)",
                               srv->base.node, (unsigned long long)srv->epoch.epoch);
        if (e <= srv->epoch.epoch && !(e == srv->epoch.epoch && srv->epoch.voted_for[0] == 0))
            return resp_errorf(r->out, "ERR epoch %llu is not after this node's %llu",
                               (unsigned long long)e, (unsigned long long)srv->epoch.epoch);
        if (db_promote(srv, e, "FAILOVER PROMOTE") < 0)
            return resp_error(r->out, "ERR promotion failed (see the node's log)");
        srv->fo.promotions++;
        return simplef(r->out, "OK epoch %llu", (unsigned long long)e);
    }
    if (kv_arg_is(r, 1, "follow") && (r->argc == 3 || r->argc == 4)) {
        const struct failover_peer *p = failover_peer(&srv->fo, a[0]);
        const char *addr = r->argc == 4 ? a[1] : p ? p->addr : NULL;
        if (!addr)
            return resp_errorf(r->out, "ERR %s is not a db node of this data set", a[0]);
        if (strcmp(a[0], srv->base.node) == 0)
            return resp_error(r->out, "ERR a node cannot follow itself");
        char err[256];
        srv->paused_until_ms = 0;
        if (db_follow(srv, a[0], addr, "FAILOVER FOLLOW", err, sizeof err) < 0)
            return resp_errorf(r->out, "ERR %s", err);
        return resp_ok(r->out);
    }
    if (kv_arg_is(r, 1, "pause") && r->argc == 3) {
        long long ms = strtoll(a[0], NULL, 10);
        if (ms < 0 || ms > 600000)
            return resp_error(r->out, "ERR FAILOVER PAUSE takes 0..600000 ms");
        srv->paused_until_ms = ms ? r->now + ms : 0;
        return simplef(r->out, "OK %llu", (unsigned long long)srv->persist.wal.end);
    }
    resp_error(r->out, "ERR FAILOVER PROBE | POSITION | PROMOTE [epoch] | FOLLOW node [addr] | "
                       "PAUSE ms | VOTE epoch node log_epoch offset");
}

/* PSYNC, REPLCONF and WAIT need the client itself: db_exec runs them. */
static void cmd_by_exec(struct kv_req *r) { resp_error(r->out, "ERR not here"); }

/* ROLE (db_role.h): a replica's offset is what its served data has. */
static void cmd_role(struct kv_req *r)
{
    struct db_server *srv = r->ks->shell;
    db_role_reply(r->out, srv->repl_open ? &srv->repl : NULL,
                  srv->is_replica ? &srv->replica : NULL, srv->persist.wal.end);
}

/* The db's own commands, declared like the keyspace's: none writes keys. */
static const struct kv_command db_commands[] = {
    {"psync", cmd_by_exec, -3, KV_CMD_ADMIN, 0, 0, 0},
    {"replconf", cmd_by_exec, -1, KV_CMD_ADMIN, 0, 0, 0},
    {"wait", cmd_by_exec, 3, 0, 0, 0, 0},
    {"save", cmd_save, -1, KV_CMD_ADMIN, 0, 0, 0},
    {"bgsave", cmd_bgsave, -1, KV_CMD_ADMIN, 0, 0, 0},
    {"bgrewriteaof", cmd_bgrewriteaof, -1, KV_CMD_ADMIN, 0, 0, 0},
    {"lastsave", cmd_lastsave, -1, 0, 0, 0, 0},
    {"role", cmd_role, 1, 0, 0, 0, 0},
    {"failover", cmd_failover, -2, KV_CMD_ADMIN, 0, 0, 0},
};

/* ---- INFO and CONFIG ---------------------------------------------------- */

static void info_persistence(struct db_server *srv, struct buf *b)
{
    struct persist *p = &srv->persist;
    struct wal *w = &p->wal;
    buf_printf(b,
               "# Persistence\r\nloading:0\r\ndir:%s\r\nfsync:%s\r\n"
               "log_offset:%llu\r\nlog_synced_offset:%llu\r\nlog_segment_start:%llu\r\n"
               "log_bytes_since_snapshot:%llu\r\nsnapshot_offset:%llu\r\nsnapshot_size:%llu\r\n"
               "rdb_changes_since_last_save:%llu\r\nrdb_bgsave_in_progress:%d\r\n"
               "rdb_last_save_time:%lld\r\nrdb_last_bgsave_status:%s\r\n"
               "rdb_last_bgsave_time_sec:%lld\r\naof_enabled:1\r\naof_rewrite_in_progress:%d\r\n"
               "aof_last_write_status:%s\r\naof_current_size:%llu\r\naof_base_size:%llu\r\n"
               "log_write_errors:%llu\r\nlog_fsync_errors:%llu\r\nlog_fsyncs:%llu\r\n"
               "writes_refused:%llu\r\ndisk_error:%s\r\nsnapshots:%llu\r\ncompactions:%llu\r\n"
               "loaded_keys:%llu\r\nreplayed_records:%llu\r\ntruncated_bytes:%llu\r\n"
               "load_time_ms:%.0f\r\n\r\n",
               srv->dir, wal_fsync_name(srv->policy), (unsigned long long)w->end,
               (unsigned long long)w->synced, (unsigned long long)w->seg_start,
               (unsigned long long)persist_log_bytes(p), (unsigned long long)p->snap_offset,
               (unsigned long long)p->snap_size, (unsigned long long)srv->changes_since_save,
               p->child > 0, (long long)(p->last_save_ms / 1000),
               p->last_bgsave_ok ? "ok" : "err", (long long)(p->last_bgsave_ms / 1000),
               p->child > 0, wal_ok(w) ? "ok" : "err", (unsigned long long)persist_log_bytes(p),
               (unsigned long long)p->snap_size, (unsigned long long)w->write_errors,
               (unsigned long long)w->sync_errors, (unsigned long long)w->fsyncs,
               (unsigned long long)srv->refused_writes, wal_ok(w) ? "" : w->errmsg,
               (unsigned long long)p->snapshots, (unsigned long long)p->compactions,
               (unsigned long long)p->loaded_keys, (unsigned long long)p->replayed_records,
               (unsigned long long)p->truncated_bytes, p->load_seconds * 1000);
}

/* INFO: the keyspace's sections (without eviction fields: nothing is
 * evicted) plus Persistence. */
static void info_replication(struct db_server *srv, struct buf *b)
{
    int64_t now = util_now_ms();
    buf_printf(b, "# Replication\r\nrole:%s\r\n", srv->is_replica ? "slave" : "master");
    if (srv->is_replica && srv->has_upstream)
        repl_replica_info(&srv->replica, b, now);
    else if (srv->is_replica)
        buf_printf(b, "master_host:\r\nmaster_port:\r\nmaster_node:-\r\nmaster_link_status:down\r\n"
                      "slave_repl_offset:%llu\r\nslave_read_only:1\r\n",
                   (unsigned long long)srv->persist.wal.end);
    if (srv->fo_open)
        failover_info(&srv->fo, b);
    if (srv->repl_open)
        repl_primary_info(&srv->repl, b, now);
    buf_printf(b, "\r\n");
}

static void hook_info(struct keyspace *ks, enum kv_info_at at, const struct kv_info_sel *sel,
                      struct buf *b)
{
    if (at == KV_INFO_SECTIONS && kv_info_wants(sel, "persistence"))
        info_persistence(ks->shell, b);
    if (at == KV_INFO_SECTIONS && kv_info_wants(sel, "replication"))
        info_replication(ks->shell, b);
}

/* CONFIG: what a db has. Its settings come from the topology, so they are
 * shown and not changed at run time; memory settings name why. */
static void get_zero(struct keyspace *ks, char *out, size_t n) { snprintf(out, n, "0"); }
static void get_noeviction(struct keyspace *ks, char *out, size_t n)
{
    snprintf(out, n, "noeviction");
}
static int set_never_evicts(struct keyspace *ks, const char *val, size_t vl, int64_t now_ms,
                            char *why, size_t whylen)
{
    snprintf(why, whylen, "the db never evicts: maxmemory settings do not apply");
    return -1;
}
static void get_empty(struct keyspace *ks, char *out, size_t n) { snprintf(out, n, "%s", ""); }
/* Snapshots follow the log's size (compact_min), not save points: a client
 * that turns save points off gets what it asked for. */
static int set_save(struct keyspace *ks, const char *val, size_t vl, int64_t now_ms, char *why,
                    size_t whylen)
{
    return 0;
}
static void get_yes(struct keyspace *ks, char *out, size_t n) { snprintf(out, n, "yes"); }
static int set_appendonly(struct keyspace *ks, const char *val, size_t vl, int64_t now_ms,
                          char *why, size_t whylen)
{
    if (strcasecmp(val, "yes") == 0)
        return 0;
    snprintf(why, whylen, "the db always logs its writes");
    return -1;
}
static void get_fsync(struct keyspace *ks, char *out, size_t n)
{
    snprintf(out, n, "%s", wal_fsync_name(((struct db_server *)ks->shell)->policy));
}
static void get_dir(struct keyspace *ks, char *out, size_t n)
{
    snprintf(out, n, "%s", ((struct db_server *)ks->shell)->dir);
}

/* The data directory reaches the file system: the topology's alone. */
static int set_protected(struct keyspace *ks, const char *val, size_t vl, int64_t now_ms,
                         char *why, size_t whylen)
{
    snprintf(why, whylen, "can't set protected config");
    return -1;
}

static const struct kv_param db_params[] = {
    {"maxmemory", get_zero, set_never_evicts},
    {"maxmemory-policy", get_noeviction, set_never_evicts},
    {"save", get_empty, set_save},
    {"appendonly", get_yes, set_appendonly},
    {"appendfsync", get_fsync, NULL},
    {"dir", get_dir, set_protected},
};

static const struct kv_hooks db_hooks = {
    .info = hook_info,
    .debug = db_debug,
    .params = db_params,
    .nparams = sizeof db_params / sizeof db_params[0],
    .commands = db_commands,
    .ncommands = sizeof db_commands / sizeof db_commands[0],
};

/* ---- the write path ------------------------------------------------------ */

/* PSYNC (a replica attaches: the connection becomes its stream),
 * REPLCONF (accepted and ignored outside a stream) and WAIT. */
static void repl_command(struct db_server *srv, struct resp_client *cl, struct kv_req *r)
{
    if (kv_arg_is(r, 0, "replconf"))
        return resp_ok(r->out);
    if (kv_arg_is(r, 0, "psync")) {
        if (buf_size(&cl->hold))
            return resp_error(r->out, "ERR PSYNC with replies still pending");
        struct repl_link *l =
            repl_primary_psync(&srv->repl, r->argc, r->argv, r->argl, cl->conn->peer, r->out);
        if (l) {
            cl->handoff = repl_primary_attach;
            cl->handoff_arg = l;
        }
        return;
    }
    /* WAIT numreplicas timeout */
    if (srv->is_replica)
        return resp_error(r->out, "ERR WAIT cannot be used with replica instances.");
    long long want, ms;
    if (kv_arg_ll(r, 1, &want) < 0 || kv_arg_ll(r, 2, &ms) < 0)
        return;
    if (ms < 0)
        return resp_error(r->out, "ERR timeout is negative");
    /* The end of the client's last write (hold_until keeps it). */
    uint64_t target = cl->hold_until;
    int have = repl_primary_count_acked(&srv->repl, target);
    if (have >= want)
        return resp_int(r->out, have);
    cl->wait_offset = target;
    cl->wait_count = (long)want;
    cl->wait_deadline_ms = ms ? r->now + ms : INT64_MAX;
    resp_client_block(cl);
}

/* Runs one command for a client: a read, one of the db's own, or a logged
 * write. r->out is the client's write buffer, or its hold once a reply is
 * held. */
static void db_exec(struct resp_client *cl, struct kv_req *r)
{
    struct db_server *srv = cl->srv->data;
    const struct kv_command *cmd = kv_cmd_find(&srv->ks, r->argv[0], r->argl[0]);
    if (!kv_check(r, cmd))
        return;
    if (cmd->fn == cmd_by_exec) {
        repl_command(srv, cl, r);
        return;
    }
    if (!kv_cmd_is_write(cmd)) {
        kv_run(r, cmd);
        return;
    }
    if (!db_ops_loggable(cmd)) {
        resp_errorf(r->out, "ERR '%.*s' is not supported by the db",
                    (int)(r->argl[0] < 64 ? r->argl[0] : 64), r->argv[0]);
        return;
    }
    if (!wal_ok(&srv->persist.wal)) {
        srv->refused_writes++;
        resp_errorf(r->out,
                    "MISCONF the db cannot write its log (%s); writes are refused until the disk "
                    "works again, reads are served",
                    srv->persist.wal.errmsg);
        return;
    }
    if (srv->paused_until_ms && r->now < srv->paused_until_ms) {
        srv->refused_writes++;
        resp_error(r->out, "TRYAGAIN writes are paused for a planned failover");
        return;
    }
    if (repl_primary_refuses(&srv->repl, r->now)) {
        srv->refused_writes++;
        resp_error(r->out, "NOREPLICAS Not enough good replicas to write.");
        return;
    }
    /* The write's reply waits for its record. */
    r->out = resp_client_hold(cl);
    kv_run(r, cmd);
    buf_reset(&srv->effects);
    if (db_ops_effects(&srv->ks.store, cmd, r->argc, r->argv, r->argl, r->now, &srv->effects) <
        0) {
        /* The keyspace changed and the change cannot be logged: stopping
         * is the only way not to acknowledge a write the log lacks. */
        log_error("db %s: out of memory encoding a log record; stopping", srv->base.node);
        abort();
    }
    if (buf_size(&srv->effects))
        cl->hold_until = log_record(srv, buf_head(&srv->effects), buf_size(&srv->effects));
}

/* The reply of a write waits for the log: the client layer runs every
 * command through db_exec and keeps the half-closing peer's default. */
static const struct resp_server_ops db_resp_ops = {.name = "db", .exec = db_exec};

/* ---- cron -------------------------------------------------------------- */

static void cron_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    struct db_server *srv = w->data;
    int64_t now = util_now_ms();
    keyspace_cron(&srv->ks, now);
    struct persist *p = &srv->persist;
    if (p->child > 0 && !ev_is_active(&srv->child)) {
        int st;
        if (waitpid(p->child, &st, WNOHANG) == p->child)
            persist_bgsave_done(p, st);
    }
    wal_sync_poll(&p->wal);
    if (srv->policy == WAL_FSYNC_EVERYSEC && now - srv->last_tick_ms >= 1000) {
        srv->last_tick_ms = now;
        wal_sync_tick(&p->wal, now);
    }
    note_disk_state(srv);
    if (!srv->draining && wal_ok(&p->wal) && persist_should_compact(p, now)) {
        char err[512];
        log_info("db %s: log is %llu bytes since the last snapshot; compacting", srv->base.node,
                 (unsigned long long)persist_log_bytes(p));
        if (start_bgsave(srv, err, sizeof err) < 0)
            log_error("db %s: compaction could not start: %s", srv->base.node, err);
    }
    if (srv->repl_open) {
        repl_primary_cron(&srv->repl, now);
        wake_waiters(srv, now);
    }
    log_round(srv);
    srv->ks.client_buf_bytes = resp_server_buf_bytes(&srv->rs);
    (void)loop;
}

/* ---- recovery callbacks ------------------------------------------------- */

static int rec_load(void *arg, const char *k, size_t kl, const char *v, size_t vl, int64_t x,
                    char *err, size_t errlen)
{
    struct db_server *srv = arg;
    return db_ops_load(&srv->ks.store, k, kl, v, vl, x, srv->recover_now, err, errlen);
}

static int rec_apply(void *arg, const unsigned char *p, size_t n, char *err, size_t errlen)
{
    struct db_server *srv = arg;
    return db_ops_apply(&srv->ks.store, p, n, srv->recover_now, err, errlen);
}

static int rec_dump(void *arg, struct snapshot_writer *w)
{
    struct db_server *srv = arg;
    return db_ops_dump(&srv->ks.store, w, util_now_ms());
}

/* A hint: when memory is short the table just grows as keys arrive. */
static void rec_reserve(void *arg, uint64_t nkeys)
{
    struct db_server *srv = arg;
    (void)store_reserve(&srv->ks.store, (size_t)nkeys);
}

static const struct persist_ops db_persist_ops = {rec_load, rec_apply, rec_dump, rec_reserve};

/* ---- config ----------------------------------------------------------- */

struct db_cfg {
    char node[64], listen[64], role[16], dir[1024], fsync[16];
    int64_t compact_min;
    struct kv_access access;
    char replica_of[64], upstream[64];  /* a replica: the node it follows, and where */
    int64_t backlog, min_replicas;
    double repl_timeout, max_lag;
    char peers[2048];         /* the data set's other db nodes: node@addr@priority,... */
    int64_t priority;
    double down_after;        /* failover: 0 off */
    char fo_policy[1024];
};

#define DB_DEFAULT_BACKLOG (16 * 1024 * 1024)

/* Who may connect and how much they may hold, as a cache reads it
 * (kv_access_check): no message carries the password. */
static int read_access(lua_State *L, int idx, struct db_cfg *cfg, char *err, size_t errlen)
{
    char literal[1024], env[256], file[1024];
    struct kv_access *a = &cfg->access;
    if (cfg_string(L, idx, "password", "", literal, sizeof literal, err, errlen) < 0 ||
        cfg_string(L, idx, "password_env", "", env, sizeof env, err, errlen) < 0 ||
        cfg_string(L, idx, "password_file", "", file, sizeof file, err, errlen) < 0 ||
        cfg_bool(L, idx, "debug", 0, &a->debug, err, errlen) < 0 ||
        cfg_int(L, idx, "max_clients", KV_DEFAULT_MAX_CLIENTS, &a->max_clients, err, errlen) < 0 ||
        cfg_int(L, idx, "max_client_memory", -1, &a->max_client_memory, err, errlen) < 0)
        return -1;
    int rc = kv_access_check(a, "db", cfg->node, literal, env, file, 0, err, errlen);
    explicit_bzero(literal, sizeof literal);
    return rc;
}

static int read_cfg(lua_State *L, int idx, struct db_cfg *cfg, char *err, size_t errlen)
{
    memset(cfg, 0, sizeof *cfg);
    if (cfg_string(L, idx, "node", "db", cfg->node, sizeof cfg->node, err, errlen) < 0 ||
        cfg_string(L, idx, "listen", "127.0.0.1:7001", cfg->listen, sizeof cfg->listen, err,
                   errlen) < 0 ||
        cfg_string(L, idx, "role", "primary", cfg->role, sizeof cfg->role, err, errlen) < 0 ||
        cfg_string(L, idx, "dir", "", cfg->dir, sizeof cfg->dir, err, errlen) < 0 ||
        cfg_string(L, idx, "fsync", "everysec", cfg->fsync, sizeof cfg->fsync, err, errlen) < 0 ||
        cfg_int(L, idx, "compact_min", 0, &cfg->compact_min, err, errlen) < 0 ||
        cfg_string(L, idx, "replica_of", "", cfg->replica_of, sizeof cfg->replica_of, err,
                   errlen) < 0 ||
        cfg_string(L, idx, "replica_of_addr", "", cfg->upstream, sizeof cfg->upstream, err,
                   errlen) < 0 ||
        cfg_int(L, idx, "backlog", DB_DEFAULT_BACKLOG, &cfg->backlog, err, errlen) < 0 ||
        cfg_int(L, idx, "min_replicas", 0, &cfg->min_replicas, err, errlen) < 0 ||
        cfg_number(L, idx, "repl_timeout", 10, &cfg->repl_timeout, err, errlen) < 0 ||
        cfg_number(L, idx, "max_lag", 0, &cfg->max_lag, err, errlen) < 0 ||
        cfg_string(L, idx, "peers", "", cfg->peers, sizeof cfg->peers, err, errlen) < 0 ||
        cfg_int(L, idx, "priority", 100, &cfg->priority, err, errlen) < 0 ||
        cfg_number(L, idx, "failover_down_after", 0, &cfg->down_after, err, errlen) < 0 ||
        cfg_string(L, idx, "failover_policy", "", cfg->fo_policy, sizeof cfg->fo_policy, err,
                   errlen) < 0 ||
        read_access(L, idx, cfg, err, errlen) < 0)
        return -1;
    if (!cfg->dir[0])
        snprintf(cfg->dir, sizeof cfg->dir, "var/%s", cfg->node);
    if (wal_fsync_parse(cfg->fsync) < 0) {
        snprintf(err, errlen, "db %s: fsync must be always, everysec or no, not '%s'", cfg->node,
                 cfg->fsync);
        return -1;
    }
    if (strcmp(cfg->role, "primary") != 0 && strcmp(cfg->role, "replica") != 0) {
        snprintf(err, errlen, "db %s: role must be primary or replica, not '%s'", cfg->node,
                 cfg->role);
        return -1;
    }
    if (strcmp(cfg->role, "replica") == 0 && !cfg->upstream[0]) {
        snprintf(err, errlen, "db %s: a replica needs replica_of (the node it follows)",
                 cfg->node);
        return -1;
    }
    if (cfg->backlog < 1024 || cfg->backlog > (int64_t)1 << 40) {
        snprintf(err, errlen, "db %s: backlog must be in 1kb..1tb, not %lld bytes", cfg->node,
                 (long long)cfg->backlog);
        return -1;
    }
    if (cfg->min_replicas < 0 || cfg->min_replicas > 1000) {
        snprintf(err, errlen, "db %s: min_replicas must be in 0..1000, not %lld", cfg->node,
                 (long long)cfg->min_replicas);
        return -1;
    }
    if (cfg->repl_timeout <= 0 || cfg->repl_timeout > 3600 || cfg->max_lag < 0) {
        snprintf(err, errlen,
                 "db %s: repl_timeout must be over 0 and at most 1h, max_lag not negative",
                 cfg->node);
        return -1;
    }
    if (cfg->priority < 0 || cfg->priority > 1000000 || cfg->down_after < 0 ||
        cfg->down_after > 3600) {
        snprintf(err, errlen, "db %s: priority must be in 0..1000000 and down_after in 0..1h",
                 cfg->node);
        return -1;
    }
    if (cfg->compact_min < 0) {
        snprintf(err, errlen, "db %s: compact_min must not be negative", cfg->node);
        return -1;
    }
    return 0;
}

/* The kind's validate: the reader start uses. */
static int db_srv_validate(lua_State *L, int idx, char *err, size_t errlen)
{
    struct db_cfg cfg;
    int rc = read_cfg(L, idx, &cfg, err, errlen);
    explicit_bzero(&cfg.access, sizeof cfg.access);
    return rc;
}

/* ---- the service kind --------------------------------------------------- */

static void db_srv_free(struct service *s);

static struct service *db_srv_start(const struct service_env *env, lua_State *L, int idx, char *err,
                                    size_t errlen)
{
    struct db_cfg cfg;
    if (read_cfg(L, idx, &cfg, err, errlen) < 0)
        return NULL;
    struct db_server *srv = calloc(1, sizeof *srv);
    if (!srv) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    srv->base.kind = &db_service_kind;
    srv->base.env = env;
    srv->loop = env->loop;
    srv->policy = wal_fsync_parse(cfg.fsync);
    snprintf(srv->dir, sizeof srv->dir, "%s", cfg.dir);
    snprintf(srv->base.node, sizeof srv->base.node, "%s", cfg.node);
    buf_init(&srv->effects);
    buf_init(&srv->expired);
    srv->is_replica = strcmp(cfg.role, "replica") == 0;
    struct keyspace *c = &srv->ks;
    keyspace_init(c, 0, util_now_ms());
    keyspace_set_hooks(c, &db_hooks, srv);
    snprintf(c->node, sizeof c->node, "%s", cfg.node);
    kv_access_apply(c, &cfg.access);
    /* what a reload compares with, without keeping the secret */
    srv->start_access = crc32c(0, &cfg.access, sizeof cfg.access);
    explicit_bzero(&cfg.access, sizeof cfg.access);
    ev_timer_init(&srv->cron, cron_cb, DB_CRON_SECONDS, DB_CRON_SECONDS);
    srv->cron.data = srv;
    ev_prepare_init(&srv->flush, flush_cb);
    srv->flush.data = srv;
    ev_idle_init(&srv->kick, kick_cb);
    srv->kick.data = srv;
    ev_child_init(&srv->child, child_cb, 0, 0);
    srv->child.data = srv;

    srv->recover_now = util_now_ms();
    char why[1536];
    if (repl_replica_clean_dir(cfg.dir, why, sizeof why) < 0) {
        snprintf(err, errlen, "db %s: %s", cfg.node, why);
        db_srv_free(&srv->base);
        return NULL;
    }
    if (persist_open(&srv->persist, cfg.dir, srv->policy, &db_persist_ops, srv, why,
                     sizeof why) < 0) {
        snprintf(err, errlen, "db %s: %s", cfg.node, why);
        db_srv_free(&srv->base);
        return NULL;
    }
    srv->persist_open = 1;
    if (cfg.compact_min > 0)
        srv->persist.compact_min = (uint64_t)cfg.compact_min;
    struct persist *p = &srv->persist;
    if (epoch_load(&srv->epoch, cfg.dir, why, sizeof why) < 0) {
        snprintf(err, errlen, "db %s: %s", cfg.node, why);
        db_srv_free(&srv->base);
        return NULL;
    }
    srv->repl_timeout = cfg.repl_timeout;
    if (repl_primary_init(&srv->repl, env->loop, cfg.node, &c->store, (size_t)cfg.backlog,
                          cfg.repl_timeout, p->id, p->wal.end) < 0) {
        snprintf(err, errlen, "db %s: out of memory for the replication backlog", cfg.node);
        db_srv_free(&srv->base);
        return NULL;
    }
    srv->repl_open = 1;
    srv->repl.wal = &p->wal;
    srv->repl.min_replicas = (int)cfg.min_replicas;
    srv->repl.max_lag_ms = (int64_t)(cfg.max_lag * 1000);
    srv->repl.ep = &srv->epoch;
    if (failover_init(&srv->fo, env->loop, cfg.node, cfg.peers, (int)cfg.priority,
                      (int64_t)(cfg.down_after * 1000), cfg.fo_policy,
                      c->has_password ? c->password : "", &srv->epoch, srv->dir, &db_fo_ops, srv,
                      why, sizeof why) < 0) {
        snprintf(err, errlen, "db %s: failover: %s", cfg.node, why);
        db_srv_free(&srv->base);
        return NULL;
    }
    srv->fo_open = 1;
    srv->repl.fo = &srv->fo;
    /* With failover, the topology's primary is only where things start: it
     * waits, read-only, until the data set agrees who is primary (itself,
     * when no log is further than its own, in a new epoch), so a primary
     * that comes back after a failover it did not see — its own files
     * cannot tell it — never takes a write the new primary lacks. */
    int wait_first = !srv->is_replica && srv->fo.enabled && srv->fo.npeers > 0;
    if (!srv->is_replica && !wait_first) {
        c->store.on_expire = on_key_expired;
        c->store.on_expire_arg = srv;
    }
    log_info("db %s: recovered %zu keys from %s (snapshot %llu keys, %llu log records, %llu "
             "torn bytes dropped) in %.3f s",
             cfg.node, c->store.count, cfg.dir, (unsigned long long)p->loaded_keys,
             (unsigned long long)p->replayed_records, (unsigned long long)p->truncated_bytes,
             p->load_seconds);
    if (resp_server_listen(&srv->rs, env->loop, cfg.listen, c, &db_resp_ops, srv, err, errlen) <
        0) {
        db_srv_free(&srv->base);
        return NULL;
    }
    snprintf(srv->base.listen, sizeof srv->base.listen, "%s", srv->rs.listener->addr);
    snprintf(c->listen, sizeof c->listen, "%s", srv->rs.listener->addr);
    srv->last_tick_ms = util_now_ms();
    ev_timer_start(env->loop, &srv->cron);
    ev_prepare_start(env->loop, &srv->flush);
    if (wait_first) {
        srv->is_replica = 1;
        srv->ks.read_only = 1;
        srv->ks.store.keep_expired = 1;
        log_info("db %s: failover is on: waiting to learn who is primary before taking writes",
                 cfg.node);
    } else if (srv->is_replica) {
        if (repl_replica_init(&srv->replica, env->loop, cfg.node, srv->base.listen, cfg.upstream,
                              /* the db's one secret, kept by its keyspace */
                              cfg.replica_of, c->has_password ? c->password : "",
                              cfg.repl_timeout, c, p, &srv->repl,
                              srv->policy, why, sizeof why) < 0) {
            snprintf(err, errlen, "db %s: replica_of %s: %s", cfg.node, cfg.upstream, why);
            db_srv_free(&srv->base);
            return NULL;
        }
        srv->replica.ep = &srv->epoch;
        srv->replica.fo = &srv->fo;
        srv->has_upstream = 1;
        repl_replica_start(&srv->replica);
    }
    failover_start(&srv->fo);
    srv->start_cfg = malloc(sizeof *srv->start_cfg);
    if (srv->start_cfg)
        *srv->start_cfg = cfg;
    log_info("node %s: db listening on %s (dir %s, fsync %s%s%s)", cfg.node, srv->rs.listener->addr,
             cfg.dir, cfg.fsync, srv->has_upstream ? ", replica of " : "",
             srv->has_upstream ? cfg.upstream : "");
    return &srv->base;
}

static void db_srv_drain(struct service *s)
{
    struct db_server *srv = (struct db_server *)s;
    srv->draining = 1;
    /* Everything executed goes to disk before the held replies go out;
     * replies the log still lacks (a failing disk) go down with their
     * connections, never acknowledged. */
    if (srv->persist_open && wal_sync_now(&srv->persist.wal) < 0)
        log_error("db %s: could not sync the log while stopping: %s", s->node,
                  srv->persist.wal.errmsg);
    resp_server_release(&srv->rs, wal_acked(&srv->persist.wal));
    resp_server_drain(&srv->rs);
}

static int db_srv_idle(struct service *s)
{
    return resp_server_idle(&((struct db_server *)s)->rs);
}

static void db_srv_free(struct service *s)
{
    struct db_server *srv = (struct db_server *)s;
    ev_timer_stop(srv->loop, &srv->cron);
    ev_prepare_stop(srv->loop, &srv->flush);
    ev_idle_stop(srv->loop, &srv->kick);
    if (ev_is_active(&srv->child))
        ev_child_stop(srv->loop, &srv->child);
    if (srv->is_replica && srv->has_upstream)
        repl_replica_free(&srv->replica);
    if (srv->fo_open)
        failover_free(&srv->fo);
    free(srv->start_cfg);
    srv->start_cfg = NULL;
    if (srv->repl_open)
        repl_primary_free(&srv->repl);
    resp_server_free(&srv->rs);
    if (srv->persist_open)
        persist_close(&srv->persist);
    keyspace_free(&srv->ks);
    buf_free(&srv->effects);
    buf_free(&srv->expired);
    free(srv);
}

static void db_srv_describe(struct service *s, struct buf *out)
{
    struct db_server *srv = (struct db_server *)s;
    struct wal *w = &srv->persist.wal;
    buf_printf(out, "keys=%zu fsync=%s log_offset=%llu disk=%s clients=%zu", srv->ks.store.count,
               wal_fsync_name(srv->policy), (unsigned long long)w->end,
               wal_ok(w) ? "ok" : "error", srv->ks.nclients);
    if (srv->is_replica && srv->has_upstream)
        buf_printf(out, " replica_of=%s link=%s", srv->replica.upstream,
                   repl_replica_link_up(&srv->replica) ? "up" : "down");
    else if (srv->is_replica)
        buf_printf(out, " waiting_for_primary");
    buf_printf(out, " epoch=%llu", (unsigned long long)srv->epoch.epoch);
    if (srv->repl_open && srv->repl.nlinks)
        buf_printf(out, " replicas=%d", srv->repl.nlinks);
}

static void db_srv_status(struct service *s, struct buf *out)
{
    struct db_server *srv = (struct db_server *)s;
    struct persist *p = &srv->persist;
    int64_t now = util_now_ms();
    buf_printf(out, "\"role\":\"%s\",", srv->is_replica ? "replica" : "primary");
    if (srv->fo_open) {
        failover_status(&srv->fo, out);
        buf_printf(out, ",");
    }
    if (srv->is_replica && srv->has_upstream) {
        repl_replica_status(&srv->replica, out, now);
        buf_printf(out, ",");
    } else if (srv->repl.nlinks) {
        uint64_t most = 0;
        for (const struct repl_link *l = srv->repl.links; l; l = l->next)
            if (repl_link_lag_bytes(l) > most)
                most = repl_link_lag_bytes(l);
        buf_printf(out, "\"lag_ms\":%lld,\"lag_bytes\":%llu,",
                   (long long)repl_primary_max_lag_ms(&srv->repl, now), (unsigned long long)most);
    }
    if (srv->repl_open) {
        repl_primary_status(&srv->repl, out, now);
        buf_printf(out, ",");
    }
    buf_printf(out,
               "\"keys\":%zu,\"connections\":%zu,\"fsync\":\"%s\","
               "\"log_offset\":%llu,\"log_synced_offset\":%llu,\"snapshot_offset\":%llu,"
               "\"bgsave_in_progress\":%s,\"disk_ok\":%s,\"writes_refused\":%llu,"
               "\"commands\":%llu,\"rejected_connections\":%llu,\"evicted_clients\":%llu",
               srv->ks.store.count, srv->ks.nclients, wal_fsync_name(srv->policy),
               (unsigned long long)p->wal.end, (unsigned long long)p->wal.synced,
               (unsigned long long)p->snap_offset, p->child > 0 ? "true" : "false",
               wal_ok(&p->wal) ? "true" : "false", (unsigned long long)srv->refused_writes,
               (unsigned long long)srv->ks.stats.commands,
               (unsigned long long)srv->ks.stats.rejected_connections,
               (unsigned long long)srv->ks.stats.evicted_clients);
}

static void db_srv_metrics(struct service *s, struct buf *out, const char *labels)
{
    struct db_server *srv = (struct db_server *)s;
    struct persist *p = &srv->persist;
    /* log offsets are positions, not event counts: gauges, like a
     * replication offset */
    int64_t now = util_now_ms();
    struct {
        const char *name, *type, *help;
        unsigned long long v;
    } m[] = {
        {"strata_db_keys", "gauge", "Keys stored.", srv->ks.store.count},
        {"strata_db_connections", "gauge", "Client connections open.", srv->ks.nclients},
        {"strata_db_commands_total", "counter", "Commands run.", srv->ks.stats.commands},
        {"strata_db_log_offset_bytes", "gauge", "End of the write-ahead log (bytes written).",
         p->wal.end},
        {"strata_db_log_synced_offset_bytes", "gauge",
         "Write-ahead log bytes known to be on disk.", p->wal.synced},
        {"strata_db_log_fsyncs_total", "counter", "fsyncs of the write-ahead log.",
         p->wal.fsyncs},
        {"strata_db_log_write_errors_total", "counter", "Failed writes to the log.",
         p->wal.write_errors},
        {"strata_db_log_fsync_errors_total", "counter", "Failed fsyncs of the log.",
         p->wal.sync_errors},
        {"strata_db_writes_refused_total", "counter", "Writes refused while the disk fails.",
         srv->refused_writes},
        {"strata_db_disk_ok", "gauge", "1 while the log can be written and synced.",
         wal_ok(&p->wal)},
        {"strata_db_snapshots_total", "counter", "Snapshots written.", p->snapshots},
        {"strata_db_log_bytes_since_snapshot", "gauge", "Log bytes written since the snapshot.",
         persist_log_bytes(p)},
        {"strata_db_rejected_connections_total", "counter",
         "Connections refused at the client limit.", srv->ks.stats.rejected_connections},
        {"strata_db_evicted_clients_total", "counter",
         "Clients closed for exceeding the client buffer limit.", srv->ks.stats.evicted_clients},
        {"strata_db_repl_offset_bytes", "gauge",
         "Replication offset: the end of the stream this node has.", srv->repl.ready},
        {"strata_db_connected_replicas", "gauge", "Replicas attached.",
         (unsigned long long)srv->repl.nlinks},
        {"strata_db_good_replicas", "gauge", "Replicas attached and within max_lag.",
         (unsigned long long)repl_primary_good(&srv->repl, now)},
        {"strata_db_repl_lag_bytes", "gauge", "Bytes of the stream a replica has yet to apply.",
         srv->is_replica && srv->has_upstream ? repl_replica_lag_bytes(&srv->replica) : 0},
        {"strata_db_repl_link_up", "gauge", "1 while a replica's link to its upstream is up.",
         (unsigned long long)(srv->is_replica
                                  ? srv->has_upstream && repl_replica_link_up(&srv->replica)
                                  : 1)},
        {"strata_db_epoch", "gauge", "The highest failover epoch this node has seen.",
         srv->epoch.epoch},
        {"strata_db_is_primary", "gauge", "1 while this node is the primary.",
         (unsigned long long)!srv->is_replica},
        {"strata_db_failover_elections_total", "counter", "Elections this node started.",
         srv->fo.elections},
        {"strata_db_failover_promotions_total", "counter", "Times this node was promoted.",
         srv->fo.promotions},
        {"strata_db_sync_full_total", "counter", "Full resyncs served.", srv->repl.sync_full},
        {"strata_db_sync_partial_ok_total", "counter", "Partial resyncs served.",
         srv->repl.sync_partial_ok},
        {"strata_db_sync_partial_err_total", "counter", "Partial resyncs refused.",
         srv->repl.sync_partial_err},
    };
    for (size_t i = 0; i < sizeof m / sizeof m[0]; i++)
        buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n%s{%s} %llu\n", m[i].name, m[i].help,
                   m[i].name, m[i].type, m[i].name, labels, m[i].v);
    int64_t lag_ms = srv->is_replica && srv->has_upstream ? repl_replica_lag_ms(&srv->replica, now)
                   : srv->is_replica ? 0
                                     : repl_primary_max_lag_ms(&srv->repl, now);
    buf_printf(out,
               "# HELP strata_db_repl_lag_seconds Replication lag: of the furthest replica on a "
               "primary, of this node on a replica.\n# TYPE strata_db_repl_lag_seconds gauge\n"
               "strata_db_repl_lag_seconds{%s} %.3f\n",
               labels, (double)lag_ms / 1000.0);
}

/* A reload changes the failover settings (down_after, the priorities,
 * the policy, loaded again); anything else in a db's config changes with a
 * restart of the node, and a reload that changes it is refused whole. */
static int db_srv_reload(struct service *s, lua_State *L, int idx, int dry_run,
                         struct buf *changes, char *err, size_t errlen)
{
    struct db_server *srv = (struct db_server *)s;
    struct db_cfg cfg;
    if (read_cfg(L, idx, &cfg, err, errlen) < 0) {
        explicit_bzero(&cfg.access, sizeof cfg.access);
        return -1;
    }
    uint32_t access = crc32c(0, &cfg.access, sizeof cfg.access);
    explicit_bzero(&cfg.access, sizeof cfg.access);
    const struct db_cfg *was = srv->start_cfg;
    const char *what = NULL;
    if (!was)
        what = "its config";
    else if (strcmp(cfg.role, was->role) != 0)
        what = "role";
    else if (strcmp(cfg.dir, was->dir) != 0)
        what = "dir";
    else if (strcmp(cfg.fsync, was->fsync) != 0)
        what = "fsync";
    else if (cfg.compact_min != was->compact_min)
        what = "compact_min";
    else if (strcmp(cfg.replica_of, was->replica_of) != 0 ||
             strcmp(cfg.upstream, was->upstream) != 0)
        what = "replica_of";
    else if (cfg.backlog != was->backlog)
        what = "backlog";
    else if (cfg.min_replicas != was->min_replicas)
        what = "min_replicas";
    else if (cfg.repl_timeout != was->repl_timeout)
        what = "repl_timeout";
    else if (cfg.max_lag != was->max_lag)
        what = "max_lag";
    else if (access != srv->start_access)
        what = "the password or client limits";
    /* refusals name the declaration (file:line), as the topology's own do */
    char where[1100], why[1200];
    if (cfg_string(L, idx, "where", "", where, sizeof where, why, sizeof why) < 0 || !where[0])
        snprintf(where, sizeof where, "%s", s->env ? s->env->topology_path : "db");
    if (what) {
        snprintf(err, errlen, "%s: db %s: %s changes with a restart of the node, not a reload",
                 where, cfg.node, what);
        return -1;
    }
    size_t before = buf_size(changes);
    if (failover_reload(&srv->fo, (int64_t)(cfg.down_after * 1000), (int)cfg.priority, cfg.peers,
                        cfg.fo_policy, dry_run, changes, why, sizeof why) < 0) {
        snprintf(err, errlen, "%s: %s", where, why);
        return -1;
    }
    if (buf_size(changes) == before)
        buf_printf(changes, "node %s: db settings changed\n", cfg.node);
    if (!dry_run)
        *srv->start_cfg = cfg;
    return 0;
}

const struct service_kind db_service_kind = {
    .name = "db",
    .validate = db_srv_validate,
    .start = db_srv_start,
    .drain = db_srv_drain,
    .idle = db_srv_idle,
    .free = db_srv_free,
    .describe = db_srv_describe,
    .status_json = db_srv_status,
    .metrics = db_srv_metrics,
    .reload = db_srv_reload,
};
