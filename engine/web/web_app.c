/* web_app: an app file loaded into a sandboxed, budgeted state of the
 * policy host, with what the contract (docs/web.md) puts in it: `strata`
 * with strata.app(), `json` (lua-cjson, also require("cjson")), the ctx
 * metatable, ctx.cache / ctx.db, and the Lua half of a request
 * (lua/strata/web_app.lua).
 *
 * app:get(pattern, handler) and its siblings check the pattern at once,
 * so a bad one fails the load with the app file's line; after the file
 * has run, its routes become the app's router in declaration order. */
#include <lauxlib.h>
#include <lua5.4/lua-cjson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy_host.h"
#include "web_node.h"

#define APP_MT "strata.web.app"
#define APP_ROUTES "strata.web.routes"

struct lua_embedded {
    const char *module, *path, *source;
    size_t len;
};
extern const struct lua_embedded lua_embedded_modules[];

/* app:get(pattern, handler) and friends: the method mask is the upvalue. */
static int app_route(lua_State *L)
{
    unsigned methods = (unsigned)lua_tointeger(L, lua_upvalueindex(1));
    if (!lua_getmetatable(L, 1))
        return luaL_error(L, "call routes with a colon: app:get(pattern, handler)");
    luaL_getmetatable(L, APP_MT);
    int is_app = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    if (!is_app)
        return luaL_error(L, "call routes with a colon: app:get(pattern, handler)");
    const char *pattern = luaL_checkstring(L, 2);
    luaL_checktype(L, 3, LUA_TFUNCTION);
    char err[512];
    if (web_router_check(pattern, err, sizeof err) < 0)
        return luaL_error(L, "%s", err);
    lua_getfield(L, LUA_REGISTRYINDEX, APP_ROUTES);
    lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
    if (n >= 10000)
        return luaL_error(L, "an app may have at most 10000 routes");
    lua_createtable(L, 3, 0);
    lua_pushinteger(L, (lua_Integer)methods);
    lua_rawseti(L, -2, 1);
    lua_pushvalue(L, 2);
    lua_rawseti(L, -2, 2);
    lua_pushvalue(L, 3);
    lua_rawseti(L, -2, 3);
    lua_rawseti(L, -2, n + 1);
    lua_settop(L, 1);
    return 1; /* chains: app:get(...):post(...) */
}

/* strata.app(): the app object (one per state). */
static int strata_app(lua_State *L)
{
    if (lua_getfield(L, LUA_REGISTRYINDEX, APP_MT ".object") == LUA_TTABLE)
        return 1;
    lua_pop(L, 1);
    lua_newtable(L);
    luaL_getmetatable(L, APP_MT);
    lua_setmetatable(L, -2);
    lua_pushvalue(L, -1);
    lua_setfield(L, LUA_REGISTRYINDEX, APP_MT ".object");
    return 1;
}

static void register_app(lua_State *L)
{
    static const struct {
        const char *name;
        unsigned mask;
    } m[] = {{"get", WEB_GET},       {"post", WEB_POST},     {"put", WEB_PUT},
             {"delete", WEB_DELETE}, {"patch", WEB_PATCH},   {"head", WEB_HEAD},
             {"options", WEB_OPTIONS}, {"any", WEB_ANY}};
    luaL_newmetatable(L, APP_MT);
    lua_createtable(L, 0, 8);
    for (size_t i = 0; i < sizeof m / sizeof m[0]; i++) {
        lua_pushinteger(L, m[i].mask);
        lua_pushcclosure(L, app_route, 1);
        lua_setfield(L, -2, m[i].name);
    }
    lua_setfield(L, -2, "__index");
    lua_pushliteral(L, "strata.app");
    lua_setfield(L, -2, "__name");
    lua_pop(L, 1);
    lua_newtable(L);
    lua_setfield(L, LUA_REGISTRYINDEX, APP_ROUTES);
    lua_createtable(L, 0, 2);
    lua_pushcfunction(L, strata_app);
    lua_setfield(L, -2, "app");
    lua_setglobal(L, "strata");
}

/* json = cjson, and require("cjson") finds it. */
static int open_cjson(lua_State *L)
{
    luaL_requiref(L, "cjson", luaopen_cjson, 0);
    lua_setglobal(L, "json");
    return 0;
}

/* Runs lua/strata/web_app.lua with (cjson, prim) and keeps its functions. */
static int load_half(struct web_app *a, char *err, size_t errlen)
{
    lua_State *L = a->L;
    const struct lua_embedded *m = lua_embedded_modules;
    while (m->module && strcmp(m->module, "strata.web_app") != 0)
        m++;
    if (!m->module) {
        snprintf(err, errlen, "strata.web_app is not built in");
        return -1;
    }
    char name[128];
    snprintf(name, sizeof name, "@%s", m->path);
    if (luaL_loadbufferx(L, m->source, m->len, name, "t") != LUA_OK) {
        snprintf(err, errlen, "%s", lua_tostring(L, -1));
        lua_pop(L, 1);
        return -1;
    }
    lua_getglobal(L, "json");
    lua_getfield(L, LUA_REGISTRYINDEX, "strata.web.prim");
    if (policy_host_call(a->h, "strata.web_app", 2, 1, POLICY_LOAD_BUDGET, POLICY_LOAD_SECONDS,
                         err, errlen) < 0)
        return -1;
    lua_getfield(L, -1, "run");
    a->ref_run = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_getfield(L, -1, "json");
    a->ref_json = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_getfield(L, -1, "cached");
    a->ref_cached = luaL_ref(L, LUA_REGISTRYINDEX);
    /* ctx:json and ctx:cached are methods of ctx like the C ones */
    lua_getfield(L, LUA_REGISTRYINDEX, "strata.web.ctx.methods");
    lua_getfield(L, -2, "json");
    lua_setfield(L, -2, "json");
    lua_getfield(L, -2, "cached");
    lua_setfield(L, -2, "cached");
    lua_pop(L, 2);
    return 0;
}

/* The routes the file declared, in order, into the router. */
static int build_router(struct web_app *a, char *err, size_t errlen)
{
    lua_State *L = a->L;
    lua_getfield(L, LUA_REGISTRYINDEX, APP_ROUTES);
    lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, -1, i);
        lua_rawgeti(L, -1, 1);
        unsigned mask = (unsigned)lua_tointeger(L, -1);
        lua_rawgeti(L, -2, 2);
        const char *pattern = lua_tostring(L, -1);
        lua_rawgeti(L, -3, 3);
        int ref = luaL_ref(L, LUA_REGISTRYINDEX);
        char why[512];
        int rc = web_router_add(&a->router, mask, pattern, ref, why, sizeof why);
        lua_pop(L, 3);
        if (rc < 0) {
            snprintf(err, errlen, "%s: %s", policy_host_path(a->h), why);
            lua_pop(L, 1);
            return -1;
        }
    }
    lua_pop(L, 1);
    return 0;
}

struct web_app *web_app_load(const char *path, int64_t mem_max, char *err, size_t errlen)
{
    struct web_app *a = calloc(1, sizeof *a);
    if (!a) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    web_router_init(&a->router);
    a->ref_run = a->ref_json = a->ref_cached = LUA_NOREF;
    a->h = policy_host_new(path, (size_t)mem_max);
    if (!a->h || !(a->flights = web_flights_new())) {
        snprintf(err, errlen, "%s: out of memory", path);
        goto fail;
    }
    a->L = policy_host_state(a->h);
    lua_State *L = a->L;
    lua_pushcfunction(L, open_cjson);
    if (lua_pcall(L, 0, 0, 0) != LUA_OK) {
        snprintf(err, errlen, "%s: cannot open cjson: %s", path, lua_tostring(L, -1));
        goto fail;
    }
    register_app(L);
    web_req_register(L);
    web_data_register(L);
    web_cached_register(L);
    lua_pushlightuserdata(L, a);
    lua_setfield(L, LUA_REGISTRYINDEX, "strata.web.app.ptr");
    if (load_half(a, err, errlen) < 0)
        goto fail;
    enum policy_stage stage;
    if (policy_host_load(a->h, NULL, &stage, err, errlen) < 0)
        goto fail;
    policy_host_push_module(a->h);
    int ok = 0;
    if (lua_getmetatable(L, -1)) {
        luaL_getmetatable(L, APP_MT);
        ok = lua_rawequal(L, -1, -2);
        lua_pop(L, 2);
    }
    lua_pop(L, 1);
    if (!ok) {
        snprintf(err, errlen, "%s:1: the app file must return the app (local app = "
                 "strata.app() ... return app)", path);
        goto fail;
    }
    if (build_router(a, err, errlen) < 0)
        goto fail;
    return a;
fail:
    web_app_free(a);
    return NULL;
}

void web_app_free(struct web_app *a)
{
    if (!a)
        return;
    if (a->flights)
        web_flights_free(a->L, a->flights);
    web_router_free(&a->router);
    policy_host_free(a->h);
    free(a);
}
