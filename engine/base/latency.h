/* latency: a small log-bucketed histogram of recent latencies, for p50/p99
 * in /status and /metrics.
 *
 * Buckets grow by 2^(1/4) (about 19%), from 1 us to ~16 s, so a percentile
 * is exact to within one bucket. Two windows rotate: a percentile covers
 * the current window and the previous one, i.e. the last 1-2 windows of
 * traffic, so it follows load changes without jumping at each rotation. */
#ifndef STRATA_LATENCY_H
#define STRATA_LATENCY_H

#include <stdint.h>

#define LATENCY_BUCKETS 97

struct latency {
    uint32_t cur[LATENCY_BUCKETS], prev[LATENCY_BUCKETS];
    uint64_t ncur, nprev;
    double window;        /* seconds per window */
    double window_start;  /* when cur began */
};

void latency_init(struct latency *l, double window_s, double now);
void latency_record(struct latency *l, double ms, double now);
/* The p-th percentile (0 < p <= 100) in ms, or -1 with no samples. */
double latency_percentile(struct latency *l, double p, double now);

#endif
