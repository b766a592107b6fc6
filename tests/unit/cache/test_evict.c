/* Eviction orders. Exact LRU and FIFO are checked against a reference model
 * replayed over a random operation stream (every victim must match); the
 * sampled policies are checked for choosing the right kind of key. Time is
 * injected: each operation advances a fake clock. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "evict.h"
#include "store.h"
#include "tap.h"

#define NKEYS 300

/* The model: an array of key ids, oldest first. O(n) per op is fine here. */
struct model {
    int ids[NKEYS];
    int n;
};

static void model_remove(struct model *m, int id)
{
    for (int i = 0; i < m->n; i++)
        if (m->ids[i] == id) {
            memmove(&m->ids[i], &m->ids[i + 1], (size_t)(m->n - i - 1) * sizeof(int));
            m->n--;
            return;
        }
}
static int model_has(const struct model *m, int id)
{
    for (int i = 0; i < m->n; i++)
        if (m->ids[i] == id)
            return 1;
    return 0;
}
static void model_append(struct model *m, int id) { m->ids[m->n++] = id; }

static int id_of(struct store_entry *e)
{
    char tmp[16];
    size_t n = store_klen(e);
    memcpy(tmp, store_key(e), n);
    tmp[n] = 0;
    return atoi(tmp + 1);
}

/* Replays a random stream of get/set/overwrite/delete/evict against the
 * store and the model; returns the number of victims that differ. */
static int replay(enum evict_policy p, int ops, int *victims)
{
    struct store s;
    struct evict ev;
    int64_t now = 1000000;
    store_init(&s, 1234, now);
    evict_init(&ev);
    evict_set_policy(&ev, &s, p, now);
    struct model m = {.n = 0};
    int lru = p == EVICT_ALLKEYS_LRU;
    int mismatches = 0;
    unsigned rnd = 12345;
    *victims = 0;
    for (int i = 0; i < ops; i++) {
        now += 1;
        rnd = rnd * 1103515245u + 12345u;
        int op = (int)((rnd >> 16) % 10);
        rnd = rnd * 1103515245u + 12345u;
        int id = (int)((rnd >> 16) % NKEYS);
        char k[16];
        int kl = sprintf(k, "k%d", id);
        struct store_entry *e = store_lookup(&s, k, (size_t)kl, now);
        if (op < 4) { /* GET */
            if (e) {
                evict_touch(&ev, &s, e, now);
                if (lru) {
                    model_remove(&m, id);
                    model_append(&m, id);
                }
            }
        } else if (op < 7) { /* SET: insert, or overwrite with a new size */
            if (e) {
                e = store_set_value(&s, e, "longer-value-now", (size_t)(1 + id % 16));
                evict_touch(&ev, &s, e, now);
                if (lru) {
                    model_remove(&m, id);
                    model_append(&m, id);
                }
            } else {
                store_insert(&s, k, (size_t)kl, "v", 1, 0, now);
                model_append(&m, id);
            }
        } else if (op < 8) { /* DEL */
            if (e) {
                store_delete(&s, e);
                model_remove(&m, id);
            }
        } else if (op < 9) { /* EXPIRE set/clear moves the entry in memory */
            if (e)
                store_set_expire(&s, e, store_expire(e) ? 0 : now + 1000000000);
        } else { /* evict one */
            struct store_entry *v = evict_choose(&ev, &s, now);
            if (!v) {
                mismatches += m.n != 0;
                continue;
            }
            (*victims)++;
            if (m.n == 0 || id_of(v) != m.ids[0])
                mismatches++;
            model_remove(&m, id_of(v));
            store_delete(&s, v);
        }
        if (s.count != (size_t)m.n)
            mismatches++;
        (void)model_has;
    }
    store_free(&s);
    evict_free(&ev);
    return mismatches;
}

static void test_exact_orders(void)
{
    int victims;
    int bad = replay(EVICT_ALLKEYS_LRU, 200000, &victims);
    ok(victims > 10000, "LRU replay evicted %d keys", victims);
    is_int(bad, 0, "allkeys-lru matches the reference model exactly");
    bad = replay(EVICT_ALLKEYS_FIFO, 200000, &victims);
    ok(victims > 10000, "FIFO replay evicted %d keys", victims);
    is_int(bad, 0, "allkeys-fifo matches the reference model exactly");
}

static void add(struct store *s, const char *k, int64_t expire, int64_t now)
{
    store_insert(s, k, strlen(k), "value", 5, expire, now);
}

static void test_policy_switch(void)
{
    struct store s;
    struct evict ev;
    int64_t now = 5000;
    store_init(&s, 9, now);
    evict_init(&ev);
    evict_set_policy(&ev, &s, EVICT_ALLKEYS_LRU, now);
    add(&s, "a", 0, now++);
    add(&s, "b", 0, now++);
    add(&s, "c", 0, now++);
    evict_touch(&ev, &s, store_find(&s, "a", 1), now++);
    struct store_entry *v = evict_choose(&ev, &s, now);
    ok(v && store_key(v)[0] == 'b', "LRU: b is least recently used");
    evict_set_policy(&ev, &s, EVICT_ALLKEYS_FIFO, now);
    v = evict_choose(&ev, &s, now);
    ok(v && store_key(v)[0] == 'a', "switched to FIFO: a was inserted first");
    evict_touch(&ev, &s, store_find(&s, "a", 1), now++);
    v = evict_choose(&ev, &s, now);
    ok(v && store_key(v)[0] == 'a', "FIFO ignores accesses");
    evict_set_policy(&ev, &s, EVICT_ALLKEYS_LRU, now);
    v = evict_choose(&ev, &s, now);
    ok(v && store_key(v)[0] == 'b', "back to LRU: order rebuilt from access times");
    store_free(&s);
}

static void test_sampled(void)
{
    struct store s;
    struct evict ev;
    int64_t now = 1000;
    store_init(&s, 77, now);
    evict_init(&ev);
    ev.samples = 64;
    char k[16];
    for (int i = 0; i < 20; i++) {
        sprintf(k, "p%d", i);
        add(&s, k, 0, now);
        sprintf(k, "t%d", i);
        add(&s, k, now + 100000 + i * 1000, now);
    }
    evict_set_policy(&ev, &s, EVICT_VOLATILE_TTL, now);
    struct store_entry *v = evict_choose(&ev, &s, now);
    ok(v && memcmp(store_key(v), "t0", 2) == 0 && store_klen(v) == 2,
       "volatile-ttl picks the soonest expiry");
    int only_vol = 1;
    evict_set_policy(&ev, &s, EVICT_VOLATILE_RANDOM, now);
    for (int i = 0; i < 100; i++) {
        v = evict_choose(&ev, &s, now);
        only_vol &= v && store_expire(v) != 0;
    }
    ok(only_vol, "volatile-random picks only keys with a TTL");
    evict_set_policy(&ev, &s, EVICT_VOLATILE_LRU, now);
    evict_touch(&ev, &s, store_find(&s, "t0", 2), now + 1);
    v = evict_choose(&ev, &s, now + 2);
    ok(v && memcmp(store_key(v), "t1", 2) == 0, "volatile-lru: oldest key with a TTL");
    evict_set_policy(&ev, &s, EVICT_NOEVICTION, now);
    ok(evict_choose(&ev, &s, now) == NULL, "noeviction chooses nothing");
    ok(evict_until(&ev, &s, 0, now) == -1, "and evict_until reports it cannot free memory");

    /* LFU: hot keys gain counts; the coldest goes first; counts decay. */
    evict_set_policy(&ev, &s, EVICT_ALLKEYS_LFU, now);
    for (int i = 0; i < 20; i++) {
        sprintf(k, "p%d", i);
        struct store_entry *e = store_find(&s, k, strlen(k));
        for (int h = 0; h < 50; h++)
            evict_touch(&ev, &s, e, now);
        sprintf(k, "t%d", i);
        e = store_find(&s, k, strlen(k));
        for (int h = 0; h < (i == 7 ? 0 : 50); h++)
            evict_touch(&ev, &s, e, now);
    }
    v = evict_choose(&ev, &s, now);
    ok(v && store_klen(v) == 2 && memcmp(store_key(v), "t7", 2) == 0,
       "allkeys-lfu picks the never-accessed key");
    struct store_entry *hot = store_find(&s, "p0", 2);
    unsigned c0 = evict_lfu_value(&ev, &s, hot, now);
    ok(c0 > 5, "50 hits raise the counter above its start (%u)", c0);
    unsigned c1 = evict_lfu_value(&ev, &s, hot, now + 3 * 60000);
    is_int(c1, c0 - 3, "three idle minutes decay it by three");

    /* evict_until frees until under the limit. */
    evict_set_policy(&ev, &s, EVICT_ALLKEYS_LRU, now);
    size_t limit = s.mem.used / 2;
    ok(evict_until(&ev, &s, limit, now) == 0 && s.mem.used <= limit,
       "evict_until brings used memory under the limit");
    ok(ev.evicted > 0, "evictions counted (%llu)", (unsigned long long)ev.evicted);
    store_free(&s);
}

int main(void)
{
    test_exact_orders();
    test_policy_switch();
    test_sampled();
    return tap_done();
}
