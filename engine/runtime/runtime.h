/* runtime: one node process — the libev loop, its services, its admin
 * endpoint, signals, hot reload and a graceful shutdown. `strata run --node`
 * builds one runtime per process; `--one-process` hosts every node in one. */
#ifndef STRATA_RUNTIME_H
#define STRATA_RUNTIME_H

#include <ev.h>
#include <limits.h>
#include <lua.h>

#include "buf.h"
#include "service.h"

#define RUNTIME_MAX_SERVICES 64
#define RUNTIME_MAX_NODES 64

struct admin;
struct runtime;

struct runtime_admin {
    struct admin *admin;
    struct runtime *rt;
    char node[64];
};

struct runtime {
    struct ev_loop *loop;
    struct service *services[RUNTIME_MAX_SERVICES];
    char *fingerprints[RUNTIME_MAX_SERVICES]; /* canonical config, to spot changes */
    int nservices;
    struct service *retiring[RUNTIME_MAX_SERVICES]; /* removed by reload, draining */
    int nretiring;
    struct runtime_admin admins[RUNTIME_MAX_NODES];
    int nadmins;
    int stopping;
    double drain_timeout;      /* seconds to wait for in-flight work on stop */
    ev_signal sigint, sigterm, sighup, sigusr1;
    ev_timer drain_timer, retire_timer;
    ev_check drain_check;
    double started;            /* ev_now at start */
    char node[64];             /* "" when this process hosts every node */
    char topology_path[1024];
    char topology_real[PATH_MAX]; /* its absolute path: the identity admin answers carry */
    char admin_addr[128];      /* set before runtime_start: this node's admin address,
                                  over the topology's (the supervisor keeps it per name) */
    struct service_env env;    /* handed to every service: loop, topology_path */
    unsigned generation;       /* 1 at start, +1 per applied reload */
    unsigned long reloads_ok, reloads_failed;
    double last_reload_ms;     /* validation + swap time of the last reload */
    char last_reload_error[512];
};

int runtime_init(struct runtime *rt, struct ev_loop *loop);
/* Starts every service (and admin endpoint) of the nodes in the normalized
 * topology table at the top of L's stack; `only_node` limits it to one node
 * (NULL: all). */
int runtime_start(struct runtime *rt, lua_State *L, const char *only_node, char *err,
                  size_t errlen);
/* Re-reads the topology file, validates every change for this process's
 * node(s) and, unless dry_run, applies them all (or none). One line per
 * change goes to `changes`. 0 ok, -1 with "file:line: message" in err. */
int runtime_reload(struct runtime *rt, int dry_run, struct buf *changes, char *err,
                   size_t errlen);
/* Runs the loop until a stop signal has drained every service. */
int runtime_run(struct runtime *rt);
/* Begins a graceful stop (what SIGINT/SIGTERM do). */
void runtime_stop(struct runtime *rt);
void runtime_free(struct runtime *rt);

/* JSON status and Prometheus metrics of one node (NULL/"" = every node). */
void runtime_status_json(struct runtime *rt, const char *node, struct buf *out);
void runtime_metrics(struct runtime *rt, const char *node, struct buf *out);

#endif
