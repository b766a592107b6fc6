/* runtime: one node process — the libev loop, its services, signals and a
 * graceful shutdown. `strata run` builds one runtime per process. */
#ifndef STRATA_RUNTIME_H
#define STRATA_RUNTIME_H

#include <ev.h>
#include <lua.h>

#include "service.h"

#define RUNTIME_MAX_SERVICES 64

struct runtime {
    struct ev_loop *loop;
    struct service *services[RUNTIME_MAX_SERVICES];
    int nservices;
    int stopping;
    double drain_timeout;      /* seconds to wait for in-flight work on stop */
    ev_signal sigint, sigterm, sighup;
    ev_timer drain_timer;
    ev_check drain_check;
    double started;            /* ev_now at start */
    char topology_path[1024];
};

int runtime_init(struct runtime *rt, struct ev_loop *loop);
/* Starts every service of the nodes in the normalized topology table at the
 * top of L's stack; `only_node` limits it to one node (NULL: all). */
int runtime_start(struct runtime *rt, lua_State *L, const char *only_node, char *err,
                  size_t errlen);
/* Runs the loop until a stop signal has drained every service. */
int runtime_run(struct runtime *rt);
/* Begins a graceful stop (what SIGINT/SIGTERM do). */
void runtime_stop(struct runtime *rt);
void runtime_free(struct runtime *rt);

#endif
