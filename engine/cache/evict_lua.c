#include "evict_lua.h"

#include <lauxlib.h>
#include <lua.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "evict.h"
#include "luahost.h"
#include "policy_migrate.h"

/* A policy that loops forever must not hang the node: each call gets this
 * many VM instructions (checked every 1000). */
#define EVICT_LUA_BUDGET 10000000

struct evict_lua {
    lua_State *L;
    int module_ref;
    int migrated; /* migrate() took over a previous policy's state */
    char path[1024];
};

static void budget_hook(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    int *left = *(int **)lua_getextraspace(L);
    if (left && (*left -= 1000) <= 0)
        luaL_error(L, "eviction policy ran past its instruction budget");
}

struct evict_lua *evict_lua_new(const char *path, const struct evict_lua *prev, char *err,
                                size_t errlen)
{
    struct evict_lua *el = calloc(1, sizeof *el);
    if (!el) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    snprintf(el->path, sizeof el->path, "%s", path);
    char dir[1024];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash)
        *slash = 0;
    el->L = luahost_new(slash ? dir : NULL);
    if (!el->L) {
        free(el);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    *(int **)lua_getextraspace(el->L) = NULL;
    lua_State *L = el->L;
    if (luahost_load_module(L, path, err, errlen) < 0)
        goto fail;
    if (!luahost_has_function(L, -1, "choose")) {
        snprintf(err, errlen, "%s: the policy module has no choose(candidates) function", path);
        goto fail;
    }
    lua_getfield(L, -1, "validate");
    if (lua_isfunction(L, -1)) {
        if (luahost_pcall(L, 0, 1, err, errlen) < 0)
            goto fail;
        /* validate() may also say no by returning false, "why". */
        if (lua_isboolean(L, -1) && !lua_toboolean(L, -1)) {
            snprintf(err, errlen, "%s: validate() rejected the policy", path);
            goto fail;
        }
    }
    lua_pop(L, 1);
    if (prev) {
        lua_rawgeti(prev->L, LUA_REGISTRYINDEX, prev->module_ref);
        int rc = policy_migrate(prev->L, -1, L, -1, path, err, errlen);
        lua_pop(prev->L, 1);
        if (rc < 0)
            goto fail;
        el->migrated = rc;
    }
    el->module_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return el;
fail:
    luahost_close(el->L);
    free(el);
    return NULL;
}

void evict_lua_free(struct evict_lua *el)
{
    if (!el)
        return;
    luahost_close(el->L);
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
    lua_State *L = el->L;
    int top = lua_gettop(L);
    lua_createtable(L, n, 0);
    int ctab = lua_gettop(L);
    for (int i = 0; i < n; i++) {
        push_candidate(L, ev, s, cands[i], now_ms);
        lua_rawseti(L, ctab, i + 1);
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, el->module_ref);
    lua_getfield(L, -1, "choose");
    lua_remove(L, -2);
    lua_pushvalue(L, ctab);
    int budget = EVICT_LUA_BUDGET;
    *(int **)lua_getextraspace(L) = &budget;
    lua_sethook(L, budget_hook, LUA_MASKCOUNT, 1000);
    int rc = luahost_pcall(L, 1, 1, err, errlen);
    lua_sethook(L, NULL, 0, 0);
    *(int **)lua_getextraspace(L) = NULL;
    int chosen = -1;
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
