/* evict: choosing which key to drop when the cache is over its memory limit.
 *
 * Exact policies walk the store's order list, O(1) per operation:
 *   allkeys-lru   the head of the list in access order
 *   allkeys-fifo  the head of the list in insertion order
 * volatile-lru/-fifo take the first key with a TTL near the head (exact
 * when one is within EVICT_VOLATILE_WALK entries of it, sampled otherwise).
 * Sampled policies look at `samples` random candidates and keep the best:
 *   *-lfu    lowest logarithmic counter after decay (ties: least recent)
 *   *-ttl    soonest expiry (allkeys-ttl falls back to LRU when no key has
 *            a TTL)
 *   *-random any key (allkeys) or any key with a TTL (volatile)
 *   lua      a Lua policy chooses among the sampled candidates
 * noeviction chooses nothing, so writes over the limit are refused.
 *
 * The LFU counter is 8 bits and grows with probability
 * 1/((counter - 5) * log_factor + 1), so it spans ~1M hits at factor 10; it
 * decays by one per `decay_min` minutes without access. */
#ifndef STRATA_EVICT_H
#define STRATA_EVICT_H

#include <stddef.h>
#include <stdint.h>

#include "store.h"

enum evict_policy {
    EVICT_NOEVICTION,
    EVICT_ALLKEYS_LRU,
    EVICT_VOLATILE_LRU,
    EVICT_ALLKEYS_FIFO,
    EVICT_VOLATILE_FIFO,
    EVICT_ALLKEYS_LFU,
    EVICT_VOLATILE_LFU,
    EVICT_ALLKEYS_RANDOM,
    EVICT_VOLATILE_RANDOM,
    EVICT_ALLKEYS_TTL,
    EVICT_VOLATILE_TTL,
    EVICT_LUA,
};

#define EVICT_MAX_SAMPLES 64
#define EVICT_VOLATILE_WALK 64

struct evict;
struct evict_lua;

/* How evict.c reaches the Lua chooser (evict_lua.c sets it with
 * evict_set_lua), so the eviction core does not depend on the Lua host. */
struct evict_chooser_ops {
    /* The chosen index in [0, n), or -1 with a message in err. */
    int (*choose)(struct evict_lua *el, const struct evict *ev, struct store *s,
                  struct store_entry **cands, int n, int64_t now_ms, char *err, size_t errlen);
    const char *(*name)(const struct evict_lua *el);
    void (*free)(struct evict_lua *el);
};

struct evict {
    enum evict_policy policy;
    enum evict_policy fallback;   /* used when the Lua policy fails */
    int samples;
    int lfu_log_factor;
    int lfu_decay_min;
    struct evict_lua *lua;        /* owned; set while policy == EVICT_LUA */
    const struct evict_chooser_ops *lua_ops; /* how to call and free it */
    int lua_failed_logged;        /* one log line per policy load, not per eviction */
    uint64_t evicted;
    uint64_t lua_errors;
};

/* "allkeys-lru" etc. (not "lua", which takes a path) -> policy. 0 or -1. */
int evict_policy_parse(const char *name, enum evict_policy *out);
const char *evict_policy_name(enum evict_policy p);

void evict_init(struct evict *ev);
/* Drops the Lua policy, if any. */
void evict_free(struct evict *ev);
/* Switches to a built-in policy (re-sorting the order list when switching
 * between LRU and FIFO order). A Lua policy is released. */
void evict_set_policy(struct evict *ev, struct store *s, enum evict_policy p, int64_t now_ms);
/* Switches to a loaded Lua policy (ownership moves to ev). Defined in
 * evict_lua.c, which hands its chooser ops to evict_set_chooser. */
void evict_set_lua(struct evict *ev, struct store *s, struct evict_lua *lua, int64_t now_ms);
/* Switches to a chooser called through `ops` (ownership of el moves to ev). */
void evict_set_chooser(struct evict *ev, struct store *s, const struct evict_chooser_ops *ops,
                       struct evict_lua *el, int64_t now_ms);

/* Call on every access of a key (reads and writes). */
void evict_touch(struct evict *ev, struct store *s, struct store_entry *e, int64_t now_ms);
/* The LFU counter after decay, without changing it. */
unsigned evict_lfu_value(const struct evict *ev, const struct store *s,
                         const struct store_entry *e, int64_t now_ms);

/* The next victim under the current policy, or NULL when there is none
 * (noeviction, or no eligible key). */
struct store_entry *evict_choose(struct evict *ev, struct store *s, int64_t now_ms);
/* Deletes victims until s->mem.used <= limit. Returns 0 when under the
 * limit, -1 when nothing more can be evicted. */
int evict_until(struct evict *ev, struct store *s, size_t limit, int64_t now_ms);

#endif
