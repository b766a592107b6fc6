#include "runtime.h"

#include <lauxlib.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "admin.h"
#include "log.h"
#include "metrics_text.h"
#include "luahost.h"
#include "topology.h"
#include "util.h"

static void on_stop_signal(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)loop;
    (void)revents;
    struct runtime *rt = w->data;
    if (rt->stopping) {
        log_warn("second stop signal: stopping now");
        ev_break(rt->loop, EVBREAK_ALL);
        return;
    }
    log_info("%s: draining", w->signum == SIGINT ? "SIGINT" : "SIGTERM");
    runtime_stop(rt);
}

/* SIGHUP: reload the topology file and apply what changed. */
static void on_hup(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)loop;
    (void)revents;
    struct runtime *rt = w->data;
    struct buf changes;
    buf_init(&changes);
    char err[1024];
    if (runtime_reload(rt, 0, &changes, err, sizeof err) < 0)
        log_error("reload failed, nothing changed: %s", err);
    buf_free(&changes);
}

/* SIGUSR1: log files are reopened (logrotate). A balancer's access log
 * watches the signal itself; this watcher says so in the log and keeps the
 * signal from ending a node that has nothing to reopen. */
static void on_usr1(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)loop;
    (void)revents;
    (void)w;
    if (log_reopen() < 0)
        log_warn("SIGUSR1: cannot reopen the log file: %s", strerror(errno));
    log_info("SIGUSR1: reopening log files");
}

static int all_idle(struct runtime *rt)
{
    for (int i = 0; i < rt->nservices; i++) {
        struct service *s = rt->services[i];
        if (s->kind->idle && !s->kind->idle(s))
            return 0;
    }
    for (int i = 0; i < rt->nretiring; i++) {
        struct service *s = rt->retiring[i];
        if (s->kind->idle && !s->kind->idle(s))
            return 0;
    }
    return 1;
}

/* While draining: after every loop iteration, stop once nothing is left. */
static void on_drain_check(struct ev_loop *loop, ev_check *w, int revents)
{
    (void)revents;
    struct runtime *rt = w->data;
    if (all_idle(rt))
        ev_break(loop, EVBREAK_ALL);
}

static void on_drain_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    struct runtime *rt = w->data;
    log_warn("drain did not finish within %.1fs; stopping anyway", rt->drain_timeout);
    ev_break(loop, EVBREAK_ALL);
}

/* Services removed by a reload are freed once their in-flight work ends. */
static void on_retire_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct runtime *rt = w->data;
    int keep = 0;
    for (int i = 0; i < rt->nretiring; i++) {
        struct service *s = rt->retiring[i];
        if (!s->kind->idle || s->kind->idle(s)) {
            log_info("node %s: %s on %s retired", s->node, s->kind->name, s->listen);
            if (s->kind->free)
                s->kind->free(s);
        } else {
            rt->retiring[keep++] = s;
        }
    }
    rt->nretiring = keep;
    if (keep == 0)
        ev_timer_stop(rt->loop, &rt->retire_timer);
}

int runtime_init(struct runtime *rt, struct ev_loop *loop)
{
    memset(rt, 0, sizeof *rt);
    rt->loop = loop;
    rt->env.loop = loop;
    rt->env.topology_path = rt->topology_path;
    rt->drain_timeout = 10.0;
    rt->started = ev_now(loop);
    rt->generation = 1;
    ev_signal_init(&rt->sigint, on_stop_signal, SIGINT);
    ev_signal_init(&rt->sigterm, on_stop_signal, SIGTERM);
    ev_signal_init(&rt->sighup, on_hup, SIGHUP);
    ev_signal_init(&rt->sigusr1, on_usr1, SIGUSR1);
    ev_check_init(&rt->drain_check, on_drain_check);
    ev_timer_init(&rt->drain_timer, on_drain_timeout, 0., 0.);
    ev_timer_init(&rt->retire_timer, on_retire_timer, 0.05, 0.05);
    rt->sigint.data = rt->sigterm.data = rt->sighup.data = rt->sigusr1.data = rt;
    rt->drain_check.data = rt->drain_timer.data = rt->retire_timer.data = rt;
    ev_signal_start(loop, &rt->sigint);
    ev_signal_start(loop, &rt->sigterm);
    ev_signal_start(loop, &rt->sighup);
    ev_signal_start(loop, &rt->sigusr1);
    return 0;
}

/* The canonical text of the config at idx (strata.topology.fingerprint). */
static char *cfg_fingerprint(lua_State *L, int idx)
{
    idx = lua_absindex(L, idx);
    lua_getglobal(L, "require");
    lua_pushstring(L, "strata.topology");
    char err[256];
    if (luahost_pcall(L, 1, 1, err, sizeof err) < 0)
        return NULL;
    lua_getfield(L, -1, "fingerprint");
    lua_pushvalue(L, idx);
    char *fp = NULL;
    if (luahost_pcall(L, 1, 1, err, sizeof err) == 0) {
        fp = strdup(lua_tostring(L, -1));
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    return fp;
}

static const char *cfg_str(lua_State *L, int idx, const char *field, char *out, size_t n)
{
    lua_getfield(L, idx, field);
    snprintf(out, n, "%s", lua_isstring(L, -1) ? lua_tostring(L, -1) : "");
    lua_pop(L, 1);
    return out;
}

static struct service *start_service(struct runtime *rt, lua_State *L, int cfg, const char *node,
                                     char *err, size_t errlen)
{
    char kind_name[32], where[1100], listen[128];
    cfg_str(L, cfg, "kind", kind_name, sizeof kind_name);
    cfg_str(L, cfg, "where", where, sizeof where);
    cfg_str(L, cfg, "listen", listen, sizeof listen);
    /* The same decision `strata check` made (topology_load asks it too). */
    if (service_validate(L, cfg, err, errlen) < 0)
        return NULL;
    const struct service_kind *kind = service_kind_find(kind_name);
    if (rt->nservices >= RUNTIME_MAX_SERVICES) {
        snprintf(err, errlen, "%s: too many services in one process (limit %d)", where,
                 RUNTIME_MAX_SERVICES);
        return NULL;
    }
    char why[768] = "";
    struct service *s = kind->start(&rt->env, L, cfg, why, sizeof why);
    if (!s) {
        snprintf(err, errlen, "%s: node '%s': cannot start %s on %s: %s", where, node, kind->name,
                 listen, why);
        return NULL;
    }
    s->kind = kind;
    s->env = &rt->env;
    snprintf(s->node, sizeof s->node, "%s", node);
    if (!s->listen[0])
        snprintf(s->listen, sizeof s->listen, "%.63s", listen);
    rt->fingerprints[rt->nservices] = cfg_fingerprint(L, cfg);
    rt->services[rt->nservices++] = s;
    /* no line here: each kind logs its own "listening on" with its
     * settings, and the log line is already tagged with the node */
    return s;
}

/* --- the node's admin routes ---------------------------------------------- */

static void admin_status(void *ud, const struct admin_request *req, struct admin_response *resp)
{
    (void)req;
    struct runtime_admin *ra = ud;
    runtime_status_json(ra->rt, ra->node, &resp->body);
}

static void admin_metrics(void *ud, const struct admin_request *req, struct admin_response *resp)
{
    (void)req;
    struct runtime_admin *ra = ud;
    resp->content_type = "text/plain; version=0.0.4";
    runtime_metrics(ra->rt, ra->node, &resp->body);
}

static void admin_healthz(void *ud, const struct admin_request *req, struct admin_response *resp)
{
    (void)req;
    struct runtime_admin *ra = ud;
    resp->content_type = "text/plain";
    buf_append_str(&resp->body, ra->rt->stopping ? "draining\n" : "ok\n");
    if (ra->rt->stopping)
        resp->status = 503;
}

static void admin_reload(void *ud, const struct admin_request *req, struct admin_response *resp)
{
    struct runtime_admin *ra = ud;
    struct runtime *rt = ra->rt;
    int dry = admin_query_flag(req, "dry_run");
    struct buf changes;
    buf_init(&changes);
    char err[1024];
    int rc = runtime_reload(rt, dry, &changes, err, sizeof err);
    buf_append(&changes, "", 1);
    struct admin_reload r = {.node = ra->node, .topology = rt->topology_real, .ok = rc == 0,
                             .dry_run = dry,
                             .generation = rt->generation, .reload_ms = rt->last_reload_ms,
                             .changes = buf_head(&changes), .error = rc == 0 ? NULL : err};
    admin_reload_answer(resp, &r);
    buf_free(&changes);
}

static const struct admin_route node_routes[] = {
    {"/status", "GET", admin_status},
    {"/metrics", "GET", admin_metrics},
    {"/healthz", "GET", admin_healthz},
    {"/reload", "POST", admin_reload},
    {NULL, NULL, NULL},
};

static int auth_mode(const char *s)
{
    return strcmp(s, "all") == 0 ? ADMIN_AUTH_ALL : ADMIN_AUTH_WRITES;
}

static int start_admin(struct runtime *rt, const char *node, const char *addr, const char *token,
                       const char *auth, char *err, size_t errlen)
{
    if (rt->nadmins >= RUNTIME_MAX_NODES) {
        snprintf(err, errlen, "too many nodes in one process");
        return -1;
    }
    struct runtime_admin *ra = &rt->admins[rt->nadmins];
    ra->rt = rt;
    snprintf(ra->node, sizeof ra->node, "%s", node);
    char why[512];
    struct admin_opts o = {.node = node, .topology = rt->topology_real, .token = token,
                           .auth = auth_mode(auth)};
    ra->admin = admin_start(rt->loop, addr, &o, node_routes, ra, why, sizeof why);
    if (!ra->admin) {
        snprintf(err, errlen, "node '%s': cannot start admin endpoint: %s", node, why);
        return -1;
    }
    rt->nadmins++;
    log_info("node %s: admin on %s", node, admin_addr(ra->admin));
    return 0;
}

int runtime_start(struct runtime *rt, lua_State *L, const char *only_node, char *err,
                  size_t errlen)
{
    int topo = lua_gettop(L);
    lua_getfield(L, topo, "file");
    snprintf(rt->topology_path, sizeof rt->topology_path, "%s", lua_tostring(L, -1));
    lua_pop(L, 1);
    char real[PATH_MAX];
    snprintf(rt->topology_real, sizeof rt->topology_real, "%s",
             realpath(rt->topology_path, real) ? real : rt->topology_path);
    snprintf(rt->node, sizeof rt->node, "%s", only_node ? only_node : "");
    lua_getfield(L, topo, "supervisor");
    if (lua_istable(L, -1)) {
        lua_getfield(L, -1, "drain_timeout");
        if (lua_isnumber(L, -1))
            rt->drain_timeout = lua_tonumber(L, -1);
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    lua_getfield(L, topo, "nodes");
    int nodes = lua_gettop(L);
    lua_Integer nn = (lua_Integer)lua_rawlen(L, nodes);
    int rc = 0;
    for (lua_Integer i = 1; i <= nn && rc == 0; i++) {
        lua_rawgeti(L, nodes, i);
        int n = lua_gettop(L);
        char node[64], admin[128], token[300], auth[16];
        cfg_str(L, n, "name", node, sizeof node);
        cfg_str(L, n, "admin", admin, sizeof admin);
        cfg_str(L, n, "admin_token", token, sizeof token);
        cfg_str(L, n, "admin_auth", auth, sizeof auth);
        /* One node under a supervisor: the address it keeps for this name. */
        if (only_node && rt->admin_addr[0])
            snprintf(admin, sizeof admin, "%s", rt->admin_addr);
        if (!only_node || strcmp(only_node, node) == 0) {
            lua_getfield(L, n, "services");
            lua_Integer ns = (lua_Integer)lua_rawlen(L, -1);
            for (lua_Integer j = 1; j <= ns && rc == 0; j++) {
                lua_rawgeti(L, -1, j);
                if (!start_service(rt, L, lua_gettop(L), node, err, errlen))
                    rc = -1;
                lua_pop(L, 1);
            }
            lua_pop(L, 1);
            if (rc == 0 && admin[0])
                rc = start_admin(rt, node, admin, token, auth, err, errlen);
            memset(token, 0, sizeof token);
        }
        lua_settop(L, nodes);
    }
    lua_settop(L, topo);
    return rc;
}

/* --- reload ------------------------------------------------------------- */

struct reload_plan {
    int matched[RUNTIME_MAX_SERVICES];   /* new cfg stack index per service, 0: removed */
    int changed[RUNTIME_MAX_SERVICES];
    int moved[RUNTIME_MAX_SERVICES];     /* new listen address: replaced */
    int added[RUNTIME_MAX_SERVICES];     /* stack indexes of new cfgs to start */
    char added_node[RUNTIME_MAX_SERVICES][64];
    int nadded;
};

static int find_service(struct runtime *rt, const char *node, const char *kind)
{
    for (int i = 0; i < rt->nservices; i++)
        if (strcmp(rt->services[i]->node, node) == 0 &&
            strcmp(rt->services[i]->kind->name, kind) == 0)
            return i;
    return -1;
}

/* Matches the new topology's services (on the stack at `topo`) against the
 * running ones, leaving every new cfg table on the stack. */
static int plan_reload(struct runtime *rt, lua_State *L, int topo, struct reload_plan *plan,
                       struct buf *changes, char *err, size_t errlen)
{
    memset(plan, 0, sizeof *plan);
    lua_getfield(L, topo, "nodes");
    int nodes = lua_gettop(L);
    lua_Integer nn = (lua_Integer)lua_rawlen(L, nodes);
    int have_node = !rt->node[0];
    for (lua_Integer i = 1; i <= nn; i++) {
        lua_rawgeti(L, nodes, i);
        char node[64];
        cfg_str(L, -1, "name", node, sizeof node);
        if (rt->node[0] && strcmp(rt->node, node) != 0) {
            lua_pop(L, 1);
            continue;
        }
        have_node = 1;
        lua_getfield(L, -1, "services");
        lua_remove(L, -2);
        int svcs = lua_gettop(L);
        lua_Integer ns = (lua_Integer)lua_rawlen(L, svcs);
        for (lua_Integer j = 1; j <= ns; j++) {
            lua_rawgeti(L, svcs, j); /* stays on the stack for the apply phase */
            int cfg = lua_gettop(L);
            char kind[32], listen[128], where[1100];
            cfg_str(L, cfg, "kind", kind, sizeof kind);
            cfg_str(L, cfg, "listen", listen, sizeof listen);
            cfg_str(L, cfg, "where", where, sizeof where);
            int k = find_service(rt, node, kind);
            if (k < 0) {
                if (plan->nadded >= RUNTIME_MAX_SERVICES) {
                    snprintf(err, errlen, "%s: too many services", where);
                    return -1;
                }
                if (service_validate(L, cfg, err, errlen) < 0)
                    return -1;
                snprintf(plan->added_node[plan->nadded], 64, "%s", node);
                plan->added[plan->nadded++] = cfg;
                buf_printf(changes, "node %s: start %s on %s\n", node, kind, listen);
                continue;
            }
            struct service *s = rt->services[k];
            lua_getfield(L, cfg, "listen");
            int moved = 0;
            {
                /* A new listen address: start a new service there and drain
                 * the old one, as for a removed + added service. */
                char *fp_old = rt->fingerprints[k];
                char want[160];
                snprintf(want, sizeof want, "listen=\"%s\"", listen);
                moved = fp_old && !strstr(fp_old, want);
            }
            lua_pop(L, 1);
            if (moved) {
                snprintf(plan->added_node[plan->nadded], 64, "%s", node);
                plan->added[plan->nadded++] = cfg;
                buf_printf(changes, "node %s: move %s from %s to %s\n", node, kind, s->listen,
                           listen);
                plan->moved[k] = 1;
                continue;
            }
            plan->matched[k] = cfg;
            char *fp = cfg_fingerprint(L, cfg);
            int same = fp && rt->fingerprints[k] && strcmp(fp, rt->fingerprints[k]) == 0;
            free(fp);
            if (same)
                continue;
            if (!s->kind->reload) {
                snprintf(err, errlen, "%s: node '%s': the %s service cannot change without a "
                         "restart", where, node, kind);
                return -1;
            }
            char why[1024] = "";
            if (s->kind->reload(s, L, cfg, 1, changes, why, sizeof why) < 0) {
                snprintf(err, errlen, "%s", why);
                return -1;
            }
            plan->changed[k] = 1;
        }
        /* svcs stays: removing it would shift the cfg indexes kept above. */
    }
    if (!have_node) {
        snprintf(err, errlen, "%s: node '%s' is no longer in the topology (the supervisor "
                 "stops it)", rt->topology_path, rt->node);
        return -1;
    }
    for (int k = 0; k < rt->nservices; k++)
        if (!plan->matched[k] && !plan->moved[k])
            buf_printf(changes, "node %s: stop %s on %s\n", rt->services[k]->node,
                       rt->services[k]->kind->name, rt->services[k]->listen);
    return 0;
}

static void apply_reload(struct runtime *rt, lua_State *L, struct reload_plan *plan)
{
    struct buf ignored;
    buf_init(&ignored);
    for (int k = 0; k < rt->nservices; k++) {
        struct service *s = rt->services[k];
        if (plan->changed[k]) {
            char why[1024];
            if (s->kind->reload(s, L, plan->matched[k], 0, &ignored, why, sizeof why) < 0)
                log_error("node %s: %s reload failed after validation: %s", s->node,
                          s->kind->name, why);
            free(rt->fingerprints[k]);
            rt->fingerprints[k] = cfg_fingerprint(L, plan->matched[k]);
        }
    }
    /* Removed services drain in the background and are freed when idle. */
    int keep = 0;
    for (int k = 0; k < rt->nservices; k++) {
        struct service *s = rt->services[k];
        if (plan->matched[k]) {
            rt->fingerprints[keep] = rt->fingerprints[k];
            rt->services[keep++] = s;
            continue;
        }
        free(rt->fingerprints[k]);
        log_info("node %s: draining %s on %s (removed from the topology)", s->node,
                 s->kind->name, s->listen);
        if (s->kind->drain)
            s->kind->drain(s);
        rt->retiring[rt->nretiring++] = s;
        ev_timer_again(rt->loop, &rt->retire_timer);
    }
    rt->nservices = keep;
    for (int i = 0; i < plan->nadded; i++) {
        char err[1024];
        if (!start_service(rt, L, plan->added[i], plan->added_node[i], err, sizeof err))
            log_error("reload: %s", err);
    }
    buf_free(&ignored);
}

/* A changed admin token or admin_auth of this process's node(s) applies at
 * once (the answer to the reload that changes it still goes out). The
 * change line never shows the token. */
static void plan_admin_auth(struct runtime *rt, lua_State *L, int topo, int dry_run,
                            struct buf *changes)
{
    lua_getfield(L, topo, "nodes");
    lua_Integer nn = (lua_Integer)lua_rawlen(L, -1);
    for (lua_Integer i = 1; i <= nn; i++) {
        lua_rawgeti(L, -1, i);
        char node[64], token[300], auth[16];
        cfg_str(L, -1, "name", node, sizeof node);
        cfg_str(L, -1, "admin_token", token, sizeof token);
        cfg_str(L, -1, "admin_auth", auth, sizeof auth);
        lua_pop(L, 1);
        for (int k = 0; k < rt->nadmins; k++) {
            struct runtime_admin *ra = &rt->admins[k];
            if (strcmp(ra->node, node) != 0 ||
                !admin_auth_differs(ra->admin, token, auth_mode(auth)))
                continue;
            buf_printf(changes, "node %s: admin token or admin_auth changed\n", node);
            if (!dry_run)
                admin_set_auth(ra->admin, token, auth_mode(auth));
        }
        memset(token, 0, sizeof token);
    }
    lua_pop(L, 1);
}

int runtime_reload(struct runtime *rt, int dry_run, struct buf *changes, char *err,
                   size_t errlen)
{
    int64_t t0 = util_mono_us();
    const char *path = rt->topology_path;
    const char *slash = strrchr(path, '/');
    char dir[1024];
    snprintf(dir, sizeof dir, "%.*s", slash ? (int)(slash - path) : 1, slash ? path : ".");
    lua_State *L = luahost_new(dir);
    if (!L) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    int rc = topology_load(L, path, err, errlen);
    int topo = lua_gettop(L);
    struct reload_plan *plan = NULL;
    if (rc == 0) {
        plan = calloc(1, sizeof *plan);
        lua_checkstack(L, RUNTIME_MAX_SERVICES * 2 + 20);
        rc = plan ? plan_reload(rt, L, lua_gettop(L), plan, changes, err, errlen) : -1;
    }
    if (rc == 0)
        plan_admin_auth(rt, L, topo, dry_run, changes);
    if (rc == 0 && !dry_run && buf_size(changes) > 0) {
        apply_reload(rt, L, plan);
        rt->generation++;
    }
    free(plan);
    luahost_close(L);
    double ms = (double)(util_mono_us() - t0) / 1000.0;
    if (dry_run)
        return rc;
    rt->last_reload_ms = ms;
    if (rc == 0) {
        rt->reloads_ok++;
        rt->last_reload_error[0] = 0;
        log_info("reload: generation %u in %.2f ms%s", rt->generation, ms,
                 buf_size(changes) ? "" : " (no changes)");
    } else {
        rt->reloads_failed++;
        snprintf(rt->last_reload_error, sizeof rt->last_reload_error, "%s", err);
    }
    return rc;
}

/* --- status and metrics ------------------------------------------------- */

static int node_match(const char *want, const char *node)
{
    return !want || !*want || strcmp(want, node) == 0;
}

void runtime_status_json(struct runtime *rt, const char *node, struct buf *out)
{
    buf_append_str(out, "{\"node\":");
    buf_json_string(out, node && *node ? node : (rt->node[0] ? rt->node : "*"));
    buf_printf(out,
               ",\"pid\":%d,\"uptime_s\":%.3f,\"generation\":%u,\"reloads\":%lu,"
               "\"reload_failures\":%lu,\"last_reload_ms\":%.3f,\"last_reload_error\":",
               (int)getpid(), ev_now(rt->loop) - rt->started, rt->generation, rt->reloads_ok,
               rt->reloads_failed, rt->last_reload_ms);
    buf_json_string(out, rt->last_reload_error);
    buf_append_str(out, ",\"topology\":");
    buf_json_string(out, rt->topology_real[0] ? rt->topology_real : rt->topology_path);
    buf_append_str(out, ",\"services\":[");
    int first = 1;
    for (int i = 0; i < rt->nservices; i++) {
        struct service *s = rt->services[i];
        if (!node_match(node, s->node))
            continue;
        buf_append_str(out, first ? "{" : ",{");
        first = 0;
        buf_append_str(out, "\"kind\":");
        buf_json_string(out, s->kind->name);
        buf_append_str(out, ",\"node\":");
        buf_json_string(out, s->node);
        buf_append_str(out, ",\"listen\":");
        buf_json_string(out, s->listen);
        if (s->kind->status_json) {
            size_t before = buf_size(out);
            buf_append_str(out, ",");
            s->kind->status_json(s, out);
            if (buf_size(out) == before + 1)
                out->len--; /* the service had nothing to add */
        }
        buf_append_str(out, "}");
    }
    buf_append_str(out, "]}\n");
}

void runtime_metrics(struct runtime *rt, const char *node, struct buf *out)
{
    const char *n = node && *node ? node : (rt->node[0] ? rt->node : "all");
    /* written freely, then regrouped: services of one kind on one node (or
     * every node in one process) would otherwise split their families */
    struct buf page, nl, labels;
    buf_init(&page);
    buf_init(&nl);
    buf_init(&labels);
    buf_append_str(&nl, "node=");
    buf_prom_label(&nl, n);
    buf_append(&nl, "", 1);
    const char *nodel = buf_head(&nl);
    buf_append_str(&page, "# HELP strata_up 1 while the node is serving.\n"
                          "# TYPE strata_up gauge\n");
    buf_printf(&page, "strata_up{%s} 1\n", nodel);
    buf_append_str(&page, "# HELP strata_uptime_seconds Seconds since the node started.\n"
                          "# TYPE strata_uptime_seconds gauge\n");
    buf_printf(&page, "strata_uptime_seconds{%s} %.3f\n", nodel, ev_now(rt->loop) - rt->started);
    buf_append_str(&page, "# HELP strata_generation Policy generation (1 + applied reloads).\n"
                          "# TYPE strata_generation gauge\n");
    buf_printf(&page, "strata_generation{%s} %u\n", nodel, rt->generation);
    buf_append_str(&page, "# HELP strata_reloads_total Reload attempts by result.\n"
                          "# TYPE strata_reloads_total counter\n");
    buf_printf(&page, "strata_reloads_total{%s,result=\"ok\"} %lu\n", nodel, rt->reloads_ok);
    buf_printf(&page, "strata_reloads_total{%s,result=\"error\"} %lu\n", nodel,
               rt->reloads_failed);
    for (int i = 0; i < rt->nservices; i++) {
        struct service *s = rt->services[i];
        if (!node_match(node, s->node) || !s->kind->metrics)
            continue;
        buf_reset(&labels);
        buf_append_str(&labels, "node=");
        buf_prom_label(&labels, s->node);
        buf_append_str(&labels, ",service=");
        buf_prom_label(&labels, s->kind->name);
        buf_append(&labels, "", 1);
        s->kind->metrics(s, &page, buf_head(&labels));
    }
    metrics_text_group(buf_head(&page), buf_size(&page), out);
    buf_free(&page);
    buf_free(&nl);
    buf_free(&labels);
}

void runtime_stop(struct runtime *rt)
{
    if (rt->stopping)
        return;
    rt->stopping = 1;
    for (int i = 0; i < rt->nservices; i++) {
        struct service *s = rt->services[i];
        if (s->kind->drain)
            s->kind->drain(s);
    }
    ev_check_start(rt->loop, &rt->drain_check);
    ev_timer_set(&rt->drain_timer, rt->drain_timeout, 0.);
    ev_timer_start(rt->loop, &rt->drain_timer);
    /* Wake the loop so the check runs even if nothing else is pending. */
    ev_feed_event(rt->loop, &rt->drain_check, EV_CHECK);
}

int runtime_run(struct runtime *rt)
{
    /* The signal watchers keep the loop alive; it ends with ev_break once a
     * stop has drained every service. */
    ev_run(rt->loop, 0);
    /* Connections closed outside their callbacks are freed on the next loop
     * turn: give them that turn. */
    ev_run(rt->loop, EVRUN_NOWAIT);
    return 0;
}

void runtime_free(struct runtime *rt)
{
    for (int i = 0; i < rt->nadmins; i++)
        admin_stop(rt->admins[i].admin);
    rt->nadmins = 0;
    for (int i = 0; i < rt->nservices; i++) {
        struct service *s = rt->services[i];
        if (s->kind->describe) {
            /* A last word on what the service held and served. */
            struct buf d;
            buf_init(&d);
            s->kind->describe(s, &d);
            buf_append(&d, "", 1);
            log_info("node %s: %s on %s at stop: %s", s->node, s->kind->name, s->listen,
                     buf_head(&d));
            buf_free(&d);
        }
        if (s->kind->free)
            s->kind->free(s);
        free(rt->fingerprints[i]);
    }
    rt->nservices = 0;
    for (int i = 0; i < rt->nretiring; i++)
        if (rt->retiring[i]->kind->free)
            rt->retiring[i]->kind->free(rt->retiring[i]);
    rt->nretiring = 0;
    ev_run(rt->loop, EVRUN_NOWAIT); /* deferred frees from the services' own */
    ev_check_stop(rt->loop, &rt->drain_check);
    ev_timer_stop(rt->loop, &rt->drain_timer);
    ev_timer_stop(rt->loop, &rt->retire_timer);
    ev_signal_stop(rt->loop, &rt->sigint);
    ev_signal_stop(rt->loop, &rt->sigterm);
    ev_signal_stop(rt->loop, &rt->sighup);
    ev_signal_stop(rt->loop, &rt->sigusr1);
}
