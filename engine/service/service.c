#include <lauxlib.h>
#include <stdio.h>
#include <string.h>

#include "service.h"

/* Pushes cfg[field]; returns its Lua type. The caller pops it. */
static int cfg_push(lua_State *L, int idx, const char *field)
{
    return lua_getfield(L, idx, field);
}

int cfg_string(lua_State *L, int idx, const char *field, const char *def, char *out, size_t outlen,
               char *err, size_t errlen)
{
    int t = cfg_push(L, idx, field);
    int rc = 0;
    if (t == LUA_TNIL) {
        snprintf(out, outlen, "%s", def ? def : "");
    } else if (t == LUA_TSTRING) {
        size_t n;
        const char *s = lua_tolstring(L, -1, &n);
        if (n >= outlen) {
            snprintf(err, errlen, "field '%s' is too long (%zu bytes, limit %zu)", field, n,
                     outlen - 1);
            rc = -1;
        } else {
            memcpy(out, s, n + 1);
        }
    } else {
        snprintf(err, errlen, "field '%s' must be a string, not %s", field, lua_typename(L, t));
        rc = -1;
    }
    lua_pop(L, 1);
    return rc;
}

int cfg_int(lua_State *L, int idx, const char *field, int64_t def, int64_t *out, char *err,
            size_t errlen)
{
    int t = cfg_push(L, idx, field);
    int rc = 0;
    if (t == LUA_TNIL) {
        *out = def;
    } else if (t == LUA_TNUMBER && lua_isinteger(L, -1)) {
        *out = lua_tointeger(L, -1);
    } else if (t == LUA_TNUMBER) {
        lua_Number v = lua_tonumber(L, -1);
        if (v != (lua_Number)(int64_t)v) {
            snprintf(err, errlen, "field '%s' must be an integer", field);
            rc = -1;
        } else {
            *out = (int64_t)v;
        }
    } else {
        snprintf(err, errlen, "field '%s' must be an integer, not %s", field, lua_typename(L, t));
        rc = -1;
    }
    lua_pop(L, 1);
    return rc;
}

int cfg_number(lua_State *L, int idx, const char *field, double def, double *out, char *err,
               size_t errlen)
{
    int t = cfg_push(L, idx, field);
    int rc = 0;
    if (t == LUA_TNIL) {
        *out = def;
    } else if (t == LUA_TNUMBER) {
        *out = lua_tonumber(L, -1);
    } else {
        snprintf(err, errlen, "field '%s' must be a number, not %s", field, lua_typename(L, t));
        rc = -1;
    }
    lua_pop(L, 1);
    return rc;
}

int cfg_bool(lua_State *L, int idx, const char *field, int def, int *out, char *err, size_t errlen)
{
    int t = cfg_push(L, idx, field);
    int rc = 0;
    if (t == LUA_TNIL) {
        *out = def;
    } else if (t == LUA_TBOOLEAN) {
        *out = lua_toboolean(L, -1);
    } else {
        snprintf(err, errlen, "field '%s' must be a boolean, not %s", field, lua_typename(L, t));
        rc = -1;
    }
    lua_pop(L, 1);
    return rc;
}
