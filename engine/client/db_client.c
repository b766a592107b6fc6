/* db_client: the web tier's client of a replicated db (db_client.h).
 *
 * One kvc_link per node: nodes[0] is the configured primary, then the
 * replicas; `primary` is the node taken as the primary now (it moves when
 * a failover is followed). A call copies its arguments (a write may be
 * retried on a new primary, a read on the primary after a replica) and
 * goes through these steps:
 *
 *  write: the command, then (with a session) ROLE on the same connection;
 *         the write's reply is held until ROLE's, which gives the
 *         session's offset. -READONLY, or a primary that is down, asks
 *         every node ROLE (one discovery at a time, shared by the writes
 *         that wait for it), adopts the node answering "master", and
 *         retries the write there once.
 *  read:  the node routing picks (primary, least pending replica, or the
 *         policy's). On a replica with a session whose offset the replica
 *         is not known to have: ROLE then the read, pipelined; the read's
 *         reply counts only if ROLE's offset is at least the session's
 *         (the replica runs them in order, so the read saw at least that
 *         much). Otherwise ask again shortly, up to ryw_wait, then the
 *         primary. A replica that fails sends the read to the primary. */
#include "db_client.h"

#include <hiredis/hiredis.h>
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "kv_cmd.h"
#include "kvc_link.h"
#include "log.h"
#include "policy_host.h"

#define DB_ROUTE_INSTRUCTIONS 200000L
#define DB_ROUTE_SECONDS 0.02
#define DB_POLICY_MEM ((size_t)16 << 20)
/* Between two ROLE polls of a replica a session waits for. */
#define DB_RYW_POLL 0.002

struct db_node {
    struct kvc_link link;
    uint64_t offset;     /* applied (replica) or log (primary) offset, from its last ROLE */
    int has_offset;
    /* A replica serves reads only while its last ROLE said its link to its
     * upstream is up ("connected"): one still connecting, or loading a full
     * resync, holds an old copy (or none) and would answer "no such key". */
    int in_sync;
    struct kvc_wire *probe; /* its ROLE probe in flight */
};

struct db_disc;

struct db_client {
    struct kvc_base base;
    struct db_node *nodes;
    int n;
    int primary;
    enum db_reads reads;
    struct policy_host *policy;
    int policy_logged;
    double ryw_wait;
    uint64_t reads_primary, reads_replica, ryw_waits, ryw_fallbacks;
    struct db_disc *disc;      /* a discovery of the primary in progress */
    ev_timer probe_timer;      /* ROLE probes of the replicas */
    struct db_call *waiting;   /* writes waiting for it */
};

struct db_call {
    struct kvc_call c;
    struct db_client *dc;
    struct db_session *sess;
    int argc;
    char **argv;
    size_t *argl;
    int is_write;
    int node;
    struct kvc_wire *w1, *w2;
    struct redisReply *held;   /* a write's reply waiting for ROLE, or a -READONLY kept */
    int retried;               /* a write's failover retry is used */
    int waited;                /* counted in ryw_waits */
    int role_ok;               /* the ROLE before this read showed the session's offset */
    double ryw_deadline;
    ev_timer aux;              /* read-your-writes: next poll, end of the wait */
    struct db_call *wprev, *wnext;
    int in_waiting;
};

static void read_start(struct db_call *q);
static void read_on_primary(struct db_call *q);
static void write_start(struct db_call *q);

/* ---- commands ------------------------------------------------------------- */

static const struct kv_command *find_cmd(const char *name, size_t n)
{
    size_t nt;
    const struct kv_command *t = kv_cmd_table(&nt);
    for (size_t i = 0; i < nt; i++)
        if (strlen(t[i].name) == n && strncasecmp(t[i].name, name, n) == 0)
            return &t[i];
    return NULL;
}

/* A read: a command of the table that changes nothing and is not an admin
 * command. Anything else (unknown to the table: the db's own commands)
 * goes to the primary. */
static int is_read(const char *name, size_t n, const struct kv_command **out)
{
    const struct kv_command *c = find_cmd(name, n);
    *out = c;
    return c && !(c->flags & (KV_CMD_WRITE | KV_CMD_ADMIN));
}

/* ---- offsets from ROLE ---------------------------------------------------- */

/* ROLE's offset: ["master", off, ...] or ["slave", host, port, state, off].
 * 1 with *role 'm' or 's', or 0 when the reply is not ROLE's. */
static int role_parse(const struct redisReply *r, char *role, uint64_t *off)
{
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements < 2 ||
        r->element[0]->type != REDIS_REPLY_STRING)
        return 0;
    const struct redisReply *e0 = r->element[0];
    if (e0->len == 6 && memcmp(e0->str, "master", 6) == 0 &&
        r->element[1]->type == REDIS_REPLY_INTEGER && r->element[1]->integer >= 0) {
        *role = 'm';
        *off = (uint64_t)r->element[1]->integer;
        return 1;
    }
    if (e0->len == 5 && memcmp(e0->str, "slave", 5) == 0 && r->elements >= 5 &&
        r->element[4]->type == REDIS_REPLY_INTEGER && r->element[4]->integer >= 0) {
        *role = 's';
        *off = (uint64_t)r->element[4]->integer;
        return 1;
    }
    return 0;
}

static void node_note_offset(struct db_node *nd, uint64_t off)
{
    /* Offsets only grow on one node, except across a resync or a failover:
     * the newest answer is the truth. */
    nd->offset = off;
    nd->has_offset = 1;
}

static void sess_note(struct db_session *s, uint64_t off)
{
    if (s->min_offset == UINT64_MAX || off > s->min_offset)
        s->min_offset = off;
}

/* ---- routing -------------------------------------------------------------- */

static int node_usable(const struct db_client *dc, int i)
{
    return kvc_link_usable(&dc->nodes[i].link);
}

/* A replica reads may go to: reachable, and following its upstream. */
static int replica_serves(const struct db_client *dc, int i)
{
    return node_usable(dc, i) && dc->nodes[i].in_sync;
}

/* ---- replica probes ------------------------------------------------------- */

/* Seconds between ROLE probes of each replica. */
#define DB_PROBE_EVERY 0.5

static void probe_reply(void *arg, const struct redisReply *r, const char *error)
{
    struct db_node *nd = arg;
    (void)error;
    nd->probe = NULL;
    char role;
    uint64_t off;
    int ok = 0;
    if (r && role_parse(r, &role, &off) && role == 's') {
        node_note_offset(nd, off);
        const struct redisReply *st = r->element[3];
        ok = st->type == REDIS_REPLY_STRING && st->len == 9 && memcmp(st->str, "connected", 9) == 0;
    }
    nd->in_sync = ok;
}

static void probe_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct db_client *dc = w->data;
    static const char *const argv[1] = {"ROLE"};
    static const size_t argl[1] = {4};
    for (int i = 0; i < dc->n; i++) {
        struct db_node *nd = &dc->nodes[i];
        if (i == dc->primary || nd->probe)
            continue;
        if (!node_usable(dc, i)) {
            nd->in_sync = 0;
            continue;
        }
        nd->probe = kvc_link_send(&nd->link, 1, argv, argl, probe_reply, nd);
    }
}

/* The least busy usable replica; with a session, one known to have its
 * offset first. -1 when none is usable. */
static int pick_replica(const struct db_client *dc, const struct db_session *sess)
{
    int best = -1, best_ok = 0;
    for (int i = 0; i < dc->n; i++) {
        if (i == dc->primary || !replica_serves(dc, i))
            continue;
        const struct db_node *nd = &dc->nodes[i];
        int ok = !sess || (nd->has_offset && nd->offset >= sess->min_offset);
        if (best < 0 || ok > best_ok ||
            (ok == best_ok && nd->link.inflight < dc->nodes[best].link.inflight)) {
            best = i;
            best_ok = ok;
        }
    }
    return best;
}

static void policy_log_once(struct db_client *dc, const char *why)
{
    if (dc->policy_logged)
        return;
    dc->policy_logged = 1;
    log_warn("db client: read policy %s: %s; such reads go to the primary",
             policy_host_path(dc->policy), why);
}

/* What one route() call needs and gives back. */
struct route_args {
    struct db_client *dc;
    const char *cmd, *key;
    size_t cmdl, keyl;
    int map[64]; /* replicas[k + 1] is node map[k] */
    int nr;
};

/* Builds route()'s arguments and calls it, all inside the host's pcall:
 * a memory error building them is the policy's error like any other. */
static int route_entry(lua_State *L)
{
    struct route_args *a = lua_touserdata(L, 1);
    struct db_client *dc = a->dc;
    policy_host_push_module(dc->policy);
    lua_pushliteral(L, "route");
    lua_rawget(L, -2);
    lua_pushlstring(L, a->cmd, a->cmdl);
    if (a->key)
        lua_pushlstring(L, a->key, a->keyl);
    else
        lua_pushnil(L);
    lua_createtable(L, dc->n, 0);
    a->nr = 0;
    for (int i = 0; i < dc->n && a->nr < 64; i++) {
        if (i == dc->primary)
            continue;
        const struct db_node *nd = &dc->nodes[i];
        lua_createtable(L, 0, 4);
        lua_pushstring(L, nd->link.name);
        lua_setfield(L, -2, "name");
        lua_pushstring(L, nd->link.addr);
        lua_setfield(L, -2, "addr");
        lua_pushboolean(L, i == dc->primary ? node_usable(dc, i) : replica_serves(dc, i));
        lua_setfield(L, -2, "up");
        lua_pushinteger(L, nd->has_offset ? (lua_Integer)nd->offset : 0);
        lua_setfield(L, -2, "offset");
        a->map[a->nr++] = i;
        lua_rawseti(L, -2, a->nr);
    }
    lua_call(L, 3, 1);
    return 1;
}

/* route(cmd, key, replicas) -> a replica's name or index, or "primary".
 * Returns the node, or the primary on any error or bad answer. */
static int policy_route(struct db_client *dc, const char *cmd, size_t cmdl, const char *key,
                        size_t keyl)
{
    lua_State *L = policy_host_state(dc->policy);
    int top = lua_gettop(L);
    struct route_args a = {.dc = dc, .cmd = cmd, .key = key, .cmdl = cmdl, .keyl = keyl};
    char err[512];
    int pick = dc->primary;
    if (!lua_checkstack(L, 8)) {
        policy_log_once(dc, "out of stack space");
        return pick;
    }
    lua_pushcfunction(L, route_entry);
    lua_pushlightuserdata(L, &a);
    if (policy_host_call(dc->policy, "route", 1, 1, DB_ROUTE_INSTRUCTIONS, DB_ROUTE_SECONDS, err,
                         sizeof err) < 0) {
        policy_log_once(dc, err);
    } else if (lua_type(L, -1) == LUA_TSTRING) {
        size_t sl;
        const char *s = lua_tolstring(L, -1, &sl);
        if (!(sl == 7 && memcmp(s, "primary", 7) == 0)) {
            int found = -1;
            for (int k = 0; k < a.nr; k++)
                if (strlen(dc->nodes[a.map[k]].link.name) == sl &&
                    memcmp(dc->nodes[a.map[k]].link.name, s, sl) == 0)
                    found = a.map[k];
            if (found < 0)
                policy_log_once(dc, "route() named no replica");
            else
                pick = found;
        }
    } else if (lua_isinteger(L, -1)) {
        lua_Integer k = lua_tointeger(L, -1);
        if (k >= 1 && k <= a.nr)
            pick = a.map[k - 1];
        else
            policy_log_once(dc, "route() returned an index out of range");
    } else {
        policy_log_once(dc, "route() must return a replica's name or index, or \"primary\"");
    }
    lua_settop(L, top);
    /* A replica the policy picked that is down: the primary. */
    if (pick != dc->primary && !replica_serves(dc, pick))
        pick = dc->primary;
    return pick;
}

static int route_read(struct db_client *dc, const struct db_session *sess, int argc,
                      const char *const *argv, const size_t *argl, const struct kv_command *cmd)
{
    if (sess && sess->min_offset == UINT64_MAX)
        return dc->primary; /* a write whose offset is unknown */
    if (dc->reads == DB_READS_POLICY && dc->policy) {
        size_t from, to;
        int has_key = cmd && kv_cmd_key_range(cmd, (size_t)argc, &from, &to);
        return policy_route(dc, argv[0], argl[0], has_key ? argv[from] : NULL,
                            has_key ? argl[from] : 0);
    }
    if (dc->reads == DB_READS_REPLICAS) {
        int r = pick_replica(dc, sess && sess->min_offset ? sess : NULL);
        return r < 0 ? dc->primary : r;
    }
    return dc->primary;
}

const char *db_client_route(struct db_client *dc, const struct db_session *sess, int argc,
                            const char *const *argv, const size_t *argvlen)
{
    const struct kv_command *cmd;
    if (argc < 1 || !is_read(argv[0], argvlen[0], &cmd))
        return dc->nodes[dc->primary].link.name;
    return dc->nodes[route_read(dc, sess, argc, argv, argvlen, cmd)].link.name;
}

const char *db_client_primary(const struct db_client *dc)
{
    return dc->nodes[dc->primary].link.name;
}

void db_client_test_node(struct db_client *dc, const char *name, int up, uint64_t offset,
                         int inflight)
{
    for (int i = 0; i < dc->n; i++) {
        struct db_node *nd = &dc->nodes[i];
        if (strcmp(nd->link.name, name) != 0)
            continue;
        nd->link.state = up ? KVC_LINK_UP : KVC_LINK_DOWN;
        nd->link.was_up = 1;
        nd->in_sync = up; /* an up replica here follows its upstream */
        nd->offset = offset;
        nd->has_offset = 1;
        nd->link.inflight = inflight;
    }
}

/* ---- calls ---------------------------------------------------------------- */

static void waiting_unlink(struct db_call *q)
{
    if (!q->in_waiting)
        return;
    if (q->wprev)
        q->wprev->wnext = q->wnext;
    else
        q->dc->waiting = q->wnext;
    if (q->wnext)
        q->wnext->wprev = q->wprev;
    q->wprev = q->wnext = NULL;
    q->in_waiting = 0;
}

static void detach_wires(struct db_call *q)
{
    kvc_wire_detach(q->w1);
    kvc_wire_detach(q->w2);
    q->w1 = q->w2 = NULL;
}

static void call_release(struct kvc_call *c)
{
    struct db_call *q = (struct db_call *)c;
    detach_wires(q);
    ev_timer_stop(q->dc->base.loop, &q->aux);
    waiting_unlink(q);
    kvc_reply_free(q->held);
    q->held = NULL;
    for (int i = 0; i < q->argc; i++)
        free(q->argv[i]);
    free(q->argv);
    free(q->argl);
    q->argv = NULL;
    q->argc = 0;
}

/* Answers with the held reply (which the call owns). */
static void finish_held(struct db_call *q)
{
    struct redisReply *h = q->held;
    q->held = NULL;
    kvc_call_finish(&q->c, h, "failed");
    kvc_reply_free(h);
}

static void finish_held_soon(struct kvc_call *c) { finish_held((struct db_call *)c); }

/* ---- finding the primary after a failover --------------------------------- */

struct db_ask {
    struct db_disc *d;
    int node;
    struct kvc_wire *w;
};

struct db_disc {
    struct db_client *dc;
    int left;
    int best;            /* a node answering "master" */
    uint64_t best_off;
    struct db_ask *asks;
};

static void disc_end(struct db_disc *d)
{
    struct db_client *dc = d->dc;
    int best = d->best;
    dc->disc = NULL;
    free(d->asks);
    free(d);
    if (best >= 0 && best != dc->primary) {
        log_warn("db client: the primary is now %s (%s), was %s", dc->nodes[best].link.name,
                 dc->nodes[best].link.addr, dc->nodes[dc->primary].link.name);
        dc->primary = best;
        /* A new history: offsets learnt under the old one say nothing. */
        for (int i = 0; i < dc->n; i++)
            if (i != best)
                dc->nodes[i].has_offset = 0;
    }
    /* Every waiting write is retried once (or answered); a retry that
     * fails now is answered, never queued again. */
    while (dc->waiting) {
        struct db_call *q = dc->waiting;
        waiting_unlink(q);
        if (best < 0) {
            if (q->held)
                kvc_call_soon(&q->c, finish_held_soon);
            else
                kvc_call_fail_soon(&q->c, "down");
        } else {
            kvc_reply_free(q->held);
            q->held = NULL;
            write_start(q);
        }
    }
}

static void disc_reply(void *arg, const struct redisReply *r, const char *error)
{
    struct db_ask *a = arg;
    struct db_disc *d = a->d;
    (void)error;
    a->w = NULL;
    char role;
    uint64_t off;
    if (r && role_parse(r, &role, &off)) {
        node_note_offset(&d->dc->nodes[a->node], off);
        /* Two nodes saying "master" (the old one not yet told): the one
         * ahead, and a new one over the one that refused. */
        if (role == 'm' && (d->best < 0 || off > d->best_off ||
                            (off == d->best_off && d->best == d->dc->primary))) {
            d->best = a->node;
            d->best_off = off;
        }
    }
    if (--d->left == 0)
        disc_end(d);
}

/* The write waits for a discovery (started unless one is under way). */
static void follow_failover(struct db_call *q)
{
    struct db_client *dc = q->dc;
    q->retried = 1;
    q->in_waiting = 1;
    q->wprev = NULL;
    q->wnext = dc->waiting;
    if (dc->waiting)
        dc->waiting->wprev = q;
    dc->waiting = q;
    if (dc->disc)
        return;
    struct db_disc *d = calloc(1, sizeof *d);
    if (d)
        d->asks = calloc((size_t)dc->n, sizeof *d->asks);
    if (!d || !d->asks) {
        free(d);
        waiting_unlink(q);
        kvc_call_fail_soon(&q->c, "out of memory");
        return;
    }
    d->dc = dc;
    d->best = -1;
    dc->disc = d;
    d->left = dc->n + 1;
    static const char *const argv[1] = {"ROLE"};
    static const size_t argl[1] = {4};
    for (int i = 0; i < dc->n; i++) {
        d->asks[i].d = d;
        d->asks[i].node = i;
        d->asks[i].w = kvc_link_send(&dc->nodes[i].link, 1, argv, argl, disc_reply, &d->asks[i]);
        if (!d->asks[i].w)
            d->left--;
    }
    if (--d->left == 0)
        disc_end(d); /* every node is down: answers come on the next iteration */
}

/* ---- writes --------------------------------------------------------------- */

static int is_readonly_error(const struct redisReply *r)
{
    return r->type == REDIS_REPLY_ERROR && r->len >= 8 && strncmp(r->str, "READONLY", 8) == 0;
}

static void write_role_reply(void *arg, const struct redisReply *r, const char *error)
{
    struct db_call *q = arg;
    (void)error;
    q->w2 = NULL;
    char role;
    uint64_t off;
    if (r && role_parse(r, &role, &off) && role == 'm') {
        node_note_offset(&q->dc->nodes[q->node], off);
        if (q->sess)
            sess_note(q->sess, off);
    } else if (q->sess) {
        q->sess->min_offset = UINT64_MAX; /* unknown: the primary serves its reads */
    }
    if (q->held)
        finish_held(q);
}

static void write_reply(void *arg, const struct redisReply *r, const char *error)
{
    struct db_call *q = arg;
    q->w1 = NULL;
    if (!r || is_readonly_error(r)) {
        /* The primary is gone or is one no more: follow a failover, once. */
        kvc_wire_detach(q->w2);
        q->w2 = NULL;
        if (q->retried) {
            kvc_call_finish(&q->c, r, error);
            return;
        }
        if (r)
            q->held = kvc_reply_dup(r);
        follow_failover(q);
        return;
    }
    if (!q->w2 || r->type == REDIS_REPLY_ERROR) {
        kvc_wire_detach(q->w2);
        q->w2 = NULL;
        if (q->sess && r->type != REDIS_REPLY_ERROR)
            q->sess->min_offset = UINT64_MAX; /* ROLE could not be asked */
        kvc_call_finish(&q->c, r, NULL);
        return;
    }
    /* The session's offset comes with ROLE, just behind: hold the reply. */
    q->held = kvc_reply_dup(r);
    if (!q->held) {
        kvc_wire_detach(q->w2);
        q->w2 = NULL;
        q->sess->min_offset = UINT64_MAX;
        kvc_call_finish(&q->c, r, NULL);
    }
}

static void write_start(struct db_call *q)
{
    struct db_client *dc = q->dc;
    q->node = dc->primary;
    struct kvc_link *l = &dc->nodes[q->node].link;
    q->w1 = kvc_link_send(l, q->argc, (const char *const *)q->argv, q->argl, write_reply, q);
    if (!q->w1) {
        if (q->retried)
            kvc_call_fail_soon(&q->c, "down");
        else
            follow_failover(q);
        return;
    }
    if (q->sess) {
        static const char *const argv[1] = {"ROLE"};
        static const size_t argl[1] = {4};
        q->w2 = kvc_link_send(l, 1, argv, argl, write_role_reply, q);
    }
}

/* ---- reads ---------------------------------------------------------------- */

static void read_primary_reply(void *arg, const struct redisReply *r, const char *error)
{
    struct db_call *q = arg;
    q->w1 = NULL;
    if (r)
        q->dc->reads_primary++;
    kvc_call_finish(&q->c, r, error);
}

static void read_on_primary(struct db_call *q)
{
    struct db_client *dc = q->dc;
    detach_wires(q);
    ev_timer_stop(dc->base.loop, &q->aux);
    q->node = dc->primary;
    q->w1 = kvc_link_send(&dc->nodes[q->node].link, q->argc, (const char *const *)q->argv,
                          q->argl, read_primary_reply, q);
    if (!q->w1)
        kvc_call_fail_soon(&q->c, "down");
}

static void read_replica_reply(void *arg, const struct redisReply *r, const char *error)
{
    struct db_call *q = arg;
    (void)error;
    q->w1 = NULL;
    if (!r) {
        read_on_primary(q); /* the replica failed: the primary serves it */
        return;
    }
    q->dc->reads_replica++;
    kvc_call_finish(&q->c, r, NULL);
}

static void ryw_role_reply(void *arg, const struct redisReply *r, const char *error)
{
    struct db_call *q = arg;
    (void)error;
    q->w1 = NULL;
    char role;
    uint64_t off;
    if (r && role_parse(r, &role, &off) && role == 's') {
        node_note_offset(&q->dc->nodes[q->node], off);
        q->role_ok = q->sess && off >= q->sess->min_offset;
    }
}

static void ryw_give_up(struct db_call *q)
{
    q->dc->ryw_fallbacks++;
    read_on_primary(q);
}

static void ryw_read_reply(void *arg, const struct redisReply *r, const char *error)
{
    struct db_call *q = arg;
    struct db_client *dc = q->dc;
    (void)error;
    q->w2 = NULL;
    if (!r) {
        read_on_primary(q);
        return;
    }
    if (q->role_ok) {
        dc->reads_replica++;
        kvc_call_finish(&q->c, r, NULL);
        return;
    }
    /* Behind the session: this answer may be older than its write. */
    if (!q->waited) {
        q->waited = 1;
        dc->ryw_waits++;
    }
    double now = ev_now(dc->base.loop);
    if (now >= q->ryw_deadline) {
        ryw_give_up(q);
        return;
    }
    double at = now + DB_RYW_POLL < q->ryw_deadline ? now + DB_RYW_POLL : q->ryw_deadline;
    ev_timer_stop(dc->base.loop, &q->aux);
    ev_timer_set(&q->aux, at - now, 0.);
    ev_timer_start(dc->base.loop, &q->aux);
}

/* ROLE then the read on replica q->node, pipelined. */
static void ryw_poll(struct db_call *q)
{
    struct db_client *dc = q->dc;
    struct kvc_link *l = &dc->nodes[q->node].link;
    static const char *const argv[1] = {"ROLE"};
    static const size_t argl[1] = {4};
    q->role_ok = 0;
    q->w1 = kvc_link_send(l, 1, argv, argl, ryw_role_reply, q);
    if (q->w1)
        q->w2 = kvc_link_send(l, q->argc, (const char *const *)q->argv, q->argl, ryw_read_reply, q);
    if (!q->w1 || !q->w2) {
        read_on_primary(q);
        return;
    }
    /* A replica that does not answer within the wait: the primary. */
    double now = ev_now(dc->base.loop);
    ev_timer_stop(dc->base.loop, &q->aux);
    ev_timer_set(&q->aux, q->ryw_deadline > now ? q->ryw_deadline - now : 0., 0.);
    ev_timer_start(dc->base.loop, &q->aux);
}

static void ryw_timer_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)revents;
    struct db_call *q = t->data;
    double now = ev_now(loop);
    if (q->w1 || q->w2 || now >= q->ryw_deadline) {
        ryw_give_up(q);
        return;
    }
    /* Ask again: the same replica, or one known to have caught up. */
    int r = pick_replica(q->dc, q->sess);
    if (r >= 0 && q->dc->reads != DB_READS_POLICY)
        q->node = r;
    if (!node_usable(q->dc, q->node)) {
        ryw_give_up(q);
        return;
    }
    const struct db_node *nd = &q->dc->nodes[q->node];
    if (nd->has_offset && nd->offset >= q->sess->min_offset) {
        q->role_ok = 1;
        q->w2 = kvc_link_send(&q->dc->nodes[q->node].link, q->argc,
                              (const char *const *)q->argv, q->argl, ryw_read_reply, q);
        if (!q->w2)
            read_on_primary(q);
        return;
    }
    ryw_poll(q);
}

static void read_start(struct db_call *q)
{
    struct db_client *dc = q->dc;
    const struct kv_command *cmd = find_cmd(q->argv[0], q->argl[0]);
    int node = route_read(dc, q->sess, q->argc, (const char *const *)q->argv, q->argl, cmd);
    if (node == dc->primary) {
        read_on_primary(q);
        return;
    }
    q->node = node;
    const struct db_node *nd = &dc->nodes[node];
    if (q->sess && q->sess->min_offset && !(nd->has_offset && nd->offset >= q->sess->min_offset)) {
        q->ryw_deadline = ev_now(dc->base.loop) + dc->ryw_wait;
        ryw_poll(q);
        return;
    }
    q->w1 = kvc_link_send(&dc->nodes[node].link, q->argc, (const char *const *)q->argv, q->argl,
                          read_replica_reply, q);
    if (!q->w1)
        read_on_primary(q);
}

struct kvc_call *db_client_call(struct db_client *dc, struct db_session *sess, int argc,
                                const char *const *argv, const size_t *argvlen, kvc_done_fn cb,
                                void *ud)
{
    struct db_call *q = (struct db_call *)kvc_call_new(&dc->base, sizeof *q, cb, ud, call_release);
    if (!q)
        return NULL;
    q->dc = dc;
    q->sess = sess;
    ev_timer_init(&q->aux, ryw_timer_cb, 0., 0.);
    q->aux.data = q;
    if (argc < 1) {
        kvc_call_fail_soon(&q->c, "no command");
        return &q->c;
    }
    if (kvc_stateful_command(argv[0], argvlen[0])) {
        kvc_call_fail_soon(&q->c, "command not supported by the db client");
        return &q->c;
    }
    q->argv = calloc((size_t)argc, sizeof *q->argv);
    q->argl = calloc((size_t)argc, sizeof *q->argl);
    if (!q->argv || !q->argl) {
        kvc_call_fail_soon(&q->c, "out of memory");
        return &q->c;
    }
    for (int i = 0; i < argc; i++) {
        q->argv[i] = malloc(argvlen[i] + 1);
        if (!q->argv[i]) {
            kvc_call_fail_soon(&q->c, "out of memory");
            return &q->c;
        }
        q->argc = i + 1;
        memcpy(q->argv[i], argv[i], argvlen[i]);
        q->argv[i][argvlen[i]] = 0;
        q->argl[i] = argvlen[i];
    }
    const struct kv_command *cmd;
    q->is_write = !is_read(argv[0], argvlen[0], &cmd);
    if (q->is_write)
        write_start(q);
    else
        read_start(q);
    return &q->c;
}

/* ---- the client ----------------------------------------------------------- */

/* A node (re)connected: it may have restarted from its own files, with
 * less than it had (fsync everysec), or resynced; its offset is unknown
 * until it says it again. */
static void node_on_up(struct kvc_link *l)
{
    ((struct db_node *)l)->has_offset = 0; /* the link is the node's first member */
}

struct db_client *db_client_new(struct ev_loop *loop, const struct db_client_cfg *cfg, char *err,
                                size_t errlen)
{
    if (cfg->nreplicas < 0 || cfg->nreplicas > 63) {
        snprintf(err, errlen, "a db client takes 0..63 replicas");
        return NULL;
    }
    struct db_client *dc = calloc(1, sizeof *dc);
    if (dc)
        dc->nodes = calloc((size_t)cfg->nreplicas + 1, sizeof *dc->nodes);
    if (!dc || !dc->nodes) {
        snprintf(err, errlen, "out of memory");
        if (dc)
            free(dc->nodes);
        free(dc);
        return NULL;
    }
    kvc_base_init(&dc->base, loop, cfg->timeout > 0 ? cfg->timeout : 2.0);
    dc->reads = cfg->reads;
    dc->ryw_wait = cfg->ryw_wait > 0 ? cfg->ryw_wait : 0.05;
    for (int i = 0; i <= cfg->nreplicas; i++) {
        const struct db_node_addr *a = i == 0 ? &cfg->primary : &cfg->replicas[i - 1];
        if (kvc_link_init(&dc->nodes[i].link, &dc->base, a->name ? a->name : a->addr, a->addr,
                          cfg->password, 0.5, err, errlen) < 0) {
            db_client_free(dc);
            return NULL;
        }
        dc->n++;
    }
    if (cfg->reads == DB_READS_POLICY) {
        static const char *const needs[] = {"route", NULL};
        if (!cfg->policy_path) {
            snprintf(err, errlen, "reads by a policy need its file");
            db_client_free(dc);
            return NULL;
        }
        dc->policy = policy_host_open(cfg->policy_path, needs, DB_POLICY_MEM, err, errlen);
        if (!dc->policy) {
            db_client_free(dc);
            return NULL;
        }
    }
    for (int i = 0; i < dc->n; i++) {
        dc->nodes[i].link.on_up = node_on_up;
        kvc_link_connect(&dc->nodes[i].link);
    }
    /* The first probes at once (queued behind the connects), then steadily:
     * until a replica says it follows its upstream, reads go elsewhere. */
    ev_timer_init(&dc->probe_timer, probe_timer_cb, 0., DB_PROBE_EVERY);
    dc->probe_timer.data = dc;
    if (dc->n > 1)
        ev_timer_start(loop, &dc->probe_timer);
    return dc;
}

void db_client_free(struct db_client *dc)
{
    if (!dc)
        return;
    ev_timer_stop(dc->base.loop, &dc->probe_timer);
    for (int i = 0; i < dc->n; i++) {
        kvc_wire_detach(dc->nodes[i].probe);
        dc->nodes[i].probe = NULL;
    }
    kvc_base_fail_all(&dc->base, "closed");
    if (dc->disc) {
        for (int i = 0; i < dc->n; i++)
            kvc_wire_detach(dc->disc->asks[i].w);
        free(dc->disc->asks);
        free(dc->disc);
        dc->disc = NULL;
    }
    for (int i = 0; i < dc->n; i++)
        kvc_link_free(&dc->nodes[i].link);
    kvc_base_fail_all(&dc->base, "closed");
    if (dc->policy)
        policy_host_free(dc->policy);
    free(dc->nodes);
    free(dc);
}

void db_client_stats(const struct db_client *dc, struct db_client_stats *out)
{
    memset(out, 0, sizeof *out);
    out->calls = dc->base.stats;
    for (int i = 0; i < dc->n; i++)
        out->calls.reconnects += dc->nodes[i].link.reconnects;
    out->reads_primary = dc->reads_primary;
    out->reads_replica = dc->reads_replica;
    out->ryw_waits = dc->ryw_waits;
    out->ryw_fallbacks = dc->ryw_fallbacks;
}
