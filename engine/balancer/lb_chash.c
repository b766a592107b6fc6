/* chash: consistent hashing on a ring of virtual points.
 *
 * Each backend owns LB_CHASH_POINTS points per unit of weight, placed by
 * hashing its name, so the ring depends only on names and weights: adding
 * or removing one of N backends moves about 1/N of the keys, and only to
 * or from that backend. A key that lands on a backend which is not a
 * candidate (down, ejected, already tried) walks clockwise to the next
 * candidate, so the other keys keep their place. The key itself (client
 * address, path, header or cookie) is hashed by the balancer. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "lb.h"

#define LB_CHASH_POINTS 100
#define LB_CHASH_MAX_WEIGHT 256

struct chash_point {
    uint64_t hash;
    int target;
};

struct chash_state {
    struct chash_point *ring;
    size_t npoints;
};

static int point_cmp(const void *a, const void *b)
{
    const struct chash_point *x = a, *y = b;
    if (x->hash != y->hash)
        return x->hash < y->hash ? -1 : 1;
    return x->target - y->target;
}

static int chash_init(struct lb *lb, char *err, size_t errlen)
{
    lb->state = calloc(1, sizeof(struct chash_state));
    if (!lb->state) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    return 0;
}

static void chash_update(struct lb *lb)
{
    struct chash_state *s = lb->state;
    size_t total = 0;
    for (int i = 0; i < lb->n; i++) {
        int w = lb->t[i]->weight;
        total += (size_t)(w > LB_CHASH_MAX_WEIGHT ? LB_CHASH_MAX_WEIGHT : w) * LB_CHASH_POINTS;
    }
    struct chash_point *ring = total ? malloc(total * sizeof *ring) : NULL;
    if (total && !ring)
        return; /* keep the old ring: stale beats none */
    size_t k = 0;
    for (int i = 0; i < lb->n; i++) {
        const char *name = lb->t[i]->name;
        size_t nl = strlen(name);
        int w = lb->t[i]->weight;
        int pts = (w > LB_CHASH_MAX_WEIGHT ? LB_CHASH_MAX_WEIGHT : w) * LB_CHASH_POINTS;
        for (int p = 0; p < pts; p++) {
            ring[k].hash = XXH3_64bits_withSeed(name, nl, (uint64_t)p);
            ring[k].target = i;
            k++;
        }
    }
    qsort(ring, total, sizeof *ring, point_cmp);
    free(s->ring);
    s->ring = ring;
    s->npoints = total;
}

static struct lb_target *chash_pick(struct lb *lb, const struct lb_req *req)
{
    struct chash_state *s = lb->state;
    if (s->npoints == 0)
        return NULL;
    uint64_t h = req ? req->hash : 0;
    size_t lo = 0, hi = s->npoints;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (s->ring[mid].hash < h)
            lo = mid + 1;
        else
            hi = mid;
    }
    for (size_t k = 0; k < s->npoints; k++) {
        struct lb_target *t = lb->t[s->ring[(lo + k) % s->npoints].target];
        if (lb_candidate(t))
            return t;
    }
    return NULL;
}

static void chash_free(struct lb *lb)
{
    struct chash_state *s = lb->state;
    if (s)
        free(s->ring);
    free(s);
}

const struct lb_ops lb_chash_ops = {
    .name = "chash",
    .wants_hash = 1,
    .init = chash_init,
    .update = chash_update,
    .pick = chash_pick,
    .free = chash_free,
};
