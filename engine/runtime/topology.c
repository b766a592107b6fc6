#include "topology.h"

#include <lauxlib.h>
#include <stdio.h>
#include <string.h>

#include "budget.h"
#include "luahost.h"
#include "policy_host.h"
#include "service.h"

/* The topology script is user code: it runs with a budget like a policy's
 * (budget.h), generous because it runs once per check, start or reload,
 * and policies it names are checked in sandboxes of their own with their
 * own budgets (strata.host.check_policy). */
#define TOPOLOGY_BUDGET 500000000L
#define TOPOLOGY_SECONDS 20.0

/* Pushes the strata.topology module table, after giving strata.host the
 * policy checker (policy_host.h) that the DSL calls for each policy file. */
static int push_module(lua_State *L, char *err, size_t errlen)
{
    lua_getglobal(L, "require");
    lua_pushstring(L, "strata.host");
    if (luahost_pcall(L, 1, 1, err, errlen) < 0)
        return -1;
    lua_pushcfunction(L, policy_host_check_lua);
    lua_setfield(L, -2, "check_policy");
    lua_pop(L, 1);
    lua_getglobal(L, "require");
    lua_pushstring(L, "strata.topology");
    return luahost_pcall(L, 1, 1, err, errlen);
}

/* Every service of every node through service_validate: the kinds' own
 * readers decide ranges and defaults, after the DSL has checked structure,
 * references and ports. */
static int validate_services(lua_State *L, int topo, char *err, size_t errlen)
{
    int base = lua_gettop(L), rc = 0;
    lua_getfield(L, topo, "nodes");
    lua_Integer nn = (lua_Integer)lua_rawlen(L, -1);
    for (lua_Integer i = 1; i <= nn && rc == 0; i++) {
        lua_rawgeti(L, base + 1, i);
        lua_getfield(L, -1, "services");
        lua_Integer ns = (lua_Integer)lua_rawlen(L, -1);
        for (lua_Integer j = 1; j <= ns && rc == 0; j++) {
            lua_rawgeti(L, -1, j);
            rc = service_validate(L, -1, err, errlen);
            lua_pop(L, 1);
        }
        lua_pop(L, 2);
    }
    lua_settop(L, base);
    return rc;
}

/* A kind's message carries its constructor's file:line; move it to the line
 * of the field the message is about (strata.topology.at_field). */
static void point_at_field(lua_State *L, char *err, size_t errlen)
{
    char why[64];
    int top = lua_gettop(L);
    if (push_module(L, why, sizeof why) == 0) {
        lua_getfield(L, -1, "at_field");
        lua_pushstring(L, err);
        if (luahost_pcall(L, 1, 1, why, sizeof why) == 0 && lua_isstring(L, -1))
            snprintf(err, errlen, "%s", lua_tostring(L, -1));
    }
    lua_settop(L, top);
}

int topology_load(lua_State *L, const char *path, char *err, size_t errlen)
{
    if (push_module(L, err, errlen) < 0)
        return -1;
    lua_getfield(L, -1, "load");
    lua_remove(L, -2);
    lua_pushstring(L, path);
    struct budget *b = budget_of(L);
    if (b)
        budget_begin(b, TOPOLOGY_BUDGET, TOPOLOGY_SECONDS, "the topology script");
    int rc = luahost_pcall(L, 1, 2, err, errlen);
    if (b)
        budget_end(b);
    if (rc < 0)
        return -1;
    if (lua_isnil(L, -2)) {
        snprintf(err, errlen, "%s", lua_isstring(L, -1) ? lua_tostring(L, -1) : "invalid topology");
        lua_pop(L, 2);
        return -1;
    }
    lua_pop(L, 1);
    if (validate_services(L, lua_gettop(L), err, errlen) < 0) {
        lua_pop(L, 1);
        point_at_field(L, err, errlen);
        return -1;
    }
    return 0;
}

int topology_describe(lua_State *L, int idx, struct buf *out, char *err, size_t errlen)
{
    idx = lua_absindex(L, idx);
    if (push_module(L, err, errlen) < 0)
        return -1;
    lua_getfield(L, -1, "describe");
    lua_remove(L, -2);
    lua_pushvalue(L, idx);
    if (luahost_pcall(L, 1, 1, err, errlen) < 0)
        return -1;
    size_t n;
    const char *s = lua_tolstring(L, -1, &n);
    int rc = s ? buf_append(out, s, n) : -1;
    lua_pop(L, 1);
    return rc;
}

int topology_has_node(lua_State *L, int idx, const char *name)
{
    idx = lua_absindex(L, idx);
    int found = 0;
    lua_getfield(L, idx, "nodes");
    lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
    for (lua_Integer i = 1; i <= n && !found; i++) {
        lua_rawgeti(L, -1, i);
        lua_getfield(L, -1, "name");
        found = lua_isstring(L, -1) && strcmp(lua_tostring(L, -1), name) == 0;
        lua_pop(L, 2);
    }
    lua_pop(L, 1);
    return found;
}
