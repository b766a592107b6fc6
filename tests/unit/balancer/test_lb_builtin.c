/* The built-in balancing policies: distribution, weights, skipping of
 * unusable or already tried backends, and consistent hashing stability. */
#include <stdio.h>
#include <string.h>
#include <xxhash.h>

#include "lb.h"
#include "tap.h"

#define MAXT 8

static struct lb_target tg[MAXT];
static struct lb_target *tp[MAXT];
static char names[MAXT][16];

static void setup(int n)
{
    memset(tg, 0, sizeof tg);
    for (int i = 0; i < n; i++) {
        snprintf(names[i], sizeof names[i], "web%d", i + 1);
        tg[i].name = names[i];
        tg[i].addr = names[i];
        tg[i].weight = tg[i].eff_weight = 1;
        tg[i].usable = tg[i].healthy = 1;
        tp[i] = &tg[i];
    }
}

static struct lb make(const char *policy, int n)
{
    struct lb lb;
    char err[128];
    int rc = lb_init(&lb, lb_ops_find(policy), tp, n, err, sizeof err);
    ok(rc == 0, "%s: init", policy);
    lb.rng = 88172645463325252ull; /* fixed: tests must not depend on chance */
    return lb;
}

static int pick_idx(struct lb *lb, uint64_t hash)
{
    struct lb_req r = {.hash = hash};
    struct lb_target *t = lb->ops->pick(lb, &r);
    return t ? t->index : -1;
}

static void test_round_robin(void)
{
    setup(3);
    struct lb lb = make("round_robin", 3);
    int cnt[3] = {0}, prev = -1, repeats = 0;
    for (int i = 0; i < 300; i++) {
        int k = pick_idx(&lb, 0);
        cnt[k]++;
        repeats += k == prev;
        prev = k;
    }
    ok(cnt[0] == 100 && cnt[1] == 100 && cnt[2] == 100, "equal weights: exactly even");
    is_int(repeats, 0, "rotation never repeats a backend");

    tg[0].weight = tg[0].eff_weight = 3;
    lb.ops->update(&lb);
    memset(cnt, 0, sizeof cnt);
    int run = 0, maxrun = 0;
    prev = -1;
    for (int i = 0; i < 500; i++) {
        int k = pick_idx(&lb, 0);
        cnt[k]++;
        run = k == prev ? run + 1 : 1;
        if (run > maxrun)
            maxrun = run;
        prev = k;
    }
    ok(cnt[0] == 300 && cnt[1] == 100 && cnt[2] == 100, "weights 3:1:1 honoured");
    ok(maxrun <= 2, "heavy backend interleaved (longest run %d)", maxrun);

    tg[1].usable = 0;
    memset(cnt, 0, sizeof cnt);
    for (int i = 0; i < 40; i++)
        cnt[pick_idx(&lb, 0)]++;
    is_int(cnt[1], 0, "unusable backend skipped");
    tg[0].skip = 1;
    is_int(pick_idx(&lb, 0), 2, "tried backend skipped");
    tg[2].usable = 0;
    is_int(pick_idx(&lb, 0), -1, "no candidate gives NULL");
    lb_free(&lb);
}

static void test_least_conn(void)
{
    setup(3);
    struct lb lb = make("least_conn", 3);
    int seen[3] = {0};
    for (int i = 0; i < 3; i++)
        seen[pick_idx(&lb, 0)]++;
    ok(seen[0] == 1 && seen[1] == 1 && seen[2] == 1, "idle backends take turns");
    tg[0].active = 5;
    tg[1].active = 2;
    tg[2].active = 3;
    is_int(pick_idx(&lb, 0), 1, "fewest active wins");
    tg[2].weight = tg[2].eff_weight = 4; /* 4 per unit of weight: 3+1 / 4 = 1 */
    is_int(pick_idx(&lb, 0), 2, "load is weighted");
    lb_free(&lb);
}

static void test_p2c(void)
{
    setup(2);
    struct lb lb = make("p2c", 2);
    tg[0].active = 10;
    int cnt[2] = {0};
    for (int i = 0; i < 200; i++)
        cnt[pick_idx(&lb, 0)]++;
    is_int(cnt[1], 200, "two backends: always the less loaded");
    lb_free(&lb);

    setup(4);
    lb = make("p2c", 4);
    tg[1].active = tg[2].active = tg[3].active = 10;
    int c0 = 0;
    for (int i = 0; i < 4000; i++)
        c0 += pick_idx(&lb, 0) == 0;
    /* the idle one wins whenever it is drawn: P = 1 - (3/4 * 2/3) = 1/2 */
    ok(c0 > 1700 && c0 < 2300, "idle backend wins when drawn (%d of 4000)", c0);
    tg[0].usable = 0;
    int bad = 0;
    for (int i = 0; i < 200; i++)
        bad += pick_idx(&lb, 0) == 0;
    is_int(bad, 0, "unusable never drawn");
    tg[1].usable = tg[2].usable = 0;
    is_int(pick_idx(&lb, 0), 3, "single candidate");
    lb_free(&lb);
}

static uint64_t key_hash(int k)
{
    char s[32];
    int n = snprintf(s, sizeof s, "/k/%d", k);
    return XXH3_64bits(s, (size_t)n);
}

static void test_chash(void)
{
    enum { KEYS = 10000 };
    static int before[KEYS];
    setup(5);
    struct lb lb = make("chash", 4);
    int cnt[5] = {0};
    for (int k = 0; k < KEYS; k++) {
        before[k] = pick_idx(&lb, key_hash(k));
        cnt[before[k]]++;
    }
    int lo = KEYS, hi = 0;
    for (int i = 0; i < 4; i++) {
        lo = cnt[i] < lo ? cnt[i] : lo;
        hi = cnt[i] > hi ? cnt[i] : hi;
    }
    ok(lo > KEYS / 4 * 7 / 10 && hi < KEYS / 4 * 13 / 10, "spread within 30%% (%d..%d)", lo, hi);
    int same = 1;
    for (int k = 0; k < 200; k++)
        same &= pick_idx(&lb, key_hash(k)) == before[k];
    ok(same, "a key keeps its backend");
    lb_free(&lb);

    /* add web5: keys move only to it, about 1/5 of them */
    static int after[KEYS];
    lb = make("chash", 5);
    int moved = 0, elsewhere = 0;
    for (int k = 0; k < KEYS; k++) {
        after[k] = pick_idx(&lb, key_hash(k));
        if (after[k] != before[k]) {
            moved++;
            elsewhere += after[k] != 4;
        }
    }
    is_int(elsewhere, 0, "moved keys all went to the new backend");
    ok(moved > KEYS / 5 / 2 && moved < KEYS / 5 * 3 / 2, "about 1/5 of keys moved (%d)", moved);

    /* web2 down: only its keys move */
    tg[1].usable = 0;
    int wrong = 0;
    for (int k = 0; k < KEYS; k++) {
        int now = pick_idx(&lb, key_hash(k));
        wrong += after[k] == 1 ? now == 1 : now != after[k];
    }
    is_int(wrong, 0, "only the down backend's keys move");
    lb_free(&lb);
}

static void test_first(void)
{
    setup(3);
    struct lb lb = make("first", 3);
    is_int(pick_idx(&lb, 0), 0, "first takes everything while it has room");
    is_int(pick_idx(&lb, 0), 0, "still the first");
    tg[0].max_active = 2;
    tg[0].active = 2;
    is_int(pick_idx(&lb, 0), 1, "full first spills to the second");
    tg[1].usable = 0;
    is_int(pick_idx(&lb, 0), 2, "down second is skipped");
    tg[1].usable = 1;
    tg[1].max_active = tg[2].max_active = 1;
    tg[1].active = tg[2].active = 1;
    tg[0].active = 3;
    is_int(pick_idx(&lb, 0), 1, "all full: least loaded");
    lb_free(&lb);
}

int main(void)
{
    ok(lb_ops_find("nope") == NULL, "unknown policy");
    test_round_robin();
    test_least_conn();
    test_p2c();
    test_chash();
    test_first();
    return tap_done();
}
