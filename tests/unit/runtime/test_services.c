/* service_validate: the one decision whether a normalized service config
 * can run, made by each kind's own config reader. */
#include <lauxlib.h>
#include <string.h>

#include "luahost.h"
#include "service.h"
#include "tap.h"

/* Validates the table `return { ... }` given as Lua source. */
static int validate(lua_State *L, const char *table, char *err, size_t errlen)
{
    char src[1024];
    err[0] = 0;
    snprintf(src, sizeof src, "return %s", table);
    if (luaL_loadstring(L, src) != LUA_OK || lua_pcall(L, 0, 1, 0) != LUA_OK) {
        snprintf(err, errlen, "bad test table: %s", lua_tostring(L, -1));
        lua_pop(L, 1);
        return -2;
    }
    int top = lua_gettop(L);
    int rc = service_validate(L, -1, err, errlen);
    if (lua_gettop(L) != top)
        snprintf(err, errlen, "stack not balanced: %d -> %d", top, lua_gettop(L));
    lua_pop(L, 1);
    return rc;
}

#define BAL "kind = 'balancer', where = 't.lua:7', node = 'lb', listen = '127.0.0.1:1', " \
            "backends = { { addr = '127.0.0.1:2' } }"
#define CACHE "kind = 'cache', where = 't.lua:3', node = 'c1', listen = '127.0.0.1:1'"

int main(void)
{
    char err[1024];
    lua_State *L = luahost_new(NULL);
    ok(L != NULL, "state created");

    is_int(validate(L, "{ " BAL " }", err, sizeof err), 0, "a plain balancer (%s)", err);
    is_int(validate(L, "{ " BAL ", retries = 15 }", err, sizeof err), 0, "retries 15 (%s)", err);
    ok(validate(L, "{ " BAL ", retries = 16 }", err, sizeof err) < 0, "retries 16 refused");
    is_str(err, "t.lua:7: balancer lb: retries must be in 0..15, not 16", "with file:line");
    ok(validate(L, "{ " BAL ", health = { interval = 0 } }", err, sizeof err) < 0,
       "a zero interval is refused");
    is_str(err, "t.lua:7: balancer lb: health interval must be positive, not 0", "message");
    is_int(validate(L, "{ " BAL ", health = { rise = 1000, fall = 1 } }", err, sizeof err), 0,
           "rise 1000, fall 1 (%s)", err);
    ok(validate(L, "{ " BAL ", max_header_size = 255 }", err, sizeof err) < 0 &&
           strstr(err, "max_header_size must be in 256..1048576 bytes, not 255"),
       "max_header_size below its range (%s)", err);
    ok(validate(L, "{ " BAL ", fallback = 'lua' }", err, sizeof err) < 0 &&
           strstr(err, "fallback must be a built-in policy"),
       "fallback names a built-in (%s)", err);

    is_int(validate(L, "{ " CACHE ", eviction_samples = 64 }", err, sizeof err), 0,
           "eviction_samples 64 (%s)", err);
    ok(validate(L, "{ " CACHE ", eviction_samples = 0 }", err, sizeof err) < 0, "0 refused");
    is_str(err, "t.lua:3: cache c1: eviction_samples must be in 1..64, not 0", "message");

    is_int(validate(L, "{ kind = 'db', where = 't.lua:1', node = 'd1', listen = '127.0.0.1:1' }",
                    err, sizeof err),
           0, "a db primary (%s)", err);
    ok(validate(L, "{ kind = 'db', where = 't.lua:1', node = 'd2', role = 'replica' }", err,
                sizeof err) < 0 &&
           strcmp(err, "t.lua:1: db d2: a replica needs replica_of (the node it follows)") == 0,
       "a db replica needs the node it follows (%s)", err);
    ok(validate(L, "{ kind = 'web', where = 't.lua:9', node = 'w1', workers = 0 }", err,
                sizeof err) < 0,
       "web workers 0 refused");
    is_str(err, "t.lua:9: web w1: workers must be in 1..64, not 0", "web message");

    luahost_close(L);
    return tap_done();
}
