/* lb: the policy registry and helpers shared by the built-in policies. */
#include "lb.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

static const struct lb_ops *const lb_builtin[] = {
    &lb_round_robin_ops, &lb_least_conn_ops, &lb_p2c_ops, &lb_chash_ops, &lb_first_ops, NULL,
};

const struct lb_ops *lb_ops_find(const char *name)
{
    for (int i = 0; lb_builtin[i]; i++)
        if (strcmp(lb_builtin[i]->name, name) == 0)
            return lb_builtin[i];
    return NULL;
}

int lb_init(struct lb *lb, const struct lb_ops *ops, struct lb_target **t, int n, char *err,
            size_t errlen)
{
    return lb_init_conf(lb, ops, NULL, t, n, err, errlen);
}

int lb_init_conf(struct lb *lb, const struct lb_ops *ops, const void *conf,
                 struct lb_target **t, int n, char *err, size_t errlen)
{
    memset(lb, 0, sizeof *lb);
    lb->ops = ops;
    lb->conf = conf;
    lb->wants_hash = ops->wants_hash;
    lb->t = t;
    lb->n = n;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    lb->rng = ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)ts.tv_sec ^ 0x9e3779b97f4a7c15ull;
    for (int i = 0; i < n; i++)
        t[i]->index = i;
    if (ops->init && ops->init(lb, err, errlen) < 0) {
        lb->ops = NULL;
        return -1;
    }
    lb->conf = NULL; /* read by init only: it may not outlive the call */
    if (ops->update)
        ops->update(lb);
    return 0;
}

void lb_free(struct lb *lb)
{
    if (lb->ops && lb->ops->free)
        lb->ops->free(lb);
    lb->state = NULL;
}

struct lb_target *lb_least_loaded(struct lb *lb, int start)
{
    struct lb_target *best = NULL;
    for (int k = 0; k < lb->n; k++) {
        struct lb_target *t = lb->t[(start + k) % lb->n];
        if (lb_candidate(t) && (!best || lb_load_cmp(t, best) < 0))
            best = t;
    }
    return best;
}
