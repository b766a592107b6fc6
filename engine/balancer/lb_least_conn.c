/* least_conn: the candidate with the fewest requests in flight per unit of
 * weight. The scan starts one place further each time so that equally
 * loaded backends (the common idle case) take turns instead of the first
 * one getting everything. */
#include <stdlib.h>

#include "lb.h"

struct lc_state {
    int next;
};

static int lc_init(struct lb *lb, char *err, size_t errlen)
{
    (void)err;
    (void)errlen;
    lb->state = calloc(1, sizeof(struct lc_state));
    return lb->state ? 0 : -1;
}

static struct lb_target *lc_pick(struct lb *lb, const struct lb_req *req)
{
    (void)req;
    struct lc_state *s = lb->state;
    if (lb->n == 0)
        return NULL;
    int start = s->next;
    s->next = (s->next + 1) % lb->n;
    return lb_least_loaded(lb, start);
}

static void lc_free(struct lb *lb) { free(lb->state); }

const struct lb_ops lb_least_conn_ops = {
    .name = "least_conn", .init = lc_init, .pick = lc_pick, .free = lc_free,
};
