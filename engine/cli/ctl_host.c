/* ctl_host: the blocking helpers of the command line's Lua state (strata
 * status / reload): an HTTP request to an admin endpoint and a sleep. They
 * are added to the command line's own state only; a node's states never
 * have them, so no policy can block a node's loop with them. */
#include "ctl_host.h"

#include <lauxlib.h>
#include <time.h>

#include "buf.h"
#include "httpc.h"
#include "luahost.h"

/* http_request(method, addr, path [, body [, timeout_s]]) -> status, body
 * | nil, message. Blocking: for the command line only. */
static int host_http_request(lua_State *L)
{
    const char *method = luaL_checkstring(L, 1);
    const char *addr = luaL_checkstring(L, 2);
    const char *path = luaL_checkstring(L, 3);
    size_t blen = 0;
    const char *body = luaL_optlstring(L, 4, "", &blen);
    double timeout = luaL_optnumber(L, 5, 3.0);
    struct buf resp;
    buf_init(&resp);
    char err[512];
    int status = httpc_request(method, addr, path, body, blen, timeout, &resp, err, sizeof err);
    if (status < 0) {
        buf_free(&resp);
        lua_pushnil(L);
        lua_pushstring(L, err);
        return 2;
    }
    lua_pushinteger(L, status);
    lua_pushlstring(L, buf_head(&resp), buf_size(&resp));
    buf_free(&resp);
    return 2;
}

static int host_sleep(lua_State *L)
{
    double s = luaL_checknumber(L, 1);
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    nanosleep(&ts, NULL);
    return 0;
}

int ctl_host_open(lua_State *L, char *err, size_t errlen)
{
    static const luaL_Reg fns[] = {
        {"http_request", host_http_request},
        {"sleep", host_sleep},
        {NULL, NULL},
    };
    lua_getglobal(L, "require");
    lua_pushliteral(L, "strata.host");
    if (luahost_pcall(L, 1, 1, err, errlen) < 0)
        return -1;
    luaL_setfuncs(L, fns, 0);
    lua_pop(L, 1);
    return 0;
}
