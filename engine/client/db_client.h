/* db_client: the web tier's client of a replicated db.
 *
 * Writes go to the primary; reads go where the topology's `reads` says:
 * the primary, the replicas (spread by least pending calls), or a Lua read
 * policy's `route(cmd, key, replicas)` run in the policy host under a
 * budget (a policy error or a bad answer sends the read to the primary,
 * logged once per reload). Whether a command reads or writes comes from
 * the kv command table (kv_cmd.h).
 *
 * Read-your-writes: a call made with a db_session remembers the primary's
 * replication offset after each write of that session (a ROLE pipelined
 * behind the write). A later read of the session goes to a replica only
 * once that replica is known to have applied the offset (its ROLE offset,
 * asked in the same pipeline as the read when not already known); it waits
 * up to `ryw_wait` for one to catch up and is then served by the primary.
 * A session never reads a value older than one it wrote.
 *
 * A replica that is down or lagging is skipped; with no replica usable,
 * reads go to the primary. */
#ifndef STRATA_DB_CLIENT_H
#define STRATA_DB_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "kvc.h"

struct ev_loop;
struct db_client;

enum db_reads {
    DB_READS_PRIMARY = 0,
    DB_READS_REPLICAS,
    DB_READS_POLICY, /* cfg.policy_path's route() */
};

struct db_node_addr {
    const char *name; /* node name */
    const char *addr; /* "host:port" */
};

struct db_client_cfg {
    struct db_node_addr primary;
    const struct db_node_addr *replicas;
    int nreplicas;
    const char *password;    /* NULL: no AUTH */
    enum db_reads reads;
    const char *policy_path; /* reads == DB_READS_POLICY */
    double timeout;          /* seconds a call may wait for its reply (default 2) */
    double ryw_wait;         /* read-your-writes: seconds a read waits for a replica (default 0.05) */
};

/* A session's read-your-writes state; zeroed = nothing written yet. The
 * caller owns it and keeps it alive while calls made with it are pending
 * (or cancels them first). */
struct db_session {
    uint64_t min_offset; /* the primary's offset after this session's last write */
};

struct db_client *db_client_new(struct ev_loop *loop, const struct db_client_cfg *cfg, char *err,
                                size_t errlen);
/* Pending calls are answered with error "closed" before it returns. */
void db_client_free(struct db_client *dc);

/* One command. sess NULL: no read-your-writes for this call. NULL when out
 * of memory. */
struct kvc_call *db_client_call(struct db_client *dc, struct db_session *sess, int argc,
                                const char *const *argv, const size_t *argvlen, kvc_done_fn cb,
                                void *ud);

struct db_client_stats {
    struct kvc_stats calls;
    uint64_t reads_primary;   /* reads served by the primary */
    uint64_t reads_replica;   /* reads served by a replica */
    uint64_t ryw_waits;       /* reads that waited for a replica to catch up */
    uint64_t ryw_fallbacks;   /* ... and were then served by the primary */
};
void db_client_stats(const struct db_client *dc, struct db_client_stats *out);

/* The node a command would be sent to now (its name): the primary for a
 * write, else the read routing's choice (for a session still waiting on
 * every replica, the replica it would ask first). Runs a read policy's
 * route() like a call does. For status pages and tests. */
const char *db_client_route(struct db_client *dc, const struct db_session *sess, int argc,
                            const char *const *argv, const size_t *argvlen);
/* The node taken as the primary now (it changes when a failover is
 * followed). */
const char *db_client_primary(const struct db_client *dc);
/* For unit tests only: sets what the client believes of a node (link up
 * or down -- an up replica is taken as following its upstream --, applied
 * offset, calls in flight) without any traffic. */
void db_client_test_node(struct db_client *dc, const char *name, int up, uint64_t offset,
                         int inflight);

#endif
