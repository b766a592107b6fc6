/* web_cached: the single flights behind ctx:cached (the Lua half is in
 * lua/strata/web_app.lua).
 *
 * One flight per key per app state: the first request to miss a key leads
 * (runs the loader); the others that miss it meanwhile wait on the flight
 * and get the leader's value, so 100 concurrent misses make one load. A
 * flight that ends well stays a short while as a memo (WEB_FLIGHT_MEMO
 * seconds at most, the value's TTL at least) for misses whose cache read
 * left before the value was stored; a ctx.cache:set or del of the key on
 * this node drops the memo. A leader that fails, or whose request ends
 * (an error, a limit, the client leaving), fails the flight and its
 * waiters try again: one of them leads next. */
#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>

#include "web_node.h"

#define FLIGHT_BUCKETS 1024
#define FLIGHT_MAX 100000

struct web_flight {
    struct web_flight *next;
    struct web_task *leader;  /* NULL once done */
    struct web_task *waiters; /* chained by flight_next */
    int done;
    int stale;                /* the key was written while loading: no memo */
    double memo_until;
    int value_ref;
    size_t klen;
    char key[];
};

struct web_flights {
    struct web_flight *b[FLIGHT_BUCKETS];
    int n;
};

struct web_flights *web_flights_new(void) { return calloc(1, sizeof(struct web_flights)); }

void web_flights_free(lua_State *L, struct web_flights *fs)
{
    (void)L; /* the state closes with its references */
    for (int i = 0; i < FLIGHT_BUCKETS; i++)
        while (fs->b[i]) {
            struct web_flight *f = fs->b[i];
            fs->b[i] = f->next;
            free(f);
        }
    free(fs);
}

static unsigned bucket_of(const char *k, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)k[i]) * 16777619u;
    return h % FLIGHT_BUCKETS;
}

static void unlink_flight(lua_State *L, struct web_flights *fs, struct web_flight *f)
{
    struct web_flight **pp = &fs->b[bucket_of(f->key, f->klen)];
    while (*pp && *pp != f)
        pp = &(*pp)->next;
    if (*pp)
        *pp = f->next;
    fs->n--;
    if (L)
        luaL_unref(L, LUA_REGISTRYINDEX, f->value_ref);
    free(f);
}

/* The flight of key; expired memos on the way are dropped. */
static struct web_flight *find(lua_State *L, struct web_flights *fs, const char *k, size_t n,
                               double now)
{
    struct web_flight **pp = &fs->b[bucket_of(k, n)];
    while (*pp) {
        struct web_flight *f = *pp;
        if (f->done && now >= f->memo_until) {
            *pp = f->next;
            fs->n--;
            luaL_unref(L, LUA_REGISTRYINDEX, f->value_ref);
            free(f);
            continue;
        }
        if (f->klen == n && memcmp(f->key, k, n) == 0)
            return f;
        pp = &f->next;
    }
    return NULL;
}

static struct web_flights *flights_of(struct web_task *t) { return t->r->gen->app->flights; }

static int wait_cont(lua_State *L, int status, lua_KContext kc)
{
    (void)status, (void)kc;
    struct web_task *t = web_task_check(L, 1, "ctx:cached");
    if (t->wake_status) {
        lua_pushliteral(L, "hit");
        lua_rawgeti(L, LUA_REGISTRYINDEX, t->wake_ref);
        luaL_unref(L, LUA_REGISTRYINDEX, t->wake_ref);
        t->wake_ref = LUA_NOREF;
        return 2;
    }
    lua_pushliteral(L, "retry");
    return 1;
}

/* Waits on a running flight, or answers from a memo; 0 when neither. */
static int join_or_nil(lua_State *L, struct web_task *t, struct web_flight *f)
{
    if (!f)
        return -1;
    if (f->done) {
        lua_pushliteral(L, "hit");
        lua_rawgeti(L, LUA_REGISTRYINDEX, f->value_ref);
        return 2;
    }
    if (f->leader == t)
        return luaL_error(L, "ctx:cached: the loader of '%s' needs its own value", f->key);
    t->flight = f;
    t->flight_next = f->waiters;
    f->waiters = t;
    t->wake_status = 0;
    t->wait = WEB_WAIT_FLIGHT;
    t->r->w->st.flight_waits++;
    return lua_yieldk(L, 0, 0, wait_cont);
}

/* prim.join(ctx, key): "hit", value | "retry" (after waiting) | nil */
static int prim_join(lua_State *L)
{
    struct web_task *t = web_task_check(L, 1, "ctx:cached");
    size_t n;
    const char *k = luaL_checklstring(L, 2, &n);
    struct web_flight *f = find(L, flights_of(t), k, n, ev_now(t->r->w->loop));
    int rc = join_or_nil(L, t, f);
    if (rc >= 0)
        return rc;
    lua_pushnil(L);
    return 1;
}

/* prim.lead(ctx, key): true (this task leads) | as join */
static int prim_lead(lua_State *L)
{
    struct web_task *t = web_task_check(L, 1, "ctx:cached");
    size_t n;
    const char *k = luaL_checklstring(L, 2, &n);
    struct web_flights *fs = flights_of(t);
    struct web_flight *f = find(L, fs, k, n, ev_now(t->r->w->loop));
    int rc = join_or_nil(L, t, f);
    if (rc >= 0)
        return rc;
    lua_pushboolean(L, 1);
    if (fs->n >= FLIGHT_MAX)
        return 1; /* too many keys in flight: this one loads without one */
    f = calloc(1, sizeof *f + n + 1);
    if (!f)
        return 1;
    memcpy(f->key, k, n);
    f->klen = n;
    f->leader = t;
    f->value_ref = LUA_NOREF;
    unsigned b = bucket_of(k, n);
    f->next = fs->b[b];
    fs->b[b] = f;
    fs->n++;
    t->nleads++;
    t->r->w->st.flights++;
    return 1;
}

static struct web_flight *led_by(lua_State *L, struct web_task *t, int keyidx)
{
    size_t n;
    const char *k = luaL_checklstring(L, keyidx, &n);
    struct web_flight *f = find(L, flights_of(t), k, n, ev_now(t->r->w->loop));
    return f && f->leader == t ? f : NULL;
}

/* Wakes every waiter: with the value at vidx (hit), or to retry (vidx 0). */
static void wake_all(lua_State *L, struct web_flight *f, int vidx)
{
    while (f->waiters) {
        struct web_task *w = f->waiters;
        f->waiters = w->flight_next;
        w->flight = NULL;
        w->wake_status = vidx != 0;
        if (vidx) {
            lua_pushvalue(L, vidx);
            w->wake_ref = luaL_ref(L, LUA_REGISTRYINDEX);
        }
        web_task_wake(w);
    }
}

/* prim.done(ctx, key, value, life) */
static int prim_done(lua_State *L)
{
    struct web_task *t = web_task_check(L, 1, "ctx:cached");
    lua_Number life = luaL_optnumber(L, 4, 0);
    lua_settop(L, 3);
    struct web_flight *f = led_by(L, t, 2);
    if (!f)
        return 0;
    t->nleads--;
    f->leader = NULL;
    f->done = 1;
    wake_all(L, f, 3);
    if (life <= 0 || f->stale) {
        unlink_flight(L, flights_of(t), f);
        return 0;
    }
    f->memo_until = ev_now(t->r->w->loop) + (life < WEB_FLIGHT_MEMO ? life : WEB_FLIGHT_MEMO);
    lua_pushvalue(L, 3);
    f->value_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return 0;
}

static void fail_flight(lua_State *L, struct web_flights *fs, struct web_task *t,
                        struct web_flight *f)
{
    t->nleads--;
    f->leader = NULL;
    wake_all(L, f, 0);
    unlink_flight(L, fs, f);
}

/* prim.fail(ctx, key) */
static int prim_fail(lua_State *L)
{
    struct web_task *t = web_task_check(L, 1, "ctx:cached");
    struct web_flight *f = led_by(L, t, 2);
    if (f)
        fail_flight(L, flights_of(t), t, f);
    return 0;
}

/* prim.count(ctx, hit): the node's cached hit/miss counters */
static int prim_count(lua_State *L)
{
    struct web_task *t = web_task_check(L, 1, "ctx:cached");
    if (lua_toboolean(L, 2))
        t->r->w->st.cache_hits++;
    else
        t->r->w->st.cache_misses++;
    return 0;
}

void web_cached_task_end(struct web_task *t)
{
    struct web_app *a = t->r->gen->app;
    if (!a)
        return;
    struct web_flight *f = t->flight;
    if (f) { /* stop waiting */
        struct web_task **pp = &f->waiters;
        while (*pp && *pp != t)
            pp = &(*pp)->flight_next;
        if (*pp)
            *pp = t->flight_next;
        t->flight = NULL;
    }
    if (t->nleads > 0) {
        struct web_flights *fs = a->flights;
        for (int i = 0; i < FLIGHT_BUCKETS && t->nleads > 0; i++) {
            struct web_flight *x = fs->b[i];
            while (x) {
                struct web_flight *next = x->next;
                if (x->leader == t)
                    fail_flight(a->L, fs, t, x);
                x = next;
            }
        }
    }
}

void web_cached_forget(struct web_app *a, const char *key, size_t len)
{
    if (!a || !key)
        return;
    struct web_flights *fs = a->flights;
    struct web_flight *f = fs->b[bucket_of(key, len)];
    for (; f; f = f->next)
        if (f->klen == len && memcmp(f->key, key, len) == 0)
            break;
    if (!f)
        return;
    if (f->done)
        unlink_flight(a->L, fs, f);
    else
        f->stale = 1;
}

void web_cached_register(lua_State *L)
{
    static const luaL_Reg prim[] = {
        {"join", prim_join}, {"lead", prim_lead},   {"done", prim_done},
        {"fail", prim_fail}, {"count", prim_count}, {NULL, NULL},
    };
    luaL_newlib(L, prim);
    lua_setfield(L, LUA_REGISTRYINDEX, "strata.web.prim");
}
