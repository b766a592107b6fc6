/* budget: how much work one entry into user Lua code may do.
 *
 * A state that runs user code gets a budget attached once, when it is
 * created: a count hook that stays on for the state's whole life, on every
 * thread (a coroutine inherits the hook of the thread that creates it, and
 * no user state has the debug library to remove it). Between budget_begin
 * and budget_end each entry -- a module's top-level chunk, validate,
 * migrate, one pick or choose -- may run `instructions` VM instructions and
 * `seconds` of wall-clock time; the hook charges instructions and checks
 * the clock every BUDGET_STEP instructions. Work done inside C that the
 * hook cannot see (pattern matching: pattern.h) charges the same budget
 * through budget_charge, which also checks the clock.
 *
 * When the budget runs out the running function fails with
 * "file:line: <what> exceeded its instruction budget (N)" (or its time
 * limit), and from then until budget_end every further VM instruction on
 * any thread of the state fails too: a policy cannot catch the error with
 * pcall and carry on, the failure reaches the host's protected call.
 * Outside begin/end (no entry running) the hook charges nothing, unless
 * the budget is strict: then any Lua code that runs between entries (a
 * __gc finalizer called by the collector or when the state closes) fails
 * within BUDGET_STEP instructions. */
#ifndef STRATA_BUDGET_H
#define STRATA_BUDGET_H

#include <lua.h>
#include <stdint.h>

/* Instructions between two hook calls: small enough to notice a runaway
 * quickly, large enough that the hook costs nothing measurable. */
#define BUDGET_STEP 1000

enum budget_why { BUDGET_OK, BUDGET_INSTRUCTIONS, BUDGET_TIME, BUDGET_MEMORY };

struct budget {
    long left;           /* instructions (and pattern steps) left */
    long total;          /* what this entry started with, for messages */
    int64_t deadline_us; /* util_mono_us() limit; 0: none */
    double seconds;
    const char *what;    /* "pick", "validate", ...: names the entry in messages */
    int active;
    int strict;          /* Lua running outside an entry (a finalizer run by
                          * the collector or at close) fails at once */
    enum budget_why expired;
};

/* Attaches b to L (its extra space) and turns the hook on for good. */
void budget_attach(lua_State *L, struct budget *b);
/* The budget attached to L (any of its threads), or NULL. */
static inline struct budget *budget_of(lua_State *L)
{
    return *(struct budget **)lua_getextraspace(L);
}
void budget_begin(struct budget *b, long instructions, double seconds, const char *what);
void budget_end(struct budget *b);
/* Marks the entry as failed (e.g. out of memory): from now on every VM
 * instruction fails, as after an exhausted budget. */
void budget_expire(struct budget *b, enum budget_why why);
/* Charges `steps` units of work done in C; raises a Lua error (with the
 * caller's file:line) when the budget or the deadline is gone. */
void budget_charge(lua_State *L, long steps);
/* The message for an expired budget, without a position. */
const char *budget_message(const struct budget *b, char *buf, size_t n);

#endif
