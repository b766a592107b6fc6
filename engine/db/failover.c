/* failover: probes, views, elections (see failover.h). */
#include "failover.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>

#include "log.h"
#include "policy_host.h"
#include "stream_follower.h" /* stream_handshake_line */
#include "util.h"

/* Budget of one elect() call. */
#define ELECT_INSTRUCTIONS 10000000L
#define ELECT_SECONDS 0.1

static const char *const elect_needs[] = {"elect", NULL};

/* ---- setup ------------------------------------------------------------ */

static int parse_peers(struct failover *f, const char *s, char *err, size_t errlen)
{
    while (*s) {
        const char *end = strchr(s, ',');
        size_t len = end ? (size_t)(end - s) : strlen(s);
        char one[200];
        if (len >= sizeof one || f->npeers == FAILOVER_MAX_PEERS) {
            snprintf(err, errlen, "too many db nodes or a peer entry too long");
            return -1;
        }
        memcpy(one, s, len);
        one[len] = 0;
        struct failover_peer *p = &f->peers[f->npeers];
        memset(p, 0, sizeof *p);
        char *a = strchr(one, '@');
        char *b = a ? strchr(a + 1, '@') : NULL;
        if (!a || !b) {
            snprintf(err, errlen, "bad peer entry '%s'", one);
            return -1;
        }
        *a = *b = 0;
        snprintf(p->node, sizeof p->node, "%.63s", one);
        snprintf(p->addr, sizeof p->addr, "%.63s", a + 1);
        p->priority = atoi(b + 1);
        if (util_parse_addr(p->addr, &p->sa, &p->salen, err, errlen) < 0)
            return -1;
        f->npeers++;
        s += len;
        if (*s == ',')
            s++;
    }
    return 0;
}

static void tick_cb(struct ev_loop *loop, ev_timer *w, int revents);
static void set_timing(struct failover *f, int64_t down_after_ms);

int failover_init(struct failover *f, struct ev_loop *loop, const char *node, const char *peers,
                  int priority, int64_t down_after_ms, const char *policy, const char *password,
                  struct epoch_state *ep, const char *dir, const struct failover_ops *ops,
                  void *arg, char *err, size_t errlen)
{
    memset(f, 0, sizeof *f);
    f->loop = loop;
    snprintf(f->node, sizeof f->node, "%s", node);
    f->priority = priority;
    f->ep = ep;
    f->dir = dir;
    f->ops = ops;
    f->arg = arg;
    if (password && password[0]) {
        f->has_password = 1;
        snprintf(f->password, sizeof f->password, "%s", password);
    }
    if (parse_peers(f, peers, err, errlen) < 0)
        return -1;
    f->enabled = down_after_ms > 0;
    set_timing(f, down_after_ms);
    if (policy && policy[0]) {
        snprintf(f->policy_path, sizeof f->policy_path, "%s", policy);
        char why[600];
        f->policy = policy_host_open(policy, elect_needs, POLICY_MEM_DEFAULT, why, sizeof why);
        if (!f->policy) {
            /* the topology checked it; a file broken since falls back */
            log_error("db %s: failover policy %s: %s; electing by the default rule", node, policy,
                      why);
            f->policy_fallbacks++;
        }
    }
    f->started_ms = f->primary_seen_ms = util_now_ms();
    srand((unsigned)(getpid() ^ f->started_ms));
    ev_timer_init(&f->timer, tick_cb, (double)f->probe_ms / 1000, (double)f->probe_ms / 1000);
    f->timer.data = f;
    return 0;
}

static void set_timing(struct failover *f, int64_t down_after_ms)
{
    f->down_after_ms = down_after_ms;
    f->probe_ms = down_after_ms / 5;
    if (f->probe_ms < 20)
        f->probe_ms = 20;
    if (f->probe_ms > 1000)
        f->probe_ms = 1000;
}

int failover_reload(struct failover *f, int64_t down_after_ms, int priority, const char *peers,
                    const char *policy, int dry_run, struct buf *changes, char *err,
                    size_t errlen)
{
    if ((down_after_ms > 0) != f->enabled) {
        snprintf(err, errlen, "db %s: failover is turned %s with a restart of the node, not a "
                 "reload", f->node, f->enabled ? "off" : "on");
        return -1;
    }
    /* the same nodes at the same addresses: only their priorities change */
    struct failover *nf = malloc(sizeof *nf);
    if (!nf) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    nf->npeers = 0;
    if (parse_peers(nf, peers, err, errlen) < 0) {
        free(nf);
        return -1;
    }
    int same = nf->npeers == f->npeers;
    for (int i = 0; same && i < f->npeers; i++)
        same = strcmp(nf->peers[i].node, f->peers[i].node) == 0 &&
               strcmp(nf->peers[i].addr, f->peers[i].addr) == 0;
    if (!same) {
        snprintf(err, errlen, "db %s: the data set's db nodes change with a restart of its "
                 "nodes, not a reload", f->node);
        free(nf);
        return -1;
    }
    struct policy_host *h = NULL;
    if (policy[0]) {
        char why[600];
        h = policy_host_open(policy, elect_needs, POLICY_MEM_DEFAULT, why, sizeof why);
        if (!h) {
            snprintf(err, errlen, "db %s: failover policy: %s", f->node, why);
            free(nf);
            return -1;
        }
    }
    if (down_after_ms != f->down_after_ms)
        buf_printf(changes, "node %s: db failover down_after %.3gs -> %.3gs\n", f->node,
                   (double)f->down_after_ms / 1000, (double)down_after_ms / 1000);
    if (priority != f->priority)
        buf_printf(changes, "node %s: db priority %d -> %d\n", f->node, f->priority, priority);
    for (int i = 0; i < f->npeers; i++)
        if (nf->peers[i].priority != f->peers[i].priority)
            buf_printf(changes, "node %s: db priority of %s %d -> %d\n", f->node,
                       f->peers[i].node, f->peers[i].priority, nf->peers[i].priority);
    if (policy[0] || f->policy_path[0])
        buf_printf(changes, "node %s: db failover policy %s\n", f->node,
                   policy[0] ? policy : "(the default rule)");
    if (dry_run) {
        policy_host_free(h);
        free(nf);
        return 0;
    }
    if (down_after_ms != f->down_after_ms) {
        set_timing(f, down_after_ms);
        if (ev_is_active(&f->timer)) {
            ev_timer_stop(f->loop, &f->timer);
            ev_timer_set(&f->timer, (double)f->probe_ms / 1000, (double)f->probe_ms / 1000);
            ev_timer_start(f->loop, &f->timer);
        } else {
            ev_timer_set(&f->timer, (double)f->probe_ms / 1000, (double)f->probe_ms / 1000);
        }
    }
    f->priority = priority;
    for (int i = 0; i < f->npeers; i++)
        f->peers[i].priority = nf->peers[i].priority;
    free(nf);
    /* an election under way finishes with the policy it began with: the
     * next one uses the new */
    policy_host_free(f->policy);
    f->policy = h;
    snprintf(f->policy_path, sizeof f->policy_path, "%s", policy);
    log_info("db %s: failover settings reloaded: down_after %.3gs, priority %d, policy %s",
             f->node, (double)f->down_after_ms / 1000, f->priority,
             policy[0] ? policy : "(the default rule)");
    return 0;
}

void failover_start(struct failover *f)
{
    if (f->enabled)
        ev_timer_start(f->loop, &f->timer);
}

void failover_free(struct failover *f)
{
    if (!f->loop)
        return;
    ev_timer_stop(f->loop, &f->timer);
    for (int i = 0; i < f->npeers; i++)
        if (f->peers[i].conn)
            net_conn_abort(f->peers[i].conn, "shutting down");
    if (f->policy)
        policy_host_free(f->policy);
    f->policy = NULL;
    explicit_bzero(f->password, sizeof f->password);
}

const struct failover_peer *failover_peer(const struct failover *f, const char *node)
{
    for (int i = 0; i < f->npeers; i++)
        if (strcmp(f->peers[i].node, node) == 0)
            return &f->peers[i];
    return NULL;
}

static int save_epoch(struct failover *f, char *why, size_t whylen)
{
    char err[600];
    if (epoch_save(f->ep, f->dir, err, sizeof err) < 0) {
        log_error("db %s: cannot write the epoch file: %s", f->node, err);
        snprintf(why, whylen, "cannot write the epoch file");
        return -1;
    }
    return 0;
}

/* ---- peer connections --------------------------------------------------- */

static void peer_send(struct failover_peer *p, char kind, uint64_t ep, int argc,
                      const char **argv)
{
    if (p->nexpect == (int)sizeof p->expect)
        return;
    struct buf b;
    buf_init(&b);
    buf_printf(&b, "*%d\r\n", argc);
    for (int i = 0; i < argc; i++)
        buf_printf(&b, "$%zu\r\n%s\r\n", strlen(argv[i]), argv[i]);
    net_conn_write(p->conn, buf_head(&b), buf_size(&b));
    buf_free(&b);
    p->vote_epoch[p->nexpect] = ep;
    p->expect[p->nexpect++] = kind;
    if (p->nexpect == 1)
        p->sent_ms = util_now_ms();
}

static void peer_line(struct failover_peer *p, const char *line);

static void peer_on_read(struct net_conn *c)
{
    char line[512];
    while (c->data && buf_size(&c->rbuf) > 0) {
        struct failover_peer *p = c->data;
        int got = stream_handshake_line(&c->rbuf, line, sizeof line);
        if (got < 0) {
            net_conn_abort(c, "an answer that is not one line");
            return;
        }
        if (got == 0)
            break;
        peer_line(p, line);
    }
}

static void peer_on_connect(struct net_conn *c, int err)
{
    struct failover_peer *p = c->data;
    if (err) {
        net_conn_abort(c, "cannot connect");
        return;
    }
    p->ready = 1;
    /* from here on the tick bounds each answer's wait */
    net_conn_set_timeout(c, 0);
    if (p->owner->has_password) {
        const char *av[] = {"AUTH", p->owner->password};
        peer_send(p, 'A', 0, 2, av);
    }
}

static void peer_on_close(struct net_conn *c, const char *why)
{
    struct failover_peer *p = c->data;
    (void)why;
    if (!p)
        return;
    p->conn = NULL;
    p->ready = 0;
    p->nexpect = 0;
    p->next_connect_ms = util_now_ms() + p->owner->probe_ms;
    c->data = NULL;
}

static void peer_on_timeout(struct net_conn *c) { net_conn_abort(c, "no answer"); }

static const struct net_conn_ops peer_ops = {
    .on_read = peer_on_read,
    .on_connect = peer_on_connect,
    .on_timeout = peer_on_timeout,
    .on_close = peer_on_close,
};

static void peer_connect(struct failover *f, struct failover_peer *p)
{
    p->owner = f;
    p->conn = net_connect(f->loop, (const struct sockaddr *)&p->sa, p->salen, &peer_ops, p);
    if (!p->conn) {
        p->next_connect_ms = util_now_ms() + f->probe_ms;
        return;
    }
    p->ready = 0;
    p->nexpect = 0;
    p->sent_ms = util_now_ms();
    /* a connect that hangs (a cut link) ends within down_after */
    net_conn_set_timeout(p->conn, (double)f->down_after_ms / 1000);
}

static void promote_now(struct failover *f, const char *why);

/* An answer, in the order the requests went. */
static void peer_line(struct failover_peer *p, const char *line)
{
    struct failover *f = p->owner;
    if (p->nexpect == 0)
        return;
    char kind = p->expect[0];
    uint64_t vep = p->vote_epoch[0];
    memmove(p->expect, p->expect + 1, (size_t)(p->nexpect - 1));
    memmove(p->vote_epoch, p->vote_epoch + 1, (size_t)(p->nexpect - 1) * sizeof p->vote_epoch[0]);
    p->nexpect--;
    int64_t now = util_now_ms();
    p->sent_ms = now;
    if (kind == 'A') {
        if (line[0] != '+') {
            log_warn("db %s: peer %s refused AUTH: %s", f->node, p->node, line);
            if (p->conn)
                net_conn_abort(p->conn, "auth refused");
        }
        return;
    }
    if (kind == 'V') {
        if (strncmp(line, "+YES", 4) == 0 && f->electing && vep == f->elect_epoch) {
            f->votes++;
            log_info("db %s: %s voted for this node in epoch %llu (%d of %d needed)", f->node,
                     p->node, (unsigned long long)vep, f->votes, failover_majority(f));
            if (f->votes >= failover_majority(f))
                promote_now(f, "elected by a majority");
        } else if (line[0] == '-' && f->electing && vep == f->elect_epoch) {
            log_info("db %s: %s refused its vote in epoch %llu: %s", f->node, p->node,
                     (unsigned long long)vep, line + 1);
        }
        return;
    }
    /* P: +PROBE node role epoch log_epoch offset following healthy */
    char node[64], role[16], following[64];
    unsigned long long ep, lep, off;
    int healthy;
    if (sscanf(line, "+PROBE %63s %15s %llu %llu %llu %63s %d", node, role, &ep, &lep, &off,
               following, &healthy) != 7) {
        log_warn("db %s: peer %s answers the probe with '%.100s'", f->node, p->node, line);
        return;
    }
    p->last_ok_ms = now;
    p->role = strcmp(role, "primary") == 0 ? FO_ROLE_PRIMARY : FO_ROLE_REPLICA;
    p->epoch = ep;
    p->log_epoch = lep;
    p->offset = off;
    p->healthy = healthy;
    snprintf(p->following, sizeof p->following, "%s", strcmp(following, "-") == 0 ? "" : following);
}

/* ---- the election ------------------------------------------------------ */

static int alive(const struct failover *f, const struct failover_peer *p, int64_t now)
{
    return p->last_ok_ms && now - p->last_ok_ms <= f->down_after_ms;
}

int failover_default_pick(const struct failover_cand *c, int n)
{
    int best = -1;
    for (int i = 0; i < n; i++) {
        if (best < 0) {
            best = i;
            continue;
        }
        int cmp = epoch_cmp_pos(c[i].log_epoch, c[i].offset, c[best].log_epoch, c[best].offset);
        int tie = cmp == 0 && c[i].priority == c[best].priority;
        if (cmp > 0 || (cmp == 0 && c[i].priority < c[best].priority) ||
            (tie && c[i].waiting > c[best].waiting) ||
            (tie && c[i].waiting == c[best].waiting && strcmp(c[i].node, c[best].node) < 0))
            best = i;
    }
    return best;
}

/* elect(candidates) -> a node name (or a candidate table). -1: fall back. */
static int policy_pick(struct failover *f, const struct failover_cand *c, int n)
{
    lua_State *L = policy_host_state(f->policy);
    int top = lua_gettop(L);
    policy_host_push_module(f->policy);
    lua_getfield(L, -1, "elect");
    lua_remove(L, -2);
    lua_createtable(L, n, 0);
    for (int i = 0; i < n; i++) {
        lua_createtable(L, 0, 6);
        lua_pushstring(L, c[i].node);
        lua_setfield(L, -2, "node");
        lua_pushinteger(L, (lua_Integer)c[i].offset);
        lua_setfield(L, -2, "offset");
        lua_pushinteger(L, (lua_Integer)c[i].log_epoch);
        lua_setfield(L, -2, "epoch");
        lua_pushinteger(L, c[i].priority);
        lua_setfield(L, -2, "priority");
        lua_pushboolean(L, c[i].self);
        lua_setfield(L, -2, "self");
        lua_pushboolean(L, c[i].waiting);
        lua_setfield(L, -2, "waiting");
        lua_rawseti(L, -2, i + 1);
    }
    char err[600];
    int pick = -1;
    if (policy_host_call(f->policy, "elect", 1, 1, ELECT_INSTRUCTIONS, ELECT_SECONDS, err,
                         sizeof err) < 0) {
        log_error("db %s: failover policy: %s; electing by the default rule", f->node, err);
        lua_settop(L, top);
        return -1;
    }
    if (lua_istable(L, -1))
        lua_getfield(L, -1, "node");
    const char *name = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
    for (int i = 0; name && i < n; i++)
        if (strcmp(c[i].node, name) == 0)
            pick = i;
    if (pick < 0)
        log_error("db %s: failover policy %s: elect() answered %s, not a candidate's name; "
                  "electing by the default rule",
                  f->node, f->policy_path, name ? name : luaL_typename(L, -1));
    lua_settop(L, top);
    if (pick >= 0) {
        int best = failover_default_pick(c, n);
        if (epoch_cmp_pos(c[pick].log_epoch, c[pick].offset, c[best].log_epoch, c[best].offset) <
            0) {
            log_error("db %s: failover policy %s: elect() chose %s, whose log ends before %s's "
                      "(offset %llu < %llu): the other nodes would refuse it their votes; "
                      "electing by the default rule",
                      f->node, f->policy_path, c[pick].node, c[best].node,
                      (unsigned long long)c[pick].offset, (unsigned long long)c[best].offset);
            pick = -1;
        }
    }
    return pick;
}

static void note(struct failover *f, const char *fmt, const char *a)
{
    char msg[sizeof f->last_note];
    snprintf(msg, sizeof msg, fmt, a);
    if (strcmp(msg, f->last_note) != 0)
        log_warn("db %s: %s", f->node, msg);
    snprintf(f->last_note, sizeof f->last_note, "%s", msg);
}

static void promote_now(struct failover *f, const char *why)
{
    uint64_t e = f->elect_epoch;
    f->electing = 0;
    if (f->ops->promote(f->arg, e, why) == 0) {
        f->promotions++;
        snprintf(f->primary, sizeof f->primary, "%s", f->node);
        f->primary_seen_ms = util_now_ms();
        f->last_note[0] = 0;
    }
}

static void start_election(struct failover *f, int64_t now)
{
    char why[128];
    uint64_t e = f->ep->epoch + 1;
    f->ep->epoch = e;
    snprintf(f->ep->voted_for, sizeof f->ep->voted_for, "%s", f->node);
    if (save_epoch(f, why, sizeof why) < 0)
        return;
    f->elections++;
    f->electing = 1;
    f->elect_epoch = e;
    f->votes = 1;
    f->elect_deadline_ms = now + f->down_after_ms;
    log_warn("db %s: the primary %s has not answered for %lld ms: asking for votes in epoch %llu",
             f->node, f->primary[0] ? f->primary : "(none)", (long long)(now - f->primary_seen_ms),
             (unsigned long long)e);
    /* it no longer takes records of the old epoch */
    f->ops->step_down(f->arg, "an election started");
    struct failover_self me;
    f->ops->self(f->arg, &me);
    char es[24], les[24], offs[24];
    snprintf(es, sizeof es, "%llu", (unsigned long long)e);
    snprintf(les, sizeof les, "%llu", (unsigned long long)epoch_log(f->ep));
    snprintf(offs, sizeof offs, "%llu", (unsigned long long)me.offset);
    const char *av[] = {"FAILOVER", "VOTE", es, f->node, les, offs};
    for (int i = 0; i < f->npeers; i++) {
        struct failover_peer *p = &f->peers[i];
        if (p->conn && p->ready)
            peer_send(p, 'V', e, 6, av);
    }
    if (f->votes >= failover_majority(f))
        promote_now(f, "elected (a data set of one)");
}

static void consider_election(struct failover *f, const struct failover_self *me, int64_t now)
{
    int reachable = 1;
    struct failover_cand c[FAILOVER_MAX_PEERS + 1];
    int n = 0;
    if (me->healthy && f->priority != 0) {
        snprintf(c[n].node, sizeof c[n].node, "%s", f->node);
        c[n].log_epoch = epoch_log(f->ep);
        c[n].offset = me->offset;
        c[n].priority = f->priority;
        c[n].self = 1;
        c[n].waiting = me->following[0] == 0;
        n++;
    }
    for (int i = 0; i < f->npeers; i++) {
        struct failover_peer *p = &f->peers[i];
        if (!alive(f, p, now))
            continue;
        reachable++;
        if (p->role != FO_ROLE_REPLICA || !p->healthy || p->priority == 0)
            continue;
        snprintf(c[n].node, sizeof c[n].node, "%s", p->node);
        c[n].log_epoch = p->log_epoch;
        c[n].offset = p->offset;
        c[n].priority = p->priority;
        c[n].self = 0;
        c[n].waiting = p->following[0] == 0;
        n++;
    }
    if (reachable < failover_majority(f)) {
        note(f, "the primary is down, but this node sees %s of the db nodes: no election "
                "without a majority",
             reachable == 1 ? "none" : "fewer than a majority");
        return;
    }
    if (n == 0) {
        note(f, "the primary is down and no replica can take its place%s", "");
        return;
    }
    int pick = -1;
    if (f->policy) {
        pick = policy_pick(f, c, n);
        if (pick < 0)
            f->policy_fallbacks++;
    }
    if (pick < 0)
        pick = failover_default_pick(c, n);
    if (!c[pick].self)
        return; /* the chosen one asks for the votes */
    start_election(f, now);
}

/* ---- the tick ---------------------------------------------------------- */

static void tick_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct failover *f = w->data;
    int64_t now = util_now_ms();
    /* probes */
    for (int i = 0; i < f->npeers; i++) {
        struct failover_peer *p = &f->peers[i];
        p->owner = f;
        if (!p->conn) {
            if (now >= p->next_connect_ms)
                peer_connect(f, p);
            continue;
        }
        if (!p->ready)
            continue;
        if (p->nexpect > 0) {
            if (now - p->sent_ms > f->down_after_ms)
                net_conn_abort(p->conn, "no answer within down_after");
            continue;
        }
        static const char *av[] = {"FAILOVER", "PROBE"};
        peer_send(p, 'P', 0, 2, av);
    }
    struct failover_self me;
    f->ops->self(f->arg, &me);
    /* the primary of the latest epoch that answers */
    struct failover_peer *best = NULL;
    for (int i = 0; i < f->npeers; i++) {
        struct failover_peer *p = &f->peers[i];
        if (alive(f, p, now) && p->role == FO_ROLE_PRIMARY && (!best || p->epoch > best->epoch))
            best = p;
    }
    uint64_t later = 0; /* the latest epoch an answering node has */
    for (int i = 0; i < f->npeers; i++)
        if (alive(f, &f->peers[i], now) && f->peers[i].epoch > later)
            later = f->peers[i].epoch;
    if (f->electing && now >= f->elect_deadline_ms) {
        f->electing = 0;
        f->next_elect_ms = now + f->probe_ms + rand() % (2 * f->probe_ms + 1);
        log_warn("db %s: no majority in epoch %llu; trying again later", f->node,
                 (unsigned long long)f->elect_epoch);
    }
    if (me.role == FO_ROLE_PRIMARY) {
        snprintf(f->primary, sizeof f->primary, "%s", f->node);
        f->primary_seen_ms = now;
        if (best && best->epoch > f->ep->epoch) {
            f->ops->follow(f->arg, best->node, best->addr, "a primary of a later epoch answers");
        } else if (later > f->ep->epoch) {
            f->ops->step_down(f->arg, "a node of the data set is at a later epoch");
            f->primary[0] = 0;
        }
        return;
    }
    if (best && best->epoch >= f->ep->epoch) {
        /* down_after counts from its last answer, not from when it stopped
         * counting as alive (that would be down_after twice) */
        if (best->last_ok_ms > f->primary_seen_ms)
            f->primary_seen_ms = best->last_ok_ms;
        snprintf(f->primary, sizeof f->primary, "%s", best->node);
        f->electing = 0;
        f->last_note[0] = 0;
        /* follow it, unless through a replica of it (a chain) that is up */
        const struct failover_peer *up = me.following[0] ? failover_peer(f, me.following) : NULL;
        int keep = up && up == best;
        if (up && up != best && alive(f, up, now) && up->role == FO_ROLE_REPLICA &&
            up->epoch >= best->epoch && strcmp(up->following, f->node) != 0)
            keep = 1;
        if (!keep)
            f->ops->follow(f->arg, best->node, best->addr,
                           me.following[0] ? "the primary changed" : "a primary answers");
        return;
    }
    if (f->electing || now - f->primary_seen_ms < f->down_after_ms || now < f->next_elect_ms)
        return;
    consider_election(f, &me, now);
}

/* ---- what this node answers -------------------------------------------- */

void failover_probe_line(struct failover *f, struct buf *out)
{
    struct failover_self me;
    f->ops->self(f->arg, &me);
    buf_printf(out, "+PROBE %s %s %llu %llu %llu %s %d\r\n", f->node,
               me.role == FO_ROLE_PRIMARY ? "primary" : "replica",
               (unsigned long long)f->ep->epoch, (unsigned long long)epoch_log(f->ep),
               (unsigned long long)me.offset, me.following[0] ? me.following : "-", me.healthy);
}

int failover_vote(struct failover *f, uint64_t epoch, const char *cand, uint64_t log_epoch,
                  uint64_t offset, char *why, size_t whylen)
{
    struct failover_self me;
    f->ops->self(f->arg, &me);
    int64_t now = util_now_ms();
    int granted = 0;
    if (epoch < f->ep->epoch || (epoch == f->ep->epoch && f->ep->voted_for[0] &&
                                 strcmp(f->ep->voted_for, cand) != 0))
        snprintf(why, whylen, "this node is at epoch %llu%s%s",
                 (unsigned long long)f->ep->epoch, f->ep->voted_for[0] ? " and voted for " : "",
                 f->ep->voted_for);
    else if (me.role == FO_ROLE_PRIMARY)
        snprintf(why, whylen, "this node is the primary and answers");
    else if (f->enabled && now - f->primary_seen_ms < f->down_after_ms / 2)
        /* half of down_after: probes of two nodes are up to a probe
         * interval apart, and a candidate that counted down_after must
         * not be refused by a voter whose last answer came a little later */
        snprintf(why, whylen, "this node still sees the primary %s", f->primary);
    else if (epoch_cmp_pos(log_epoch, offset, epoch_log(f->ep), me.offset) < 0)
        snprintf(why, whylen, "the candidate's log ends before this node's (%llu:%llu < %llu:%llu)",
                 (unsigned long long)log_epoch, (unsigned long long)offset,
                 (unsigned long long)epoch_log(f->ep), (unsigned long long)me.offset);
    else
        granted = 1;
    if (!granted) {
        f->votes_refused++;
        return 0;
    }
    int was_new = epoch > f->ep->epoch;
    f->ep->epoch = epoch;
    snprintf(f->ep->voted_for, sizeof f->ep->voted_for, "%s", cand);
    if (save_epoch(f, why, whylen) < 0)
        return 0;
    f->votes_granted++;
    log_info("db %s: votes for %s in epoch %llu", f->node, cand, (unsigned long long)epoch);
    if (was_new)
        f->ops->step_down(f->arg, "it voted in a later epoch");
    /* do not start an election of its own right away */
    f->next_elect_ms = now + f->down_after_ms;
    return 1;
}

void failover_saw_epoch(struct failover *f, uint64_t epoch)
{
    if (epoch <= f->ep->epoch)
        return;
    char why[64];
    f->ep->epoch = epoch;
    f->ep->voted_for[0] = 0;
    save_epoch(f, why, sizeof why);
}

void failover_info(const struct failover *f, struct buf *b)
{
    char hist[EPOCH_HISTORY * 44];
    epoch_hist_format(f->ep, hist, sizeof hist);
    buf_printf(b,
               "epoch:%llu\r\nlog_epoch:%llu\r\nepoch_history:%s\r\nfailover:%s\r\n"
               "failover_primary:%s\r\nfailover_elections:%llu\r\nfailover_promotions:%llu\r\n"
               "failover_votes_granted:%llu\r\nfailover_policy_fallbacks:%llu\r\n"
               "failover_down_after_ms:%lld\r\nfailover_priority:%d\r\nfailover_policy:%s\r\n",
               (unsigned long long)f->ep->epoch, (unsigned long long)epoch_log(f->ep), hist,
               f->enabled ? "on" : "off", f->primary[0] ? f->primary : "-",
               (unsigned long long)f->elections, (unsigned long long)f->promotions,
               (unsigned long long)f->votes_granted, (unsigned long long)f->policy_fallbacks,
               f->enabled ? (long long)f->down_after_ms : 0LL, f->priority,
               f->policy ? f->policy_path : "-");
}

void failover_status(const struct failover *f, struct buf *b)
{
    buf_printf(b, "\"epoch\":%llu,\"log_epoch\":%llu,\"failover\":%s,\"failover_primary\":",
               (unsigned long long)f->ep->epoch, (unsigned long long)epoch_log(f->ep),
               f->enabled ? "true" : "false");
    buf_json_string(b, f->primary);
    buf_printf(b, ",\"elections\":%llu,\"promotions\":%llu,\"votes_granted\":%llu",
               (unsigned long long)f->elections, (unsigned long long)f->promotions,
               (unsigned long long)f->votes_granted);
}
