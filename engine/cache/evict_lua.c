#include "evict_lua.h"

#include <lauxlib.h>
#include <lua.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "evict.h"
#include "policy_host.h"
#include "policy_migrate.h"

/* A policy that loops forever must not hang the node: each call gets this
 * many VM instructions (and pattern steps) and this much wall-clock time;
 * the module runs in a policy_host sandbox with a memory limit. */
#define EVICT_LUA_BUDGET 10000000
#define EVICT_LUA_SECONDS 0.25
/* After a call ran into a limit, the fallback chooses alone this long:
 * a policy that always runs out must not cost the limit per eviction. */
#define EVICT_LUA_REST_MS 1000

struct evict_lua {
    struct policy_host *h;
    lua_State *L;
    int choose_ref;
    int migrated; /* migrate() took over a previous policy's state */
    int64_t rest_until_ms;
    char path[1024];
    char last_err[256];
};

struct evict_lua *evict_lua_new(const char *path, const struct evict_lua *prev, char *err,
                                size_t errlen)
{
    struct evict_lua *el = calloc(1, sizeof *el);
    if (!el) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    snprintf(el->path, sizeof el->path, "%s", path);
    static const char *const needs[] = {"choose", NULL};
    el->h = policy_host_open(path, needs, POLICY_MEM_DEFAULT, err, errlen);
    if (!el->h)
        goto fail;
    if (prev) {
        int rc = policy_migrate(prev->h, el->h, err, errlen);
        if (rc < 0)
            goto fail;
        el->migrated = rc;
    }
    el->L = policy_host_state(el->h);
    policy_host_push_module(el->h);
    lua_getfield(el->L, -1, "choose");
    el->choose_ref = luaL_ref(el->L, LUA_REGISTRYINDEX);
    lua_pop(el->L, 1);
    return el;
fail:
    policy_host_free(el->h);
    free(el);
    return NULL;
}

void evict_lua_free(struct evict_lua *el)
{
    if (!el)
        return;
    policy_host_free(el->h);
    free(el);
}

const char *evict_lua_path(const struct evict_lua *el) { return el->path; }

int evict_lua_migrated(const struct evict_lua *el) { return el->migrated; }

static void push_candidate(lua_State *L, const struct evict *ev, struct store *s,
                           struct store_entry *e, int64_t now_ms)
{
    lua_createtable(L, 0, 6);
    lua_pushlstring(L, (const char *)store_key(e), store_klen(e));
    lua_setfield(L, -2, "key");
    lua_pushinteger(L, (lua_Integer)store_entry_size(e));
    lua_setfield(L, -2, "size");
    lua_pushinteger(L, (lua_Integer)store_clock_ms(s, e->atime, now_ms));
    lua_setfield(L, -2, "last_access");
    lua_pushinteger(L, (lua_Integer)store_clock_ms(s, e->ctime, now_ms));
    lua_setfield(L, -2, "inserted");
    lua_pushinteger(L, (lua_Integer)evict_lfu_value(ev, s, e, now_ms));
    lua_setfield(L, -2, "hits");
    int64_t x = store_expire(e);
    lua_pushinteger(L, x ? (lua_Integer)(x > now_ms ? x - now_ms : 0) : -1);
    lua_setfield(L, -2, "ttl");
}

int evict_lua_choose(struct evict_lua *el, const struct evict *ev, struct store *s,
                     struct store_entry **cands, int n, int64_t now_ms, char *err, size_t errlen)
{
    if (el->rest_until_ms > now_ms) {
        snprintf(err, errlen, "resting after: %s", el->last_err);
        return -1;
    }
    lua_State *L = el->L;
    int top = lua_gettop(L);
    lua_createtable(L, n, 0);
    int ctab = lua_gettop(L);
    for (int i = 0; i < n; i++) {
        push_candidate(L, ev, s, cands[i], now_ms);
        lua_rawseti(L, ctab, i + 1);
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, el->choose_ref);
    lua_pushvalue(L, ctab);
    int rc = policy_host_call(el->h, "choose", 1, 1, EVICT_LUA_BUDGET, EVICT_LUA_SECONDS, err,
                              errlen);
    int chosen = -1;
    if (rc < 0 && policy_host_last_limit(el->h) != BUDGET_OK) {
        el->rest_until_ms = now_ms + EVICT_LUA_REST_MS;
        snprintf(el->last_err, sizeof el->last_err, "%s", err);
    }
    if (rc == 0) {
        if (lua_isinteger(L, -1)) {
            lua_Integer i = lua_tointeger(L, -1);
            if (i >= 1 && i <= n)
                chosen = (int)i - 1;
        } else if (lua_istable(L, -1)) {
            for (int i = 0; i < n && chosen < 0; i++) {
                lua_rawgeti(L, ctab, i + 1);
                if (lua_rawequal(L, -1, -2))
                    chosen = i;
                lua_pop(L, 1);
            }
        }
        if (chosen < 0)
            snprintf(err, errlen, "%s: choose() returned %s, not one of the %d candidates or its index",
                     el->path, luaL_typename(L, -1), n);
    }
    lua_settop(L, top);
    return chosen;
}

static int chooser_choose(struct evict_lua *el, const struct evict *ev, struct store *s,
                          struct store_entry **cands, int n, int64_t now_ms, char *err,
                          size_t errlen)
{
    return evict_lua_choose(el, ev, s, cands, n, now_ms, err, errlen);
}

static const char *chooser_name(const struct evict_lua *el) { return el->path; }

static const struct evict_chooser_ops evict_lua_chooser = {
    .choose = chooser_choose,
    .name = chooser_name,
    .free = evict_lua_free,
};

void evict_set_lua(struct evict *ev, struct store *s, struct evict_lua *lua, int64_t now_ms)
{
    evict_set_chooser(ev, s, &evict_lua_chooser, lua, now_ms);
}
