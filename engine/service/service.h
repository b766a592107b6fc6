/* service: the interface every service kind (cache, db, balancer, web)
 * implements, and the registry the runtime starts them from.
 *
 * A service is started from its normalized config table (built by
 * lua/strata/topology.lua), which sits on the topology Lua state's stack.
 * The service reads the fields it needs with the cfg_* helpers and keeps
 * no reference into that Lua state: the topology state may be closed or
 * replaced after start. */
#ifndef STRATA_SERVICE_H
#define STRATA_SERVICE_H

#include <lua.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"

struct ev_loop;
struct service;

/* What a node gives each of its services: the loop to run on and the
 * topology file (relative paths in a config resolve against its folder).
 * The node owns it and keeps it alive longer than any service. */
struct service_env {
    struct ev_loop *loop;
    const char *topology_path;
};

struct service_kind {
    const char *name; /* "cache", "db", "balancer", "web" */
    /* Checks the config at cfg_idx without starting anything: the same
     * reader start() and reload() use, so every range and default lives in
     * one place and `strata check` refuses exactly what the runtime would.
     * 0 ok, or -1 with a message (without file:line) in err. */
    int (*validate)(lua_State *L, int cfg_idx, char *err, size_t errlen);
    /* Starts listening. On failure returns NULL with a message in err. */
    struct service *(*start)(const struct service_env *env, lua_State *L, int cfg_idx, char *err,
                             size_t errlen);
    /* Begins a graceful stop: stop accepting, finish in-flight work. The
     * runtime keeps running the loop until every service reports idle. */
    void (*drain)(struct service *s);
    /* 1 when nothing is left in flight after drain. */
    int (*idle)(struct service *s);
    /* Final release (after idle, or at once on shutdown timeout). */
    void (*free)(struct service *s);
    /* Appends a one-line human summary of live state (optional; logged
     * when the node stops). */
    void (*describe)(struct service *s, struct buf *out);
    /* Appends this service's live state as JSON object members, without the
     * braces: "\"connections\":3,\"hit_ratio\":0.91" (optional; served
     * under /status). */
    void (*status_json)(struct service *s, struct buf *out);
    /* Appends Prometheus text-format samples (optional; served under
     * /metrics). `labels` is the node/service label set to put on each
     * sample, e.g. node="c1",service="cache". */
    void (*metrics)(struct service *s, struct buf *out, const char *labels);
    /* Hot reload: validates the new config at cfg_idx and, unless dry_run,
     * applies it between loop iterations (optional; without it a changed
     * config of this kind needs a restart). On error returns -1 with
     * "file:line: message" in err and changes nothing. Appends one line per
     * change it made (or would make) to `changes`. */
    int (*reload)(struct service *s, lua_State *L, int cfg_idx, int dry_run, struct buf *changes,
                  char *err, size_t errlen);
};

/* Every service struct starts with this header. */
struct service {
    const struct service_kind *kind;
    const struct service_env *env;
    char node[64];
    char listen[64];   /* the address actually bound */
};

/* The kind of that name, or NULL when this build has none. */
const struct service_kind *service_kind_find(const char *name);
/* The one decision whether the service config at cfg_idx can run: its kind
 * exists (a kind not built yet is refused) and its kind's validate()
 * accepts it. `strata check`, start and reload all ask this. 0 ok, or -1
 * with "file:line: message" in err (the config's `where`). */
int service_validate(lua_State *L, int cfg_idx, char *err, size_t errlen);

/* Config table readers: the value at cfg_idx[field]. Missing optional fields
 * give the default; a field of the wrong type is a message in err and -1
 * (the topology checker normally catches this first). */
int cfg_string(lua_State *L, int idx, const char *field, const char *def, char *out, size_t outlen,
               char *err, size_t errlen);
int cfg_int(lua_State *L, int idx, const char *field, int64_t def, int64_t *out, char *err,
            size_t errlen);
int cfg_number(lua_State *L, int idx, const char *field, double def, double *out, char *err,
               size_t errlen);
int cfg_bool(lua_State *L, int idx, const char *field, int def, int *out, char *err, size_t errlen);

#endif
