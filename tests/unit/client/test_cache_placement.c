/* Unit tests: where the cache client places keys (base's hash_ring through
 * cache_client_shard_of): spread, determinism, and that adding or removing
 * one of N shards moves about 1/N of the keys, only to or from it. No
 * shard is reached: placement needs no connection. */
#include <ev.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache_client.h"
#include "hash_ring.h"
#include "tap.h"

#define NKEYS 20000

static struct ev_loop *loop;

static struct cache_client *make(const char *const *names, int n)
{
    struct cache_shard_addr s[8];
    for (int i = 0; i < n; i++) {
        s[i].name = names[i];
        s[i].addr = "127.0.0.1:1"; /* never answered: placement only */
    }
    struct cache_client_cfg cfg = {s, n, NULL, 1.0, 10.0};
    char err[256];
    struct cache_client *cc = cache_client_new(loop, &cfg, err, sizeof err);
    if (!cc)
        printf("# %s\n", err);
    return cc;
}

/* The name of the shard each key lands on. */
static void place(struct cache_client *cc, const char *const *names, const char **out)
{
    char key[32];
    for (int k = 0; k < NKEYS; k++) {
        int len = snprintf(key, sizeof key, "user:%d", k);
        int s = cache_client_shard_of(cc, key, (size_t)len);
        out[k] = s >= 0 ? names[s] : NULL;
    }
}

static void test_spread_and_moves(void)
{
    static const char *four[] = {"c1", "c2", "c3", "c4"};
    static const char *five[] = {"c1", "c2", "c3", "c4", "c5"};
    static const char *three[] = {"c1", "c3", "c4"};
    static const char *shuffled[] = {"c3", "c1", "c4", "c2"};
    const char **a = calloc(NKEYS, sizeof *a), **b = calloc(NKEYS, sizeof *b);

    struct cache_client *cc = make(four, 4);
    ok(cc != NULL, "a client of four shards");
    is_int(cache_client_nshards(cc), 4, "four shards");
    place(cc, four, a);
    int count[4] = {0};
    for (int k = 0; k < NKEYS; k++)
        for (int s = 0; s < 4; s++)
            count[s] += a[k] == four[s];
    for (int s = 0; s < 4; s++)
        ok(count[s] > NKEYS * 15 / 100 && count[s] < NKEYS * 35 / 100,
           "shard %s holds a fair share (%d of %d)", four[s], count[s], NKEYS);
    cache_client_free(cc);

    /* The order shards are listed in does not matter: names do. */
    cc = make(shuffled, 4);
    place(cc, shuffled, b);
    int same = 0;
    for (int k = 0; k < NKEYS; k++)
        same += a[k] == b[k] || (a[k] && b[k] && strcmp(a[k], b[k]) == 0);
    is_int(same, NKEYS, "placement depends on names, not on their order");
    cache_client_free(cc);

    /* Adding a fifth: about 1/5 move, all of them to the new shard. */
    cc = make(five, 5);
    place(cc, five, b);
    int moved = 0, moved_elsewhere = 0;
    for (int k = 0; k < NKEYS; k++)
        if (strcmp(a[k], b[k]) != 0) {
            moved++;
            moved_elsewhere += strcmp(b[k], "c5") != 0;
        }
    ok(moved > NKEYS * 12 / 100 && moved < NKEYS * 28 / 100,
       "adding one of five shards moves about 1/5 of the keys (%d of %d)", moved, NKEYS);
    is_int(moved_elsewhere, 0, "every moved key moved to the new shard");
    cache_client_free(cc);

    /* Removing c2: exactly c2's keys move, spread over the others. */
    cc = make(three, 3);
    place(cc, three, b);
    int wrong = 0, from_c2 = 0;
    for (int k = 0; k < NKEYS; k++) {
        if (strcmp(a[k], "c2") == 0)
            from_c2++;
        else if (strcmp(a[k], b[k]) != 0)
            wrong++;
    }
    is_int(wrong, 0, "removing a shard moves no key of the others");
    ok(from_c2 > NKEYS * 15 / 100 && from_c2 < NKEYS * 35 / 100,
       "about 1/4 of the keys moved (%d of %d)", from_c2, NKEYS);
    cache_client_free(cc);
    free(a);
    free(b);
}

static int skip_odd(void *ud, int m)
{
    (void)ud;
    return m % 2 == 1;
}

static int skip_all(void *ud, int m)
{
    (void)ud;
    (void)m;
    return 1;
}

static void test_ring(void)
{
    struct hash_ring r = {0};
    is_int(hash_ring_lookup(&r, 42, NULL, NULL), -1, "an empty ring owns nothing");
    const char *names[] = {"a", "b", "c", "d"};
    int weights[] = {1, 1, 0, 2};
    ok(hash_ring_build(&r, names, weights, 4, 100) == 0, "a ring builds");
    is_int((long long)r.n, 400, "points per unit of weight; weight 0 places none");
    int hits[4] = {0}, walked_ok = 1;
    for (uint64_t k = 0; k < 4000; k++) {
        uint64_t h = hash_ring_hash(&k, sizeof k);
        int m = hash_ring_lookup(&r, h, NULL, NULL);
        hits[m]++;
        int m2 = hash_ring_lookup(&r, h, skip_odd, NULL);
        /* Skipping odd members: even ones keep their keys. */
        if (m2 % 2 == 1 || (m % 2 == 0 && m2 != m))
            walked_ok = 0;
    }
    is_int(hits[2], 0, "a member of weight 0 owns no key");
    ok(hits[3] > hits[0] && hits[3] > hits[1], "weight 2 owns more than weight 1 (%d %d %d)",
       hits[0], hits[1], hits[3]);
    ok(walked_ok, "a skipped member's keys walk clockwise; the others' stay");
    is_int(hash_ring_lookup(&r, 7, skip_all, NULL), -1, "everything skipped: nothing owns it");
    hash_ring_free(&r);
}

int main(void)
{
    loop = ev_loop_new(0);
    test_ring();
    test_spread_and_moves();
    ev_loop_destroy(loop);
    return tap_done();
}
