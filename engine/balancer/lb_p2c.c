/* p2c: power of two choices. Two random candidates are drawn and the less
 * loaded one (requests in flight per unit of weight) wins. This keeps
 * least-connections' benefit while avoiding the herd effect of every pick
 * going to the single least loaded backend, and needs no global order. */
#include "lb.h"

/* A random candidate other than `not`; NULL when there is none. A few
 * random probes find one quickly when most backends are usable; a scan
 * from a random point settles the rest. */
static struct lb_target *random_candidate(struct lb *lb, const struct lb_target *not)
{
    for (int tries = 0; tries < 4; tries++) {
        struct lb_target *t = lb->t[lb_rand(lb) % (uint64_t)lb->n];
        if (t != not && lb_candidate(t))
            return t;
    }
    int start = (int)(lb_rand(lb) % (uint64_t)lb->n);
    for (int k = 0; k < lb->n; k++) {
        struct lb_target *t = lb->t[(start + k) % lb->n];
        if (t != not && lb_candidate(t))
            return t;
    }
    return NULL;
}

static struct lb_target *p2c_pick(struct lb *lb, const struct lb_req *req)
{
    (void)req;
    if (lb->n == 0)
        return NULL;
    struct lb_target *a = random_candidate(lb, NULL);
    if (!a)
        return NULL;
    struct lb_target *b = random_candidate(lb, a);
    if (!b)
        return a;
    int c = lb_load_cmp(a, b);
    if (c == 0)
        return (lb_rand(lb) & 1) ? a : b;
    return c < 0 ? a : b;
}

const struct lb_ops lb_p2c_ops = {
    .name = "p2c", .pick = p2c_pick,
};
