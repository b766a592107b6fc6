/* balancer_gen: a generation -- one backend set with its policy and health
 * checks -- and its lifecycle.
 *
 * A reload that changes the set builds a new generation; backends kept
 * (same name and address) carry their health and statistics over
 * (bal_gen_carry_over). The proxy counts what refers to a generation
 * (attempts in flight, open server connections) in refs; a retired one is
 * freed when refs drops to zero, so no pointer into it ever dangles. This
 * module knows nothing of connections: the proxy moves its pooled ones. */
#ifndef STRATA_BALANCER_GEN_H
#define STRATA_BALANCER_GEN_H

#include <lua.h>
#include <stdint.h>

#include "health.h"
#include "lb.h"

#define BAL_MAX_BACKENDS 1024

struct bal_server;
struct bal_gen;

struct bal_backend {
    struct lb_target t; /* first: a policy's pick converts back by cast */
    char name[64];
    char addr[64];
    struct bal_gen *gen;
    struct bal_server *idle; /* pooled keep-alive connections (the proxy's) */
    int nidle;
    int nconns;
    uint64_t requests, failures;
};

struct bal_gen {
    struct bal_backend *be;
    int nbe;
    struct lb_target **targets;
    struct health_target *ht;
    struct health health;
    struct lb lb; /* the policy (lb_lua_ops carries its own fallback) */
    int refs;     /* attempts in flight and open server connections */
    int retired;
    struct bal_gen *next; /* the retired list */
};

/* A generation with the backends of the config table at idx ({ name=,
 * addr=, weight=, max_active= } or "host:port" each); no policy yet (set
 * gen->lb), health not started. NULL with a message. */
struct bal_gen *bal_gen_new(lua_State *L, int idx, char *err, size_t errlen);
/* Same backends (names and addresses, in order)? */
int bal_gen_same_backends(const struct bal_gen *a, const struct bal_gen *b);
/* Copies health state and statistics of the backends g shares with old. */
void bal_gen_carry_over(struct bal_gen *g, const struct bal_gen *old);
/* The backend of old that g's backend i continues, or NULL. */
struct bal_backend *bal_gen_match(const struct bal_gen *old, const struct bal_backend *nb);
/* Stops health checks and frees g with its policy. */
void bal_gen_free(struct bal_gen *g);

#endif
