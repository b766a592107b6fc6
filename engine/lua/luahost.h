/* luahost: Lua 5.4 states for topologies and the command line (policies
 * run in policy_host states instead).
 *
 * Every call into Lua goes through luahost_pcall, which installs a traceback
 * handler and turns an error into a "file:line: message" string for the
 * caller to log; no Lua error ever longjmps across C frames that hold
 * resources. Modules under lua/ are compiled into the binary and found by
 * `require` (e.g. require "strata.topology"). The topology script is user
 * code too: these states take text chunks only (load, loadfile, dofile and
 * require refuse bytecode), have no string.dump, use the bounded pattern
 * functions (pattern.h), and carry a budget (budget.h) that is off except
 * while an entry such as topology_load runs. strata.host.check_policy
 * checks a policy file in a policy_host sandbox of its own. */
#ifndef STRATA_LUAHOST_H
#define STRATA_LUAHOST_H

#include <lua.h>
#include <stddef.h>

/* A fresh state with the standard libraries and the embedded modules.
 * `search_dir` (may be NULL) is prepended to package.path, so a policy can
 * require modules that sit beside it. Returns NULL on allocation failure. */
lua_State *luahost_new(const char *search_dir);
void luahost_close(lua_State *L);

/* lua_pcall with a traceback handler. On error returns -1, pops the error,
 * and writes its first line (normally "file:line: message") to err; the
 * full traceback is logged at debug level. */
int luahost_pcall(lua_State *L, int nargs, int nresults, char *err, size_t errlen);

/* Loads a policy module from a file and runs it; on success 0 with the
 * returned table on top of the stack. The module must return a table. */
int luahost_load_module(lua_State *L, const char *path, char *err, size_t errlen);

/* Resolves a path named in a topology: absolute as is; otherwise relative to
 * the topology file's directory (never the working directory).
 * Returns 0 with the resolved path in out, -1 when neither exists. */
int luahost_resolve_path(const char *topology_path, const char *path, char *out, size_t outlen);

/* Copies a plain value (nil, boolean, number, string, and tables of those,
 * up to `max_depth` levels and 100,000 entries in all) from one state to
 * another, pushing it on `to`. Functions, userdata and threads are left out;
 * a table seen twice is copied twice (no cycles: a cycle is cut at the depth
 * limit). Used to hand a policy's state to its next generation (migrate).
 * Returns 0, or -1 when the limits were hit (what was copied is pushed). */
int luahost_copy_value(lua_State *from, int idx, lua_State *to, int max_depth);

/* Checks that table at idx has a function named `fn`. */
int luahost_has_function(lua_State *L, int idx, const char *fn);

#endif
