/* health: which backends may take traffic, and at what weight.
 *
 * Three inputs decide it. Active checks send `GET path` every interval
 * (a call of the HTTP layer's client, engine/http/http_client: the answer's
 * head is read with the same parser as every other response, the body is
 * not waited for) and count consecutive answers: a 2xx or 3xx passes,
 * `fall` failures take a backend down, `rise` successes bring it back. Passive ejection watches real traffic: `errors`
 * consecutive failures (connect errors, resets, 5xx) take a backend out for
 * `cooldown` seconds. A backend that comes back ramps its effective weight
 * up over `slow_start` seconds so a cold cache is not flooded. When no
 * backend is usable the panic rule sends traffic to all of them: a chance
 * of an answer beats a certain 503.
 *
 * Health writes the verdict into each target's usable / healthy /
 * eff_weight fields, logs every state change, and calls on_change when the
 * usable set changed. */
#ifndef STRATA_HEALTH_H
#define STRATA_HEALTH_H

#include <ev.h>
#include <sys/socket.h>

#include "lb.h"
#include "log.h"

struct http_call;

struct health_cfg {
    int active;             /* active checks configured */
    char path[256];
    double interval, timeout;
    int rise, fall;
    int passive_errors;     /* 0: no passive ejection */
    double passive_cooldown;
    double slow_start;      /* seconds; 0: none */
};

struct health_target {
    struct lb_target *t;
    struct sockaddr_storage sa;
    socklen_t salen;
    /* active checks */
    int up;                 /* verdict of the active checks */
    int ok_streak, fail_streak;
    uint64_t checks, checks_failed;
    ev_timer timer;
    struct http_call *check; /* in progress, or NULL */
    /* passive */
    int consec_errors;
    double ejected_until;   /* 0: not ejected */
    /* slow start */
    double back_since;      /* when it became usable again; 0: at full weight */
    struct health *h;
};

struct health {
    struct ev_loop *loop;
    struct health_cfg cfg;
    struct health_target *ht;
    int n;
    int panic;
    int stopping;
    ev_timer tick;          /* cooldown expiry and slow start ramp */
    /* checks not run because this node was out of descriptors: a local
     * shortage says nothing about the backend, so it is not a failure */
    unsigned long long skipped_local;
    struct log_limit local_log;
    void (*on_change)(void *ud);
    void *ud;
};

/* Starts checks over ht[0..n) (each ht[i].t and address already set). */
void health_start(struct health *h, struct ev_loop *loop, const struct health_cfg *cfg,
                  struct health_target *ht, int n, void (*on_change)(void *), void *ud);
void health_stop(struct health *h);
/* Outcome of one real request on backend i (passive health). */
void health_report(struct health *h, int i, int ok);
/* 1 when a connect failed for want of something of this node's own
 * (descriptors, buffers, memory, local ports): never the backend's fault. */
int health_local_shortage(int err);
/* Recomputes usable / eff_weight now (also done on every state change). */
void health_refresh(struct health *h);

#endif
