/* balancer_svc: the balancer as a service -- configuration, start, drain,
 * free, hot reload, status and metrics. It drives the proxy
 * (balancer_proxy.h, balancer.c) and the generations (balancer_gen.h);
 * neither calls back into it. */
#include "balancer.h"

#include "balancer_proxy.h"

#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "log.h"
#include "util.h"

struct balancer {
    struct service base;
    struct bal_proxy px;
    struct net_listener *listener;
    uint64_t lua_fallbacks, lua_suppressed;
    double lua_logged_at;
};

/* ---- configuration -------------------------------------------------------- */

static int cfg_seconds(lua_State *L, int idx, const char *field, double def, double *out,
                       char *err, size_t errlen)
{
    if (cfg_number(L, idx, field, def, out, err, errlen) < 0)
        return -1;
    if (*out <= 0) {
        snprintf(err, errlen, "%s must be positive, not %g", field, *out);
        return -1;
    }
    return 0;
}

static int cfg_range(lua_State *L, int idx, const char *field, int64_t def, int64_t lo,
                     int64_t hi, int *out, char *err, size_t errlen)
{
    int64_t v;
    if (cfg_int(L, idx, field, def, &v, err, errlen) < 0)
        return -1;
    if (v < lo || v > hi) {
        snprintf(err, errlen, "%s must be in %lld..%lld, not %lld", field, (long long)lo,
                 (long long)hi, (long long)v);
        return -1;
    }
    *out = (int)v;
    return 0;
}

/* "rise must be ..." -> "health rise must be ...": says which table. */
static void err_within(const char *table, char *err, size_t errlen)
{
    char tmp[512];
    snprintf(tmp, sizeof tmp, "%s", err);
    snprintf(err, errlen, "%s %s", table, tmp);
}

static int read_health(lua_State *L, int idx, struct health_cfg *h, char *err, size_t errlen)
{
    memset(h, 0, sizeof *h);
    h->passive_errors = 5;
    h->passive_cooldown = 10;
    idx = lua_absindex(L, idx);
    int t = lua_getfield(L, idx, "health");
    if (t == LUA_TTABLE) {
        int hi = lua_gettop(L);
        h->active = 1;
        if (cfg_string(L, hi, "path", "/healthz", h->path, sizeof h->path, err, errlen) < 0 ||
            cfg_seconds(L, hi, "interval", 2, &h->interval, err, errlen) < 0 ||
            cfg_range(L, hi, "rise", 2, 1, 1000, &h->rise, err, errlen) < 0 ||
            cfg_range(L, hi, "fall", 3, 1, 1000, &h->fall, err, errlen) < 0 ||
            cfg_seconds(L, hi, "timeout", h->interval < 2 ? h->interval : 2, &h->timeout, err,
                        errlen) < 0) {
            err_within("health", err, errlen);
            goto fail;
        }
        if (h->path[0] != '/') {
            snprintf(err, errlen, "health.path must start with '/'");
            goto fail;
        }
    } else if (t != LUA_TNIL && !(t == LUA_TBOOLEAN && !lua_toboolean(L, -1))) {
        snprintf(err, errlen, "health must be a table");
        goto fail;
    }
    lua_pop(L, 1);
    t = lua_getfield(L, idx, "passive");
    if (t == LUA_TTABLE) {
        int pi = lua_gettop(L);
        if (cfg_range(L, pi, "errors", 5, 0, 1000000, &h->passive_errors, err, errlen) < 0 ||
            cfg_seconds(L, pi, "cooldown", 10, &h->passive_cooldown, err, errlen) < 0) {
            err_within("passive", err, errlen);
            goto fail;
        }
    } else if (t == LUA_TBOOLEAN && !lua_toboolean(L, -1)) {
        h->passive_errors = 0;
    } else if (t != LUA_TNIL) {
        snprintf(err, errlen, "passive must be a table");
        goto fail;
    }
    lua_pop(L, 1);
    if (cfg_number(L, idx, "slow_start", 0, &h->slow_start, err, errlen) < 0)
        return -1;
    return 0;
fail:
    lua_pop(L, 1);
    return -1;
}

static int read_config(lua_State *L, int idx, struct bal_cfg *c, char *err, size_t errlen)
{
    memset(c, 0, sizeof *c);
    int64_t mh;
    if (cfg_string(L, idx, "listen", "127.0.0.1:8080", c->listen, sizeof c->listen, err,
                   errlen) < 0 ||
        cfg_string(L, idx, "policy", "round_robin", c->policy, sizeof c->policy, err, errlen) <
            0 ||
        cfg_string(L, idx, "policy_path", "", c->policy_path, sizeof c->policy_path, err,
                   errlen) < 0 ||
        cfg_string(L, idx, "fallback", "round_robin", c->fallback, sizeof c->fallback, err,
                   errlen) < 0 ||
        cfg_string(L, idx, "hash_on", "ip", c->hash_on, sizeof c->hash_on, err, errlen) < 0 ||
        cfg_range(L, idx, "retries", 2, 0, BAL_MAX_TRIES - 1, &c->retries, err, errlen) < 0 ||
        cfg_seconds(L, idx, "connect_timeout", 2, &c->connect_timeout, err, errlen) < 0 ||
        cfg_seconds(L, idx, "server_timeout", 30, &c->server_timeout, err, errlen) < 0 ||
        cfg_seconds(L, idx, "client_timeout", 60, &c->client_timeout, err, errlen) < 0 ||
        cfg_seconds(L, idx, "head_timeout", 10, &c->head_timeout, err, errlen) < 0 ||
        cfg_range(L, idx, "max_conns", 10000, 1, 10000000, &c->max_conns, err, errlen) < 0 ||
        cfg_int(L, idx, "max_header_size", 16384, &mh, err, errlen) < 0 ||
        cfg_range(L, idx, "max_headers", 100, 1, 10000, &c->lim.max_headers, err, errlen) < 0)
        return -1;
    int64_t rl;
    if (cfg_int(L, idx, "max_request_line", 8192, &rl, err, errlen) < 0)
        return -1;
    if (mh < 256 || mh > 1024 * 1024) {
        snprintf(err, errlen, "max_header_size must be in 256..1048576 bytes, not %lld",
                 (long long)mh);
        return -1;
    }
    if (rl < 64 || rl > 1024 * 1024) {
        snprintf(err, errlen, "max_request_line must be in 64..1048576 bytes, not %lld",
                 (long long)rl);
        return -1;
    }
    c->lim.max_header_size = (size_t)mh;
    c->lim.max_request_line = (size_t)rl;
    if (access_log_read_cfg(L, idx, &c->access_log, err, errlen) < 0)
        return -1;
    /* max_conns not given: 0, derived from the descriptor limit at start */
    if (lua_getfield(L, idx, "max_conns") == LUA_TNIL)
        c->max_conns = 0;
    lua_pop(L, 1);
    /* like HAProxy's `timeout tunnel`: an upgraded connection may idle long */
    if (cfg_seconds(L, idx, "tunnel_timeout", 3600, &c->tunnel_timeout, err, errlen) < 0)
        return -1;
    if (cfg_seconds(L, idx, "pool_idle_timeout", BAL_POOL_IDLE_TIMEOUT, &c->pool_idle_timeout, err,
                    errlen) < 0 ||
        cfg_range(L, idx, "pool_max_idle", BAL_POOL_MAX_IDLE, 0, 1000000, &c->pool_max_idle, err,
                  errlen) < 0)
        return -1;
    return read_health(L, idx, &c->health, err, errlen);
}

static int parse_hash_on(const char *h, int *kind, char *name, size_t namelen, char *err,
                         size_t errlen)
{
    if (strcmp(h, "ip") == 0) {
        *kind = HASH_IP;
    } else if (strcmp(h, "path") == 0) {
        *kind = HASH_PATH;
    } else if (strncmp(h, "header:", 7) == 0 && h[7]) {
        *kind = HASH_HEADER;
        snprintf(name, namelen, "%s", h + 7);
    } else if (strncmp(h, "cookie:", 7) == 0 && h[7]) {
        *kind = HASH_COOKIE;
        snprintf(name, namelen, "%s", h + 7);
    } else {
        snprintf(err, errlen, "hash_on must be ip, path, header:NAME or cookie:NAME, not '%s'", h);
        return -1;
    }
    return 0;
}

/* The built-in policy to run: the policy itself, or a Lua policy's fallback. */
static const struct lb_ops *policy_ops(const struct bal_cfg *c, char *err, size_t errlen)
{
    const char *builtin = c->policy;
    if (!lb_ops_find(c->fallback)) {
        snprintf(err, errlen, "fallback must be a built-in policy (round_robin, least_conn, p2c, "
                 "chash, first), not '%s'", c->fallback);
        return NULL;
    }
    if (strcmp(c->policy, "lua") == 0) {
        builtin = c->fallback;
        if (!c->policy_path[0]) {
            snprintf(err, errlen, "policy 'lua' needs policy_path");
            return NULL;
        }
    }
    const struct lb_ops *ops = lb_ops_find(builtin);
    if (!ops)
        snprintf(err, errlen,
                 "unknown %s '%s' (round_robin, least_conn, p2c, chash, first, or a .lua file)",
                 builtin == c->policy ? "policy" : "fallback", builtin);
    return ops;
}

/* lb_lua_conf.on_fallback: a Lua pick failed and the fallback answered. */
static void lua_fallback_log(void *ud, const char *why)
{
    struct balancer *bal = ud;
    bal->lua_fallbacks++;
    double now = ev_now(bal->px.loop);
    /* At most one line a second: a broken policy must not flood the log. */
    if (now - bal->lua_logged_at >= 1.0) {
        log_warn("lua policy %s: %s; used %s instead (%llu similar suppressed)",
                 bal->px.cfg.policy_path, why, bal->px.cfg.fallback,
                 (unsigned long long)bal->lua_suppressed);
        bal->lua_logged_at = now;
        bal->lua_suppressed = 0;
    } else {
        bal->lua_suppressed++;
    }
}

/* Sets up the policy of c over targets t[0..n): a built-in, or a Lua pick
 * (with c's fallback) taking over the state of `prev` when it has one. */
static int policy_init(struct balancer *bal, struct lb *lb, const struct bal_cfg *c,
                       const struct lb *prev, struct lb_target **t, int n, char *err,
                       size_t errlen)
{
    const struct lb_ops *ops = policy_ops(c, err, errlen);
    if (!ops)
        return -1;
    if (strcmp(c->policy, "lua") != 0)
        return lb_init(lb, ops, t, n, err, errlen);
    struct lb_lua_conf conf = {.path = c->policy_path, .fallback = ops, .prev = prev,
                               .on_fallback = lua_fallback_log, .ud = bal};
    return lb_init_conf(lb, &lb_lua_ops, &conf, t, n, err, errlen);
}

static void health_changed(void *ud)
{
    (void)ud; /* policies read the live fields; nothing is cached here */
}

/* ---- generations -------------------------------------------------------- */

/* Builds a generation from the config at idx: backends and health not
 * started yet, and -- when `with_policy` -- the policy. A reload builds the
 * policy itself, over the set it will serve. */
static struct bal_gen *gen_new(struct balancer *bal, lua_State *L, int idx,
                               const struct bal_cfg *c, int with_policy, char *err,
                               size_t errlen)
{
    struct bal_gen *g = bal_gen_new(L, idx, err, errlen);
    if (!g)
        return NULL;
    if ((with_policy ? policy_init(bal, &g->lb, c, NULL, g->targets, g->nbe, err, errlen)
                     : (policy_ops(c, err, errlen) ? 0 : -1)) < 0) {
        bal_gen_free(g);
        return NULL;
    }
    return g;
}

/* Swaps in a generation with a different backend set: health state and
 * statistics of kept backends carry over, the proxy moves their pooled
 * connections, and the old generation stops checking and retires. */
static void gen_swap(struct balancer *bal, struct bal_gen *g, const struct health_cfg *hc)
{
    struct bal_gen *old = bal->px.gen;
    health_stop(&old->health);
    /* start first: a first start marks every backend up, which the
     * carried-over state then corrects */
    health_start(&g->health, bal->px.loop, hc, g->ht, g->nbe, health_changed, bal);
    bal_gen_carry_over(g, old);
    bal_proxy_swap(&bal->px, g);
    health_refresh(&g->health);
}

/* ---- service operations ------------------------------------------------- */

static void bal_free_all(struct balancer *bal)
{
    if (bal->listener)
        net_listener_close(bal->listener);
    bal->listener = NULL;
    access_log_free(bal->px.alog);
    bal->px.alog = NULL;
    bal_proxy_shutdown(&bal->px);
    free(bal);
}

/* Descriptors a balancer node keeps for itself: its listeners, the admin
 * endpoint and its clients, logs, the supervisor's pipe, health checks. */
#define BAL_FD_RESERVE 32

/* max_conns when the topology does not set it: every client may need a
 * backend socket too, so half of what the descriptor limit leaves after
 * the node's own (the way HAProxy derives maxconn from RLIMIT_NOFILE). */
static int max_conns_auto(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur == RLIM_INFINITY)
        return 10000;
    long long n = ((long long)rl.rlim_cur - BAL_FD_RESERVE) / 2;
    if (n > 10000000)
        n = 10000000;
    return n < 1 ? 1 : (int)n;
}

static int max_conns_of(const struct bal_cfg *c)
{
    return c->max_conns > 0 ? c->max_conns : max_conns_auto();
}

static void set_limits(struct balancer *bal, const struct bal_cfg *c)
{
    bal->px.resp_lim = c->lim;
    /* responses and our own rewritten heads get more room than clients */
    bal->px.resp_lim.max_header_size = c->lim.max_header_size * 2 + 4096;
    bal->px.resp_lim.max_request_line = c->lim.max_request_line + 64;
    bal->px.resp_lim.max_headers = bal->px.msg.max_hdrs;
}

static struct service *bal_start(const struct service_env *env, lua_State *L, int idx, char *err,
                                 size_t errlen)
{
    idx = lua_absindex(L, idx);
    struct balancer *bal = calloc(1, sizeof *bal);
    if (!bal) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    bal->base.kind = &balancer_service_kind;
    bal->base.env = env;
    bal_proxy_init(&bal->px, env->loop);
    struct bal_cfg *c = &bal->px.cfg;
    if (cfg_string(L, idx, "node", "", bal->base.node, sizeof bal->base.node, err, errlen) < 0 ||
        read_config(L, idx, c, err, errlen) < 0 ||
        parse_hash_on(c->hash_on, &bal->px.hash_kind, bal->px.hash_name,
                      sizeof bal->px.hash_name, err, errlen) < 0 ||
        !(bal->px.gen = gen_new(bal, L, idx, c, 1, err, errlen)))
        goto fail;
    bal->px.msg.max_hdrs = c->lim.max_headers + 8;
    bal->px.msg.hdrs = calloc((size_t)bal->px.msg.max_hdrs, sizeof *bal->px.msg.hdrs);
    if (!bal->px.msg.hdrs) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    set_limits(bal, c);
    int alog_failed;
    bal->px.alog = access_log_open(bal->px.loop, &c->access_log, &alog_failed, err, errlen);
    if (alog_failed)
        goto fail;
    struct bal_gen *g = bal->px.gen;
    health_start(&g->health, bal->px.loop, &c->health, g->ht, g->nbe, health_changed, bal);
    bal->listener = net_listen(bal->px.loop, c->listen, 0, &bal_client_ops, bal_proxy_accept,
                               &bal->px, err, errlen);
    if (!bal->listener)
        goto fail;
    bal->listener->max_conns = max_conns_of(c);
    snprintf(bal->base.listen, sizeof bal->base.listen, "%s", bal->listener->addr);
    snprintf(bal->px.listen, sizeof bal->px.listen, "%s", bal->listener->addr);
    log_info("node %s: balancer listening on %s: %d backends, policy %s%s%s, max_conns %d%s",
             bal->base.node, bal->base.listen, g->nbe, c->policy, lb_lua_of(&g->lb) ? " " : "",
             lb_lua_of(&g->lb) ? c->policy_path : "", bal->listener->max_conns,
             c->max_conns ? "" : " (from the descriptor limit)");
    return &bal->base;
fail:
    bal_free_all(bal);
    return NULL;
}

static void bal_drain(struct service *s)
{
    struct balancer *bal = (struct balancer *)s;
    if (bal->listener) {
        net_listener_close(bal->listener);
        bal->listener = NULL;
    }
    health_stop(&bal->px.gen->health);
    bal_proxy_drain(&bal->px);
}

/* The kind's validate: the readers start and reload use (settings,
 * hash key, backends, policy names), with nothing started. A Lua policy
 * module is the topology checker's to load. */
static int bal_validate(lua_State *L, int idx, char *err, size_t errlen)
{
    idx = lua_absindex(L, idx);
    struct bal_cfg c;
    char node[64], hash_name[96];
    int hash_kind;
    char why[512] = "";
    struct bal_gen *g = NULL;
    if (cfg_string(L, idx, "node", "", node, sizeof node, err, errlen) < 0)
        return -1;
    if (read_config(L, idx, &c, why, sizeof why) < 0 ||
        parse_hash_on(c.hash_on, &hash_kind, hash_name, sizeof hash_name, why, sizeof why) < 0 ||
        !(g = gen_new(NULL, L, idx, &c, 0, why, sizeof why))) {
        snprintf(err, errlen, "balancer %s: %s", node, why);
        return -1;
    }
    bal_gen_free(g);
    return 0;
}

static int bal_idle(struct service *s) { return ((struct balancer *)s)->px.nclients == 0; }

static void bal_free(struct service *s) { bal_free_all((struct balancer *)s); }

static void bal_describe(struct service *s, struct buf *out)
{
    struct balancer *bal = (struct balancer *)s;
    struct bal_gen *g = bal->px.gen;
    int up = 0;
    for (int i = 0; i < g->nbe; i++)
        up += g->be[i].t.healthy;
    buf_printf(out, "balancer %s: %d/%d backends healthy%s, %d clients, %llu requests",
               bal->base.listen, up, g->nbe, g->health.panic ? " (panic)" : "",
               bal->px.nclients, (unsigned long long)bal->px.requests);
}

static void bal_status_json(struct service *s, struct buf *out)
{
    struct balancer *bal = (struct balancer *)s;
    struct bal_gen *g = bal->px.gen;
    double now = ev_now(bal->px.loop);
    buf_printf(out, "\"p50_ms\":%.3f,\"p99_ms\":%.3f,",
               latency_percentile(&bal->px.latency, 50, now),
               latency_percentile(&bal->px.latency, 99, now));
    buf_append_str(out, "\"policy\":");
    buf_json_string(out, bal->px.cfg.policy);
    buf_printf(out,
               ",\"clients\":%d,\"max_conns\":%d,\"requests\":%llu,"
               "\"retries\":%llu,\"errors_sent\":%llu,\"local_shortages\":%llu,"
               "\"checks_skipped_local\":%llu,\"tunnels\":%d,\"tunnels_total\":%llu,"
               "\"lua_fallbacks\":%llu,\"panic\":%s,\"backends\":[",
               bal->px.nclients,
               bal->listener ? bal->listener->max_conns : max_conns_of(&bal->px.cfg),
               (unsigned long long)bal->px.requests,
               (unsigned long long)bal->px.retries, (unsigned long long)bal->px.errors_sent,
               (unsigned long long)bal->px.local_shortages,
               (unsigned long long)g->health.skipped_local, bal->px.tunnels,
               (unsigned long long)bal->px.tunnels_total,
               (unsigned long long)bal->lua_fallbacks, g->health.panic ? "true" : "false");
    for (int i = 0; i < g->nbe; i++) {
        struct bal_backend *be = &g->be[i];
        buf_append_str(out, i ? ",{\"name\":" : "{\"name\":");
        buf_json_string(out, be->name);
        buf_append_str(out, ",\"addr\":");
        buf_json_string(out, be->addr);
        buf_printf(out,
                   ",\"healthy\":%s,\"usable\":%s,\"ejected\":%s,\"weight\":%d,"
                   "\"active\":%d,\"requests\":%llu,\"failures\":%llu,\"ewma_ms\":%.3f,"
                   "\"connections\":%d,\"idle\":%d,\"checks\":%llu,\"checks_failed\":%llu}",
                   be->t.healthy ? "true" : "false", be->t.usable ? "true" : "false",
                   g->ht[i].ejected_until > 0 ? "true" : "false", be->t.weight, be->t.active,
                   (unsigned long long)be->requests, (unsigned long long)be->failures,
                   be->t.ewma_ms, be->nconns, be->nidle, (unsigned long long)g->ht[i].checks,
                   (unsigned long long)g->ht[i].checks_failed);
    }
    buf_append_str(out, "]");
}

/* One family's HELP and TYPE lines. */
static void fam(struct buf *out, const char *name, const char *type, const char *help)
{
    buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A value that may be "none yet" (negative): NaN, as Prometheus spells it. */
static void num_or_nan(struct buf *out, double v)
{
    if (v < 0)
        buf_append_str(out, "NaN\n");
    else
        buf_printf(out, "%.6f\n", v);
}

enum be_metric { BE_UP, BE_REQUESTS, BE_FAILURES, BE_ACTIVE, BE_EWMA, BE_CONNS, BE_IDLE,
                 BE_CHECKS, BE_CHECKS_FAILED, BE_NMETRICS };

static void bal_metrics(struct service *s, struct buf *out, const char *labels)
{
    struct balancer *bal = (struct balancer *)s;
    struct bal_proxy *px = &bal->px;
    struct bal_gen *g = px->gen;
    struct {
        const char *name, *type, *help;
        unsigned long long v;
    } m[] = {
        {"strata_balancer_requests_total", "counter", "Requests received from clients.",
         px->requests},
        {"strata_balancer_retries_total", "counter", "Attempts retried on another backend.",
         px->retries},
        {"strata_balancer_errors_sent_total", "counter",
         "Error responses the balancer answered itself.", px->errors_sent},
        {"strata_balancer_local_shortages_total", "counter",
         "Requests answered 503 because this node could not open a backend connection.",
         px->local_shortages},
        {"strata_balancer_health_checks_skipped_total", "counter",
         "Health checks skipped because this node could not open a socket.",
         g->health.skipped_local},
        {"strata_balancer_lua_fallbacks_total", "counter",
         "Lua policy picks answered by the fallback policy.", bal->lua_fallbacks},
        {"strata_balancer_tunnels_total", "counter",
         "Upgraded connections (WebSocket) relayed as tunnels.", px->tunnels_total},
        {"strata_balancer_tunnels", "gauge", "Tunnels open.", (unsigned long long)px->tunnels},
        {"strata_balancer_clients", "gauge", "Client connections open.",
         (unsigned long long)px->nclients},
        {"strata_balancer_max_conns", "gauge", "Client connections allowed.",
         (unsigned long long)(bal->listener ? bal->listener->max_conns
                                            : max_conns_of(&px->cfg))},
        {"strata_balancer_panic", "gauge", "1 while no backend is healthy (all get traffic).",
         (unsigned long long)g->health.panic},
    };
    for (size_t i = 0; i < sizeof m / sizeof m[0]; i++) {
        fam(out, m[i].name, m[i].type, m[i].help);
        buf_printf(out, "%s{%s} %llu\n", m[i].name, labels, m[i].v);
    }
    /* Backend response-head latency: quantiles over the last 10-20 s (NaN
     * without traffic), sum and count over the node's life. */
    double now = ev_now(px->loop);
    const char *lat = "strata_balancer_backend_latency_seconds";
    fam(out, lat, "summary", "Time from request sent to response head, per response.");
    double p50 = latency_percentile(&px->latency, 50, now);
    double p99 = latency_percentile(&px->latency, 99, now);
    buf_printf(out, "%s{%s,quantile=\"0.5\"} ", lat, labels);
    num_or_nan(out, p50 < 0 ? -1 : p50 / 1000.0);
    buf_printf(out, "%s{%s,quantile=\"0.99\"} ", lat, labels);
    num_or_nan(out, p99 < 0 ? -1 : p99 / 1000.0);
    buf_printf(out, "%s_sum{%s} %.6f\n", lat, labels, px->latency_sum);
    buf_printf(out, "%s_count{%s} %llu\n", lat, labels, (unsigned long long)px->latency_count);

    static const struct {
        const char *name, *type, *help;
    } bm[BE_NMETRICS] = {
        [BE_UP] = {"strata_balancer_backend_up", "gauge", "1 while the backend is healthy."},
        [BE_REQUESTS] = {"strata_balancer_backend_requests_total", "counter",
                         "Attempts sent to the backend."},
        [BE_FAILURES] = {"strata_balancer_backend_failures_total", "counter",
                         "Failed attempts on the backend (connect errors, resets, timeouts, "
                         "invalid responses, 5xx)."},
        [BE_ACTIVE] = {"strata_balancer_backend_active", "gauge",
                       "Requests in flight on the backend."},
        [BE_EWMA] = {"strata_balancer_backend_latency_ewma_seconds", "gauge",
                     "Moving average of the backend's time to response head."},
        [BE_CONNS] = {"strata_balancer_backend_connections", "gauge",
                      "Connections open to the backend."},
        [BE_IDLE] = {"strata_balancer_backend_idle_connections", "gauge",
                     "Keep-alive connections to the backend waiting in the pool."},
        [BE_CHECKS] = {"strata_balancer_backend_checks_total", "counter",
                       "Active health checks run."},
        [BE_CHECKS_FAILED] = {"strata_balancer_backend_checks_failed_total", "counter",
                              "Active health checks failed."},
    };
    struct buf be_label;
    buf_init(&be_label);
    for (int k = 0; k < BE_NMETRICS; k++) {
        fam(out, bm[k].name, bm[k].type, bm[k].help);
        for (int i = 0; i < g->nbe; i++) {
            struct bal_backend *be = &g->be[i];
            buf_reset(&be_label);
            buf_prom_label(&be_label, be->name);
            buf_printf(out, "%s{%s,backend=%.*s} ", bm[k].name, labels, (int)buf_size(&be_label),
                       buf_head(&be_label));
            switch (k) {
            case BE_UP: buf_printf(out, "%d\n", be->t.healthy); break;
            case BE_REQUESTS: buf_printf(out, "%llu\n", (unsigned long long)be->requests); break;
            case BE_FAILURES: buf_printf(out, "%llu\n", (unsigned long long)be->failures); break;
            case BE_ACTIVE: buf_printf(out, "%d\n", be->t.active); break;
            case BE_EWMA: buf_printf(out, "%.6f\n", be->t.ewma_ms / 1000.0); break;
            case BE_CONNS: buf_printf(out, "%d\n", be->nconns); break;
            case BE_IDLE: buf_printf(out, "%d\n", be->nidle); break;
            case BE_CHECKS:
                buf_printf(out, "%llu\n", (unsigned long long)g->ht[i].checks);
                break;
            default:
                buf_printf(out, "%llu\n", (unsigned long long)g->ht[i].checks_failed);
                break;
            }
        }
    }
    buf_free(&be_label);
}

/* Appends one line per setting that differs between the running balancer
 * and c (the runtime asks only when something in the declaration or a
 * policy file differs; a setting with no line of its own still gets one,
 * so a reload is never mistaken for "no changes"). */
static void list_changes(struct balancer *bal, const struct bal_cfg *c, const struct lb *lb,
                         const struct bal_gen *cur, const struct bal_gen *g, int same,
                         struct buf *changes)
{
    const struct bal_cfg *o = &bal->px.cfg;
    size_t before = buf_size(changes);
    char pre[160];
    snprintf(pre, sizeof pre, "node %s: balancer %s:", bal->base.node, bal->base.listen);
    const struct lb_lua *lua = lb_lua_of(lb);
    int new_policy = strcmp(c->policy, o->policy) || strcmp(c->policy_path, o->policy_path);
    if (lua)
        buf_printf(changes, "%s policy %s%s%s\n", pre, c->policy_path,
                   new_policy ? " (new)" : " (reloaded)",
                   lb_lua_migrated(lua) ? " (state migrated)" : "");
    else if (new_policy)
        buf_printf(changes, "%s policy %s -> %s\n", pre,
                   strcmp(o->policy, "lua") == 0 ? o->policy_path : o->policy, c->policy);
    if (strcmp(c->fallback, o->fallback))
        buf_printf(changes, "%s fallback %s -> %s\n", pre, o->fallback, c->fallback);
    if (strcmp(c->hash_on, o->hash_on))
        buf_printf(changes, "%s hash_on %s -> %s\n", pre, o->hash_on, c->hash_on);
    if (c->retries != o->retries)
        buf_printf(changes, "%s retries %d -> %d\n", pre, o->retries, c->retries);
    const struct {
        const char *name;
        double was, now;
    } t[] = {
        {"connect_timeout", o->connect_timeout, c->connect_timeout},
        {"server_timeout", o->server_timeout, c->server_timeout},
        {"client_timeout", o->client_timeout, c->client_timeout},
        {"head_timeout", o->head_timeout, c->head_timeout},
        {"tunnel_timeout", o->tunnel_timeout, c->tunnel_timeout},
        {"pool_idle_timeout", o->pool_idle_timeout, c->pool_idle_timeout},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
        if (t[i].was != t[i].now)
            buf_printf(changes, "%s %s %gs -> %gs\n", pre, t[i].name, t[i].was, t[i].now);
    if (c->pool_max_idle != o->pool_max_idle)
        buf_printf(changes, "%s pool_max_idle %d -> %d\n", pre, o->pool_max_idle,
                   c->pool_max_idle);
    if (c->max_conns != o->max_conns)
        buf_printf(changes, "%s max_conns %d -> %d\n", pre, max_conns_of(o), max_conns_of(c));
    if (c->lim.max_header_size != o->lim.max_header_size ||
        c->lim.max_headers != o->lim.max_headers ||
        c->lim.max_request_line != o->lim.max_request_line)
        buf_printf(changes, "%s request limits\n", pre);
    if (memcmp(&c->health, &o->health, sizeof c->health) != 0)
        buf_printf(changes, "%s health settings\n", pre);
    if (!same) {
        buf_printf(changes, "%s backends %d -> %d\n", pre, cur->nbe, g->nbe);
    } else {
        for (int i = 0; i < cur->nbe; i++)
            if (cur->be[i].t.weight != g->be[i].t.weight)
                buf_printf(changes, "%s backend %s weight %d -> %d\n", pre, cur->be[i].name,
                           cur->be[i].t.weight, g->be[i].t.weight);
    }
    if (buf_size(changes) == before)
        buf_printf(changes, "%s settings changed\n", pre);
}

/* Hot reload. Policy (a Lua policy is loaded and validated again even when
 * its path is unchanged), fallback, hash key, retries, timeouts, limits and
 * health settings apply in place; so do new weights for the same backends.
 * A different backend set becomes a new generation (gen_swap). Requests in
 * flight are unaffected: a pick is synchronous, so an old policy is freed
 * at once, and an old backend set lives until its last request is done.
 *
 * A Lua policy is built in both passes, over the backend set it will serve,
 * and takes over the running one's M.state when it has migrate(): in the
 * dry run too, so a migrate that fails fails the reload before any service
 * changed. Nothing runs between the two passes, so the apply pass migrates
 * the same state again. */
static int bal_reload(struct service *s, lua_State *L, int idx, int dry_run, struct buf *changes,
                      char *err, size_t errlen)
{
    struct balancer *bal = (struct balancer *)s;
    idx = lua_absindex(L, idx);
    struct bal_cfg c;
    int hash_kind;
    char hash_name[96] = "";
    if (read_config(L, idx, &c, err, errlen) < 0 ||
        parse_hash_on(c.hash_on, &hash_kind, hash_name, sizeof hash_name, err, errlen) < 0)
        return -1;
    if (strcmp(c.listen, bal->px.cfg.listen) != 0) {
        snprintf(err, errlen, "balancer %s: a new listen address needs a restart",
                 bal->base.listen);
        return -1;
    }
    struct bal_gen *g = gen_new(bal, L, idx, &c, 0, err, errlen);
    if (!g)
        return -1;
    struct bal_gen *cur = bal->px.gen;
    int same = bal_gen_same_backends(g, cur);
    /* the new policy, over the set it will serve; a Lua one takes over the
     * running one's state (when that is a Lua policy with M.state) */
    struct bal_gen *over = same ? cur : g;
    struct lb lb;
    if (policy_init(bal, &lb, &c, &cur->lb, over->targets, over->nbe, err, errlen) < 0) {
        bal_gen_free(g);
        return -1;
    }
    list_changes(bal, &c, &lb, cur, g, same, changes);
    /* a new access log is opened in both passes: a path that cannot be
     * written fails the reload before anything changed */
    struct access_log *alog = NULL;
    int new_alog = !access_log_cfg_same(&c.access_log, &bal->px.cfg.access_log);
    if (new_alog) {
        int failed;
        alog = access_log_open(bal->px.loop, &c.access_log, &failed, err, errlen);
        if (failed) {
            lb_free(&lb);
            bal_gen_free(g);
            return -1;
        }
        buf_printf(changes, "node %s: balancer %s: access_log %s\n", bal->base.node,
                   bal->base.listen,
                   c.access_log.format == ACCESS_LOG_OFF ? "off" : c.access_log.path);
    }
    if (dry_run || bal->px.draining) {
        access_log_free(alog);
        lb_free(&lb);
        bal_gen_free(g);
        return 0;
    }
    if (c.lim.max_headers + 8 > bal->px.msg.max_hdrs) {
        struct http_hdr *h = calloc((size_t)c.lim.max_headers + 8, sizeof *h);
        if (!h) {
            access_log_free(alog);
            lb_free(&lb);
            bal_gen_free(g);
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        free(bal->px.msg.hdrs);
        bal->px.msg.hdrs = h;
        bal->px.msg.max_hdrs = c.lim.max_headers + 8;
    }
    int health_same = memcmp(&c.health, &bal->px.cfg.health, sizeof c.health) == 0;
    if (same) {
        /* keep the running set (pools, health state); take the new policy,
         * built over it above */
        for (int i = 0; i < cur->nbe; i++)
            cur->be[i].t.weight = g->be[i].t.weight;
        lb_free(&cur->lb);
        cur->lb = lb;
        if (cur->lb.ops->update)
            cur->lb.ops->update(&cur->lb); /* the new weights */
        bal_gen_free(g);
        if (!health_same) {
            health_stop(&cur->health);
            health_start(&cur->health, bal->px.loop, &c.health, cur->ht, cur->nbe, health_changed,
                         bal);
        } else {
            health_refresh(&cur->health);
        }
    } else {
        g->lb = lb;
        gen_swap(bal, g, &c.health);
    }
    if (new_alog) {
        access_log_free(bal->px.alog);
        bal->px.alog = alog;
    }
    bal->px.cfg = c;
    if (bal->listener)
        bal->listener->max_conns = max_conns_of(&c);
    bal->px.hash_kind = hash_kind;
    memcpy(bal->px.hash_name, hash_name, sizeof hash_name);
    set_limits(bal, &c);
    log_info("balancer %s reloaded: policy %s, %d backends", bal->base.listen,
             lb_lua_of(&bal->px.gen->lb) ? c.policy_path : c.policy, bal->px.gen->nbe);
    return 0;
}

const struct service_kind balancer_service_kind = {
    .name = "balancer",
    .validate = bal_validate,
    .start = bal_start,
    .drain = bal_drain,
    .idle = bal_idle,
    .free = bal_free,
    .describe = bal_describe,
    .status_json = bal_status_json,
    .metrics = bal_metrics,
    .reload = bal_reload,
};
