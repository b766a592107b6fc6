/* expire: removing keys whose TTL has passed.
 *
 * Two mechanisms, like any cache that cannot afford a timer per key:
 *  - lazy: every lookup goes through store_lookup, which deletes an expired
 *    key and reports it missing, so an expired key is never returned;
 *  - active: expire_cycle, run from the cron, walks the volatile array from
 *    a cursor in batches, deleting what has expired. It repeats while a
 *    batch finds many expired keys (more are likely waiting) and stops at
 *    its time budget, so a mass expiry costs bounded latency per cycle and
 *    finishes over a few cycles. */
#ifndef STRATA_EXPIRE_H
#define STRATA_EXPIRE_H

#include <stddef.h>
#include <stdint.h>

#include "store.h"

struct expire_cycle {
    size_t cursor;           /* next index into the volatile array */
    int batch;               /* keys looked at per batch (default 20) */
    int repeat_pct;          /* go on while a batch expired more than this % (default 10) */
    int64_t budget_us;       /* time budget per cycle (default 25 ms) */
    /* Monotonic clock in us; tests inject one. NULL: util_mono_us. */
    int64_t (*clock_us)(void *arg);
    void *clock_arg;
    /* Stats of the last cycle. */
    size_t last_checked, last_expired;
    int last_hit_budget;
};

void expire_cycle_init(struct expire_cycle *ec);
/* Runs one active cycle at wall-clock now_ms; returns the number of keys
 * deleted (also added to s->expired). */
size_t expire_run(struct expire_cycle *ec, struct store *s, int64_t now_ms);

#endif
