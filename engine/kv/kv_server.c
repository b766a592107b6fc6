/* kv_server: the connection and server commands of a keyspace — PING,
 * ECHO, QUIT, SELECT, TIME, HELLO, AUTH, CLIENT, CONFIG, INFO. A shell adds
 * its own CONFIG parameters and INFO fields through its kv_hooks; nothing
 * here knows which shell it runs in. */
#include <ctype.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "kv_commands.h"

void kv_reply_wrongargs(struct kv_req *r, const char *name)
{
    resp_errorf(r->out, "ERR wrong number of arguments for '%s' command", name);
}

void kv_reply_subargs(struct kv_req *r, const char *cmd)
{
    char sub[32];
    size_t n = r->argl[1] < sizeof sub - 1 ? r->argl[1] : sizeof sub - 1;
    for (size_t i = 0; i < n; i++)
        sub[i] = (char)tolower((unsigned char)r->argv[1][i]);
    sub[n] = 0;
    resp_errorf(r->out, "ERR wrong number of arguments for '%s|%s' command", cmd, sub);
}

void kv_reply_unknown_sub(struct kv_req *r, const char *help)
{
    resp_errorf(r->out, "ERR unknown subcommand '%.*s'. Try %s HELP.", (int)r->argl[1], r->argv[1],
                help);
}

/* ---- connection ------------------------------------------------------------ */

void kv_do_ping(struct kv_req *r)
{
    if (r->argc > 2)
        return kv_reply_wrongargs(r, "ping");
    if (r->argc == 2)
        resp_bulk(r->out, r->argv[1], r->argl[1]);
    else
        buf_append(r->out, "+PONG\r\n", 7);
}

void kv_do_echo(struct kv_req *r) { resp_bulk(r->out, r->argv[1], r->argl[1]); }

void kv_do_quit(struct kv_req *r)
{
    resp_ok(r->out);
    r->sess->quit = 1;
}

void kv_do_select(struct kv_req *r)
{
    long long db;
    if (kv_arg_ll(r, 1, &db) < 0)
        return;
    if (db != 0)
        return resp_error(r->out, "ERR DB index is out of range");
    resp_ok(r->out);
}

void kv_do_time(struct kv_req *r)
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

/* ---- HELLO, AUTH, CLIENT ---------------------------------------------- */

void kv_do_auth(struct kv_req *r)
{
    if (r->argc > 3)
        return resp_error(r->out, "ERR syntax error");
    if (r->argc == 2 && !r->ks->has_password)
        return resp_error(r->out, "ERR AUTH <password> called without any password configured "
                                  "for the default user. Are you sure your configuration is "
                                  "correct?");
    const char *user = r->argc == 3 ? r->argv[1] : "default";
    size_t ul = r->argc == 3 ? r->argl[1] : 7;
    if (!kv_auth_check(r->ks, user, ul, r->argv[r->argc - 1], r->argl[r->argc - 1]))
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

static void set_name(struct kv_session *sess, const char *s, size_t n)
{
    if (n >= sizeof sess->name)
        n = sizeof sess->name - 1;
    memcpy(sess->name, s, n);
    sess->name[n] = 0;
}

void kv_do_hello(struct kv_req *r)
{
    struct keyspace *ks = r->ks;
    if (r->argc >= 2) {
        long long ver;
        if (kv_parse_ll(r->argv[1], r->argl[1], &ver) < 0)
            return resp_error(r->out, "ERR Protocol version is not an integer or out of range");
        if (ver != 2)
            return resp_error(r->out, "NOPROTO unsupported protocol version");
    }
    size_t user = 0, name = 0;
    for (size_t j = 2; j < r->argc; j++) {
        size_t more = r->argc - 1 - j;
        if (kv_arg_is(r, j, "auth") && more >= 2) {
            user = j + 1;
            j += 2;
        } else if (kv_arg_is(r, j, "setname") && more >= 1) {
            name = j + 1;
            j++;
        } else {
            return resp_errorf(r->out, "ERR Syntax error in HELLO option '%.*s'", (int)r->argl[j],
                               r->argv[j]);
        }
    }
    if (user) {
        if (!kv_auth_check(ks, r->argv[user], r->argl[user], r->argv[user + 1], r->argl[user + 1]))
            return resp_error(r->out,
                              "WRONGPASS invalid username-password pair or user is disabled.");
        r->sess->authed = 1;
    }
    if (ks->has_password && !r->sess->authed)
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
    resp_bulk_str(r->out, KV_COMPAT_VERSION);
    resp_bulk_str(r->out, "proto");
    resp_int(r->out, 2);
    resp_bulk_str(r->out, "id");
    resp_int(r->out, (long long)r->sess->id);
    resp_bulk_str(r->out, "mode");
    resp_bulk_str(r->out, "standalone");
    resp_bulk_str(r->out, "role");
    resp_bulk_str(r->out, ks->read_only ? "replica" : "master");
    resp_bulk_str(r->out, "modules");
    resp_array(r->out, 0);
}

void kv_do_client(struct kv_req *r)
{
    if (kv_arg_is(r, 1, "id")) {
        if (r->argc != 2)
            return kv_reply_subargs(r, "client");
        return resp_int(r->out, (long long)r->sess->id);
    }
    if (kv_arg_is(r, 1, "getname")) {
        if (r->argc != 2)
            return kv_reply_subargs(r, "client");
        if (!r->sess->name[0])
            return resp_null(r->out);
        return resp_bulk_str(r->out, r->sess->name);
    }
    if (kv_arg_is(r, 1, "setname")) {
        if (r->argc != 3)
            return kv_reply_subargs(r, "client");
        if (!valid_client_name(r->argv[2], r->argl[2]))
            return resp_error(r->out, "ERR Client names cannot contain spaces, newlines or "
                                      "special characters.");
        set_name(r->sess, r->argv[2], r->argl[2]);
        return resp_ok(r->out);
    }
    if (kv_arg_is(r, 1, "setinfo")) {
        if (r->argc != 4)
            return kv_reply_subargs(r, "client");
        return resp_ok(r->out);
    }
    kv_reply_unknown_sub(r, "CLIENT");
}

/* ---- CONFIG --------------------------------------------------------------- */

static void get_databases(struct keyspace *ks, char *out, size_t n) { snprintf(out, n, "1"); }
static void get_bulklen(struct keyspace *ks, char *out, size_t n)
{
    snprintf(out, n, "%zu", ks->limits.max_bulk);
}
static void get_qbuf(struct keyspace *ks, char *out, size_t n)
{
    snprintf(out, n, "%zu", ks->qbuf_max);
}
static void get_timeout(struct keyspace *ks, char *out, size_t n) { snprintf(out, n, "0"); }
static void get_maxclients(struct keyspace *ks, char *out, size_t n)
{
    snprintf(out, n, "%zu", ks->max_clients);
}
static void get_maxmemory_clients(struct keyspace *ks, char *out, size_t n)
{
    snprintf(out, n, "%llu", (unsigned long long)ks->client_mem_limit);
}
static void get_debug(struct keyspace *ks, char *out, size_t n)
{
    snprintf(out, n, "%s", ks->debug_enabled ? "yes" : "no");
}
/* Settings that open the node to more than its data (test hooks) are the
 * topology's alone, as Redis keeps its enable-* switches out of CONFIG SET. */
static int set_protected(struct keyspace *ks, const char *val, size_t vl, int64_t now_ms,
                         char *why, size_t whylen)
{
    snprintf(why, whylen, "can't set protected config");
    return -1;
}

/* The keyspace's own parameters: shown, not settable at run time. */
static const struct kv_param core_params[] = {
    {"databases", get_databases, NULL},
    {"proto-max-bulk-len", get_bulklen, NULL},
    {"client-query-buffer-limit", get_qbuf, NULL},
    {"timeout", get_timeout, NULL},
    {"maxclients", get_maxclients, NULL},
    {"maxmemory-clients", get_maxmemory_clients, NULL},
    {"enable-debug-command", get_debug, set_protected},
};
#define NCORE_PARAMS (sizeof core_params / sizeof core_params[0])
#define MAX_PARAMS 64

/* Every parameter, the shell's first; returns how many. */
static size_t all_params(const struct keyspace *ks, const struct kv_param **out)
{
    size_t n = 0;
    for (size_t i = 0; i < ks->hooks->nparams && n < MAX_PARAMS; i++)
        out[n++] = &ks->hooks->params[i];
    for (size_t i = 0; i < NCORE_PARAMS && n < MAX_PARAMS; i++)
        out[n++] = &core_params[i];
    return n;
}

static int lower_glob(const char *pat, size_t pl, const char *name)
{
    char low[128];
    if (pl >= sizeof low)
        return 0;
    for (size_t i = 0; i < pl; i++)
        low[i] = (char)tolower((unsigned char)pat[i]);
    return kv_glob_match(low, pl, name, strlen(name));
}

static void config_get(struct kv_req *r)
{
    if (r->argc < 3)
        return kv_reply_subargs(r, "config");
    const struct kv_param *ps[MAX_PARAMS];
    size_t np = all_params(r->ks, ps);
    int hit[MAX_PARAMS] = {0};
    size_t n = 0;
    for (size_t i = 2; i < r->argc; i++)
        for (size_t p = 0; p < np; p++)
            if (!hit[p] && lower_glob(r->argv[i], r->argl[i], ps[p]->name)) {
                hit[p] = 1;
                n++;
            }
    resp_array(r->out, n * 2);
    for (size_t p = 0; p < np; p++) {
        if (!hit[p])
            continue;
        char v[1100];
        ps[p]->get(r->ks, v, sizeof v);
        resp_bulk_str(r->out, ps[p]->name);
        resp_bulk_str(r->out, v);
    }
}

static void config_failed(struct kv_req *r, const char *param, const char *why)
{
    resp_errorf(r->out, "ERR CONFIG SET failed (possibly related to argument '%s') - %s", param,
                why);
}

static void config_set(struct kv_req *r)
{
    if (r->argc < 4 || r->argc % 2)
        return kv_reply_subargs(r, "config");
    const struct kv_param *ps[MAX_PARAMS];
    size_t np = all_params(r->ks, ps);
    /* Validate every name before applying any value, so an unknown one
     * changes nothing. */
    const struct kv_param *which[64];
    size_t npairs = (r->argc - 2) / 2;
    if (npairs > 64)
        return resp_error(r->out, "ERR syntax error");
    for (size_t k = 0; k < npairs; k++) {
        size_t i = 2 + 2 * k;
        which[k] = NULL;
        for (size_t p = 0; p < np; p++)
            if (ps[p]->set && kv_arg_is(r, i, ps[p]->name))
                which[k] = ps[p];
        if (!which[k])
            return resp_errorf(r->out,
                               "ERR Unknown option or number of arguments for CONFIG SET - '%.*s'",
                               (int)r->argl[i], r->argv[i]);
    }
    for (size_t k = 0; k < npairs; k++) {
        const char *v = r->argv[3 + 2 * k];
        size_t vl = r->argl[3 + 2 * k];
        char val[1024], why[768];
        if (vl >= sizeof val)
            return config_failed(r, which[k]->name, "argument too long");
        memcpy(val, v, vl);
        val[vl] = 0;
        if (which[k]->set(r->ks, val, vl, r->now, why, sizeof why) < 0)
            return config_failed(r, which[k]->name, why);
    }
    resp_ok(r->out);
}

void kv_do_config(struct kv_req *r)
{
    if (kv_arg_is(r, 1, "get"))
        return config_get(r);
    if (kv_arg_is(r, 1, "set"))
        return config_set(r);
    if (kv_arg_is(r, 1, "resetstat")) {
        if (r->argc != 2)
            return kv_reply_subargs(r, "config");
        struct kv_stats *st = &r->ks->stats;
        memset(st, 0, sizeof *st);
        st->ops_last_ms = r->now;
        r->ks->store.expired = 0;
        if (r->ks->hooks->reset_stats)
            r->ks->hooks->reset_stats(r->ks);
        return resp_ok(r->out);
    }
    kv_reply_unknown_sub(r, "CONFIG");
}

/* ---- DEBUG ---------------------------------------------------------------- */

/* Runs only when the topology turned the debug switch on (kv_check refuses
 * it otherwise); the subcommands are the shell's. */
void kv_do_debug(struct kv_req *r)
{
    if (r->ks->hooks->debug)
        return r->ks->hooks->debug(r);
    kv_reply_unknown_sub(r, "DEBUG");
}

/* ---- INFO -------------------------------------------------------------- */

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

/* Bytes the allocator has handed out to the whole process: data, client
 * buffers, Lua states, tables. This is what Redis's own used_memory counts
 * (everything through its allocator), and so the denominator its
 * mem_fragmentation_ratio is read against: about 1 is healthy, well above
 * means fragmentation, below 1 means pages were swapped out. Our
 * used_memory is the dataset alone (what max_memory limits), which would
 * make the ratio read 0 on an empty node and run into the thousands on a
 * small one. */
static size_t allocated_bytes(void)
{
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 33))
    struct mallinfo2 mi = mallinfo2();
    return mi.uordblks + mi.hblkhd;
#else
    return 0;
#endif
}

void kv_do_info(struct kv_req *r)
{
    struct keyspace *ks = r->ks;
    void (*hook)(struct keyspace *, enum kv_info_at, const struct kv_info_sel *, struct buf *) =
        ks->hooks->info;
    struct kv_info_sel sel = {0};
    for (size_t i = 1; i < r->argc && sel.n < 8; i++) {
        size_t n = r->argl[i] < 31 ? r->argl[i] : 31;
        memcpy(sel.names[sel.n], r->argv[i], n);
        sel.names[sel.n][n] = 0;
        sel.n++;
    }
    struct buf b;
    buf_init(&b);
    int64_t up = (r->now - ks->start_ms) / 1000;
    if (kv_info_wants(&sel, "server")) {
        const char *port = strrchr(ks->listen, ':');
        buf_printf(&b,
                   "# Server\r\nredis_version:%s\r\nstrata_version:%s\r\nredis_mode:standalone\r\n"
                   "os:Linux\r\narch_bits:%d\r\nprocess_id:%d\r\ntcp_port:%s\r\n"
                   "uptime_in_seconds:%lld\r\nuptime_in_days:%lld\r\nhz:10\r\nnode:%s\r\n"
                   "listen:%s\r\n\r\n",
                   KV_COMPAT_VERSION,
#ifdef STRATA_VERSION
                   STRATA_VERSION,
#else
                   "dev",
#endif
                   (int)(sizeof(void *) * 8), (int)getpid(), port ? port + 1 : "0",
                   (long long)up, (long long)up / 86400, ks->node, ks->listen);
    }
    if (kv_info_wants(&sel, "clients"))
        buf_printf(&b,
                   "# Clients\r\nconnected_clients:%zu\r\nmaxclients:%zu\r\n"
                   "blocked_clients:0\r\n\r\n",
                   ks->nclients, ks->max_clients);
    if (kv_info_wants(&sel, "memory")) {
        size_t used = ks->store.mem.used, rss = rss_bytes(), alloc = allocated_bytes();
        if (alloc < used)
            alloc = used; /* no allocator statistics: the dataset is a floor */
        char h1[32], h2[32], h3[32];
        kv_human_bytes(h1, sizeof h1, (double)used);
        kv_human_bytes(h2, sizeof h2, (double)rss);
        kv_human_bytes(h3, sizeof h3, (double)ks->store.mem.peak);
        buf_printf(&b,
                   "# Memory\r\nused_memory:%zu\r\nused_memory_human:%s\r\n"
                   "used_memory_rss:%zu\r\nused_memory_rss_human:%s\r\n"
                   "used_memory_peak:%zu\r\nused_memory_peak_human:%s\r\n"
                   "used_memory_clients:%zu\r\nmaxmemory_clients:%llu\r\n",
                   used, h1, rss, h2, ks->store.mem.peak, h3, ks->client_buf_bytes,
                   (unsigned long long)ks->client_mem_limit);
        if (hook)
            hook(ks, KV_INFO_MEMORY, &sel, &b);
        buf_printf(&b,
                   "mem_fragmentation_ratio:%.2f\r\nallocator_allocated:%zu\r\n"
                   "mem_allocator:libc\r\n\r\n",
                   alloc && rss ? (double)rss / (double)alloc : 1.0, alloc);
    }
    if (kv_info_wants(&sel, "stats")) {
        double ops = 0;
        for (int i = 0; i < KV_OPS_SAMPLES; i++)
            ops += ks->stats.ops_ring[i];
        const struct kv_stats *st = &ks->stats;
        buf_printf(&b,
                   "# Stats\r\ntotal_connections_received:%llu\r\n"
                   "total_commands_processed:%llu\r\ninstantaneous_ops_per_sec:%.0f\r\n"
                   "total_net_input_bytes:%llu\r\ntotal_net_output_bytes:%llu\r\n"
                   "rejected_connections:%llu\r\nevicted_clients:%llu\r\nexpired_keys:%llu\r\n",
                   (unsigned long long)st->connections, (unsigned long long)st->commands,
                   ops / KV_OPS_SAMPLES, (unsigned long long)st->net_input_bytes,
                   (unsigned long long)st->net_output_bytes,
                   (unsigned long long)st->rejected_connections,
                   (unsigned long long)st->evicted_clients,
                   (unsigned long long)ks->store.expired);
        if (hook)
            hook(ks, KV_INFO_STATS, &sel, &b);
        buf_printf(&b,
                   "keyspace_hits:%llu\r\nkeyspace_misses:%llu\r\n"
                   "total_protocol_errors:%llu\r\n\r\n",
                   (unsigned long long)st->hits, (unsigned long long)st->misses,
                   (unsigned long long)st->protocol_errors);
    }
    if (hook)
        hook(ks, KV_INFO_SECTIONS, &sel, &b);
    if (kv_info_wants(&sel, "keyspace")) {
        buf_printf(&b, "# Keyspace\r\n");
        if (ks->store.count)
            buf_printf(&b, "db0:keys=%zu,expires=%zu,avg_ttl=0\r\n", ks->store.count,
                       ks->store.nvol);
        buf_printf(&b, "\r\n");
    }
    /* No trailing blank line, like Redis. */
    size_t n = buf_size(&b);
    while (n >= 3 && b.data[b.off + n - 1] == '\n' && b.data[b.off + n - 3] == '\n')
        n -= 2;
    resp_bulk(r->out, buf_head(&b), n);
    buf_free(&b);
}
