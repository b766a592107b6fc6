/* health: passive ejection and its cool-down, slow start ramps, panic.
 * Time is moved by editing the recorded instants, never by waiting. */
#include <ev.h>
#include <string.h>

#include "health.h"
#include "tap.h"

static struct lb_target tg[3];
static struct health_target ht[3];
static int changes;

static void on_change(void *ud)
{
    (void)ud;
    changes++;
}

int main(void)
{
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    static const char *names[] = {"web1", "web2", "web3"};
    for (int i = 0; i < 3; i++) {
        tg[i] = (struct lb_target){.name = names[i], .addr = "127.0.0.1:9", .weight = 2};
        ht[i].t = &tg[i];
    }
    struct health_cfg cfg = {.active = 0, .passive_errors = 3, .passive_cooldown = 10,
                             .slow_start = 8};
    struct health h;
    memset(&h, 0, sizeof h);
    health_start(&h, loop, &cfg, ht, 3, on_change, NULL);
    ok(tg[0].usable && tg[1].usable && tg[2].usable, "all start usable");
    is_int(tg[0].eff_weight, 2 * LB_EFF_SCALE, "full weight at start (no slow start)");

    health_report(&h, 1, 0);
    health_report(&h, 1, 0);
    health_report(&h, 1, 1); /* a success resets the streak */
    health_report(&h, 1, 0);
    health_report(&h, 1, 0);
    ok(tg[1].usable, "not ejected: errors were not consecutive");
    changes = 0;
    health_report(&h, 1, 0);
    ok(!tg[1].usable && !tg[1].healthy, "ejected after 3 consecutive errors");
    is_int(changes, 1, "the change was reported");

    /* the cool-down ends: back, at a fraction of its weight */
    double now = ev_now(loop);
    ht[1].ejected_until = now - 0.001;
    health_refresh(&h);
    ok(tg[1].usable && tg[1].healthy, "back after the cool-down");
    ok(tg[1].eff_weight >= 1 && tg[1].eff_weight < 2, "slow start begins small (%d)",
       tg[1].eff_weight);
    ht[1].back_since = now - 4; /* halfway through slow_start */
    health_refresh(&h);
    is_int(tg[1].eff_weight, LB_EFF_SCALE, "half weight halfway");
    ht[1].back_since = now - 9;
    health_refresh(&h);
    is_int(tg[1].eff_weight, 2 * LB_EFF_SCALE, "full weight when the ramp is over");

    /* panic: every backend down sends to all */
    for (int i = 0; i < 3; i++)
        for (int k = 0; k < 3; k++)
            health_report(&h, i, 0);
    is_int(h.panic, 1, "panic when none is healthy");
    ok(tg[0].usable && tg[1].usable && tg[2].usable, "panic: all usable");
    ok(!tg[0].healthy, "but none healthy");
    ht[2].ejected_until = now - 0.001;
    health_refresh(&h);
    is_int(h.panic, 0, "panic over when one returns");
    ok(!tg[0].usable && tg[2].usable, "only the healthy one is usable");

    /* weight 0 is out of rotation, even in panic */
    tg[2].weight = 0;
    health_refresh(&h);
    ok(!tg[2].usable && h.panic, "weight 0 never usable; the rest panic");
    health_stop(&h);
    ev_loop_destroy(loop);
    return tap_done();
}
