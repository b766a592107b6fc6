/* ctl_host: the blocking helpers of the command line's Lua state (strata
 * status / reload): an HTTP request to an admin endpoint and a sleep. They
 * are added to the command line's own state only; a node's states never
 * have them, so no policy can block a node's loop with them. */
#include "ctl_host.h"

#include <ctype.h>
#include <lauxlib.h>
#include <string.h>
#include <time.h>

#include "buf.h"
#include "httpc.h"
#include "luahost.h"

/* http_request(method, addr, path [, body [, timeout_s [, headers]]])
 * -> status, body, response headers (lower-case name -> value)
 * | nil, message. `headers` is a table of request header fields. Blocking:
 * for the command line only. */
static int host_http_request(lua_State *L)
{
    const char *method = luaL_checkstring(L, 1);
    const char *addr = luaL_checkstring(L, 2);
    const char *path = luaL_checkstring(L, 3);
    size_t blen = 0;
    const char *body = luaL_optlstring(L, 4, "", &blen);
    double timeout = luaL_optnumber(L, 5, 3.0);
    struct buf req_headers;
    buf_init(&req_headers);
    if (lua_istable(L, 6)) {
        lua_pushnil(L);
        while (lua_next(L, 6)) {
            const char *k = lua_tostring(L, -2), *v = lua_tostring(L, -1);
            /* no CR or LF: a header value never splits the request */
            if (k && v && !strpbrk(k, "\r\n:") && !strpbrk(v, "\r\n"))
                buf_printf(&req_headers, "%s: %s\r\n", k, v);
            lua_pop(L, 1);
        }
    }
    buf_append(&req_headers, "", 1);
    struct buf resp, hdrs;
    buf_init(&resp);
    buf_init(&hdrs);
    char err[512];
    int status = httpc_request(method, addr, path, buf_head(&req_headers), body, blen, timeout,
                               &hdrs, &resp, err, sizeof err);
    /* the request may have held a token: leave nothing of it behind */
    memset(req_headers.data, 0, req_headers.cap);
    buf_free(&req_headers);
    if (status < 0) {
        buf_free(&resp);
        buf_free(&hdrs);
        lua_pushnil(L);
        lua_pushstring(L, err);
        return 2;
    }
    lua_pushinteger(L, status);
    lua_pushlstring(L, buf_head(&resp), buf_size(&resp));
    lua_newtable(L);
    const char *p = buf_head(&hdrs), *end = p + buf_size(&hdrs);
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *colon = memchr(p, ':', (size_t)((nl ? nl : end) - p));
        if (!nl || !colon)
            break;
        luaL_Buffer b;
        luaL_buffinit(L, &b);
        for (const char *c = p; c < colon; c++)
            luaL_addchar(&b, (char)tolower((unsigned char)*c));
        luaL_pushresult(&b);
        const char *v = colon + 1;
        while (v < nl && *v == ' ')
            v++;
        lua_pushlstring(L, v, (size_t)(nl - v));
        lua_settable(L, -3);
        p = nl + 1;
    }
    buf_free(&resp);
    buf_free(&hdrs);
    return 3;
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
