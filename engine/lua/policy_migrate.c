/* policy_migrate: hands a Lua policy's M.state to the module replacing it.
 * See policy_migrate.h for the contract. */
#include "policy_migrate.h"

#include <lauxlib.h>
#include <stdio.h>

#include "luahost.h"

struct copy_job {
    lua_State *from; /* the old state, its M.state on top */
    int rc;
};

/* Runs in the new state, protected: an allocation past its memory limit
 * fails the copy, not the node. */
static int copy_thunk(lua_State *L)
{
    struct copy_job *job = lua_touserdata(L, 1);
    job->rc = luahost_copy_value(job->from, -1, L, POLICY_MIGRATE_DEPTH);
    return 1;
}

int policy_migrate(struct policy_host *from, struct policy_host *to, char *err, size_t errlen)
{
    lua_State *F = policy_host_state(from), *T = policy_host_state(to);
    int top = lua_gettop(T), ftop = lua_gettop(F);
    policy_host_push_module(to);
    /* raw reads: a module's metatable must not run outside a protected call */
    lua_pushliteral(T, "migrate");
    if (lua_rawget(T, -2) != LUA_TFUNCTION) {
        lua_settop(T, top);
        return 0;
    }
    policy_host_push_module(from);
    lua_pushliteral(F, "state");
    lua_rawget(F, -2);
    struct copy_job job = {F, 0};
    lua_pushcfunction(T, copy_thunk);
    lua_pushlightuserdata(T, &job);
    int prc = lua_pcall(T, 1, 1, 0);
    lua_settop(F, ftop);
    if (prc != LUA_OK || job.rc < 0) {
        lua_settop(T, top);
        snprintf(err, errlen,
                 "%s: the old policy's state cannot be handed to migrate: more than %d levels "
                 "(or a cycle), more than 100000 values, or more than the memory limit",
                 policy_host_path(to), POLICY_MIGRATE_DEPTH);
        return -1;
    }
    if (policy_host_call(to, "migrate", 1, 1, POLICY_MIGRATE_BUDGET, POLICY_LOAD_SECONDS, err,
                         errlen) < 0) {
        lua_settop(T, top);
        return -1;
    }
    if (!lua_isnil(T, -1)) {
        lua_pushliteral(T, "state");
        lua_insert(T, -2);
        lua_rawset(T, -3);
    }
    lua_settop(T, top);
    return 1;
}
