/* policy_host: sandboxed, budgeted Lua states for user policies. See
 * policy_host.h for the contract. */
#include "policy_host.h"

#include <lauxlib.h>
#include <limits.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "luahost.h"
#include "pattern.h"

struct policy_host {
    lua_State *L;
    struct budget budget;
    size_t mem, mem_max;
    int oom;     /* an allocation failed at the limit during this entry */
    enum budget_why last_limit;
    int ref_mod; /* the module table, once loaded */
    char path[PATH_MAX];
};

struct lua_embedded {
    const char *module, *path, *source;
    size_t len;
};
extern const struct lua_embedded lua_embedded_modules[];

/* Embedded modules a policy may require: pure functions, no I/O. */
static const char *const policy_embedded_ok[] = {"strata.text", NULL};

#define POLICY_REG_DIR "strata.policy.dir"

/* Counts the state's bytes. The limit holds while an entry runs; between
 * entries only the host allocates (argument tables it builds itself). */
static void *host_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    struct policy_host *h = ud;
    if (!ptr)
        osize = 0; /* then osize is a type tag, not a size */
    if (nsize == 0) {
        free(ptr);
        h->mem -= osize;
        return NULL;
    }
    if (nsize > osize && h->budget.active && h->mem + (nsize - osize) > h->mem_max) {
        h->oom = 1;
        budget_expire(&h->budget, BUDGET_MEMORY);
        return NULL;
    }
    void *p = realloc(ptr, nsize);
    if (p)
        h->mem = h->mem - osize + nsize;
    return p;
}

static int host_panic(lua_State *L)
{
    log_error("unprotected error in a policy state: %s", lua_tostring(L, -1));
    abort();
}

/* ---- the sandbox ---------------------------------------------------------- */

/* load(chunk [, name [, mode [, env]]]) that accepts text only. */
static int sandbox_load(lua_State *L)
{
    int n = lua_gettop(L);
    if (n < 3) {
        lua_settop(L, 3);
        n = 3;
    }
    lua_pushliteral(L, "t");
    lua_replace(L, 3);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, n, LUA_MULTRET);
    return lua_gettop(L);
}

/* collectgarbage without "stop" and the tuning options: a policy cannot
 * keep its garbage. */
static int sandbox_collectgarbage(lua_State *L)
{
    static const char *const opts[] = {"collect", "count", "step", "isrunning", NULL};
    luaL_checkoption(L, 1, "collect", opts);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
    return lua_gettop(L);
}

/* setmetatable without __gc: Lua runs finalizers with hooks off, where no
 * budget could stop one, so a policy gets none. (An object is marked for
 * finalization only when its metatable has __gc as it is set.) */
static int sandbox_setmetatable(lua_State *L)
{
    if (lua_type(L, 2) == LUA_TTABLE) {
        lua_pushliteral(L, "__gc");
        if (lua_rawget(L, 2) != LUA_TNIL)
            return luaL_error(L, "__gc metamethods are not available to policies");
        lua_pop(L, 1);
    }
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, 1);
    return 1;
}

/* print: to the node's log, one line. */
static int sandbox_print(lua_State *L)
{
    luaL_Buffer b;
    int n = lua_gettop(L);
    luaL_buffinit(L, &b);
    for (int i = 1; i <= n; i++) {
        if (i > 1)
            luaL_addchar(&b, '\t');
        luaL_tolstring(L, i, NULL);
        luaL_addvalue(&b);
    }
    luaL_pushresult(&b);
    lua_Debug ar;
    if (lua_getstack(L, 1, &ar) && lua_getinfo(L, "Sl", &ar))
        log_info("%s:%d: %s", ar.short_src, ar.currentline, lua_tostring(L, -1));
    else
        log_info("policy: %s", lua_tostring(L, -1));
    return 0;
}

static int module_name_ok(const char *name, size_t n)
{
    if (n == 0 || n > 128 || name[0] == '.' || name[n - 1] == '.')
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                 c == '_' || c == '-' || (c == '.' && name[i + 1] != '.');
        if (!ok)
            return 0;
    }
    return 1;
}

/* require(name): an allowed embedded module, or name.lua beside the policy
 * (dots are directories), loaded as text into this sandbox. */
static int sandbox_require(lua_State *L)
{
    size_t n;
    const char *name = luaL_checklstring(L, 1, &n);
    lua_settop(L, 1);
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    if (lua_getfield(L, 2, name) != LUA_TNIL)
        return 1;
    lua_pop(L, 1);
    if (!module_name_ok(name, n))
        return luaL_error(L, "module name '%s' is not allowed (letters, digits, _ - .)", name);
    int rc = -1;
    for (const char *const *ok = policy_embedded_ok; *ok && rc < 0; ok++) {
        if (strcmp(*ok, name) != 0)
            continue;
        for (const struct lua_embedded *m = lua_embedded_modules; m->module; m++)
            if (strcmp(m->module, name) == 0) {
                lua_pushfstring(L, "@%s", m->path);
                rc = luaL_loadbufferx(L, m->source, m->len, lua_tostring(L, -1), "t");
                lua_remove(L, -2);
                break;
            }
    }
    if (rc < 0) {
        lua_getfield(L, LUA_REGISTRYINDEX, POLICY_REG_DIR);
        const char *dir = lua_tostring(L, -1);
        luaL_Buffer b;
        luaL_buffinit(L, &b);
        luaL_addstring(&b, dir ? dir : ".");
        luaL_addchar(&b, '/');
        for (size_t i = 0; i < n; i++)
            luaL_addchar(&b, name[i] == '.' ? '/' : name[i]);
        luaL_addstring(&b, ".lua");
        luaL_pushresult(&b);
        lua_remove(L, -2);
        const char *file = lua_tostring(L, -1);
        FILE *f = fopen(file, "r");
        if (!f)
            return luaL_error(L, "module '%s' not found (no %s; a policy may require only "
                                 "strata.text and modules beside it)", name, file);
        fclose(f);
        rc = luaL_loadfilex(L, file, "t");
        lua_remove(L, -2);
    }
    if (rc != LUA_OK)
        return lua_error(L);
    lua_pushvalue(L, 1);
    lua_call(L, 1, 1);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        lua_pushboolean(L, 1);
    }
    lua_pushvalue(L, -1);
    lua_setfield(L, 2, name);
    return 1;
}

static void wrap_global(lua_State *L, const char *name, lua_CFunction fn)
{
    lua_getglobal(L, name);
    lua_pushcclosure(L, fn, 1);
    lua_setglobal(L, name);
}

void policy_host_sandbox(lua_State *L, const char *dir)
{
    static const struct {
        const char *name;
        lua_CFunction open;
    } libs[] = {
        {LUA_GNAME, luaopen_base},          {LUA_STRLIBNAME, luaopen_string},
        {LUA_TABLIBNAME, luaopen_table},    {LUA_MATHLIBNAME, luaopen_math},
        {LUA_UTF8LIBNAME, luaopen_utf8},    {LUA_COLIBNAME, luaopen_coroutine},
    };
    for (size_t i = 0; i < sizeof libs / sizeof libs[0]; i++) {
        luaL_requiref(L, libs[i].name, libs[i].open, 1);
        lua_pop(L, 1);
    }
    /* os: the clock and dates only */
    luaL_requiref(L, LUA_OSLIBNAME, luaopen_os, 0);
    lua_createtable(L, 0, 4);
    static const char *const os_ok[] = {"time", "clock", "date", "difftime", NULL};
    for (const char *const *f = os_ok; *f; f++) {
        lua_getfield(L, -2, *f);
        lua_setfield(L, -2, *f);
    }
    lua_remove(L, -2);
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    lua_pushvalue(L, -2);
    lua_setfield(L, -2, LUA_OSLIBNAME);
    lua_pop(L, 1);
    lua_setglobal(L, LUA_OSLIBNAME);

    lua_pushnil(L);
    lua_setglobal(L, "dofile");
    lua_pushnil(L);
    lua_setglobal(L, "loadfile");
    wrap_global(L, "load", sandbox_load);
    wrap_global(L, "collectgarbage", sandbox_collectgarbage);
    wrap_global(L, "setmetatable", sandbox_setmetatable);
    lua_pushcfunction(L, sandbox_print);
    lua_setglobal(L, "print");
    lua_pushcfunction(L, sandbox_require);
    lua_setglobal(L, "require");
    lua_getglobal(L, LUA_STRLIBNAME);
    lua_pushnil(L);
    lua_setfield(L, -2, "dump");
    lua_pop(L, 1);
    pattern_open(L);
    lua_pushstring(L, dir && *dir ? dir : ".");
    lua_setfield(L, LUA_REGISTRYINDEX, POLICY_REG_DIR);
}

/* ---- states ----------------------------------------------------------------- */

struct policy_host *policy_host_new(const char *path, size_t mem_max)
{
    struct policy_host *h = calloc(1, sizeof *h);
    if (!h)
        return NULL;
    snprintf(h->path, sizeof h->path, "%s", path);
    h->mem_max = mem_max ? mem_max : POLICY_MEM_DEFAULT;
    h->ref_mod = LUA_NOREF;
    h->budget.strict = 1;
    h->L = lua_newstate(host_alloc, h);
    if (!h->L) {
        free(h);
        return NULL;
    }
    lua_atpanic(h->L, host_panic);
    budget_attach(h->L, &h->budget);
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash)
        *slash = 0;
    policy_host_sandbox(h->L, slash ? dir : ".");
    /* Short-lived per-call garbage suits the generational collector. */
    lua_gc(h->L, LUA_GCGEN, 0, 0);
    return h;
}

void policy_host_free(struct policy_host *h)
{
    if (!h)
        return;
    lua_close(h->L);
    free(h);
}

lua_State *policy_host_state(struct policy_host *h) { return h->L; }
enum budget_why policy_host_last_limit(const struct policy_host *h) { return h->last_limit; }
const char *policy_host_path(const struct policy_host *h) { return h->path; }
size_t policy_host_memory(const struct policy_host *h) { return h->mem; }

void policy_host_push_module(struct policy_host *h)
{
    lua_rawgeti(h->L, LUA_REGISTRYINDEX, h->ref_mod);
}

/* ---- errors ------------------------------------------------------------------ */

/* "file:123: ..." (a position first)? */
static int has_position(const char *m)
{
    const char *c = strchr(m, ':');
    if (!c || c == m || c[1] < '0' || c[1] > '9')
        return 0;
    for (c++; *c >= '0' && *c <= '9'; c++)
        ;
    return *c == ':';
}

/* The line where the module's function `what` starts (1 when unknown). */
static int entry_line(struct policy_host *h, const char *what)
{
    if (h->ref_mod == LUA_NOREF || !what)
        return 1;
    lua_State *L = h->L;
    int line = 1;
    lua_rawgeti(L, LUA_REGISTRYINDEX, h->ref_mod);
    lua_pushstring(L, what);
    if (lua_rawget(L, -2) == LUA_TFUNCTION) {
        lua_Debug ar;
        if (lua_getinfo(L, ">S", &ar) && ar.linedefined > 0)
            line = ar.linedefined;
        lua_pop(L, 1);
    } else {
        lua_pop(L, 2);
    }
    return line;
}

/* Makes err "file:line: message" with the policy's full path: Lua shortens
 * long chunk names to "...tail". */
static void format_error(struct policy_host *h, const char *what, char *err, size_t errlen)
{
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", err);
    if (h->oom) {
        snprintf(err, errlen, "%s:%d: %s exceeded its memory limit (%zu MB)", h->path,
                 entry_line(h, what), what ? what : "policy code", h->mem_max >> 20);
        return;
    }
    if (strncmp(msg, "...", 3) == 0) {
        const char *colon = strchr(msg + 3, ':');
        size_t tail = colon ? (size_t)(colon - (msg + 3)) : 0;
        size_t pl = strlen(h->path);
        if (colon && tail <= pl && memcmp(h->path + pl - tail, msg + 3, tail) == 0) {
            snprintf(err, errlen, "%s%s", h->path, colon);
            return;
        }
    }
    if (!has_position(msg))
        snprintf(err, errlen, "%s:%d: %s", h->path, entry_line(h, what), msg);
}

int policy_host_call(struct policy_host *h, const char *what, int nargs, int nresults,
                     long instructions, double seconds, char *err, size_t errlen)
{
    h->oom = 0;
    budget_begin(&h->budget, instructions, seconds, what);
    int rc = luahost_pcall(h->L, nargs, nresults, err, errlen);
    h->last_limit = h->budget.expired;
    budget_end(&h->budget);
    if (rc < 0)
        format_error(h, what, err, errlen);
    return rc;
}

int policy_host_resume(struct policy_host *h, lua_State *co, int nargs, int *nres,
                       long instructions, double seconds, char *err, size_t errlen)
{
    h->oom = 0;
    budget_begin(&h->budget, instructions, seconds, "the handler");
    int st = lua_resume(co, h->L, nargs, nres);
    h->last_limit = h->budget.expired;
    budget_end(&h->budget);
    if (st == LUA_OK || st == LUA_YIELD)
        return st;
    const char *msg = lua_tostring(co, -1);
    snprintf(err, errlen, "%s", msg ? msg : "(error object is not a string)");
    char *nl = strchr(err, '\n');
    if (nl)
        *nl = 0;
    format_error(h, NULL, err, errlen);
    lua_pop(co, 1);
    return -1;
}

/* ---- loading -------------------------------------------------------------- */

static int keep_module(lua_State *L)
{
    struct policy_host *h = lua_touserdata(L, 1);
    lua_pushvalue(L, 2);
    h->ref_mod = luaL_ref(L, LUA_REGISTRYINDEX);
    return 0;
}

int policy_host_load(struct policy_host *h, const char *const *needs, enum policy_stage *stage,
                     char *err, size_t errlen)
{
    lua_State *L = h->L;
    enum policy_stage st = POLICY_STAGE_LOAD;
    int top = lua_gettop(L);
    /* parsing runs no user code, but its memory counts like an entry's */
    h->oom = 0;
    budget_begin(&h->budget, POLICY_LOAD_BUDGET, POLICY_LOAD_SECONDS, "loading the file");
    int lrc = luaL_loadfilex(L, h->path, "t");
    budget_end(&h->budget);
    if (lrc != LUA_OK) {
        snprintf(err, errlen, "%s", lua_tostring(L, -1) ? lua_tostring(L, -1) : "cannot load");
        lua_settop(L, top);
        format_error(h, "loading the file", err, errlen);
        goto fail;
    }
    if (policy_host_call(h, "the module's top-level code", 0, 1, POLICY_LOAD_BUDGET,
                         POLICY_LOAD_SECONDS, err, errlen) < 0)
        goto fail;
    st = POLICY_STAGE_SHAPE;
    if (!lua_istable(L, -1)) {
        snprintf(err, errlen, "%s:1: policy module must return a table, not %s", h->path,
                 luaL_typename(L, -1));
        goto fail;
    }
    for (const char *const *fn = needs; fn && *fn; fn++) {
        lua_pushstring(L, *fn);
        int t = lua_rawget(L, -2);
        lua_pop(L, 1);
        if (t != LUA_TFUNCTION) {
            snprintf(err, errlen, "%s:1: policy module has no function '%s' (no %s())", h->path,
                     *fn, *fn);
            goto fail;
        }
    }
    lua_pushcfunction(L, keep_module);
    lua_pushlightuserdata(L, h);
    lua_pushvalue(L, -3);
    if (lua_pcall(L, 2, 0, 0) != LUA_OK) {
        snprintf(err, errlen, "%s: out of memory", h->path);
        goto fail;
    }
    st = POLICY_STAGE_VALIDATE;
    lua_pushliteral(L, "validate");
    int vt = lua_rawget(L, -2);
    if (vt == LUA_TFUNCTION) {
        if (policy_host_call(h, "validate", 0, 2, POLICY_LOAD_BUDGET, POLICY_LOAD_SECONDS, err,
                             errlen) < 0)
            goto fail;
        if (lua_type(L, -2) == LUA_TBOOLEAN && !lua_toboolean(L, -2)) {
            const char *why = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
            snprintf(err, errlen, "%s:%d: validate() returned false: %s", h->path,
                     entry_line(h, "validate"), why ? why : "no reason given");
            goto fail;
        }
    } else if (vt != LUA_TNIL) {
        snprintf(err, errlen, "%s:1: validate must be a function, not %s", h->path,
                 lua_typename(L, vt));
        goto fail;
    }
    lua_settop(L, top);
    return 0;
fail:
    lua_settop(L, top);
    if (stage)
        *stage = st;
    return -1;
}

struct policy_host *policy_host_open(const char *path, const char *const *needs, size_t mem_max,
                                     char *err, size_t errlen)
{
    struct policy_host *h = policy_host_new(path, mem_max);
    if (!h) {
        snprintf(err, errlen, "%s: out of memory", path);
        return NULL;
    }
    if (policy_host_load(h, needs, NULL, err, errlen) < 0) {
        policy_host_free(h);
        return NULL;
    }
    return h;
}

/* check_policy(file, {needs...}): loads the policy file in a sandboxed,
 * budgeted state of its own (policy_host.h), runs its validate(), and
 * frees it. true, or nil, "file:line: message", stage ("load", "shape",
 * "validate"). The topology never runs policy code in its own state. */
int policy_host_check_lua(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    const char *needs[9] = {NULL};
    if (lua_istable(L, 2))
        for (int i = 0; i < 8 && lua_rawgeti(L, 2, i + 1) == LUA_TSTRING; i++) {
            needs[i] = lua_tostring(L, -1); /* anchored by the table */
            lua_pop(L, 1);
        }
    char err[1024];
    enum policy_stage stage = POLICY_STAGE_LOAD;
    struct policy_host *h = policy_host_new(path, POLICY_MEM_DEFAULT);
    int rc = h ? policy_host_load(h, needs, &stage, err, sizeof err) : -1;
    if (!h)
        snprintf(err, sizeof err, "%s: out of memory", path);
    policy_host_free(h);
    if (rc == 0) {
        lua_pushboolean(L, 1);
        return 1;
    }
    luaL_pushfail(L);
    lua_pushstring(L, err);
    lua_pushstring(L, stage == POLICY_STAGE_VALIDATE ? "validate"
                      : stage == POLICY_STAGE_SHAPE  ? "shape"
                                                     : "load");
    return 3;
}
