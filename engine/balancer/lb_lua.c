/* lb_lua: the host for Lua pick policies.
 *
 * Per pick the policy gets `req` and the list of candidate backends. Both
 * are long-lived tables: the list is rebuilt only when the candidate set
 * changes (health, retries), each backend table only gets the fields that
 * changed since the last call (active, ewma_ms, errors, healthy), and the
 * request fields (method, path, headers, client) are filled in lazily by an
 * __index function the first time the policy reads them. A round-robin
 * policy therefore costs one protected call and a few table writes.
 *
 * The module runs in a policy_host state (engine/lua/policy_host.h): a
 * sandbox with a memory limit, an instruction budget and a wall-clock
 * deadline on its top-level code, validate(), migrate() and every pick. An
 * error or a nil return makes lb_lua_ops fall back to its built-in policy;
 * a pick that ran into a limit makes the module rest for a second, during
 * which the fallback answers alone.
 *
 * On a reload the new module may take over the old one's M.state through
 * migrate(old_state) (policy_migrate.h). */
#include <lauxlib.h>
#include <limits.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http_parse.h"
#include "lb.h"
#include "log.h"
#include "policy_host.h"
#include "policy_migrate.h"
#include "util.h"

/* VM instructions (and pattern steps) one pick may run: generous for any
 * sane policy, and still a few milliseconds at most; the wall-clock bound
 * covers a slow machine or work the count misses. */
#define LB_LUA_BUDGET 1000000
#define LB_LUA_SECONDS 0.1
/* After a pick ran into a limit, the fallback answers alone this long: a
 * policy that always runs out must not cost the limit per request. */
#define LB_LUA_REST_US 1000000

enum { REQ_METHOD = 1, REQ_PATH = 2, REQ_HEADERS = 4, REQ_CLIENT = 8 };

struct lb_lua_cache {
    int active;
    double ewma_ms;
    uint64_t errors;
    int healthy;
};

struct lb_lua {
    struct policy_host *h;
    lua_State *L;
    int ref_pick, ref_req, ref_list, ref_all, ref_rev;
    struct lb_target **t;
    int n;
    unsigned char *in_list;     /* candidate bits the list was built from */
    int *list_idx;              /* list position -> target index */
    int nlist;
    int list_valid;
    struct lb_lua_cache *cache; /* last values written into backend tables */
    const struct lb_req *cur;   /* the request during a pick, else NULL */
    unsigned materialized;      /* REQ_* fields set on req during this pick */
    int migrated;               /* migrate() took over a previous state */
    int resting;                /* a pick ran into a limit at rest_since */
    int64_t rest_since;
    char rest_why[200];
};

/* "ip:port" / "[v6]:port" -> ip */
static void push_client_ip(lua_State *L, const char *peer)
{
    if (!peer) {
        lua_pushliteral(L, "");
        return;
    }
    if (peer[0] == '[') {
        const char *e = strchr(peer, ']');
        lua_pushlstring(L, peer + 1, e ? (size_t)(e - peer - 1) : strlen(peer + 1));
        return;
    }
    const char *colon = strrchr(peer, ':');
    lua_pushlstring(L, peer, colon ? (size_t)(colon - peer) : strlen(peer));
}

static void push_headers(lua_State *L, const struct http_msg *m)
{
    lua_createtable(L, 0, m ? m->nhdrs : 0);
    if (!m)
        return;
    char name[256];
    for (int i = 0; i < m->nhdrs; i++) {
        const struct http_hdr *h = &m->hdrs[i];
        if (h->name_len >= sizeof name)
            continue;
        for (uint32_t k = 0; k < h->name_len; k++) {
            char c = h->name[k];
            name[k] = (c >= 'A' && c <= 'Z') ? (char)(c + 32) : c;
        }
        lua_pushlstring(L, name, h->name_len);
        lua_pushvalue(L, -1);
        if (lua_rawget(L, -3) == LUA_TSTRING) {
            /* repeated field: join as a list, as RFC 9110 5.3 allows */
            lua_pushliteral(L, ", ");
            lua_pushlstring(L, h->value, h->value_len);
            lua_concat(L, 3);
        } else {
            lua_pop(L, 1);
            lua_pushlstring(L, h->value, h->value_len);
        }
        lua_rawset(L, -3);
    }
}

/* req's __index: computes a field once per pick and caches it in req. */
static int req_index(lua_State *L)
{
    struct lb_lua *p = lua_touserdata(L, lua_upvalueindex(1));
    size_t kl;
    const char *k = lua_tolstring(L, 2, &kl);
    if (!p->cur || !k)
        return 0;
    const struct http_msg *m = p->cur->msg;
    unsigned bit;
    if (kl == 6 && memcmp(k, "method", 6) == 0) {
        bit = REQ_METHOD;
        lua_pushlstring(L, m ? m->method_s : "", m ? m->method_len : 0);
    } else if (kl == 4 && memcmp(k, "path", 4) == 0) {
        bit = REQ_PATH;
        lua_pushlstring(L, m ? m->target : "", m ? m->target_len : 0);
    } else if (kl == 7 && memcmp(k, "headers", 7) == 0) {
        bit = REQ_HEADERS;
        push_headers(L, m);
    } else if (kl == 6 && memcmp(k, "client", 6) == 0) {
        bit = REQ_CLIENT;
        push_client_ip(L, p->cur->client);
    } else {
        return 0;
    }
    lua_pushvalue(L, 2);
    lua_pushvalue(L, -2);
    lua_rawset(L, 1);
    p->materialized |= bit;
    return 1;
}

/* Builds the persistent backend tables and the reverse map. */
static void build_backends(struct lb_lua *p)
{
    lua_State *L = p->L;
    lua_createtable(L, p->n, 0); /* all */
    lua_createtable(L, 0, p->n); /* table -> index */
    for (int i = 0; i < p->n; i++) {
        struct lb_target *t = p->t[i];
        lua_createtable(L, 0, 8);
        lua_pushstring(L, t->name);
        lua_setfield(L, -2, "name");
        lua_pushstring(L, t->addr);
        lua_setfield(L, -2, "addr");
        lua_pushinteger(L, t->weight);
        lua_setfield(L, -2, "weight");
        lua_pushinteger(L, i + 1);
        lua_setfield(L, -2, "index");
        lua_pushinteger(L, t->active);
        lua_setfield(L, -2, "active");
        lua_pushnumber(L, t->ewma_ms);
        lua_setfield(L, -2, "ewma_ms");
        lua_pushinteger(L, (lua_Integer)t->errors);
        lua_setfield(L, -2, "errors");
        lua_pushboolean(L, t->healthy);
        lua_setfield(L, -2, "healthy");
        p->cache[i] = (struct lb_lua_cache){t->active, t->ewma_ms, t->errors, t->healthy};
        lua_pushvalue(L, -1);
        lua_pushinteger(L, i);
        lua_rawset(L, -4);
        lua_rawseti(L, -3, i + 1);
    }
    p->ref_rev = luaL_ref(L, LUA_REGISTRYINDEX);
    p->ref_all = luaL_ref(L, LUA_REGISTRYINDEX);
}

static void refresh_backend(struct lb_lua *p, int i, int tbl)
{
    lua_State *L = p->L;
    struct lb_target *t = p->t[i];
    struct lb_lua_cache *c = &p->cache[i];
    if (c->active != t->active) {
        c->active = t->active;
        lua_pushinteger(L, t->active);
        lua_setfield(L, tbl, "active");
    }
    if (c->ewma_ms != t->ewma_ms) {
        c->ewma_ms = t->ewma_ms;
        lua_pushnumber(L, t->ewma_ms);
        lua_setfield(L, tbl, "ewma_ms");
    }
    if (c->errors != t->errors || c->healthy != (int)t->healthy) {
        c->errors = t->errors;
        c->healthy = t->healthy;
        lua_pushinteger(L, (lua_Integer)t->errors);
        lua_setfield(L, tbl, "errors");
        lua_pushboolean(L, t->healthy);
        lua_setfield(L, tbl, "healthy");
    }
}

/* Pushes the candidate list, rebuilding it when the set changed, with every
 * listed backend table refreshed. */
static void push_list(struct lb_lua *p)
{
    lua_State *L = p->L;
    int same = p->list_valid;
    for (int i = 0; i < p->n && same; i++)
        same = p->in_list[i] == (unsigned char)lb_candidate(p->t[i]);
    lua_rawgeti(L, LUA_REGISTRYINDEX, p->ref_all);
    if (!same) {
        lua_createtable(L, p->n, 0);
        p->nlist = 0;
        for (int i = 0; i < p->n; i++) {
            p->in_list[i] = (unsigned char)lb_candidate(p->t[i]);
            if (!p->in_list[i])
                continue;
            lua_rawgeti(L, -2, i + 1);
            lua_rawseti(L, -2, ++p->nlist);
            p->list_idx[p->nlist - 1] = i;
        }
        lua_pushvalue(L, -1);
        lua_rawseti(L, LUA_REGISTRYINDEX, p->ref_list);
        p->list_valid = 1;
    } else {
        lua_rawgeti(L, LUA_REGISTRYINDEX, p->ref_list);
        if ((int)lua_rawlen(L, -1) != p->nlist) {
            /* the policy shortened or grew the list it was given */
            lua_pop(L, 2);
            p->list_valid = 0;
            push_list(p);
            return;
        }
    }
    for (int k = 0; k < p->nlist; k++) {
        lua_rawgeti(L, -2, p->list_idx[k] + 1);
        refresh_backend(p, p->list_idx[k], lua_gettop(L));
        lua_pop(L, 1);
    }
    lua_remove(L, -2); /* all */
}

struct lb_target *lb_lua_pick(struct lb_lua *p, const struct lb_req *req, char *err,
                              size_t errlen)
{
    if (p->resting) {
        if (util_mono_us() - p->rest_since < LB_LUA_REST_US) {
            snprintf(err, errlen, "resting after: %s", p->rest_why);
            return NULL;
        }
        p->resting = 0;
    }
    lua_State *L = p->L;
    int top = lua_gettop(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, p->ref_pick);
    lua_rawgeti(L, LUA_REGISTRYINDEX, p->ref_req);
    push_list(p);
    if (p->nlist == 0) { /* nothing to choose from: no need to ask */
        lua_settop(L, top);
        snprintf(err, errlen, "no candidate backend");
        return NULL;
    }
    p->cur = req;
    p->materialized = 0;
    int rc = policy_host_call(p->h, "pick", 2, 1, LB_LUA_BUDGET, LB_LUA_SECONDS, err, errlen);
    p->cur = NULL;
    if (p->materialized) {
        static const char *const keys[] = {"method", "path", "headers", "client"};
        lua_rawgeti(L, LUA_REGISTRYINDEX, p->ref_req);
        for (int b = 0; b < 4; b++)
            if (p->materialized & (1u << b)) {
                lua_pushnil(L);
                lua_setfield(L, -2, keys[b]);
            }
        lua_pop(L, 1);
    }
    if (rc < 0) {
        lua_settop(L, top);
        if (policy_host_last_limit(p->h) != BUDGET_OK) {
            p->resting = 1;
            p->rest_since = util_mono_us();
            snprintf(p->rest_why, sizeof p->rest_why, "%s", err);
        }
        return NULL;
    }
    struct lb_target *t = NULL;
    int type = lua_type(L, -1), isint = 0;
    if (type == LUA_TTABLE) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, p->ref_rev);
        lua_pushvalue(L, -2);
        if (lua_rawget(L, -2) == LUA_TNUMBER)
            t = p->t[lua_tointeger(L, -1)];
        else
            snprintf(err, errlen, "pick returned a table that is not a backend");
    } else if (type == LUA_TNUMBER && (lua_tointegerx(L, -1, &isint), isint)) {
        /* an index into the list as the policy sees it now (it may have
         * reordered it): look the entry up rather than trusting our order.
         * An integral float (1.0, what arithmetic such as n / 2 * 2 gives)
         * is the same index. */
        lua_Integer i = lua_tointeger(L, -1);
        lua_rawgeti(L, LUA_REGISTRYINDEX, p->ref_rev);
        lua_rawgeti(L, LUA_REGISTRYINDEX, p->ref_list);
        if (i >= 1 && i <= p->nlist && lua_rawgeti(L, -1, i) == LUA_TTABLE &&
            lua_rawget(L, -3) == LUA_TNUMBER)
            t = p->t[lua_tointeger(L, -1)];
        else
            snprintf(err, errlen, "pick returned index %lld, not in 1..%d", (long long)i,
                     p->nlist);
    } else if (type == LUA_TNUMBER) {
        snprintf(err, errlen, "pick returned %g, not an index", (double)lua_tonumber(L, -1));
    } else if (type == LUA_TNIL) {
        snprintf(err, errlen, "pick returned nil");
    } else {
        snprintf(err, errlen, "pick returned a %s", lua_typename(L, type));
    }
    lua_settop(L, top);
    if (t && !lb_candidate(t)) {
        snprintf(err, errlen, "pick returned %s, which is not a candidate now", t->name);
        t = NULL;
    }
    return t;
}

struct lb_lua *lb_lua_new(const char *path, struct lb_target **t, int n,
                          const struct lb_lua *prev, char *err, size_t errlen)
{
    struct lb_lua *p = calloc(1, sizeof *p);
    if (!p) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    p->t = t;
    p->n = n;
    p->in_list = calloc((size_t)n + 1, 1);
    p->list_idx = calloc((size_t)n + 1, sizeof *p->list_idx);
    p->cache = calloc((size_t)n + 1, sizeof *p->cache);
    static const char *const needs[] = {"pick", NULL};
    if (!p->in_list || !p->list_idx || !p->cache) {
        snprintf(err, errlen, "out of memory");
        lb_lua_free(p);
        return NULL;
    }
    p->h = policy_host_open(path, needs, POLICY_MEM_DEFAULT, err, errlen);
    if (!p->h) {
        lb_lua_free(p);
        return NULL;
    }
    if (prev) {
        int rc = policy_migrate(prev->h, p->h, err, errlen);
        if (rc < 0) {
            lb_lua_free(p);
            return NULL;
        }
        p->migrated = rc;
    }
    lua_State *L = p->L = policy_host_state(p->h);
    policy_host_push_module(p->h);
    lua_getfield(L, -1, "pick");
    p->ref_pick = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pop(L, 1);
    /* req: empty table whose fields appear on first read */
    lua_newtable(L);
    lua_createtable(L, 0, 1);
    lua_pushlightuserdata(L, p);
    lua_pushcclosure(L, req_index, 1);
    lua_setfield(L, -2, "__index");
    lua_setmetatable(L, -2);
    p->ref_req = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_newtable(L);
    p->ref_list = luaL_ref(L, LUA_REGISTRYINDEX);
    build_backends(p);
    return p;
}

int lb_lua_migrated(const struct lb_lua *p) { return p->migrated; }

void lb_lua_free(struct lb_lua *p)
{
    if (!p)
        return;
    policy_host_free(p->h);
    free(p->in_list);
    free(p->list_idx);
    free(p->cache);
    free(p);
}

/* ---- lb_lua_ops: the Lua pick with its built-in fallback ------------------ */

struct lb_lua_state {
    struct lb_lua *lua;
    struct lb fallback;
    struct lb_lua_conf conf;
};

static int lua_ops_init(struct lb *lb, char *err, size_t errlen)
{
    const struct lb_lua_conf *conf = lb->conf;
    if (!conf || !conf->path || !conf->fallback) {
        snprintf(err, errlen, "a Lua policy needs a path and a fallback");
        return -1;
    }
    struct lb_lua_state *st = calloc(1, sizeof *st);
    if (!st) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    st->conf = *conf;
    st->conf.prev = NULL;
    const struct lb_lua *prev = conf->prev ? lb_lua_of(conf->prev) : NULL;
    if (lb_init(&st->fallback, conf->fallback, lb->t, lb->n, err, errlen) < 0) {
        free(st);
        return -1;
    }
    st->lua = lb_lua_new(conf->path, lb->t, lb->n, prev, err, errlen);
    if (!st->lua) {
        lb_free(&st->fallback);
        free(st);
        return -1;
    }
    lb->state = st;
    lb->wants_hash = st->fallback.wants_hash;
    return 0;
}

static void lua_ops_update(struct lb *lb)
{
    struct lb_lua_state *st = lb->state;
    if (st->fallback.ops->update)
        st->fallback.ops->update(&st->fallback);
}

static struct lb_target *lua_ops_pick(struct lb *lb, const struct lb_req *req)
{
    struct lb_lua_state *st = lb->state;
    char err[512];
    struct lb_target *t = lb_lua_pick(st->lua, req, err, sizeof err);
    if (t)
        return t;
    /* nil is a fine answer when nothing is left to try */
    int any = 0;
    for (int i = 0; i < lb->n && !any; i++)
        any = lb_candidate(lb->t[i]);
    if (any && st->conf.on_fallback)
        st->conf.on_fallback(st->conf.ud, err);
    return st->fallback.ops->pick(&st->fallback, req);
}

static void lua_ops_free(struct lb *lb)
{
    struct lb_lua_state *st = lb->state;
    if (!st)
        return;
    lb_lua_free(st->lua);
    lb_free(&st->fallback);
    free(st);
}

const struct lb_ops lb_lua_ops = {
    .name = "lua",
    .init = lua_ops_init,
    .update = lua_ops_update,
    .pick = lua_ops_pick,
    .free = lua_ops_free,
};

const struct lb_lua *lb_lua_of(const struct lb *lb)
{
    if (!lb || lb->ops != &lb_lua_ops || !lb->state)
        return NULL;
    return ((const struct lb_lua_state *)lb->state)->lua;
}
