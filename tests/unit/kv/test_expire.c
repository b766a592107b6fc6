/* The active expiry cycle: removes exactly the expired keys, repeats while
 * it keeps finding them, and stops at its time budget (driven by an
 * injected clock, so nothing here depends on real time). */
#include <stdio.h>
#include <string.h>

#include "expire.h"
#include "store.h"
#include "tap.h"

struct fake_clock {
    int64_t us;
    int64_t step;   /* advance per read */
    int reads;
};

static int64_t fake_now(void *arg)
{
    struct fake_clock *c = arg;
    c->reads++;
    c->us += c->step;
    return c->us;
}

static void fill(struct store *s, int n, int64_t expire_a, int64_t expire_b, int64_t now)
{
    char k[32];
    for (int i = 0; i < n; i++) {
        int kl = sprintf(k, "a%d", i);
        store_insert(s, k, (size_t)kl, "v", 1, expire_a, now);
        kl = sprintf(k, "b%d", i);
        store_insert(s, k, (size_t)kl, "v", 1, expire_b, now);
    }
}

static void test_full_cycle(void)
{
    struct store s;
    struct expire_cycle ec;
    store_init(&s, 11, 0);
    expire_cycle_init(&ec);
    struct fake_clock clk = {0, 0, 0};
    ec.clock_us = fake_now; /* time stands still: the budget never runs out */
    ec.clock_arg = &clk;
    fill(&s, 1000, 500, 0, 0); /* a* expire at 500 ms, b* never */
    size_t n = expire_run(&ec, &s, 499);
    is_int(n, 0, "nothing expires before its time");
    is_int(s.count, 2000, "all keys still there");
    n = expire_run(&ec, &s, 500);
    is_int(n, 1000, "one cycle removes all 1000 expired keys while most batches find some");
    is_int(s.count, 1000, "keys without a TTL are untouched");
    is_int(s.nvol, 0, "no TTL keys left");
    is_int(s.expired, 1000, "expired keys counted");
    store_free(&s);
}

static void test_budget(void)
{
    struct store s;
    struct expire_cycle ec;
    store_init(&s, 12, 0);
    expire_cycle_init(&ec);
    ec.budget_us = 1000;
    struct fake_clock clk = {0, 400, 0}; /* each clock read: +0.4 ms */
    ec.clock_us = fake_now;
    ec.clock_arg = &clk;
    fill(&s, 5000, 100, 200, 0);
    size_t n = expire_run(&ec, &s, 1000);
    ok(ec.last_hit_budget, "the cycle stopped at its budget");
    ok(n > 0 && n < 10000, "it removed part of the expired keys (%zu)", n);
    ok(ec.last_checked <= 20 * 12, "it looked at a bounded number of keys (%zu)", ec.last_checked);
    int cycles = 1;
    while (s.nvol > 0 && cycles < 10000) {
        expire_run(&ec, &s, 1000);
        cycles++;
    }
    is_int(s.count, 0, "repeated cycles remove every expired key");
    ok(cycles > 5, "spread over %d cycles", cycles);
    store_free(&s);
}

static void test_sparse(void)
{
    struct store s;
    struct expire_cycle ec;
    store_init(&s, 13, 0);
    expire_cycle_init(&ec);
    struct fake_clock clk = {0, 0, 0};
    ec.clock_us = fake_now;
    ec.clock_arg = &clk;
    char k[32];
    /* Mostly long TTLs with a few short ones: the cycle gives up early when
     * a batch finds little, and the sweep still reaches everything. */
    for (int i = 0; i < 1000; i++) {
        int kl = sprintf(k, "k%d", i);
        store_insert(&s, k, (size_t)kl, "v", 1, i % 100 == 0 ? 50 : 1000000, 0);
    }
    expire_run(&ec, &s, 100);
    ok(ec.last_checked < 1000, "a sparse cycle stops early (%zu checked)", ec.last_checked);
    for (int i = 0; i < 100 && s.count > 990; i++)
        expire_run(&ec, &s, 100);
    is_int(s.count, 990, "the sweep finds all ten short-lived keys over a few cycles");
    for (int i = 0; i < 1000; i += 100) {
        int kl = sprintf(k, "k%d", i);
        ok(store_find(&s, k, (size_t)kl) == NULL, "k%d is gone", i);
    }
    store_free(&s);
}

int main(void)
{
    test_full_cycle();
    test_budget();
    test_sparse();
    return tap_done();
}
