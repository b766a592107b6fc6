/* balancer_svc: the balancer as a service -- configuration, start, drain,
 * free, hot reload, status and metrics. The proxying is in balancer.c. */
#include "balancer_int.h"

#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "util.h"

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
    return read_health(L, idx, &c->health, err, errlen);
}

/* backends = { { name=, addr=, weight=, max_active= } | "host:port", ... } */
static int read_backends(struct bal_gen *bal, lua_State *L, int idx, char *err, size_t errlen)
{
    if (lua_getfield(L, idx, "backends") != LUA_TTABLE) {
        lua_pop(L, 1);
        snprintf(err, errlen, "backends must be a list of addresses or backend tables");
        return -1;
    }
    int n = (int)lua_rawlen(L, -1);
    if (n < 1 || n > BAL_MAX_BACKENDS) {
        lua_pop(L, 1);
        snprintf(err, errlen, "backends must list 1..%d backends, not %d", BAL_MAX_BACKENDS, n);
        return -1;
    }
    bal->be = calloc((size_t)n, sizeof *bal->be);
    bal->targets = calloc((size_t)n, sizeof *bal->targets);
    bal->ht = calloc((size_t)n, sizeof *bal->ht);
    if (!bal->be || !bal->targets || !bal->ht) {
        lua_pop(L, 1);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    bal->nbe = n;
    int rc = 0;
    for (int i = 0; i < n && rc == 0; i++) {
        struct bal_backend *be = &bal->be[i];
        int64_t w = 1, ma = 0;
        int t = lua_rawgeti(L, -1, i + 1);
        if (t == LUA_TSTRING) {
            snprintf(be->addr, sizeof be->addr, "%s", lua_tostring(L, -1));
        } else if (t == LUA_TTABLE) {
            int bi = lua_gettop(L);
            if (cfg_string(L, bi, "addr", "", be->addr, sizeof be->addr, err, errlen) < 0 ||
                cfg_string(L, bi, "name", "", be->name, sizeof be->name, err, errlen) < 0 ||
                cfg_int(L, bi, "weight", 1, &w, err, errlen) < 0 ||
                cfg_int(L, bi, "max_active", 0, &ma, err, errlen) < 0)
                rc = -1;
        } else {
            snprintf(err, errlen, "backends[%d] must be an address or a table", i + 1);
            rc = -1;
        }
        lua_pop(L, 1);
        if (rc)
            break;
        if (!be->addr[0]) {
            snprintf(err, errlen, "backends[%d] has no addr", i + 1);
            rc = -1;
        } else if (w < 0 || w > 1000) {
            snprintf(err, errlen, "backends[%d]: weight must be in 0..1000, not %lld", i + 1,
                     (long long)w);
            rc = -1;
        } else if (ma < 0 || ma > 10000000) {
            snprintf(err, errlen, "backends[%d]: max_active must be in 0..10000000, not %lld",
                     i + 1, (long long)ma);
            rc = -1;
        } else if (util_parse_addr(be->addr, &bal->ht[i].sa, &bal->ht[i].salen, err, errlen) <
                   0) {
            rc = -1;
        }
        if (!be->name[0])
            snprintf(be->name, sizeof be->name, "%s", be->addr);
        be->t.name = be->name;
        be->t.addr = be->addr;
        be->t.weight = (int)w;
        be->t.eff_weight = (int)w * LB_EFF_SCALE;
        be->t.max_active = (int)ma;
        be->t.index = i;
        be->gen = bal;
        bal->targets[i] = &be->t;
        bal->ht[i].t = &be->t;
    }
    lua_pop(L, 1);
    for (int i = 0; i < n && rc == 0; i++)
        for (int j = 0; j < i; j++)
            if (strcmp(bal->be[i].name, bal->be[j].name) == 0) {
                snprintf(err, errlen, "two backends are named '%s'", bal->be[i].name);
                rc = -1;
                break;
            }
    return rc;
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

static void health_changed(void *ud)
{
    (void)ud; /* policies read the live fields; nothing is cached here */
}

/* ---- generations -------------------------------------------------------- */

void bal_gen_free(struct bal_gen *g)
{
    if (!g)
        return;
    health_stop(&g->health);
    lb_lua_free(g->lua);
    if (g->lb.ops)
        lb_free(&g->lb);
    free(g->be);
    free(g->targets);
    free(g->ht);
    free(g);
}

/* Builds a generation from the config at idx: backends, the policy (and,
 * when `with_lua`, a Lua policy loaded and validated), health not started
 * yet. A reload builds the Lua policy itself, over the set it will serve. */
static struct bal_gen *gen_new(lua_State *L, int idx, const struct bal_cfg *c, int with_lua,
                               char *err, size_t errlen)
{
    struct bal_gen *g = calloc(1, sizeof *g);
    if (!g) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    const struct lb_ops *ops;
    if (read_backends(g, L, idx, err, errlen) < 0 || !(ops = policy_ops(c, err, errlen)) ||
        lb_init(&g->lb, ops, g->targets, g->nbe, err, errlen) < 0) {
        bal_gen_free(g);
        return NULL;
    }
    if (with_lua && strcmp(c->policy, "lua") == 0 &&
        !(g->lua = lb_lua_new(c->policy_path, g->targets, g->nbe, NULL, err, errlen))) {
        bal_gen_free(g);
        return NULL;
    }
    return g;
}

/* Same backends (names and addresses, in order) as the running set? */
static int gen_same_backends(const struct bal_gen *a, const struct bal_gen *b)
{
    if (a->nbe != b->nbe)
        return 0;
    for (int i = 0; i < a->nbe; i++)
        if (strcmp(a->be[i].name, b->be[i].name) || strcmp(a->be[i].addr, b->be[i].addr))
            return 0;
    return 1;
}

/* Swaps in a generation with a different backend set. Backends kept (same
 * name and address) carry their health, statistics and idle connections
 * over; the old generation stops checking and waits for its last request. */
static void gen_swap(struct balancer *bal, struct bal_gen *g, const struct health_cfg *hc)
{
    struct bal_gen *old = bal->gen;
    health_stop(&old->health);
    health_start(&g->health, bal->loop, hc, g->ht, g->nbe, health_changed, bal);
    for (int i = 0; i < g->nbe; i++) {
        struct bal_backend *nb = &g->be[i];
        for (int j = 0; j < old->nbe; j++) {
            struct bal_backend *ob = &old->be[j];
            if (strcmp(nb->name, ob->name) || strcmp(nb->addr, ob->addr))
                continue;
            struct health_target *nh = &g->ht[i], *oh = &old->ht[j];
            nh->up = oh->up;
            nh->ejected_until = oh->ejected_until;
            nh->consec_errors = oh->consec_errors;
            nh->back_since = oh->back_since;
            nh->checks = oh->checks;
            nh->checks_failed = oh->checks_failed;
            nb->t.ewma_ms = ob->t.ewma_ms;
            nb->t.errors = ob->t.errors;
            nb->requests = ob->requests;
            nb->failures = ob->failures;
            while (ob->idle) { /* idle connections move with their backend */
                struct bal_server *srv = ob->idle;
                ob->idle = srv->next;
                ob->nidle--;
                ob->nconns--;
                old->refs--;
                srv->be = nb;
                srv->prev = NULL;
                srv->next = nb->idle;
                if (nb->idle)
                    nb->idle->prev = srv;
                nb->idle = srv;
                nb->nidle++;
                nb->nconns++;
                g->refs++;
            }
            break;
        }
    }
    for (int j = 0; j < old->nbe; j++) /* removed backends: idle ones close now */
        while (old->be[j].idle)
            net_conn_abort(old->be[j].idle->c, "backend removed");
    health_refresh(&g->health);
    bal->gen = g;
    old->retired = 1;
    old->next = bal->retired;
    bal->retired = old;
    bal_reap_start(bal);
}

/* ---- service operations ------------------------------------------------- */

static void bal_close_idle(struct bal_gen *g, const char *why)
{
    for (int i = 0; i < g->nbe; i++)
        while (g->be[i].idle)
            net_conn_abort(g->be[i].idle->c, why);
}

static void bal_free_all(struct balancer *bal)
{
    if (bal->gen)
        health_stop(&bal->gen->health);
    while (bal->clients)
        net_conn_abort(bal->clients->c, "shutdown");
    if (bal->gen)
        bal_close_idle(bal->gen, "shutdown");
    if (bal->listener)
        net_listener_close(bal->listener);
    bal->listener = NULL;
    if (bal->loop)
        ev_prepare_stop(bal->loop, &bal->reap);
    bal_reap(bal->loop, &bal->reap, 0);
    while (bal->retired) { /* normally gone already; nothing refers to them now */
        struct bal_gen *g = bal->retired;
        bal->retired = g->next;
        bal_gen_free(g);
    }
    bal_gen_free(bal->gen);
    access_log_free(bal->alog);
    buf_free(&bal->out);
    free(bal->msg.hdrs);
    free(bal);
}

static void set_limits(struct balancer *bal, const struct bal_cfg *c)
{
    bal->resp_lim = c->lim;
    /* responses and our own rewritten heads get more room than clients */
    bal->resp_lim.max_header_size = c->lim.max_header_size * 2 + 4096;
    bal->resp_lim.max_request_line = c->lim.max_request_line + 64;
    bal->resp_lim.max_headers = bal->msg.max_hdrs;
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
    bal->loop = env->loop;
    latency_init(&bal->latency, 10.0, ev_now(env->loop));
    ev_prepare_init(&bal->reap, bal_reap);
    bal->reap.data = bal;
    buf_init(&bal->out);
    struct bal_cfg *c = &bal->cfg;
    if (cfg_string(L, idx, "node", "", bal->base.node, sizeof bal->base.node, err, errlen) < 0 ||
        read_config(L, idx, c, err, errlen) < 0 ||
        parse_hash_on(c->hash_on, &bal->hash_kind, bal->hash_name, sizeof bal->hash_name, err,
                      errlen) < 0 ||
        !(bal->gen = gen_new(L, idx, c, 1, err, errlen)))
        goto fail;
    bal->msg.max_hdrs = c->lim.max_headers + 8;
    bal->msg.hdrs = calloc((size_t)bal->msg.max_hdrs, sizeof *bal->msg.hdrs);
    if (!bal->msg.hdrs) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    set_limits(bal, c);
    int alog_failed;
    bal->alog = access_log_open(bal->loop, &c->access_log, &alog_failed, err, errlen);
    if (alog_failed)
        goto fail;
    struct bal_gen *g = bal->gen;
    health_start(&g->health, bal->loop, &c->health, g->ht, g->nbe, health_changed, bal);
    bal->listener = net_listen(bal->loop, c->listen, 0, &bal_client_ops, bal_client_accept, bal,
                               err, errlen);
    if (!bal->listener)
        goto fail;
    bal->listener->max_conns = c->max_conns;
    snprintf(bal->base.listen, sizeof bal->base.listen, "%s", bal->listener->addr);
    log_info("balancer listening on %s: %d backends, policy %s%s%s", bal->base.listen, g->nbe,
             c->policy, g->lua ? " " : "", g->lua ? c->policy_path : "");
    return &bal->base;
fail:
    bal_free_all(bal);
    return NULL;
}

static void bal_drain(struct service *s)
{
    struct balancer *bal = (struct balancer *)s;
    bal->draining = 1;
    if (bal->listener) {
        net_listener_close(bal->listener);
        bal->listener = NULL;
    }
    health_stop(&bal->gen->health);
    bal_close_idle(bal->gen, "draining");
    /* idle clients go now; busy ones after their response */
    struct bal_client *cl = bal->clients, *next;
    for (; cl; cl = next) {
        next = cl->next;
        if (cl->state == CL_HEAD && buf_size(&cl->c->rbuf) == 0)
            net_conn_abort(cl->c, "draining");
        else
            cl->keep_alive = 0;
    }
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
        !(g = gen_new(L, idx, &c, 0, why, sizeof why))) {
        snprintf(err, errlen, "balancer %s: %s", node, why);
        return -1;
    }
    bal_gen_free(g);
    return 0;
}

static int bal_idle(struct service *s) { return ((struct balancer *)s)->nclients == 0; }

static void bal_free(struct service *s) { bal_free_all((struct balancer *)s); }

static void bal_describe(struct service *s, struct buf *out)
{
    struct balancer *bal = (struct balancer *)s;
    struct bal_gen *g = bal->gen;
    int up = 0;
    for (int i = 0; i < g->nbe; i++)
        up += g->be[i].t.healthy;
    buf_printf(out, "balancer %s: %d/%d backends healthy%s, %d clients, %llu requests",
               bal->base.listen, up, g->nbe, g->health.panic ? " (panic)" : "",
               bal->nclients, (unsigned long long)bal->requests);
}

static void bal_status_json(struct service *s, struct buf *out)
{
    struct balancer *bal = (struct balancer *)s;
    struct bal_gen *g = bal->gen;
    double now = ev_now(bal->loop);
    buf_printf(out, "\"p50_ms\":%.3f,\"p99_ms\":%.3f,",
               latency_percentile(&bal->latency, 50, now),
               latency_percentile(&bal->latency, 99, now));
    buf_printf(out,
               "\"policy\":\"%s\",\"clients\":%d,\"requests\":%llu,\"retries\":%llu,"
               "\"errors_sent\":%llu,\"lua_fallbacks\":%llu,\"panic\":%s,\"backends\":[",
               bal->cfg.policy, bal->nclients, (unsigned long long)bal->requests,
               (unsigned long long)bal->retries, (unsigned long long)bal->errors_sent,
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

static void bal_metrics(struct service *s, struct buf *out, const char *labels)
{
    struct balancer *bal = (struct balancer *)s;
    struct bal_gen *g = bal->gen;
    buf_printf(out, "strata_balancer_requests_total{%s} %llu\n", labels,
               (unsigned long long)bal->requests);
    /* Backend response-head latency over the last 10-20 s (-1: no traffic). */
    double now = ev_now(bal->loop);
    buf_printf(out, "strata_balancer_backend_latency_ms{%s,quantile=\"0.5\"} %.3f\n", labels,
               latency_percentile(&bal->latency, 50, now));
    buf_printf(out, "strata_balancer_backend_latency_ms{%s,quantile=\"0.99\"} %.3f\n", labels,
               latency_percentile(&bal->latency, 99, now));
    buf_printf(out, "strata_balancer_retries_total{%s} %llu\n", labels,
               (unsigned long long)bal->retries);
    buf_printf(out, "strata_balancer_errors_sent_total{%s} %llu\n", labels,
               (unsigned long long)bal->errors_sent);
    buf_printf(out, "strata_balancer_lua_fallbacks_total{%s} %llu\n", labels,
               (unsigned long long)bal->lua_fallbacks);
    buf_printf(out, "strata_balancer_clients{%s} %d\n", labels, bal->nclients);
    buf_printf(out, "strata_balancer_panic{%s} %d\n", labels, g->health.panic);
    for (int i = 0; i < g->nbe; i++) {
        struct bal_backend *be = &g->be[i];
        buf_printf(out, "strata_balancer_backend_up{%s,backend=\"%s\"} %d\n", labels, be->name,
                   be->t.healthy);
        buf_printf(out, "strata_balancer_backend_requests_total{%s,backend=\"%s\"} %llu\n",
                   labels, be->name, (unsigned long long)be->requests);
        buf_printf(out, "strata_balancer_backend_failures_total{%s,backend=\"%s\"} %llu\n",
                   labels, be->name, (unsigned long long)be->failures);
        buf_printf(out, "strata_balancer_backend_active{%s,backend=\"%s\"} %d\n", labels,
                   be->name, be->t.active);
        buf_printf(out, "strata_balancer_backend_latency_ewma_ms{%s,backend=\"%s\"} %.3f\n",
                   labels, be->name, be->t.ewma_ms);
    }
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
    if (strcmp(c.listen, bal->cfg.listen) != 0) {
        snprintf(err, errlen, "balancer %s: a new listen address needs a restart",
                 bal->base.listen);
        return -1;
    }
    struct bal_gen *g = gen_new(L, idx, &c, 0, err, errlen);
    if (!g)
        return -1;
    struct bal_gen *cur = bal->gen;
    int same = gen_same_backends(g, cur);
    struct lb_lua *lua = NULL;
    if (strcmp(c.policy, "lua") == 0) {
        struct bal_gen *over = same ? cur : g;
        lua = lb_lua_new(c.policy_path, over->targets, over->nbe, cur->lua, err, errlen);
        if (!lua) {
            bal_gen_free(g);
            return -1;
        }
    }
    int new_policy = strcmp(c.policy, bal->cfg.policy) || strcmp(c.policy_path, bal->cfg.policy_path);
    buf_printf(changes, "node %s: balancer %s: policy %s%s%s\n", bal->base.node,
               bal->base.listen, lua ? c.policy_path : c.policy,
               new_policy ? " (new)" : " (reloaded)",
               lua && lb_lua_migrated(lua) ? " (state migrated)" : "");
    if (!same)
        buf_printf(changes, "node %s: balancer %s: backends %d -> %d\n", bal->base.node,
                   bal->base.listen, cur->nbe, g->nbe);
    /* a new access log is opened in both passes: a path that cannot be
     * written fails the reload before anything changed */
    struct access_log *alog = NULL;
    int new_alog = !access_log_cfg_same(&c.access_log, &bal->cfg.access_log);
    if (new_alog) {
        int failed;
        alog = access_log_open(bal->loop, &c.access_log, &failed, err, errlen);
        if (failed) {
            lb_lua_free(lua);
            bal_gen_free(g);
            return -1;
        }
        buf_printf(changes, "node %s: balancer %s: access_log %s\n", bal->base.node,
                   bal->base.listen,
                   c.access_log.format == ACCESS_LOG_OFF ? "off" : c.access_log.path);
    }
    if (dry_run || bal->draining) {
        access_log_free(alog);
        lb_lua_free(lua);
        bal_gen_free(g);
        return 0;
    }
    if (c.lim.max_headers + 8 > bal->msg.max_hdrs) {
        struct http_hdr *h = calloc((size_t)c.lim.max_headers + 8, sizeof *h);
        if (!h) {
            access_log_free(alog);
            lb_lua_free(lua);
            bal_gen_free(g);
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        free(bal->msg.hdrs);
        bal->msg.hdrs = h;
        bal->msg.max_hdrs = c.lim.max_headers + 8;
    }
    int health_same = memcmp(&c.health, &bal->cfg.health, sizeof c.health) == 0;
    if (same) {
        /* keep the running set (pools, health state); take the new policy,
         * built over it above */
        lb_lua_free(cur->lua);
        cur->lua = lua;
        for (int i = 0; i < cur->nbe; i++)
            cur->be[i].t.weight = g->be[i].t.weight;
        lb_free(&cur->lb);
        lb_init(&cur->lb, g->lb.ops, cur->targets, cur->nbe, err, errlen);
        bal_gen_free(g);
        if (!health_same) {
            health_stop(&cur->health);
            health_start(&cur->health, bal->loop, &c.health, cur->ht, cur->nbe, health_changed,
                         bal);
        } else {
            health_refresh(&cur->health);
        }
    } else {
        g->lua = lua;
        gen_swap(bal, g, &c.health);
    }
    if (new_alog) {
        access_log_free(bal->alog);
        bal->alog = alog;
    }
    bal->cfg = c;
    if (bal->listener)
        bal->listener->max_conns = c.max_conns;
    bal->hash_kind = hash_kind;
    memcpy(bal->hash_name, hash_name, sizeof hash_name);
    set_limits(bal, &c);
    log_info("balancer %s reloaded: policy %s, %d backends", bal->base.listen,
             bal->gen->lua ? c.policy_path : c.policy, bal->gen->nbe);
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
