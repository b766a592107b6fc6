/* ctl_host: the blocking helpers of the command line's Lua state (strata
 * status / reload): an HTTP request to an admin endpoint and a sleep. They
 * are added to the command line's own state only; a node's states never
 * have them, so no policy can block a node's loop with them. */
#include "ctl_host.h"

#include <ctype.h>
#include <errno.h>
#include <lauxlib.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "httpc.h"
#include "luahost.h"
#include "util.h"

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

/* Reads what the socket has into b until one whole RESP reply of the
 * simple kinds (+line, -line, :int, $bulk) is there or the time is up.
 * Returns the reply's length (0: not yet), -1 on a reply it does not take. */
static long resp_reply_len(const struct buf *b)
{
    const char *s = buf_head(b);
    size_t n = buf_size(b);
    const char *nl = n ? memchr(s, '\n', n) : NULL;
    if (!nl)
        return 0;
    size_t line = (size_t)(nl - s) + 1;
    if (s[0] == '+' || s[0] == '-' || s[0] == ':')
        return (long)line;
    if (s[0] != '$')
        return -1;
    long len = atol(s + 1);
    if (len < 0)
        return (long)line;
    return n >= line + (size_t)len + 2 ? (long)(line + (size_t)len + 2) : 0;
}

/* resp_call(addr, {args...} [, password [, timeout_s]]) -> reply string,
 * or nil, message (a -ERR reply: nil, its text, "error"). Blocking, one
 * command on a new connection: for the command line only (strata
 * failover speaks to db nodes with it). */
static int host_resp_call(lua_State *L)
{
    const char *addr = luaL_checkstring(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    const char *password = luaL_optstring(L, 3, NULL);
    double timeout = luaL_optnumber(L, 4, 5.0);
    struct sockaddr_storage sa;
    socklen_t salen;
    char err[256];
    if (util_parse_addr(addr, &sa, &salen, err, sizeof err) < 0) {
        lua_pushnil(L);
        lua_pushstring(L, err);
        return 2;
    }
    struct buf req, in;
    buf_init(&req);
    buf_init(&in);
    if (password && password[0])
        buf_printf(&req, "*2\r\n$4\r\nAUTH\r\n$%zu\r\n%s\r\n", strlen(password), password);
    lua_Integer argc = luaL_len(L, 2);
    buf_printf(&req, "*%lld\r\n", (long long)argc);
    for (lua_Integer i = 1; i <= argc; i++) {
        lua_geti(L, 2, i);
        size_t len;
        const char *a = luaL_tolstring(L, -1, &len);
        buf_printf(&req, "$%zu\r\n", len);
        buf_append(&req, a, len);
        buf_append(&req, "\r\n", 2);
        lua_pop(L, 2);
    }
    int fd = socket(sa.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    const char *fail = NULL;
    int64_t deadline = util_now_ms() + (int64_t)(timeout * 1000);
    if (fd >= 0) {
        /* a node cut off the network: connect gives up in time too */
        struct timeval tv = {(time_t)timeout, (suseconds_t)((timeout - (double)(time_t)timeout) * 1e6)};
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    }
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, salen) < 0)
        fail = strerror(errno);
    size_t off = 0;
    while (!fail && off < buf_size(&req)) {
        ssize_t k = write(fd, buf_head(&req) + off, buf_size(&req) - off);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            fail = strerror(errno);
        else
            off += (size_t)k;
    }
    memset(req.data, 0, req.cap); /* it may hold the password */
    buf_free(&req);
    int replies = password && password[0] ? 2 : 1;
    long len = 0;
    while (!fail) {
        len = resp_reply_len(&in);
        if (len < 0) {
            fail = "an answer that is not a simple RESP reply";
            break;
        }
        if (len > 0 && replies == 2) {
            if (buf_head(&in)[0] == '-') {
                break; /* AUTH refused: that is the answer */
            }
            buf_consume(&in, (size_t)len);
            replies = 1;
            continue;
        }
        if (len > 0)
            break;
        int64_t left = deadline - util_now_ms();
        struct pollfd p = {fd, POLLIN, 0};
        if (left <= 0 || poll(&p, 1, (int)left) <= 0) {
            fail = "no answer in time";
            break;
        }
        if (buf_reserve(&in, 4096) < 0) {
            fail = "out of memory";
            break;
        }
        ssize_t k = read(fd, buf_tail(&in), 4096);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0) {
            fail = k == 0 ? "the node closed the connection" : strerror(errno);
            break;
        }
        buf_commit(&in, (size_t)k);
    }
    if (fd >= 0)
        close(fd);
    if (fail) {
        buf_free(&in);
        lua_pushnil(L);
        lua_pushfstring(L, "%s: %s", addr, fail);
        return 2;
    }
    const char *s = buf_head(&in);
    const char *nl = memchr(s, '\r', (size_t)len);
    int nret = 1;
    if (s[0] == '$') {
        const char *body = memchr(s, '\n', (size_t)len) + 1;
        long blen = atol(s + 1);
        if (blen < 0)
            lua_pushnil(L);
        else
            lua_pushlstring(L, body, (size_t)blen);
    } else if (s[0] == '-') {
        lua_pushnil(L);
        lua_pushlstring(L, s + 1, nl ? (size_t)(nl - s - 1) : (size_t)len - 1);
        lua_pushliteral(L, "error");
        nret = 3;
    } else {
        lua_pushlstring(L, s + 1, nl ? (size_t)(nl - s - 1) : (size_t)len - 1);
    }
    buf_free(&in);
    return nret;
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
        {"resp_call", host_resp_call},
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
