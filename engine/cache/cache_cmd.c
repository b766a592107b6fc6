#include "cache_cmd.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "cache_admin.h"
#include "evict_lua.h"
#include "log.h"
#include "util.h"

/* ---- argument helpers ---------------------------------------------------- */

#define ERR_INT "ERR value is not an integer or out of range"
#define ERR_SYNTAX "ERR syntax error"
#define ERR_OOM "OOM command not allowed when used memory > 'maxmemory'."
#define ERR_TOOBIG "ERR string exceeds maximum allowed size (proto-max-bulk-len)"
#define ERR_ALLOC "ERR out of memory"

int cache_arg_is(const struct cache_req *r, size_t i, const char *word)
{
    size_t n = strlen(word);
    return r->argl[i] == n && strncasecmp(r->argv[i], word, n) == 0;
}

/* Integers the way Redis reads them: optional '-', no '+', no leading
 * zeros, no spaces, within 64 bits. */
int cache_parse_ll(const char *s, size_t n, long long *out)
{
    if (n == 0 || n > 20)
        return -1;
    if (n == 1 && s[0] == '0') {
        *out = 0;
        return 0;
    }
    size_t i = 0;
    int neg = 0;
    if (s[0] == '-') {
        neg = 1;
        i = 1;
        if (n == 1)
            return -1;
    }
    if (s[i] < '1' || s[i] > '9')
        return -1;
    unsigned long long v = 0;
    for (; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        unsigned d = (unsigned)(s[i] - '0');
        if (v > (ULLONG_MAX - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    if (neg) {
        if (v > (unsigned long long)LLONG_MAX + 1)
            return -1;
        *out = v == (unsigned long long)LLONG_MAX + 1 ? LLONG_MIN : -(long long)v;
    } else {
        if (v > (unsigned long long)LLONG_MAX)
            return -1;
        *out = (long long)v;
    }
    return 0;
}

int cache_arg_ll(struct cache_req *r, size_t i, long long *out)
{
    if (cache_parse_ll(r->argv[i], r->argl[i], out) < 0) {
        resp_error(r->out, ERR_INT);
        return -1;
    }
    return 0;
}

static void reply_wrongargs(struct cache_req *r, const char *name)
{
    resp_errorf(r->out, "ERR wrong number of arguments for '%s' command", name);
}

/* Converts a relative or absolute time argument into an absolute ms time,
 * rejecting what Redis rejects, with its message. */
static int parse_expire(struct cache_req *r, size_t i, int unit_sec, int absolute,
                        const char *cmd, int64_t *out)
{
    long long v;
    if (cache_arg_ll(r, i, &v) < 0)
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

/* ---- lookups --------------------------------------------------------- */

static struct store_entry *lookup_read(struct cache_req *r, size_t i)
{
    struct cache *c = r->c;
    struct store_entry *e = store_lookup(&c->store, r->argv[i], r->argl[i], r->now);
    if (e) {
        c->stats.hits++;
        evict_touch(&c->evict, &c->store, e, r->now);
    } else {
        c->stats.misses++;
    }
    return e;
}

static struct store_entry *lookup_write(struct cache_req *r, size_t i)
{
    struct cache *c = r->c;
    struct store_entry *e = store_lookup(&c->store, r->argv[i], r->argl[i], r->now);
    if (e)
        evict_touch(&c->evict, &c->store, e, r->now);
    return e;
}

/* Creates or overwrites key argv[i]. expire: 0 none, -1 keep the current
 * TTL, else the absolute time. Returns the entry or NULL (OOM, replied). */
static struct store_entry *write_value(struct cache_req *r, size_t ki, struct store_entry *e,
                                       const void *val, size_t vlen, int64_t expire)
{
    struct store *s = &r->c->store;
    if (!e) {
        e = store_insert(s, r->argv[ki], r->argl[ki], val, vlen, expire > 0 ? expire : 0, r->now);
    } else {
        struct store_entry *n = store_set_value(s, e, val, vlen);
        if (n && expire != -1)
            n = store_set_expire(s, n, expire > 0 ? expire : 0);
        e = n;
    }
    if (!e)
        resp_error(r->out, ERR_ALLOC);
    return e;
}

/* ---- connection and keyspace commands -------------------------------- */

static void cmd_ping(struct cache_req *r)
{
    if (r->argc > 2)
        return reply_wrongargs(r, "ping");
    if (r->argc == 2)
        resp_bulk(r->out, r->argv[1], r->argl[1]);
    else
        buf_append(r->out, "+PONG\r\n", 7);
}

static void cmd_echo(struct cache_req *r) { resp_bulk(r->out, r->argv[1], r->argl[1]); }

static void cmd_quit(struct cache_req *r)
{
    resp_ok(r->out);
    r->sess->quit = 1;
}

static void cmd_select(struct cache_req *r)
{
    long long db;
    if (cache_arg_ll(r, 1, &db) < 0)
        return;
    if (db != 0)
        return resp_error(r->out, "ERR DB index is out of range");
    resp_ok(r->out);
}

static void cmd_time(struct cache_req *r)
{
    char a[24], b[24];
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t us = (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
    size_t na = resp_fmt_i64(a, us / 1000000), nb = resp_fmt_i64(b, us % 1000000);
    resp_array(r->out, 2);
    resp_bulk(r->out, a, na);
    resp_bulk(r->out, b, nb);
}

static void cmd_get(struct cache_req *r)
{
    struct store_entry *e = lookup_read(r, 1);
    if (!e)
        return resp_null(r->out);
    resp_bulk(r->out, store_val(e), store_vlen(e));
}

static void cmd_set(struct cache_req *r)
{
    enum { F_NX = 1, F_XX = 2, F_GET = 4, F_KEEPTTL = 8, F_EXP = 16 };
    unsigned flags = 0;
    int64_t expire = 0;
    for (size_t i = 3; i < r->argc; i++) {
        int has_next = i + 1 < r->argc;
        if (cache_arg_is(r, i, "nx") && !(flags & F_XX)) {
            flags |= F_NX;
        } else if (cache_arg_is(r, i, "xx") && !(flags & F_NX)) {
            flags |= F_XX;
        } else if (cache_arg_is(r, i, "get")) {
            flags |= F_GET;
        } else if (cache_arg_is(r, i, "keepttl") && !(flags & F_EXP)) {
            flags |= F_KEEPTTL;
        } else if (has_next && !(flags & (F_KEEPTTL | F_EXP)) &&
                   (cache_arg_is(r, i, "ex") || cache_arg_is(r, i, "px") ||
                    cache_arg_is(r, i, "exat") || cache_arg_is(r, i, "pxat"))) {
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
    struct store_entry *e = lookup_write(r, 1);
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
            store_delete(&r->c->store, e);
        if (!(flags & F_GET))
            resp_ok(r->out);
        return;
    }
    size_t mark = r->out->len;
    if (!write_value(r, 1, e, r->argv[2], r->argl[2], (flags & F_KEEPTTL) ? -1 : expire)) {
        (void)mark;
        return;
    }
    if (!(flags & F_GET))
        resp_ok(r->out);
}

static void cmd_setnx(struct cache_req *r)
{
    struct store_entry *e = lookup_write(r, 1);
    if (e)
        return resp_int(r->out, 0);
    if (write_value(r, 1, NULL, r->argv[2], r->argl[2], 0))
        resp_int(r->out, 1);
}

static void setex_common(struct cache_req *r, int sec, const char *name)
{
    int64_t expire;
    if (parse_expire(r, 2, sec, 0, name, &expire) < 0)
        return;
    struct store_entry *e = lookup_write(r, 1);
    if (write_value(r, 1, e, r->argv[3], r->argl[3], expire))
        resp_ok(r->out);
}

static void cmd_setex(struct cache_req *r) { setex_common(r, 1, "setex"); }
static void cmd_psetex(struct cache_req *r) { setex_common(r, 0, "psetex"); }

static void cmd_getset(struct cache_req *r)
{
    struct store_entry *e = lookup_write(r, 1);
    if (e)
        resp_bulk(r->out, store_val(e), store_vlen(e));
    else
        resp_null(r->out);
    write_value(r, 1, e, r->argv[2], r->argl[2], 0);
}

static void cmd_getdel(struct cache_req *r)
{
    struct store_entry *e = lookup_read(r, 1);
    if (!e)
        return resp_null(r->out);
    resp_bulk(r->out, store_val(e), store_vlen(e));
    store_delete(&r->c->store, e);
}

static void cmd_getex(struct cache_req *r)
{
    int64_t expire = 0;
    int persist = 0, has_exp = 0;
    for (size_t i = 2; i < r->argc; i++) {
        int has_next = i + 1 < r->argc;
        if (cache_arg_is(r, i, "persist") && !has_exp && !persist) {
            persist = 1;
        } else if (has_next && !has_exp && !persist &&
                   (cache_arg_is(r, i, "ex") || cache_arg_is(r, i, "px") ||
                    cache_arg_is(r, i, "exat") || cache_arg_is(r, i, "pxat"))) {
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
    struct store_entry *e = lookup_read(r, 1);
    if (!e)
        return resp_null(r->out);
    resp_bulk(r->out, store_val(e), store_vlen(e));
    if (has_exp && expire <= r->now)
        store_delete(&r->c->store, e);
    else if (has_exp || persist)
        store_set_expire(&r->c->store, e, has_exp ? expire : 0);
}

static void cmd_mget(struct cache_req *r)
{
    resp_array(r->out, r->argc - 1);
    for (size_t i = 1; i < r->argc; i++) {
        struct store_entry *e = lookup_read(r, i);
        if (e)
            resp_bulk(r->out, store_val(e), store_vlen(e));
        else
            resp_null(r->out);
    }
}

static void cmd_mset(struct cache_req *r)
{
    if (r->argc % 2 == 0)
        return reply_wrongargs(r, "mset");
    for (size_t i = 1; i < r->argc; i += 2)
        if (!write_value(r, i, lookup_write(r, i), r->argv[i + 1], r->argl[i + 1], 0))
            return;
    resp_ok(r->out);
}

static void cmd_msetnx(struct cache_req *r)
{
    if (r->argc % 2 == 0)
        return reply_wrongargs(r, "msetnx");
    for (size_t i = 1; i < r->argc; i += 2)
        if (store_lookup(&r->c->store, r->argv[i], r->argl[i], r->now))
            return resp_int(r->out, 0);
    for (size_t i = 1; i < r->argc; i += 2)
        if (!write_value(r, i, lookup_write(r, i), r->argv[i + 1], r->argl[i + 1], 0))
            return;
    resp_int(r->out, 1);
}

static void cmd_del(struct cache_req *r)
{
    long long n = 0;
    for (size_t i = 1; i < r->argc; i++) {
        struct store_entry *e = store_lookup(&r->c->store, r->argv[i], r->argl[i], r->now);
        if (e) {
            store_delete(&r->c->store, e);
            n++;
        }
    }
    resp_int(r->out, n);
}

static void cmd_exists(struct cache_req *r)
{
    long long n = 0;
    for (size_t i = 1; i < r->argc; i++)
        if (store_lookup(&r->c->store, r->argv[i], r->argl[i], r->now))
            n++;
    resp_int(r->out, n);
}

static void cmd_touch(struct cache_req *r)
{
    long long n = 0;
    for (size_t i = 1; i < r->argc; i++)
        if (lookup_write(r, i))
            n++;
    resp_int(r->out, n);
}

/* ---- counters ---------------------------------------------------------- */

static void incr_common(struct cache_req *r, long long by)
{
    struct store_entry *e = lookup_write(r, 1);
    long long cur = 0;
    if (e && cache_parse_ll((const char *)store_val(e), store_vlen(e), &cur) < 0)
        return resp_error(r->out, ERR_INT);
    if ((by < 0 && cur < 0 && by < LLONG_MIN - cur) || (by > 0 && cur > 0 && by > LLONG_MAX - cur))
        return resp_error(r->out, "ERR increment or decrement would overflow");
    cur += by;
    char tmp[24];
    size_t n = resp_fmt_i64(tmp, cur);
    if (write_value(r, 1, e, tmp, n, -1))
        resp_int(r->out, cur);
}

static void cmd_incr(struct cache_req *r) { incr_common(r, 1); }
static void cmd_decr(struct cache_req *r) { incr_common(r, -1); }

static void cmd_incrby(struct cache_req *r)
{
    long long by;
    if (cache_arg_ll(r, 2, &by) == 0)
        incr_common(r, by);
}

static void cmd_decrby(struct cache_req *r)
{
    long long by;
    if (cache_arg_ll(r, 2, &by) < 0)
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

static void cmd_incrbyfloat(struct cache_req *r)
{
    long double cur = 0, by;
    struct store_entry *e = lookup_write(r, 1);
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
    if (write_value(r, 1, e, tmp, (size_t)n, -1))
        resp_bulk(r->out, tmp, (size_t)n);
}

/* ---- string ranges -------------------------------------------------- */

static void cmd_append(struct cache_req *r)
{
    struct store_entry *e = lookup_write(r, 1);
    if (!e) {
        if (write_value(r, 1, NULL, r->argv[2], r->argl[2], 0))
            resp_int(r->out, (long long)r->argl[2]);
        return;
    }
    size_t old = store_vlen(e), add = r->argl[2];
    if (old + add > STORE_MAX_VALUE)
        return resp_error(r->out, ERR_TOOBIG);
    struct store_entry *n = store_set_value(&r->c->store, e, NULL, old + add);
    if (!n)
        return resp_error(r->out, ERR_ALLOC);
    memcpy(store_val(n) + old, r->argv[2], add);
    resp_int(r->out, (long long)(old + add));
}

static void cmd_strlen(struct cache_req *r)
{
    struct store_entry *e = lookup_read(r, 1);
    resp_int(r->out, e ? (long long)store_vlen(e) : 0);
}

static void cmd_getrange(struct cache_req *r)
{
    long long start, end;
    if (cache_arg_ll(r, 2, &start) < 0 || cache_arg_ll(r, 3, &end) < 0)
        return;
    struct store_entry *e = lookup_read(r, 1);
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

static void cmd_setrange(struct cache_req *r)
{
    long long off;
    if (cache_arg_ll(r, 2, &off) < 0)
        return;
    if (off < 0)
        return resp_error(r->out, "ERR offset is out of range");
    struct store_entry *e = lookup_write(r, 1);
    size_t add = r->argl[3];
    if (add == 0)
        return resp_int(r->out, e ? (long long)store_vlen(e) : 0);
    if ((unsigned long long)off + add > STORE_MAX_VALUE)
        return resp_error(r->out, ERR_TOOBIG);
    size_t old = e ? store_vlen(e) : 0;
    size_t need = (size_t)off + add > old ? (size_t)off + add : old;
    if (!e) {
        e = write_value(r, 1, NULL, NULL, need, 0);
        if (!e)
            return;
    } else if (need != old) {
        struct store_entry *n = store_set_value(&r->c->store, e, NULL, need);
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

/* ---- expiry --------------------------------------------------------- */

static void expire_common(struct cache_req *r, int sec, int absolute, const char *name)
{
    enum { NX = 1, XX = 2, GT = 4, LT = 8 };
    unsigned f = 0;
    for (size_t i = 3; i < r->argc; i++) {
        if (cache_arg_is(r, i, "nx"))
            f |= NX;
        else if (cache_arg_is(r, i, "xx"))
            f |= XX;
        else if (cache_arg_is(r, i, "gt"))
            f |= GT;
        else if (cache_arg_is(r, i, "lt"))
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
    if (cache_arg_ll(r, 2, &when) < 0)
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
    struct store_entry *e = lookup_write(r, 1);
    if (!e)
        return resp_int(r->out, 0);
    int64_t cur = store_expire(e);
    if (((f & NX) && cur) || ((f & XX) && !cur) || ((f & GT) && (!cur || when <= cur)) ||
        ((f & LT) && cur && when >= cur))
        return resp_int(r->out, 0);
    if (when <= r->now) {
        store_delete(&r->c->store, e);
        return resp_int(r->out, 1);
    }
    if (!store_set_expire(&r->c->store, e, when))
        return resp_error(r->out, ERR_ALLOC);
    resp_int(r->out, 1);
    return;
bad:
    resp_errorf(r->out, "ERR invalid expire time in '%s' command", name);
}

static void cmd_expire(struct cache_req *r) { expire_common(r, 1, 0, "expire"); }
static void cmd_pexpire(struct cache_req *r) { expire_common(r, 0, 0, "pexpire"); }
static void cmd_expireat(struct cache_req *r) { expire_common(r, 1, 1, "expireat"); }
static void cmd_pexpireat(struct cache_req *r) { expire_common(r, 0, 1, "pexpireat"); }

static void ttl_common(struct cache_req *r, int ms, int absolute)
{
    struct store_entry *e = store_lookup(&r->c->store, r->argv[1], r->argl[1], r->now);
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

static void cmd_ttl(struct cache_req *r) { ttl_common(r, 0, 0); }
static void cmd_pttl(struct cache_req *r) { ttl_common(r, 1, 0); }
static void cmd_expiretime(struct cache_req *r) { ttl_common(r, 0, 1); }
static void cmd_pexpiretime(struct cache_req *r) { ttl_common(r, 1, 1); }

static void cmd_persist(struct cache_req *r)
{
    struct store_entry *e = lookup_write(r, 1);
    if (!e || !store_expire(e))
        return resp_int(r->out, 0);
    if (!store_set_expire(&r->c->store, e, 0))
        return resp_error(r->out, ERR_ALLOC);
    resp_int(r->out, 1);
}

static void cmd_type(struct cache_req *r)
{
    struct store_entry *e = store_lookup(&r->c->store, r->argv[1], r->argl[1], r->now);
    resp_simple(r->out, e ? "string" : "none");
}

/* ---- iteration ------------------------------------------------------ */

/* Glob matching with *, ?, [set], [^set], [a-z] and backslash escapes.
 * Backtracks to the last '*' only, so the cost is O(len(p) * len(s)) at
 * worst, whatever the pattern. */
static int class_match(const char **pp, const char *pend, char ch)
{
    const char *p = *pp + 1;
    int neg = 0, hit = 0;
    if (p < pend && *p == '^') {
        neg = 1;
        p++;
    }
    while (p < pend && *p != ']') {
        if (*p == '\\' && p + 1 < pend) {
            p++;
            if (*p == ch)
                hit = 1;
        } else if (p + 2 < pend && p[1] == '-' && p[2] != ']') {
            char lo = p[0], hi = p[2];
            if (lo > hi) {
                char t = lo;
                lo = hi;
                hi = t;
            }
            if (ch >= lo && ch <= hi)
                hit = 1;
            p += 2;
        } else if (*p == ch) {
            hit = 1;
        }
        p++;
    }
    *pp = p < pend ? p + 1 : pend; /* an unclosed class runs to the end */
    return neg ? !hit : hit;
}

int cache_glob_match(const char *pat, size_t plen, const char *s, size_t slen)
{
    const char *p = pat, *pend = pat + plen, *str = s, *send = s + slen;
    const char *star_p = NULL, *star_s = NULL;
    while (str < send) {
        if (p < pend && *p == '*') {
            while (p < pend && *p == '*')
                p++;
            if (p == pend)
                return 1;
            star_p = p;
            star_s = str;
            continue;
        }
        if (p < pend) {
            const char *np = p;
            int m;
            if (*p == '?') {
                m = 1;
                np = p + 1;
            } else if (*p == '[') {
                m = class_match(&np, pend, *str);
            } else if (*p == '\\' && p + 1 < pend) {
                m = p[1] == *str;
                np = p + 2;
            } else {
                m = *p == *str;
                np = p + 1;
            }
            if (m) {
                p = np;
                str++;
                continue;
            }
        }
        if (!star_p)
            return 0;
        p = star_p;
        str = ++star_s;
    }
    while (p < pend && *p == '*')
        p++;
    return p == pend;
}

struct keys_ctx {
    struct cache_req *r;
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
    if (!k->all && !cache_glob_match(k->pat, k->plen, (const char *)store_key(e), store_klen(e)))
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

static void cmd_keys(struct cache_req *r)
{
    struct keys_ctx k = {.r = r, .pat = r->argv[1], .plen = r->argl[1]};
    k.all = k.plen == 1 && k.pat[0] == '*';
    store_foreach(&r->c->store, keys_visit, &k);
    if (k.oom) {
        free(k.found);
        return resp_error(r->out, ERR_ALLOC);
    }
    resp_array(r->out, k.n);
    for (size_t i = 0; i < k.n; i++)
        resp_bulk(r->out, store_key(k.found[i]), store_klen(k.found[i]));
    free(k.found);
}

static void cmd_scan(struct cache_req *r)
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
        if (cache_arg_is(r, i, "count")) {
            if (cache_arg_ll(r, i + 1, &count) < 0)
                return;
            if (count < 1)
                return resp_error(r->out, ERR_SYNTAX);
        } else if (cache_arg_is(r, i, "match")) {
            pat = r->argv[i + 1];
            plen = r->argl[i + 1];
        } else if (cache_arg_is(r, i, "type")) {
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
        cursor = store_scan(&r->c->store, cursor, keys_visit, &k);
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

static void cmd_randomkey(struct cache_req *r)
{
    struct store *s = &r->c->store;
    /* Expired keys met on the way are deleted; bounded so that a store
     * full of expired keys cannot stall the loop. */
    for (int tries = 0; tries < 100; tries++) {
        struct store_entry *e = store_random(s);
        if (!e)
            break;
        if (!store_is_expired(e, r->now))
            return resp_bulk(r->out, store_key(e), store_klen(e));
        store_delete(s, e);
        s->expired++;
    }
    resp_null(r->out);
}

static void rename_common(struct cache_req *r, int nx)
{
    struct store *s = &r->c->store;
    struct store_entry *src = lookup_write(r, 1);
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

static void cmd_rename(struct cache_req *r) { rename_common(r, 0); }
static void cmd_renamenx(struct cache_req *r) { rename_common(r, 1); }

static void cmd_dbsize(struct cache_req *r) { resp_int(r->out, (long long)r->c->store.count); }

static void cmd_flushdb(struct cache_req *r)
{
    if (r->argc > 2 || (r->argc == 2 && !cache_arg_is(r, 1, "async") && !cache_arg_is(r, 1, "sync")))
        return resp_error(r->out, ERR_SYNTAX);
    store_clear(&r->c->store);
    resp_ok(r->out);
}

/* ---- the table ------------------------------------------------------- */

enum {
    CMD_WRITE = 1 << 0,    /* changes the keyspace: eviction check after it */
    CMD_DENYOOM = 1 << 1,  /* may grow memory: refused when over the limit */
    CMD_NOAUTH = 1 << 2,   /* allowed before AUTH */
    CMD_ADMIN = 1 << 3,
    CMD_READONLY = 1 << 4,
};

static const struct cache_command commands[] = {
    {"ping", cmd_ping, -1, 0},
    {"echo", cmd_echo, 2, 0},
    {"quit", cmd_quit, -1, CMD_NOAUTH},
    {"select", cmd_select, 2, 0},
    {"time", cmd_time, 1, 0},
    {"hello", cache_cmd_hello, -1, CMD_NOAUTH},
    {"auth", cache_cmd_auth, -2, CMD_NOAUTH},
    {"command", cache_cmd_command, -1, 0},
    {"client", cache_cmd_client, -2, 0},
    {"config", cache_cmd_config, -2, CMD_ADMIN},
    {"info", cache_cmd_info, -1, 0},
    {"get", cmd_get, 2, CMD_READONLY},
    {"set", cmd_set, -3, CMD_WRITE | CMD_DENYOOM},
    {"setnx", cmd_setnx, 3, CMD_WRITE | CMD_DENYOOM},
    {"setex", cmd_setex, 4, CMD_WRITE | CMD_DENYOOM},
    {"psetex", cmd_psetex, 4, CMD_WRITE | CMD_DENYOOM},
    {"getset", cmd_getset, 3, CMD_WRITE | CMD_DENYOOM},
    {"getdel", cmd_getdel, 2, CMD_WRITE},
    {"getex", cmd_getex, -2, CMD_WRITE},
    {"mget", cmd_mget, -2, CMD_READONLY},
    {"mset", cmd_mset, -3, CMD_WRITE | CMD_DENYOOM},
    {"msetnx", cmd_msetnx, -3, CMD_WRITE | CMD_DENYOOM},
    {"del", cmd_del, -2, CMD_WRITE},
    {"unlink", cmd_del, -2, CMD_WRITE},
    {"exists", cmd_exists, -2, CMD_READONLY},
    {"touch", cmd_touch, -2, CMD_READONLY},
    {"incr", cmd_incr, 2, CMD_WRITE | CMD_DENYOOM},
    {"decr", cmd_decr, 2, CMD_WRITE | CMD_DENYOOM},
    {"incrby", cmd_incrby, 3, CMD_WRITE | CMD_DENYOOM},
    {"decrby", cmd_decrby, 3, CMD_WRITE | CMD_DENYOOM},
    {"incrbyfloat", cmd_incrbyfloat, 3, CMD_WRITE | CMD_DENYOOM},
    {"append", cmd_append, 3, CMD_WRITE | CMD_DENYOOM},
    {"strlen", cmd_strlen, 2, CMD_READONLY},
    {"getrange", cmd_getrange, 4, CMD_READONLY},
    {"substr", cmd_getrange, 4, CMD_READONLY},
    {"setrange", cmd_setrange, 4, CMD_WRITE | CMD_DENYOOM},
    {"expire", cmd_expire, -3, CMD_WRITE},
    {"pexpire", cmd_pexpire, -3, CMD_WRITE},
    {"expireat", cmd_expireat, -3, CMD_WRITE},
    {"pexpireat", cmd_pexpireat, -3, CMD_WRITE},
    {"ttl", cmd_ttl, 2, CMD_READONLY},
    {"pttl", cmd_pttl, 2, CMD_READONLY},
    {"expiretime", cmd_expiretime, 2, CMD_READONLY},
    {"pexpiretime", cmd_pexpiretime, 2, CMD_READONLY},
    {"persist", cmd_persist, 2, CMD_WRITE},
    {"type", cmd_type, 2, CMD_READONLY},
    {"keys", cmd_keys, 2, CMD_READONLY},
    {"scan", cmd_scan, -2, CMD_READONLY},
    {"randomkey", cmd_randomkey, 1, CMD_READONLY},
    {"rename", cmd_rename, 3, CMD_WRITE},
    {"renamenx", cmd_renamenx, 3, CMD_WRITE},
    {"dbsize", cmd_dbsize, 1, CMD_READONLY},
    {"flushdb", cmd_flushdb, -1, CMD_WRITE},
    {"flushall", cmd_flushdb, -1, CMD_WRITE},
};

#define NCOMMANDS (sizeof commands / sizeof commands[0])
#define CMD_SLOTS 256

/* Open-addressed index by name, built once; it is constant afterwards. */
static const struct cache_command *cmd_index[CMD_SLOTS];

static unsigned name_hash(const char *s, size_t n)
{
    unsigned h = 2166136261u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 16777619u;
    return h;
}

static void cmd_index_build(void)
{
    if (cmd_index[name_hash("get", 3) % CMD_SLOTS])
        return;
    for (size_t i = 0; i < NCOMMANDS; i++) {
        unsigned h = name_hash(commands[i].name, strlen(commands[i].name)) % CMD_SLOTS;
        while (cmd_index[h])
            h = (h + 1) % CMD_SLOTS;
        cmd_index[h] = &commands[i];
    }
}

const struct cache_command *cache_command_find(const char *name, size_t n)
{
    char low[32];
    if (n == 0 || n >= sizeof low)
        return NULL;
    for (size_t i = 0; i < n; i++)
        low[i] = (char)tolower((unsigned char)name[i]);
    for (unsigned h = name_hash(low, n) % CMD_SLOTS;; h = (h + 1) % CMD_SLOTS) {
        const struct cache_command *c = cmd_index[h];
        if (!c)
            return NULL;
        if (strlen(c->name) == n && memcmp(c->name, low, n) == 0)
            return c;
    }
}

const struct cache_command *cache_commands(size_t *n)
{
    *n = NCOMMANDS;
    return commands;
}

int cache_command_is_write(const struct cache_command *c) { return (c->flags & CMD_WRITE) != 0; }

/* Appends up to n bytes of an argument to an error line: binary-safe, but
 * CR and LF become spaces so the reply stays one line. */
static void err_bytes(struct buf *b, const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char ch = p[i] == '\r' || p[i] == '\n' ? ' ' : p[i];
        buf_append(b, &ch, 1);
    }
}

static void reply_unknown(struct cache_req *r)
{
    struct buf *b = r->out;
    buf_append_str(b, "-ERR unknown command '");
    err_bytes(b, r->argv[0], r->argl[0] < 128 ? r->argl[0] : 128);
    buf_append_str(b, "', with args beginning with: ");
    size_t shown = 0;
    for (size_t i = 1; i < r->argc && shown < 128; i++) {
        size_t n = r->argl[i] < 128 - shown ? r->argl[i] : 128 - shown;
        buf_append(b, "'", 1);
        err_bytes(b, r->argv[i], n);
        buf_append(b, "' ", 2);
        shown += n + 3;
    }
    buf_append(b, "\r\n", 2);
}

void cache_exec(struct cache_req *r)
{
    struct cache *c = r->c;
    const struct cache_command *cmd = cache_command_find(r->argv[0], r->argl[0]);
    c->stats.commands++;
    if (!cmd)
        return reply_unknown(r);
    if (c->has_password && !r->sess->authed && !(cmd->flags & CMD_NOAUTH))
        return resp_error(r->out, "NOAUTH Authentication required.");
    if ((cmd->arity > 0 && r->argc != (size_t)cmd->arity) ||
        (cmd->arity < 0 && r->argc < (size_t)-cmd->arity))
        return reply_wrongargs(r, cmd->name);
    /* Make room before a command that may grow memory; refuse it when
     * nothing more can be evicted. */
    if (c->max_memory && (cmd->flags & CMD_DENYOOM) && c->store.mem.used > c->max_memory &&
        cache_enforce_memory(c, r->now) < 0) {
        c->stats.oom_rejections++;
        return resp_error(r->out, ERR_OOM);
    }
    cmd->fn(r);
    /* And keep the limit after it, so used_memory stays under max_memory
     * whenever a key can be evicted. */
    if (c->max_memory && (cmd->flags & CMD_WRITE) && c->store.mem.used > c->max_memory)
        cache_enforce_memory(c, r->now);
}

int cache_enforce_memory(struct cache *c, int64_t now_ms)
{
    if (!c->max_memory)
        return 0;
    return evict_until(&c->evict, &c->store, c->max_memory, now_ms);
}

/* ---- lifecycle -------------------------------------------------------- */

void cache_init(struct cache *c, uint64_t seed, int64_t now_ms)
{
    memset(c, 0, sizeof *c);
    cmd_index_build();
    store_init(&c->store, seed, now_ms);
    evict_init(&c->evict);
    expire_cycle_init(&c->expire);
    struct resp_limits lim = RESP_DEFAULT_LIMITS;
    c->limits = lim;
    c->qbuf_max = 1024u * 1024 * 1024;
    c->start_ms = now_ms;
    c->stats.ops_last_ms = now_ms;
    c->next_client_id = 1;
}

void cache_free(struct cache *c)
{
    evict_free(&c->evict);
    store_free(&c->store);
}

void cache_cron(struct cache *c, int64_t now_ms)
{
    expire_run(&c->expire, &c->store, now_ms);
    /* Finish a pending rehash in small steps between requests. */
    for (int i = 0; i < 100 && store_rehash_step(&c->store, 100); i++)
        ;
    store_maybe_resize(&c->store);
    if (c->max_memory && c->store.mem.used > c->max_memory)
        cache_enforce_memory(c, now_ms);
    struct cache_stats *st = &c->stats;
    int64_t dt = now_ms - st->ops_last_ms;
    if (dt >= 100) {
        st->ops_ring[st->ops_idx] = (double)(st->commands - st->ops_last_cmds) * 1000.0 / (double)dt;
        st->ops_idx = (st->ops_idx + 1) % CACHE_OPS_SAMPLES;
        st->ops_last_ms = now_ms;
        st->ops_last_cmds = st->commands;
    }
}

const char *cache_policy_name(const struct cache *c)
{
    if (c->evict.policy == EVICT_LUA)
        return c->lua_path;
    return evict_policy_name(c->evict.policy);
}

int cache_set_policy(struct cache *c, const char *name, int64_t now_ms, char *err, size_t errlen)
{
    enum evict_policy p;
    if (evict_policy_parse(name, &p) == 0) {
        evict_set_policy(&c->evict, &c->store, p, now_ms);
        c->lua_path[0] = 0;
        return 0;
    }
    size_t n = strlen(name);
    if (!(strchr(name, '/') || (n > 4 && strcmp(name + n - 4, ".lua") == 0))) {
        snprintf(err, errlen, "unknown eviction policy '%s'", name);
        return -1;
    }
    char path[1024];
    if (cache_resolve_path(c, name, path, sizeof path) < 0) {
        snprintf(err, errlen, "eviction policy %s: no such file", name);
        return -1;
    }
    struct evict_lua *el = evict_lua_new(path, c->evict.lua, err, errlen);
    if (!el)
        return -1;
    evict_set_lua(&c->evict, &c->store, el, now_ms);
    snprintf(c->lua_path, sizeof c->lua_path, "%s", path);
    log_info("eviction policy %s loaded", path);
    return 0;
}
