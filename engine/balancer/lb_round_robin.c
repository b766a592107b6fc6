/* round_robin: smooth weighted round robin.
 *
 * Every pick adds each candidate's effective weight to its running score,
 * takes the highest score and subtracts the total from it. With equal
 * weights this is plain rotation; with unequal ones the heavier backends
 * are interleaved rather than sent bursts. Scores follow live weights
 * (slow start, ejection) without any rebuild, at O(n) per pick, which is
 * cheap for the tens of backends a balancer fronts. */
#include <stdlib.h>

#include "lb.h"

struct rr_state {
    int n;
    int64_t score[];
};

static int rr_init(struct lb *lb, char *err, size_t errlen)
{
    (void)err;
    (void)errlen;
    struct rr_state *s = calloc(1, sizeof *s + (size_t)(lb->n ? lb->n : 1) * sizeof(int64_t));
    if (!s)
        return -1;
    s->n = lb->n;
    lb->state = s;
    return 0;
}

static void rr_update(struct lb *lb)
{
    struct rr_state *s = lb->state;
    for (int i = 0; i < s->n; i++)
        s->score[i] = 0;
}

static struct lb_target *rr_pick(struct lb *lb, const struct lb_req *req)
{
    (void)req;
    struct rr_state *s = lb->state;
    int best = -1;
    int64_t total = 0;
    for (int i = 0; i < lb->n; i++) {
        struct lb_target *t = lb->t[i];
        if (!lb_candidate(t))
            continue;
        s->score[i] += t->eff_weight;
        total += t->eff_weight;
        if (best < 0 || s->score[i] > s->score[best])
            best = i;
    }
    if (best < 0)
        return NULL;
    s->score[best] -= total;
    return lb->t[best];
}

static void rr_free(struct lb *lb) { free(lb->state); }

const struct lb_ops lb_round_robin_ops = {
    .name = "round_robin", .init = rr_init, .update = rr_update, .pick = rr_pick,
    .free = rr_free,
};
