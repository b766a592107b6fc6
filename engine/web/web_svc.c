/* web_svc: the web tier as a service kind -- configuration, start, drain,
 * free, hot reload, status and metrics.
 *
 * A web node runs `workers` workers. Worker 0 runs on the node's own loop;
 * each other one is a thread with its own loop, HTTP server (bound to the
 * same address with SO_REUSEPORT, so the kernel spreads connections),
 * app state and clients: nothing is shared between them but this struct's
 * configuration. The node's thread reaches the others through commands
 * (ev_async): drain, reload (its new generation's app and static folder
 * prepared on the node's thread before the reload is acknowledged; its
 * clients made by the worker on its own loop), stop.
 *
 * A reload builds a new generation -- the app loaded again, new clients,
 * the static folder -- and makes it current; requests in flight finish on
 * the generation they started on, which is freed after its last one. The
 * dry run loads the app in a state of its own, so a broken app fails the
 * reload with file:line and the running one stays. */
#include <lauxlib.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "keyspace.h"
#include "log.h"
#include "net.h"
#include "policy_host.h"
#include "service.h"
#include "util.h"
#include "web_node.h"

struct web_svc {
    struct service base;
    struct web_cfg cfg;
    int nworkers;
    struct web_worker *w[WEB_MAX_WORKERS];
    uint64_t reloads;
};

extern const struct service_kind web_service_kind;

/* ---- configuration ------------------------------------------------------------ */

static int read_addr(lua_State *L, int idx, struct web_addr *a, char *err, size_t errlen)
{
    if (cfg_string(L, idx, "node", "", a->name, sizeof a->name, err, errlen) < 0 ||
        cfg_string(L, idx, "addr", "", a->addr, sizeof a->addr, err, errlen) < 0)
        return -1;
    if (!a->addr[0]) {
        snprintf(err, errlen, "an address is missing");
        return -1;
    }
    if (!a->name[0])
        snprintf(a->name, sizeof a->name, "%.63s", a->addr);
    return 0;
}

static int read_password(lua_State *L, int idx, const char *what, char *out, size_t outlen,
                         char *err, size_t errlen)
{
    char literal[1024], env[256], file[1024], why[300];
    if (cfg_string(L, idx, "password", "", literal, sizeof literal, err, errlen) < 0 ||
        cfg_string(L, idx, "password_env", "", env, sizeof env, err, errlen) < 0 ||
        cfg_string(L, idx, "password_file", "", file, sizeof file, err, errlen) < 0)
        return -1;
    int rc = kv_password_resolve(literal, env, file, out, outlen, why, sizeof why);
    explicit_bzero(literal, sizeof literal);
    if (rc < 0)
        snprintf(err, errlen, "the %s's password: %s", what, why);
    return rc;
}

static int read_static(lua_State *L, int idx, struct web_cfg *c, char *err, size_t errlen)
{
    int t = lua_getfield(L, idx, "static");
    int si = lua_gettop(L);
    int rc = 0;
    if (t == LUA_TTABLE) {
        int64_t max_age;
        c->has_static = 1;
        if (cfg_string(L, si, "root", "", c->static_root, sizeof c->static_root, err, errlen) <
                0 ||
            cfg_string(L, si, "prefix", "/", c->static_prefix, sizeof c->static_prefix, err,
                       errlen) < 0 ||
            cfg_string(L, si, "index", "index.html", c->static_index, sizeof c->static_index,
                       err, errlen) < 0 ||
            cfg_int(L, si, "max_age", 300, &max_age, err, errlen) < 0 ||
            cfg_bool(L, si, "precompressed", 1, &c->static_precompressed, err, errlen) < 0) {
            rc = -1;
        } else if (c->static_root[0] != '/') {
            snprintf(err, errlen, "static root must be an absolute folder");
            rc = -1;
        } else if (c->static_prefix[0] != '/') {
            snprintf(err, errlen, "static prefix must start with '/', not '%s'",
                     c->static_prefix);
            rc = -1;
        } else if (max_age < 0 || max_age > 10 * 365 * 86400L) {
            snprintf(err, errlen, "static max_age must be in 0..315360000 seconds");
            rc = -1;
        }
        c->static_max_age = (long)max_age;
    } else if (t != LUA_TNIL) {
        snprintf(err, errlen, "static must be a table");
        rc = -1;
    }
    lua_pop(L, 1);
    return rc;
}

static int read_cache(lua_State *L, int idx, struct web_cfg *c, char *err, size_t errlen)
{
    int t = lua_getfield(L, idx, "cache");
    int ci = lua_gettop(L);
    int rc = 0;
    if (t == LUA_TTABLE) {
        lua_getfield(L, ci, "shards");
        int si = lua_gettop(L);
        lua_Integer n = lua_istable(L, si) ? (lua_Integer)lua_rawlen(L, si) : 0;
        if (n < 1 || n > WEB_MAX_SHARDS) {
            snprintf(err, errlen, "cache must have 1..%d shards", WEB_MAX_SHARDS);
            rc = -1;
        }
        for (lua_Integer i = 1; rc == 0 && i <= n; i++) {
            lua_rawgeti(L, si, i);
            rc = read_addr(L, lua_gettop(L), &c->shards[i - 1], err, errlen);
            lua_pop(L, 1);
        }
        c->nshards = (int)n;
        lua_pop(L, 1);
        if (rc == 0)
            rc = read_password(L, ci, "cache", c->cache_password, sizeof c->cache_password, err,
                               errlen);
    } else if (t != LUA_TNIL) {
        snprintf(err, errlen, "cache must be a table");
        rc = -1;
    }
    lua_pop(L, 1);
    return rc;
}

static int read_db(lua_State *L, int idx, struct web_cfg *c, char *err, size_t errlen)
{
    int t = lua_getfield(L, idx, "db");
    int di = lua_gettop(L);
    int rc = 0;
    if (t == LUA_TTABLE) {
        c->has_db = 1;
        lua_getfield(L, di, "primary");
        rc = lua_istable(L, -1) ? read_addr(L, lua_gettop(L), &c->primary, err, errlen) : -1;
        if (rc < 0 && !err[0])
            snprintf(err, errlen, "db needs a primary");
        lua_pop(L, 1);
        if (rc == 0) {
            lua_getfield(L, di, "replicas");
            int ri = lua_gettop(L);
            lua_Integer n = lua_istable(L, ri) ? (lua_Integer)lua_rawlen(L, ri) : 0;
            if (n > WEB_MAX_REPLICAS) {
                snprintf(err, errlen, "a db may have at most %d replicas", WEB_MAX_REPLICAS);
                rc = -1;
            }
            for (lua_Integer i = 1; rc == 0 && i <= n; i++) {
                lua_rawgeti(L, ri, i);
                rc = read_addr(L, lua_gettop(L), &c->replicas[i - 1], err, errlen);
                lua_pop(L, 1);
            }
            c->nreplicas = (int)n;
            lua_pop(L, 1);
        }
        if (rc == 0 &&
            (cfg_string(L, di, "reads", "primary", c->db_reads, sizeof c->db_reads, err,
                        errlen) < 0 ||
             cfg_bool(L, di, "read_your_writes", 0, &c->read_your_writes, err, errlen) < 0 ||
             read_password(L, di, "db", c->db_password, sizeof c->db_password, err, errlen) <
                 0))
            rc = -1;
        if (rc == 0 && strcmp(c->db_reads, "primary") != 0 &&
            strcmp(c->db_reads, "replicas") != 0 && c->db_reads[0] != '/') {
            snprintf(err, errlen, "db reads must be primary, replicas or a policy file, not '%.200s'",
                     c->db_reads);
            rc = -1;
        }
    } else if (t != LUA_TNIL) {
        snprintf(err, errlen, "db must be a table");
        rc = -1;
    }
    lua_pop(L, 1);
    return rc;
}

static int read_config(lua_State *L, int idx, struct web_cfg *c, char *err, size_t errlen)
{
    memset(c, 0, sizeof *c);
    int64_t workers;
    idx = lua_absindex(L, idx);
    if (cfg_string(L, idx, "node", "web", c->node, sizeof c->node, err, errlen) < 0 ||
        cfg_string(L, idx, "listen", "127.0.0.1:8081", c->listen, sizeof c->listen, err,
                   errlen) < 0 ||
        cfg_string(L, idx, "where", "?", c->where, sizeof c->where, err, errlen) < 0 ||
        cfg_string(L, idx, "app", "", c->app, sizeof c->app, err, errlen) < 0 ||
        cfg_int(L, idx, "workers", 1, &workers, err, errlen) < 0 ||
        cfg_number(L, idx, "timeout", 5, &c->timeout, err, errlen) < 0 ||
        cfg_int(L, idx, "memory", 64 << 20, &c->memory, err, errlen) < 0 ||
        cfg_int(L, idx, "max_body", 1 << 20, &c->max_body, err, errlen) < 0)
        return -1;
    if (workers < 1 || workers > WEB_MAX_WORKERS) {
        snprintf(err, errlen, "workers must be in 1..%d, not %lld", WEB_MAX_WORKERS,
                 (long long)workers);
        return -1;
    }
    c->workers = (int)workers;
    if (c->timeout < 0.001 || c->timeout > 3600) {
        snprintf(err, errlen, "timeout must be in 1ms..1h, not %gs", c->timeout);
        return -1;
    }
    if (c->memory < (1 << 20) || c->memory > ((int64_t)16 << 30)) {
        snprintf(err, errlen, "memory must be in 1mb..16gb, not %lld bytes",
                 (long long)c->memory);
        return -1;
    }
    if (c->max_body < 0 || c->max_body > ((int64_t)1 << 30)) {
        snprintf(err, errlen, "max_body must be in 0..1gb");
        return -1;
    }
    if (read_static(L, idx, c, err, errlen) < 0 || read_cache(L, idx, c, err, errlen) < 0 ||
        read_db(L, idx, c, err, errlen) < 0)
        return -1;
    return 0;
}

/* ---- generations ---------------------------------------------------------------- */

static void gen_free(struct web_gen *g)
{
    if (!g)
        return;
    if (g->cache)
        cache_client_free(g->cache);
    if (g->db)
        db_client_free(g->db);
    if (g->st)
        web_static_free(g->st);
    web_app_free(g->app);
    explicit_bzero(g->cfg.cache_password, sizeof g->cfg.cache_password);
    explicit_bzero(g->cfg.db_password, sizeof g->cfg.db_password);
    free(g);
}

/* The part of a generation that needs no loop: the app (loaded and run in
 * a state of its own) and the static folder. A reload prepares every
 * worker's on the node's thread, so a failure fails the reload before any
 * worker changes; alone, it is the check `strata check` and a dry run do. */
static struct web_gen *gen_prepare(const struct web_cfg *c, char *err, size_t errlen)
{
    struct web_gen *g = calloc(1, sizeof *g);
    if (!g) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    g->cfg = *c;
    g->refs = 1;
    char why[1024];
    if (c->app[0] && !(g->app = web_app_load(c->app, c->memory, why, sizeof why))) {
        snprintf(err, errlen, "web app: %.1000s", why);
        goto fail;
    }
    if (c->has_static) {
        struct web_static_cfg sc;
        web_static_cfg_defaults(&sc);
        sc.root = c->static_root;
        sc.prefix = c->static_prefix;
        sc.index = c->static_index[0] ? c->static_index : NULL;
        sc.max_age = c->static_max_age;
        sc.precompressed = c->static_precompressed;
        if (!(g->st = web_static_new(&sc, why, sizeof why))) {
            snprintf(err, errlen, "static: %.1000s", why);
            goto fail;
        }
    }
    return g;
fail:
    gen_free(g);
    return NULL;
}

/* The part bound to worker w's loop: the cache and db clients. Run on
 * the worker's own thread. 0, or -1 with a message (g is left without
 * clients: the caller frees it). */
static int gen_attach(struct web_gen *g, struct web_worker *w, char *err, size_t errlen)
{
    const struct web_cfg *c = &g->cfg;
    char why[1024];
    g->w = w;
    if (c->nshards) {
        struct cache_shard_addr sh[WEB_MAX_SHARDS];
        for (int i = 0; i < c->nshards; i++)
            sh[i] = (struct cache_shard_addr){c->shards[i].name, c->shards[i].addr};
        struct cache_client_cfg cc = {.shards = sh, .nshards = c->nshards,
                                      .password = c->cache_password[0] ? c->cache_password
                                                                       : NULL};
        if (!(g->cache = cache_client_new(w->loop, &cc, why, sizeof why))) {
            snprintf(err, errlen, "cache client: %.1000s", why);
            return -1;
        }
    }
    if (c->has_db) {
        struct db_node_addr rep[WEB_MAX_REPLICAS];
        for (int i = 0; i < c->nreplicas; i++)
            rep[i] = (struct db_node_addr){c->replicas[i].name, c->replicas[i].addr};
        struct db_client_cfg dc = {
            .primary = {c->primary.name, c->primary.addr},
            .replicas = rep,
            .nreplicas = c->nreplicas,
            .password = c->db_password[0] ? c->db_password : NULL,
            .reads = strcmp(c->db_reads, "primary") == 0    ? DB_READS_PRIMARY
                     : strcmp(c->db_reads, "replicas") == 0 ? DB_READS_REPLICAS
                                                            : DB_READS_POLICY,
            .policy_path = c->db_reads,
        };
        if (!(g->db = db_client_new(w->loop, &dc, why, sizeof why))) {
            snprintf(err, errlen, "db client: %.1000s", why);
            return -1;
        }
    }
    return 0;
}

/* A whole generation for worker w (NULL: a check, nothing connects). */
static struct web_gen *gen_new(struct web_worker *w, const struct web_cfg *c, char *err,
                               size_t errlen)
{
    struct web_gen *g = gen_prepare(c, err, errlen);
    if (g && w && gen_attach(g, w, err, errlen) < 0) {
        gen_free(g);
        return NULL;
    }
    return g;
}

void web_gen_release(struct web_gen *g)
{
    if (--g->refs > 0)
        return;
    struct web_worker *w = g->w;
    struct web_gen **pp = &w->retired;
    while (*pp && *pp != g)
        pp = &(*pp)->next;
    if (*pp)
        *pp = g->next;
    gen_free(g);
}

/* Makes g current; the old one retires until its last request ends. */
static void gen_swap(struct web_worker *w, struct web_gen *g)
{
    struct web_gen *old = w->gen;
    w->gen = g;
    if (old) {
        old->next = w->retired;
        w->retired = old;
        web_gen_release(old);
    }
}

/* ---- a worker ---------------------------------------------------------------------- */

static void respond_json(struct http_req *hr, int status, const char *msg)
{
    char body[160];
    int n = snprintf(body, sizeof body, "{\"error\":\"%s\"}", msg);
    http_respond(hr, status, "application/json", body, (size_t)n);
}

static void on_request(void *ud, struct http_req *hr)
{
    struct web_worker *w = ud;
    struct web_gen *g = w->gen;
    w->st.requests++;
    if (g->app) {
        struct web_match m;
        unsigned allow = 0;
        unsigned mb = web_method_bit(hr->method, hr->method_len);
        switch (web_router_match(&g->app->router, mb, hr->path, hr->path_len, &m, &allow)) {
        case WEB_MATCH_OK:
            web_req_start(w, g, hr, &m);
            return;
        case WEB_MATCH_METHOD: {
            char a[96];
            web_router_allow(allow, a, sizeof a);
            http_resp_header(hr, "Allow", a);
            w->st.responses_4xx++;
            respond_json(hr, 405, "method not allowed");
            return;
        }
        default:
            break;
        }
    }
    if (hr->path_len == 8 && memcmp(hr->path, "/healthz", 8) == 0) {
        w->st.responses_2xx++;
        http_respond(hr, 200, "text/plain", "ok\n", 3);
        return;
    }
    if (g->st && web_static_serve(g->st, hr))
        return; /* counted by the static folder's own statistics */
    w->st.not_found++;
    w->st.responses_4xx++;
    respond_json(hr, 404, "not found");
}

static void on_gone(void *ud, struct http_req *hr)
{
    (void)ud;
    struct web_req *r = hr->ud;
    if (r)
        web_req_gone(r);
    else
        http_resp_finish(hr);
}

static void on_writable(void *ud, struct http_req *hr)
{
    (void)ud;
    if (hr->ud)
        web_req_writable(hr->ud);
}

static const struct http_server_ops web_http_ops = {
    .on_request = on_request,
    .on_gone = on_gone,
    .on_writable = on_writable,
};

static void on_reap(struct ev_loop *loop, ev_prepare *p, int revents)
{
    struct web_worker *w = p->data;
    web_worker_reap(w);
    ev_prepare_stop(loop, p);
}

static void worker_publish_idle(struct web_worker *w)
{
    int idle = w->nreqs == 0 && (!w->http || http_server_idle(w->http));
    atomic_store_explicit((_Atomic int *)&w->idle, idle, memory_order_release);
}

static void worker_drain(struct web_worker *w)
{
    if (w->draining)
        return;
    w->draining = 1;
    if (w->http)
        http_server_drain(w->http);
}

/* Commands from the node's thread. */
static void on_wake(struct ev_loop *loop, ev_async *a, int revents)
{
    struct web_worker *w = a->data;
    pthread_mutex_lock(&w->mu);
    unsigned cmd = w->cmd;
    w->cmd = 0;
    struct web_gen *g = w->next_gen;
    w->next_gen = NULL;
    pthread_mutex_unlock(&w->mu);
    if (cmd & WEB_CMD_RELOAD) {
        /* g was prepared (app, static folder) and checked before the
         * reload was acknowledged; only its clients are made here */
        char err[1024];
        if (gen_attach(g, w, err, sizeof err) == 0) {
            gen_swap(w, g);
        } else {
            w->st.reload_failures++;
            log_error("web %s worker %d: reload failed, the old app stays: %s", w->svc->base.node,
                      w->index, err);
            gen_free(g);
        }
    }
    if (cmd & WEB_CMD_DRAIN)
        worker_drain(w);
    if (cmd & WEB_CMD_STOP) {
        w->stopped = 1;
        ev_break(loop, EVBREAK_ALL);
    }
    worker_publish_idle(w);
}

/* While draining, the node's thread asks worker threads whether they are
 * idle: they publish it on every loop iteration. */
static void on_check(struct ev_loop *loop, ev_check *c, int revents)
{
    worker_publish_idle(c->data);
}

static void *worker_main(void *arg)
{
    struct web_worker *w = arg;
    ev_check *chk = &w->idle_check;
    ev_check_init(chk, on_check);
    chk->data = w;
    ev_check_start(w->loop, chk);
    ev_run(w->loop, 0);
    ev_check_stop(w->loop, chk);
    net_thread_done();
    return NULL;
}

static struct web_worker *worker_new(struct web_svc *svc, int index, struct ev_loop *loop,
                                     const char *addr, char *err, size_t errlen)
{
    struct web_worker *w = calloc(1, sizeof *w);
    if (!w) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    w->svc = svc;
    w->index = index;
    w->own_loop = loop == NULL;
    w->loop = loop ? loop : ev_loop_new(EVFLAG_AUTO);
    pthread_mutex_init(&w->mu, NULL);
    if (!w->loop) {
        snprintf(err, errlen, "cannot make a loop for worker %d", index);
        free(w);
        return NULL;
    }
    uint32_t seed;
    if (getrandom(&seed, sizeof seed, GRND_NONBLOCK) != sizeof seed)
        seed = (uint32_t)time(NULL) ^ (uint32_t)getpid();
    w->id_seed = seed;
    latency_init(&w->lat, 10.0, ev_now(w->loop));
    ev_prepare_init(&w->reaper, on_reap);
    w->reaper.data = w;
    ev_async_init(&w->wake, on_wake);
    w->wake.data = w;
    ev_async_start(w->loop, &w->wake);
    if (!(w->gen = gen_new(w, &svc->cfg, err, errlen)))
        return w; /* the caller frees it */
    struct http_server_cfg hc;
    http_server_cfg_defaults(&hc);
    hc.max_body = (size_t)svc->cfg.max_body;
    hc.max_pipeline = 32;
    hc.reuseport = svc->cfg.workers > 1;
    w->http = http_server_start(w->loop, addr, &hc, &web_http_ops, w, err, errlen);
    return w;
}

static void worker_free(struct web_worker *w)
{
    if (!w)
        return;
    web_worker_abort_requests(w);
    web_worker_reap(w);
    if (w->http)
        http_server_free(w->http);
    w->http = NULL;
    web_worker_reap(w);
    if (w->gen)
        web_gen_release(w->gen);
    while (w->retired) { /* requests still holding them were ended above */
        struct web_gen *g = w->retired;
        w->retired = g->next;
        gen_free(g);
    }
    gen_free(w->next_gen); /* a reload the worker did not get to */
    w->next_gen = NULL;
    ev_prepare_stop(w->loop, &w->reaper);
    ev_async_stop(w->loop, &w->wake);
    if (w->own_loop)
        ev_loop_destroy(w->loop);
    pthread_mutex_destroy(&w->mu);
    free(w);
}

static void worker_send(struct web_worker *w, unsigned cmd, struct web_gen *carrier)
{
    pthread_mutex_lock(&w->mu);
    w->cmd |= cmd;
    if (carrier) {
        if (w->next_gen)
            gen_free(w->next_gen);
        w->next_gen = carrier;
    }
    pthread_mutex_unlock(&w->mu);
    ev_async_send(w->loop, &w->wake);
}

/* ---- service operations --------------------------------------------------------- */

static int web_validate(lua_State *L, int idx, char *err, size_t errlen)
{
    struct web_cfg *c = malloc(sizeof *c);
    if (!c) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    char why[1024] = "";
    int rc = read_config(L, idx, c, why, sizeof why);
    if (rc == 0) {
        struct web_gen *g = gen_new(NULL, c, why, sizeof why);
        rc = g ? 0 : -1;
        gen_free(g);
    }
    if (rc < 0)
        snprintf(err, errlen, "web %s: %s", c->node, why);
    explicit_bzero(c, sizeof *c);
    free(c);
    return rc;
}

static void svc_free(struct web_svc *svc)
{
    for (int i = svc->nworkers - 1; i >= 0; i--) {
        struct web_worker *w = svc->w[i];
        if (w->own_loop && w->thread) {
            worker_send(w, WEB_CMD_STOP, NULL);
            pthread_join(w->thread, NULL);
        }
        worker_free(w);
    }
    explicit_bzero(&svc->cfg, sizeof svc->cfg);
    free(svc);
}

static struct service *web_start(const struct service_env *env, lua_State *L, int idx,
                                 char *err, size_t errlen)
{
    struct web_svc *svc = calloc(1, sizeof *svc);
    if (!svc) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    svc->base.kind = &web_service_kind;
    svc->base.env = env;
    char why[1024] = "";
    if (read_config(L, idx, &svc->cfg, why, sizeof why) < 0) {
        snprintf(err, errlen, "web: %s", why);
        free(svc);
        return NULL;
    }
    snprintf(svc->base.node, sizeof svc->base.node, "%s", svc->cfg.node);
    for (int i = 0; i < svc->cfg.workers; i++) {
        const char *addr = i == 0 ? svc->cfg.listen : svc->base.listen;
        struct web_worker *w = worker_new(svc, i, i == 0 ? env->loop : NULL, addr, why,
                                          sizeof why);
        if (w)
            svc->w[svc->nworkers++] = w;
        if (!w || !w->http) {
            snprintf(err, errlen, "web %s: %s", svc->cfg.node, why);
            svc_free(svc);
            return NULL;
        }
        if (i == 0)
            snprintf(svc->base.listen, sizeof svc->base.listen, "%s",
                     http_server_addr(w->http));
    }
    /* worker threads take no signals: the node's thread handles them */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    for (int i = 1; i < svc->nworkers; i++)
        if (pthread_create(&svc->w[i]->thread, NULL, worker_main, svc->w[i]) != 0) {
            pthread_sigmask(SIG_SETMASK, &old, NULL);
            snprintf(err, errlen, "web %s: cannot start worker %d", svc->cfg.node, i);
            svc_free(svc);
            return NULL;
        }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    log_info("node %s: web listening on %s: app %s%s%s, %d worker%s, timeout %gs, memory %lldmb",
             svc->base.node, svc->base.listen, svc->cfg.app[0] ? svc->cfg.app : "(none)",
             svc->cfg.has_static ? ", static " : "", svc->cfg.has_static ? svc->cfg.static_root : "",
             svc->nworkers, svc->nworkers == 1 ? "" : "s", svc->cfg.timeout,
             (long long)(svc->cfg.memory >> 20));
    return &svc->base;
}

static void web_drain(struct service *s)
{
    struct web_svc *svc = (struct web_svc *)s;
    worker_drain(svc->w[0]);
    worker_publish_idle(svc->w[0]);
    for (int i = 1; i < svc->nworkers; i++)
        worker_send(svc->w[i], WEB_CMD_DRAIN, NULL);
}

static int web_idle(struct service *s)
{
    struct web_svc *svc = (struct web_svc *)s;
    worker_publish_idle(svc->w[0]);
    for (int i = 0; i < svc->nworkers; i++)
        if (!atomic_load_explicit((_Atomic int *)&svc->w[i]->idle, memory_order_acquire))
            return 0;
    return 1;
}

static void web_free(struct service *s) { svc_free((struct web_svc *)s); }

/* Counters summed over the workers (a worker thread's counters are read
 * while it runs: a status may be a request behind). */
static void sum_stats(struct web_svc *svc, struct web_stats *t, int *conns, int *inflight)
{
    memset(t, 0, sizeof *t);
    *conns = *inflight = 0;
    for (int i = 0; i < svc->nworkers; i++) {
        struct web_worker *w = svc->w[i];
        const uint64_t *src = (const uint64_t *)&w->st;
        uint64_t *dst = (uint64_t *)t;
        for (size_t k = 0; k < sizeof *t / sizeof(uint64_t); k++)
            dst[k] += __atomic_load_n(&src[k], __ATOMIC_RELAXED);
        if (w->http) {
            struct http_server_stats hs;
            http_server_stats(w->http, &hs);
            *conns += hs.connections;
        }
        *inflight += __atomic_load_n(&w->nreqs, __ATOMIC_RELAXED);
    }
}

static void web_describe(struct service *s, struct buf *out)
{
    struct web_svc *svc = (struct web_svc *)s;
    struct web_stats t;
    int conns, inflight;
    sum_stats(svc, &t, &conns, &inflight);
    buf_printf(out, "web %s: %llu requests, %llu errors, %llu limits, %d connections",
               svc->base.listen, (unsigned long long)t.requests, (unsigned long long)t.errors,
               (unsigned long long)t.limits, conns);
}

#define STAT_FIELDS(X)                                                                           \
    X(requests, "counter", "Requests received.")                                                \
    X(responses_2xx, "counter", "Answers 2xx (static files are counted apart).")                                                  \
    X(responses_3xx, "counter", "Answers 3xx (static files are counted apart).")                                                  \
    X(responses_4xx, "counter", "Answers 4xx (static files are counted apart).")                                                  \
    X(responses_5xx, "counter", "Answers 5xx (static files are counted apart).")                                                  \
    X(errors, "counter", "Handlers that raised an error (answered 500).")                       \
    X(limits, "counter", "Handlers stopped by a limit: instructions, time, memory (500).")      \
    X(timeouts, "counter", "Requests that ran past the web timeout.")                           \
    X(gone, "counter", "Requests whose client went away before the answer.")                    \
    X(not_found, "counter", "Requests matching no route and no static file.")                   \
    X(cache_hits, "counter", "ctx:cached reads found in the cache.")                            \
    X(cache_misses, "counter", "ctx:cached reads not found in the cache.")                      \
    X(flights, "counter", "ctx:cached loads run (single flights led).")                         \
    X(flight_waits, "counter", "ctx:cached misses that waited for another request's load.")     \
    X(ryw_cookies, "counter", "Answers that set the read-your-writes cookie.")                 \
    X(cut_short, "counter", "Streamed answers cut short by a handler error or limit.")        \
    X(reload_failures, "counter", "Workers that kept their old app: clients not made.")

static void web_status_json(struct service *s, struct buf *out)
{
    struct web_svc *svc = (struct web_svc *)s;
    struct web_stats t;
    int conns, inflight;
    sum_stats(svc, &t, &conns, &inflight);
    buf_append_str(out, "\"app\":");
    buf_json_string(out, svc->cfg.app);
    buf_printf(out, ",\"workers\":%d,\"connections\":%d,\"in_flight\":%d,\"reloads\":%llu",
               svc->nworkers, conns, inflight, (unsigned long long)svc->reloads);
#define X(f, type, help) buf_printf(out, ",\"" #f "\":%llu", (unsigned long long)t.f);
    STAT_FIELDS(X)
#undef X
    /* latency: worker 0's (each worker keeps its own, on its own thread);
     * memory: every worker's app state, as each last published it */
    struct web_worker *w0 = svc->w[0];
    double now = ev_now(w0->loop);
    size_t mem = 0;
    for (int i = 0; i < svc->nworkers; i++)
        mem += __atomic_load_n(&svc->w[i]->app_mem, __ATOMIC_RELAXED);
    buf_printf(out, ",\"p50_ms\":%.3f,\"p99_ms\":%.3f,\"used_memory\":%zu",
               latency_percentile(&w0->lat, 50, now), latency_percentile(&w0->lat, 99, now), mem);
    if (t.cache_hits + t.cache_misses)
        buf_printf(out, ",\"hit_ratio\":%.4f",
                   (double)t.cache_hits / (double)(t.cache_hits + t.cache_misses));
    struct web_gen *g = svc->w[0]->gen;
    buf_append_str(out, ",\"worker_requests\":[");
    for (int i = 0; i < svc->nworkers; i++)
        buf_printf(out, "%s%llu", i ? "," : "",
                   (unsigned long long)__atomic_load_n(&svc->w[i]->st.requests,
                                                       __ATOMIC_RELAXED));
    buf_append_str(out, "]");
    /* the db client's routing (worker 0's: the others route alike) */
    if (g->db) {
        struct db_client_stats ds;
        db_client_stats(g->db, &ds);
        buf_printf(out, ",\"db\":{\"calls\":%llu,\"failures\":%llu,\"cancelled\":%llu,"
                   "\"reads_primary\":%llu,\"reads_replica\":%llu,\"ryw_waits\":%llu,"
                   "\"ryw_fallbacks\":%llu}",
                   (unsigned long long)ds.calls.calls, (unsigned long long)ds.calls.failures,
                   (unsigned long long)ds.calls.cancelled,
                   (unsigned long long)ds.reads_primary, (unsigned long long)ds.reads_replica,
                   (unsigned long long)ds.ryw_waits, (unsigned long long)ds.ryw_fallbacks);
    }
    if (g->st) {
        struct web_static_stats ss;
        web_static_stats(g->st, &ss);
        buf_printf(out, ",\"static\":{\"served\":%lu,\"not_modified\":%lu,\"partial\":%lu,"
                   "\"refused\":%lu}", ss.served, ss.not_modified, ss.partial, ss.refused);
    }
    if (g->cache) {
        struct kvc_stats cs;
        cache_client_stats(g->cache, &cs);
        buf_printf(out, ",\"cache\":{\"calls\":%llu,\"failures\":%llu,\"cancelled\":%llu}",
                   (unsigned long long)cs.calls, (unsigned long long)cs.failures,
                   (unsigned long long)cs.cancelled);
    }
}

static void web_metrics(struct service *s, struct buf *out, const char *labels)
{
    struct web_svc *svc = (struct web_svc *)s;
    struct web_stats t;
    int conns, inflight;
    sum_stats(svc, &t, &conns, &inflight);
#define X(f, type, help)                                                                          \
    buf_printf(out, "# HELP strata_web_" #f "%s " help "\n# TYPE strata_web_" #f "%s " type      \
               "\nstrata_web_" #f "%s{%s} %llu\n",                                               \
               type[0] == 'c' ? "_total" : "", type[0] == 'c' ? "_total" : "",                 \
               type[0] == 'c' ? "_total" : "", labels, (unsigned long long)t.f);
    STAT_FIELDS(X)
#undef X
    buf_printf(out, "# HELP strata_web_connections Client connections open.\n"
                    "# TYPE strata_web_connections gauge\nstrata_web_connections{%s} %d\n",
               labels, conns);
    buf_printf(out, "# HELP strata_web_in_flight Requests being handled.\n"
                    "# TYPE strata_web_in_flight gauge\nstrata_web_in_flight{%s} %d\n",
               labels, inflight);
}

/* One line per setting that differs from the running one; the app line
 * always (its file's contents are what usually changed). */
static void list_changes(struct web_svc *svc, const struct web_cfg *c, const char *pre,
                         struct buf *changes)
{
    const struct web_cfg *o = &svc->cfg;
    if (strcmp(o->app, c->app) != 0)
        buf_printf(changes, "%s app %s -> %s\n", pre, o->app[0] ? o->app : "(none)",
                   c->app[0] ? c->app : "(none)");
    else
        buf_printf(changes, "%s app %s reloaded\n", pre, c->app[0] ? c->app : "(none)");
    if (o->has_static != c->has_static || strcmp(o->static_root, c->static_root) ||
        strcmp(o->static_prefix, c->static_prefix) || strcmp(o->static_index, c->static_index) ||
        o->static_max_age != c->static_max_age ||
        o->static_precompressed != c->static_precompressed)
        buf_printf(changes, "%s static settings\n", pre);
    if (o->timeout != c->timeout)
        buf_printf(changes, "%s timeout %gs -> %gs\n", pre, o->timeout, c->timeout);
    if (o->memory != c->memory)
        buf_printf(changes, "%s memory %lld -> %lld bytes\n", pre, (long long)o->memory,
                   (long long)c->memory);
    if (o->max_body != c->max_body)
        buf_printf(changes, "%s max_body %lld -> %lld bytes\n", pre, (long long)o->max_body,
                   (long long)c->max_body);
    if (o->nshards != c->nshards || memcmp(o->shards, c->shards, sizeof o->shards) ||
        strcmp(o->cache_password, c->cache_password))
        buf_printf(changes, "%s cache settings (new connections)\n", pre);
    if (o->has_db != c->has_db || memcmp(&o->primary, &c->primary, sizeof o->primary) ||
        o->nreplicas != c->nreplicas || memcmp(o->replicas, c->replicas, sizeof o->replicas) ||
        strcmp(o->db_reads, c->db_reads) || strcmp(o->db_password, c->db_password) ||
        o->read_your_writes != c->read_your_writes)
        buf_printf(changes, "%s db settings (new connections)\n", pre);
}

static int web_reload(struct service *s, lua_State *L, int idx, int dry_run, struct buf *changes,
                      char *err, size_t errlen)
{
    struct web_svc *svc = (struct web_svc *)s;
    struct web_cfg *c = malloc(sizeof *c);
    if (!c) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    char why[1024] = "";
    int rc = read_config(L, idx, c, why, sizeof why);
    if (rc == 0 && strcmp(c->listen, svc->cfg.listen) != 0) {
        snprintf(why, sizeof why, "a new listen address needs a restart");
        rc = -1;
    }
    if (rc == 0 && c->workers != svc->cfg.workers) {
        snprintf(why, sizeof why, "a new number of workers needs a restart");
        rc = -1;
    }
    if (rc < 0) {
        snprintf(err, errlen, "%s: web %s: %s", c->where, svc->base.node, why);
        free(c);
        return -1;
    }
    char pre[160];
    snprintf(pre, sizeof pre, "node %s: web %s:", svc->base.node, svc->base.listen);
    if (dry_run) {
        /* the app in a state of its own: a broken one fails here */
        struct web_gen *g = gen_new(NULL, c, why, sizeof why);
        if (!g) {
            snprintf(err, errlen, "%s: web %s: %s", c->where, svc->base.node, why);
            explicit_bzero(c, sizeof *c);
            free(c);
            return -1;
        }
        gen_free(g);
        list_changes(svc, c, pre, changes);
        explicit_bzero(c, sizeof *c);
        free(c);
        return 0;
    }
    /* Every worker's new generation is made before any becomes current:
     * worker 0's whole, the others' app and static folder (their clients
     * belong on their own loops, made there). One that fails fails the
     * reload, and every worker keeps what it runs. */
    struct web_gen *ng[WEB_MAX_WORKERS] = {NULL};
    int failed = -1;
    for (int i = 0; i < svc->nworkers && failed < 0; i++) {
        ng[i] = i == 0 ? gen_new(svc->w[0], c, why, sizeof why) : gen_prepare(c, why, sizeof why);
        if (!ng[i])
            failed = i;
    }
    if (failed >= 0) {
        for (int i = 0; i < svc->nworkers; i++)
            gen_free(ng[i]);
        if (svc->nworkers > 1)
            snprintf(err, errlen, "%s: web %s: worker %d: %s", c->where, svc->base.node, failed,
                     why);
        else
            snprintf(err, errlen, "%s: web %s: %s", c->where, svc->base.node, why);
        explicit_bzero(c, sizeof *c);
        free(c);
        return -1;
    }
    gen_swap(svc->w[0], ng[0]);
    for (int i = 1; i < svc->nworkers; i++)
        worker_send(svc->w[i], WEB_CMD_RELOAD, ng[i]);
    svc->cfg = *c;
    svc->reloads++;
    explicit_bzero(c, sizeof *c);
    free(c);
    log_info("web %s reloaded: app %s", svc->base.listen, svc->cfg.app[0] ? svc->cfg.app : "-");
    return 0;
}

const struct service_kind web_service_kind = {
    .name = "web",
    .validate = web_validate,
    .start = web_start,
    .drain = web_drain,
    .idle = web_idle,
    .free = web_free,
    .describe = web_describe,
    .status_json = web_status_json,
    .metrics = web_metrics,
    .reload = web_reload,
};
