/* kvc_probe: a test-only driver of the client layer (engine/client), run
 * by tests/integration/test_client*.py against real nodes. Not installed.
 *
 *   kvc_probe cache [--timeout S] [--retry S] [--password P] NAME=HOST:PORT ...
 *   kvc_probe db [--reads primary|replicas|policy] [--policy FILE] [--timeout S]
 *                [--ryw-wait S] [--password P] --primary NAME=ADDR [--replica NAME=ADDR ...]
 *
 * It reads one command per line on stdin (words split on spaces) and
 * answers each with one JSON line on stdout:
 *
 *   call [KEY] ARG...      cache: KEY places it; db: no KEY
 *                          -> {"reply": R, "error": E, "ms": elapsed}
 *   scall SESSION ARG...   db: the call made with session number SESSION (0..63)
 *   mget KEY...            cache
 *   shard KEY | up SHARD   cache: where a key lives, whether a shard is up
 *   route ARG...           db: the node the command would go to now
 *   primary                db: the node taken as the primary now
 *   stats                  counters
 *   ryw SESSIONS OPS KEYS SEED   db: read-your-writes, randomized (below)
 *   cancel ARG...          starts a call and cancels it at once
 *
 * A reply R is JSON: null (nil), a string, an integer, {"status": s},
 * {"error": s} or a list. `ryw`: SESSIONS sessions run at once, each doing
 * OPS operations one after another on KEYS shared keys: INCR (a write,
 * whose answer is the key's new count: its place in the primary's order)
 * or GET; a GET that answers less than the session's own last INCR of that
 * key is a violation. With KVC_PROBE_NO_SESSIONS=1 in the environment its
 * calls carry no session: a negative control, under which a lagging
 * replica does show violations. */
#include <ev.h>
#include <hiredis/hiredis.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache_client.h"
#include "db_client.h"

static struct ev_loop *loop;
static struct cache_client *cc;
static struct db_client *dc;
static struct db_session sessions[64];

static void json_str(const char *s, size_t n)
{
    putchar('"');
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\')
            printf("\\%c", c);
        else if (c < 0x20 || c >= 0x7f)
            printf("\\u%04x", c);
        else
            putchar(c);
    }
    putchar('"');
}

static void json_reply(const redisReply *r)
{
    if (!r) {
        printf("null");
        return;
    }
    switch (r->type) {
    case REDIS_REPLY_NIL:
        printf("null");
        break;
    case REDIS_REPLY_STRING:
        json_str(r->str, r->len);
        break;
    case REDIS_REPLY_INTEGER:
        printf("%lld", r->integer);
        break;
    case REDIS_REPLY_STATUS:
        printf("{\"status\":");
        json_str(r->str, r->len);
        printf("}");
        break;
    case REDIS_REPLY_ERROR:
        printf("{\"error\":");
        json_str(r->str, r->len);
        printf("}");
        break;
    case REDIS_REPLY_ARRAY:
        putchar('[');
        for (size_t i = 0; i < r->elements; i++) {
            if (i)
                putchar(',');
            json_reply(r->element[i]);
        }
        putchar(']');
        break;
    default:
        printf("null");
    }
}

/* ---- one call, waited for ---- */

struct wait_one {
    int done;
    double start;
};

static void print_done(void *ud, const struct redisReply *r, const char *error)
{
    struct wait_one *w = ud;
    w->done = 1;
    printf("{\"reply\":");
    json_reply(r);
    printf(",\"error\":");
    if (error)
        json_str(error, strlen(error));
    else
        printf("null");
    printf(",\"ms\":%.1f}\n", (ev_time() - w->start) * 1000);
}

static void wait_for(struct wait_one *w)
{
    while (!w->done)
        ev_run(loop, EVRUN_ONCE);
}

static void no_answer(void *ud, const struct redisReply *r, const char *error)
{
    (void)r;
    (void)error;
    *(int *)ud = 1;
}

/* ---- ryw ---- */

#define RYW_KEYS 16

struct ryw_sess {
    int id, left;
    struct db_session *s;
    long long wrote[RYW_KEYS]; /* the session's last INCR answer per key */
    int key, is_write;
    char keyname[32];
};

static struct {
    int active;
    unsigned seed;
    int nkeys;
    long long ops, reads, writes, violations, failures;
    char first[512];
} ryw;

static unsigned ryw_rand(void)
{
    ryw.seed = ryw.seed * 1103515245u + 12345u;
    return (ryw.seed >> 16) & 0x7fff;
}

static void ryw_next(struct ryw_sess *x);

static void ryw_done(void *ud, const struct redisReply *r, const char *error)
{
    struct ryw_sess *x = ud;
    ryw.ops++;
    if (!r || r->type == REDIS_REPLY_ERROR) {
        ryw.failures++;
        if (!ryw.first[0])
            snprintf(ryw.first, sizeof ryw.first, "failure: %s",
                     r ? r->str : error ? error : "?");
    } else if (x->is_write) {
        ryw.writes++;
        if (r->type == REDIS_REPLY_INTEGER)
            x->wrote[x->key] = r->integer;
    } else {
        ryw.reads++;
        long long got = r->type == REDIS_REPLY_STRING ? atoll(r->str) : 0;
        if (got < x->wrote[x->key]) {
            ryw.violations++;
            if (!ryw.first[0] || strncmp(ryw.first, "violation", 9) != 0)
                snprintf(ryw.first, sizeof ryw.first,
                         "violation: session %d read %s=%lld after writing %lld", x->id,
                         x->keyname, got, x->wrote[x->key]);
        }
    }
    ryw_next(x);
}

static void ryw_next(struct ryw_sess *x)
{
    if (x->left-- <= 0) {
        ryw.active--;
        return;
    }
    x->key = (int)(ryw_rand() % (unsigned)ryw.nkeys);
    x->is_write = ryw_rand() % 3 == 0;
    snprintf(x->keyname, sizeof x->keyname, "ryw:%d", x->key);
    const char *argv[2] = {x->is_write ? "INCR" : "GET", x->keyname};
    size_t argl[2] = {x->is_write ? 4 : 3, strlen(x->keyname)};
    if (!db_client_call(dc, getenv("KVC_PROBE_NO_SESSIONS") ? NULL : x->s, 2, argv, argl,
                        ryw_done, x)) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
}

static void run_ryw(int nsess, int ops, int nkeys, unsigned seed)
{
    memset(&ryw, 0, sizeof ryw);
    ryw.seed = seed;
    ryw.nkeys = nkeys < 1 ? 1 : nkeys > RYW_KEYS ? RYW_KEYS : nkeys;
    struct ryw_sess *xs = calloc((size_t)nsess, sizeof *xs);
    struct db_session *ss = calloc((size_t)nsess, sizeof *ss);
    struct db_client_stats before, after;
    db_client_stats(dc, &before);
    ryw.active = nsess;
    for (int i = 0; i < nsess; i++) {
        xs[i].id = i;
        xs[i].left = ops;
        xs[i].s = &ss[i];
        ryw_next(&xs[i]);
    }
    while (ryw.active > 0)
        ev_run(loop, EVRUN_ONCE);
    db_client_stats(dc, &after);
    printf("{\"ops\":%lld,\"reads\":%lld,\"writes\":%lld,\"violations\":%lld,\"failures\":%lld,"
           "\"reads_replica\":%llu,\"reads_primary\":%llu,\"ryw_waits\":%llu,"
           "\"ryw_fallbacks\":%llu,\"first\":",
           ryw.ops, ryw.reads, ryw.writes, ryw.violations, ryw.failures,
           (unsigned long long)(after.reads_replica - before.reads_replica),
           (unsigned long long)(after.reads_primary - before.reads_primary),
           (unsigned long long)(after.ryw_waits - before.ryw_waits),
           (unsigned long long)(after.ryw_fallbacks - before.ryw_fallbacks));
    json_str(ryw.first, strlen(ryw.first));
    printf("}\n");
    free(xs);
    free(ss);
}

/* ---- main ---- */

static int split_words(char *line, char **w, size_t *l, int max)
{
    int n = 0;
    for (char *tok = strtok(line, " \t\r\n"); tok && n < max; tok = strtok(NULL, " \t\r\n")) {
        w[n] = tok;
        l[n] = strlen(tok);
        n++;
    }
    return n;
}

static void print_stats(void)
{
    struct kvc_stats k;
    struct db_client_stats d;
    memset(&d, 0, sizeof d);
    if (cc)
        cache_client_stats(cc, &k);
    else {
        db_client_stats(dc, &d);
        k = d.calls;
    }
    printf("{\"calls\":%llu,\"replies\":%llu,\"failures\":%llu,\"cancelled\":%llu,"
           "\"reconnects\":%llu,\"reads_primary\":%llu,\"reads_replica\":%llu,"
           "\"ryw_waits\":%llu,\"ryw_fallbacks\":%llu}\n",
           (unsigned long long)k.calls, (unsigned long long)k.replies,
           (unsigned long long)k.failures, (unsigned long long)k.cancelled,
           (unsigned long long)k.reconnects, (unsigned long long)d.reads_primary,
           (unsigned long long)d.reads_replica, (unsigned long long)d.ryw_waits,
           (unsigned long long)d.ryw_fallbacks);
}

static void split_named(char *arg, const char **name, const char **addr)
{
    char *eq = strchr(arg, '=');
    if (!eq) {
        fprintf(stderr, "want NAME=ADDR, not %s\n", arg);
        exit(2);
    }
    *eq = 0;
    *name = arg;
    *addr = eq + 1;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: kvc_probe cache|db ...\n");
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    signal(SIGPIPE, SIG_IGN); /* as every node: a lost link is an error, not a signal */
    loop = ev_default_loop(0);
    double timeout = 0, retry = 0, ryw_wait = 0;
    const char *password = NULL, *policy = NULL;
    enum db_reads reads = DB_READS_PRIMARY;
    struct cache_shard_addr shards[16];
    struct db_node_addr primary = {0}, replicas[16];
    int nshards = 0, nreplicas = 0;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : "";
        if (strcmp(a, "--timeout") == 0 && ++i)
            timeout = atof(v);
        else if (strcmp(a, "--retry") == 0 && ++i)
            retry = atof(v);
        else if (strcmp(a, "--ryw-wait") == 0 && ++i)
            ryw_wait = atof(v);
        else if (strcmp(a, "--password") == 0 && ++i)
            password = v;
        else if (strcmp(a, "--policy") == 0 && ++i)
            policy = v;
        else if (strcmp(a, "--reads") == 0 && ++i)
            reads = strcmp(v, "replicas") == 0 ? DB_READS_REPLICAS
                    : strcmp(v, "policy") == 0 ? DB_READS_POLICY
                                               : DB_READS_PRIMARY;
        else if (strcmp(a, "--primary") == 0 && ++i)
            split_named(argv[i], &primary.name, &primary.addr);
        else if (strcmp(a, "--replica") == 0 && ++i && nreplicas < 16) {
            split_named(argv[i], &replicas[nreplicas].name, &replicas[nreplicas].addr);
            nreplicas++;
        } else if (nshards < 16) {
            split_named(argv[i], &shards[nshards].name, &shards[nshards].addr);
            nshards++;
        }
    }
    char err[512];
    if (strcmp(argv[1], "cache") == 0) {
        struct cache_client_cfg cfg = {shards, nshards, password, timeout, retry};
        cc = cache_client_new(loop, &cfg, err, sizeof err);
    } else {
        struct db_client_cfg cfg = {primary, replicas, nreplicas, password, reads, policy,
                                    timeout, ryw_wait};
        dc = db_client_new(loop, &cfg, err, sizeof err);
    }
    if (!cc && !dc) {
        printf("{\"fatal\":");
        json_str(err, strlen(err));
        printf("}\n");
        return 1;
    }
    printf("{\"ready\":true}\n");
    char line[8192];
    while (fgets(line, sizeof line, stdin)) {
        char *w[256];
        size_t l[256];
        int n = split_words(line, w, l, 256);
        if (n == 0)
            continue;
        if (strcmp(w[0], "quit") == 0)
            break;
        struct wait_one one = {0, ev_time()};
        if (strcmp(w[0], "call") == 0 && cc && n >= 3) {
            cache_client_call(cc, w[1], l[1], n - 2, (const char *const *)w + 2, l + 2, print_done,
                              &one);
            wait_for(&one);
        } else if (strcmp(w[0], "call") == 0 && dc && n >= 2) {
            db_client_call(dc, NULL, n - 1, (const char *const *)w + 1, l + 1, print_done, &one);
            wait_for(&one);
        } else if (strcmp(w[0], "scall") == 0 && dc && n >= 3) {
            int s = atoi(w[1]) & 63;
            db_client_call(dc, &sessions[s], n - 2, (const char *const *)w + 2, l + 2, print_done,
                           &one);
            wait_for(&one);
        } else if (strcmp(w[0], "mget") == 0 && cc) {
            cache_client_mget(cc, n - 1, (const char *const *)w + 1, l + 1, print_done, &one);
            wait_for(&one);
        } else if (strcmp(w[0], "cancel") == 0 && n >= 2) {
            int answered = 0;
            struct kvc_call *c =
                cc ? cache_client_call(cc, w[1], l[1], n - 1, (const char *const *)w + 1, l + 1,
                                       no_answer, &answered)
                   : db_client_call(dc, NULL, n - 1, (const char *const *)w + 1, l + 1, no_answer,
                                    &answered);
            kvc_cancel(c);
            /* Let the reply arrive and be dropped. */
            double until = ev_time() + 0.2;
            while (ev_time() < until)
                ev_run(loop, EVRUN_NOWAIT);
            printf("{\"answered\":%d}\n", answered);
        } else if (strcmp(w[0], "shard") == 0 && cc && n == 2) {
            printf("{\"shard\":%d}\n", cache_client_shard_of(cc, w[1], l[1]));
        } else if (strcmp(w[0], "up") == 0 && cc && n == 2) {
            ev_run(loop, EVRUN_NOWAIT);
            printf("{\"up\":%d}\n", cache_client_shard_up(cc, atoi(w[1])));
        } else if (strcmp(w[0], "route") == 0 && dc && n >= 2) {
            ev_run(loop, EVRUN_NOWAIT); /* take in what the probes learned */
            const char *r = db_client_route(dc, NULL, n - 1, (const char *const *)w + 1, l + 1);
            printf("{\"route\":");
            json_str(r, strlen(r));
            printf("}\n");
        } else if (strcmp(w[0], "primary") == 0 && dc) {
            const char *p = db_client_primary(dc);
            printf("{\"primary\":");
            json_str(p, strlen(p));
            printf("}\n");
        } else if (strcmp(w[0], "stats") == 0) {
            print_stats();
        } else if (strcmp(w[0], "ryw") == 0 && dc && n == 5) {
            run_ryw(atoi(w[1]), atoi(w[2]), atoi(w[3]), (unsigned)atoi(w[4]));
        } else {
            printf("{\"bad\":true}\n");
        }
    }
    if (cc)
        cache_client_free(cc);
    if (dc)
        db_client_free(dc);
    ev_loop_destroy(loop);
    return 0;
}
