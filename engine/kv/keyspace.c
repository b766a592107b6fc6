/* keyspace: lifecycle, lookups and argument helpers (see keyspace.h). */
#include "keyspace.h"

#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

static const struct kv_hooks no_hooks;

void keyspace_init(struct keyspace *ks, uint64_t seed, int64_t now_ms)
{
    memset(ks, 0, sizeof *ks);
    store_init(&ks->store, seed, now_ms);
    expire_cycle_init(&ks->expire);
    ks->hooks = &no_hooks;
    struct resp_limits lim = RESP_DEFAULT_LIMITS;
    ks->limits = lim;
    ks->qbuf_max = 1024u * 1024 * 1024;
    ks->start_ms = now_ms;
    ks->stats.ops_last_ms = now_ms;
    ks->next_client_id = 1;
}

void keyspace_free(struct keyspace *ks) { store_free(&ks->store); }

void keyspace_set_hooks(struct keyspace *ks, const struct kv_hooks *hooks, void *shell)
{
    ks->hooks = hooks ? hooks : &no_hooks;
    ks->shell = shell;
}

int keyspace_enforce_memory(struct keyspace *ks, int64_t now_ms)
{
    if (!ks->mem_limit || ks->store.mem.used <= ks->mem_limit)
        return 0;
    if (!ks->hooks->reclaim)
        return -1;
    return ks->hooks->reclaim(ks, now_ms);
}

void keyspace_cron(struct keyspace *ks, int64_t now_ms)
{
    expire_run(&ks->expire, &ks->store, now_ms);
    /* Finish a pending rehash in small steps between requests. */
    for (int i = 0; i < 100 && store_rehash_step(&ks->store, 100); i++)
        ;
    store_maybe_resize(&ks->store);
    keyspace_enforce_memory(ks, now_ms);
    struct kv_stats *st = &ks->stats;
    int64_t dt = now_ms - st->ops_last_ms;
    if (dt >= 100) {
        st->ops_ring[st->ops_idx] = (double)(st->commands - st->ops_last_cmds) * 1000.0 / (double)dt;
        st->ops_idx = (st->ops_idx + 1) % KV_OPS_SAMPLES;
        st->ops_last_ms = now_ms;
        st->ops_last_cmds = st->commands;
    }
}

/* ---- lookups ----------------------------------------------------------- */

struct store_entry *kv_lookup_read(struct kv_req *r, size_t i)
{
    struct keyspace *ks = r->ks;
    struct store_entry *e = store_lookup(&ks->store, r->argv[i], r->argl[i], r->now);
    if (e) {
        ks->stats.hits++;
        if (ks->hooks->touch)
            ks->hooks->touch(ks, e, r->now);
    } else {
        ks->stats.misses++;
    }
    return e;
}

struct store_entry *kv_lookup_write(struct kv_req *r, size_t i)
{
    struct keyspace *ks = r->ks;
    struct store_entry *e = store_lookup(&ks->store, r->argv[i], r->argl[i], r->now);
    if (e && ks->hooks->touch)
        ks->hooks->touch(ks, e, r->now);
    return e;
}

struct store_entry *kv_write_value(struct kv_req *r, size_t ki, struct store_entry *e,
                                   const void *val, size_t vlen, int64_t expire)
{
    struct store *s = &r->ks->store;
    if (!e) {
        e = store_insert(s, r->argv[ki], r->argl[ki], val, vlen, expire > 0 ? expire : 0, r->now);
    } else {
        struct store_entry *n = store_set_value(s, e, val, vlen);
        if (n && expire != -1)
            n = store_set_expire(s, n, expire > 0 ? expire : 0);
        e = n;
    }
    if (!e)
        resp_error(r->out, "ERR out of memory");
    return e;
}

/* ---- arguments ----------------------------------------------------------- */

int kv_arg_is(const struct kv_req *r, size_t i, const char *word)
{
    size_t n = strlen(word);
    return r->argl[i] == n && strncasecmp(r->argv[i], word, n) == 0;
}

int kv_parse_ll(const char *s, size_t n, long long *out)
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

int kv_arg_ll(struct kv_req *r, size_t i, long long *out)
{
    if (kv_parse_ll(r->argv[i], r->argl[i], out) < 0) {
        resp_error(r->out, "ERR value is not an integer or out of range");
        return -1;
    }
    return 0;
}

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

int kv_glob_match(const char *pat, size_t plen, const char *s, size_t slen)
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

/* Compares secrets without an early exit, so timing tells nothing. */
static int secret_eq(const char *a, size_t an, const char *b, size_t bn)
{
    unsigned diff = an != bn;
    for (size_t i = 0; i < an; i++)
        diff |= (unsigned char)a[i] ^ (unsigned char)(i < bn ? b[i] : 0);
    return diff == 0;
}

int kv_auth_check(const struct keyspace *ks, const char *user, size_t ul, const char *pass,
                  size_t pl)
{
    if (ul != 7 || memcmp(user, "default", 7) != 0)
        return 0;
    if (!ks->has_password)
        return 1; /* the default user has no password: any is accepted */
    return secret_eq(pass, pl, ks->password, strlen(ks->password));
}

void kv_human_bytes(char *out, size_t n, double v)
{
    const char *u = "BKMGTP";
    int i = 0;
    while (v >= 1024 && i < 5) {
        v /= 1024;
        i++;
    }
    if (i == 0)
        snprintf(out, n, "%.0fB", v);
    else
        snprintf(out, n, "%.2f%c", v, u[i]);
}

int kv_info_wants(const struct kv_info_sel *sel, const char *section)
{
    if (sel->n == 0)
        return 1;
    for (int i = 0; i < sel->n; i++)
        if (strcasecmp(sel->names[i], section) == 0 || strcasecmp(sel->names[i], "all") == 0 ||
            strcasecmp(sel->names[i], "everything") == 0 ||
            strcasecmp(sel->names[i], "default") == 0)
            return 1;
    return 0;
}
