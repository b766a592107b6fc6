/* ctl_host: blocking helpers (HTTP to admin endpoints, sleep) for the
 * command line's Lua state only. */
#ifndef STRATA_CTL_HOST_H
#define STRATA_CTL_HOST_H

#include <lua.h>
#include <stddef.h>

/* Adds http_request and sleep to the strata.host module of L.
 * 0, or -1 with a message in err. */
int ctl_host_open(lua_State *L, char *err, size_t errlen);

#endif
