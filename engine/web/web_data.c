/* web_data: ctx.cache and ctx.db, the app's calls to the node's cache and
 * db clients (engine/client). Each call starts the client's call and
 * yields the task; the client's callback copies the reply (it is valid
 * only during the callback) and wakes the task, whose continuation turns
 * it into Lua values. A reply that comes at once (a dead shard) is
 * returned without yielding.
 *
 * What a call returns (docs/web.md): for the cache, a failure is a miss
 * (get: nil, set: false, del: 0); for the db, a failure is nil plus the
 * error text, and nil alone is "no such key". A task that ends (the
 * handler failed, the client left, the deadline passed) cancels its
 * pending call. */
#include <hiredis/hiredis.h>
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "web_node.h"

#define CACHE_MT "strata.web.cache"
#define DB_MT "strata.web.db"
#define DATA_MAX_ARGS 256
#define REPLY_MAX_DEPTH 16

/* A reply copied into one block: nodes, then their bytes. */
struct web_reply {
    int type;
    long long integer;
    const char *str;
    size_t len;
    size_t n;
    struct web_reply *el;
};

enum data_op {
    OP_CACHE_GET = 1, OP_CACHE_SET, OP_CACHE_DEL, OP_CACHE_INCR, OP_CACHE_EXPIRE,
    OP_CACHE_MGET, OP_DB,
};

/* ---- copying replies ------------------------------------------------------ */

static void reply_size(const redisReply *r, int depth, size_t *nodes, size_t *bytes)
{
    (*nodes)++;
    if (r->str && r->type != REDIS_REPLY_ARRAY)
        *bytes += r->len + 1;
    if (r->type == REDIS_REPLY_ARRAY && depth < REPLY_MAX_DEPTH)
        for (size_t i = 0; i < r->elements; i++)
            reply_size(r->element[i], depth + 1, nodes, bytes);
}

static void reply_fill(struct web_reply *d, const redisReply *r, int depth,
                       struct web_reply **next_node, char **next_byte)
{
    d->type = r->type;
    d->integer = r->integer;
    d->str = NULL;
    d->len = 0;
    d->n = 0;
    d->el = NULL;
    if (r->str && r->type != REDIS_REPLY_ARRAY) {
        memcpy(*next_byte, r->str, r->len);
        (*next_byte)[r->len] = 0;
        d->str = *next_byte;
        d->len = r->len;
        *next_byte += r->len + 1;
    }
    if (r->type == REDIS_REPLY_ARRAY && depth < REPLY_MAX_DEPTH) {
        d->n = r->elements;
        d->el = *next_node;
        *next_node += r->elements;
        for (size_t i = 0; i < r->elements; i++)
            reply_fill(&d->el[i], r->element[i], depth + 1, next_node, next_byte);
    }
}

static struct web_reply *reply_copy(const redisReply *r)
{
    size_t nodes = 0, bytes = 0;
    reply_size(r, 0, &nodes, &bytes);
    struct web_reply *blk = malloc(nodes * sizeof *blk + bytes + 1);
    if (!blk)
        return NULL;
    struct web_reply *next_node = blk + 1;
    char *next_byte = (char *)(blk + nodes);
    reply_fill(blk, r, 0, &next_node, &next_byte);
    return blk;
}


static void on_reply(void *ud, const struct redisReply *reply, const char *error)
{
    struct web_task *t = ud;
    t->call = NULL;
    free(t->reply);
    t->reply = reply ? reply_copy(reply) : NULL;
    snprintf(t->call_err, sizeof t->call_err, "%s",
             reply && !t->reply ? "out of memory" : error ? error : "");
    t->call_ready = 1;
    if (t->wait == WEB_WAIT_CALL)
        web_task_wake(t);
}


void web_data_task_end(struct web_task *t)
{
    if (t->call)
        kvc_cancel(t->call);
    t->call = NULL;
}

/* ---- replies into Lua ------------------------------------------------------- */

/* A db reply as the contract says: value, or nil + error text. */
static int push_value(lua_State *L, const struct web_reply *r, int depth)
{
    luaL_checkstack(L, 4, "reply");
    switch (r->type) {
    case REDIS_REPLY_STRING:
        lua_pushlstring(L, r->str ? r->str : "", r->len);
        return 1;
    case REDIS_REPLY_INTEGER:
        lua_pushinteger(L, (lua_Integer)r->integer);
        return 1;
    case REDIS_REPLY_STATUS:
        if (r->len == 2 && memcmp(r->str, "OK", 2) == 0)
            lua_pushboolean(L, 1);
        else
            lua_pushlstring(L, r->str ? r->str : "", r->len);
        return 1;
    case REDIS_REPLY_ERROR:
        lua_pushnil(L);
        lua_pushlstring(L, r->str ? r->str : "error", r->len);
        return 2;
    case REDIS_REPLY_ARRAY:
        lua_createtable(L, (int)(r->n < 100000 ? r->n : 100000), 0);
        for (size_t i = 0; i < r->n; i++) {
            if (r->el[i].type == REDIS_REPLY_NIL || depth >= REPLY_MAX_DEPTH)
                lua_pushboolean(L, 0);
            else if (push_value(L, &r->el[i], depth + 1) == 2)
                lua_pop(L, 1); /* an error inside an array: its text */
            lua_rawseti(L, -2, (lua_Integer)i + 1);
        }
        return 1;
    default:
        lua_pushnil(L);
        return 1;
    }
}

static int push_result(lua_State *L, struct web_task *t, int op, lua_Integer acc)
{
    const struct web_reply *r = t->reply;
    switch (op) {
    case OP_CACHE_GET:
        if (r && r->type == REDIS_REPLY_STRING)
            lua_pushlstring(L, r->str, r->len);
        else
            lua_pushnil(L);
        return 1;
    case OP_CACHE_SET:
        lua_pushboolean(L, r && r->type == REDIS_REPLY_STATUS);
        return 1;
    case OP_CACHE_EXPIRE:
        lua_pushboolean(L, r && r->type == REDIS_REPLY_INTEGER && r->integer == 1);
        return 1;
    case OP_CACHE_INCR:
        if (r && r->type == REDIS_REPLY_INTEGER)
            lua_pushinteger(L, (lua_Integer)r->integer);
        else
            lua_pushnil(L);
        return 1;
    case OP_CACHE_DEL:
        lua_pushinteger(L, acc);
        return 1;
    case OP_CACHE_MGET:
        if (r && r->type == REDIS_REPLY_ARRAY)
            return push_value(L, r, 0);
        lua_createtable(L, (int)acc, 0);
        for (lua_Integer i = 1; i <= acc; i++) {
            lua_pushboolean(L, 0);
            lua_rawseti(L, -2, i);
        }
        return 1;
    default:
        if (!r) {
            lua_pushnil(L);
            lua_pushstring(L, t->call_err[0] ? t->call_err : "db unreachable");
            return 2;
        }
        if (r->type == REDIS_REPLY_NIL) {
            lua_pushnil(L);
            return 1;
        }
        return push_value(L, r, 0);
    }
}

/* ---- calls ---------------------------------------------------------------------- */

struct call_args {
    int argc;
    const char *argv[DATA_MAX_ARGS];
    size_t len[DATA_MAX_ARGS];
};

static void arg_push(lua_State *L, struct call_args *a, const char *s, size_t n)
{
    if (a->argc >= DATA_MAX_ARGS) {
        luaL_error(L, "too many arguments (at most %d)", DATA_MAX_ARGS - 1);
        return;
    }
    a->argv[a->argc] = s;
    a->len[a->argc++] = n;
}

static void arg_from(lua_State *L, struct call_args *a, int idx, const char *what)
{
    int t = lua_type(L, idx);
    if (t != LUA_TSTRING && t != LUA_TNUMBER)
        luaL_error(L, "%s: argument %d must be a string or a number, not %s", what, idx - 1,
                   lua_typename(L, t));
    size_t n;
    const char *s = lua_tolstring(L, idx, &n);
    arg_push(L, a, s, n);
}

/* The task on L whose ctx owns the data object at 1. */
static struct web_task *data_task(lua_State *L, const char *mt, const char *what)
{
    luaL_checkudata(L, 1, mt);
    lua_getiuservalue(L, 1, 1);
    struct web_task *t = web_task_check(L, lua_gettop(L), what);
    lua_pop(L, 1);
    return t;
}

static int data_cont(lua_State *L, int status, lua_KContext kc);

/* Starts one call for task t and yields, or returns at once when the
 * client answered at once. kc: the op and, for a multi-key DEL, state. */
static int data_call(lua_State *L, struct web_task *t, int db, struct call_args *a,
                     lua_KContext kc)
{
    struct web_req *r = t->r;
    struct web_gen *g = r->gen;
    t->call_ready = 0;
    free(t->reply);
    t->reply = NULL;
    t->call_err[0] = 0;
    struct kvc_call *c;
    if (db)
        c = db_client_call(g->db, g->cfg.read_your_writes ? &r->sess : NULL, a->argc, a->argv,
                           a->len, on_reply, t);
    else
        c = cache_client_call(g->cache, a->argv[1], a->len[1], a->argc, a->argv, a->len,
                              on_reply, t);
    if (t->call_ready) {
        t->call = NULL;
        return data_cont(L, LUA_OK, kc);
    }
    if (!c) {
        snprintf(t->call_err, sizeof t->call_err, "out of memory");
        return data_cont(L, LUA_OK, kc);
    }
    t->call = c;
    t->wait = WEB_WAIT_CALL;
    return lua_yieldk(L, 0, kc, data_cont);
}

static int mget_call(lua_State *L, struct web_task *t, struct call_args *a)
{
    struct web_gen *g = t->r->gen;
    t->call_ready = 0;
    free(t->reply);
    t->reply = NULL;
    lua_KContext kc = OP_CACHE_MGET | ((lua_KContext)(a->argc - 1) << 8);
    struct kvc_call *c = cache_client_mget(g->cache, a->argc - 1, a->argv + 1, a->len + 1,
                                           on_reply, t);
    if (t->call_ready || !c) {
        t->call = NULL;
        return data_cont(L, LUA_OK, kc);
    }
    t->call = c;
    t->wait = WEB_WAIT_CALL;
    return lua_yieldk(L, 0, kc, data_cont);
}

/* cache:del(k1, k2, ...): one call per key (keys live on different shards);
 * kc holds the op, the next key's argument index and the count so far. */
static int del_next(lua_State *L, struct web_task *t, int argi, lua_Integer count)
{
    struct call_args a = {0};
    arg_push(L, &a, "DEL", 3);
    arg_from(L, &a, argi, "ctx.cache:del");
    size_t kl;
    const char *k = lua_tolstring(L, argi, &kl);
    web_cached_forget(t->r->gen->app, k, kl);
    lua_KContext kc = OP_CACHE_DEL | ((lua_KContext)argi << 8) | ((lua_KContext)count << 24);
    return data_call(L, t, 0, &a, kc);
}

static int data_cont(lua_State *L, int status, lua_KContext kc)
{
    (void)status;
    int op = (int)(kc & 0xff);
    const char *mt = op == OP_DB ? DB_MT : CACHE_MT;
    struct web_task *t = data_task(L, mt, op == OP_DB ? "ctx.db" : "ctx.cache");
    if (op == OP_CACHE_DEL) {
        int argi = (int)((kc >> 8) & 0xffff);
        lua_Integer count = (lua_Integer)(kc >> 24);
        if (t->reply && t->reply->type == REDIS_REPLY_INTEGER)
            count += t->reply->integer;
        if (argi < lua_gettop(L) && argi + 1 <= DATA_MAX_ARGS)
            return del_next(L, t, argi + 1, count);
        return push_result(L, t, op, count);
    }
    return push_result(L, t, op, (lua_Integer)(kc >> 8));
}

/* ---- ctx.cache --------------------------------------------------------------------- */

static int cache_get(lua_State *L)
{
    struct web_task *t = data_task(L, CACHE_MT, "ctx.cache:get");
    struct call_args a = {0};
    arg_push(L, &a, "GET", 3);
    arg_from(L, &a, 2, "ctx.cache:get");
    return data_call(L, t, 0, &a, OP_CACHE_GET);
}

static int cache_set(lua_State *L)
{
    struct web_task *t = data_task(L, CACHE_MT, "ctx.cache:set");
    struct call_args a = {0};
    arg_push(L, &a, "SET", 3);
    arg_from(L, &a, 2, "ctx.cache:set");
    arg_from(L, &a, 3, "ctx.cache:set");
    char ms[32];
    if (!lua_isnoneornil(L, 4)) {
        lua_Number ttl = luaL_checknumber(L, 4);
        luaL_argcheck(L, ttl > 0 && ttl < 1e9, 4, "a ttl is a positive number of seconds");
        long long v = (long long)(ttl * 1000.0);
        snprintf(ms, sizeof ms, "%lld", v < 1 ? 1 : v);
        arg_push(L, &a, "PX", 2);
        arg_push(L, &a, ms, strlen(ms));
    }
    web_cached_forget(t->r->gen->app, a.argv[1], a.len[1]);
    return data_call(L, t, 0, &a, OP_CACHE_SET);
}

static int cache_del(lua_State *L)
{
    struct web_task *t = data_task(L, CACHE_MT, "ctx.cache:del");
    luaL_checkany(L, 2);
    return del_next(L, t, 2, 0);
}

static int cache_incr(lua_State *L)
{
    struct web_task *t = data_task(L, CACHE_MT, "ctx.cache:incr");
    struct call_args a = {0};
    arg_push(L, &a, "INCR", 4);
    arg_from(L, &a, 2, "ctx.cache:incr");
    return data_call(L, t, 0, &a, OP_CACHE_INCR);
}

static int cache_expire(lua_State *L)
{
    struct web_task *t = data_task(L, CACHE_MT, "ctx.cache:expire");
    struct call_args a = {0};
    arg_push(L, &a, "EXPIRE", 6);
    arg_from(L, &a, 2, "ctx.cache:expire");
    luaL_checkinteger(L, 3);
    arg_from(L, &a, 3, "ctx.cache:expire");
    return data_call(L, t, 0, &a, OP_CACHE_EXPIRE);
}

static int cache_mget(lua_State *L)
{
    struct web_task *t = data_task(L, CACHE_MT, "ctx.cache:mget");
    struct call_args a = {0};
    arg_push(L, &a, "MGET", 4);
    int top = lua_gettop(L);
    if (top < 2)
        return luaL_error(L, "ctx.cache:mget needs at least one key");
    for (int i = 2; i <= top; i++)
        arg_from(L, &a, i, "ctx.cache:mget");
    return mget_call(L, t, &a);
}

/* ---- ctx.db ---------------------------------------------------------------------------- */

/* db:<cmd>(args...) with the command as the upvalue; db:call("CMD", ...). */
static int db_cmd(lua_State *L)
{
    struct web_task *t = data_task(L, DB_MT, "ctx.db");
    struct call_args a = {0};
    size_t n;
    const char *cmd = lua_tolstring(L, lua_upvalueindex(1), &n);
    int first = 2;
    if (!cmd) {
        cmd = luaL_checklstring(L, 2, &n);
        first = 3;
    }
    arg_push(L, &a, cmd, n);
    int top = lua_gettop(L);
    for (int i = first; i <= top; i++)
        arg_from(L, &a, i, "ctx.db");
    if (!t->r->gen->db)
        return luaL_error(L, "ctx.db: this web service has no db");
    return data_call(L, t, 1, &a, OP_DB);
}

void web_data_push(lua_State *L, struct web_req *r, int db)
{
    if (db ? !r->gen->db : !r->gen->cache) {
        lua_pushnil(L);
        return;
    }
    lua_newuserdatauv(L, 0, 1);
    lua_pushvalue(L, 1); /* the ctx */
    lua_setiuservalue(L, -2, 1);
    luaL_setmetatable(L, db ? DB_MT : CACHE_MT);
}

void web_data_register(lua_State *L)
{
    static const luaL_Reg cache_methods[] = {
        {"get", cache_get},   {"set", cache_set},       {"del", cache_del},
        {"incr", cache_incr}, {"expire", cache_expire}, {"mget", cache_mget},
        {NULL, NULL},
    };
    luaL_newmetatable(L, CACHE_MT);
    luaL_newlib(L, cache_methods);
    lua_setfield(L, -2, "__index");
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    lua_pop(L, 1);

    static const char *const db_cmds[] = {"get", "set", "del", "incr", "incrby", "decr",
                                          "decrby", "expire", "ttl", "exists", "mget", "mset",
                                          "hget", "hset", "hgetall", "hdel", "sadd", "smembers",
                                          "lpush", "lrange", NULL};
    luaL_newmetatable(L, DB_MT);
    lua_newtable(L);
    for (const char *const *c = db_cmds; *c; c++) {
        char up[16];
        size_t i = 0;
        for (; (*c)[i] && i < sizeof up - 1; i++)
            up[i] = (char)((*c)[i] - 32);
        lua_pushlstring(L, up, i);
        lua_pushcclosure(L, db_cmd, 1);
        lua_setfield(L, -2, *c);
    }
    lua_pushnil(L);
    lua_pushcclosure(L, db_cmd, 1);
    lua_setfield(L, -2, "call");
    lua_setfield(L, -2, "__index");
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    lua_pop(L, 1);
}
