/* policy_migrate: hands a Lua policy's M.state to the module replacing it.
 * See policy_migrate.h for the contract. */
#include "policy_migrate.h"

#include <lauxlib.h>
#include <stdio.h>

#include "luahost.h"

/* Raised where the loop runs, so the message names the file and line. */
static void migrate_budget_hook(lua_State *L, lua_Debug *ar)
{
    lua_getinfo(L, "Sl", ar);
    luaL_error(L, "%s:%d: migrate exceeded its instruction budget (%d)", ar->short_src,
               ar->currentline, POLICY_MIGRATE_BUDGET);
}

int policy_migrate(lua_State *from, int from_mod, lua_State *to, int to_mod, const char *path,
                   char *err, size_t errlen)
{
    to_mod = lua_absindex(to, to_mod);
    from_mod = lua_absindex(from, from_mod);
    /* raw reads: a module's metatable must not run outside a protected call */
    lua_pushliteral(to, "migrate");
    if (lua_rawget(to, to_mod) != LUA_TFUNCTION) {
        lua_pop(to, 1);
        return 0;
    }
    lua_pushliteral(from, "state");
    lua_rawget(from, from_mod);
    int rc = luahost_copy_value(from, -1, to, POLICY_MIGRATE_DEPTH);
    lua_pop(from, 1);
    if (rc < 0) {
        lua_pop(to, 2);
        snprintf(err, errlen,
                 "%s: the old policy's state cannot be handed to migrate: more than %d levels "
                 "(or a cycle) or more than 100000 values",
                 path, POLICY_MIGRATE_DEPTH);
        return -1;
    }
    lua_sethook(to, migrate_budget_hook, LUA_MASKCOUNT, POLICY_MIGRATE_BUDGET);
    rc = luahost_pcall(to, 1, 1, err, errlen);
    lua_sethook(to, NULL, 0, 0);
    if (rc < 0)
        return -1;
    if (lua_isnil(to, -1)) {
        lua_pop(to, 1);
    } else {
        lua_pushliteral(to, "state");
        lua_insert(to, -2);
        lua_rawset(to, to_mod);
    }
    return 1;
}
