/* keyspace: lifecycle, lookups and argument helpers (see keyspace.h). */
#include "keyspace.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
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
    ks->max_clients = KV_DEFAULT_MAX_CLIENTS;
    ks->client_mem_limit = KV_UNLIMITED_CLIENT_MEMORY;
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

int kv_reserve(struct kv_req *r, size_t grow)
{
    struct keyspace *ks = r->ks;
    uint64_t lim = ks->mem_limit;
    if (!lim || ks->store.mem.used + grow <= lim)
        return 0;
    /* Reclaim down to what leaves room for the write; a write bigger than
     * the whole limit can never fit. */
    if (grow < lim && ks->hooks->reclaim) {
        ks->mem_limit = lim - grow;
        int rc = keyspace_enforce_memory(ks, r->now);
        ks->mem_limit = lim;
        if (rc == 0)
            return 1;
    }
    ks->stats.oom_rejections++;
    resp_error(r->out, KV_ERR_OOM);
    return -1;
}

uint64_t kv_client_memory(uint64_t max_memory)
{
    if (!max_memory)
        return KV_UNLIMITED_CLIENT_MEMORY;
    return max_memory > KV_MIN_CLIENT_MEMORY ? max_memory : KV_MIN_CLIENT_MEMORY;
}

/* Reads the first line of a password file, without its line end. */
static int read_secret_file(const char *file, char *out, size_t outlen, char *err, size_t errlen)
{
    FILE *f = fopen(file, "r");
    if (!f) {
        snprintf(err, errlen, "password_file '%s' cannot be read: %s", file, strerror(errno));
        return -1;
    }
    char line[1024];
    size_t n = fread(line, 1, sizeof line - 1, f);
    int failed = ferror(f);
    fclose(f);
    if (failed) {
        snprintf(err, errlen, "password_file '%s' cannot be read", file);
        return -1;
    }
    line[n] = 0;
    n = strcspn(line, "\r\n");
    line[n] = 0;
    if (n == 0) {
        snprintf(err, errlen, "password_file '%s' is empty", file);
        return -1;
    }
    if (n >= outlen) {
        snprintf(err, errlen, "password_file '%s': the password is longer than %zu bytes", file,
                 outlen - 1);
        return -1;
    }
    memcpy(out, line, n + 1);
    explicit_bzero(line, sizeof line);
    return 0;
}

int kv_password_resolve(const char *password, const char *env, const char *file, char *out,
                        size_t outlen, char *err, size_t errlen)
{
    int sources = (password[0] != 0) + (env[0] != 0) + (file[0] != 0);
    out[0] = 0;
    if (sources > 1) {
        snprintf(err, errlen, "set only one of password, password_env and password_file");
        return -1;
    }
    if (file[0])
        return read_secret_file(file, out, outlen, err, errlen);
    const char *v = password;
    if (env[0]) {
        v = getenv(env);
        if (!v) {
            snprintf(err, errlen, "password_env: environment variable %s is not set", env);
            return -1;
        }
        if (!v[0]) {
            snprintf(err, errlen, "password_env: environment variable %s is empty", env);
            return -1;
        }
    }
    if (strlen(v) >= outlen) {
        snprintf(err, errlen, "the password is longer than %zu bytes", outlen - 1);
        return -1;
    }
    snprintf(out, outlen, "%s", v);
    return 0;
}

int kv_access_check(struct kv_access *a, const char *what, const char *node, const char *password,
                    const char *env, const char *file, uint64_t max_memory, char *err,
                    size_t errlen)
{
    char why[1536];
    if (kv_password_resolve(password, env, file, a->password, sizeof a->password, why,
                            sizeof why) < 0) {
        snprintf(err, errlen, "%s %s: %s", what, node, why);
        return -1;
    }
    if (a->max_clients < 1 || a->max_clients > 1000000) {
        snprintf(err, errlen, "%s %s: max_clients must be in 1..1000000, not %lld", what, node,
                 (long long)a->max_clients);
        return -1;
    }
    if (a->max_client_memory == -1) {
        a->max_client_memory = (int64_t)kv_client_memory(max_memory);
    } else if (a->max_client_memory < 0) {
        snprintf(err, errlen, "%s %s: max_client_memory must not be negative", what, node);
        return -1;
    }
    return 0;
}

void kv_access_apply(struct keyspace *ks, const struct kv_access *a)
{
    ks->has_password = a->password[0] != 0;
    snprintf(ks->password, sizeof ks->password, "%s", a->password);
    ks->debug_enabled = a->debug;
    ks->max_clients = (size_t)a->max_clients;
    ks->client_mem_limit = (uint64_t)a->max_client_memory;
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
