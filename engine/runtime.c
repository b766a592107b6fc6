#include "runtime.h"

#include <lauxlib.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "log.h"

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

static void on_hup(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)loop;
    (void)w;
    (void)revents;
    log_info("SIGHUP: reload is handled by the supervisor; nothing to do in this node");
}

static int all_idle(struct runtime *rt)
{
    for (int i = 0; i < rt->nservices; i++) {
        struct service *s = rt->services[i];
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

int runtime_init(struct runtime *rt, struct ev_loop *loop)
{
    memset(rt, 0, sizeof *rt);
    rt->loop = loop;
    rt->drain_timeout = 10.0;
    rt->started = ev_now(loop);
    ev_signal_init(&rt->sigint, on_stop_signal, SIGINT);
    ev_signal_init(&rt->sigterm, on_stop_signal, SIGTERM);
    ev_signal_init(&rt->sighup, on_hup, SIGHUP);
    ev_check_init(&rt->drain_check, on_drain_check);
    ev_timer_init(&rt->drain_timer, on_drain_timeout, 0., 0.);
    rt->sigint.data = rt->sigterm.data = rt->sighup.data = rt;
    rt->drain_check.data = rt->drain_timer.data = rt;
    ev_signal_start(loop, &rt->sigint);
    ev_signal_start(loop, &rt->sigterm);
    ev_signal_start(loop, &rt->sighup);
    return 0;
}

static int start_service(struct runtime *rt, lua_State *L, int cfg, const char *node, char *err,
                         size_t errlen)
{
    lua_getfield(L, cfg, "kind");
    const char *kind_name = lua_tostring(L, -1);
    const struct service_kind *kind = kind_name ? service_kind_find(kind_name) : NULL;
    lua_getfield(L, cfg, "where");
    const char *where = lua_tostring(L, -1);
    lua_getfield(L, cfg, "listen");
    const char *listen = lua_tostring(L, -1);
    int rc = -1;
    if (!kind) {
        snprintf(err, errlen, "%s: the %s service is not available in this build of strata",
                 where ? where : "?", kind_name ? kind_name : "?");
    } else if (rt->nservices >= RUNTIME_MAX_SERVICES) {
        snprintf(err, errlen, "too many services in one process (limit %d)",
                 RUNTIME_MAX_SERVICES);
    } else {
        char why[512] = "";
        struct service *s = kind->start(rt, L, cfg, why, sizeof why);
        if (!s) {
            snprintf(err, errlen, "%s: node '%s': cannot start %s on %s: %s", where ? where : "?",
                     node, kind->name, listen ? listen : "?", why);
        } else {
            s->kind = kind;
            s->rt = rt;
            snprintf(s->node, sizeof s->node, "%s", node);
            if (!s->listen[0])
                snprintf(s->listen, sizeof s->listen, "%s", listen ? listen : "");
            rt->services[rt->nservices++] = s;
            log_info("node %s: %s listening on %s", node, kind->name, s->listen);
            rc = 0;
        }
    }
    lua_pop(L, 3);
    return rc;
}

int runtime_start(struct runtime *rt, lua_State *L, const char *only_node, char *err,
                  size_t errlen)
{
    int topo = lua_gettop(L);
    lua_getfield(L, topo, "file");
    snprintf(rt->topology_path, sizeof rt->topology_path, "%s", lua_tostring(L, -1));
    lua_pop(L, 1);
    lua_getfield(L, topo, "nodes");
    int nodes = lua_gettop(L);
    lua_Integer nn = (lua_Integer)lua_rawlen(L, nodes);
    int rc = 0;
    for (lua_Integer i = 1; i <= nn && rc == 0; i++) {
        lua_rawgeti(L, nodes, i);
        lua_getfield(L, -1, "name");
        char node[64];
        snprintf(node, sizeof node, "%s", lua_tostring(L, -1));
        lua_pop(L, 1);
        if (!only_node || strcmp(only_node, node) == 0) {
            lua_getfield(L, -1, "services");
            lua_Integer ns = (lua_Integer)lua_rawlen(L, -1);
            for (lua_Integer j = 1; j <= ns && rc == 0; j++) {
                lua_rawgeti(L, -1, j);
                rc = start_service(rt, L, lua_gettop(L), node, err, errlen);
                lua_pop(L, 1);
            }
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
    }
    lua_settop(L, topo);
    return rc;
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
    return 0;
}

void runtime_free(struct runtime *rt)
{
    for (int i = 0; i < rt->nservices; i++) {
        struct service *s = rt->services[i];
        if (s->kind->free)
            s->kind->free(s);
    }
    rt->nservices = 0;
    ev_check_stop(rt->loop, &rt->drain_check);
    ev_timer_stop(rt->loop, &rt->drain_timer);
    ev_signal_stop(rt->loop, &rt->sigint);
    ev_signal_stop(rt->loop, &rt->sigterm);
    ev_signal_stop(rt->loop, &rt->sighup);
}
