/* cache_inval: deleting the cache keys a db write affects, from the db's
 * change stream (see cache_inval.h). */
#include "cache_inval.h"

#include <lauxlib.h>
#include <lua.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "policy_host.h"
#include "stream_frame.h"
#include "util.h"

/* keys() runs once per db key a write touches: a small budget, and a rest
 * after it ran into the budget, so a runaway module costs the identity
 * fallback rather than the limit per key. */
#define KEYS_BUDGET 1000000
#define KEYS_SECONDS 0.05
#define KEYS_REST_MS 1000
#define KEYS_MAX 1024            /* cache keys one db key may map to */
#define LOG_EVERY_MS 1000

static const char *const keys_needs[] = {"keys", NULL};

int cache_inval_check_keys(const char *path, char *err, size_t errlen)
{
    struct policy_host *h = policy_host_open(path, keys_needs, POLICY_MEM_DEFAULT, err, errlen);
    if (!h)
        return -1;
    policy_host_free(h);
    return 0;
}

static void delete_key(struct cache_inval *ci, const char *k, size_t kl)
{
    struct store *s = &ci->c->ks.store;
    struct store_entry *e = store_find(s, k, kl);
    if (e) {
        store_delete(s, e);
        ci->invalidations++;
    }
}

static void keys_failed(struct cache_inval *ci, const char *why)
{
    ci->keys_errors++;
    int64_t now = util_now_ms();
    if (now - ci->last_log_ms >= LOG_EVERY_MS) {
        ci->last_log_ms = now;
        log_warn("cache %s: invalidate_keys: %s; deleting the db key itself (%llu such "
                 "fallbacks so far)",
                 ci->sf.node, why, (unsigned long long)ci->keys_errors);
    }
}

/* keys(db_key) -> the cache keys to delete; the identity when it fails. */
static void delete_mapped(struct cache_inval *ci, const char *k, size_t kl)
{
    int64_t now = util_now_ms();
    if (!ci->keys || ci->rest_until_ms > now) {
        if (ci->keys)
            ci->keys_errors++;
        delete_key(ci, k, kl);
        return;
    }
    lua_State *L = policy_host_state(ci->keys);
    int top = lua_gettop(L);
    char err[1400];
    lua_rawgeti(L, LUA_REGISTRYINDEX, ci->keys_ref);
    lua_pushlstring(L, k, kl);
    if (policy_host_call(ci->keys, "keys", 1, 1, KEYS_BUDGET, KEYS_SECONDS, err, sizeof err) < 0) {
        if (policy_host_last_limit(ci->keys) != BUDGET_OK)
            ci->rest_until_ms = now + KEYS_REST_MS;
        lua_settop(L, top);
        keys_failed(ci, err);
        delete_key(ci, k, kl);
        return;
    }
    /* A list of strings, checked whole before anything is deleted. */
    int ok = lua_istable(L, -1);
    lua_Integer n = ok ? (lua_Integer)lua_rawlen(L, -1) : 0;
    if (n > KEYS_MAX)
        ok = 0;
    for (lua_Integer i = 1; ok && i <= n; i++) {
        ok = lua_rawgeti(L, -1, i) == LUA_TSTRING;
        lua_pop(L, 1);
    }
    if (!ok) {
        snprintf(err, sizeof err, "%s: keys() returned %s, not a list of at most %d strings",
                 ci->keys_path, luaL_typename(L, -1), KEYS_MAX);
        lua_settop(L, top);
        keys_failed(ci, err);
        delete_key(ci, k, kl);
        return;
    }
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, -1, i);
        size_t ml;
        const char *m = lua_tolstring(L, -1, &ml);
        delete_key(ci, m, ml);
        lua_pop(L, 1);
    }
    lua_settop(L, top);
}

static int on_key(void *arg, const char *k, size_t kl)
{
    struct cache_inval *ci = arg;
    if (!k) {
        struct store *s = &ci->c->ks.store;
        ci->invalidations += s->count;
        ci->flushes++;
        store_clear(s);
        return 0;
    }
    ci->keys_seen++;
    delete_mapped(ci, k, kl);
    return 0;
}

void cache_inval_record(struct cache_inval *ci, const unsigned char *payload, size_t plen)
{
    char err[200];
    ci->last_record_ms = util_now_ms();
    if (stream_record_keys(payload, plen, on_key, ci, err, sizeof err) < 0) {
        /* A record this build cannot read: which keys it touched is
         * unknown, so nothing in the cache can be proven fresh. */
        log_warn("cache %s: a record from %s does not decode (%s): flushing the cache",
                 ci->sf.node, ci->sf.upstream, err);
        on_key(ci, NULL, 0);
    }
}

static void on_record(void *arg, const unsigned char *payload, size_t plen)
{
    cache_inval_record(arg, payload, plen);
}

static void on_resync(void *arg)
{
    struct cache_inval *ci = arg;
    struct store *s = &ci->c->ks.store;
    if (s->count)
        log_info("cache %s: flushing %zu keys: the stream of %s resumes with a full resync, so "
                 "they cannot be proven fresh",
                 ci->sf.node, s->count, ci->sf.upstream);
    on_key(ci, NULL, 0);
}

static const struct stream_follower_ops inval_ops = {
    .on_record = on_record,
    .on_resync = on_resync,
};

int cache_inval_set_keys(struct cache_inval *ci, const char *path, char *err, size_t errlen)
{
    struct policy_host *h = NULL;
    int ref = LUA_NOREF;
    if (path[0]) {
        h = policy_host_open(path, keys_needs, POLICY_MEM_DEFAULT, err, errlen);
        if (!h)
            return -1;
        lua_State *L = policy_host_state(h);
        policy_host_push_module(h);
        lua_getfield(L, -1, "keys");
        ref = luaL_ref(L, LUA_REGISTRYINDEX);
        lua_pop(L, 1);
    }
    policy_host_free(ci->keys);
    ci->keys = h;
    ci->keys_ref = ref;
    ci->rest_until_ms = 0;
    snprintf(ci->keys_path, sizeof ci->keys_path, "%s", path);
    return 0;
}

int cache_inval_init(struct cache_inval *ci, struct cache *c, struct ev_loop *loop,
                     const char *node, const char *listen, const struct cache_inval_cfg *cfg,
                     char *err, size_t errlen)
{
    memset(ci, 0, sizeof *ci);
    ci->c = c;
    ci->keys_ref = LUA_NOREF;
    if (cfg->keys_path[0] && cache_inval_set_keys(ci, cfg->keys_path, err, errlen) < 0)
        return -1;
    if (stream_follower_init(&ci->sf, loop, "cache", node, listen, cfg->upstream,
                             cfg->upstream_node, cfg->password, cfg->timeout_s, &inval_ops, ci,
                             err, errlen) < 0 ||
        (cfg->nodes[0] && stream_follower_set_nodes(&ci->sf, cfg->nodes, err, errlen) < 0)) {
        policy_host_free(ci->keys);
        ci->keys = NULL;
        return -1;
    }
    snprintf(ci->from, sizeof ci->from, "%s", cfg->upstream);
    snprintf(ci->nodes, sizeof ci->nodes, "%s", cfg->nodes);
    return 0;
}

void cache_inval_start(struct cache_inval *ci)
{
    stream_follower_start(&ci->sf);
}

void cache_inval_free(struct cache_inval *ci)
{
    stream_follower_free(&ci->sf);
    policy_host_free(ci->keys);
    ci->keys = NULL;
}

void cache_inval_info(const struct cache_inval *ci, struct buf *b, int64_t now_ms)
{
    const struct stream_follower *sf = &ci->sf;
    char rid[24] = "";
    if (sf->has_replid)
        stream_id_format(sf->replid, rid, sizeof rid);
    buf_printf(b,
               "invalidate_from:%s\r\ninvalidate_from_node:%s\r\ninvalidate_link_status:%s\r\n"
               "invalidate_last_io_seconds_ago:%lld\r\ninvalidate_replid:%s\r\n"
               "invalidate_offset:%llu\r\ninvalidate_lag_bytes:%llu\r\n"
               "invalidate_records:%llu\r\ninvalidate_db_keys:%llu\r\n"
               "invalidations:%llu\r\ninvalidate_flushes:%llu\r\n"
               "invalidate_full_resyncs:%llu\r\ninvalidate_partial_resyncs:%llu\r\n"
               "invalidate_link_drops:%llu\r\ninvalidate_bad_frames:%llu\r\n"
               "invalidate_keys:%s\r\ninvalidate_keys_errors:%llu\r\n"
               "invalidate_db_nodes:%d\r\ninvalidate_epoch:%llu\r\n"
               "invalidate_primary_switches:%llu\r\n",
               sf->upstream, sf->upstream_node, stream_follower_state_name(sf),
               sf->last_io_ms ? (long long)((now_ms - sf->last_io_ms) / 1000) : -1LL, rid,
               (unsigned long long)sf->offset,
               (unsigned long long)stream_follower_lag_bytes(sf),
               (unsigned long long)sf->records, (unsigned long long)ci->keys_seen,
               (unsigned long long)ci->invalidations, (unsigned long long)ci->flushes,
               (unsigned long long)sf->full_syncs, (unsigned long long)sf->partial_syncs,
               (unsigned long long)sf->link_drops, (unsigned long long)sf->bad_frames,
               ci->keys ? ci->keys_path : "identity", (unsigned long long)ci->keys_errors,
               sf->nnodes ? sf->nnodes : 1, (unsigned long long)sf->up_epoch,
               (unsigned long long)sf->switches);
}

void cache_inval_status(const struct cache_inval *ci, struct buf *b)
{
    const struct stream_follower *sf = &ci->sf;
    buf_printf(b, "\"invalidate_from\":");
    buf_json_string(b, sf->upstream);
    buf_printf(b, ",\"invalidate_from_node\":");
    buf_json_string(b, sf->upstream_node);
    buf_printf(b,
               ",\"invalidate_link\":\"%s\",\"invalidate_offset\":%llu,"
               "\"invalidate_lag_bytes\":%llu,\"invalidations\":%llu,\"invalidate_flushes\":%llu,"
               "\"invalidate_full_resyncs\":%llu,\"invalidate_partial_resyncs\":%llu,"
               "\"invalidate_keys_errors\":%llu,\"invalidate_epoch\":%llu,"
               "\"invalidate_primary_switches\":%llu",
               stream_follower_state_name(sf), (unsigned long long)sf->offset,
               (unsigned long long)stream_follower_lag_bytes(sf),
               (unsigned long long)ci->invalidations, (unsigned long long)ci->flushes,
               (unsigned long long)sf->full_syncs, (unsigned long long)sf->partial_syncs,
               (unsigned long long)ci->keys_errors, (unsigned long long)sf->up_epoch,
               (unsigned long long)sf->switches);
}

void cache_inval_metrics(const struct cache_inval *ci, struct buf *out, const char *labels)
{
    const struct stream_follower *sf = &ci->sf;
    struct {
        const char *name, *type, *help;
        unsigned long long v;
    } m[] = {
        {"strata_cache_invalidate_link_up", "gauge",
         "1 while the cache follows its db's change stream.",
         (unsigned long long)stream_follower_link_up(sf)},
        {"strata_cache_invalidate_offset_bytes", "gauge",
         "The db log offset the cache has invalidated up to.", sf->offset},
        {"strata_cache_invalidate_lag_bytes", "gauge",
         "Log bytes the db has that the cache has not followed yet.",
         stream_follower_lag_bytes(sf)},
        {"strata_cache_invalidations_total", "counter",
         "Cache keys deleted because a db write affected them.", ci->invalidations},
        {"strata_cache_invalidate_flushes_total", "counter",
         "Whole-cache flushes (a db flush, or a full resync of the stream).", ci->flushes},
        {"strata_cache_invalidate_full_resyncs_total", "counter",
         "Full resyncs of the change stream.", sf->full_syncs},
        {"strata_cache_invalidate_partial_resyncs_total", "counter",
         "Partial resyncs of the change stream.", sf->partial_syncs},
        {"strata_cache_invalidate_primary_switches_total", "counter",
         "Moves of the change-stream link to a new db primary (failovers).", sf->switches},
        {"strata_cache_invalidate_keys_errors_total", "counter",
         "keys() failures (the db key itself was deleted instead).", ci->keys_errors},
    };
    for (size_t i = 0; i < sizeof m / sizeof m[0]; i++)
        buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n%s{%s} %llu\n", m[i].name, m[i].help,
                   m[i].name, m[i].type, m[i].name, labels, m[i].v);
}
