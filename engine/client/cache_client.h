/* cache_client: the web tier's client of a sharded cache.
 *
 * Keys spread over the shards by consistent hashing on the shards' names
 * (hash_ring), so adding or removing one of N shards on reload moves about
 * 1/N of the keys. One connection per shard, pipelined; a shard that is
 * down (connect refused, link lost, no reply within the timeout) answers
 * its calls at once with reply == NULL, error "down", until a reconnect
 * succeeds (tried at most every `retry_after` seconds). The caller decides
 * what a failure means: for the web tier a failed GET is a miss. */
#ifndef STRATA_CACHE_CLIENT_H
#define STRATA_CACHE_CLIENT_H

#include <stddef.h>

#include "kvc.h"

struct ev_loop;
struct cache_client;

struct cache_shard_addr {
    const char *name; /* placement on the ring: the shard's node name */
    const char *addr; /* "host:port" */
};

struct cache_client_cfg {
    const struct cache_shard_addr *shards;
    int nshards;
    const char *password; /* NULL: no AUTH */
    double timeout;       /* seconds a call may wait for its reply (default 1) */
    double retry_after;   /* seconds between reconnects to a dead shard (default 0.5) */
};

struct cache_client *cache_client_new(struct ev_loop *loop, const struct cache_client_cfg *cfg,
                                      char *err, size_t errlen);
/* Pending calls are answered with error "closed" before it returns. */
void cache_client_free(struct cache_client *cc);

/* The shard index a key lives on. */
int cache_client_shard_of(const struct cache_client *cc, const char *key, size_t klen);

/* One command about one key (argv[1] is usually the key, but placement
 * uses `key`): GET, SET, DEL, INCR, EXPIRE, ... NULL when out of memory. */
struct kvc_call *cache_client_call(struct cache_client *cc, const char *key, size_t klen, int argc,
                                   const char *const *argv, const size_t *argvlen, kvc_done_fn cb,
                                   void *ud);
/* MGET over shards: one MGET per shard involved, answered once with an
 * array reply in the order of `keys` (a key whose shard failed is NIL). */
struct kvc_call *cache_client_mget(struct cache_client *cc, int nkeys, const char *const *keys,
                                   const size_t *klens, kvc_done_fn cb, void *ud);

void cache_client_stats(const struct cache_client *cc, struct kvc_stats *out);
/* 1 when shard i's link is up now. */
int cache_client_shard_up(const struct cache_client *cc, int i);
int cache_client_nshards(const struct cache_client *cc);

#endif
