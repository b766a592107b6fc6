#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "luahost.h"
#include "tap.h"
#include "topology.h"

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
}

int main(void)
{
    char err[512];
    lua_State *L = luahost_new(NULL);
    ok(L != NULL, "state created");

    /* Errors come back as a first line with file:line, stack unchanged. */
    int top = lua_gettop(L);
    luaL_loadbuffer(L, "local x = nil\nreturn x.field", 27, "@policy.lua");
    ok(luahost_pcall(L, 0, 1, err, sizeof err) < 0, "runtime error reported");
    ok(strncmp(err, "policy.lua:2:", 13) == 0, "message starts with file:line (%s)", err);
    ok(strchr(err, '\n') == NULL, "only the first line of the traceback");
    is_int(lua_gettop(L), top, "stack balanced after an error");

    /* Embedded modules are found by require. */
    luaL_loadstring(L, "return require('strata.topology').load ~= nil");
    ok(luahost_pcall(L, 0, 1, err, sizeof err) == 0 && lua_toboolean(L, -1),
       "strata.topology is embedded");
    lua_pop(L, 1);
    luaL_loadstring(L, "local h = require 'strata.host'; return h.parse_size('2kb')");
    ok(luahost_pcall(L, 0, 1, err, sizeof err) == 0 && lua_tointeger(L, -1) == 2048,
       "strata.host parses sizes");
    lua_pop(L, 1);

    /* Policy modules: must return a table. */
    char dir[] = "/tmp/strata-luahost-XXXXXX";
    ok(mkdtemp(dir) != NULL, "temp dir");
    char p1[256], p2[256], p3[256], topo[256], out[1024];
    snprintf(p1, sizeof p1, "%s/good.lua", dir);
    snprintf(p2, sizeof p2, "%s/notable.lua", dir);
    snprintf(p3, sizeof p3, "%s/syntax.lua", dir);
    snprintf(topo, sizeof topo, "%s/topo.lua", dir);
    write_file(p1, "local M = {}\nfunction M.pick() return 1 end\nreturn M\n");
    write_file(p2, "return 42\n");
    write_file(p3, "local M = {\nreturn M\n");
    ok(luahost_load_module(L, p1, err, sizeof err) == 0 && luahost_has_function(L, -1, "pick"),
       "module with pick loads");
    ok(!luahost_has_function(L, -1, "choose"), "has_function is false for a missing one");
    lua_pop(L, 1);
    ok(luahost_load_module(L, p2, err, sizeof err) < 0 && strstr(err, "must return a table"),
       "non-table module rejected (%s)", err);
    ok(luahost_load_module(L, p3, err, sizeof err) < 0 && strstr(err, "syntax.lua:") != NULL,
       "syntax error names the file (%s)", err);
    is_int(lua_gettop(L), top, "stack balanced after module loads");

    /* Paths resolve beside the topology first. */
    ok(luahost_resolve_path(topo, "good.lua", out, sizeof out) == 0 && strcmp(out, p1) == 0,
       "relative to the topology's directory");
    ok(luahost_resolve_path(topo, "missing.lua", out, sizeof out) < 0, "missing file");

    /* A topology loads to a normalized table. */
    write_file(topo, "strata.cache { shards = { { node = 'c1', listen = '127.0.0.1:7001' } },\n"
                     "  max_memory = '1mb', eviction = 'lfu' }\n");
    ok(topology_load(L, topo, err, sizeof err) == 0, "topology loads");
    ok(topology_has_node(L, -1, "c1") && !topology_has_node(L, -1, "c2"), "node lookup");
    lua_getfield(L, -1, "nodes");
    lua_rawgeti(L, -1, 1);
    lua_getfield(L, -1, "services");
    lua_rawgeti(L, -1, 1);
    lua_getfield(L, -1, "max_memory");
    is_int(lua_tointeger(L, -1), 1 << 20, "max_memory normalized to bytes");
    lua_getfield(L, -2, "eviction");
    is_str(lua_tostring(L, -1), "allkeys-lfu", "eviction alias normalized");
    lua_settop(L, top);

    write_file(topo, "strata.cache { shards = { { node = 'c1', listen = '127.0.0.1:7001' } } }\n"
                     "strata.cache { shards = { { node = 'c2', listen = '127.0.0.1:7001' } } }\n");
    ok(topology_load(L, topo, err, sizeof err) < 0, "duplicate port rejected");
    char want[300];
    snprintf(want, sizeof want, "%s:2: duplicate port", topo);
    ok(strncmp(err, want, strlen(want)) == 0, "at the second declaration (%s)", err);
    is_int(lua_gettop(L), top, "stack balanced");

    /* Plain state crosses from one state to another; functions do not. */
    lua_State *L2 = luahost_new(NULL);
    luaL_loadstring(L, "return { n = 3, name = 'x', list = { 1, 2, { deep = true } },"
                       " f = function() end, [2.5] = 'float key' }");
    luahost_pcall(L, 0, 1, err, sizeof err);
    ok(luahost_copy_value(L, -1, L2, 8) == 0, "state copied");
    lua_setglobal(L2, "s");
    luaL_loadstring(L2, "return s.n == 3 and s.name == 'x' and #s.list == 3 and s.list[3].deep"
                        " and s.f == nil and s[2.5] == 'float key'");
    ok(luahost_pcall(L2, 0, 1, err, sizeof err) == 0 && lua_toboolean(L2, -1),
       "copied values are equal, functions dropped");
    lua_pop(L2, 1);
    lua_pop(L, 1);
    luaL_loadstring(L, "local t = {} t.self = t return t");
    luahost_pcall(L, 0, 1, err, sizeof err);
    ok(luahost_copy_value(L, -1, L2, 4) < 0, "a cycle is cut at the depth limit");
    lua_pop(L2, 1);
    lua_pop(L, 1);
    is_int(lua_gettop(L), top, "source stack balanced");
    luahost_close(L2);

    unlink(p1);
    unlink(p2);
    unlink(p3);
    unlink(topo);
    rmdir(dir);
    luahost_close(L);
    return tap_done();
}
