#include "expire.h"

#include <string.h>

#include "util.h"

void expire_cycle_init(struct expire_cycle *ec)
{
    memset(ec, 0, sizeof *ec);
    ec->batch = 20;
    ec->repeat_pct = 10;
    ec->budget_us = 25000;
}

static int64_t cycle_now(const struct expire_cycle *ec)
{
    return ec->clock_us ? ec->clock_us(ec->clock_arg) : util_mono_us();
}

size_t expire_run(struct expire_cycle *ec, struct store *s, int64_t now_ms)
{
    int64_t start = cycle_now(ec);
    size_t checked = 0, expired = 0;
    ec->last_hit_budget = 0;
    for (int round = 0; s->nvol > 0 && !s->keep_expired; round++) {
        /* Every few batches, look at the clock; clock reads are not free. */
        if ((round & 3) == 0 && round > 0 && cycle_now(ec) - start >= ec->budget_us) {
            ec->last_hit_budget = 1;
            break;
        }
        size_t batch_expired = 0;
        int n = ec->batch;
        for (int i = 0; i < n && s->nvol > 0; i++) {
            if (ec->cursor >= s->nvol)
                ec->cursor = 0;
            struct store_entry *e = s->vol[ec->cursor];
            checked++;
            if (store_is_expired(e, now_ms)) {
                /* The array's last entry moves into this slot: look at the
                 * same index again next. */
                store_expire_delete(s, e);
                batch_expired++;
            } else {
                ec->cursor++;
            }
        }
        expired += batch_expired;
        if (batch_expired * 100 <= (size_t)ec->repeat_pct * (size_t)n)
            break;
    }
    ec->last_checked = checked;
    ec->last_expired = expired;
    return expired;
}
