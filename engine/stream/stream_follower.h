/* stream_follower: a light follower of a db's change stream — a link that
 * speaks the replica's handshake and reads the frames, but keeps no data.
 *
 * A cache that invalidates from a db (docs/cache.md, "Invalidation from a
 * db") follows the db primary with one of these. It connects to the
 * primary's RESP port, authenticates, and asks
 *
 *     PSYNC <replid> <offset> 1 <node> <listen> follower
 *
 * with the replication id and offset it last reached ("?" and -1 the first
 * time). The trailing word tells the primary that this link holds no copy:
 * it is not counted for WAIT or min_replicas, and a full resync sends it
 * no keys (only the end of the keys). Then:
 *
 *  - "+CONTINUE <replid> <offset>": a partial resync; every log record
 *    from there on is handed to ops->on_record in order;
 *  - "+FULLRESYNC <replid> <P>": what came before P cannot be followed any
 *    more: ops->on_resync is called (a cache flushes), chunks of keys are
 *    skipped, and after the end of the keys the log from P is followed.
 *
 * Heartbeats keep the link's timeout apart from silence; the follower
 * acknowledges its offset (REPLCONF ACK) after every batch and on a timer,
 * drops the link after the timeout without a byte, and reconnects by
 * itself (every 0.5 s), asking again from its offset: a link lost for
 * less than the primary's backlog (or log on disk) holds resumes with no
 * resync. The offset is memory only: a restarted follower starts with a
 * full resync, which is what an empty cache needs anyway.
 *
 * Following a failover: given every db node of the data set
 * (stream_follower_set_nodes), the follower asks each `FAILOVER POSITION`
 * (role and epoch, one line) every 0.25 s while its link is down and every
 * second while it is up, connects only to a node that answers `primary`,
 * and moves to the primary of the highest epoch when that is not the node
 * it follows (the followed node died, stepped down or was cut off). It
 * resumes there with PSYNC from its offset, presenting the epoch of the
 * primary it followed and the epoch its offset ends in (from that
 * primary's history): the new primary continues it (a partial resync) when
 * its log holds the follower's offset on the same history, and answers a
 * full resync otherwise (the old primary had writes the new one never got)
 * — ops->on_resync, so a cache flushes what it cannot prove fresh. With one
 * node or none given, nothing is asked: the follower dials its upstream as
 * before. */
#ifndef STRATA_STREAM_FOLLOWER_H
#define STRATA_STREAM_FOLLOWER_H

#include <ev.h>
#include <stdint.h>
#include <sys/socket.h>

#include "buf.h"
#include "net.h"

enum {
    STREAM_F_IDLE,        /* waiting to (re)connect */
    STREAM_F_CONNECTING,
    STREAM_F_HANDSHAKE,   /* AUTH / PSYNC sent, reading the answers */
    STREAM_F_FULL,        /* a full resync: skipping the keys */
    STREAM_F_STREAM,
};

struct stream_follower_ops {
    /* One log record (its effects' payload), in stream order. */
    void (*on_record)(void *arg, const unsigned char *payload, size_t plen);
    /* A full resync began: nothing before it can be followed. */
    void (*on_resync)(void *arg);
};

/* One db node of the data set, and what it last said of itself. */
#define STREAM_MAX_NODES 16
#define STREAM_MAX_HIST 16
struct stream_node {
    struct stream_follower *sf;
    char name[64], addr[64];
    struct sockaddr_storage sa;
    socklen_t salen;
    struct net_conn *probe;      /* a FAILOVER POSITION in flight */
    int auth_pending;
    int is_primary;              /* its last answer said primary */
    uint64_t epoch, offset;
    int64_t seen_ms;             /* when it last answered (0: not yet, or failed) */
};

struct stream_follower {
    struct ev_loop *loop;
    const struct stream_follower_ops *ops;
    void *arg;
    char what[16];               /* the follower's kind, for messages ("cache") */
    char node[64], listen[64];   /* this node, as the primary lists it */
    char upstream[64];           /* "host:port" it follows */
    char upstream_node[64];
    char password[256];
    int has_password;
    struct sockaddr_storage addr;
    socklen_t addrlen;
    double timeout_s;
    int64_t ack_ms;
    struct net_conn *conn;
    int state;                   /* STREAM_F_* */
    int auth_pending;
    ev_timer timer;              /* reconnects and acks */
    int64_t next_connect_ms;
    int has_replid;
    uint64_t replid;             /* the stream it follows */
    uint64_t offset;             /* the end of the last record handed on */
    uint64_t full_offset;        /* P of a full resync in progress */
    uint64_t upstream_offset;    /* from heartbeats */
    uint64_t acked;
    int64_t last_io_ms, link_up_since_ms;
    uint64_t records, full_syncs, partial_syncs, bad_frames, link_drops, skipped_keys_bytes;
    char last_error[200];
    /* following a failover (stream_follower_set_nodes) */
    struct stream_node nodes[STREAM_MAX_NODES];
    int nnodes;                  /* 0: the single upstream, nothing asked */
    int cur;                     /* the node followed, an index of nodes */
    ev_timer probe_timer;
    int64_t next_probe_ms;
    int has_hist;                /* the followed primary's epoch and history */
    uint64_t up_epoch;
    uint64_t hist_epoch[STREAM_MAX_HIST], hist_start[STREAM_MAX_HIST];
    int nhist;
    uint64_t switches;           /* moves to another primary */
    int said_no_primary;
};

/* Prepares (no connection yet: stream_follower_start). 0 or -1 with err. */
int stream_follower_init(struct stream_follower *sf, struct ev_loop *loop, const char *what,
                         const char *node, const char *listen, const char *upstream,
                         const char *upstream_node, const char *password, double timeout_s,
                         const struct stream_follower_ops *ops, void *arg, char *err,
                         size_t errlen);
/* Every db node of the data set, "name@host:port,..." (the upstream among
 * them): the follower then follows whichever answers as the primary of the
 * highest epoch. Call after init, before start. 0 or -1 with err. */
int stream_follower_set_nodes(struct stream_follower *sf, const char *list, char *err,
                              size_t errlen);
void stream_follower_start(struct stream_follower *sf);
void stream_follower_free(struct stream_follower *sf);

/* 1 while the link is past its handshake. */
int stream_follower_link_up(const struct stream_follower *sf);
/* How far the follower is behind the upstream's last heartbeat. */
uint64_t stream_follower_lag_bytes(const struct stream_follower *sf);
const char *stream_follower_state_name(const struct stream_follower *sf);

/* The next line of a replication handshake ("+OK", "+CONTINUE ...") from
 * rbuf, without its CRLF, cut to linelen - 1: 1 taken (consumed), 0 need
 * more, -1 no line end within STREAM_HANDSHAKE_LINE_MAX bytes. Followers
 * and replicas read their upstream's answers with it. */
#define STREAM_HANDSHAKE_LINE_MAX 1024
int stream_handshake_line(struct buf *rbuf, char *line, size_t linelen);

/* Text of a replication id (16 hex digits) and back. */
void stream_id_format(uint64_t id, char *out, size_t n);
int stream_id_parse(const char *s, size_t n, uint64_t *out);

#endif
