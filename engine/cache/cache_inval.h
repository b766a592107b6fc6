/* cache_inval: a cache that keeps itself consistent with a db — it follows
 * the db primary's change stream (engine/stream: a light follower that
 * keeps no data) and deletes the cache keys each db write affects.
 *
 * Which cache keys a db key maps to: the same key (the identity), or what
 * the `keys(db_key)` function of a Lua module returns (a list of cache
 * keys), run in the policy host with its sandbox, budget and file:line
 * errors. An error or a return that is not a list of strings falls back to
 * the identity for that key, logged at most once a second.
 *
 * A flush in the db ([4] in a record) flushes the cache; so does a full
 * resync of the link (the backlog no longer held the follower's offset):
 * what the cache holds can no longer be proven fresh, and the cache is only
 * a cache. A partial resync after a lost link deletes exactly the keys the
 * missed writes touched. Given every db node of the data set, the follower
 * moves to the new primary after a failover (stream_follower.h) and resumes
 * from its offset there, or flushes when the new primary cannot continue
 * it. docs/cache.md, "Invalidation from a db". */
#ifndef STRATA_CACHE_INVAL_H
#define STRATA_CACHE_INVAL_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "cache.h"
#include "stream_follower.h"

struct policy_host;

struct cache_inval_cfg {
    char upstream[64];        /* the db primary's "host:port" */
    char upstream_node[64];
    char nodes[2240];         /* every db node, "name@host:port,...", or "" */
    char password[256];       /* the db's, resolved */
    double timeout_s;         /* the db's repl_timeout */
    char keys_path[1024];     /* a resolved Lua module with keys(), or "" */
};

struct cache_inval {
    struct cache *c;
    struct stream_follower sf;
    char from[64];            /* the configured upstream (sf's moves with failovers) */
    char nodes[2240];         /* the configured db nodes */
    struct policy_host *keys; /* NULL: the identity */
    int keys_ref;
    char keys_path[1024];
    int64_t rest_until_ms;    /* after a call ran into a limit, identity only */
    int64_t last_log_ms;      /* keys() errors are logged at most once a second */
    uint64_t invalidations;   /* cache keys deleted */
    uint64_t keys_seen;       /* db keys the stream named */
    uint64_t flushes;         /* flushes of the whole cache (db flush or full resync) */
    uint64_t keys_errors;     /* keys() failed or returned something else: identity */
    int64_t last_record_ms;
};

/* Loads the keys() module (when named) and prepares the follower. 0 or -1
 * with err ("file:line: message" for the module). */
int cache_inval_init(struct cache_inval *ci, struct cache *c, struct ev_loop *loop,
                     const char *node, const char *listen, const struct cache_inval_cfg *cfg,
                     char *err, size_t errlen);
void cache_inval_start(struct cache_inval *ci);
void cache_inval_free(struct cache_inval *ci);

/* Switches the keys() module (a reload): path "" for the identity. The
 * new module is loaded first; on error the old one stays. 0 or -1 with
 * err. */
int cache_inval_set_keys(struct cache_inval *ci, const char *path, char *err, size_t errlen);

/* Checks a keys() module the way init loads it. 0 or -1 with err. */
int cache_inval_check_keys(const char *path, char *err, size_t errlen);

/* One log record's effects: deletes the cache keys they map to (a flush
 * flushes). What the follower calls; also the unit tests' entry. */
void cache_inval_record(struct cache_inval *ci, const unsigned char *payload, size_t plen);

/* INFO's "invalidation" section fields, /status fields (no leading comma),
 * and /metrics lines. */
void cache_inval_info(const struct cache_inval *ci, struct buf *b, int64_t now_ms);
void cache_inval_status(const struct cache_inval *ci, struct buf *b);
void cache_inval_metrics(const struct cache_inval *ci, struct buf *out, const char *labels);

#endif
