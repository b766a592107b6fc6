#include "cache_server.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache.h"
#include "cache_inval.h"
#include "evict_lua.h"
#include "log.h"
#include "luahost.h"
#include "resp_server.h"
#include "util.h"

#define CACHE_CRON_SECONDS 0.1

/* Commands reply at once: the RESP client layer runs them with kv_exec
 * directly, no hook per command. */
static const struct resp_server_ops cache_resp_ops = {.name = "cache", .eof_reply = 1};

struct cache_server {
    struct service base;
    struct cache cache;
    struct resp_server rs;
    struct ev_loop *loop;
    ev_timer cron;
    int draining;
    struct cache_inval inval;     /* when the topology names invalidate_from */
    int has_inval;
};

/* ---- cron -------------------------------------------------------------- */

static void cron_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct cache_server *srv = w->data;
    keyspace_cron(&srv->cache.ks, util_now_ms());
    srv->cache.ks.client_buf_bytes = resp_server_buf_bytes(&srv->rs);
}

/* INFO invalidation (docs/cache.md). */
static void inval_info_section(void *arg, const struct kv_info_sel *sel, struct buf *b)
{
    if (!kv_info_wants(sel, "invalidation"))
        return;
    buf_printf(b, "# Invalidation\r\n");
    cache_inval_info(arg, b, util_now_ms());
    buf_printf(b, "\r\n");
}

/* ---- config ----------------------------------------------------------- */

struct cache_cfg {
    char node[64], listen[64], eviction[64], eviction_path[1024], fallback[64], topology[1024];
    int64_t max_memory, samples;
    struct kv_access access;
    int has_inval;
    struct cache_inval_cfg inval;
};

/* invalidate_from: the db primary this cache follows (the topology passes
 * its address, node, timeout and password fields, resolved like the db's
 * own), invalidate_nodes: every db node of the data set, "name@addr,..."
 * (the follower moves to the new primary after a failover), and the keys()
 * module mapping a db key to cache keys. */
static int read_inval(lua_State *L, int idx, struct cache_cfg *cfg, char *err, size_t errlen)
{
    struct cache_inval_cfg *ic = &cfg->inval;
    char literal[1024], env[256], file[1024];
    if (cfg_string(L, idx, "invalidate_from", "", ic->upstream, sizeof ic->upstream, err,
                   errlen) < 0 ||
        cfg_string(L, idx, "invalidate_from_node", "", ic->upstream_node,
                   sizeof ic->upstream_node, err, errlen) < 0 ||
        cfg_string(L, idx, "invalidate_nodes", "", ic->nodes, sizeof ic->nodes, err, errlen) < 0 ||
        cfg_number(L, idx, "invalidate_timeout", 10, &ic->timeout_s, err, errlen) < 0 ||
        cfg_string(L, idx, "invalidate_keys", "", ic->keys_path, sizeof ic->keys_path, err,
                   errlen) < 0 ||
        cfg_string(L, idx, "invalidate_password", "", literal, sizeof literal, err, errlen) < 0 ||
        cfg_string(L, idx, "invalidate_password_env", "", env, sizeof env, err, errlen) < 0 ||
        cfg_string(L, idx, "invalidate_password_file", "", file, sizeof file, err, errlen) < 0)
        return -1;
    cfg->has_inval = ic->upstream[0] != 0;
    if (!cfg->has_inval) {
        if (ic->keys_path[0]) {
            snprintf(err, errlen, "cache %s: invalidate_keys needs invalidate_from", cfg->node);
            return -1;
        }
        return 0;
    }
    char why[300];
    int rc = kv_password_resolve(literal, env, file, ic->password, sizeof ic->password, why,
                                 sizeof why);
    explicit_bzero(literal, sizeof literal);
    if (rc < 0) {
        snprintf(err, errlen, "cache %s: invalidate_from's password: %s", cfg->node, why);
        return -1;
    }
    if (ic->timeout_s <= 0) {
        snprintf(err, errlen, "cache %s: invalidate_timeout must be positive", cfg->node);
        return -1;
    }
    if (ic->keys_path[0] && cache_inval_check_keys(ic->keys_path, why, sizeof why) < 0) {
        snprintf(err, errlen, "cache %s: invalidate_keys: %s", cfg->node, why);
        return -1;
    }
    return 0;
}

/* Who may connect and how much they may hold (kv_access_check): the
 * password comes from the topology, an environment variable or a file,
 * resolved at check, start and reload alike, so a missing one is refused
 * with the declaration's file:line; no message carries it. */
static int read_access(lua_State *L, int idx, struct cache_cfg *cfg, char *err, size_t errlen)
{
    char literal[1024], env[256], file[1024];
    struct kv_access *a = &cfg->access;
    if (cfg_string(L, idx, "password", "", literal, sizeof literal, err, errlen) < 0 ||
        cfg_string(L, idx, "password_env", "", env, sizeof env, err, errlen) < 0 ||
        cfg_string(L, idx, "password_file", "", file, sizeof file, err, errlen) < 0 ||
        cfg_bool(L, idx, "debug", 0, &a->debug, err, errlen) < 0 ||
        cfg_int(L, idx, "max_clients", KV_DEFAULT_MAX_CLIENTS, &a->max_clients, err, errlen) < 0 ||
        cfg_int(L, idx, "max_client_memory", -1, &a->max_client_memory, err, errlen) < 0)
        return -1;
    int rc = kv_access_check(a, "cache", cfg->node, literal, env, file,
                             (uint64_t)cfg->max_memory, err, errlen);
    explicit_bzero(literal, sizeof literal);
    return rc;
}

static int read_cfg(const struct service_env *env, lua_State *L, int idx, struct cache_cfg *cfg, char *err,
                    size_t errlen)
{
    memset(cfg, 0, sizeof *cfg);
    if (cfg_string(L, idx, "node", "cache", cfg->node, sizeof cfg->node, err, errlen) < 0 ||
        cfg_string(L, idx, "listen", "127.0.0.1:6379", cfg->listen, sizeof cfg->listen, err,
                   errlen) < 0 ||
        cfg_int(L, idx, "max_memory", 0, &cfg->max_memory, err, errlen) < 0 ||
        cfg_string(L, idx, "eviction", "noeviction", cfg->eviction, sizeof cfg->eviction, err,
                   errlen) < 0 ||
        cfg_string(L, idx, "eviction_path", "", cfg->eviction_path, sizeof cfg->eviction_path,
                   err, errlen) < 0 ||
        cfg_string(L, idx, "eviction_fallback", "allkeys-lru", cfg->fallback,
                   sizeof cfg->fallback, err, errlen) < 0 ||
        cfg_int(L, idx, "eviction_samples", 5, &cfg->samples, err, errlen) < 0 ||
        cfg_string(L, idx, "topology", env ? env->topology_path : "", cfg->topology,
                   sizeof cfg->topology, err, errlen) < 0)
        return -1;
    if (cfg->max_memory >= 0 && read_access(L, idx, cfg, err, errlen) < 0)
        return -1;
    if (read_inval(L, idx, cfg, err, errlen) < 0)
        return -1;
    enum evict_policy p;
    if (cfg->max_memory < 0) {
        snprintf(err, errlen, "cache %s: max_memory must not be negative", cfg->node);
        return -1;
    }
    if (cfg->samples < 1 || cfg->samples > EVICT_MAX_SAMPLES) {
        snprintf(err, errlen, "cache %s: eviction_samples must be in 1..%d, not %lld", cfg->node,
                 EVICT_MAX_SAMPLES, (long long)cfg->samples);
        return -1;
    }
    if (cache_policy_parse(cfg->fallback, &p) < 0) {
        snprintf(err, errlen, "cache %s: unknown eviction_fallback '%s'", cfg->node,
                 cfg->fallback);
        return -1;
    }
    if (strcmp(cfg->eviction, "lua") == 0) {
        if (!cfg->eviction_path[0]) {
            snprintf(err, errlen, "cache %s: eviction = \"lua\" needs eviction_path", cfg->node);
            return -1;
        }
    } else if (cache_policy_parse(cfg->eviction, &p) < 0) {
        snprintf(err, errlen, "cache %s: unknown eviction policy '%s'", cfg->node, cfg->eviction);
        return -1;
    }
    return 0;
}

/* The kind's validate: the reader start and reload use. */
static int cache_srv_validate(lua_State *L, int idx, char *err, size_t errlen)
{
    struct cache_cfg cfg;
    int rc = read_cfg(NULL, L, idx, &cfg, err, errlen);
    explicit_bzero(&cfg.access, sizeof cfg.access);
    explicit_bzero(&cfg.inval.password, sizeof cfg.inval.password);
    return rc;
}

/* Applies the policy part of a config; on error nothing changes. */
static int apply_policy(struct cache *c, const struct cache_cfg *cfg, char *err, size_t errlen)
{
    const char *name = strcmp(cfg->eviction, "lua") == 0 ? cfg->eviction_path : cfg->eviction;
    char why[768];
    if (cache_set_policy(c, name, util_now_ms(), why, sizeof why) < 0) {
        snprintf(err, errlen, "cache %s: %s", cfg->node, why);
        return -1;
    }
    cache_policy_parse(cfg->fallback, &c->evict.fallback);
    c->evict.samples = (int)cfg->samples;
    /* What CONFIG SET maxmemory-policy may switch to besides built-ins. */
    snprintf(c->topo_lua, sizeof c->topo_lua, "%s",
             strcmp(cfg->eviction, "lua") == 0 ? c->lua_path : "");
    return 0;
}

/* ---- the service kind --------------------------------------------------- */

static void cache_srv_free(struct service *s);

static struct service *cache_srv_start(const struct service_env *env, lua_State *L, int idx, char *err,
                                       size_t errlen)
{
    struct cache_cfg cfg;
    if (read_cfg(env, L, idx, &cfg, err, errlen) < 0)
        return NULL;
    struct cache_server *srv = calloc(1, sizeof *srv);
    if (!srv) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    srv->base.kind = &cache_service_kind;
    srv->base.env = env;
    srv->loop = env->loop;
    snprintf(srv->base.node, sizeof srv->base.node, "%s", cfg.node);
    struct cache *c = &srv->cache;
    cache_init(c, 0, util_now_ms());
    snprintf(c->ks.node, sizeof c->ks.node, "%s", cfg.node);
    snprintf(c->topology, sizeof c->topology, "%s", cfg.topology);
    c->ks.mem_limit = (uint64_t)cfg.max_memory;
    kv_access_apply(&c->ks, &cfg.access);
    explicit_bzero(&cfg.access, sizeof cfg.access);
    ev_timer_init(&srv->cron, cron_cb, CACHE_CRON_SECONDS, CACHE_CRON_SECONDS);
    srv->cron.data = srv;
    if (apply_policy(c, &cfg, err, errlen) < 0) {
        cache_srv_free(&srv->base);
        return NULL;
    }
    if (resp_server_listen(&srv->rs, env->loop, cfg.listen, &c->ks, &cache_resp_ops, srv, err,
                           errlen) < 0) {
        cache_srv_free(&srv->base);
        return NULL;
    }
    snprintf(srv->base.listen, sizeof srv->base.listen, "%s", srv->rs.listener->addr);
    snprintf(c->ks.listen, sizeof c->ks.listen, "%s", srv->rs.listener->addr);
    if (cfg.has_inval) {
        int rc = cache_inval_init(&srv->inval, c, env->loop, cfg.node, srv->base.listen,
                                  &cfg.inval, err, errlen);
        explicit_bzero(&cfg.inval.password, sizeof cfg.inval.password);
        if (rc < 0) {
            cache_srv_free(&srv->base);
            return NULL;
        }
        srv->has_inval = 1;
        c->info_sections = inval_info_section;
        c->info_arg = &srv->inval;
        cache_inval_start(&srv->inval);
        log_info("node %s: cache invalidates from db %s (%s), keys %s", cfg.node,
                 cfg.inval.upstream_node, cfg.inval.upstream,
                 cfg.inval.keys_path[0] ? cfg.inval.keys_path : "as they are");
    }
    ev_timer_start(env->loop, &srv->cron);
    log_info("node %s: cache listening on %s (max_memory %llu, eviction %s)", cfg.node,
             srv->rs.listener->addr, (unsigned long long)c->ks.mem_limit, cache_policy_name(c));
    return &srv->base;
}

static void cache_srv_drain(struct service *s)
{
    struct cache_server *srv = (struct cache_server *)s;
    srv->draining = 1;
    /* Commands run as they arrive, so a client with no output pending has
     * nothing in flight: it closes now, the others once replies are out. */
    resp_server_drain(&srv->rs);
}

static int cache_srv_idle(struct service *s)
{
    return resp_server_idle(&((struct cache_server *)s)->rs);
}

static void cache_srv_free(struct service *s)
{
    struct cache_server *srv = (struct cache_server *)s;
    ev_timer_stop(srv->loop, &srv->cron);
    if (srv->has_inval)
        cache_inval_free(&srv->inval);
    srv->cache.info_sections = NULL;
    resp_server_free(&srv->rs);
    cache_free(&srv->cache);
    free(srv);
}

static void cache_srv_describe(struct service *s, struct buf *out)
{
    struct cache *c = &((struct cache_server *)s)->cache;
    buf_printf(out, "keys=%zu used_memory=%zu max_memory=%llu eviction=%s clients=%zu",
               c->ks.store.count, c->ks.store.mem.used, (unsigned long long)c->ks.mem_limit,
               cache_policy_name(c), c->ks.nclients);
}

static void cache_srv_status(struct service *s, struct buf *out)
{
    struct cache *c = &((struct cache_server *)s)->cache;
    uint64_t lookups = c->ks.stats.hits + c->ks.stats.misses;
    buf_printf(out,
               "\"keys\":%zu,\"expires\":%zu,\"used_memory\":%zu,\"max_memory\":%llu,"
               "\"connections\":%zu,\"hits\":%llu,\"misses\":%llu,\"hit_ratio\":%.4f,"
               "\"evicted_keys\":%llu,\"expired_keys\":%llu,\"commands\":%llu,"
               "\"rejected_connections\":%llu,\"evicted_clients\":%llu,"
               "\"used_memory_clients\":%zu,\"eviction\":",
               c->ks.store.count, c->ks.store.nvol, c->ks.store.mem.used,
               (unsigned long long)c->ks.mem_limit, c->ks.nclients,
               (unsigned long long)c->ks.stats.hits, (unsigned long long)c->ks.stats.misses,
               lookups ? (double)c->ks.stats.hits / (double)lookups : 0.0,
               (unsigned long long)c->evict.evicted, (unsigned long long)c->ks.store.expired,
               (unsigned long long)c->ks.stats.commands,
               (unsigned long long)c->ks.stats.rejected_connections,
               (unsigned long long)c->ks.stats.evicted_clients, c->ks.client_buf_bytes);
    buf_json_string(out, cache_policy_name(c));
    if (((struct cache_server *)s)->has_inval) {
        buf_printf(out, ",");
        cache_inval_status(&((struct cache_server *)s)->inval, out);
    }
}

static void cache_srv_metrics(struct service *s, struct buf *out, const char *labels)
{
    struct cache *c = &((struct cache_server *)s)->cache;
    struct {
        const char *name, *type, *help;
        unsigned long long v;
    } m[] = {
        {"strata_cache_keys", "gauge", "Keys stored.", c->ks.store.count},
        {"strata_cache_used_memory_bytes", "gauge", "Memory used by keys and values.",
         c->ks.store.mem.used},
        {"strata_cache_max_memory_bytes", "gauge", "Memory limit (0: none).", c->ks.mem_limit},
        {"strata_cache_connections", "gauge", "Client connections open.", c->ks.nclients},
        {"strata_cache_hits_total", "counter", "Key lookups that found the key.",
         c->ks.stats.hits},
        {"strata_cache_misses_total", "counter", "Key lookups that did not find the key.",
         c->ks.stats.misses},
        {"strata_cache_evicted_keys_total", "counter", "Keys evicted to stay under the limit.",
         c->evict.evicted},
        {"strata_cache_expired_keys_total", "counter", "Keys removed by expiry.",
         c->ks.store.expired},
        {"strata_cache_commands_total", "counter", "Commands run.", c->ks.stats.commands},
        {"strata_cache_eviction_policy_errors_total", "counter",
         "Lua eviction policy errors (the fallback evicted instead).", c->evict.lua_errors},
        {"strata_cache_rejected_connections_total", "counter",
         "Connections refused at the client limit.", c->ks.stats.rejected_connections},
        {"strata_cache_evicted_clients_total", "counter",
         "Clients closed for exceeding the client buffer limit.", c->ks.stats.evicted_clients},
        {"strata_cache_client_buffer_bytes", "gauge", "Bytes buffered for clients.",
         c->ks.client_buf_bytes},
    };
    for (size_t i = 0; i < sizeof m / sizeof m[0]; i++)
        buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n%s{%s} %llu\n", m[i].name, m[i].help,
                   m[i].name, m[i].type, m[i].name, labels, m[i].v);
    if (((struct cache_server *)s)->has_inval)
        cache_inval_metrics(&((struct cache_server *)s)->inval, out, labels);
}

static int cache_srv_reload(struct service *s, lua_State *L, int idx, int dry_run,
                            struct buf *changes, char *err, size_t errlen)
{
    struct cache_server *srv = (struct cache_server *)s;
    struct cache *c = &srv->cache;
    struct cache_cfg cfg;
    if (read_cfg(s->env, L, idx, &cfg, err, errlen) < 0)
        return -1;
    if (strcmp(cfg.eviction, "lua") == 0) {
        /* Validate the module now so a broken one changes nothing. */
        char path[1024], why[768];
        if (cache_resolve_path(c, cfg.eviction_path, path, sizeof path) < 0) {
            snprintf(err, errlen, "cache %s: eviction policy %s: no such file", cfg.node,
                     cfg.eviction_path);
            return -1;
        }
        struct evict_lua *el = evict_lua_new(path, c->evict.lua, why, sizeof why);
        if (!el) {
            snprintf(err, errlen, "cache %s: %s", cfg.node, why);
            return -1;
        }
        evict_lua_free(el);
    }
    /* only what really changes is listed: the runtime calls this when
     * anything in the service's declaration (or its policy file) differs */
    size_t before = buf_size(changes);
    if ((uint64_t)cfg.max_memory != c->ks.mem_limit)
        buf_printf(changes, "node %s: cache max_memory %llu -> %lld\n", cfg.node,
                   (unsigned long long)c->ks.mem_limit, (long long)cfg.max_memory);
    if (strcmp(cfg.eviction, "lua") == 0)
        buf_printf(changes, "node %s: cache eviction %s (loaded again)\n", cfg.node,
                   cfg.eviction_path);
    else if (strcmp(cfg.eviction, cache_policy_name(c)) != 0)
        buf_printf(changes, "node %s: cache eviction %s -> %s\n", cfg.node, cache_policy_name(c),
                   cfg.eviction);
    enum evict_policy fb;
    if (cache_policy_parse(cfg.fallback, &fb) == 0 && fb != c->evict.fallback)
        buf_printf(changes, "node %s: cache eviction_fallback %s\n", cfg.node, cfg.fallback);
    if (cfg.samples != c->evict.samples)
        buf_printf(changes, "node %s: cache eviction_samples %d -> %lld\n", cfg.node,
                   c->evict.samples, (long long)cfg.samples);
    const struct kv_access *a = &cfg.access;
    if (strcmp(a->password, c->ks.password) != 0)
        buf_printf(changes, "node %s: cache password changed (new connections)\n", cfg.node);
    if (a->debug != c->ks.debug_enabled)
        buf_printf(changes, "node %s: cache debug %s\n", cfg.node, a->debug ? "on" : "off");
    if ((size_t)a->max_clients != c->ks.max_clients)
        buf_printf(changes, "node %s: cache max_clients %zu -> %lld\n", cfg.node,
                   c->ks.max_clients, (long long)a->max_clients);
    if ((uint64_t)a->max_client_memory != c->ks.client_mem_limit)
        buf_printf(changes, "node %s: cache max_client_memory %llu -> %lld\n", cfg.node,
                   (unsigned long long)c->ks.client_mem_limit, (long long)a->max_client_memory);
    /* The stream a cache follows changes with a restart; its keys()
     * module is loaded again (before anything else changes, so a module
     * that fails to load leaves the cache as it was). */
    const struct cache_inval_cfg *ic = &cfg.inval;
    int reload_keys = 0;
    if (cfg.has_inval != srv->has_inval ||
        (srv->has_inval && (strcmp(ic->upstream, srv->inval.from) != 0 ||
                            strcmp(ic->nodes, srv->inval.nodes) != 0))) {
        buf_printf(changes, "node %s: cache invalidate_from changes with a restart of the node\n",
                   cfg.node);
    } else if (srv->has_inval && (ic->keys_path[0] || srv->inval.keys_path[0])) {
        reload_keys = 1;
        if (ic->keys_path[0])
            buf_printf(changes, "node %s: cache invalidate_keys %s (loaded again)\n", cfg.node,
                       ic->keys_path);
        else
            buf_printf(changes, "node %s: cache invalidate_keys: the identity\n", cfg.node);
    }
    explicit_bzero(&cfg.inval.password, sizeof cfg.inval.password);
    if (!dry_run && reload_keys) {
        char why[1400];
        if (cache_inval_set_keys(&srv->inval, ic->keys_path, why, sizeof why) < 0) {
            snprintf(err, errlen, "cache %s: invalidate_keys: %s", cfg.node, why);
            explicit_bzero(&cfg.access, sizeof cfg.access);
            return -1;
        }
    }
    if (buf_size(changes) == before) /* a setting with no line of its own */
        buf_printf(changes, "node %s: cache settings changed\n", cfg.node);
    int rc = 0;
    if (!dry_run && apply_policy(c, &cfg, err, errlen) < 0)
        rc = -1;
    if (!dry_run && rc == 0) {
        c->ks.mem_limit = (uint64_t)cfg.max_memory;
        kv_access_apply(&c->ks, a);
    }
    explicit_bzero(&cfg.access, sizeof cfg.access);
    if (dry_run || rc < 0)
        return rc;
    keyspace_enforce_memory(&c->ks, util_now_ms());
    return 0;
}

const struct service_kind cache_service_kind = {
    .name = "cache",
    .validate = cache_srv_validate,
    .start = cache_srv_start,
    .drain = cache_srv_drain,
    .idle = cache_srv_idle,
    .free = cache_srv_free,
    .describe = cache_srv_describe,
    .status_json = cache_srv_status,
    .metrics = cache_srv_metrics,
    .reload = cache_srv_reload,
};
