/* policy_migrate: a Lua policy's state across reloads.
 *
 * Contract (balancer pick policies and cache eviction policies alike): a
 * module keeps the state it wants to outlive a reload in the plain table
 * `M.state`. When a reload replaces a running Lua policy and the NEW module
 * has a function `migrate`, it is called once, after validate() and before
 * the new module serves, with a copy of the OLD module's `M.state` (nil when
 * it had none). What migrate returns, when not nil, becomes `M.state`;
 * otherwise `M.state` is whatever migrate left there. A module without
 * migrate starts from its own fresh state.
 *
 * Each module lives in its own Lua state, so the old state is copied, never
 * shared: plain data only (booleans, numbers, strings and tables of them,
 * at most POLICY_MIGRATE_DEPTH levels and 100,000 values; functions and
 * userdata are left out). A state that does not fit, a migrate that raises
 * an error or runs past its instruction budget fails the load with
 * "file:line: message" -- a reload then changes nothing, and the old module
 * keeps serving with its state untouched. */
#ifndef STRATA_POLICY_MIGRATE_H
#define STRATA_POLICY_MIGRATE_H

#include <stddef.h>

#include "policy_host.h"

#define POLICY_MIGRATE_DEPTH 32
/* VM instructions migrate() may run: enough to rebuild a large state,
 * still well under a second; the copy counts against the new state's
 * memory limit. */
#define POLICY_MIGRATE_BUDGET POLICY_LOAD_BUDGET

/* Runs the new module's migrate (in `to`, loaded) on a copy of the old
 * module's state (in `from`, loaded). Returns 1 when migrate ran, 0 when
 * the new module has none, -1 with "file:line: message" in err. */
int policy_migrate(struct policy_host *from, struct policy_host *to, char *err, size_t errlen);

#endif
