/* cache: a keyspace plus eviction — what makes a keyspace a cache.
 *
 * The commands are the keyspace's (engine/kv). The cache adds, through the
 * keyspace's hooks: a touch on every key access (the LRU order list and
 * the LFU counter), making room before a write when used memory is over
 * max_memory (the keyspace's mem_limit) by evicting under the policy, the
 * maxmemory* CONFIG parameters and the eviction fields of INFO. */
#ifndef STRATA_CACHE_H
#define STRATA_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "evict.h"
#include "keyspace.h"

struct cache {
    struct keyspace ks;
    /* INFO sections of the cache's owner (the invalidation section of a
     * cache that follows a db), written before "# Keyspace"; NULL: none. */
    void (*info_sections)(void *arg, const struct kv_info_sel *sel, struct buf *b);
    void *info_arg;
    struct evict evict;
    char topology[1024];          /* for resolving relative Lua policy paths */
    char lua_path[1024];          /* the Lua policy's resolved path, when policy == lua */
    /* The one Lua policy file CONFIG SET may switch to: the one the
     * topology names for this cache (resolved), "" when it names none. A
     * node runs no other code than what its topology names. */
    char topo_lua[1024];
};

/* Sets up the keyspace with the cache's hooks; the cache must not move
 * afterwards (the hooks find it through ks.shell). */
void cache_init(struct cache *c, uint64_t seed, int64_t now_ms);
void cache_free(struct cache *c);
/* Sets the eviction policy: a built-in name, or a path to a Lua module
 * (resolved against the topology's directory). 0 or -1 with err. */
int cache_set_policy(struct cache *c, const char *name, int64_t now_ms, char *err, size_t errlen);
/* A built-in policy name as the topology and CONFIG SET accept it: the
 * engine's names and the short ones (lru, lfu, fifo, random: allkeys-*;
 * ttl: volatile-ttl). 0, or -1 when it is none. */
int cache_policy_parse(const char *name, enum evict_policy *out);
/* The policy as CONFIG GET and INFO show it. */
const char *cache_policy_name(const struct cache *c);
/* Sets max_memory (0: unlimited) and evicts down to it. */
void cache_set_max_memory(struct cache *c, uint64_t bytes, int64_t now_ms);
/* Resolves a policy path against the topology's directory. 0 or -1. */
int cache_resolve_path(const struct cache *c, const char *name, char *out, size_t outlen);

#endif
