/* repl_primary: the sending side of replication — the backlog, the
 * replicas attached to this node, their full and partial resyncs, the
 * stream, heartbeats and acknowledgements.
 *
 * Every db node has one: a primary streams to its replicas, and a replica
 * streams what it applies to replicas of its own (a chain), with the same
 * replication id and offsets as the primary it follows.
 *
 * A replica attaches over the node's own RESP port: it authenticates and
 * sends PSYNC <replid> <offset> <version> <node> <listen>; the db server
 * answers through repl_primary_psync and hands the connection over here
 * (resp_server's handoff). From then on the connection carries the stream
 * (repl_proto.h) one way and REPLCONF ACK <offset> commands the other way.
 * A PSYNC whose seventh argument is `follower` comes from a change-stream
 * follower that keeps no copy (engine/stream/stream_follower.h: a cache
 * invalidating from this db): it gets the same stream, but a full resync
 * sends it no keys, and it counts for neither WAIT nor min_replicas.
 *
 *  - partial resync: the replica's replication id is ours and the backlog,
 *    or the log segments on disk, still hold its offset: "+CONTINUE
 *    <replid> <offset>" and the log records from there (read from the
 *    segment files, in bounded chunks, until the backlog holds the rest);
 *  - full resync: "+FULLRESYNC <replid> <offset P> <epoch> <history>
 *    <diverged> <keys>" (keys: the store's count, which the replica sizes
 *    its new store for; older readers stop at the fields before), then
 *    every key, read
 *    from the store in small steps between other work (no file, no fork:
 *    a cursor scan that produces only while the link's output is below its
 *    high mark), then the end record, then the log from P. Writes that run
 *    during the scan are in the log after P, and a log record holds keys'
 *    after-states, so replaying them over the copy ends in the primary's
 *    state; the end record names the offset from which the copy is whole.
 *    If the backlog no longer holds P when the copy ends (more writes than
 *    the backlog holds arrived meanwhile), the link is dropped and the
 *    replica starts over: size the backlog for that.
 *
 * Links only carry what the log already has (`ready`, a record boundary
 * the owner advances after each log write), so a replica never holds a
 * write its primary could lose in a crash. Heartbeats go out when a link
 * is idle; a link that has sent nothing for the timeout is dropped. */
#ifndef STRATA_REPL_PRIMARY_H
#define STRATA_REPL_PRIMARY_H

#include <ev.h>
#include <stddef.h>
#include <stdint.h>

#include "backlog.h"
#include "buf.h"
#include "net.h"
#include "repl_proto.h"
#include "resp.h"
#include "store.h"
#include "wal.h"

#define REPL_LAG_SAMPLES 128

enum { REPL_LINK_SNAPSHOT, REPL_LINK_STREAM };

struct repl_primary;
struct epoch_state;
struct failover;

struct repl_link {
    struct repl_link *prev, *next;
    struct repl_primary *rp;
    struct net_conn *conn;
    int state;                 /* REPL_LINK_* */
    int follower;              /* a change-stream follower (a cache): no copy, no keys in
                                  a full resync, not counted for WAIT or min_replicas */
    uint64_t sent;             /* stream: log offset written to the connection */
    uint64_t acked;            /* what the replica acknowledged applying */
    int64_t attached_ms, last_ack_ms, last_send_ms;
    /* full resync */
    uint64_t snap_offset;      /* P */
    uint64_t cursor;
    int scan_started;
    uint64_t snap_keys, snap_bytes;
    int64_t snap_start_ms;
    struct repl_chunk chunk;
    struct resp_parser parser;
    /* catching up from the log on disk (what the backlog no longer holds) */
    int disk_fd;               /* -1 when none is open */
    uint64_t disk_seg_start, disk_seg_end; /* the open segment; end UINT64_MAX: the current one */
    uint64_t disk_bytes;
    char name[64];             /* the replica's node */
    char listen[64];           /* where it serves */
};

struct repl_primary {
    struct ev_loop *loop;
    char node[64];
    struct store *store;       /* the keys a full resync sends */
    struct backlog backlog;
    const struct wal *wal;     /* the node's log: partial resyncs older than the backlog */
    uint64_t replid;           /* the data set's id (persist.h) */
    uint64_t ready;            /* links stream up to here: in the log, a record boundary */
    struct repl_link *links;   /* replicas and followers */
    int nlinks;                /* replicas */
    int nfollowers;            /* change-stream followers (PSYNC ... follower) */
    double timeout_s;          /* a silent link is dropped after this */
    int64_t heartbeat_ms;
    int min_replicas;          /* writes refused with fewer good replicas */
    int64_t max_lag_ms;        /* a good replica acknowledged within this */
    int refuse_psync;          /* 1 while this node's own copy is not whole */
    uint64_t sync_full, sync_partial_ok, sync_partial_err;
    uint64_t links_dropped;
    int acks_pending;          /* an ack came: the owner re-checks its WAITs */
    const struct epoch_state *ep; /* this node's epoch and log history (epoch.h) */
    struct failover *fo;       /* told of later epochs replicas present; may be NULL */
    /* (offset, time) samples for lag in ms */
    struct {
        uint64_t off;
        int64_t ms;
    } samples[REPL_LAG_SAMPLES];
    int nsamples, sidx;
};

/* 0, or -1 when the backlog cannot be allocated. */
int repl_primary_init(struct repl_primary *rp, struct ev_loop *loop, const char *node,
                      struct store *store, size_t backlog_bytes, double timeout_s,
                      uint64_t replid, uint64_t offset);
/* Drops every link. */
void repl_primary_free(struct repl_primary *rp);
/* A new data set (this node, a replica, was fully resynced): the backlog
 * restarts at offset and every link of ours is dropped. */
void repl_primary_reset(struct repl_primary *rp, uint64_t replid, uint64_t offset);
void repl_primary_drop_all(struct repl_primary *rp, const char *why);

/* One framed record the log just appended (its offset is backlog.end). */
static inline void repl_primary_feed(struct repl_primary *rp, const void *frame, size_t n)
{
    backlog_append(&rp->backlog, frame, n);
}

/* PSYNC argv[1..]: decides partial or full resync and writes the reply line
 * (or an error) to out. Returns the link to hand the connection to
 * (repl_primary_attach), or NULL after an error reply. */
struct repl_link *repl_primary_psync(struct repl_primary *rp, size_t argc, const char **argv,
                                     const size_t *argl, const char *peer, struct buf *out);
/* resp_server handoff: the connection now carries the stream. */
void repl_primary_attach(struct net_conn *c, void *link);
/* Streams to every link up to `ready` (call after each log write). */
void repl_primary_pump(struct repl_primary *rp, uint64_t ready);
/* Periodic: heartbeats, lag samples (call ~10 times a second). */
void repl_primary_cron(struct repl_primary *rp, int64_t now_ms);

/* Replicas that acknowledged at least offset. */
int repl_primary_count_acked(const struct repl_primary *rp, uint64_t offset);
/* Replicas fit to count for min_replicas: streaming, acknowledged within
 * max_lag. */
int repl_primary_good(const struct repl_primary *rp, int64_t now_ms);
/* 1 when min_replicas is set and not met (writes are refused). */
int repl_primary_refuses(const struct repl_primary *rp, int64_t now_ms);
/* Lag of a link in bytes and in ms (how long ago the primary's log was
 * where the replica is now). */
uint64_t repl_link_lag_bytes(const struct repl_link *l);
int64_t repl_link_lag_ms(const struct repl_link *l, int64_t now_ms);
/* The largest lag in ms over the links (0 with none). */
int64_t repl_primary_max_lag_ms(const struct repl_primary *rp, int64_t now_ms);

/* INFO replication fields (connected_slaves, slaveN, master_replid, ...). */
void repl_primary_info(const struct repl_primary *rp, struct buf *b, int64_t now_ms);
/* "replicas":[...] and counters, for /status (no leading comma). */
void repl_primary_status(const struct repl_primary *rp, struct buf *b, int64_t now_ms);

#endif
