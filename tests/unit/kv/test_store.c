/* The cache's hash table: growth and shrink by incremental rehash, lookups
 * in the middle of a rehash, scan guarantees across resizes, entry layout
 * changes, the order list, the volatile array and memory accounting. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store.h"
#include "tap.h"

static int key_of(char *out, int i) { return sprintf(out, "key:%d", i); }

/* Walks every structure and checks they agree with each other. */
static int store_consistent(struct store *s)
{
    size_t n = 0;
    struct store_entry *prev = NULL;
    for (struct store_entry *e = s->ohead; e; e = e->onext) {
        if (e->oprev != prev)
            return 0;
        prev = e;
        n++;
        if (store_find(s, store_key(e), store_klen(e)) != e)
            return 0;
    }
    if (prev != s->otail || n != s->count)
        return 0;
    size_t nv = 0;
    for (struct store_entry *e = s->ohead; e; e = e->onext)
        if (e->flags & STORE_F_EXPIRE) {
            nv++;
            uint32_t idx;
            memcpy(&idx, e->data + 8, 4);
            if (idx >= s->nvol || s->vol[idx] != e)
                return 0;
        }
    return nv == s->nvol;
}

static void test_grow_shrink(void)
{
    struct store s;
    store_init(&s, 42, 0);
    char k[32];
    int n = 20000;
    for (int i = 0; i < n; i++) {
        int kl = key_of(k, i);
        store_insert(&s, k, (size_t)kl, "v", 1, 0, 0);
    }
    is_int(s.count, n, "20000 keys inserted");
    int found = 0;
    for (int i = 0; i < n; i++) {
        int kl = key_of(k, i);
        found += store_find(&s, k, (size_t)kl) != NULL;
    }
    is_int(found, n, "every key is found");
    while (store_rehash_step(&s, 100))
        ;
    ok(s.count < store_grow_at(s.t[0].size) && 4 * s.count >= 3 * s.t[0].size,
       "load factor between 3/4 and 3/2 (%zu buckets)", s.t[0].size);
    ok(store_consistent(&s), "structures agree after growth");
    for (int i = 10; i < n; i++) {
        int kl = key_of(k, i);
        struct store_entry *e = store_find(&s, k, (size_t)kl);
        if (e)
            store_delete(&s, e);
    }
    while (store_rehash_step(&s, 100) || (store_maybe_resize(&s), s.rehash >= 0))
        ;
    is_int(s.count, 10, "10 keys left");
    ok(s.t[0].size <= 64 && s.count * 8 >= s.t[0].size, "table shrank back to load >= 1/8 (%zu buckets)", s.t[0].size);
    found = 0;
    for (int i = 0; i < 10; i++) {
        int kl = key_of(k, i);
        found += store_find(&s, k, (size_t)kl) != NULL;
    }
    is_int(found, 10, "the remaining keys survive the shrink");
    store_free(&s);
    is_int(s.mem.used, 0, "no bytes counted after free");
    is_int(s.mem.nallocs, 0, "no allocations left after free");
}

static void test_mid_rehash(void)
{
    struct store s;
    store_init(&s, 7, 0);
    s.resize_allowed = 0;
    char k[32];
    for (int i = 0; i < 1000; i++) {
        int kl = key_of(k, i);
        store_insert(&s, k, (size_t)kl, "x", 1, 0, 0);
    }
    s.resize_allowed = 1;
    store_maybe_resize(&s);
    ok(s.rehash >= 0, "a rehash started for an overloaded table");
    /* Move only some buckets, then use the table while it is split. */
    store_rehash_step(&s, 3);
    ok(s.rehash >= 0 && s.t[1].size > 0, "rehash still in progress");
    int found = 0;
    for (int i = 0; i < 1000; i++) {
        int kl = key_of(k, i);
        found += store_find(&s, k, (size_t)kl) != NULL;
    }
    is_int(found, 1000, "all keys found during the rehash");
    for (int i = 1000; i < 1100; i++) {
        int kl = key_of(k, i);
        store_insert(&s, k, (size_t)kl, "y", 1, 0, 0);
    }
    for (int i = 0; i < 1100; i += 2) {
        int kl = key_of(k, i);
        store_delete(&s, store_find(&s, k, (size_t)kl));
    }
    is_int(s.count, 550, "inserts and deletes during the rehash");
    ok(store_consistent(&s), "structures agree during the rehash");
    while (store_rehash_step(&s, 1))
        ;
    is_int(s.rehash, -1, "the rehash finishes one bucket at a time");
    store_free(&s);
}

struct seen {
    unsigned char *hit;
};
static void mark_seen(void *arg, struct store_entry *e)
{
    struct seen *sn = arg;
    int i = atoi((const char *)store_key(e) + 4);
    sn->hit[i]++;
}

static void test_scan_resize(void)
{
    struct store s;
    store_init(&s, 99, 0);
    char k[32];
    int n = 3000;
    for (int i = 0; i < n; i++) {
        int kl = key_of(k, i);
        store_insert(&s, k, (size_t)kl, "v", 1, 0, 0);
    }
    struct seen sn = {calloc(20000, 1)};
    uint64_t cur = 0;
    int calls = 0, grown = 0, shrunk = 0;
    do {
        cur = store_scan(&s, cur, mark_seen, &sn);
        calls++;
        /* Grow the table part-way through, then shrink it. */
        if (calls == 200) {
            for (int i = n; i < 12000; i++) {
                int kl = key_of(k, i);
                store_insert(&s, k, (size_t)kl, "v", 1, 0, 0);
            }
            grown = 1;
        }
        if (calls == 2000) {
            for (int i = n; i < 12000; i++) {
                int kl = key_of(k, i);
                store_delete(&s, store_find(&s, k, (size_t)kl));
            }
            shrunk = 1;
        }
    } while (cur != 0 && calls < 1000000);
    ok(grown && shrunk, "the table grew and shrank during the scan");
    int missing = 0;
    for (int i = 0; i < n; i++)
        missing += sn.hit[i] == 0;
    is_int(missing, 0, "every key present throughout was reported");
    free(sn.hit);
    store_free(&s);
}

static void test_layout(void)
{
    struct store s;
    store_init(&s, 1, 1000);
    char key[16], val[32];
    memset(key, 'k', sizeof key);
    memset(val, 'v', sizeof val);
    struct store_entry *e = store_insert(&s, key, 16, val, 32, 0, 1000);
    ok(e && store_entry_size(e) <= 88, "16-byte key + 32-byte value fits 88 bytes (%zu)",
       store_entry_size(e));
    /* Binary-safe keys and values. */
    const char bk[] = {'a', 0, 'b', '\r', '\n'};
    const char bv[] = {0, 0, 1, 2};
    store_insert(&s, bk, sizeof bk, bv, sizeof bv, 0, 1000);
    struct store_entry *b = store_find(&s, bk, sizeof bk);
    ok(b && store_vlen(b) == 4 && memcmp(store_val(b), bv, 4) == 0, "binary key and value");
    ok(!store_find(&s, bk, 2), "a key prefix is a different key");
    /* Grow past the 255-byte small-length form and back. */
    char big[1000];
    memset(big, 'B', sizeof big);
    e = store_set_value(&s, store_find(&s, key, 16), big, sizeof big);
    ok(e && store_vlen(e) == 1000 && (e->flags & STORE_F_BIG), "value grew to the large form");
    ok(memcmp(store_key(e), key, 16) == 0, "key intact after the move");
    e = store_set_expire(&s, e, 5000);
    ok(e && store_expire(e) == 5000 && s.nvol == 1, "TTL added to a large entry");
    e = store_set_value(&s, e, "tiny", 4);
    ok(e && store_vlen(e) == 4 && !(e->flags & STORE_F_BIG) && store_expire(e) == 5000,
       "shrunk to the small form, TTL kept");
    ok(memcmp(store_val(e), "tiny", 4) == 0, "value bytes right");
    e = store_set_expire(&s, e, 0);
    ok(e && store_expire(e) == 0 && s.nvol == 0, "TTL removed");
    ok(store_consistent(&s), "structures agree after layout changes");
    /* Many TTL changes keep the volatile array consistent. */
    char k[32];
    for (int i = 0; i < 500; i++) {
        int kl = key_of(k, i);
        store_insert(&s, k, (size_t)kl, "v", 1, i % 2 ? 9000 : 0, 1000);
    }
    for (int i = 0; i < 500; i += 3) {
        int kl = key_of(k, i);
        struct store_entry *x = store_find(&s, k, (size_t)kl);
        store_set_expire(&s, x, store_expire(x) ? 0 : 7000);
    }
    ok(store_consistent(&s), "volatile array consistent after many TTL flips");
    size_t vol_ok = 0;
    for (int i = 0; i < 200; i++) {
        struct store_entry *x = store_random_volatile(&s);
        vol_ok += x && store_expire(x) != 0;
    }
    is_int(vol_ok, 200, "store_random_volatile returns only keys with a TTL");
    store_free(&s);
    is_int(s.mem.used, 0, "memory accounting returns to zero");
}

static void test_lazy_expire(void)
{
    struct store s;
    store_init(&s, 3, 0);
    store_insert(&s, "a", 1, "1", 1, 1500, 1000);
    ok(store_lookup(&s, "a", 1, 1499) != NULL, "alive 1 ms before its expire time");
    ok(store_lookup(&s, "a", 1, 1500) == NULL, "gone at its expire time");
    is_int(s.count, 0, "the expired key was deleted on access");
    is_int(s.expired, 1, "and counted as expired");
    store_free(&s);
}

static void test_accounting(void)
{
    struct store s;
    store_init(&s, 5, 0);
    char k[32];
    for (int i = 0; i < 1000; i++) {
        int kl = key_of(k, i);
        store_insert(&s, k, (size_t)kl, "value", 5, 0, 0);
    }
    size_t sum = 0;
    for (struct store_entry *e = s.ohead; e; e = e->onext)
        sum += store_entry_size(e);
    sum += mem_usable(s.t[0].b) + mem_usable(s.t[1].b) + mem_usable(s.vol);
    is_int(s.mem.used, sum, "used memory is the sum of usable allocation sizes");
    store_clear(&s);
    is_int(s.count, 0, "clear empties the store");
    is_int(s.mem.used, 0, "clear releases everything");
    store_free(&s);
}

/* A block laid out like a read buffer holding "SET key value": the key a
 * few bytes before the value, the value at store_value_offset. */
static char *adopt_block(const char *key, size_t klen, size_t vlen, int fill)
{
    size_t voff = store_value_offset(klen, vlen);
    char *b = malloc(voff + vlen + 2);
    memset(b, '#', voff);
    memcpy(b + voff - 13 - klen, key, klen); /* "...key\r\n$<len>\r\n" */
    memset(b + voff, fill, vlen);
    memcpy(b + voff + vlen, "\r\n", 2);
    return b;
}

static int val_is(struct store_entry *e, int fill, size_t vlen)
{
    if (store_vlen(e) != vlen)
        return 0;
    for (size_t i = 0; i < vlen; i++)
        if (store_val(e)[i] != (unsigned char)fill)
            return 0;
    return 1;
}

/* A read block handed over becomes the entry: the key moves to its place
 * (from under the header), the value stays; a replaced entry keeps its
 * clocks, counter and order position; memory is counted by usable size
 * and all given back. */
static void test_adopt(void)
{
    struct store s;
    store_init(&s, 9, 1000);
    store_insert(&s, "a", 1, "1", 1, 0, 1000);
    size_t vlen = 200000;
    char *b = adopt_block("big:key", 7, vlen, 'x');
    size_t voff = store_value_offset(7, vlen);
    struct store_entry *e = store_adopt(&s, b, NULL, b + voff - 20, 7, vlen, 2000);
    ok(e == (struct store_entry *)b, "the block is the entry");
    ok(store_find(&s, "big:key", 7) == e, "the key is found");
    ok(store_klen(e) == 7 && memcmp(store_key(e), "big:key", 7) == 0, "key in place");
    ok(val_is(e, 'x', vlen), "value kept byte for byte");
    ok(store_expire(e) == 0 && s.otail == e && s.count == 2, "no TTL, appended, counted");
    store_insert(&s, "z", 1, "1", 1, 0, 3000);
    e->lfu = 77;
    char *b2 = adopt_block("big:key", 7, vlen + 5, 'y');
    struct store_entry *n = store_adopt(&s, b2, e, NULL, 7, vlen + 5, 4000);
    ok(n == (struct store_entry *)b2 && store_find(&s, "big:key", 7) == n, "replaced");
    ok(val_is(n, 'y', vlen + 5), "new value");
    ok(n->lfu == 77 && n->ctime == store_clock(&s, 2000), "counter and clocks kept");
    ok(n->onext && s.otail != n && s.count == 3, "order position kept");
    ok(store_consistent(&s), "structures agree");
    size_t sum = 0;
    for (struct store_entry *x = s.ohead; x; x = x->onext)
        sum += store_entry_size(x);
    sum += mem_usable(s.t[0].b) + mem_usable(s.t[1].b) + mem_usable(s.vol);
    is_int(s.mem.used, sum, "adopted blocks counted by usable size");
    ok(store_entry_size(n) >= store_value_offset(7, vlen + 5) + vlen + 5, "entry size covers it");
    store_delete(&s, n);
    store_clear(&s);
    is_int(s.mem.used, 0, "everything given back");
    store_free(&s);
}

/* The bucket array's cost per key stays flat as the table grows: at every
 * count (rehash finished) the load is within [3/4, 3/2), so the array costs
 * at most 8 / 0.75 = 10.7 bytes a key, never the 16 of a table that just
 * doubled at load 1; the table doubles exactly when the count reaches 3/2
 * of its size; and a reservation for n keys takes the same size growth
 * would, so loading n keys after it never rehashes. */
static void test_bucket_bytes_per_key(void)
{
    struct store s;
    store_init(&s, 9, 0);
    char k[32];
    int n = 390000, bad = 0, doublings = 0;
    double worst = 0;
    size_t size = 0;
    for (int i = 0; i < n; i++) {
        int kl = key_of(k, i);
        store_insert(&s, k, (size_t)kl, "v", 1, 0, 0);
        if (s.rehash >= 0) {
            /* the doubling starts with the insert that reaches 3/2 */
            if (s.t[1].size != 2 * s.t[0].size || s.count != store_grow_at(s.t[0].size))
                bad++;
            doublings++;
            while (store_rehash_step(&s, 1000))
                ;
        }
        if (s.t[0].size != size)
            size = s.t[0].size;
        if (s.count >= 1000) {
            double per = (double)(s.t[0].size * sizeof(void *)) / (double)s.count;
            if (per > worst)
                worst = per;
        }
    }
    is_int(bad, 0, "every doubling starts at load 3/2 (%d doublings)", doublings);
    ok(worst <= 8.0 / 0.75 + 0.01, "bucket array at most 10.7 bytes a key from 1k to 390k keys (%.2f)",
       worst);
    ok(size == 262144, "390k keys stay in 262,144 buckets (load 1.49: %zu)", size);
    store_free(&s);

    /* A reservation sizes the table as growth would: no rehash while n load. */
    for (size_t want = 1000; want <= 1000000; want *= 10) {
        store_init(&s, 11, 0);
        store_reserve(&s, want);
        uint64_t resizes = s.resizes;
        for (size_t i = 0; i < want; i++) {
            int kl = key_of(k, (int)i);
            store_insert(&s, k, (size_t)kl, "v", 1, 0, 0);
        }
        store_reserve(&s, 0);
        ok(s.resizes == resizes && s.rehash < 0 && s.count < store_grow_at(s.t[0].size) &&
               4 * s.count >= 3 * s.t[0].size / 2,
           "%zu reserved keys load with no rehash into %zu buckets", want, s.t[0].size);
        store_free(&s);
    }
}

int main(void)
{
    test_grow_shrink();
    test_mid_rehash();
    test_scan_resize();
    test_layout();
    test_lazy_expire();
    test_accounting();
    test_adopt();
    test_bucket_bytes_per_key();
    return tap_done();
}
