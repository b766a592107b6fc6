#include "health.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "log.h"
#include "util.h"
#include "http_client.h"

#define HEALTH_TICK 0.1

static void check_finish(struct health_target *ht, int ok, const char *why);

/* Every check ends here, once, whatever happened: an answer (its status
 * decides), or the call's error (refused, reset, timed out, malformed). */
static void check_done(void *ud, const struct http_call_result *r)
{
    struct health_target *ht = ud;
    ht->check = NULL;
    if (ht->h->stopping)
        return;
    if (r->error) {
        check_finish(ht, 0, r->error);
        return;
    }
    int ok = r->status >= 200 && r->status < 400;
    char why[32];
    snprintf(why, sizeof why, "status %d", r->status);
    check_finish(ht, ok, why);
}

static void check_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    struct health_target *ht = w->data;
    struct health *h = ht->h;
    if (ht->check)
        return; /* the previous one is still within its timeout */
    struct http_call_opts o = {
        .method = "GET",
        .host = ht->t->addr,
        .target = h->cfg.path,
        .headers = "User-Agent: strata-health\r\n",
        .timeout = h->cfg.timeout,
        .max_body = 0,
        .head_only = 1,
    };
    ht->check = http_call_start(loop, (struct sockaddr *)&ht->sa, ht->salen, &o, check_done, ht);
    if (ht->check)
        return;
    int err = errno;
    if (health_local_shortage(err)) {
        /* our shortage, not the backend's: skip this check, change nothing */
        h->skipped_local++;
        unsigned long skipped;
        if (log_limit_allow(&h->local_log, (double)util_mono_us() / 1e6, 60.0, &skipped))
            log_warn("health check of %s (%s) skipped: %s on this node, not counted against "
                     "the backend (%lu more since the last warning)",
                     ht->t->name, ht->t->addr, strerror(err), skipped);
        return;
    }
    check_finish(ht, 0, "cannot create socket");
}

int health_local_shortage(int err)
{
    return err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM ||
           err == EADDRNOTAVAIL;
}

static void check_finish(struct health_target *ht, int ok, const char *why)
{
    struct health *h = ht->h;
    ht->checks++;
    if (ok) {
        ht->ok_streak++;
        ht->fail_streak = 0;
        if (!ht->up && ht->ok_streak >= h->cfg.rise) {
            ht->up = 1;
            ht->back_since = ev_now(h->loop);
            log_info("backend %s (%s) is up: %d checks passed", ht->t->name, ht->t->addr,
                     ht->ok_streak);
            health_refresh(h);
        }
    } else {
        ht->checks_failed++;
        ht->fail_streak++;
        ht->ok_streak = 0;
        if (ht->up && ht->fail_streak >= h->cfg.fall) {
            ht->up = 0;
            ht->back_since = 0;
            log_warn("backend %s (%s) is down: %d checks failed, last: %s", ht->t->name,
                     ht->t->addr, ht->fail_streak, why);
            health_refresh(h);
        }
    }
}

static void tick_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    health_refresh(w->data);
}

void health_refresh(struct health *h)
{
    if (h->stopping)
        return; /* a retired set: nothing routes by it any more */
    double now = ev_now(h->loop);
    int healthy_n = 0, busy = 0;
    for (int i = 0; i < h->n; i++) {
        struct health_target *ht = &h->ht[i];
        struct lb_target *t = ht->t;
        if (ht->ejected_until > 0 && ht->ejected_until <= now) {
            ht->ejected_until = 0;
            ht->consec_errors = 0;
            if (ht->up)
                ht->back_since = now;
            log_info("backend %s (%s) returns after its cool-down", t->name, t->addr);
        }
        t->healthy = ht->up && ht->ejected_until == 0;
        int full = t->weight * LB_EFF_SCALE;
        if (ht->back_since > 0 && h->cfg.slow_start > 0 && t->healthy) {
            double frac = (now - ht->back_since) / h->cfg.slow_start;
            if (frac >= 1) {
                ht->back_since = 0;
                t->eff_weight = full;
            } else {
                int w = (int)(full * frac);
                t->eff_weight = w < 1 && full > 0 ? 1 : w;
                busy = 1;
            }
        } else {
            ht->back_since = 0;
            t->eff_weight = full;
        }
        if (ht->ejected_until > 0)
            busy = 1;
        if (t->healthy && t->weight > 0)
            healthy_n++;
    }
    int panic = h->n > 0 && healthy_n == 0;
    if (panic != h->panic) {
        h->panic = panic;
        if (panic)
            log_warn("no healthy backend: panic mode, sending to all %d backends", h->n);
        else
            log_info("leaving panic mode: %d healthy backends", healthy_n);
    }
    int changed = 0;
    for (int i = 0; i < h->n; i++) {
        struct lb_target *t = h->ht[i].t;
        unsigned usable = panic ? t->weight > 0 : t->healthy && t->weight > 0;
        if (usable != t->usable) {
            t->usable = usable;
            changed = 1;
        }
    }
    if (busy && !ev_is_active(&h->tick))
        ev_timer_start(h->loop, &h->tick);
    else if (!busy && ev_is_active(&h->tick))
        ev_timer_stop(h->loop, &h->tick);
    if (changed && h->on_change)
        h->on_change(h->ud);
}

void health_start(struct health *h, struct ev_loop *loop, const struct health_cfg *cfg,
                  struct health_target *ht, int n, void (*on_change)(void *), void *ud)
{
    h->loop = loop;
    h->cfg = *cfg;
    h->ht = ht;
    h->n = n;
    h->panic = 0;
    h->stopping = 0;
    h->on_change = on_change;
    h->ud = ud;
    ev_timer_init(&h->tick, tick_cb, HEALTH_TICK, HEALTH_TICK);
    h->tick.data = h;
    for (int i = 0; i < n; i++) {
        if (!ht[i].h) { /* first start: healthy until checks say otherwise */
            ht[i].up = 1;
            ht[i].t->usable = 1;
        }
        ht[i].h = h;
        ht[i].ok_streak = ht[i].fail_streak = 0;
        ev_init(&ht[i].timer, check_cb);
        ht[i].timer.data = &ht[i];
        if (cfg->active) {
            /* Spread the first checks over one interval, first one at once. */
            ev_timer_set(&ht[i].timer, 0.001 + cfg->interval * i / n, cfg->interval);
            ev_timer_start(loop, &ht[i].timer);
        }
    }
    health_refresh(h);
}

void health_stop(struct health *h)
{
    h->stopping = 1;
    if (h->loop)
        ev_timer_stop(h->loop, &h->tick);
    for (int i = 0; i < h->n; i++) {
        ev_timer_stop(h->loop, &h->ht[i].timer);
        if (h->ht[i].check) {
            http_call_cancel(h->ht[i].check);
            h->ht[i].check = NULL;
        }
    }
}

void health_report(struct health *h, int i, int ok)
{
    struct health_target *ht = &h->ht[i];
    if (h->cfg.passive_errors <= 0 || h->stopping)
        return;
    if (ok) {
        ht->consec_errors = 0;
        return;
    }
    if (++ht->consec_errors >= h->cfg.passive_errors && ht->ejected_until == 0) {
        ht->ejected_until = ev_now(h->loop) + h->cfg.passive_cooldown;
        log_warn("backend %s (%s) ejected for %.1fs after %d consecutive errors", ht->t->name,
                 ht->t->addr, h->cfg.passive_cooldown, ht->consec_errors);
        health_refresh(h);
    }
}
