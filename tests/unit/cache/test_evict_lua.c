/* evict_lua: Lua eviction policies across reloads -- migrate(old_state)
 * carries M.state over, a module without it starts fresh, and a migrate
 * that fails rejects the new module while the old one keeps its state.
 *
 * The policies below return as victim index the number of choices they
 * made so far (M.state.n), so which candidate is chosen shows the state. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "evict.h"
#include "evict_lua.h"
#include "store.h"
#include "tap.h"

#define NCAND 20

static char dir[] = "/tmp/test_evict_lua.XXXXXX";
static struct store s;
static struct evict ev;
static struct store_entry *cands[NCAND];
static const int64_t now = 1000000;

static const char *policy(const char *name, const char *src)
{
    static char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    fputs(src, f);
    fclose(f);
    return path;
}

/* The index choose() picked, 1-based (0 when it failed). */
static int choose(struct evict_lua *el)
{
    char err[256];
    int i = evict_lua_choose(el, &ev, &s, cands, NCAND, now, err, sizeof err);
    if (i < 0)
        printf("# choose failed: %s\n", err);
    return i + 1;
}

#define COUNTING_CHOOSE                                                                   \
    "function M.choose(c)\n"                                                              \
    "  M.state.n = M.state.n + 1\n"                                                       \
    "  return M.state.n\n"                                                                \
    "end\n"

int main(void)
{
    if (!mkdtemp(dir))
        return 1;
    store_init(&s, 42, now);
    evict_init(&ev);
    for (int i = 0; i < NCAND; i++) {
        char k[16];
        int n = snprintf(k, sizeof k, "k%d", i);
        cands[i] = store_insert(&s, k, (size_t)n, "v", 1, 0, now);
    }
    char err[512];

    struct evict_lua *v1 = evict_lua_new(policy("v1.lua",
                                                "local M = { state = { n = 0, name = 'v1',\n"
                                                "  nested = { list = { 1, 2, 3 } } } }\n"
                                                "M.state.fn = function() end\n" COUNTING_CHOOSE
                                                "return M\n"),
                                         NULL, err, sizeof err);
    ok(v1 != NULL, "v1 loads");
    ok(!evict_lua_migrated(v1), "a first load migrates nothing");
    is_int(choose(v1), 1, "v1 counts its choices in M.state");
    is_int(choose(v1), 2, "v1 second choice");
    is_int(choose(v1), 3, "v1 third choice");

    /* migrate returns the state to keep */
    struct evict_lua *v2 = evict_lua_new(
        policy("v2.lua", "local M = { state = { n = 100 } }\n"
                         "function M.migrate(old)\n"
                         "  assert(old.name == 'v1' and old.n == 3)\n"
                         "  assert(#old.nested.list == 3 and old.nested.list[3] == 3)\n"
                         "  assert(old.fn == nil, 'functions are left out')\n"
                         "  old.name = 'v2'\n"
                         "  return old\n"
                         "end\n" COUNTING_CHOOSE "return M\n"),
        v1, err, sizeof err);
    ok(v2 != NULL, "v2 with migrate loads over v1%s%s", v2 ? "" : ": ", v2 ? "" : err);
    ok(v2 && evict_lua_migrated(v2), "v2 took over v1's state");
    is_int(choose(v2), 4, "the count goes on from v1's");
    is_int(choose(v1), 4, "v1's own state was copied, not shared");

    /* migrate that sets M.state itself and returns nothing */
    struct evict_lua *v3 = evict_lua_new(
        policy("v3.lua", "local M = { state = { n = 0 } }\n"
                         "function M.migrate(old) M.state.n = old.n + 10 end\n"
                         COUNTING_CHOOSE "return M\n"),
        v2, err, sizeof err);
    ok(v3 != NULL, "v3 loads");
    is_int(choose(v3), 15, "migrate may fill M.state in place (4 + 10, then +1)");

    /* no migrate: a fresh start */
    struct evict_lua *v4 = evict_lua_new(
        policy("v4.lua", "local M = { state = { n = 0 } }\n" COUNTING_CHOOSE "return M\n"), v3,
        err, sizeof err);
    ok(v4 != NULL, "v4 without migrate loads");
    ok(v4 && !evict_lua_migrated(v4), "and migrates nothing");
    is_int(choose(v4), 1, "v4 starts from its own state");

    /* a failing migrate rejects the module with file:line */
    struct evict_lua *bad = evict_lua_new(
        policy("bad.lua", "local M = { state = {} }\n"
                          "function M.migrate(old)\n"
                          "  error('cannot read version ' .. tostring(old.version))\n"
                          "end\n" COUNTING_CHOOSE "return M\n"),
        v3, err, sizeof err);
    ok(bad == NULL, "a migrate that raises rejects the module");
    ok(strstr(err, "bad.lua:3:") && strstr(err, "cannot read version nil"),
       "the error says file:line: %s", err);
    is_int(choose(v3), 16, "the running module keeps serving with its state");

    struct evict_lua *spin = evict_lua_new(
        policy("spin.lua", "local M = {}\n"
                           "function M.migrate() while true do end end\n"
                           "function M.choose() return 1 end\nreturn M\n"),
        v3, err, sizeof err);
    /* migrate runs under the load limits, whose wall clock a test cannot
     * widen: on a loaded machine it may stop the loop before the budget */
    ok(spin == NULL && strstr(err, "spin.lua:2:") &&
           (strstr(err, "instruction budget") || strstr(err, "time limit")),
       "a migrate that never ends is stopped: %s", err);

    /* a state that cannot be copied (a cycle) is refused, not truncated */
    struct evict_lua *cyc = evict_lua_new(
        policy("cyc.lua", "local M = { state = { n = 0 } }\n"
                          "M.state.self = M.state\n" COUNTING_CHOOSE "return M\n"),
        NULL, err, sizeof err);
    ok(cyc != NULL, "a module may keep a cyclic state");
    struct evict_lua *after = evict_lua_new(
        policy("after.lua", "local M = {}\nfunction M.migrate(old) return old end\n"
                            "function M.choose() return 1 end\nreturn M\n"),
        cyc, err, sizeof err);
    ok(after == NULL && strstr(err, "after.lua") && strstr(err, "cannot be handed"),
       "but it cannot be migrated: %s", err);

    /* an old module without M.state hands over nil; migrate's return
     * value becomes the state */
    struct evict_lua *plain = evict_lua_new(
        policy("plain.lua", "local M = {}\nfunction M.choose() return 1 end\nreturn M\n"), NULL,
        err, sizeof err);
    struct evict_lua *fresh = evict_lua_new(policy("fresh.lua",
                                                   "local M = {}\n"
                                                   "function M.migrate(old)\n"
                                                   "  assert(old == nil)\n"
                                                   "  return { n = 7 }\n"
                                                   "end\n" COUNTING_CHOOSE "return M\n"),
                                            plain, err, sizeof err);
    ok(fresh && evict_lua_migrated(fresh), "migrate runs with nil for a module without state");
    is_int(fresh ? choose(fresh) : 0, 8, "and what it returned is M.state");

    evict_lua_free(plain);
    evict_lua_free(fresh);
    evict_lua_free(v1);
    evict_lua_free(v2);
    evict_lua_free(v3);
    evict_lua_free(v4);
    evict_lua_free(cyc);
    evict_free(&ev);
    store_free(&s);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0)
        return 1;
    return tap_done();
}
