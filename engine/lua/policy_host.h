/* policy_host: the one host for Lua states that run a user's policy.
 *
 * Balancer picks, eviction choosers, and the check of any policy file a
 * topology names (strata check, run and reload) all load their module
 * through here, so every entry into user code has the same limits:
 *
 * - a sandbox: the base library without dofile/loadfile and with a `load`
 *   that accepts text only; string (pattern functions bounded, no dump),
 *   table, math, utf8, coroutine; os.time/clock/date/difftime only; no io,
 *   no debug, no package; `require` finds the embedded strata.text and
 *   modules beside the policy file, loaded as text into the same sandbox;
 *   `print` writes to the node's log; collectgarbage cannot stop the
 *   collector; setmetatable refuses __gc (finalizers run with hooks off).
 *   (docs/topology.md, "What a policy may use".)
 * - a memory limit counted by the state's allocator: an allocation past it
 *   fails, and so does the entry that asked for it;
 * - an instruction budget and a wall-clock deadline (budget.h) on every
 *   entry: the top-level chunk, validate(), migrate(), each pick or choose;
 * - text chunks only, never bytecode (luaL_loadfilex with mode "t");
 * - one error format: "file:line: message", the file named by its full
 *   path; validate() returning false, "why" fails with "why" in it.
 *
 * A state is single-threaded and never blocks: nothing in the sandbox
 * waits on I/O. Coroutines inherit the budget's hook, so a host can later
 * run a handler as a coroutine that yields on a cache or db call and is
 * resumed on the reply, each resume being one entry. */
#ifndef STRATA_POLICY_HOST_H
#define STRATA_POLICY_HOST_H

#include <lua.h>
#include <stddef.h>

#include "budget.h"

/* Bytes one policy state may hold. */
#define POLICY_MEM_DEFAULT ((size_t)64 << 20)
/* Loading (top-level chunk, validate, migrate): instructions and seconds. */
#define POLICY_LOAD_BUDGET 100000000L
#define POLICY_LOAD_SECONDS 2.0

enum policy_stage { POLICY_STAGE_LOAD = 1, POLICY_STAGE_SHAPE, POLICY_STAGE_VALIDATE };

struct policy_host;

/* A sandboxed state for the policy file at `path` (modules beside it may
 * be required); nothing of the file runs yet. NULL when out of memory. */
struct policy_host *policy_host_new(const char *path, size_t mem_max);
/* Runs the file (text only) and checks that it returns a table holding a
 * function for each name in `needs` (NULL-terminated, may be NULL), then
 * runs its validate() when it has one. 0, or -1 with "file:line: message"
 * in err and the failing stage in *stage (may be NULL). */
int policy_host_load(struct policy_host *h, const char *const *needs, enum policy_stage *stage,
                     char *err, size_t errlen);
/* new + load; NULL with the message in err. */
struct policy_host *policy_host_open(const char *path, const char *const *needs, size_t mem_max,
                                     char *err, size_t errlen);
void policy_host_free(struct policy_host *h);

lua_State *policy_host_state(struct policy_host *h);
const char *policy_host_path(const struct policy_host *h);
/* Pushes the module table (after a successful load). */
void policy_host_push_module(struct policy_host *h);
/* Bytes the state holds now. */
size_t policy_host_memory(const struct policy_host *h);

/* One entry: calls the function below nargs arguments on the state's
 * stack, with `instructions` and `seconds` as its budget. `what` names the
 * entry in messages ("pick") and, when it is a field of the module, gives
 * the line of errors that have none (out of memory). 0, or -1 with
 * "file:line: message" in err; the stack is as lua_pcall leaves it. */
int policy_host_call(struct policy_host *h, const char *what, int nargs, int nresults,
                     long instructions, double seconds, char *err, size_t errlen);

/* One resume of the coroutine `co` (a thread of h's state, its function
 * and nargs arguments on its stack) as one entry with its own budget: how
 * a host runs a handler that yields on a cache or db call and resumes it
 * on the reply. LUA_YIELD or LUA_OK with *nres values on co's stack, or -1
 * with "file:line: message" in err (the coroutine is dead then). */
int policy_host_resume(struct policy_host *h, lua_State *co, int nargs, int *nres,
                       long instructions, double seconds, char *err, size_t errlen);

/* What stopped the last entry: BUDGET_OK when it ended by itself (well
 * or with an error of its own), else the limit it ran into. A host may
 * then rest the policy for a while rather than pay the limit per call. */
enum budget_why policy_host_last_limit(const struct policy_host *h);

/* Sets up the sandbox in a state the caller created (policy_host_new does
 * this): `dir` is where require looks for modules beside the policy. */
void policy_host_sandbox(lua_State *L, const char *dir);

/* strata.host.check_policy(file, {needs...}) for the topology's state:
 * loads the policy file in a sandboxed, budgeted state of its own, runs its
 * validate(), and frees it. true, or nil, "file:line: message", stage
 * ("load", "shape", "validate"). The topology loader registers it. */
int policy_host_check_lua(lua_State *L);

#endif
