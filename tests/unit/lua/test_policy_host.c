/* policy_host, budget and pattern: the sandbox a policy runs in, the
 * limits on every entry, and the bounded pattern functions (checked
 * against Lua's own on the same inputs). */
#include <lauxlib.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "budget.h"
#include "luahost.h"
#include "pattern.h"
#include "policy_host.h"
#include "policy_migrate.h"
#include "tap.h"
#include "util.h"

static char dir[] = "/tmp/strata-policy-host-XXXXXX";

static const char *write_policy(const char *name, const char *text)
{
    static char path[8][512];
    static int k;
    char *p = path[k++ % 8];
    snprintf(p, 512, "%s/%s", dir, name);
    FILE *f = fopen(p, "w");
    fputs(text, f);
    fclose(f);
    return p;
}

/* ---- the pattern functions behave like Lua's ------------------------------ */

static const char differential[] =
    "local out = {}\n"
    "local function put(...) local t = table.pack(...)\n"
    "  for i = 1, t.n do out[#out+1] = tostring(t[i]) end out[#out+1] = '|' end\n"
    "local cases = {\n"
    "  {'hello world', 'o w'}, {'hello world', 'l+'}, {'hello', '^h'}, {'hello', 'o$'},\n"
    "  {'hello', '^(h)(e)'}, {'a,b,,c', '[^,]*'}, {'key = value', '^(%w+)%s*=%s*(%w+)$'},\n"
    "  {'THE (quick) fox', '%((%a+)%)'}, {'f(a(b)c)d', '%b()'}, {'THE (quick) fox', '%f[%a]%a+'},\n"
    "  {'abcabc', '(abc)%1'}, {'hello', '()ll()'}, {'  trim  ', '^%s*(.-)%s*$'},\n"
    "  {'x=1, y=2', '(%w+)=(%w+)'}, {'abc', ''}, {'abc', '.-'}, {'abc', 'a?b?c?d?'},\n"
    "  {'[x]', '[]]'}, {'a-b', '[a%-]+'}, {'a.b', '%.'}, {'aaa', 'a-b'}, {'h\\200llo', '[\\128-\\255]+'},\n"
    "  {'abc', '[^%a]'}, {'1234abc', '%d+'}, {'abc', '[a-'}, {'abc', '%'}, {'abc', '(()'},\n"
    "  {'abc', '%1'}, {'a b\\tc', '%g+'}, {'x]y', '[%]]'}, {'abc', 'b*'}, {'aXbXc', '%u'},\n"
    "  {'a$b', '$b'}, {'a^b', 'a^'}, {'a+b', 'a+b'}, {'one two  three', '%s+'},\n"
    "  {'path/to/file.lua', '([^/]+)%.lua$'}, {'A1_b2', '[%w_]+'}, {'x', '[^]'},\n"
    "  {'abc', 'a(b'}, {'abc', 'ab)'}, {'THE END', '%f[%w]%w+%f[%W]'}, {'', ''}, {'', 'a*'},\n"
    "}\n"
    "for _, c in ipairs(cases) do local s, p = c[1], c[2]\n"
    "  put(pcall(string.find, s, p)) put(pcall(string.find, s, p, 2))\n"
    "  put(pcall(string.find, s, p, -3)) put(pcall(string.find, s, p, 1, true))\n"
    "  put(pcall(string.find, s, p, 100)) put(pcall(string.match, s, p))\n"
    "  put(pcall(string.match, s, p, 0)) put(pcall(function() local r = {}\n"
    "    for a, b in string.gmatch(s, p) do r[#r+1] = tostring(a) .. '/' .. tostring(b) end\n"
    "    return table.concat(r, ';') end))\n"
    "  put(pcall(string.gsub, s, p, '<%0>'))\n"
    "  put(pcall(string.gsub, s, p, '[%1]'))\n"
    "  put(pcall(string.gsub, s, p, '%%', 1))\n"
    "  put(pcall(string.gsub, s, p, function(x) if x == 'l' then return false end return '#' end))\n"
    "  put(pcall(string.gsub, s, p, { hello = 'HI', a = 1 }))\n"
    "  put(pcall(string.gsub, s, p, '%2'))\n"
    "  put(pcall(string.gsub, s, p, '%z'))\n"
    "  put(pcall(function() return ('' .. s):find(p) end))\n"
    "end\n"
    "put(pcall(string.gmatch('abc', '.', 2)))\n"
    "put(pcall(string.gsub, 'abc', '.', {}, -1))\n"
    "put(pcall(string.gsub, 'abc', '.', true))\n"
    "return table.concat(out, ',')\n";

static char *run_differential(lua_State *L)
{
    if (luaL_loadstring(L, differential) != LUA_OK || lua_pcall(L, 0, 1, 0) != LUA_OK) {
        printf("# %s\n", lua_tostring(L, -1));
        return NULL;
    }
    return strdup(lua_tostring(L, -1));
}

static void test_patterns_match_lua(void)
{
    lua_State *ref = luaL_newstate();
    luaL_openlibs(ref);
    lua_State *ours = luaL_newstate();
    luaL_openlibs(ours);
    *(void **)lua_getextraspace(ours) = NULL; /* no budget: unbounded, like Lua's */
    pattern_open(ours);
    char *a = run_differential(ref), *b = run_differential(ours);
    ok(a && b, "the comparison ran in both states");
    if (a && b && strcmp(a, b) != 0) {
        /* show where they part */
        size_t i = 0;
        while (a[i] && a[i] == b[i])
            i++;
        size_t from = i > 80 ? i - 80 : 0;
        printf("# lua:  ...%.160s\n# ours: ...%.160s\n", a + from, b + from);
    }
    ok(a && b && strcmp(a, b) == 0, "find/match/gmatch/gsub give Lua's results and errors");
    free(a);
    free(b);
    lua_close(ref);
    lua_close(ours);
}

/* ---- loading -------------------------------------------------------------- */

static struct policy_host *open_src(const char *name, const char *src, char *err, size_t n)
{
    static const char *const needs[] = {"pick", NULL};
    return policy_host_open(write_policy(name, src), needs, 0, err, n);
}

/* Calls M.pick() in h with the given budget; 0 or -1 with err. */
static int call_pick(struct policy_host *h, long budget, double secs, char *err, size_t n)
{
    lua_State *L = policy_host_state(h);
    policy_host_push_module(h);
    lua_getfield(L, -1, "pick");
    lua_remove(L, -2);
    int rc = policy_host_call(h, "pick", 0, 1, budget, secs, err, n);
    if (rc == 0)
        lua_pop(L, 1);
    return rc;
}

static void test_load_limits(void)
{
    char err[1024];
    struct policy_host *h;
    int64_t t0 = util_mono_us();
    h = open_src("toploop.lua", "local M = {}\nwhile true do end\nreturn M\n", err, sizeof err);
    /* Loading runs under POLICY_LOAD_BUDGET and POLICY_LOAD_SECONDS, which
     * a test cannot widen: on a loaded machine (or under a sanitizer) the
     * wall clock may stop these loops before the budget does. Either limit
     * is the point: the load is stopped, with file:line. */
#define LIMITED(e) (strstr(e, "instruction budget") || strstr(e, "time limit"))
    ok(!h && strstr(err, "/toploop.lua:2: ") && LIMITED(err),
       "a top-level chunk that never returns is stopped with file:line: %s", err);
    h = open_src("vloop.lua",
                 "local M = {}\nfunction M.pick() end\nfunction M.validate()\n"
                 "  while true do end\nend\nreturn M\n",
                 err, sizeof err);
    ok(!h && strstr(err, "/vloop.lua:4: ") && strstr(err, "validate"),
       "a validate() that never returns is stopped with file:line: %s", err);
    h = open_src("vcatch.lua",
                 "local M = {}\nfunction M.pick() end\nfunction M.validate()\n"
                 "  while true do pcall(function() while true do end end) end\nend\nreturn M\n",
                 err, sizeof err);
    ok(!h && strstr(err, "vcatch.lua:4: ") && LIMITED(err),
       "catching the budget error with pcall does not help: %s", err);
    ok(util_mono_us() - t0 < 20 * 1000000, "and all that took bounded time");
    h = open_src("why.lua",
                 "local M = {}\nfunction M.pick() end\nfunction M.validate()\n"
                 "  return false, 'needs two backends'\nend\nreturn M\n",
                 err, sizeof err);
    ok(!h && strstr(err, "/why.lua:3: ") && strstr(err, "needs two backends"),
       "validate() returning false, why keeps why: %s", err);
    h = open_src("raise.lua",
                 "local M = {}\nfunction M.pick() end\nfunction M.validate()\n"
                 "  error('sample size too small')\nend\nreturn M\n",
                 err, sizeof err);
    ok(!h && strstr(err, "/raise.lua:4: sample size too small"), "validate() error: %s", err);
    h = open_src("nopick.lua", "return {}\n", err, sizeof err);
    ok(!h && strstr(err, "no pick"), "a needed function is checked: %s", err);
    h = open_src("good.lua", "local M = {}\nfunction M.pick() return 1 end\nreturn M\n", err,
                 sizeof err);
    ok(h != NULL, "a plain module loads");
    policy_host_free(h);
}

static void test_sandbox(void)
{
    char err[1024];
    static const struct {
        const char *src, *msg;
    } refused[] = {
        {"os.execute('true')", "execute"},
        {"io.open('/etc/passwd')", "io"},
        {"io.popen('id')", "io"},
        {"loadfile('/etc/passwd')", "loadfile"},
        {"dofile('/etc/passwd')", "dofile"},
        {"require('os').execute('true')", "execute"},
        {"require('strata.host')", "not found"},
        {"require('../../etc/x')", "not allowed"},
        {"debug.sethook()", "debug"},
        {"package.loadlib('x', 'y')", "package"},
        {"collectgarbage('stop')", "invalid option"},
        {"string.dump(print)", "dump"},
        {"assert(load('\\27Lua\\84\\0\\25\\147\\r\\n\\26\\n', 'x', 'b'))()", "binary chunk"},
        {"assert(load(string.char(27) .. 'Lua', 'x'))()", "binary chunk"},
    };
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        char src[512];
        snprintf(src, sizeof src, "local M = {}\nfunction M.pick() end\n%s\nreturn M\n",
                 refused[i].src);
        struct policy_host *h = open_src("refused.lua", src, err, sizeof err);
        ok(!h && strstr(err, "refused.lua:3: ") && strstr(err, refused[i].msg),
           "refused: %s -> %s", refused[i].src, err);
        policy_host_free(h);
    }
    /* what a policy may use */
    write_policy("helper.lua", "return { twice = function(x) return 2 * x end }\n");
    struct policy_host *h = open_src(
        "uses.lua",
        "local M = {}\nlocal helper = require 'helper'\nlocal text = require 'strata.text'\n"
        "assert(helper.twice(2) == 4 and require('helper') == helper)\n"
        "assert(type(os.time()) == 'number' and os.clock() and os.date('%Y'))\n"
        "assert(os.getenv == nil and os.remove == nil and io == nil and debug == nil)\n"
        "assert(string.format('%d', 3) == '3' and ('a,b'):find(',') == 2)\n"
        "assert(math.max(1, 2) == 2 and table.concat({1, 2}) == '12' and utf8.char(65) == 'A')\n"
        "local co = coroutine.wrap(function() coroutine.yield(1) end)\nassert(co() == 1)\n"
        "assert(load('return 1 + 1')() == 2 and collectgarbage('count') > 0)\n"
        "function M.pick() return 1 end\nreturn M\n",
        err, sizeof err);
    ok(h != NULL, "base, string, table, math, utf8, coroutine, os.time/clock/date, require "
                  "beside: %s", h ? "" : err);
    policy_host_free(h);
    const char *bin = write_policy("bin.lua", "\x1bLua\x54\x00garbage");
    static const char *const none[] = {NULL};
    h = policy_host_open(bin, none, 0, err, sizeof err);
    ok(!h && strstr(err, "binary chunk"), "a bytecode file is refused: %s", err);
}

static void test_call_limits(void)
{
    char err[1024];
    /* a coroutine made while the module loads, resumed by pick */
    struct policy_host *h = open_src(
        "coro.lua",
        "local M = {}\nlocal co = coroutine.create(function()\n  while true do end\nend)\n"
        "function M.pick() return coroutine.resume(co) end\nreturn M\n",
        err, sizeof err);
    ok(h != NULL, "coroutine module loads");
    int rc = h ? call_pick(h, 1000000, 30.0, err, sizeof err) : 0;
    /* resume reports the coroutine's failure as false, msg; the loop is
     * stopped either way, and pick ends */
    ok(h && rc == 0, "a coroutine created at load is stopped inside pick");
    lua_State *L = h ? policy_host_state(h) : NULL;
    policy_host_free(h);

    h = open_src("corocatch.lua",
                 "local M = {}\nlocal co = coroutine.wrap(function()\n"
                 "  while true do end\nend)\n"
                 "function M.pick() while true do pcall(co) end end\nreturn M\n",
                 err, sizeof err);
    rc = h ? call_pick(h, 1000000, 30.0, err, sizeof err) : 0;
    ok(h && rc < 0 && strstr(err, "budget"), "and its caller cannot loop on it: %s", err);
    policy_host_free(h);

    h = open_src("pattern.lua",
                 "local M = {}\nfunction M.pick()\n"
                 "  return ('a'):rep(40):find(('a*'):rep(12) .. 'b')\nend\nreturn M\n",
                 err, sizeof err);
    int64_t t0 = util_mono_us();
    rc = h ? call_pick(h, 1000000, 30.0, err, sizeof err) : 0;
    ok(h && rc < 0 && strstr(err, "pattern.lua:3: ") && strstr(err, "budget"),
       "a backtracking pattern is stopped with file:line: %s", err);
    /* the instruction budget stopped it, not the (generous) wall clock:
     * pattern steps are counted like instructions */
    (void)t0;
    /* the state is still usable for a sane call */
    luaL_loadstring(policy_host_state(h), "return ('abc'):match('b(c)')");
    rc = policy_host_call(h, "pick", 0, 1, 1000000, 30.0, err, sizeof err);
    ok(rc == 0 && strcmp(lua_tostring(policy_host_state(h), -1), "c") == 0,
       "the next call works");
    lua_pop(policy_host_state(h), 1);
    policy_host_free(h);

    h = open_src("patgsub.lua",
                 "local M = {}\nfunction M.pick()\n"
                 "  return (('a'):rep(40)):gsub(('a*'):rep(12) .. 'b', 'x')\nend\nreturn M\n",
                 err, sizeof err);
    rc = h ? call_pick(h, 1000000, 30.0, err, sizeof err) : 0;
    ok(h && rc < 0 && strstr(err, "budget"), "gsub too: %s", err);
    policy_host_free(h);

    h = open_src("deadline.lua",
                 "local M = {}\nfunction M.pick()\n  while true do end\nend\nreturn M\n",
                 err, sizeof err);
    rc = h ? call_pick(h, 1L << 50, 0.05, err, sizeof err) : 0;
    ok(h && rc < 0 && strstr(err, "deadline.lua:3: ") && strstr(err, "time limit"),
       "the wall-clock deadline holds too: %s", err);
    policy_host_free(h);

    h = open_src("hog.lua",
                 "local M = {}\nlocal keep = {}\nfunction M.pick()\n"
                 "  keep[#keep + 1] = ('x'):rep(32 * 1024 * 1024)\n  return 1\nend\n"
                 "return M\n",
                 err, sizeof err);
    int fails = 0;
    for (int i = 0; i < 6 && h; i++)
        fails += call_pick(h, 1000000, 30.0, err, sizeof err) < 0;
    ok(fails > 0 && strstr(err, "hog.lua:") && strstr(err, "memory limit"),
       "a state cannot grow past its memory limit: %s", err);
    ok(h && policy_host_memory(h) <= POLICY_MEM_DEFAULT, "it holds at most the limit (%zu)",
       h ? policy_host_memory(h) : 0);
    policy_host_free(h);

    h = open_src("finalizer.lua",
                 "local M = {}\nsetmetatable({}, { __gc = function() while true do end end })\n"
                 "function M.pick() return 1 end\nreturn M\n",
                 err, sizeof err);
    ok(!h && strstr(err, "finalizer.lua:2: ") && strstr(err, "__gc"),
       "finalizers (run with hooks off) are refused: %s", err);
    policy_host_free(h);
    (void)L;
}

static void test_migrate(void)
{
    char err[1024];
    struct policy_host *a = open_src("m1.lua",
                                     "local M = { state = { n = 41 } }\nfunction M.pick() end\n"
                                     "return M\n",
                                     err, sizeof err);
    struct policy_host *b = open_src(
        "m2.lua",
        "local M = {}\nfunction M.pick() end\nfunction M.migrate(old)\n"
        "  return { n = old.n + 1 }\nend\nreturn M\n",
        err, sizeof err);
    ok(a && b && policy_migrate(a, b, err, sizeof err) == 1, "migrate ran");
    lua_State *L = policy_host_state(b);
    policy_host_push_module(b);
    lua_getfield(L, -1, "state");
    lua_getfield(L, -1, "n");
    is_int(lua_tointeger(L, -1), 42, "the state was handed over");
    lua_pop(L, 3);
    struct policy_host *c = open_src(
        "m3.lua",
        "local M = {}\nfunction M.pick() end\nfunction M.migrate(old)\n"
        "  while true do end\nend\nreturn M\n",
        err, sizeof err);
    ok(c && policy_migrate(a, c, err, sizeof err) < 0 && strstr(err, "m3.lua:4: ") &&
           strstr(err, "budget"),
       "a migrate that never ends is stopped: %s", err);
    policy_host_free(a);
    policy_host_free(b);
    policy_host_free(c);
}

/* A handler run as a coroutine: it yields (as on a cache call) and is
 * resumed on the reply, each resume being one entry with its own budget. */
static void test_resume(void)
{
    char err[1024];
    static const char *const needs[] = {"handle", NULL};
    struct policy_host *h = policy_host_open(
        write_policy("handler.lua",
                     "local M = {}\nfunction M.handle(key)\n"
                     "  local v = coroutine.yield('get', key)\n"
                     "  if v == 'spin' then while true do end end\n"
                     "  return 'got ' .. v\nend\nreturn M\n"),
        needs, 0, err, sizeof err);
    ok(h != NULL, "handler module loads");
    if (!h)
        return;
    lua_State *L = policy_host_state(h);
    for (int round = 0; round < 2; round++) {
        lua_State *co = lua_newthread(L);
        int ref = luaL_ref(L, LUA_REGISTRYINDEX);
        policy_host_push_module(h);
        lua_getfield(L, -1, "handle");
        lua_xmove(L, co, 1);
        lua_pop(L, 1);
        lua_pushliteral(co, "user:1");
        int nres = 0;
        int st = policy_host_resume(h, co, 1, &nres, 100000, 30.0, err, sizeof err);
        ok(st == LUA_YIELD && nres == 2 && strcmp(lua_tostring(co, -1), "user:1") == 0,
           "the handler yields its call");
        lua_pop(co, nres);
        lua_pushstring(co, round == 0 ? "alice" : "spin");
        st = policy_host_resume(h, co, 1, &nres, 100000, 30.0, err, sizeof err);
        if (round == 0)
            ok(st == LUA_OK && nres == 1 && strcmp(lua_tostring(co, -1), "got alice") == 0,
               "and finishes on the reply");
        else
            ok(st < 0 && strstr(err, "handler.lua:4: ") && strstr(err, "budget"),
               "a resume that never ends is stopped: %s", err);
        luaL_unref(L, LUA_REGISTRYINDEX, ref);
    }
    policy_host_free(h);
}

static void test_topology_state(void)
{
    char err[512];
    lua_State *L = luahost_new(NULL);
    luaL_loadstring(L, "return load('\\27Lua\\84\\0garbage', 'x', 'b')");
    ok(luahost_pcall(L, 0, 2, err, sizeof err) == 0 && lua_isnil(L, -2) &&
           strstr(lua_tostring(L, -1), "binary chunk"),
       "the topology state refuses bytecode in load: %s", lua_tostring(L, -1));
    lua_pop(L, 2);
    const char *bin = write_policy("bin2.lua", "\x1bLua\x54\x00garbage");
    lua_getglobal(L, "loadfile");
    lua_pushstring(L, bin);
    ok(luahost_pcall(L, 1, 2, err, sizeof err) == 0 && lua_isnil(L, -2) &&
           strstr(lua_tostring(L, -1), "binary chunk"),
       "and in loadfile");
    lua_pop(L, 2);
    lua_getglobal(L, "dofile");
    lua_pushstring(L, bin);
    ok(luahost_pcall(L, 1, 0, err, sizeof err) < 0 && strstr(err, "binary chunk"),
       "and in dofile: %s", err);
    char src[600];
    snprintf(src, sizeof src, "package.path = '%s/?.lua'; return require 'bin2'", dir);
    luaL_loadstring(L, src);
    ok(luahost_pcall(L, 0, 1, err, sizeof err) < 0 && strstr(err, "binary chunk"),
       "and in require: %s", err);
    /* its budget: off outside topology_load, on inside an entry */
    struct budget *b = budget_of(L);
    ok(b != NULL, "the topology state has a budget");
    budget_begin(b, 100000, 30.0, "the topology script");
    luaL_loadstring(L, "while true do end");
    ok(luahost_pcall(L, 0, 0, err, sizeof err) < 0 && strstr(err, "budget"),
       "which stops a loop: %s", err);
    budget_end(b);
    luaL_loadstring(L, "local n = 0 for i = 1, 300000 do n = n + i end return n");
    ok(luahost_pcall(L, 0, 1, err, sizeof err) == 0, "and charges nothing outside an entry");
    lua_pop(L, 1);
    luahost_close(L);
}

int main(void)
{
    if (!mkdtemp(dir))
        return 1;
    test_patterns_match_lua();
    test_load_limits();
    test_sandbox();
    test_call_limits();
    test_migrate();
    test_resume();
    test_topology_state();
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0)
        printf("# could not remove %s\n", dir);
    return tap_done();
}
