/* first: fill backends in configuration order. The first candidate below its
 * max_active takes the request, so a small load stays on few backends and
 * the rest can idle (or be scaled down). When every backend is full the
 * least loaded one takes it rather than nobody. */
#include "lb.h"

static struct lb_target *first_pick(struct lb *lb, const struct lb_req *req)
{
    (void)req;
    for (int i = 0; i < lb->n; i++) {
        struct lb_target *t = lb->t[i];
        if (lb_candidate(t) && (t->max_active == 0 || t->active < t->max_active))
            return t;
    }
    return lb_least_loaded(lb, 0);
}

const struct lb_ops lb_first_ops = {
    .name = "first", .pick = first_pick,
};
