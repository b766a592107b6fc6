/* kv_keys: the commands on keys whatever their value (DEL, EXISTS, TOUCH,
 * TYPE, RENAME), expiry (EXPIRE family, TTL family, PERSIST) and iteration
 * (KEYS, SCAN, RANDOMKEY, DBSIZE, FLUSHDB). */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "kv_commands.h"
#include "util.h"

#define ERR_SYNTAX "ERR syntax error"
#define ERR_ALLOC "ERR out of memory"

void kv_do_del(struct kv_req *r)
{
    long long n = 0;
    for (size_t i = 1; i < r->argc; i++) {
        struct store_entry *e = store_lookup(&r->ks->store, r->argv[i], r->argl[i], r->now);
        if (e) {
            store_delete(&r->ks->store, e);
            n++;
        }
    }
    resp_int(r->out, n);
}

void kv_do_exists(struct kv_req *r)
{
    long long n = 0;
    for (size_t i = 1; i < r->argc; i++)
        if (store_lookup(&r->ks->store, r->argv[i], r->argl[i], r->now))
            n++;
    resp_int(r->out, n);
}

void kv_do_touch(struct kv_req *r)
{
    long long n = 0;
    for (size_t i = 1; i < r->argc; i++)
        if (kv_lookup_write(r, i))
            n++;
    resp_int(r->out, n);
}

/* ---- expiry --------------------------------------------------------- */

static void expire_common(struct kv_req *r, int sec, int absolute, const char *name)
{
    enum { NX = 1, XX = 2, GT = 4, LT = 8 };
    unsigned f = 0;
    for (size_t i = 3; i < r->argc; i++) {
        if (kv_arg_is(r, i, "nx"))
            f |= NX;
        else if (kv_arg_is(r, i, "xx"))
            f |= XX;
        else if (kv_arg_is(r, i, "gt"))
            f |= GT;
        else if (kv_arg_is(r, i, "lt"))
            f |= LT;
        else
            return resp_errorf(r->out, "ERR Unsupported option %.*s", (int)r->argl[i], r->argv[i]);
    }
    if ((f & NX) && (f & (XX | GT | LT)))
        return resp_error(r->out,
                          "ERR NX and XX, GT or LT options at the same time are not compatible");
    if ((f & GT) && (f & LT))
        return resp_error(r->out, "ERR GT and LT options at the same time are not compatible");
    long long when;
    if (kv_arg_ll(r, 2, &when) < 0)
        return;
    /* Past and zero times are allowed here (they delete the key); only an
     * overflow is an error. */
    if (sec) {
        if (when > LLONG_MAX / 1000 || when < LLONG_MIN / 1000)
            goto bad;
        when *= 1000;
    }
    if (!absolute) {
        if ((when > 0 && when > LLONG_MAX - r->now) || (when < 0 && when < LLONG_MIN + r->now))
            goto bad;
        when += r->now;
    }
    struct store_entry *e = kv_lookup_write(r, 1);
    if (!e)
        return resp_int(r->out, 0);
    int64_t cur = store_expire(e);
    if (((f & NX) && cur) || ((f & XX) && !cur) || ((f & GT) && (!cur || when <= cur)) ||
        ((f & LT) && cur && when >= cur))
        return resp_int(r->out, 0);
    if (when <= r->now) {
        store_delete(&r->ks->store, e);
        return resp_int(r->out, 1);
    }
    if (!store_set_expire(&r->ks->store, e, when))
        return resp_error(r->out, ERR_ALLOC);
    resp_int(r->out, 1);
    return;
bad:
    resp_errorf(r->out, "ERR invalid expire time in '%s' command", name);
}

void kv_do_expire(struct kv_req *r) { expire_common(r, 1, 0, "expire"); }
void kv_do_pexpire(struct kv_req *r) { expire_common(r, 0, 0, "pexpire"); }
void kv_do_expireat(struct kv_req *r) { expire_common(r, 1, 1, "expireat"); }
void kv_do_pexpireat(struct kv_req *r) { expire_common(r, 0, 1, "pexpireat"); }

static void ttl_common(struct kv_req *r, int ms, int absolute)
{
    struct store_entry *e = store_lookup(&r->ks->store, r->argv[1], r->argl[1], r->now);
    if (!e)
        return resp_int(r->out, -2);
    int64_t x = store_expire(e);
    if (!x)
        return resp_int(r->out, -1);
    if (absolute)
        return resp_int(r->out, ms ? x : x / 1000);
    int64_t left = x - r->now;
    if (left < 0)
        left = 0;
    resp_int(r->out, ms ? left : (left + 500) / 1000);
}

void kv_do_ttl(struct kv_req *r) { ttl_common(r, 0, 0); }
void kv_do_pttl(struct kv_req *r) { ttl_common(r, 1, 0); }
void kv_do_expiretime(struct kv_req *r) { ttl_common(r, 0, 1); }
void kv_do_pexpiretime(struct kv_req *r) { ttl_common(r, 1, 1); }

void kv_do_persist(struct kv_req *r)
{
    struct store_entry *e = kv_lookup_write(r, 1);
    if (!e || !store_expire(e))
        return resp_int(r->out, 0);
    if (!store_set_expire(&r->ks->store, e, 0))
        return resp_error(r->out, ERR_ALLOC);
    resp_int(r->out, 1);
}

void kv_do_type(struct kv_req *r)
{
    struct store_entry *e = store_lookup(&r->ks->store, r->argv[1], r->argl[1], r->now);
    resp_simple(r->out, e ? "string" : "none");
}

/* ---- iteration ------------------------------------------------------ */

struct keys_ctx {
    struct kv_req *r;
    const char *pat;
    size_t plen;
    int all;
    size_t n;
    struct store_entry **found;
    size_t cap;
    int oom;
};

static void keys_visit(void *arg, struct store_entry *e)
{
    struct keys_ctx *k = arg;
    if (k->oom || store_is_expired(e, k->r->now))
        return;
    if (!k->all && !kv_glob_match(k->pat, k->plen, (const char *)store_key(e), store_klen(e)))
        return;
    if (k->n == k->cap) {
        size_t cap = k->cap ? k->cap * 2 : 64;
        struct store_entry **f = realloc(k->found, cap * sizeof *f);
        if (!f) {
            k->oom = 1;
            return;
        }
        k->found = f;
        k->cap = cap;
    }
    k->found[k->n++] = e;
}

void kv_do_keys(struct kv_req *r)
{
    struct keys_ctx k = {.r = r, .pat = r->argv[1], .plen = r->argl[1]};
    k.all = k.plen == 1 && k.pat[0] == '*';
    store_foreach(&r->ks->store, keys_visit, &k);
    if (k.oom) {
        free(k.found);
        return resp_error(r->out, ERR_ALLOC);
    }
    resp_array(r->out, k.n);
    for (size_t i = 0; i < k.n; i++)
        resp_bulk(r->out, store_key(k.found[i]), store_klen(k.found[i]));
    free(k.found);
}

void kv_do_scan(struct kv_req *r)
{
    unsigned long long cursor;
    if (util_parse_u64(r->argv[1], r->argl[1], (uint64_t *)&cursor) < 0)
        return resp_error(r->out, "ERR invalid cursor");
    const char *pat = NULL;
    size_t plen = 0;
    long long count = 10;
    int type_none = 0;
    for (size_t i = 2; i < r->argc; i += 2) {
        if (i + 1 >= r->argc)
            return resp_error(r->out, ERR_SYNTAX);
        if (kv_arg_is(r, i, "count")) {
            if (kv_arg_ll(r, i + 1, &count) < 0)
                return;
            if (count < 1)
                return resp_error(r->out, ERR_SYNTAX);
        } else if (kv_arg_is(r, i, "match")) {
            pat = r->argv[i + 1];
            plen = r->argl[i + 1];
        } else if (kv_arg_is(r, i, "type")) {
            /* Only strings live here: any other type matches nothing. */
            type_none = !(r->argl[i + 1] == 6 && strncasecmp(r->argv[i + 1], "string", 6) == 0);
        } else {
            return resp_error(r->out, ERR_SYNTAX);
        }
    }
    struct keys_ctx k = {.r = r, .pat = pat, .plen = plen, .all = pat == NULL ||
                         (plen == 1 && pat[0] == '*')};
    long long budget = count * 10; /* bounded work per call on a sparse table */
    do {
        cursor = store_scan(&r->ks->store, cursor, keys_visit, &k);
    } while (cursor && budget-- > 0 && (long long)k.n < count && !k.oom);
    if (k.oom) {
        free(k.found);
        return resp_error(r->out, ERR_ALLOC);
    }
    char cur[24];
    snprintf(cur, sizeof cur, "%llu", cursor);
    resp_array(r->out, 2);
    resp_bulk_str(r->out, cur);
    size_t n = type_none ? 0 : k.n;
    resp_array(r->out, n);
    for (size_t i = 0; i < n; i++)
        resp_bulk(r->out, store_key(k.found[i]), store_klen(k.found[i]));
    free(k.found);
}

void kv_do_randomkey(struct kv_req *r)
{
    struct store *s = &r->ks->store;
    /* Expired keys met on the way are deleted; bounded so that a store
     * full of expired keys cannot stall the loop. */
    for (int tries = 0; tries < 100; tries++) {
        struct store_entry *e = store_random(s);
        if (!e)
            break;
        if (!store_is_expired(e, r->now))
            return resp_bulk(r->out, store_key(e), store_klen(e));
        if (!s->keep_expired)
            store_expire_delete(s, e);
    }
    resp_null(r->out);
}

static void rename_common(struct kv_req *r, int nx)
{
    struct store *s = &r->ks->store;
    struct store_entry *src = kv_lookup_write(r, 1);
    if (!src)
        return resp_error(r->out, "ERR no such key");
    if (r->argl[1] == r->argl[2] && memcmp(r->argv[1], r->argv[2], r->argl[1]) == 0)
        return nx ? resp_int(r->out, 0) : resp_ok(r->out);
    struct store_entry *dst = store_lookup(s, r->argv[2], r->argl[2], r->now);
    if (dst && nx)
        return resp_int(r->out, 0);
    struct store_entry *n = store_insert(s, r->argv[2], r->argl[2], NULL, store_vlen(src),
                                         store_expire(src), r->now);
    if (!n)
        return resp_error(r->out, ERR_ALLOC);
    /* store_insert may have moved buckets, never entries: src is valid. */
    memcpy(store_val(n), store_val(src), store_vlen(src));
    n->lfu = src->lfu;
    n->ctime = src->ctime;
    if (dst)
        store_delete(s, dst);
    store_delete(s, src);
    nx ? resp_int(r->out, 1) : resp_ok(r->out);
}

void kv_do_rename(struct kv_req *r) { rename_common(r, 0); }
void kv_do_renamenx(struct kv_req *r) { rename_common(r, 1); }

void kv_do_dbsize(struct kv_req *r) { resp_int(r->out, (long long)r->ks->store.count); }

void kv_do_flushdb(struct kv_req *r)
{
    if (r->argc > 2 || (r->argc == 2 && !kv_arg_is(r, 1, "async") && !kv_arg_is(r, 1, "sync")))
        return resp_error(r->out, ERR_SYNTAX);
    store_clear(&r->ks->store);
    resp_ok(r->out);
}
