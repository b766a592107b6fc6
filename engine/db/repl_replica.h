/* repl_replica: the receiving side of replication — a db node that follows
 * another (its primary, or a replica of it: a chain).
 *
 * It connects to the upstream's RESP port, authenticates with the db's
 * password, and asks PSYNC <replid> <offset> with the replication id and
 * end of its own log. Then it applies the stream (repl_proto.h) in order:
 *
 *  - a log record is applied to the store and appended to this node's own
 *    log, at the same offset it has upstream, and to its backlog (for
 *    replicas of its own): a restarted replica recovers from its own
 *    files and resumes where its log ends, by partial resync;
 *  - a full resync builds the new copy beside the one being served: keys
 *    go into a second store and into a new snapshot file; at the end the
 *    data directory is replaced (snapshot at offset P, a new log from P),
 *    and the second store replaces the served one once the log has been
 *    applied up to the offset the end record names (the copy is whole).
 *    A file SYNCING marks the directory while it is being replaced; a
 *    node that finds it at start throws the half-replaced files away and
 *    starts empty (it then resyncs in full);
 *  - a frame that fails its check or does not belong drops the link before
 *    anything of it is applied; so does silence past the timeout.
 *
 * It acknowledges its offset (REPLCONF ACK) after every batch it applies
 * and on a timer, and reconnects by itself after a pause when the link
 * drops. The keyspace is read-only (-READONLY for writes) and keeps expired
 * keys (hidden from reads) until the primary's deletion arrives, so the
 * replica's data never diverges from its primary's. */
#ifndef STRATA_REPL_REPLICA_H
#define STRATA_REPL_REPLICA_H

#include <ev.h>
#include <stdint.h>
#include <sys/socket.h>

#include "epoch.h"
#include "keyspace.h"
#include "net.h"
#include "persist.h"
#include "repl_primary.h"
#include "snapshot.h"
#include "store.h"

#define REPL_SYNC_MARKER "SYNCING"

enum {
    REPL_R_IDLE,          /* waiting to (re)connect */
    REPL_R_CONNECTING,
    REPL_R_HANDSHAKE,     /* AUTH / PSYNC sent, reading the answers */
    REPL_R_FULL,          /* receiving the keys of a full resync */
    REPL_R_STREAM,
};

struct repl_replica {
    struct ev_loop *loop;
    char node[64], listen[64];
    char upstream[64];           /* "host:port" it follows */
    char upstream_node[64];
    char password[256];
    int has_password;
    struct sockaddr_storage addr;
    socklen_t addrlen;
    double timeout_s;
    int64_t ack_ms;
    struct keyspace *ks;         /* served */
    struct persist *p;           /* this node's files */
    struct repl_primary *rp;     /* this node's own replicas */
    int policy;                  /* fsync policy for a new log */
    struct net_conn *conn;
    int state;                   /* REPL_R_* */
    int auth_pending;            /* the AUTH answer is still to come */
    ev_timer timer;              /* reconnects and acks */
    int64_t next_connect_ms;
    /* a full resync in progress */
    int has_writer;
    struct snapshot_writer sw;
    uint64_t full_id, full_offset;
    int loading;                 /* `next` is being completed: applied < load_until */
    struct store next;
    uint64_t load_until;
    uint64_t full_keys, full_bytes;
    int64_t full_start_ms;
    /* The key count the upstream announced (+FULLRESYNC's 7th field; 0
     * from an upstream that does not send it): `next` is presized for it.
     * full_resizes: table resizes `next` went through, counted when the
     * copy is swapped in (0 when the count was right). */
    uint64_t full_announced, full_resizes;
    /* what the upstream says */
    uint64_t upstream_offset;    /* from heartbeats */
    int64_t caught_up_ms;        /* last moment it had all the upstream had */
    int64_t last_io_ms;
    int64_t link_up_since_ms;
    uint64_t acked;              /* last offset acknowledged */
    uint64_t full_syncs, partial_syncs, bad_frames, link_drops;
    /* Failover (epoch.h): this node's epoch state, set by the owner after
     * init (NULL: no epochs in the handshake); the upstream's history,
     * taken on at the end of a full resync. */
    struct epoch_state *ep;
    struct failover *fo;
    struct epoch_state full_hist;
    uint64_t discarded_bytes, discarded_writes;
    char last_error[200];
};

/* Prepares (no connection yet: repl_replica_start). 0 or -1 with err. */
int repl_replica_init(struct repl_replica *rr, struct ev_loop *loop, const char *node,
                      const char *listen, const char *upstream, const char *upstream_node,
                      const char *password, double timeout_s, struct keyspace *ks,
                      struct persist *p, struct repl_primary *rp, int policy, char *err,
                      size_t errlen);
void repl_replica_start(struct repl_replica *rr);
void repl_replica_free(struct repl_replica *rr);
/* Before persist_open: a directory left half-replaced by a full resync
 * (the SYNCING marker) is emptied. 0, or -1 with err. */
int repl_replica_clean_dir(const char *dir, char *err, size_t errlen);

/* Log records in [from, to) of the log segments in dir. */
uint64_t repl_count_records(const char *dir, uint64_t from, uint64_t to);

/* This node's offset: the end of its log. */
static inline uint64_t repl_replica_offset(const struct repl_replica *rr) { return rr->p->wal.end; }
int64_t repl_replica_lag_ms(const struct repl_replica *rr, int64_t now_ms);
uint64_t repl_replica_lag_bytes(const struct repl_replica *rr);
int repl_replica_link_up(const struct repl_replica *rr);
/* 1 while a full resync is under way (the served data and the files are
 * not the same data set: no snapshot may be taken). */
int repl_replica_busy(const struct repl_replica *rr);

/* INFO replication fields of a replica (before the primary side's). */
void repl_replica_info(const struct repl_replica *rr, struct buf *b, int64_t now_ms);
/* /status fields (no leading comma). */
void repl_replica_status(const struct repl_replica *rr, struct buf *b, int64_t now_ms);

#endif
