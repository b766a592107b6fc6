/* chash: consistent hashing on a ring of virtual points.
 *
 * Each backend owns LB_CHASH_POINTS points per unit of weight, placed by
 * hashing its name, so the ring depends only on names and weights: adding
 * or removing one of N backends moves about 1/N of the keys, and only to
 * or from that backend. A key that lands on a backend which is not a
 * candidate (down, ejected, already tried) walks clockwise to the next
 * candidate, so the other keys keep their place. The key itself (client
 * address, path, header or cookie) is hashed by the balancer. The ring
 * itself is base's hash_ring, shared with the web tier's cache client. */
#include <stdio.h>
#include <stdlib.h>

#include "hash_ring.h"
#include "lb.h"

#define LB_CHASH_POINTS 100

struct chash_state {
    struct hash_ring ring;
};

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
    const char **names = malloc((size_t)(lb->n ? lb->n : 1) * sizeof *names);
    int *weights = malloc((size_t)(lb->n ? lb->n : 1) * sizeof *weights);
    if (names && weights) {
        for (int i = 0; i < lb->n; i++) {
            names[i] = lb->t[i]->name;
            weights[i] = lb->t[i]->weight;
        }
        /* Out of memory keeps the old ring: stale beats none. */
        (void)hash_ring_build(&s->ring, names, weights, lb->n, LB_CHASH_POINTS);
    }
    free(names);
    free(weights);
}

static int chash_skip(void *ud, int member)
{
    struct lb *lb = ud;
    return !lb_candidate(lb->t[member]);
}

static struct lb_target *chash_pick(struct lb *lb, const struct lb_req *req)
{
    struct chash_state *s = lb->state;
    int i = hash_ring_lookup(&s->ring, req ? req->hash : 0, chash_skip, lb);
    return i < 0 ? NULL : lb->t[i];
}

static void chash_free(struct lb *lb)
{
    struct chash_state *s = lb->state;
    if (s)
        hash_ring_free(&s->ring);
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
