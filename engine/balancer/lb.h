/* lb: load-balancing policies behind one small ops table.
 *
 * A policy sees the backends as an array of lb_target and picks one for a
 * request. The balancer owns the targets and keeps their live fields
 * (usable, active, eff_weight, ...) current; a policy keeps only its own
 * bookkeeping in lb->state and is told through update() when membership or
 * configured weights change. Each built-in policy is one file (lb_*.c).
 *
 * A target is a candidate for a pick when it is usable (healthy and not
 * ejected, or every backend while in panic), has not been tried already by
 * this request (skip), and has a positive effective weight. */
#ifndef STRATA_LB_H
#define STRATA_LB_H

#include <stddef.h>
#include <stdint.h>

struct http_msg;

/* Effective weights are scaled so slow start can ramp even weight 1. */
#define LB_EFF_SCALE 16

struct lb_target {
    const char *name;
    const char *addr;
    int index;        /* position in lb->t */
    int weight;       /* configured weight; 0 takes the backend out of rotation */
    int eff_weight;   /* live weight: weight * LB_EFF_SCALE at full strength,
                       * less while slow start ramps it up */
    int max_active;   /* 0: unlimited (the `first` policy fills up to this) */
    int active;       /* requests in flight */
    unsigned usable : 1;
    unsigned skip : 1;
    unsigned healthy : 1;
    double ewma_ms;   /* recent response-head latency */
    uint64_t errors;  /* failures seen (connect errors, resets, 5xx) */
};

/* What a policy may look at for one request. */
struct lb_req {
    uint64_t hash;               /* key hash, computed when lb->wants_hash */
    const struct http_msg *msg;  /* request head, for Lua policies */
    const char *client;          /* "ip:port" of the client */
};

struct lb;

struct lb_ops {
    const char *name;
    /* Picks by the request's key hash (lb_req.hash): the caller computes
     * it only for policies that set this. */
    unsigned wants_hash : 1;
    /* Allocates lb->state; 0 or -1 with a message. */
    int (*init)(struct lb *lb, char *err, size_t errlen);
    /* Membership or configured weights changed. */
    void (*update)(struct lb *lb);
    /* Returns a candidate, or NULL when there is none. */
    struct lb_target *(*pick)(struct lb *lb, const struct lb_req *req);
    void (*free)(struct lb *lb);
};

struct lb {
    const struct lb_ops *ops;
    const void *conf; /* policy-specific settings (lb_lua_conf), or NULL */
    struct lb_target **t;
    int n;
    int wants_hash;   /* from ops; a Lua policy takes its fallback's */
    void *state;
    uint64_t rng; /* xorshift state for randomised policies */
};

extern const struct lb_ops lb_round_robin_ops;
extern const struct lb_ops lb_least_conn_ops;
extern const struct lb_ops lb_p2c_ops;
extern const struct lb_ops lb_chash_ops;
extern const struct lb_ops lb_first_ops;

/* Built-in policy by name; NULL when unknown. */
const struct lb_ops *lb_ops_find(const char *name);

/* Sets up lb over targets t[0..n) with `ops`; 0 or -1 with a message. */
int lb_init(struct lb *lb, const struct lb_ops *ops, struct lb_target **t, int n, char *err,
            size_t errlen);
/* The same, with settings for policies that take them (lb_lua_ops). */
int lb_init_conf(struct lb *lb, const struct lb_ops *ops, const void *conf,
                 struct lb_target **t, int n, char *err, size_t errlen);
void lb_free(struct lb *lb);

static inline int lb_candidate(const struct lb_target *t)
{
    return t->usable && !t->skip && t->eff_weight > 0;
}

static inline uint64_t lb_rand(struct lb *lb)
{
    uint64_t x = lb->rng;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    lb->rng = x;
    return x;
}

/* Compares the load of two targets, weighted: <0 when a is less loaded. */
static inline int lb_load_cmp(const struct lb_target *a, const struct lb_target *b)
{
    int64_t la = (int64_t)(a->active + 1) * b->eff_weight;
    int64_t lb_ = (int64_t)(b->active + 1) * a->eff_weight;
    return la < lb_ ? -1 : la > lb_ ? 1 : 0;
}

/* The least loaded candidate, scanning from `start`; NULL when none. */
struct lb_target *lb_least_loaded(struct lb *lb, int start);

/* Lua pick policies (lb_lua.c): a module whose pick(req, backends) returns
 * one of the backend tables it was given (or its index). The module is
 * loaded into its own Lua state; backend tables persist between calls and
 * only their live fields are refreshed, so a pick allocates little. */
struct lb_lua;

/* Loads the policy at `path` over targets t[0..n); runs its optional
 * validate(), then -- when it replaces `prev` (NULL: none) -- its optional
 * migrate() on a copy of prev's M.state (policy_migrate.h). NULL with a
 * "file:line: message" in err on failure; prev is never changed. */
struct lb_lua *lb_lua_new(const char *path, struct lb_target **t, int n,
                          const struct lb_lua *prev, char *err, size_t errlen);
/* 1 when the policy took over its predecessor's state through migrate(). */
int lb_lua_migrated(const struct lb_lua *p);
/* Asks the policy. Returns a candidate, or NULL with the reason in err (the
 * policy raised an error, returned nil, or returned a non-candidate); the
 * caller then falls back to a built-in policy. */
struct lb_target *lb_lua_pick(struct lb_lua *p, const struct lb_req *req, char *err,
                              size_t errlen);
void lb_lua_free(struct lb_lua *p);

/* The Lua pick as a policy like the others: lb_init_conf(lb, &lb_lua_ops,
 * &conf, ...) loads conf.path over the targets, taking over the M.state of
 * the Lua policy running in conf.prev (NULL, or a policy of any kind: only
 * a Lua one has state to hand over). A pick the module fails (error, nil,
 * a non-candidate) is answered by the fallback built-in, and reported to
 * on_fallback with the reason ("file:line: message") when a candidate was
 * left. The request's key hash is computed when the fallback wants it. */
struct lb_lua_conf {
    const char *path;
    const struct lb_ops *fallback;
    const struct lb *prev;
    void (*on_fallback)(void *ud, const char *why);
    void *ud;
};
extern const struct lb_ops lb_lua_ops;
/* The Lua module behind lb, or NULL when lb is not a Lua policy. */
const struct lb_lua *lb_lua_of(const struct lb *lb);

#endif
