/* Unit tests for the store's two expiry modes that replication relies on:
 * a primary's store reports every key it removes because its TTL passed
 * (lazily on lookup, by the active cycle, by RANDOMKEY's walk) so the db can
 * log the deletion; a replica's store hides expired keys from lookups but
 * never removes them itself, until the primary's deletion is applied. */
#include <stdlib.h>
#include <string.h>

#include "db_ops.h"
#include "expire.h"
#include "keyspace.h"
#include "kv_cmd.h"
#include "tap.h"

static char removed[16][16];
static int nremoved;

static void on_expire(void *arg, const void *key, size_t klen)
{
    (void)arg;
    if (nremoved < 16)
        snprintf(removed[nremoved], sizeof removed[0], "%.*s", (int)klen, (const char *)key);
    nremoved++;
}

static void test_primary_reports_expiries(void)
{
    int64_t now = 1000000;
    struct store s;
    store_init(&s, 1, now);
    s.on_expire = on_expire;
    store_insert(&s, "lazy", 4, "v", 1, now + 10, now);
    store_insert(&s, "active", 6, "v", 1, now + 10, now);
    store_insert(&s, "live", 4, "v", 1, 0, now);
    nremoved = 0;
    ok(store_lookup(&s, "lazy", 4, now + 20) == NULL, "an expired key is not found");
    is_int(nremoved, 1, "its removal is reported");
    is_str(removed[0], "lazy", "with its name");
    struct expire_cycle ec;
    expire_cycle_init(&ec);
    is_int(expire_run(&ec, &s, now + 20), 1, "the active cycle removes the other");
    is_int(nremoved, 2, "reported too");
    is_str(removed[1], "active", "its name");
    is_int(s.count, 1, "the live key stays");
    is_int(s.expired, 2, "both counted as expired");
    /* The db's record for it applies as a deletion. */
    struct buf b;
    buf_init(&b);
    db_ops_deleted(&b, "live", 4);
    char err[100];
    ok(db_ops_apply(&s, buf_head(&b), buf_size(&b), now, err, sizeof err) == 0 && s.count == 0,
       "a deletion record removes the key");
    buf_free(&b);
    store_free(&s);
}

static void test_replica_hides_and_keeps(void)
{
    int64_t now = 2000000;
    struct keyspace ks;
    keyspace_init(&ks, 3, now);
    ks.store.keep_expired = 1;
    ks.read_only = 1;
    store_insert(&ks.store, "k", 1, "v", 1, now + 10, now);
    store_insert(&ks.store, "other", 5, "w", 1, 0, now);
    nremoved = 0;
    ks.store.on_expire = on_expire; /* would report a removal, if any happened */
    ok(store_lookup(&ks.store, "k", 1, now + 5) != NULL, "before its TTL it is served");
    ok(store_lookup(&ks.store, "k", 1, now + 20) == NULL, "past its TTL it is hidden");
    ok(store_find(&ks.store, "k", 1) != NULL, "yet still held");
    struct expire_cycle ec;
    expire_cycle_init(&ec);
    is_int(expire_run(&ec, &ks.store, now + 20), 0, "the active cycle removes nothing");
    /* Through the commands: GET, EXISTS, TTL answer as if it were gone. */
    struct kv_session sess = {.authed = 1};
    struct buf out;
    buf_init(&out);
    const char *get[] = {"GET", "k"}, *exists[] = {"EXISTS", "k"}, *ttl[] = {"TTL", "k"};
    size_t l2[] = {3, 1}, l6[] = {6, 1};
    struct kv_req r = {.ks = &ks, .sess = &sess, .out = &out, .argc = 2, .argv = get,
                       .argl = l2, .now = now + 20};
    kv_exec(&r);
    ok(buf_size(&out) == 5 && memcmp(buf_head(&out), "$-1\r\n", 5) == 0, "GET: nil");
    buf_reset(&out);
    r.argv = exists;
    r.argl = l6;
    kv_exec(&r);
    ok(buf_size(&out) == 4 && memcmp(buf_head(&out), ":0\r\n", 4) == 0, "EXISTS: 0");
    buf_reset(&out);
    r.argv = ttl;
    r.argl = l2;
    kv_exec(&r);
    ok(buf_size(&out) == 5 && memcmp(buf_head(&out), ":-2\r\n", 5) == 0, "TTL: -2");
    const char *rk[] = {"RANDOMKEY"};
    size_t rkl[] = {9};
    for (int i = 0; i < 20; i++) {
        buf_reset(&out);
        r.argc = 1;
        r.argv = rk;
        r.argl = rkl;
        kv_exec(&r);
    }
    is_int(ks.store.count, 2, "RANDOMKEY removes nothing either");
    is_int(nremoved, 0, "no removal happened");
    const char *set[] = {"SET", "k", "x"};
    size_t sl[] = {3, 1, 1};
    buf_reset(&out);
    r.argc = 3;
    r.argv = set;
    r.argl = sl;
    kv_exec(&r);
    ok(buf_size(&out) > 10 && memcmp(buf_head(&out), "-READONLY You can't write against a read "
                                                     "only replica.\r\n", buf_size(&out)) == 0,
       "a write is refused with READONLY");
    buf_free(&out);
    keyspace_free(&ks);
}

int main(void)
{
    test_primary_reports_expiries();
    test_replica_hides_and_keeps();
    return tap_done();
}
