/* evict_lua: a Lua module that chooses eviction victims.
 *
 * Module contract (api 1):
 *
 *   local M = {}
 *   -- candidates: an array of tables, each
 *   --   { key = "…", size = bytes, last_access = ms since epoch,
 *   --     inserted = ms since epoch, hits = 0..255 (logarithmic access
 *   --     counter), ttl = ms remaining or -1 }
 *   -- returns the chosen candidate table, or its index (1-based)
 *   function M.choose(candidates) ... end
 *   -- optional: called once at load; an error rejects the policy
 *   function M.validate() end
 *   -- optional: replacing a running Lua policy, takes over its M.state
 *   -- (a copy); returns the new state or sets M.state (policy_migrate.h)
 *   function M.migrate(old_state) end
 *   return M
 *
 * The C core samples the candidates and frees the victim; Lua only decides.
 * The module runs in its own policy_host sandbox (engine/lua/policy_host.h):
 * a memory limit, and an instruction budget and deadline on its top-level
 * code, validate(), migrate() and every choose(). A choose that runs into a
 * limit fails (evict.c then uses the fallback) and the module rests for a
 * second before it is asked again. evict_set_lua hands it to evict.c
 * through struct evict_chooser_ops. */
#ifndef STRATA_EVICT_LUA_H
#define STRATA_EVICT_LUA_H

#include <stddef.h>
#include <stdint.h>

#include "store.h"

struct evict;
struct evict_lua;

/* Loads and validates the module and, when it replaces `prev` (NULL:
 * none), runs its migrate() on a copy of prev's M.state. NULL with a
 * "file:line: message" in err; prev is never changed. */
struct evict_lua *evict_lua_new(const char *path, const struct evict_lua *prev, char *err,
                                size_t errlen);
/* 1 when the module took over its predecessor's state through migrate(). */
int evict_lua_migrated(const struct evict_lua *el);
void evict_lua_free(struct evict_lua *el);
const char *evict_lua_path(const struct evict_lua *el);
/* Returns the chosen index in [0, n), or -1 with a message in err (a Lua
 * error or a return value that names no candidate). */
int evict_lua_choose(struct evict_lua *el, const struct evict *ev, struct store *s,
                     struct store_entry **cands, int n, int64_t now_ms, char *err, size_t errlen);

#endif
