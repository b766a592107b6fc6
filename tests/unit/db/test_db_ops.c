/* Unit tests for the db's effect records: every write command of the
 * keyspace can be logged; replaying the effects of a command script into an empty store
 * rebuilds exactly the store the commands built; relative times become
 * absolute; expired keys are not brought back. */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "db_ops.h"
#include "keyspace.h"
#include "kv_cmd.h"
#include "mpk.h"
#include "tap.h"

static struct keyspace live;
static struct store replica;
static struct kv_session sess = {.authed = 1};
static struct buf out, effects;
static int64_t now = 1800000000000;
static int logged;

/* Runs one command on the live keyspace; for write commands, applies its
 * effects to the replica store the way recovery would. */
static void run(const char *first, ...)
{
    const char *argv[16];
    size_t argl[16], argc = 0;
    va_list ap;
    va_start(ap, first);
    for (const char *a = first; a && argc < 16; a = va_arg(ap, const char *)) {
        argv[argc] = a;
        argl[argc++] = strlen(a);
    }
    va_end(ap);
    buf_reset(&out);
    struct kv_req r = {.ks = &live, .sess = &sess, .out = &out, .argc = argc, .argv = argv,
                       .argl = argl, .now = now};
    kv_exec(&r);
    const struct kv_command *cmd = kv_cmd_find(&live, argv[0], argl[0]);
    if (!cmd || !kv_cmd_is_write(cmd))
        return;
    buf_reset(&effects);
    db_ops_effects(&live.store, cmd, argc, argv, argl, now, &effects);
    char err[128];
    if (buf_size(&effects)) {
        logged++;
        if (db_ops_apply(&replica, buf_head(&effects), buf_size(&effects), now, err, sizeof err) < 0)
            printf("# apply failed: %s\n", err);
    }
}

struct cmp {
    struct store *other;
    int64_t now;
    int diff;
};

static void cmp_one(void *arg, struct store_entry *e)
{
    struct cmp *c = arg;
    if (store_is_expired(e, c->now))
        return;
    struct store_entry *o = store_find(c->other, store_key(e), store_klen(e));
    if (!o || store_vlen(o) != store_vlen(e) || memcmp(store_val(o), store_val(e), store_vlen(e)) ||
        store_expire(o) != store_expire(e)) {
        if (!c->diff)
            printf("# differs: %.*s\n", (int)store_klen(e), store_key(e));
        c->diff++;
    }
}

static size_t live_count(struct store *s, int64_t t)
{
    size_t n = 0;
    struct cmp c = {s, t, 0};
    (void)c;
    for (size_t i = 0; i < 2; i++)
        for (size_t b = 0; b < s->t[i].size; b++)
            for (struct store_entry *e = s->t[i].b[b]; e; e = e->next)
                n += !store_is_expired(e, t);
    return n;
}

static int same(int64_t t)
{
    struct cmp a = {&replica, t, 0}, b = {&live.store, t, 0};
    store_foreach(&live.store, cmp_one, &a);
    store_foreach(&replica, cmp_one, &b);
    return a.diff == 0 && b.diff == 0 && live_count(&live.store, t) == live_count(&replica, t);
}

static void test_every_write_command_known(void)
{
    size_t n;
    const struct kv_command *cmds = kv_cmd_table(&n);
    int unknown = 0;
    for (size_t i = 0; i < n; i++)
        if (kv_cmd_is_write(&cmds[i]) && !db_ops_loggable(&cmds[i])) {
            printf("# write command '%s' has no key positions\n", cmds[i].name);
            unknown++;
        }
    ok(unknown == 0, "every write command of the keyspace can be logged by the db");
}

/* Decodes effects into "op:key op:key ..." for comparison. */
static const char *effect_ops(const struct buf *b)
{
    static char s[256];
    size_t n = 0;
    struct mpk m;
    mpk_init(&m, buf_head(b), buf_size(b));
    s[0] = 0;
    while (!mpk_done(&m) && n < sizeof s - 40) {
        uint32_t items;
        int64_t op, x;
        const char *k = "", *v;
        size_t kl = 0, vl;
        if (mpk_array(&m, &items) < 0 || mpk_int(&m, &op) < 0)
            return "(bad)";
        if (items >= 2 && mpk_bytes(&m, &k, &kl) < 0)
            return "(bad)";
        if (items == 4 && (mpk_bytes(&m, &v, &vl) < 0 || mpk_int(&m, &x) < 0))
            return "(bad)";
        if (items == 3 && mpk_int(&m, &x) < 0)
            return "(bad)";
        n += (size_t)snprintf(s + n, sizeof s - n, "%s%d:%.*s", n ? " " : "", (int)op, (int)kl, k);
    }
    return s;
}

/* The keys logged are the ones the command table names. */
static const char *effects_of(const char *first, ...)
{
    const char *argv[16];
    size_t argl[16], argc = 0;
    va_list ap;
    va_start(ap, first);
    for (const char *a = first; a && argc < 16; a = va_arg(ap, const char *)) {
        argv[argc] = a;
        argl[argc++] = strlen(a);
    }
    va_end(ap);
    buf_reset(&out);
    struct kv_req r = {.ks = &live, .sess = &sess, .out = &out, .argc = argc, .argv = argv,
                       .argl = argl, .now = now};
    kv_exec(&r);
    buf_reset(&effects);
    if (db_ops_effects(&live.store, kv_cmd_find(&live, argv[0], argl[0]), argc, argv, argl, now,
                       &effects) < 0)
        return "(error)";
    return effect_ops(&effects);
}

static void test_effects_follow_key_positions(void)
{
    is_str(effects_of("mset", "e1", "1", "e2", "2", NULL), "1:e1 1:e2",
           "MSET logs its keys, not its values");
    is_str(effects_of("set", "e3", "v", "ex", "100", NULL), "1:e3", "SET logs one key");
    is_str(effects_of("expire", "e3", "50", NULL), "3:e3", "EXPIRE logs only the TTL");
    is_str(effects_of("rename", "e1", "e4", NULL), "2:e1 1:e4", "RENAME logs both keys");
    is_str(effects_of("del", "e2", "e4", "nokey", NULL), "2:e2 2:e4 2:nokey",
           "DEL logs every named key gone");
    const char *ping[] = {"ping"};
    size_t pl[] = {4};
    buf_reset(&effects);
    ok(db_ops_effects(&live.store, kv_cmd_find(&live, "ping", 4), 1, ping, pl, now, &effects) < 0,
       "a command with no keys and no flush cannot be logged");
    run("flushall", NULL);
}

static void test_replay_matches(void)
{
    run("set", "a", "1", NULL);
    run("incr", "a", NULL);
    run("incrby", "a", "40", NULL);
    run("decr", "a", NULL);
    run("decrby", "a", "1", NULL);
    run("incrbyfloat", "f", "2.5", NULL);
    run("set", "ttl", "v", "ex", "100", NULL);
    run("set", "pttl", "v", "px", "5000", NULL);
    run("setex", "sx", "10", "v", NULL);
    run("psetex", "psx", "10000", "v", NULL);
    run("setnx", "a", "no", NULL);
    run("setnx", "nx", "yes", NULL);
    run("getset", "nx", "again", NULL);
    run("append", "s", "hello", NULL);
    run("append", "s", " world", NULL);
    run("setrange", "s", "0", "J", NULL);
    run("setrange", "pad", "3", "x", NULL);
    run("mset", "m1", "1", "m2", "2", "m3", "3", NULL);
    run("msetnx", "m1", "x", "m4", "4", NULL);
    run("msetnx", "m5", "5", "m6", "6", NULL);
    run("del", "m2", "missing", NULL);
    run("unlink", "m3", NULL);
    run("rename", "m5", "m7", NULL);
    run("renamenx", "m6", "m1", NULL);
    run("renamenx", "m6", "m8", NULL);
    run("expire", "m1", "100", NULL);
    run("pexpire", "m4", "100000", NULL);
    run("expireat", "m7", "1900000000", NULL);
    run("pexpireat", "m8", "1900000000000", NULL);
    run("persist", "m7", NULL);
    run("expire", "m4", "-1", NULL); /* deletes */
    run("getdel", "nx", NULL);
    run("set", "g", "v", NULL);
    run("getex", "g", "ex", "50", NULL);
    run("getex", "g", "persist", NULL);
    run("set", "a", "keep", "keepttl", NULL);
    run("set", "ttl", "new", "keepttl", NULL);
    run("set", "ttl", "x", "xx", "get", NULL);
    run("incr", "s", NULL); /* an error: logging the unchanged key is harmless */
    ok(logged > 30, "write commands were logged (%d records)", logged);
    ok(same(now), "replaying the effects rebuilds the same keys, values and expiries");
    struct store_entry *e = store_find(&replica, "pttl", 4);
    ok(e && store_expire(e) == now + 5000, "a relative PX became an absolute time");
    e = store_find(&replica, "m1", 2);
    ok(e && store_expire(e) == now + 100 * 1000, "a relative EXPIRE became an absolute time");
    e = store_find(&replica, "a", 1);
    ok(e && store_vlen(e) == 4 && memcmp(store_val(e), "keep", 4) == 0, "INCR results replayed");

    run("flushdb", "bogus", NULL);
    ok(same(now) && live.store.count > 0, "a refused FLUSHDB logs no flush");
    run("flushall", NULL);
    ok(same(now) && replica.count == 0, "FLUSHALL replayed");
}

static void test_expired_not_restored(void)
{
    run("set", "soon", "v", "px", "1000", NULL);
    run("set", "later", "v", "ex", "1000", NULL);
    run("expire", "later", "2", NULL);
    /* Capture the log so far by replaying into a fresh store later. */
    struct buf log;
    buf_init(&log);
    char err[128];
    buf_reset(&effects);
    const struct kv_command *set = kv_cmd_find(&live, "set", 3);
    const struct kv_command *expire = kv_cmd_find(&live, "expire", 6);
    const char *a1[] = {"set", "soon"};
    size_t l1[] = {3, 4};
    db_ops_effects(&live.store, set, 2, a1, l1, now, &log);
    const char *a3[] = {"set", "later"};
    size_t l3[] = {3, 5};
    db_ops_effects(&live.store, set, 2, a3, l3, now, &log);
    const char *a2[] = {"expire", "later"};
    size_t l2[] = {6, 5};
    db_ops_effects(&live.store, expire, 2, a2, l2, now, &log);
    struct store fresh;
    store_init(&fresh, 1, now);
    int64_t later = now + 5000; /* a restart five seconds on */
    ok(db_ops_apply(&fresh, buf_head(&log), buf_size(&log), later, err, sizeof err) == 0,
       "replay after the deadline");
    ok(!store_lookup(&fresh, "soon", 4, later) && !store_lookup(&fresh, "later", 5, later),
       "keys whose absolute expiry passed are never served again");
    struct store fresh2;
    store_init(&fresh2, 1, now);
    db_ops_apply(&fresh2, buf_head(&log), buf_size(&log), now + 500, err, sizeof err);
    ok(fresh2.count == 2, "keys still alive at replay time are restored with their deadline");
    store_free(&fresh);
    store_free(&fresh2);
    buf_free(&log);
}

/* SET k v PX 1000, then EXPIRE k 100000 before the first deadline: replayed
 * after the first deadline (a restart, a lagging replica) the key must be
 * there with the second one. */
static void test_extended_before_expiry_survives_replay(void)
{
    struct buf log;
    buf_init(&log);
    run("set", "ext", "v", "px", "1000", NULL);
    const char *a1[] = {"set", "ext"};
    size_t l1[] = {3, 3};
    db_ops_effects(&live.store, kv_cmd_find(&live, "set", 3), 2, a1, l1, now, &log);
    run("expire", "ext", "100", NULL);
    const char *a2[] = {"expire", "ext"};
    size_t l2[] = {6, 3};
    db_ops_effects(&live.store, kv_cmd_find(&live, "expire", 6), 2, a2, l2, now, &log);
    struct store fresh;
    store_init(&fresh, 1, now);
    char err[128];
    int64_t later = now + 5000;
    ok(db_ops_apply(&fresh, buf_head(&log), buf_size(&log), later, err, sizeof err) == 0,
       "replayed after the first deadline");
    struct store_entry *e = store_lookup(&fresh, "ext", 3, later);
    ok(e && store_expire(e) == now + 100000, "the key lives, with the extended deadline");
    store_free(&fresh);
    /* The same through a snapshot entry loaded after its deadline. */
    store_init(&fresh, 1, now);
    ok(db_ops_load(&fresh, "ext", 3, "v", 1, now + 1000, later, err, sizeof err) == 0,
       "an expired snapshot entry loads");
    buf_reset(&log);
    db_ops_effects(&live.store, kv_cmd_find(&live, "expire", 6), 2, a2, l2, now, &log);
    db_ops_apply(&fresh, buf_head(&log), buf_size(&log), later, err, sizeof err);
    e = store_lookup(&fresh, "ext", 3, later);
    ok(e && store_expire(e) == now + 100000, "then the extension in the log finds it");
    store_free(&fresh);
    buf_free(&log);
}

static void test_malformed(void)
{
    char err[128];
    struct store s;
    store_init(&s, 1, now);
    const unsigned char bad1[] = {0x92, 0x01, 0xc4, 0x01, 'k'}; /* SET with 2 items */
    const unsigned char bad2[] = {0x93, 0x01, 0xc4, 0x05, 'k'}; /* truncated key */
    const unsigned char bad3[] = {0x91, 0x09};                  /* unknown op */
    ok(db_ops_apply(&s, bad1, sizeof bad1, now, err, sizeof err) < 0, "wrong arity refused");
    ok(db_ops_apply(&s, bad2, sizeof bad2, now, err, sizeof err) < 0, "truncated refused");
    ok(db_ops_apply(&s, bad3, sizeof bad3, now, err, sizeof err) < 0, "unknown op refused: %s", err);
    store_free(&s);
}

int main(void)
{
    keyspace_init(&live, 1, now);
    store_init(&replica, 2, now);
    buf_init(&out);
    buf_init(&effects);
    test_every_write_command_known();
    test_effects_follow_key_positions();
    test_replay_matches();
    test_expired_not_restored();
    test_extended_before_expiry_survives_replay();
    test_malformed();
    keyspace_free(&live);
    store_free(&replica);
    buf_free(&out);
    buf_free(&effects);
    return tap_done();
}
