#include "luahost.h"

#include <lauxlib.h>
#include <limits.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "budget.h"
#include "log.h"
#include "pattern.h"
#include "util.h"

struct lua_embedded {
    const char *module, *path, *source;
    size_t len;
};
extern const struct lua_embedded lua_embedded_modules[];

/* package.searchers entry: finds modules compiled into the binary. */
static int embedded_searcher(lua_State *L)
{
    const char *name = luaL_checkstring(L, 1);
    for (const struct lua_embedded *m = lua_embedded_modules; m->module; m++) {
        if (strcmp(m->module, name) != 0)
            continue;
        char chunk[256];
        snprintf(chunk, sizeof chunk, "@%s", m->path);
        if (luaL_loadbufferx(L, m->source, m->len, chunk, "t") != LUA_OK)
            return lua_error(L);
        lua_pushstring(L, m->path);
        return 2;
    }
    lua_pushfstring(L, "\n\tno embedded module '%s'", name);
    return 1;
}

/* strata.host: the few engine facilities the Lua side needs, so sizes and
 * durations parse the same way in topologies and in commands. */
static int host_parse_size(lua_State *L)
{
    uint64_t v;
    if (util_parse_size(luaL_checkstring(L, 1), &v) < 0 || v > (uint64_t)LUA_MAXINTEGER)
        return 0;
    lua_pushinteger(L, (lua_Integer)v);
    return 1;
}

static int host_parse_duration(lua_State *L)
{
    double v;
    if (util_parse_duration(luaL_checkstring(L, 1), &v) < 0)
        return 0;
    lua_pushnumber(L, v);
    return 1;
}

static int host_realpath(lua_State *L)
{
    char out[PATH_MAX];
    if (!realpath(luaL_checkstring(L, 1), out))
        return 0;
    lua_pushstring(L, out);
    return 1;
}

static int host_is_file(lua_State *L)
{
    struct stat st;
    lua_pushboolean(L, stat(luaL_checkstring(L, 1), &st) == 0 && S_ISREG(st.st_mode));
    return 1;
}

static int host_is_dir(lua_State *L)
{
    struct stat st;
    lua_pushboolean(L, stat(luaL_checkstring(L, 1), &st) == 0 && S_ISDIR(st.st_mode));
    return 1;
}

static int host_isatty(lua_State *L)
{
    lua_pushboolean(L, isatty((int)luaL_checkinteger(L, 1)));
    return 1;
}

static int host_monotime(lua_State *L)
{
    lua_pushnumber(L, (double)util_mono_us() / 1e6);
    return 1;
}

static int luaopen_strata_host(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"parse_size", host_parse_size}, {"parse_duration", host_parse_duration},
        {"realpath", host_realpath},     {"is_file", host_is_file},
        {"is_dir", host_is_dir},         {"isatty", host_isatty},
        {"monotime", host_monotime},     {NULL, NULL},
    };
    luaL_newlib(L, fns);
    lua_pushstring(L, STRATA_VERSION);
    lua_setfield(L, -2, "version");
    return 1;
}

/* load/loadfile/dofile that accept text only: the original is upvalue 1,
 * the mode argument's position upvalue 2. */
static int text_only(lua_State *L)
{
    int at = (int)lua_tointeger(L, lua_upvalueindex(2));
    int n = lua_gettop(L);
    if (at) {
        if (n < at) {
            lua_settop(L, at);
            n = at;
        }
        lua_pushliteral(L, "t");
        lua_replace(L, at);
    }
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, n, LUA_MULTRET);
    return lua_gettop(L);
}

static int text_dofile(lua_State *L)
{
    const char *f = luaL_optstring(L, 1, NULL);
    lua_settop(L, 1);
    if (luaL_loadfilex(L, f, "t") != LUA_OK)
        return lua_error(L);
    lua_call(L, 0, LUA_MULTRET);
    return lua_gettop(L) - 1;
}

/* package.searchers' Lua-file searcher, text only. */
static int text_searcher(lua_State *L)
{
    const char *name = luaL_checkstring(L, 1);
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "searchpath");
    lua_pushstring(L, name);
    lua_getfield(L, -3, "path");
    lua_call(L, 2, 2);
    if (lua_isnil(L, -2))
        return 1; /* the "no file" message */
    const char *file = lua_tostring(L, -2);
    if (luaL_loadfilex(L, file, "t") != LUA_OK)
        return luaL_error(L, "error loading module '%s' from file '%s': %s", name, file,
                          lua_tostring(L, -1));
    lua_pushstring(L, file);
    return 2;
}

lua_State *luahost_new(const char *search_dir)
{
    lua_State *L = luaL_newstate();
    if (!L)
        return NULL;
    luaL_openlibs(L);
    /* User code runs here too (the topology script): text chunks only, a
     * budget on the entries that run it (topology_load), bounded patterns. */
    static const struct {
        const char *name;
        int mode_at;
    } loaders[] = {{"load", 3}, {"loadfile", 2}};
    for (size_t i = 0; i < sizeof loaders / sizeof loaders[0]; i++) {
        lua_getglobal(L, loaders[i].name);
        lua_pushinteger(L, loaders[i].mode_at);
        lua_pushcclosure(L, text_only, 2);
        lua_setglobal(L, loaders[i].name);
    }
    lua_pushcfunction(L, text_dofile);
    lua_setglobal(L, "dofile");
    lua_getglobal(L, LUA_STRLIBNAME);
    lua_pushnil(L);
    lua_setfield(L, -2, "dump");
    lua_pop(L, 1);
    pattern_open(L);
    struct budget *b = lua_newuserdatauv(L, sizeof *b, 0);
    memset(b, 0, sizeof *b);
    lua_setfield(L, LUA_REGISTRYINDEX, "strata.budget");
    budget_attach(L, b);
    /* Put the embedded searcher right after the preload searcher, so the
     * engine's own modules cannot be shadowed by files in the working dir. */
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "searchers");
    lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
    for (lua_Integer i = n; i >= 2; i--) {
        lua_rawgeti(L, -1, i);
        lua_rawseti(L, -2, i + 1);
    }
    lua_pushcfunction(L, embedded_searcher);
    lua_rawseti(L, -2, 2);
    lua_pushcfunction(L, text_searcher); /* replaces the stock Lua-file searcher */
    lua_rawseti(L, -2, 3);
    lua_pop(L, 1);
    luaL_getsubtable(L, -1, "preload");
    lua_pushcfunction(L, luaopen_strata_host);
    lua_setfield(L, -2, "strata.host");
    lua_pop(L, 1);
    if (search_dir && *search_dir) {
        lua_getfield(L, -1, "path");
        lua_pushfstring(L, "%s/?.lua;%s/?/init.lua;%s", search_dir, search_dir,
                        lua_tostring(L, -1));
        lua_setfield(L, -3, "path");
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    return L;
}

void luahost_close(lua_State *L)
{
    if (L)
        lua_close(L);
}

static int traceback_handler(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    if (!msg) {
        if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
            msg = lua_tostring(L, -1);
        else
            msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    }
    luaL_traceback(L, L, msg, 1);
    return 1;
}

int luahost_pcall(lua_State *L, int nargs, int nresults, char *err, size_t errlen)
{
    int base = lua_gettop(L) - nargs;
    lua_pushcfunction(L, traceback_handler);
    lua_insert(L, base);
    int rc = lua_pcall(L, nargs, nresults, base);
    lua_remove(L, base);
    if (rc == LUA_OK)
        return 0;
    const char *full = lua_tostring(L, -1);
    if (!full)
        full = "(unknown Lua error)";
    const char *nl = strchr(full, '\n');
    size_t n = nl ? (size_t)(nl - full) : strlen(full);
    if (err && errlen) {
        if (n >= errlen)
            n = errlen - 1;
        memcpy(err, full, n);
        err[n] = 0;
    }
    log_debug("lua error: %s", full);
    lua_pop(L, 1);
    return -1;
}

int luahost_load_module(lua_State *L, const char *path, char *err, size_t errlen)
{
    if (luaL_loadfilex(L, path, "t") != LUA_OK) {
        snprintf(err, errlen, "%s", lua_tostring(L, -1));
        lua_pop(L, 1);
        return -1;
    }
    if (luahost_pcall(L, 0, 1, err, errlen) < 0)
        return -1;
    if (!lua_istable(L, -1)) {
        snprintf(err, errlen, "%s:1: policy module must return a table, not %s", path,
                 luaL_typename(L, -1));
        lua_pop(L, 1);
        return -1;
    }
    return 0;
}

static int file_exists(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

int luahost_resolve_path(const char *topology_path, const char *path, char *out, size_t outlen)
{
    char cand[PATH_MAX];
    if (path[0] == '/') {
        snprintf(cand, sizeof cand, "%s", path);
    } else {
        const char *slash = topology_path ? strrchr(topology_path, '/') : NULL;
        if (slash) {
            /* beside the topology only: never the working directory */
            snprintf(cand, sizeof cand, "%.*s/%s", (int)(slash - topology_path), topology_path,
                     path);
        } else {
            snprintf(cand, sizeof cand, "%s", path);
        }
    }
    if (!file_exists(cand))
        return -1;
    char real[PATH_MAX];
    if (!realpath(cand, real))
        return -1;
    if (strlen(real) >= outlen)
        return -1;
    strcpy(out, real);
    return 0;
}

static int copy_value(lua_State *from, int idx, lua_State *to, int depth, long *budget)
{
    if (!lua_checkstack(to, 3) || --*budget < 0) {
        lua_pushnil(to);
        return -1;
    }
    switch (lua_type(from, idx)) {
    case LUA_TBOOLEAN:
        lua_pushboolean(to, lua_toboolean(from, idx));
        return 0;
    case LUA_TNUMBER:
        if (lua_isinteger(from, idx))
            lua_pushinteger(to, lua_tointeger(from, idx));
        else
            lua_pushnumber(to, lua_tonumber(from, idx));
        return 0;
    case LUA_TSTRING: {
        size_t n;
        const char *s = lua_tolstring(from, idx, &n);
        lua_pushlstring(to, s, n);
        return 0;
    }
    case LUA_TTABLE: {
        if (depth <= 0) {
            lua_pushnil(to);
            return -1;
        }
        int rc = 0;
        idx = lua_absindex(from, idx);
        lua_newtable(to);
        lua_checkstack(from, 3);
        lua_pushnil(from);
        while (lua_next(from, idx)) {
            int kt = lua_type(from, -2), vt = lua_type(from, -1);
            int plain = vt != LUA_TFUNCTION && vt != LUA_TUSERDATA && vt != LUA_TTHREAD &&
                        vt != LUA_TLIGHTUSERDATA && (kt == LUA_TSTRING || kt == LUA_TNUMBER ||
                                                     kt == LUA_TBOOLEAN);
            if (plain) {
                rc |= copy_value(from, -2, to, depth - 1, budget);
                rc |= copy_value(from, -1, to, depth - 1, budget);
                if (lua_isnil(to, -2))
                    lua_pop(to, 2);
                else
                    lua_rawset(to, -3);
            }
            lua_pop(from, 1);
        }
        return rc;
    }
    default:
        lua_pushnil(to);
        return 0;
    }
}

int luahost_copy_value(lua_State *from, int idx, lua_State *to, int max_depth)
{
    long budget = 100000;
    return copy_value(from, idx, to, max_depth, &budget);
}

int luahost_has_function(lua_State *L, int idx, const char *fn)
{
    int t = lua_getfield(L, idx, fn);
    lua_pop(L, 1);
    return t == LUA_TFUNCTION;
}
