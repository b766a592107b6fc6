#include "cache_admin.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "evict_lua.h"
#include "luahost.h"

#define COMPAT_VERSION "7.0.0"

/* ---- HELLO, AUTH, CLIENT ---------------------------------------------- */

/* Compares secrets without an early exit, so timing tells nothing. */
static int secret_eq(const char *a, size_t an, const char *b, size_t bn)
{
    unsigned diff = an != bn;
    for (size_t i = 0; i < an; i++)
        diff |= (unsigned char)a[i] ^ (unsigned char)(i < bn ? b[i] : 0);
    return diff == 0;
}

/* 1 when user/pass are accepted for the default user. */
static int auth_check(struct cache *c, const char *user, size_t ul, const char *pass, size_t pl)
{
    if (ul != 7 || memcmp(user, "default", 7) != 0)
        return 0;
    if (!c->has_password)
        return 1; /* the default user has no password: any is accepted */
    return secret_eq(pass, pl, c->password, strlen(c->password));
}

void cache_cmd_auth(struct cache_req *r)
{
    if (r->argc > 3)
        return resp_error(r->out, "ERR syntax error");
    if (r->argc == 2 && !r->c->has_password)
        return resp_error(r->out, "ERR AUTH <password> called without any password configured "
                                  "for the default user. Are you sure your configuration is "
                                  "correct?");
    const char *user = r->argc == 3 ? r->argv[1] : "default";
    size_t ul = r->argc == 3 ? r->argl[1] : 7;
    if (!auth_check(r->c, user, ul, r->argv[r->argc - 1], r->argl[r->argc - 1]))
        return resp_error(r->out, "WRONGPASS invalid username-password pair or user is disabled.");
    r->sess->authed = 1;
    resp_ok(r->out);
}

static int valid_client_name(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] < '!' || s[i] > '~')
            return 0;
    return 1;
}

static void set_name(struct cache_session *sess, const char *s, size_t n)
{
    if (n >= sizeof sess->name)
        n = sizeof sess->name - 1;
    memcpy(sess->name, s, n);
    sess->name[n] = 0;
}

void cache_cmd_hello(struct cache_req *r)
{
    struct cache *c = r->c;
    if (r->argc >= 2) {
        long long ver;
        if (cache_parse_ll(r->argv[1], r->argl[1], &ver) < 0)
            return resp_error(r->out, "ERR Protocol version is not an integer or out of range");
        if (ver != 2)
            return resp_error(r->out, "NOPROTO unsupported protocol version");
    }
    size_t user = 0, name = 0;
    for (size_t j = 2; j < r->argc; j++) {
        size_t more = r->argc - 1 - j;
        if (cache_arg_is(r, j, "auth") && more >= 2) {
            user = j + 1;
            j += 2;
        } else if (cache_arg_is(r, j, "setname") && more >= 1) {
            name = j + 1;
            j++;
        } else {
            return resp_errorf(r->out, "ERR Syntax error in HELLO option '%.*s'", (int)r->argl[j],
                               r->argv[j]);
        }
    }
    if (user) {
        if (!auth_check(c, r->argv[user], r->argl[user], r->argv[user + 1], r->argl[user + 1]))
            return resp_error(r->out,
                              "WRONGPASS invalid username-password pair or user is disabled.");
        r->sess->authed = 1;
    }
    if (c->has_password && !r->sess->authed)
        return resp_error(r->out, "NOAUTH HELLO must be called with the client already "
                                  "authenticated, otherwise the HELLO <proto> AUTH <user> <pass> "
                                  "option can be used to authenticate the client and select the "
                                  "RESP protocol version at the same time");
    if (name) {
        if (!valid_client_name(r->argv[name], r->argl[name]))
            return resp_error(r->out, "ERR Client names cannot contain spaces, newlines or "
                                      "special characters.");
        set_name(r->sess, r->argv[name], r->argl[name]);
    }
    resp_array(r->out, 14);
    resp_bulk_str(r->out, "server");
    resp_bulk_str(r->out, "redis");
    resp_bulk_str(r->out, "version");
    resp_bulk_str(r->out, COMPAT_VERSION);
    resp_bulk_str(r->out, "proto");
    resp_int(r->out, 2);
    resp_bulk_str(r->out, "id");
    resp_int(r->out, (long long)r->sess->id);
    resp_bulk_str(r->out, "mode");
    resp_bulk_str(r->out, "standalone");
    resp_bulk_str(r->out, "role");
    resp_bulk_str(r->out, "master");
    resp_bulk_str(r->out, "modules");
    resp_array(r->out, 0);
}

static void sub_wrongargs(struct cache_req *r, const char *cmd)
{
    char sub[32];
    size_t n = r->argl[1] < sizeof sub - 1 ? r->argl[1] : sizeof sub - 1;
    for (size_t i = 0; i < n; i++)
        sub[i] = (char)tolower((unsigned char)r->argv[1][i]);
    sub[n] = 0;
    resp_errorf(r->out, "ERR wrong number of arguments for '%s|%s' command", cmd, sub);
}

static void unknown_sub(struct cache_req *r, const char *help)
{
    resp_errorf(r->out, "ERR unknown subcommand '%.*s'. Try %s HELP.", (int)r->argl[1], r->argv[1],
                help);
}

void cache_cmd_client(struct cache_req *r)
{
    if (cache_arg_is(r, 1, "id")) {
        if (r->argc != 2)
            return sub_wrongargs(r, "client");
        return resp_int(r->out, (long long)r->sess->id);
    }
    if (cache_arg_is(r, 1, "getname")) {
        if (r->argc != 2)
            return sub_wrongargs(r, "client");
        if (!r->sess->name[0])
            return resp_null(r->out);
        return resp_bulk_str(r->out, r->sess->name);
    }
    if (cache_arg_is(r, 1, "setname")) {
        if (r->argc != 3)
            return sub_wrongargs(r, "client");
        if (!valid_client_name(r->argv[2], r->argl[2]))
            return resp_error(r->out, "ERR Client names cannot contain spaces, newlines or "
                                      "special characters.");
        set_name(r->sess, r->argv[2], r->argl[2]);
        return resp_ok(r->out);
    }
    if (cache_arg_is(r, 1, "setinfo")) {
        if (r->argc != 4)
            return sub_wrongargs(r, "client");
        return resp_ok(r->out);
    }
    unknown_sub(r, "CLIENT");
}

/* ---- COMMAND ------------------------------------------------------------ */

static void key_positions(const char *name, long long *first, long long *last, long long *step)
{
    static const char *const keyless[] = {"ping", "echo", "quit", "select", "time", "hello",
                                          "auth", "command", "client", "config", "info", "keys",
                                          "scan", "randomkey", "dbsize", "flushdb", "flushall", NULL};
    static const char *const multi[] = {"mget", "del", "unlink", "exists", "touch", NULL};
    *first = *last = *step = 1;
    for (int i = 0; keyless[i]; i++)
        if (strcmp(name, keyless[i]) == 0) {
            *first = *last = *step = 0;
            return;
        }
    for (int i = 0; multi[i]; i++)
        if (strcmp(name, multi[i]) == 0) {
            *last = -1;
            return;
        }
    if (strcmp(name, "mset") == 0 || strcmp(name, "msetnx") == 0) {
        *last = -1;
        *step = 2;
    } else if (strcmp(name, "rename") == 0 || strcmp(name, "renamenx") == 0) {
        *last = 2;
    }
}

static void command_entry(struct buf *out, const struct cache_command *cmd)
{
    long long first, last, step;
    key_positions(cmd->name, &first, &last, &step);
    resp_array(out, 10);
    resp_bulk_str(out, cmd->name);
    resp_int(out, cmd->arity);
    /* Flags, as Redis names them; the bit values are cache_cmd.c's. */
    int write = cache_command_is_write(cmd);
    resp_array(out, 1);
    resp_simple(out, write ? "write" : first ? "readonly" : "fast");
    resp_int(out, first);
    resp_int(out, last);
    resp_int(out, step);
    resp_array(out, 0); /* ACL categories */
    resp_array(out, 0); /* tips */
    resp_array(out, 0); /* key specs */
    resp_array(out, 0); /* subcommands */
}

void cache_cmd_command(struct cache_req *r)
{
    size_t n;
    const struct cache_command *all = cache_commands(&n);
    if (r->argc == 1) {
        resp_array(r->out, n);
        for (size_t i = 0; i < n; i++)
            command_entry(r->out, &all[i]);
        return;
    }
    if (cache_arg_is(r, 1, "count")) {
        if (r->argc != 2)
            return sub_wrongargs(r, "command");
        return resp_int(r->out, (long long)n);
    }
    if (cache_arg_is(r, 1, "list")) {
        resp_array(r->out, n);
        for (size_t i = 0; i < n; i++)
            resp_bulk_str(r->out, all[i].name);
        return;
    }
    if (cache_arg_is(r, 1, "info")) {
        if (r->argc == 2) {
            resp_array(r->out, n);
            for (size_t i = 0; i < n; i++)
                command_entry(r->out, &all[i]);
            return;
        }
        resp_array(r->out, r->argc - 2);
        for (size_t i = 2; i < r->argc; i++) {
            const struct cache_command *cmd = cache_command_find(r->argv[i], r->argl[i]);
            if (cmd)
                command_entry(r->out, cmd);
            else
                resp_null_array(r->out);
        }
        return;
    }
    if (cache_arg_is(r, 1, "docs"))
        return resp_array(r->out, 0);
    unknown_sub(r, "COMMAND");
}

/* ---- CONFIG --------------------------------------------------------------- */

int cache_resolve_path(const struct cache *c, const char *name, char *out, size_t outlen)
{
    return luahost_resolve_path(c->topology[0] ? c->topology : NULL, name, out, outlen);
}

/* Memory values as Redis reads them: k/m/g are powers of 1000, kb/mb/gb of
 * 1024, case-insensitive. */
static int parse_memory(const char *s, size_t n, unsigned long long *out)
{
    size_t i = 0;
    while (i < n && isdigit((unsigned char)s[i]))
        i++;
    if (i == 0 || i > 19)
        return -1;
    unsigned long long v = strtoull(s, NULL, 10), mul = 1;
    char unit[4] = {0};
    size_t ul = n - i;
    if (ul > 2)
        return -1;
    for (size_t k = 0; k < ul; k++)
        unit[k] = (char)tolower((unsigned char)s[i + k]);
    if (ul == 0 || strcmp(unit, "b") == 0)
        mul = 1;
    else if (strcmp(unit, "k") == 0)
        mul = 1000;
    else if (strcmp(unit, "kb") == 0)
        mul = 1024;
    else if (strcmp(unit, "m") == 0)
        mul = 1000000;
    else if (strcmp(unit, "mb") == 0)
        mul = 1024 * 1024;
    else if (strcmp(unit, "g") == 0)
        mul = 1000000000;
    else if (strcmp(unit, "gb") == 0)
        mul = 1024ull * 1024 * 1024;
    else
        return -1;
    if (v > ~0ull / mul)
        return -1;
    *out = v * mul;
    return 0;
}

enum { P_MAXMEMORY, P_POLICY, P_SAMPLES, P_FALLBACK, P_SAVE, P_APPENDONLY, P_DATABASES,
       P_BULKLEN, P_QBUF, P_TIMEOUT, P_NPARAMS };
static const char *const param_names[P_NPARAMS] = {
    "maxmemory", "maxmemory-policy", "maxmemory-samples", "maxmemory-eviction-fallback",
    "save", "appendonly", "databases", "proto-max-bulk-len", "client-query-buffer-limit",
    "timeout",
};

static void param_value(const struct cache *c, int p, char *out, size_t n)
{
    switch (p) {
    case P_MAXMEMORY: snprintf(out, n, "%llu", (unsigned long long)c->max_memory); break;
    case P_POLICY: snprintf(out, n, "%s", cache_policy_name(c)); break;
    case P_SAMPLES: snprintf(out, n, "%d", c->evict.samples); break;
    case P_FALLBACK: snprintf(out, n, "%s", evict_policy_name(c->evict.fallback)); break;
    case P_SAVE: snprintf(out, n, "%s", ""); break;
    case P_APPENDONLY: snprintf(out, n, "no"); break;
    case P_DATABASES: snprintf(out, n, "1"); break;
    case P_BULKLEN: snprintf(out, n, "%zu", c->limits.max_bulk); break;
    case P_QBUF: snprintf(out, n, "%zu", c->qbuf_max); break;
    case P_TIMEOUT: snprintf(out, n, "0"); break;
    }
}

static int lower_glob(const char *pat, size_t pl, const char *name)
{
    char low[128];
    if (pl >= sizeof low)
        return 0;
    for (size_t i = 0; i < pl; i++)
        low[i] = (char)tolower((unsigned char)pat[i]);
    return cache_glob_match(low, pl, name, strlen(name));
}

static void config_get(struct cache_req *r)
{
    if (r->argc < 3)
        return sub_wrongargs(r, "config");
    int hit[P_NPARAMS] = {0};
    size_t n = 0;
    for (size_t i = 2; i < r->argc; i++)
        for (int p = 0; p < P_NPARAMS; p++)
            if (!hit[p] && lower_glob(r->argv[i], r->argl[i], param_names[p])) {
                hit[p] = 1;
                n++;
            }
    resp_array(r->out, n * 2);
    for (int p = 0; p < P_NPARAMS; p++) {
        if (!hit[p])
            continue;
        char v[1100];
        param_value(r->c, p, v, sizeof v);
        resp_bulk_str(r->out, param_names[p]);
        resp_bulk_str(r->out, v);
    }
}

static void config_failed(struct cache_req *r, const char *param, const char *why)
{
    resp_errorf(r->out, "ERR CONFIG SET failed (possibly related to argument '%s') - %s", param,
                why);
}

static void config_set(struct cache_req *r)
{
    struct cache *c = r->c;
    if (r->argc < 4 || r->argc % 2)
        return sub_wrongargs(r, "config");
    /* Validate every pair before applying any, so a bad one changes nothing. */
    int which[64];
    size_t npairs = (r->argc - 2) / 2;
    if (npairs > 64)
        return resp_error(r->out, "ERR syntax error");
    for (size_t k = 0; k < npairs; k++) {
        size_t i = 2 + 2 * k;
        which[k] = -1;
        for (int p = 0; p < P_NPARAMS; p++)
            if (cache_arg_is(r, i, param_names[p]))
                which[k] = p;
        if (which[k] != P_MAXMEMORY && which[k] != P_POLICY && which[k] != P_SAMPLES &&
            which[k] != P_FALLBACK && which[k] != P_SAVE && which[k] != P_APPENDONLY)
            return resp_errorf(r->out,
                               "ERR Unknown option or number of arguments for CONFIG SET - '%.*s'",
                               (int)r->argl[i], r->argv[i]);
    }
    for (size_t k = 0; k < npairs; k++) {
        const char *v = r->argv[3 + 2 * k];
        size_t vl = r->argl[3 + 2 * k];
        char val[1024];
        if (vl >= sizeof val)
            return config_failed(r, param_names[which[k]], "argument too long");
        memcpy(val, v, vl);
        val[vl] = 0;
        switch (which[k]) {
        case P_MAXMEMORY: {
            unsigned long long m;
            if (parse_memory(val, vl, &m) < 0)
                return config_failed(r, "maxmemory", "argument must be a memory value");
            c->max_memory = m;
            cache_enforce_memory(c, r->now);
            break;
        }
        case P_POLICY: {
            char err[512];
            if (cache_set_policy(c, val, r->now, err, sizeof err) < 0) {
                if (strncmp(err, "unknown eviction policy", 23) == 0)
                    return config_failed(
                        r, "maxmemory-policy",
                        "argument(s) must be one of the following: volatile-lru, volatile-lfu, "
                        "volatile-random, volatile-ttl, allkeys-lru, allkeys-lfu, "
                        "allkeys-random, noeviction, allkeys-fifo, volatile-fifo, allkeys-ttl, "
                        "or the path of a Lua policy");
                return config_failed(r, "maxmemory-policy", err);
            }
            break;
        }
        case P_SAMPLES: {
            long long s;
            if (cache_parse_ll(v, vl, &s) < 0 || s < 1 || s > EVICT_MAX_SAMPLES)
                return config_failed(r, "maxmemory-samples",
                                     "argument must be between 1 and 64 inclusive");
            c->evict.samples = (int)s;
            break;
        }
        case P_FALLBACK: {
            enum evict_policy p;
            if (evict_policy_parse(val, &p) < 0)
                return config_failed(r, "maxmemory-eviction-fallback",
                                     "argument must be a built-in eviction policy");
            c->evict.fallback = p;
            break;
        }
        default: /* save, appendonly: accepted and ignored (nothing persists) */
            break;
        }
    }
    resp_ok(r->out);
}

void cache_cmd_config(struct cache_req *r)
{
    if (cache_arg_is(r, 1, "get"))
        return config_get(r);
    if (cache_arg_is(r, 1, "set"))
        return config_set(r);
    if (cache_arg_is(r, 1, "resetstat")) {
        if (r->argc != 2)
            return sub_wrongargs(r, "config");
        struct cache_stats *st = &r->c->stats;
        memset(st, 0, sizeof *st);
        st->ops_last_ms = r->now;
        r->c->evict.evicted = 0;
        r->c->evict.lua_errors = 0;
        r->c->store.expired = 0;
        return resp_ok(r->out);
    }
    unknown_sub(r, "CONFIG");
}

/* ---- INFO -------------------------------------------------------------- */

static void human(char *out, size_t n, double v)
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

static size_t rss_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f)
        return 0;
    unsigned long size = 0, res = 0;
    int rc = fscanf(f, "%lu %lu", &size, &res);
    fclose(f);
    return rc == 2 ? res * (size_t)sysconf(_SC_PAGESIZE) : 0;
}

static int want(const char *const *secs, int nsecs, const char *name)
{
    if (nsecs == 0)
        return 1;
    for (int i = 0; i < nsecs; i++)
        if (strcasecmp(secs[i], name) == 0 || strcasecmp(secs[i], "all") == 0 ||
            strcasecmp(secs[i], "everything") == 0 || strcasecmp(secs[i], "default") == 0)
            return 1;
    return 0;
}

void cache_cmd_info(struct cache_req *r)
{
    struct cache *c = r->c;
    char secbuf[8][32];
    const char *secs[8];
    int nsecs = 0;
    for (size_t i = 1; i < r->argc && nsecs < 8; i++) {
        size_t n = r->argl[i] < 31 ? r->argl[i] : 31;
        memcpy(secbuf[nsecs], r->argv[i], n);
        secbuf[nsecs][n] = 0;
        secs[nsecs] = secbuf[nsecs];
        nsecs++;
    }
    struct buf b;
    buf_init(&b);
    int64_t up = (r->now - c->start_ms) / 1000;
    if (want(secs, nsecs, "server")) {
        const char *port = strrchr(c->listen, ':');
        buf_printf(&b,
                   "# Server\r\nredis_version:%s\r\nstrata_version:%s\r\nredis_mode:standalone\r\n"
                   "os:Linux\r\narch_bits:%d\r\nprocess_id:%d\r\ntcp_port:%s\r\n"
                   "uptime_in_seconds:%lld\r\nuptime_in_days:%lld\r\nhz:10\r\nnode:%s\r\n"
                   "listen:%s\r\n\r\n",
                   COMPAT_VERSION,
#ifdef STRATA_VERSION
                   STRATA_VERSION,
#else
                   "dev",
#endif
                   (int)(sizeof(void *) * 8), (int)getpid(), port ? port + 1 : "0",
                   (long long)up, (long long)up / 86400, c->node, c->listen);
    }
    if (want(secs, nsecs, "clients"))
        buf_printf(&b, "# Clients\r\nconnected_clients:%zu\r\nblocked_clients:0\r\n\r\n",
                   c->nclients);
    if (want(secs, nsecs, "memory")) {
        size_t used = c->store.mem.used, rss = rss_bytes();
        char h1[32], h2[32], h3[32], h4[32];
        human(h1, sizeof h1, (double)used);
        human(h2, sizeof h2, (double)rss);
        human(h3, sizeof h3, (double)c->store.mem.peak);
        human(h4, sizeof h4, (double)c->max_memory);
        buf_printf(&b,
                   "# Memory\r\nused_memory:%zu\r\nused_memory_human:%s\r\n"
                   "used_memory_rss:%zu\r\nused_memory_rss_human:%s\r\n"
                   "used_memory_peak:%zu\r\nused_memory_peak_human:%s\r\n"
                   "used_memory_clients:%zu\r\nmaxmemory:%llu\r\nmaxmemory_human:%s\r\n"
                   "maxmemory_policy:%s\r\nmaxmemory_samples:%d\r\n"
                   "maxmemory_eviction_fallback:%s\r\nmem_fragmentation_ratio:%.2f\r\n"
                   "mem_allocator:libc\r\n\r\n",
                   used, h1, rss, h2, c->store.mem.peak, h3, c->client_buf_bytes,
                   (unsigned long long)c->max_memory, h4, cache_policy_name(c),
                   c->evict.samples, evict_policy_name(c->evict.fallback),
                   used ? (double)rss / (double)used : 0.0);
    }
    if (want(secs, nsecs, "stats")) {
        double ops = 0;
        for (int i = 0; i < CACHE_OPS_SAMPLES; i++)
            ops += c->stats.ops_ring[i];
        const struct cache_stats *st = &c->stats;
        buf_printf(&b,
                   "# Stats\r\ntotal_connections_received:%llu\r\n"
                   "total_commands_processed:%llu\r\ninstantaneous_ops_per_sec:%.0f\r\n"
                   "total_net_input_bytes:%llu\r\ntotal_net_output_bytes:%llu\r\n"
                   "rejected_connections:%llu\r\nexpired_keys:%llu\r\nevicted_keys:%llu\r\n"
                   "keyspace_hits:%llu\r\nkeyspace_misses:%llu\r\n"
                   "total_protocol_errors:%llu\r\noom_rejections:%llu\r\n"
                   "eviction_policy_errors:%llu\r\n\r\n",
                   (unsigned long long)st->connections, (unsigned long long)st->commands,
                   ops / CACHE_OPS_SAMPLES, (unsigned long long)st->net_input_bytes,
                   (unsigned long long)st->net_output_bytes,
                   (unsigned long long)st->rejected_connections,
                   (unsigned long long)c->store.expired, (unsigned long long)c->evict.evicted,
                   (unsigned long long)st->hits, (unsigned long long)st->misses,
                   (unsigned long long)st->protocol_errors,
                   (unsigned long long)st->oom_rejections,
                   (unsigned long long)c->evict.lua_errors);
    }
    if (want(secs, nsecs, "keyspace")) {
        buf_printf(&b, "# Keyspace\r\n");
        if (c->store.count)
            buf_printf(&b, "db0:keys=%zu,expires=%zu,avg_ttl=0\r\n", c->store.count,
                       c->store.nvol);
        buf_printf(&b, "\r\n");
    }
    /* No trailing blank line, like Redis. */
    size_t n = buf_size(&b);
    while (n >= 3 && b.data[b.off + n - 1] == '\n' && b.data[b.off + n - 3] == '\n')
        n -= 2;
    resp_bulk(r->out, buf_head(&b), n);
    buf_free(&b);
}
