/* cache: the keyspace hooks that make a keyspace a cache (see cache.h). */
#include "cache.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "evict_lua.h"
#include "log.h"
#include "luahost.h"
#include "util.h"

/* ---- hooks into the keyspace -------------------------------------------- */

static void hook_touch(struct keyspace *ks, struct store_entry *e, int64_t now_ms)
{
    struct cache *c = ks->shell;
    evict_touch(&c->evict, &ks->store, e, now_ms);
}

static int hook_reclaim(struct keyspace *ks, int64_t now_ms)
{
    struct cache *c = ks->shell;
    return evict_until(&c->evict, &ks->store, ks->mem_limit, now_ms);
}

static void hook_info(struct keyspace *ks, enum kv_info_at at, const struct kv_info_sel *sel,
                      struct buf *b)
{
    struct cache *c = ks->shell;
    if (at == KV_INFO_MEMORY) {
        char h[32];
        kv_human_bytes(h, sizeof h, (double)ks->mem_limit);
        buf_printf(b,
                   "maxmemory:%llu\r\nmaxmemory_human:%s\r\nmaxmemory_policy:%s\r\n"
                   "maxmemory_samples:%d\r\nmaxmemory_eviction_fallback:%s\r\n",
                   (unsigned long long)ks->mem_limit, h, cache_policy_name(c), c->evict.samples,
                   evict_policy_name(c->evict.fallback));
    } else if (at == KV_INFO_STATS) {
        buf_printf(b, "evicted_keys:%llu\r\noom_rejections:%llu\r\neviction_policy_errors:%llu\r\n",
                   (unsigned long long)c->evict.evicted,
                   (unsigned long long)ks->stats.oom_rejections,
                   (unsigned long long)c->evict.lua_errors);
    } else if (at == KV_INFO_SECTIONS && c->info_sections) {
        c->info_sections(c->info_arg, sel, b);
    }
}

static void hook_reset_stats(struct keyspace *ks)
{
    struct cache *c = ks->shell;
    c->evict.evicted = 0;
    c->evict.lua_errors = 0;
}

/* ---- CONFIG parameters -------------------------------------------------- */

/* Memory values as Redis reads them: k/m/g are powers of 1000, kb/mb/gb of
 * 1024, case-insensitive. */
static int parse_memory(const char *s, size_t n, unsigned long long *out)
{
    size_t i = 0;
    while (i < n && isdigit((unsigned char)s[i]))
        i++;
    if (i == 0 || i > 19)
        return -1;
    unsigned long long v = strtoull(s, NULL, 10), mul = 1;
    char unit[4] = {0};
    size_t ul = n - i;
    if (ul > 2)
        return -1;
    for (size_t k = 0; k < ul; k++)
        unit[k] = (char)tolower((unsigned char)s[i + k]);
    if (ul == 0 || strcmp(unit, "b") == 0)
        mul = 1;
    else if (strcmp(unit, "k") == 0)
        mul = 1000;
    else if (strcmp(unit, "kb") == 0)
        mul = 1024;
    else if (strcmp(unit, "m") == 0)
        mul = 1000000;
    else if (strcmp(unit, "mb") == 0)
        mul = 1024 * 1024;
    else if (strcmp(unit, "g") == 0)
        mul = 1000000000;
    else if (strcmp(unit, "gb") == 0)
        mul = 1024ull * 1024 * 1024;
    else
        return -1;
    if (v > ~0ull / mul)
        return -1;
    *out = v * mul;
    return 0;
}

static void get_maxmemory(struct keyspace *ks, char *out, size_t n)
{
    snprintf(out, n, "%llu", (unsigned long long)ks->mem_limit);
}

static int set_maxmemory(struct keyspace *ks, const char *val, size_t vl, int64_t now_ms,
                         char *why, size_t whylen)
{
    unsigned long long m;
    if (parse_memory(val, vl, &m) < 0) {
        snprintf(why, whylen, "argument must be a memory value");
        return -1;
    }
    cache_set_max_memory(ks->shell, m, now_ms);
    return 0;
}

static void get_policy(struct keyspace *ks, char *out, size_t n)
{
    snprintf(out, n, "%s", cache_policy_name(ks->shell));
}

static const char *base_name(const char *path)
{
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

/* 1 when a client's value names the Lua policy file the topology names.
 * The file system is looked at only for a value with that file's name, so
 * a client cannot probe for other files either. */
static int is_topology_policy(struct cache *c, const char *val)
{
    if (!c->topo_lua[0] || strcmp(base_name(val), base_name(c->topo_lua)) != 0)
        return 0;
    char path[1024];
    return cache_resolve_path(c, val, path, sizeof path) == 0 && strcmp(path, c->topo_lua) == 0;
}

/* CONFIG SET maxmemory-policy: a built-in policy, or the Lua policy file
 * the topology names for this cache. Any other file is refused without
 * being opened: what code a node runs is the topology's decision, not a
 * client's (the lesson of Redis 7's protected configs). */
static int set_policy(struct keyspace *ks, const char *val, size_t vl, int64_t now_ms, char *why,
                      size_t whylen)
{
    struct cache *c = ks->shell;
    enum evict_policy p;
    char err[512];
    if (cache_policy_parse(val, &p) < 0) {
        if (!(strchr(val, '/') || (vl > 4 && strcmp(val + vl - 4, ".lua") == 0))) {
            snprintf(why, whylen,
                     "argument(s) must be one of the following: volatile-lru, volatile-lfu, "
                     "volatile-random, volatile-ttl, allkeys-lru, allkeys-lfu, allkeys-random, "
                     "noeviction, allkeys-fifo, volatile-fifo, allkeys-ttl, lru, lfu, fifo, "
                     "random, ttl, or the Lua policy the topology names");
            return -1;
        }
        if (!is_topology_policy(c, val)) {
            snprintf(why, whylen,
                     "can't set protected config: a Lua policy file can be set only when the "
                     "topology names it for this cache%s",
                     c->topo_lua[0] ? "" : " (it names none)");
            return -1;
        }
    }
    if (cache_set_policy(c, val, now_ms, err, sizeof err) == 0)
        return 0;
    snprintf(why, whylen, "%s", err);
    return -1;
}

static void get_samples(struct keyspace *ks, char *out, size_t n)
{
    snprintf(out, n, "%d", ((struct cache *)ks->shell)->evict.samples);
}

static int set_samples(struct keyspace *ks, const char *val, size_t vl, int64_t now_ms, char *why,
                       size_t whylen)
{
    long long s;
    if (kv_parse_ll(val, vl, &s) < 0 || s < 1 || s > EVICT_MAX_SAMPLES) {
        snprintf(why, whylen, "argument must be between 1 and 64 inclusive");
        return -1;
    }
    ((struct cache *)ks->shell)->evict.samples = (int)s;
    return 0;
}

static void get_fallback(struct keyspace *ks, char *out, size_t n)
{
    snprintf(out, n, "%s", evict_policy_name(((struct cache *)ks->shell)->evict.fallback));
}

static int set_fallback(struct keyspace *ks, const char *val, size_t vl, int64_t now_ms,
                        char *why, size_t whylen)
{
    enum evict_policy p;
    if (cache_policy_parse(val, &p) < 0) {
        snprintf(why, whylen, "argument must be a built-in eviction policy");
        return -1;
    }
    ((struct cache *)ks->shell)->evict.fallback = p;
    return 0;
}

/* Nothing persists: SAVE points and the append-only file are shown off and
 * setting them is accepted and ignored, as clients that configure a Redis
 * as a cache expect. */
static void get_save(struct keyspace *ks, char *out, size_t n) { snprintf(out, n, "%s", ""); }
static void get_appendonly(struct keyspace *ks, char *out, size_t n) { snprintf(out, n, "no"); }
static int set_ignored(struct keyspace *ks, const char *val, size_t vl, int64_t now_ms, char *why,
                       size_t whylen)
{
    return 0;
}

static const struct kv_param cache_params[] = {
    {"maxmemory", get_maxmemory, set_maxmemory},
    {"maxmemory-policy", get_policy, set_policy},
    {"maxmemory-samples", get_samples, set_samples},
    {"maxmemory-eviction-fallback", get_fallback, set_fallback},
    {"save", get_save, set_ignored},
    {"appendonly", get_appendonly, set_ignored},
};

static const struct kv_hooks cache_hooks = {
    .touch = hook_touch,
    .reclaim = hook_reclaim,
    .info = hook_info,
    .reset_stats = hook_reset_stats,
    .params = cache_params,
    .nparams = sizeof cache_params / sizeof cache_params[0],
};

/* ---- lifecycle and policy ------------------------------------------------- */

void cache_init(struct cache *c, uint64_t seed, int64_t now_ms)
{
    memset(c, 0, sizeof *c);
    keyspace_init(&c->ks, seed, now_ms);
    keyspace_set_hooks(&c->ks, &cache_hooks, c);
    evict_init(&c->evict);
}

void cache_free(struct cache *c)
{
    evict_free(&c->evict);
    keyspace_free(&c->ks);
}

void cache_set_max_memory(struct cache *c, uint64_t bytes, int64_t now_ms)
{
    c->ks.mem_limit = bytes;
    keyspace_enforce_memory(&c->ks, now_ms);
}

int cache_resolve_path(const struct cache *c, const char *name, char *out, size_t outlen)
{
    return luahost_resolve_path(c->topology[0] ? c->topology : NULL, name, out, outlen);
}

int cache_policy_parse(const char *name, enum evict_policy *out)
{
    static const char *const shorts[][2] = {
        {"lru", "allkeys-lru"},       {"lfu", "allkeys-lfu"}, {"fifo", "allkeys-fifo"},
        {"random", "allkeys-random"}, {"ttl", "volatile-ttl"},
    };
    for (size_t i = 0; i < sizeof shorts / sizeof shorts[0]; i++)
        if (strcasecmp(name, shorts[i][0]) == 0)
            return evict_policy_parse(shorts[i][1], out);
    return evict_policy_parse(name, out);
}

const char *cache_policy_name(const struct cache *c)
{
    if (c->evict.policy == EVICT_LUA)
        return c->lua_path;
    return evict_policy_name(c->evict.policy);
}

int cache_set_policy(struct cache *c, const char *name, int64_t now_ms, char *err, size_t errlen)
{
    enum evict_policy p;
    if (cache_policy_parse(name, &p) == 0) {
        evict_set_policy(&c->evict, &c->ks.store, p, now_ms);
        c->lua_path[0] = 0;
        return 0;
    }
    size_t n = strlen(name);
    if (!(strchr(name, '/') || (n > 4 && strcmp(name + n - 4, ".lua") == 0))) {
        snprintf(err, errlen, "unknown eviction policy '%s'", name);
        return -1;
    }
    char path[1024];
    if (cache_resolve_path(c, name, path, sizeof path) < 0) {
        snprintf(err, errlen, "eviction policy %s: no such file", name);
        return -1;
    }
    struct evict_lua *el = evict_lua_new(path, c->evict.lua, err, errlen);
    if (!el)
        return -1;
    evict_set_lua(&c->evict, &c->ks.store, el, now_ms);
    snprintf(c->lua_path, sizeof c->lua_path, "%s", path);
    log_info("eviction policy %s loaded", path);
    return 0;
}
