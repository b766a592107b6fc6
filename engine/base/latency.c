#include "latency.h"

#include <math.h>
#include <string.h>

void latency_init(struct latency *l, double window_s, double now)
{
    memset(l, 0, sizeof *l);
    l->window = window_s;
    l->window_start = now;
}

static void rotate(struct latency *l, double now)
{
    if (now - l->window_start < l->window)
        return;
    if (now - l->window_start >= 2 * l->window) {
        /* Idle for over a window: both are stale. */
        memset(l->prev, 0, sizeof l->prev);
        l->nprev = 0;
    } else {
        memcpy(l->prev, l->cur, sizeof l->prev);
        l->nprev = l->ncur;
    }
    memset(l->cur, 0, sizeof l->cur);
    l->ncur = 0;
    l->window_start = now;
}

static int bucket_of(double ms)
{
    double us = ms * 1000.0;
    if (!(us > 1.0))
        return 0;
    int b = (int)(log2(us) * 4.0) + 1;
    return b >= LATENCY_BUCKETS ? LATENCY_BUCKETS - 1 : b;
}

/* The upper bound of a bucket, in ms. */
static double bucket_top(int b)
{
    return b == 0 ? 0.001 : exp2((double)b / 4.0) / 1000.0;
}

void latency_record(struct latency *l, double ms, double now)
{
    rotate(l, now);
    l->cur[bucket_of(ms)]++;
    l->ncur++;
}

double latency_percentile(struct latency *l, double p, double now)
{
    rotate(l, now);
    uint64_t total = l->ncur + l->nprev;
    if (total == 0)
        return -1;
    uint64_t rank = (uint64_t)ceil(p / 100.0 * (double)total);
    if (rank == 0)
        rank = 1;
    uint64_t seen = 0;
    for (int b = 0; b < LATENCY_BUCKETS; b++) {
        seen += (uint64_t)l->cur[b] + l->prev[b];
        if (seen >= rank)
            return bucket_top(b);
    }
    return bucket_top(LATENCY_BUCKETS - 1);
}
