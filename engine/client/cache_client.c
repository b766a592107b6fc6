/* cache_client: the web tier's client of a sharded cache (cache_client.h).
 *
 * One kvc_link per shard; keys placed on a hash_ring of the shards' names.
 * A call goes to its key's shard and nowhere else: a dead shard's keys
 * are not moved to a live one (a write there would be lost when the shard
 * comes back, and a stale value could shadow a newer one), they fail fast
 * until it is back. */
#include "cache_client.h"

#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hash_ring.h"
#include "kvc_link.h"

#define CACHE_RING_POINTS 160

struct cache_client {
    struct kvc_base base;
    int n;
    struct kvc_link *links;
    struct hash_ring ring;
};

/* ---- one command ---------------------------------------------------------- */

struct one_call {
    struct kvc_call c;
    struct kvc_wire *wire;
};

static void one_release(struct kvc_call *c)
{
    struct one_call *o = (struct one_call *)c;
    kvc_wire_detach(o->wire);
    o->wire = NULL;
}

static void one_reply(void *arg, const struct redisReply *r, const char *error)
{
    struct one_call *o = arg;
    o->wire = NULL;
    kvc_call_finish(&o->c, r, error);
}

int cache_client_shard_of(const struct cache_client *cc, const char *key, size_t klen)
{
    return hash_ring_lookup(&cc->ring, hash_ring_hash(key, klen), NULL, NULL);
}

struct kvc_call *cache_client_call(struct cache_client *cc, const char *key, size_t klen, int argc,
                                   const char *const *argv, const size_t *argvlen, kvc_done_fn cb,
                                   void *ud)
{
    struct one_call *o =
        (struct one_call *)kvc_call_new(&cc->base, sizeof *o, cb, ud, one_release);
    if (!o)
        return NULL;
    if (argc < 1 || kvc_stateful_command(argv[0], argvlen[0])) {
        kvc_call_fail_soon(&o->c, "command not supported by the cache client");
        return &o->c;
    }
    int s = cache_client_shard_of(cc, key, klen);
    if (s < 0) {
        kvc_call_fail_soon(&o->c, "down");
        return &o->c;
    }
    o->wire = kvc_link_send(&cc->links[s], argc, argv, argvlen, one_reply, o);
    if (!o->wire)
        kvc_call_fail_soon(&o->c, "down");
    return &o->c;
}

/* ---- MGET over shards ----------------------------------------------------- */

struct mget_call;

struct mget_part {
    struct mget_call *m;
    struct kvc_wire *wire;
    int shard;
    int nkeys;
    int *pos; /* the part's keys' places in the answer */
};

struct mget_call {
    struct kvc_call c;
    int nkeys, nparts, left;
    struct mget_part *parts;
    struct redisReply *answer; /* ARRAY of nkeys: NIL until a part fills it */
};

static void mget_release(struct kvc_call *c)
{
    struct mget_call *m = (struct mget_call *)c;
    for (int i = 0; i < m->nparts; i++) {
        kvc_wire_detach(m->parts[i].wire);
        m->parts[i].wire = NULL;
        free(m->parts[i].pos);
    }
    free(m->parts);
    m->parts = NULL;
    m->nparts = 0;
    kvc_reply_free(m->answer);
    m->answer = NULL;
}

static void mget_part_done(struct mget_call *m)
{
    if (--m->left > 0)
        return;
    /* The answer is freed by release, after the callback. */
    struct redisReply *a = m->answer;
    m->answer = NULL;
    kvc_call_finish(&m->c, a, NULL);
    kvc_reply_free(a);
}

static void mget_reply(void *arg, const struct redisReply *r, const char *error)
{
    struct mget_part *p = arg;
    struct mget_call *m = p->m;
    p->wire = NULL;
    (void)error;
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements == (size_t)p->nkeys) {
        for (int i = 0; i < p->nkeys; i++) {
            struct redisReply *e = kvc_reply_dup(r->element[i]);
            if (!e)
                continue; /* out of memory: that key is a miss */
            kvc_reply_free(m->answer->element[p->pos[i]]);
            m->answer->element[p->pos[i]] = e;
        }
    }
    mget_part_done(m);
}

static void mget_answer_soon(struct kvc_call *c) { mget_part_done((struct mget_call *)c); }

struct kvc_call *cache_client_mget(struct cache_client *cc, int nkeys, const char *const *keys,
                                   const size_t *klens, kvc_done_fn cb, void *ud)
{
    struct mget_call *m =
        (struct mget_call *)kvc_call_new(&cc->base, sizeof *m, cb, ud, mget_release);
    if (!m)
        return NULL;
    int *shard_of = calloc((size_t)(nkeys ? nkeys : 1), sizeof *shard_of);
    int *count = calloc((size_t)(cc->n ? cc->n : 1), sizeof *count);
    m->answer = calloc(1, sizeof *m->answer);
    if (m->answer) {
        m->answer->type = REDIS_REPLY_ARRAY;
        m->answer->elements = (size_t)nkeys;
        m->answer->element = calloc((size_t)(nkeys ? nkeys : 1), sizeof *m->answer->element);
    }
    if (!shard_of || !count || !m->answer || !m->answer->element)
        goto oom;
    for (int i = 0; i < nkeys; i++) {
        struct redisReply *nil = calloc(1, sizeof *nil);
        if (!nil)
            goto oom;
        nil->type = REDIS_REPLY_NIL;
        m->answer->element[i] = nil;
        shard_of[i] = cache_client_shard_of(cc, keys[i], klens[i]);
        if (shard_of[i] >= 0 && count[shard_of[i]]++ == 0)
            m->nparts++;
    }
    m->parts = calloc((size_t)(m->nparts ? m->nparts : 1), sizeof *m->parts);
    if (!m->parts)
        goto oom;
    int k = 0;
    for (int s = 0; s < cc->n; s++) {
        if (!count[s])
            continue;
        struct mget_part *p = &m->parts[k++];
        p->m = m;
        p->shard = s;
        p->pos = malloc((size_t)count[s] * sizeof *p->pos);
        if (!p->pos)
            goto oom;
        for (int i = 0; i < nkeys; i++)
            if (shard_of[i] == s)
                p->pos[p->nkeys++] = i;
    }
    /* Everything is allocated: send the parts. A dead shard's part fails
     * now and leaves its keys NIL. */
    m->left = m->nparts + 1;
    for (int i = 0; i < m->nparts; i++) {
        struct mget_part *p = &m->parts[i];
        const char **argv = malloc((size_t)(p->nkeys + 1) * sizeof *argv);
        size_t *argl = malloc((size_t)(p->nkeys + 1) * sizeof *argl);
        if (argv && argl) {
            argv[0] = "MGET";
            argl[0] = 4;
            for (int j = 0; j < p->nkeys; j++) {
                argv[j + 1] = keys[p->pos[j]];
                argl[j + 1] = klens[p->pos[j]];
            }
            p->wire = kvc_link_send(&cc->links[p->shard], p->nkeys + 1, argv, argl, mget_reply, p);
        }
        free(argv);
        free(argl);
        if (!p->wire)
            m->left--;
    }
    free(shard_of);
    free(count);
    if (--m->left == 0) {
        /* Nothing in flight (every shard down, or no key): answered on the
         * next iteration, like any call. */
        m->left = 1;
        kvc_call_soon(&m->c, mget_answer_soon);
    }
    return &m->c;
oom:
    free(shard_of);
    free(count);
    kvc_call_fail_soon(&m->c, "out of memory");
    return &m->c;
}

/* ---- the client ----------------------------------------------------------- */

struct cache_client *cache_client_new(struct ev_loop *loop, const struct cache_client_cfg *cfg,
                                      char *err, size_t errlen)
{
    if (cfg->nshards < 1) {
        snprintf(err, errlen, "a cache client needs at least one shard");
        return NULL;
    }
    struct cache_client *cc = calloc(1, sizeof *cc);
    const char **names = calloc((size_t)cfg->nshards, sizeof *names);
    if (cc)
        cc->links = calloc((size_t)cfg->nshards, sizeof *cc->links);
    if (!cc || !cc->links || !names) {
        snprintf(err, errlen, "out of memory");
        free(names);
        if (cc)
            free(cc->links);
        free(cc);
        return NULL;
    }
    kvc_base_init(&cc->base, loop, cfg->timeout > 0 ? cfg->timeout : 1.0);
    double retry = cfg->retry_after > 0 ? cfg->retry_after : 0.5;
    for (int i = 0; i < cfg->nshards; i++) {
        const struct cache_shard_addr *s = &cfg->shards[i];
        if (kvc_link_init(&cc->links[i], &cc->base, s->name ? s->name : s->addr, s->addr,
                          cfg->password, retry, err, errlen) < 0) {
            for (int j = 0; j < i; j++)
                kvc_link_free(&cc->links[j]);
            free(names);
            free(cc->links);
            free(cc);
            return NULL;
        }
        cc->n++;
        names[i] = cc->links[i].name;
    }
    if (hash_ring_build(&cc->ring, names, NULL, cc->n, CACHE_RING_POINTS) < 0) {
        snprintf(err, errlen, "out of memory");
        free(names);
        cache_client_free(cc);
        return NULL;
    }
    free(names);
    for (int i = 0; i < cc->n; i++)
        kvc_link_connect(&cc->links[i]);
    return cc;
}

void cache_client_free(struct cache_client *cc)
{
    if (!cc)
        return;
    kvc_base_fail_all(&cc->base, "closed");
    for (int i = 0; i < cc->n; i++)
        kvc_link_free(&cc->links[i]);
    /* A call a "closed" callback started meanwhile is answered too. */
    kvc_base_fail_all(&cc->base, "closed");
    hash_ring_free(&cc->ring);
    free(cc->links);
    free(cc);
}

void cache_client_stats(const struct cache_client *cc, struct kvc_stats *out)
{
    *out = cc->base.stats;
    out->reconnects = 0;
    for (int i = 0; i < cc->n; i++)
        out->reconnects += cc->links[i].reconnects;
}

int cache_client_shard_up(const struct cache_client *cc, int i)
{
    return i >= 0 && i < cc->n && cc->links[i].state == KVC_LINK_UP;
}

int cache_client_nshards(const struct cache_client *cc) { return cc->n; }
