/* topology: loads a topology script through lua/strata/topology.lua and
 * leaves its normalized table (nodes, services, policies) on the stack.
 *
 * Loading checks twice, in two places with two jobs: the DSL checks
 * structure, types, references, ports and policy modules; then every
 * service goes through service_validate, its kind's own config reader (the
 * one start and reload use), so `strata check`, `strata run` and a reload
 * accept and refuse exactly the same topologies. */
#ifndef STRATA_TOPOLOGY_H
#define STRATA_TOPOLOGY_H

#include <lua.h>
#include <stddef.h>

#include "buf.h"

/* 0 with the normalized, validated topology on top of L's stack, or -1 with
 * "file:line: message" in err (and nothing left on the stack). */
int topology_load(lua_State *L, const char *path, char *err, size_t errlen);
/* Appends the human table of the topology at idx (what `strata check`
 * prints). */
int topology_describe(lua_State *L, int idx, struct buf *out, char *err, size_t errlen);
/* 1 when the topology at idx has a node of that name. */
int topology_has_node(lua_State *L, int idx, const char *name);

#endif
