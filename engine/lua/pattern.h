/* pattern: string.find, match, gmatch and gsub with bounded work.
 *
 * Lua's own pattern matcher runs inside C, where the instruction hook
 * never fires: a backtracking pattern such as
 * ("a"):rep(40):find(("a*"):rep(12) .. "b") runs for ages, and a policy
 * calling it would freeze its node. pattern_open replaces the four
 * functions in a state's string table (which is also the strings'
 * __index, so ("x"):find(...) is covered) with a matcher of our own that
 * has the same semantics as Lua 5.4's (classes, sets, quantifiers,
 * captures, %b, %f, back-references, anchors) and charges every matching
 * step to the state's budget (budget.h). When the budget or the entry's
 * deadline runs out, the call fails with "<what> exceeded its instruction
 * budget" at the caller's file:line. Plain finds (no special characters,
 * or `plain` set) run in linear time and charge nothing. In a state with
 * no budget attached the functions behave like the originals. */
#ifndef STRATA_PATTERN_H
#define STRATA_PATTERN_H

#include <lua.h>

/* Replaces string.find/match/gmatch/gsub in L (the string library must be
 * open). L's extra space must hold its budget (budget_attach) or NULL. */
void pattern_open(lua_State *L);

#endif
