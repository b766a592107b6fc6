/* kv_strings: the string commands (GET, SET and its options, the counters,
 * ranges, MGET/MSET) on a keyspace. Replies and error texts follow Redis 7
 * byte for byte. */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kv_commands.h"

#define ERR_INT "ERR value is not an integer or out of range"
#define ERR_SYNTAX "ERR syntax error"
#define ERR_TOOBIG "ERR string exceeds maximum allowed size (proto-max-bulk-len)"
#define ERR_ALLOC "ERR out of memory"

/* Converts a relative or absolute time argument into an absolute ms time,
 * rejecting what Redis rejects, with its message. */
static int parse_expire(struct kv_req *r, size_t i, int unit_sec, int absolute,
                        const char *cmd, int64_t *out)
{
    long long v;
    if (kv_arg_ll(r, i, &v) < 0)
        return -1;
    if (v <= 0)
        goto bad;
    if (unit_sec) {
        if (v > LLONG_MAX / 1000)
            goto bad;
        v *= 1000;
    }
    if (!absolute) {
        if (v > LLONG_MAX - r->now)
            goto bad;
        v += r->now;
    }
    *out = v;
    return 0;
bad:
    resp_errorf(r->out, "ERR invalid expire time in '%s' command", cmd);
    return -1;
}

void kv_do_get(struct kv_req *r)
{
    struct store_entry *e = kv_lookup_read(r, 1);
    if (!e)
        return resp_null(r->out);
    resp_bulk(r->out, store_val(e), store_vlen(e));
}

/* A plain SET of a large value that the read path placed where an entry
 * keeps its value (resp_server leaves room for the entry's header in front
 * of it): the read block becomes the entry, so the value is not copied a
 * second time. Returns the entry, or NULL when the block is not offered, not
 * laid out for it, or more than a few bytes larger than the entry needs
 * (then the caller copies as usual). */
#define KV_ADOPT_MIN 4096
#define KV_ADOPT_SLACK 64
static struct store_entry *set_adopt(struct kv_req *r, struct store_entry *e)
{
    struct buf *b = r->adopt;
    size_t klen = r->argl[1], vlen = r->argl[2];
    if (!b || vlen < KV_ADOPT_MIN || (e && (e->flags & STORE_F_EXPIRE)))
        return NULL;
    size_t voff = store_value_offset(klen, vlen);
    if (r->argv[2] != b->data + voff || b->cap - voff - vlen > KV_ADOPT_SLACK)
        return NULL;
    struct store_entry *n = store_adopt(&r->ks->store, b->data, e, r->argv[1], klen, vlen, r->now);
    if (!n)
        return NULL;
    buf_init(b); /* the block is the entry now */
    r->adopt = NULL;
    /* The key was moved; later steps (tracking, the memory check) read it. */
    r->argv[1] = (const char *)store_key(n);
    r->argv[2] = (const char *)store_val(n);
    return n;
}

void kv_do_set(struct kv_req *r)
{
    enum { F_NX = 1, F_XX = 2, F_GET = 4, F_KEEPTTL = 8, F_EXP = 16 };
    unsigned flags = 0;
    int64_t expire = 0;
    for (size_t i = 3; i < r->argc; i++) {
        int has_next = i + 1 < r->argc;
        if (kv_arg_is(r, i, "nx") && !(flags & F_XX)) {
            flags |= F_NX;
        } else if (kv_arg_is(r, i, "xx") && !(flags & F_NX)) {
            flags |= F_XX;
        } else if (kv_arg_is(r, i, "get")) {
            flags |= F_GET;
        } else if (kv_arg_is(r, i, "keepttl") && !(flags & F_EXP)) {
            flags |= F_KEEPTTL;
        } else if (has_next && !(flags & (F_KEEPTTL | F_EXP)) &&
                   (kv_arg_is(r, i, "ex") || kv_arg_is(r, i, "px") ||
                    kv_arg_is(r, i, "exat") || kv_arg_is(r, i, "pxat"))) {
            int sec = r->argv[i][0] == 'e' || r->argv[i][0] == 'E';
            int abs = r->argl[i] == 4;
            flags |= F_EXP;
            if (parse_expire(r, i + 1, sec, abs, "set", &expire) < 0)
                return;
            i++;
        } else {
            return resp_error(r->out, ERR_SYNTAX);
        }
    }
    struct store_entry *e = kv_lookup_write(r, 1);
    /* Room for the value before any reply is written (GET's included). */
    if (!(((flags & F_NX) && e) || ((flags & F_XX) && !e))) {
        int room = kv_reserve(r, kv_growth(r->argl[1], e, r->argl[2]));
        if (room < 0)
            return;
        if (room > 0)
            e = store_lookup(&r->ks->store, r->argv[1], r->argl[1], r->now);
    }
    if (flags & F_GET) {
        if (e)
            resp_bulk(r->out, store_val(e), store_vlen(e));
        else
            resp_null(r->out);
    }
    if (((flags & F_NX) && e) || ((flags & F_XX) && !e)) {
        if (!(flags & F_GET))
            resp_null(r->out);
        return;
    }
    /* SET replaces the TTL unless KEEPTTL; an absolute time already in the
     * past leaves the key deleted, as if it had expired at once. */
    if ((flags & F_EXP) && expire <= r->now) {
        if (e)
            store_delete(&r->ks->store, e);
        if (!(flags & F_GET))
            resp_ok(r->out);
        return;
    }
    if (r->argc == 3 && set_adopt(r, e))
        return resp_ok(r->out);
    if (!kv_write_value(r, 1, e, r->argv[2], r->argl[2], (flags & F_KEEPTTL) ? -1 : expire))
        return;
    if (!(flags & F_GET))
        resp_ok(r->out);
}

void kv_do_setnx(struct kv_req *r)
{
    struct store_entry *e = kv_lookup_write(r, 1);
    if (e)
        return resp_int(r->out, 0);
    if (kv_reserve(r, kv_growth(r->argl[1], NULL, r->argl[2])) < 0)
        return;
    if (kv_write_value(r, 1, NULL, r->argv[2], r->argl[2], 0))
        resp_int(r->out, 1);
}

static void setex_common(struct kv_req *r, int sec, const char *name)
{
    int64_t expire;
    if (parse_expire(r, 2, sec, 0, name, &expire) < 0)
        return;
    struct store_entry *e = kv_lookup_write(r, 1);
    int room = kv_reserve(r, kv_growth(r->argl[1], e, r->argl[3]));
    if (room < 0)
        return;
    if (room > 0)
        e = store_lookup(&r->ks->store, r->argv[1], r->argl[1], r->now);
    if (kv_write_value(r, 1, e, r->argv[3], r->argl[3], expire))
        resp_ok(r->out);
}

void kv_do_setex(struct kv_req *r) { setex_common(r, 1, "setex"); }
void kv_do_psetex(struct kv_req *r) { setex_common(r, 0, "psetex"); }

void kv_do_getset(struct kv_req *r)
{
    struct store_entry *e = kv_lookup_write(r, 1);
    int room = kv_reserve(r, kv_growth(r->argl[1], e, r->argl[2]));
    if (room < 0)
        return;
    if (room > 0)
        e = store_lookup(&r->ks->store, r->argv[1], r->argl[1], r->now);
    if (e)
        resp_bulk(r->out, store_val(e), store_vlen(e));
    else
        resp_null(r->out);
    kv_write_value(r, 1, e, r->argv[2], r->argl[2], 0);
}

void kv_do_getdel(struct kv_req *r)
{
    struct store_entry *e = kv_lookup_read(r, 1);
    if (!e)
        return resp_null(r->out);
    resp_bulk(r->out, store_val(e), store_vlen(e));
    store_delete(&r->ks->store, e);
}

void kv_do_getex(struct kv_req *r)
{
    int64_t expire = 0;
    int persist = 0, has_exp = 0;
    for (size_t i = 2; i < r->argc; i++) {
        int has_next = i + 1 < r->argc;
        if (kv_arg_is(r, i, "persist") && !has_exp && !persist) {
            persist = 1;
        } else if (has_next && !has_exp && !persist &&
                   (kv_arg_is(r, i, "ex") || kv_arg_is(r, i, "px") ||
                    kv_arg_is(r, i, "exat") || kv_arg_is(r, i, "pxat"))) {
            int sec = r->argv[i][0] == 'e' || r->argv[i][0] == 'E';
            int abs = r->argl[i] == 4;
            if (parse_expire(r, i + 1, sec, abs, "getex", &expire) < 0)
                return;
            has_exp = 1;
            i++;
        } else {
            return resp_error(r->out, ERR_SYNTAX);
        }
    }
    struct store_entry *e = kv_lookup_read(r, 1);
    if (!e)
        return resp_null(r->out);
    resp_bulk(r->out, store_val(e), store_vlen(e));
    if (has_exp && expire <= r->now)
        store_delete(&r->ks->store, e);
    else if (has_exp || persist)
        store_set_expire(&r->ks->store, e, has_exp ? expire : 0);
}

void kv_do_mget(struct kv_req *r)
{
    resp_array(r->out, r->argc - 1);
    for (size_t i = 1; i < r->argc; i++) {
        struct store_entry *e = kv_lookup_read(r, i);
        if (e)
            resp_bulk(r->out, store_val(e), store_vlen(e));
        else
            resp_null(r->out);
    }
}

/* What MSET's pairs may add, counted as new keys (an upper bound). */
static size_t mset_growth(const struct kv_req *r)
{
    size_t grow = 0;
    for (size_t i = 1; i + 1 < r->argc; i += 2)
        grow += kv_growth(r->argl[i], NULL, r->argl[i + 1]);
    return grow;
}

void kv_do_mset(struct kv_req *r)
{
    if (r->argc % 2 == 0)
        return kv_reply_wrongargs(r, "mset");
    if (kv_reserve(r, mset_growth(r)) < 0)
        return;
    for (size_t i = 1; i < r->argc; i += 2)
        if (!kv_write_value(r, i, kv_lookup_write(r, i), r->argv[i + 1], r->argl[i + 1], 0))
            return;
    resp_ok(r->out);
}

void kv_do_msetnx(struct kv_req *r)
{
    if (r->argc % 2 == 0)
        return kv_reply_wrongargs(r, "msetnx");
    for (size_t i = 1; i < r->argc; i += 2)
        if (store_lookup(&r->ks->store, r->argv[i], r->argl[i], r->now))
            return resp_int(r->out, 0);
    if (kv_reserve(r, mset_growth(r)) < 0)
        return;
    for (size_t i = 1; i < r->argc; i += 2)
        if (!kv_write_value(r, i, kv_lookup_write(r, i), r->argv[i + 1], r->argl[i + 1], 0))
            return;
    resp_int(r->out, 1);
}

/* ---- counters ---------------------------------------------------------- */

static void incr_common(struct kv_req *r, long long by)
{
    struct store_entry *e = kv_lookup_write(r, 1);
    long long cur = 0;
    if (e && kv_parse_ll((const char *)store_val(e), store_vlen(e), &cur) < 0)
        return resp_error(r->out, ERR_INT);
    if ((by < 0 && cur < 0 && by < LLONG_MIN - cur) || (by > 0 && cur > 0 && by > LLONG_MAX - cur))
        return resp_error(r->out, "ERR increment or decrement would overflow");
    cur += by;
    char tmp[24];
    size_t n = resp_fmt_i64(tmp, cur);
    if (kv_write_value(r, 1, e, tmp, n, -1))
        resp_int(r->out, cur);
}

void kv_do_incr(struct kv_req *r) { incr_common(r, 1); }
void kv_do_decr(struct kv_req *r) { incr_common(r, -1); }

void kv_do_incrby(struct kv_req *r)
{
    long long by;
    if (kv_arg_ll(r, 2, &by) == 0)
        incr_common(r, by);
}

void kv_do_decrby(struct kv_req *r)
{
    long long by;
    if (kv_arg_ll(r, 2, &by) < 0)
        return;
    if (by == LLONG_MIN)
        return resp_error(r->out, "ERR decrement would overflow");
    incr_common(r, -by);
}

/* A long double the way Redis accepts one: no spaces, not NaN. */
static int parse_ld(const char *s, size_t n, long double *out)
{
    char tmp[5120];
    if (n == 0 || n >= sizeof tmp)
        return -1;
    memcpy(tmp, s, n);
    tmp[n] = 0;
    if (isspace((unsigned char)tmp[0]))
        return -1;
    char *end;
    errno = 0;
    long double v = strtold(tmp, &end);
    if (*end || isnan(v) || (errno == ERANGE && (v == HUGE_VALL || v == -HUGE_VALL || v == 0)))
        return -1;
    *out = v;
    return 0;
}

void kv_do_incrbyfloat(struct kv_req *r)
{
    long double cur = 0, by;
    struct store_entry *e = kv_lookup_write(r, 1);
    if (e && parse_ld((const char *)store_val(e), store_vlen(e), &cur) < 0)
        return resp_error(r->out, "ERR value is not a valid float");
    if (parse_ld(r->argv[2], r->argl[2], &by) < 0)
        return resp_error(r->out, "ERR value is not a valid float");
    cur += by;
    if (isnan(cur) || isinf(cur))
        return resp_error(r->out, "ERR increment would produce NaN or Infinity");
    char tmp[5200];
    int n = snprintf(tmp, sizeof tmp, "%.17Lf", cur);
    if (n <= 0 || (size_t)n >= sizeof tmp)
        return resp_error(r->out, "ERR increment would produce NaN or Infinity");
    /* Trim the fixed-point form: no trailing zeros, no bare point, no -0. */
    if (strchr(tmp, '.')) {
        while (n > 0 && tmp[n - 1] == '0')
            n--;
        if (n > 0 && tmp[n - 1] == '.')
            n--;
    }
    tmp[n] = 0;
    if (strcmp(tmp, "-0") == 0) {
        tmp[0] = '0';
        tmp[1] = 0;
        n = 1;
    }
    if (kv_write_value(r, 1, e, tmp, (size_t)n, -1))
        resp_bulk(r->out, tmp, (size_t)n);
}

/* ---- string ranges -------------------------------------------------- */

void kv_do_append(struct kv_req *r)
{
    struct store_entry *e = kv_lookup_write(r, 1);
    if (e && store_vlen(e) + r->argl[2] > STORE_MAX_VALUE)
        return resp_error(r->out, ERR_TOOBIG);
    int room = kv_reserve(r, e ? r->argl[2] : kv_growth(r->argl[1], NULL, r->argl[2]));
    if (room < 0)
        return;
    if (room > 0)
        e = store_lookup(&r->ks->store, r->argv[1], r->argl[1], r->now);
    if (!e) {
        if (kv_write_value(r, 1, NULL, r->argv[2], r->argl[2], 0))
            resp_int(r->out, (long long)r->argl[2]);
        return;
    }
    size_t old = store_vlen(e), add = r->argl[2];
    if (old + add > STORE_MAX_VALUE)
        return resp_error(r->out, ERR_TOOBIG);
    struct store_entry *n = store_set_value(&r->ks->store, e, NULL, old + add);
    if (!n)
        return resp_error(r->out, ERR_ALLOC);
    memcpy(store_val(n) + old, r->argv[2], add);
    resp_int(r->out, (long long)(old + add));
}

void kv_do_strlen(struct kv_req *r)
{
    struct store_entry *e = kv_lookup_read(r, 1);
    resp_int(r->out, e ? (long long)store_vlen(e) : 0);
}

void kv_do_getrange(struct kv_req *r)
{
    long long start, end;
    if (kv_arg_ll(r, 2, &start) < 0 || kv_arg_ll(r, 3, &end) < 0)
        return;
    struct store_entry *e = kv_lookup_read(r, 1);
    long long len = e ? (long long)store_vlen(e) : 0;
    if (start < 0 && end < 0 && start > end)
        return resp_bulk(r->out, "", 0);
    if (start < 0)
        start += len;
    if (end < 0)
        end += len;
    if (start < 0)
        start = 0;
    if (end < 0)
        end = 0;
    if (end >= len)
        end = len - 1;
    if (!e || len == 0 || start > end)
        return resp_bulk(r->out, "", 0);
    resp_bulk(r->out, store_val(e) + start, (size_t)(end - start + 1));
}

void kv_do_setrange(struct kv_req *r)
{
    long long off;
    if (kv_arg_ll(r, 2, &off) < 0)
        return;
    if (off < 0)
        return resp_error(r->out, "ERR offset is out of range");
    struct store_entry *e = kv_lookup_write(r, 1);
    size_t add = r->argl[3];
    if (add == 0)
        return resp_int(r->out, e ? (long long)store_vlen(e) : 0);
    if ((unsigned long long)off + add > STORE_MAX_VALUE)
        return resp_error(r->out, ERR_TOOBIG);
    size_t old = e ? store_vlen(e) : 0;
    size_t need = (size_t)off + add > old ? (size_t)off + add : old;
    /* The resulting size is known before anything is allocated: a value
     * the memory limit cannot hold is refused here, not after. */
    int room = kv_reserve(r, e ? need - old : kv_growth(r->argl[1], NULL, need));
    if (room < 0)
        return;
    if (room > 0) {
        e = store_lookup(&r->ks->store, r->argv[1], r->argl[1], r->now);
        old = e ? store_vlen(e) : 0;
        need = (size_t)off + add > old ? (size_t)off + add : old;
    }
    if (!e) {
        e = kv_write_value(r, 1, NULL, NULL, need, 0);
        if (!e)
            return;
    } else if (need != old) {
        struct store_entry *n = store_set_value(&r->ks->store, e, NULL, need);
        if (!n)
            return resp_error(r->out, ERR_ALLOC);
        e = n;
    }
    unsigned char *v = store_val(e);
    if ((size_t)off > old)
        memset(v + old, 0, (size_t)off - old);
    memcpy(v + off, r->argv[3], add);
    resp_int(r->out, (long long)need);
}
