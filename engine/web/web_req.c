/* web_req: one request of the app -- its Lua tasks (the handler's
 * coroutine and those of ctx:all), the ctx object, the answer, and the
 * limits every request runs under.
 *
 * A task is a coroutine of the app state resumed through the policy host,
 * each resume one budgeted entry; the request's instructions and its
 * deadline are shared by all its resumes and tasks. A task waits (yields)
 * in a C function that recorded what it waits for; whatever ends the wait
 * (a reply, a flight's end, the output drained) wakes it, and its
 * continuation pushes the result. Wakes that happen while Lua runs (a
 * client answering at once, a connection closing) are queued and run
 * after the resume in progress, so resumes never nest.
 *
 * Nothing of a request is freed inside a callback: an ended request moves
 * to the worker's dead list and the reaper (an ev_prepare) frees it, its
 * coroutines and its hold on the generation. */
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "log.h"
#include "util.h"
#include "policy_host.h"
#include "web_node.h"

#define CTX_MT "strata.web.ctx"
#define CTX_METHODS "strata.web.ctx.methods"
/* Output of a streamed answer beyond which ctx:write waits for the client. */
#define WEB_WRITE_HIGH (256 * 1024)

struct ctx_ud {
    struct web_req *r;
};

static void task_resume(struct web_task *t, int nargs);
static void req_fail(struct web_req *r, const char *why, const char *trace, int limit);

/* ---- small helpers ---------------------------------------------------------- */

/* Percent-decodes s[0..n) onto L's stack ('+' is a space in a query). */
static void push_decoded(lua_State *L, const char *s, size_t n, int plus)
{
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '%' && i + 2 < n && util_hexval((unsigned char)s[i + 1]) >= 0 &&
            util_hexval((unsigned char)s[i + 2]) >= 0) {
            luaL_addchar(&b, (char)(util_hexval((unsigned char)s[i + 1]) * 16 +
                                    util_hexval((unsigned char)s[i + 2])));
            i += 2;
        } else if (c == '+' && plus) {
            luaL_addchar(&b, ' ');
        } else {
            luaL_addchar(&b, c);
        }
    }
    luaL_pushresult(&b);
}

void web_worker_next_id(struct web_worker *w, char *out, size_t n)
{
    snprintf(out, n, "%08x%02x%06llx", w->id_seed, (unsigned)(w->index & 0xff),
             (unsigned long long)(++w->id_next & 0xffffff));
}

/* An id the client (or a balancer in front) sent, when it looks like one. */
static int id_ok(const char *s, size_t n)
{
    if (n == 0 || n > 40)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              c == '-' || c == '_' || c == '.'))
            return 0;
    }
    return 1;
}

/* The strata-ryw cookie: the db offset a session has written up to.
 * Hostile input: digits only, at most 19 of them; anything else is no
 * cookie. */
static uint64_t ryw_cookie(const struct http_req *hr)
{
    uint64_t best = 0;
    for (int i = 0; i < hr->nhdrs; i++) {
        const struct http_hdr *h = &hr->hdrs[i];
        if (h->name_len != 6 || strncasecmp(h->name, "cookie", 6) != 0)
            continue;
        const char *p = h->value, *end = h->value + h->value_len;
        while (p < end) {
            while (p < end && (*p == ' ' || *p == ';'))
                p++;
            const char *semi = memchr(p, ';', (size_t)(end - p));
            const char *e = semi ? semi : end;
            if ((size_t)(e - p) > 11 && memcmp(p, "strata-ryw=", 11) == 0) {
                const char *v = p + 11;
                size_t vn = (size_t)(e - v);
                while (vn && v[vn - 1] == ' ')
                    vn--;
                uint64_t x = 0;
                int ok = vn > 0 && vn <= 19;
                for (size_t k = 0; ok && k < vn; k++) {
                    if (v[k] < '0' || v[k] > '9')
                        ok = 0;
                    else
                        x = x * 10 + (uint64_t)(v[k] - '0');
                }
                if (ok && x > best)
                    best = x;
            }
            p = e;
        }
    }
    return best;
}

/* ---- tasks --------------------------------------------------------------------- */

static struct web_task *task_new(struct web_req *r, lua_State *L)
{
    struct web_task *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->r = r;
    struct web_app *a = r->gen->app;
    if (a->npool > 0) { /* a coroutine that ended well: an empty stack, ready */
        t->co_ref = a->pool[--a->npool];
        lua_rawgeti(L, LUA_REGISTRYINDEX, t->co_ref);
        t->co = lua_tothread(L, -1);
        lua_pop(L, 1);
    } else {
        t->co = lua_newthread(L);
        t->co_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    t->results_ref = LUA_NOREF;
    t->wake_ref = LUA_NOREF;
    ev_timer_init(&t->sleep, NULL, 0, 0);
    t->next = r->tasks;
    r->tasks = t;
    return t;
}

/* Stops a task: what it waits on forgets it. Its coroutine is released by
 * the reaper (it may be the one running now). */
static void task_end(struct web_task *t)
{
    if (t->done)
        return;
    t->done = 1;
    ev_timer_stop(t->r->w->loop, &t->sleep);
    web_data_task_end(t);
    web_cached_task_end(t);
}

struct web_task *web_task_check(lua_State *L, int ctx_idx, const char *what)
{
    struct ctx_ud *u = luaL_checkudata(L, ctx_idx, CTX_MT);
    struct web_req *r = u->r;
    if (!r || r->ended)
        luaL_error(L, "%s: the request has ended", what);
    for (struct web_task *t = r->tasks; t; t = t->next)
        if (t->co == L && !t->done)
            return t;
    luaL_error(L, "%s must be called from the request's handler or a function given to "
               "ctx:all, not from a coroutine of its own or another request", what);
    return NULL;
}

struct web_req *web_ctx_req(lua_State *L, int idx)
{
    struct ctx_ud *u = luaL_testudata(L, idx, CTX_MT);
    return u ? u->r : NULL;
}

void web_task_wake(struct web_task *t)
{
    struct web_worker *w = t->r->w;
    if (t->done || t->r->ended)
        return;
    if (w->resuming) {
        if (t->queued)
            return;
        t->queued = 1;
        t->wake_next = NULL;
        if (w->wakeq_tail)
            w->wakeq_tail->wake_next = t;
        else
            w->wakeq = t;
        w->wakeq_tail = t;
        return;
    }
    task_resume(t, 0);
}

static void run_wakeq(struct web_worker *w)
{
    while (w->wakeq) {
        struct web_task *t = w->wakeq;
        w->wakeq = t->wake_next;
        if (!w->wakeq)
            w->wakeq_tail = NULL;
        t->queued = 0;
        task_resume(t, 0);
    }
}

/* ---- the answer ------------------------------------------------------------------ */

static void count_status(struct web_req *r, int status)
{
    struct web_worker *w = r->w;
    double now = ev_now(w->loop);
    latency_record(&w->lat, (now - r->started) * 1000.0, now);
    __atomic_store_n(&w->app_mem, policy_host_memory(r->gen->app->h), __ATOMIC_RELAXED);
    if (status >= 500)
        w->st.responses_5xx++;
    else if (status >= 400)
        w->st.responses_4xx++;
    else if (status >= 300)
        w->st.responses_3xx++;
    else
        w->st.responses_2xx++;
}

/* Headers every answer of the app gets once its head is decided. */
static void final_headers(struct web_req *r)
{
    if (r->sess.min_offset > r->sess_start) {
        char v[96];
        snprintf(v, sizeof v, "strata-ryw=%llu; Path=/; Max-Age=300; HttpOnly; SameSite=Lax",
                 (unsigned long long)r->sess.min_offset);
        http_resp_header(r->hr, "Set-Cookie", v);
        r->w->st.ryw_cookies++;
    }
}

/* The request is over: its tasks stop, the answer goes (finished by the
 * caller before), and it waits for the reaper. */
static void req_end(struct web_req *r)
{
    if (r->ended)
        return;
    r->ended = 1;
    struct web_worker *w = r->w;
    ev_timer_stop(w->loop, &r->timer);
    /* waiters woken by a failed flight run after, not inside this loop */
    w->resuming++;
    for (struct web_task *t = r->tasks; t; t = t->next)
        task_end(t);
    w->resuming--;
    if (r->prev)
        r->prev->next = r->next;
    else
        w->reqs = r->next;
    if (r->next)
        r->next->prev = r->prev;
    w->nreqs--;
    r->next = w->dead;
    r->prev = NULL;
    w->dead = r;
    ev_prepare_start(w->loop, &w->reaper);
    if (!w->resuming)
        run_wakeq(w);
}

/* The handler's answer: status, body, kind, headers on co's stack from
 * base (what run() returns). */
static void answer(struct web_req *r, lua_State *co, int base)
{
    struct http_req *hr = r->hr;
    int status = lua_isinteger(co, base) ? (int)lua_tointeger(co, base) : 0;
    int kind = (int)lua_tointeger(co, base + 2);
    size_t blen = 0;
    const char *body = kind ? lua_tolstring(co, base + 1, &blen) : NULL;
    if (!r->gone) {
        if (lua_istable(co, base + 3) && !r->streaming) {
            lua_Integer n = (lua_Integer)lua_rawlen(co, base + 3);
            for (lua_Integer i = 1; i + 1 <= n; i += 2) {
                lua_rawgeti(co, base + 3, i);
                lua_rawgeti(co, base + 3, i + 1);
                const char *name = lua_tostring(co, -2), *val = lua_tostring(co, -1);
                if (name && val) {
                    if (http_resp_header(hr, name, val) < 0)
                        log_warn("request %s: header '%s' refused (reserved, or a line break)",
                                 r->id, name);
                    else if (strcasecmp(name, "content-type") == 0)
                        r->has_ctype = 1;
                }
                lua_pop(co, 2);
            }
        }
        if (r->streaming) {
            if (body && blen)
                http_resp_write(hr, body, blen);
        } else {
            if (status)
                http_resp_status(hr, status);
            if (!r->has_ctype && kind)
                http_resp_header(hr, "Content-Type",
                                 kind == 2 ? "application/json" : "text/plain; charset=utf-8");
            final_headers(r);
            if (body && blen)
                buf_append(http_resp_body(hr), body, blen);
        }
    }
    count_status(r, hr->status);
    http_resp_finish(hr);
    r->hr = NULL;
    req_end(r);
}

/* A handler error or a limit: 500 with the request id, the traceback in
 * the log. A streamed answer whose head went out cannot become a 500: it is
 * cut short (http_resp_abort: no last chunk, the connection closes), so
 * neither the client nor a cache in between takes it for complete. A
 * request whose client has gone, or that the node's stop ends, gets no
 * answer at all. */
static void req_fail(struct web_req *r, const char *why, const char *trace, int limit)
{
    if (r->ended)
        return;
    struct web_worker *w = r->w;
    if (r->gone) {
        w->st.gone++;
    } else {
        if (limit)
            w->st.limits++;
        else
            w->st.errors++;
        log_error("request %s %.*s %.*s: %s%s%s", r->id, (int)r->hr->method_len, r->hr->method,
                  (int)r->hr->path_len, r->hr->path, why, trace ? "\n" : "", trace ? trace : "");
    }
    struct http_req *hr = r->hr;
    /* a stream whose head still waits behind earlier answers (pipelined)
     * can become the 500 after all */
    if (!r->gone && r->streaming && http_resp_unstream(hr) == 0)
        r->streaming = 0;
    if (!r->gone && !r->streaming) {
        buf_reset(&hr->resp_head);
        http_resp_header(hr, "X-Request-Id", r->id);
        http_resp_header(hr, "Content-Type", "application/json");
        http_resp_header(hr, "Cache-Control", "no-store");
        buf_reset(http_resp_body(hr));
        buf_printf(http_resp_body(hr), "{\"error\":\"internal error\",\"request_id\":\"%s\"}",
                   r->id);
        http_resp_status(hr, 500);
    }
    count_status(r, 500);
    if (r->gone || r->streaming) {
        if (r->streaming && !r->gone)
            w->st.cut_short++;
        http_resp_abort(hr);
    } else {
        http_resp_finish(hr);
    }
    r->hr = NULL;
    req_end(r);
}

/* A child of ctx:all ended well: its first result goes into its slot. */
static void child_done(struct web_task *t, int nres)
{
    struct web_task *p = t->parent;
    t->done = 1;
    t->finished = 1;
    if (!p || p->done)
        return;
    lua_State *co = t->co;
    if (nres > 0 && lua_checkstack(co, 2)) {
        lua_rawgeti(co, LUA_REGISTRYINDEX, p->results_ref);
        lua_pushvalue(co, -1 - nres);
        lua_rawseti(co, -2, t->slot); /* the table was made with room for every slot */
        lua_pop(co, 1);
    }
    lua_pop(co, nres);
    if (--p->pending == 0 && p->wait == WEB_WAIT_ALL)
        web_task_wake(p);
}

/* An allocation that failed has no line of its own: the line the failed
 * coroutine was running, for the message. */
static void memory_position(lua_State *co, int64_t limit, char *err, size_t errlen)
{
    lua_Debug ar;
    for (int level = 0; lua_getstack(co, level, &ar); level++) {
        if (lua_getinfo(co, "Sl", &ar) && ar.currentline > 0) {
            const char *src = ar.source && ar.source[0] == '@' ? ar.source + 1 : ar.short_src;
            snprintf(err, errlen, "%s:%d: the handler exceeded the app's memory limit (%lld MB)",
                     src, ar.currentline, (long long)(limit >> 20));
            return;
        }
    }
}

static void task_resume(struct web_task *t, int nargs)
{
    struct web_req *r = t->r;
    struct web_worker *w = r->w;
    if (t->done || r->ended)
        return;
    struct web_app *a = r->gen->app;
    double left = r->deadline - ev_time();
    if (left < 0.001)
        left = 0.001;
    char err[1024];
    int nres = 0;
    t->wait = WEB_WAIT_NONE;
    t->running = 1;
    w->resuming++;
    int st = policy_host_resume(a->h, t->co, nargs, &nres, r->ins_left, left, err, sizeof err);
    w->resuming--;
    t->running = 0;
    struct budget *b = budget_of(t->co);
    r->ins_left = b && b->left > 0 ? b->left : 1;
    if (st < 0) {
        enum budget_why lim = policy_host_last_limit(a->h);
        if (lim == BUDGET_MEMORY)
            memory_position(t->co, r->gen->cfg.memory, err, sizeof err);
        /* the traceback of the failed coroutine, with the request's id */
        luaL_traceback(a->L, t->co, NULL, 0);
        req_fail(r, err, lua_tostring(a->L, -1), lim != BUDGET_OK);
        lua_pop(a->L, 1);
    } else if (st == LUA_YIELD) {
        lua_pop(t->co, nres);
        if (t->wait == WEB_WAIT_NONE && !r->ended)
            req_fail(r, "the handler yielded outside a cache, db or ctx call (coroutine.yield "
                     "is for coroutines of its own)", NULL, 0);
    } else if (t == r->main) {
        t->done = 1;
        t->finished = 1;
        if (!r->ended && nres == 4)
            answer(r, t->co, lua_gettop(t->co) - 3);
        else if (!r->ended)
            req_fail(r, "the handler's answer is malformed", NULL, 0);
    } else {
        child_done(t, nres);
    }
    if (!w->resuming)
        run_wakeq(w);
}

static void req_timeout(struct ev_loop *loop, ev_timer *tm, int revents)
{
    struct web_req *r = tm->data;
    r->w->st.timeouts++;
    char why[128];
    snprintf(why, sizeof why, "the request exceeded its time limit (%.0f ms)",
             r->gen->cfg.timeout * 1000.0);
    req_fail(r, why, NULL, 1);
}

/* ---- start, gone, writable ------------------------------------------------------- */

void web_req_start(struct web_worker *w, struct web_gen *gen, struct http_req *hr,
                   const struct web_match *m)
{
    struct web_app *a = gen->app;
    lua_State *L = a->L;
    struct web_req *r = calloc(1, sizeof *r);
    if (!r) {
        http_respond(hr, 503, "text/plain", "out of memory\n", 14);
        return;
    }
    r->w = w;
    r->gen = gen;
    gen->refs++;
    r->hr = hr;
    hr->ud = r;
    r->match = *m;
    r->ctx_ref = LUA_NOREF;
    r->ins_left = WEB_REQ_INSTRUCTIONS;
    r->deadline = ev_time() + gen->cfg.timeout;
    r->started = ev_now(w->loop);
    const struct http_hdr *xid = http_req_header(hr, "x-request-id");
    if (xid && id_ok(xid->value, xid->value_len))
        snprintf(r->id, sizeof r->id, "%.*s", (int)xid->value_len, xid->value);
    else
        web_worker_next_id(w, r->id, sizeof r->id);
    if (gen->cfg.read_your_writes)
        r->sess.min_offset = r->sess_start = ryw_cookie(hr);
    r->next = w->reqs;
    if (w->reqs)
        w->reqs->prev = r;
    w->reqs = r;
    w->nreqs++;
    http_resp_header(hr, "X-Request-Id", r->id);
    ev_timer_init(&r->timer, req_timeout, gen->cfg.timeout, 0);
    r->timer.data = r;
    ev_timer_start(w->loop, &r->timer);

    /* host-side allocations: outside an entry, so not limited; bounded */
    struct ctx_ud *u = lua_newuserdatauv(L, sizeof *u, 1);
    u->r = r;
    luaL_setmetatable(L, CTX_MT);
    r->ctx_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    struct web_task *t = task_new(r, L);
    if (!t) {
        req_fail(r, "out of memory", NULL, 0);
        return;
    }
    r->main = t;
    lua_rawgeti(t->co, LUA_REGISTRYINDEX, a->ref_run);
    lua_rawgeti(t->co, LUA_REGISTRYINDEX, m->handler);
    lua_rawgeti(t->co, LUA_REGISTRYINDEX, r->ctx_ref);
    task_resume(t, 2);
}

void web_req_gone(struct web_req *r)
{
    if (r->ended) 
        return;
    r->gone = 1;
    /* pending calls are cancelled now; the handler ends with them */
    req_fail(r, "the client went away", NULL, 0);
}

void web_req_writable(struct web_req *r)
{
    struct web_task *t = r->main;
    for (struct web_task *x = r->tasks; x; x = x->next)
        if (x->wait == WEB_WAIT_WRITE && !x->done)
            t = x;
    if (t && t->wait == WEB_WAIT_WRITE)
        web_task_wake(t);
}

void web_worker_abort_requests(struct web_worker *w)
{
    while (w->reqs) {
        struct web_req *r = w->reqs;
        r->gone = 1;
        req_fail(r, "the node stopped", NULL, 0);
    }
}

/* ---- the reaper --------------------------------------------------------------------- */

static void req_free(struct web_req *r)
{
    lua_State *L = r->gen->app->L;
    struct ctx_ud *u = NULL;
    if (r->ctx_ref != LUA_NOREF) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, r->ctx_ref);
        u = lua_touserdata(L, -1);
        if (u)
            u->r = NULL;
        lua_pop(L, 1);
        luaL_unref(L, LUA_REGISTRYINDEX, r->ctx_ref);
    }
    struct web_app *a = r->gen->app;
    while (r->tasks) {
        struct web_task *t = r->tasks;
        r->tasks = t->next;
        if (t->finished && lua_status(t->co) == LUA_OK &&
            a->npool < (int)(sizeof a->pool / sizeof a->pool[0])) {
            lua_settop(t->co, 0);
            a->pool[a->npool++] = t->co_ref;
        } else {
            luaL_unref(L, LUA_REGISTRYINDEX, t->co_ref);
        }
        luaL_unref(L, LUA_REGISTRYINDEX, t->results_ref);
        luaL_unref(L, LUA_REGISTRYINDEX, t->wake_ref);
        free(t->reply); /* one block (web_data.c) */
        free(t);
    }
    struct web_gen *g = r->gen;
    free(r);
    web_gen_release(g);
}

void web_worker_reap(struct web_worker *w)
{
    while (w->dead) {
        struct web_req *r = w->dead;
        w->dead = r->next;
        req_free(r);
    }
}

/* ---- the ctx object ------------------------------------------------------------------ */

static struct web_req *ctx_req(lua_State *L, int idx)
{
    struct ctx_ud *u = luaL_checkudata(L, idx, CTX_MT);
    if (!u->r || u->r->ended)
        luaL_error(L, "the request has ended");
    return u->r;
}

static void push_query(lua_State *L, const struct http_req *hr)
{
    lua_newtable(L);
    const char *p = hr->query, *end = hr->query + hr->query_len;
    int n = 0;
    while (p < end && n < 1000) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *e = amp ? amp : end;
        if (e > p) {
            const char *eq = memchr(p, '=', (size_t)(e - p));
            push_decoded(L, p, (size_t)((eq ? eq : e) - p), 1);
            if (eq)
                push_decoded(L, eq + 1, (size_t)(e - eq - 1), 1);
            else
                lua_pushliteral(L, "");
            lua_rawset(L, -3);
            n++;
        }
        p = amp ? amp + 1 : end;
    }
}

static void push_headers(lua_State *L, const struct http_req *hr)
{
    lua_createtable(L, 0, hr->nhdrs);
    char name[256];
    for (int i = 0; i < hr->nhdrs; i++) {
        const struct http_hdr *h = &hr->hdrs[i];
        size_t n = h->name_len < sizeof name ? h->name_len : sizeof name - 1;
        for (size_t k = 0; k < n; k++) {
            char c = h->name[k];
            name[k] = (c >= 'A' && c <= 'Z') ? (char)(c + 32) : c;
        }
        lua_pushlstring(L, name, n);
        lua_pushvalue(L, -1);
        if (lua_rawget(L, -3) == LUA_TSTRING) { /* repeated: joined */
            lua_pushliteral(L, ", ");
            lua_pushlstring(L, h->value, h->value_len);
            lua_concat(L, 3);
        } else {
            lua_pop(L, 1);
            lua_pushlstring(L, h->value, h->value_len);
        }
        lua_rawset(L, -3);
    }
}

static void push_params(lua_State *L, const struct web_req *r)
{
    lua_createtable(L, 0, r->match.nparams);
    for (int i = 0; i < r->match.nparams; i++) {
        const struct web_param *p = &r->match.params[i];
        lua_pushlstring(L, p->name, p->name_len);
        push_decoded(L, p->val, p->val_len, 0);
        lua_rawset(L, -3);
    }
}

/* ctx.<field>: methods first, then the request's fields; tables are
 * built on first use and kept in the ctx's user value. */
static int ctx_index(lua_State *L)
{
    lua_pushvalue(L, 2);
    if (lua_rawget(L, lua_upvalueindex(1)) != LUA_TNIL)
        return 1;
    lua_pop(L, 1);
    struct web_req *r = ctx_req(L, 1);
    size_t kl;
    const char *k = lua_tolstring(L, 2, &kl);
    if (!k)
        return 0;
    struct http_req *hr = r->hr;
    switch (k[0]) {
    case 'm':
        if (strcmp(k, "method") == 0) {
            lua_pushlstring(L, hr->method, hr->method_len);
            return 1;
        }
        break;
    case 'p':
        if (strcmp(k, "path") == 0) {
            push_decoded(L, hr->path, hr->path_len, 0);
            return 1;
        }
        if (strcmp(k, "peer") == 0) {
            lua_pushstring(L, hr->peer);
            return 1;
        }
        break;
    case 'b':
        if (strcmp(k, "body") == 0) {
            lua_pushlstring(L, hr->body, hr->body_len);
            return 1;
        }
        break;
    case 'i':
        if (strcmp(k, "id") == 0) {
            lua_pushstring(L, r->id);
            return 1;
        }
        break;
    case 't':
        if (strcmp(k, "target") == 0) {
            lua_pushlstring(L, hr->target, hr->target_len);
            return 1;
        }
        break;
    default:
        break;
    }
    /* cached tables and objects */
    if (lua_getiuservalue(L, 1, 1) != LUA_TTABLE) {
        lua_pop(L, 1);
        lua_newtable(L);
        lua_pushvalue(L, -1);
        lua_setiuservalue(L, 1, 1);
    }
    lua_pushvalue(L, 2);
    if (lua_rawget(L, -2) != LUA_TNIL)
        return 1;
    lua_pop(L, 1);
    if (strcmp(k, "query") == 0)
        push_query(L, hr);
    else if (strcmp(k, "headers") == 0)
        push_headers(L, hr);
    else if (strcmp(k, "params") == 0)
        push_params(L, r);
    else if (strcmp(k, "cache") == 0)
        web_data_push(L, r, 0);
    else if (strcmp(k, "db") == 0)
        web_data_push(L, r, 1);
    else
        return 0;
    lua_pushvalue(L, 2);
    lua_pushvalue(L, -2);
    lua_rawset(L, -4);
    return 1;
}

static int ctx_newindex(lua_State *L)
{
    return luaL_error(L, "ctx is read-only (keep your own values in locals)");
}

static int ctx_tostring(lua_State *L)
{
    struct ctx_ud *u = luaL_checkudata(L, 1, CTX_MT);
    lua_pushfstring(L, "ctx(%s)", u->r ? u->r->id : "ended");
    return 1;
}

/* ctx:status(n) */
static int ctx_status(lua_State *L)
{
    struct web_req *r = ctx_req(L, 1);
    lua_Integer s = luaL_checkinteger(L, 2);
    luaL_argcheck(L, s >= 100 && s <= 999, 2, "a status is 100-999");
    if (r->streaming)
        return luaL_error(L, "ctx:status: the answer's head has gone out already");
    http_resp_status(r->hr, (int)s);
    lua_settop(L, 1);
    return 1;
}

/* ctx:header(name, value) */
static int ctx_header(lua_State *L)
{
    struct web_req *r = ctx_req(L, 1);
    const char *name = luaL_checkstring(L, 2);
    const char *value = luaL_checkstring(L, 3);
    if (r->streaming)
        return luaL_error(L, "ctx:header: the answer's head has gone out already");
    if (http_resp_header(r->hr, name, value) < 0)
        return luaL_error(L, "ctx:header: '%s' is the server's to set, or has a line break",
                          name);
    if (strcasecmp(name, "content-type") == 0)
        r->has_ctype = 1;
    lua_settop(L, 1);
    return 1;
}

static int write_cont(lua_State *L, int status, lua_KContext kc)
{
    struct web_req *r = ctx_req(L, 1);
    if (r->gone)
        return luaL_error(L, "ctx:write: the client went away");
    lua_settop(L, 1);
    return 1;
}

/* ctx:write(chunk): the head goes out with the first one (chunked). */
static int ctx_write(lua_State *L)
{
    struct web_task *t = web_task_check(L, 1, "ctx:write");
    struct web_req *r = t->r;
    size_t n;
    const char *p = luaL_checklstring(L, 2, &n);
    if (r->gone)
        return luaL_error(L, "ctx:write: the client went away");
    if (!r->streaming) {
        r->streaming = 1;
        if (!r->has_ctype)
            http_resp_header(r->hr, "Content-Type", "text/plain; charset=utf-8");
        final_headers(r);
        http_resp_stream(r->hr);
    }
    if (n)
        http_resp_write(r->hr, p, n);
    if (r->gone || r->ended)
        return luaL_error(L, "ctx:write: the client went away");
    if (http_resp_backlog(r->hr) > WEB_WRITE_HIGH) {
        t->wait = WEB_WAIT_WRITE;
        return lua_yieldk(L, 0, 0, write_cont);
    }
    lua_settop(L, 1);
    return 1;
}

static void sleep_done(struct ev_loop *loop, ev_timer *tm, int revents)
{
    struct web_task *t = tm->data;
    if (t->wait == WEB_WAIT_SLEEP)
        web_task_wake(t);
}

static int sleep_cont(lua_State *L, int status, lua_KContext kc)
{
    (void)status, (void)kc;
    return 0;
}

/* ctx:sleep(seconds): the task waits on a timer; the loop serves others. */
static int ctx_sleep(lua_State *L)
{
    struct web_task *t = web_task_check(L, 1, "ctx:sleep");
    lua_Number s = luaL_checknumber(L, 2);
    luaL_argcheck(L, s >= 0 && s <= 3600, 2, "seconds in 0..3600");
    ev_timer_init(&t->sleep, sleep_done, s, 0);
    t->sleep.data = t;
    ev_timer_start(t->r->w->loop, &t->sleep);
    t->wait = WEB_WAIT_SLEEP;
    return lua_yieldk(L, 0, 0, sleep_cont);
}

static int all_cont(lua_State *L, int status, lua_KContext kc)
{
    struct web_task *t = web_task_check(L, 1, "ctx:all");
    int n = t->nchildren;
    lua_rawgeti(L, LUA_REGISTRYINDEX, t->results_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, t->results_ref);
    t->results_ref = LUA_NOREF;
    if (!lua_checkstack(L, n))
        return luaL_error(L, "ctx:all: too many results");
    int tbl = lua_gettop(L);
    for (int i = 1; i <= n; i++)
        lua_rawgeti(L, tbl, i);
    return n;
}

/* ctx:all(f1, f2, ...): each function in a task of its own. */
static int ctx_all(lua_State *L)
{
    struct web_task *t = web_task_check(L, 1, "ctx:all");
    int n = lua_gettop(L) - 1;
    if (n == 0)
        return 0;
    if (n > 1000)
        return luaL_error(L, "ctx:all: at most 1000 functions");
    for (int i = 2; i <= n + 1; i++)
        luaL_checktype(L, i, LUA_TFUNCTION);
    lua_createtable(L, n, 0); /* room for every result: filling it never allocates */
    t->results_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    t->nchildren = t->pending = n;
    for (int i = 1; i <= n; i++) {
        struct web_task *c = task_new(t->r, L);
        if (!c)
            return luaL_error(L, "ctx:all: out of memory");
        c->parent = t;
        c->slot = i;
        lua_pushvalue(L, i + 1);
        lua_xmove(L, c->co, 1);
        web_task_wake(c); /* queued: starts after this resume */
    }
    t->wait = WEB_WAIT_ALL;
    return lua_yieldk(L, 0, 0, all_cont);
}

void web_req_register(lua_State *L)
{
    luaL_newmetatable(L, CTX_MT);
    lua_createtable(L, 0, 8);
    static const luaL_Reg methods[] = {
        {"status", ctx_status}, {"header", ctx_header}, {"write", ctx_write},
        {"all", ctx_all},       {"sleep", ctx_sleep},   {NULL, NULL},
    };
    luaL_setfuncs(L, methods, 0);
    lua_pushvalue(L, -1);
    lua_setfield(L, LUA_REGISTRYINDEX, CTX_METHODS);
    lua_pushcclosure(L, ctx_index, 1);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, ctx_newindex);
    lua_setfield(L, -2, "__newindex");
    lua_pushcfunction(L, ctx_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pushliteral(L, "ctx");
    lua_setfield(L, -2, "__name");
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    lua_pop(L, 1);
}
