/* budget: instruction and wall-clock limits for user Lua code. See
 * budget.h for the rules. */
#include "budget.h"

#include <lauxlib.h>
#include <stdio.h>

#include "util.h"

const char *budget_message(const struct budget *b, char *buf, size_t n)
{
    const char *what = b->what ? b->what : "policy code";
    if (!b->active) {
        snprintf(buf, n, "Lua code may run only inside a call from the host (a finalizer?)");
        return buf;
    }
    switch (b->expired) {
    case BUDGET_TIME:
        snprintf(buf, n, "%s exceeded its time limit (%.0f ms)", what, b->seconds * 1000.0);
        break;
    case BUDGET_MEMORY:
        snprintf(buf, n, "%s exceeded its memory limit", what);
        break;
    default:
        snprintf(buf, n, "%s exceeded its instruction budget (%ld)", what, b->total);
        break;
    }
    return buf;
}

/* Checks the entry's limits after `steps` more units; 0 while within. */
static int over(struct budget *b, long steps)
{
    if (b->expired)
        return 1;
    if (!b->active)
        return b->strict;
    b->left -= steps;
    if (b->left <= 0)
        b->expired = BUDGET_INSTRUCTIONS;
    else if (b->deadline_us && util_mono_us() > b->deadline_us)
        b->expired = BUDGET_TIME;
    return b->expired != BUDGET_OK;
}

static void hook(lua_State *L, lua_Debug *ar)
{
    struct budget *b = budget_of(L);
    if (!b)
        return;
    int step = lua_gethookcount(L);
    if (!over(b, step)) {
        if (step != BUDGET_STEP) /* a thread left on every-instruction by an earlier entry */
            lua_sethook(L, hook, LUA_MASKCOUNT, BUDGET_STEP);
        return;
    }
    /* From now on this thread fails at every instruction, so no handler
     * can run Lua code to swallow the error. */
    lua_sethook(L, hook, LUA_MASKCOUNT, 1);
    char msg[160];
    budget_message(b, msg, sizeof msg);
    if (lua_getinfo(L, "Sl", ar) && ar->currentline > 0)
        lua_pushfstring(L, "%s:%d: %s", ar->short_src, ar->currentline, msg);
    else
        lua_pushstring(L, msg);
    lua_error(L);
}

void budget_attach(lua_State *L, struct budget *b)
{
    *(struct budget **)lua_getextraspace(L) = b;
    lua_sethook(L, hook, LUA_MASKCOUNT, BUDGET_STEP);
}

void budget_begin(struct budget *b, long instructions, double seconds, const char *what)
{
    b->left = b->total = instructions;
    b->seconds = seconds;
    b->deadline_us = seconds > 0 ? util_mono_us() + (int64_t)(seconds * 1e6) : 0;
    b->what = what;
    b->expired = BUDGET_OK;
    b->active = 1;
}

void budget_end(struct budget *b)
{
    b->active = 0;
    b->expired = BUDGET_OK;
}

void budget_expire(struct budget *b, enum budget_why why)
{
    if (b->active && !b->expired)
        b->expired = why;
}

void budget_charge(lua_State *L, long steps)
{
    struct budget *b = budget_of(L);
    if (!b || !over(b, steps))
        return;
    lua_sethook(L, hook, LUA_MASKCOUNT, 1);
    char msg[160];
    luaL_error(L, "%s", budget_message(b, msg, sizeof msg));
}
